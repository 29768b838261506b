//! The one error type of the report module.
//!
//! Every variant displays as a single line that names the input and the
//! problem and, where there is one, what would work instead: the `heapprof`
//! binary prints it after `heapprof: ` and exits with status 2.

use std::fmt;
use std::io;

/// Why a profile could not be read or a report could not be made.
#[derive(Debug)]
pub enum ReportError {
    /// The command line is wrong; the text says how.
    Usage(String),
    /// An input file could not be read (missing, unreadable).
    Read { path: String, error: io::Error },
    /// An output file could not be written.
    Write { path: String, error: io::Error },
    /// The input starts like gzip but the stream is truncated or corrupt.
    Gzip { input: String, detail: String },
    /// The input is not a protobuf `profile.proto` message.
    NotAProfile { input: String, detail: String },
    /// The input decodes as a profile but refers to things it does not contain
    /// (a string index past the string table, say).
    Malformed { input: String, detail: String },
    /// The profile has no sample type of the requested name.
    MissingSampleType {
        input: String,
        wanted: String,
        available: Vec<String>,
    },
    /// The inputs cannot make the requested report; `detail` continues a
    /// sentence whose subject is `input` ("has no `age` labels; …") and says
    /// what would work.
    Unsuitable { input: String, detail: String },
}

impl fmt::Display for ReportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReportError::Usage(text) => write!(f, "{text} (see heapprof --help)"),
            ReportError::Read { path, error } => {
                if error.kind() == io::ErrorKind::NotFound {
                    write!(f, "cannot read {path}: no such file")
                } else {
                    write!(f, "cannot read {path}: {error}")
                }
            }
            ReportError::Write { path, error } => write!(f, "cannot write {path}: {error}"),
            ReportError::Gzip { input, detail } => write!(
                f,
                "{input} is gzip but does not decompress ({detail}); the file is truncated \
                 or corrupt (was it still being written?)"
            ),
            ReportError::NotAProfile { input, detail } => write!(
                f,
                "{input} is not a pprof profile ({detail}); expected profile.proto, gzipped \
                 or not, as heapprof or Go's pprof.WriteHeapProfile write it"
            ),
            ReportError::Malformed { input, detail } => {
                write!(f, "{input} is a malformed pprof profile: {detail}")
            }
            ReportError::MissingSampleType {
                input,
                wanted,
                available,
            } => write!(
                f,
                "{input} has no {wanted} samples; it has {} (choose one with --sample)",
                if available.is_empty() {
                    "no sample types at all".to_string()
                } else {
                    available.join(", ")
                }
            ),
            ReportError::Unsuitable { input, detail } => write!(f, "{input} {detail}"),
        }
    }
}

impl std::error::Error for ReportError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ReportError::Read { error, .. } | ReportError::Write { error, .. } => Some(error),
            _ => None,
        }
    }
}

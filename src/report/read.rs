//! Bytes to a decoded [`Profile`]: gunzip when the input starts with the gzip
//! magic `1f 8b`, decode `profile.proto`, check the header.

use std::borrow::Cow;
use std::io::Read;

use prost::Message;

use super::ReportError;
use crate::profile::proto::Profile;

/// The two bytes every gzip stream starts with.
pub const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Decompressed profiles larger than this are refused: real heap profiles are
/// a few MB, and a crafted gzip stream could otherwise expand ~1000-fold.
pub const MAX_DECOMPRESSED: u64 = 1 << 30;

/// Decodes a profile from the bytes of a file; `input` names it in errors.
///
/// Beyond protobuf decoding this checks what every pprof profile has — a
/// string table whose entry 0 is `""` and at least one sample type — so that
/// bytes which merely happen to parse as protobuf (short text files often
/// do) are reported as "not a profile".
pub fn decode(input: &str, bytes: &[u8]) -> Result<Profile, ReportError> {
    if bytes.is_empty() {
        return Err(ReportError::NotAProfile {
            input: input.to_string(),
            detail: "the file is empty".to_string(),
        });
    }
    let raw: Cow<[u8]> = if bytes.starts_with(&GZIP_MAGIC) {
        Cow::Owned(gunzip(input, bytes)?)
    } else {
        Cow::Borrowed(bytes)
    };
    let profile = match Profile::decode(&raw[..]) {
        Ok(p) => p,
        Err(e) => {
            return Err(ReportError::NotAProfile {
                input: input.to_string(),
                detail: describe_undecodable(&raw, &e),
            })
        }
    };
    let header_problem = if profile.string_table.first().map(String::as_str) != Some("") {
        Some("its string table does not start with the empty string")
    } else if profile.sample_type.is_empty() {
        Some("it declares no sample types")
    } else {
        None
    };
    if let Some(problem) = header_problem {
        let detail = if looks_like_text(&raw) {
            "it is a text file"
        } else {
            problem
        };
        return Err(ReportError::NotAProfile {
            input: input.to_string(),
            detail: detail.to_string(),
        });
    }
    Ok(profile)
}

fn gunzip(input: &str, bytes: &[u8]) -> Result<Vec<u8>, ReportError> {
    // Multi-member aware: concatenated gzip files are valid gzip.
    let decoder = flate2::read::MultiGzDecoder::new(bytes);
    let mut out = Vec::new();
    let mut limited = decoder.take(MAX_DECOMPRESSED + 1);
    if let Err(e) = limited.read_to_end(&mut out) {
        let detail = if e.kind() == std::io::ErrorKind::UnexpectedEof {
            "unexpected end of data".to_string()
        } else {
            e.to_string()
        };
        return Err(ReportError::Gzip {
            input: input.to_string(),
            detail,
        });
    }
    if out.len() as u64 > MAX_DECOMPRESSED {
        return Err(ReportError::Unsuitable {
            input: input.to_string(),
            detail: format!(
                "decompresses to more than {MAX_DECOMPRESSED} bytes, far beyond any heap profile"
            ),
        });
    }
    Ok(out)
}

/// Names the common look-alikes, which say more than a protobuf error does.
fn describe_undecodable(raw: &[u8], e: &prost::DecodeError) -> String {
    if raw.starts_with(b"heap profile:") {
        return "it is Go's legacy text heap profile (debug=1); write it with debug=0 or \
                pprof.WriteHeapProfile"
            .to_string();
    }
    if looks_like_text(raw) {
        return "it is a text file".to_string();
    }
    // prost's message can span lines in principle; keep the error to one.
    let text = e.to_string().replace(['\n', '\r'], " ");
    format!("protobuf decoding failed: {text}")
}

/// True when the first 512 bytes are UTF-8 without control characters other
/// than line breaks and tabs (a multibyte character cut at the end is fine).
fn looks_like_text(raw: &[u8]) -> bool {
    let head = &raw[..raw.len().min(512)];
    let valid = match std::str::from_utf8(head) {
        Ok(s) => s,
        Err(e) if e.error_len().is_none() => match std::str::from_utf8(&head[..e.valid_up_to()]) {
            Ok(s) => s,
            Err(_) => return false,
        },
        Err(_) => return false,
    };
    !valid.is_empty()
        && valid
            .chars()
            .all(|c| !c.is_control() || c == '\n' || c == '\r' || c == '\t')
}

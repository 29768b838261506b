//! Reading pprof heap profiles and the reports of the `heapprof` tool.
//!
//! Any `profile.proto` heap profile works — heapprof's own, Go's
//! (`pprof.WriteHeapProfile`), gzipped or not (gzip is recognised by its magic
//! bytes `1f 8b`, not by the file name).
//!
//! # Model
//!
//! [`load`] (or [`parse`] for bytes) decodes a profile ([`read`]) and
//! resolves it ([`model`]) into a [`Resolved`]: every string index, location
//! id and function id is looked up once, and each sample refers to a
//! [`Stack`] — its [`Frame`]s leaf first, each a function name with file and
//! line when the profile has them. A location with inlined functions gives
//! several frames, the inlined callee first, as pprof lists them. Samples
//! whose stacks resolve to the same frames share one stack, so every report
//! groups by identical stack.
//!
//! A malformed profile is an error, never a panic: a string index past the
//! string table is an error (as in `go tool pprof`), while a sample whose
//! value count differs from the sample types, or that names a location the
//! profile does not define, is skipped and counted
//! ([`Resolved::skipped_samples`], shown as a note in every report).
//!
//! # Matching stacks across files
//!
//! Location ids are private to one file, so [`diff`](diff()) and
//! [`leaks`](leaks()) match stacks by their frames' identity, [`FrameKey`]:
//! function name, file and line for a symbolized frame; for an unsymbolized
//! one the offset into its mapped file (stable across runs despite address
//! randomisation), or the bare address when even the mapping is unknown.
//!
//! # Runtime frames
//!
//! [`program_only`] cuts the runtime's root frames (`_start`, libc's
//! start-up and thread-start functions, Rust's `lang_start` and
//! `catch_unwind` wrappers) from every stack, see [`frames`]; the `heapprof`
//! command applies it to every report unless `--all-frames` is given. The
//! library's [`load`] and [`parse`] keep stacks complete.
//!
//! # Sample types
//!
//! [`SampleKind::Default`] selects `inuse_space` when the profile has it,
//! else the profile's `default_sample_type`, else its last sample type
//! (pprof's own rule). A report asking for a sample type the profile lacks
//! fails with [`ReportError::MissingSampleType`], listing the ones it has.
//!
//! # Leaks
//!
//! [`leaks`](leaks()) judges each stack's live samples — raw counts, the
//! profile's scaling inverted — from one profile or a series of one
//! process: how the count moves (a leak's never falls) and when its live
//! samples were allocated, from the numeric `age` label (unit `seconds`,
//! the lower bound of a fine age bucket) against the time since profiling
//! started (`duration_nanos`). Each stack is *steady growth* (a leak
//! suspect, with a confidence and the leak rate with an interval),
//! *plateau* (a cache that filled once), *churn*, or *not enough samples
//! yet* (with the wait for a verdict). The model and why it holds for
//! sampled counts: [`leaks`](mod@leaks). With `--older-than` one profile is
//! ranked by memory at least that old ([`leak_age`]).
//!
//! Our profiles also carry the numeric label `bytes` (unit `bytes`): the
//! object size, as Go writes it.
//!
//! # Profile kinds
//!
//! A profile's kind is known from its sample types ([`profile_kind`]):
//! `heap` (in-use and allocated space), `threads` (live threads), or
//! whatever else its sample types name. A report over several profiles
//! refuses a mix of kinds ([`one_kind`]) with one line saying which files
//! are which: judged together, heap and threads profiles would be read by
//! whichever sample type they share. heapprof names threads profiles
//! `PREFIX.threads.PID.SEQ.pb.gz`, outside the heap profiles' glob.
//!
//! # Memory the heap does not explain
//!
//! heapprof's profiles record the process's `RssAnon` (a comment,
//! `rss_anon=BYTES`, read in [`Resolved::rss_anon`]); when the heap seen
//! explains little of it, [`unseen_memory`] says so and names the likely
//! cause (see [`unseen`]), and the `heapprof` command adds that note to
//! every report.
//!
//! # Heap labels
//!
//! String labels on samples (route, tenant, `HEAPPROF_LABELS`) select and
//! split every report: [`labels::focus`] keeps the samples with a label
//! value (`--focus KEY=VALUE`), and [`labels::top_by`] and
//! [`labels::diff_by`] run a report per value of one label (`--by KEY`),
//! samples without it grouped as `(none)`; [`leaks`](leaks()) judges each
//! label value as it judges a stack ([`LeakOptions::group`]).
//!
//! # Over time, in a browser
//!
//! [`html`] draws a series of dumps of one process as one self-contained
//! HTML page (`heapprof report`, `/debug/pprof/report`, and `heapprof run`
//! at the end of a run): the in-use total and the top stacks per dump, the
//! [`leak_verdicts`] linked to their series, and flame graphs of in-use
//! memory and of growth over a chosen window (from the `age` labels).
//!
//! # Errors
//!
//! Every [`ReportError`] displays as one line naming the input and the
//! problem, and where possible what would work instead.

pub mod blackbox;
pub mod diff;
pub mod error;
pub mod flame;
pub mod format;
pub mod frames;
pub mod html;
pub mod labels;
pub(crate) mod leak_check;
pub mod leaks;
pub mod model;
pub mod read;
pub mod symbolize_raw;
pub mod top;
pub mod unseen;

use std::path::Path;

pub use diff::{diff, DiffReport, DiffRow};
pub use error::ReportError;
pub use flame::folded;
#[cfg(feature = "cli")]
pub use flame::{flamegraph, write_flamegraph};
pub use frames::{program_frames, program_only};
pub use leaks::{
    judge, leak_age, leak_verdicts, leaks, shutdown_dump, AgeReport, AgeRow, Birth, Evidence,
    Grouping, LeakClass, LeakOptions, LeaksReport, Verdict, VerdictReport, VerdictRow,
    DEFAULT_OLDER_THAN_SECS,
};
pub use model::{
    Frame, FrameKey, LabelValue, Resolved, ResolvedSample, SampleKind, SampleLabel, SampleType,
    Stack,
};
pub use top::{top, TopReport, TopRow};
pub use unseen::unseen_memory;

/// What a profile measures, from its sample types: `heap` (in-use and
/// allocated space and objects), `threads` (live threads), or the sample
/// type names themselves for anything else.
pub fn profile_kind(r: &Resolved) -> String {
    let has = |name: &str| r.sample_types.iter().any(|t| t.name == name);
    if has("inuse_space") || has("alloc_space") {
        "heap".to_string()
    } else if has("threads") {
        "threads".to_string()
    } else {
        let names: Vec<&str> = r.sample_types.iter().map(|t| t.name.as_str()).collect();
        names.join("/")
    }
}

/// Refuses profiles of different kinds ([`profile_kind`]) in one report: a
/// series of heap profiles with threads profiles among them would be judged
/// by whichever sample type they share, silently. The error names which
/// files are which and how to select one kind.
pub fn one_kind<'a>(profiles: impl IntoIterator<Item = &'a Resolved>) -> Result<(), ReportError> {
    let mut kinds: Vec<(String, Vec<&str>)> = Vec::new();
    for p in profiles {
        let kind = profile_kind(p);
        match kinds.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, files)) => files.push(&p.input),
            None => kinds.push((kind, vec![&p.input])),
        }
    }
    if kinds.len() < 2 {
        return Ok(());
    }
    let list = |files: &[&str]| match files {
        [] => String::new(),
        [one] => one.to_string(),
        [first, .., last] => format!("{} files, {first} … {last}", files.len()),
    };
    let which: Vec<String> = kinds
        .iter()
        .map(|(k, files)| format!("{k} profiles: {}", list(files)))
        .collect();
    Err(ReportError::Unsuitable {
        input: "these profiles".to_string(),
        detail: format!(
            "are of different kinds ({}); pass one kind: heap profiles are \
             PREFIX.PID.SEQ.pb.gz, threads profiles PREFIX.threads.PID.SEQ.pb.gz",
            which.join("; ")
        ),
    })
}

/// Reads, decodes and resolves the profile at `path`.
pub fn load(path: impl AsRef<Path>) -> Result<Resolved, ReportError> {
    let path = path.as_ref();
    let shown = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|error| ReportError::Read {
        path: shown.clone(),
        error,
    })?;
    parse(&shown, &bytes)
}

/// Decodes and resolves a profile from its bytes (gzipped or not); `input`
/// names it in reports and errors.
pub fn parse(input: &str, bytes: &[u8]) -> Result<Resolved, ReportError> {
    Resolved::from_profile(input, &decode_any(input, bytes)?)
}

/// The profile in `bytes`, whatever every report reads: a profile (gzipped
/// or not, raw addresses named from the files on this machine) or a black
/// box, read as the profile recovered from it.
pub fn decode_any(
    input: &str,
    bytes: &[u8],
) -> Result<crate::profile::proto::Profile, ReportError> {
    if blackbox::is_blackbox(bytes) {
        let r = blackbox::recover(input, bytes)?;
        symbolize_raw::say_once(&r.notes);
        return Ok(r.profile);
    }
    let mut profile = read::decode(input, bytes)?;
    symbolize_raw::say_once(&symbolize_raw::symbolize(&mut profile));
    Ok(profile)
}

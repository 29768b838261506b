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
//! # Sample types
//!
//! [`SampleKind::Default`] selects `inuse_space` when the profile has it,
//! else the profile's `default_sample_type`, else its last sample type
//! (pprof's own rule). A report asking for a sample type the profile lacks
//! fails with [`ReportError::MissingSampleType`], listing the ones it has.
//!
//! # Leaks
//!
//! [`leaks`](leaks()) works in one of two modes:
//!
//! - **Trend**, with three or more profiles of one process (written every N
//!   seconds, say): profiles are ordered by `time_nanos`, each stack's
//!   `inuse_space` series is fitted with a least-squares line (slope in bytes
//!   per second, R²), and [`leaks::classify`] puts it in one class:
//!   *steady growth* (a leak suspect: a good linear fit, most intervals
//!   growing, and still growing in the later half), *plateau* (grew, then
//!   flat for the later half: a cache or pool filled once) or *churn* (no
//!   sustained growth). Steady growers are reported first, fastest first;
//!   churn is only counted, never listed as a leak.
//! - **Age**, with one profile: stacks are ranked by in-use bytes alive for
//!   at least `--older-than` seconds (default 60). The age comes from each
//!   sample's numeric label `age` (unit `seconds`): the lower bound, in
//!   seconds, of the age bucket the sample's live objects fall in, so a
//!   bucket counts as old when that bound reaches the threshold. Samples
//!   without an `age` label are of unknown age and are not counted as old.
//!
//! Our profiles also carry the numeric label `bytes` (unit `bytes`): the
//! object size, as Go writes it.
//!
//! # Heap labels
//!
//! String labels on samples (route, tenant, `HEAPPROF_LABELS`) select and
//! split every report: [`labels::focus`] keeps the samples with a label
//! value (`--focus KEY=VALUE`), and [`labels::top_by`], [`labels::diff_by`]
//! and [`labels::leaks_by`] run a report per value of one label (`--by KEY`),
//! samples without it grouped as `(none)`.
//!
//! # Errors
//!
//! Every [`ReportError`] displays as one line naming the input and the
//! problem, and where possible what would work instead.

pub mod diff;
pub mod error;
pub mod flame;
pub mod format;
pub mod labels;
pub(crate) mod leak_check;
pub mod leaks;
pub mod model;
pub mod read;
pub mod top;

use std::path::Path;

pub use diff::{diff, DiffReport, DiffRow};
pub use error::ReportError;
pub use flame::{flamegraph, folded, write_flamegraph};
pub use leaks::{
    classify, leak_age, leak_trend, leaks, AgeReport, AgeRow, LeakClass, LeaksReport, Trend,
    TrendReport, TrendRow, DEFAULT_OLDER_THAN_SECS,
};
pub use model::{
    Frame, FrameKey, LabelValue, Resolved, ResolvedSample, SampleKind, SampleLabel, SampleType,
    Stack,
};
pub use top::{top, TopReport, TopRow};

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
    let profile = read::decode(input, bytes)?;
    Resolved::from_profile(input, &profile)
}

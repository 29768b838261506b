//! # heapprof: always-on heap profiling with leak accounting
//!
//! heapprof samples allocations the way Go's runtime and tcmalloc do — a
//! Poisson process over allocated bytes, one sample per 512 KiB on average —
//! cheaply enough to leave on in production, and writes standard pprof heap
//! profiles (`alloc_objects`, `alloc_space`, `inuse_objects`, `inuse_space`)
//! that `go tool pprof`, Grafana Pyroscope, Parca and speedscope read.
//!
//! ## Turning it on
//! ```no_run
//! #[global_allocator]
//! static GLOBAL: heapprof::Profiler<std::alloc::System> =
//!     heapprof::Profiler::new(std::alloc::System);
//!
//! fn main() -> std::io::Result<()> {
//!     // ... the program runs; at any moment:
//!     heapprof::dump_to("heap.pb.gz")?; // gzipped pprof, written atomically
//!     Ok(())
//! }
//! ```
//! Any inner [`GlobalAlloc`](core::alloc::GlobalAlloc) works: `System`,
//! mimalloc, jemalloc. For programs you cannot rebuild, the same engine
//! comes as an `LD_PRELOAD` library (see the README).
//!
//! ## Getting profiles out
//! - [`dump_to`] a path, [`write_profile`] to any writer, [`profile()`] as a
//!   message, or [`tallies`] to read the per-stack numbers in-process;
//! - `kill -USR2 <pid>`, every `HEAPPROF_INTERVAL` seconds, or at exit with
//!   `HEAPPROF_AT_EXIT=1`, to `PREFIX.PID.SEQ.pb.gz` files (see [`Config`]);
//! - over HTTP with `HEAPPROF_HTTP=6060`: a Go-compatible `/debug/pprof/`
//!   (`go tool pprof http://127.0.0.1:6060/debug/pprof/heap`, Parca, Grafana
//!   Alloy; see [`control::http`]).
//!
//! - with the `threads` feature (always under the preload library), a
//!   threads profile beside each of those, `PREFIX.threads.PID.SEQ.pb.gz`:
//!   live threads by the stack that created them
//!   ([`profile::threads_pprof`]).
//!
//! Then `go tool pprof -top heap.pb.gz`, or `heapprof top heap.pb.gz`.
//!
//! ## Which request holds the memory
//! [`with_labels`] and [`labeled`] (for futures) tag the samples a scope
//! allocates, `HEAPPROF_LABELS` the whole process; profiles carry them as
//! pprof string labels (`go tool pprof -tagfocus=route=/users`), and
//! `heapprof top --by route` splits a report by them. See [`engine::labels`].
//!
//! ## Accuracy
//! At the default rate, numbers are unbiased estimates: each sample is scaled
//! by the inverse of its probability of being sampled (see [`profile::scale`]).
//! `HEAPPROF_RATE=1` (or [`set_rate`]`(1)`) records every allocation and the
//! profile is exact; `0` turns sampling off.
//!
//! ## Costs
//! An unsampled allocation costs a thread-local compare and subtract over the
//! inner allocator; freeing an unsampled pointer costs one compare and
//! branch. A sampled allocation captures a stack (a fraction of a
//! microsecond to a few) and is served by heapprof's own sample heap
//! ([`engine::sample_heap`]), not by the inner allocator: sampled objects,
//! about one allocation in several thousand at the default rate (every one at
//! rate 1 and in [`assert_no_leaks`]), live in memory heapprof maps itself,
//! in size classes that waste under 25%. No path takes a lock.
//!
//! ## What it does not see
//! Memory not obtained through the global allocator (direct `mmap`, C
//! libraries calling `malloc` themselves — use the preload library for
//! those). Allocator frames at the leaf of each stack are trimmed. Each
//! profile records the process's `RssAnon`, and reports say when the heap
//! explains little of it ([`report::unseen_memory`]). Without `Profiler` as
//! the global allocator (each crate in `tests/` needs its own line) nothing
//! is seen at all: [`dump_to`], [`write_profile`] and [`dump`] then fail,
//! and [`assert_no_leaks`] panics, naming the line to add
//! ([`GLOBAL_ALLOCATOR_LINE`]).
#![deny(unsafe_op_in_unsafe_fn)]
#![cfg(target_os = "linux")]

// Layers, each calling only down: the engine (hot paths and the sampled
// path) knows nothing of profiles, triggers or reports; profile writing reads
// the engine; control (configuration, start-up, triggers) drives both; the
// reports read profiles. `allocator` is the Rust way in.
/// Declares modules whose code may run on a thread glibc does not know
/// (the watcher, `control::watcher`), in a signal handler or inside an
/// allocation: no TLS, no errno, no allocation, no lock — and no panic,
/// which the lints below hold as far as the compiler can (no `panic!`,
/// `unwrap`, `expect`, indexing or overflowing arithmetic). Every such
/// module is declared through this macro, so the list of them is the
/// modules named in its uses (in `os`, `engine`, `profile` and `control`).
macro_rules! raw_thread_modules {
    ($($(#[$meta:meta])* $vis:vis mod $name:ident;)*) => {
        $(
            $(#[$meta])*
            #[deny(
                clippy::panic,
                clippy::unwrap_used,
                clippy::expect_used,
                clippy::indexing_slicing,
                clippy::arithmetic_side_effects
            )]
            $vis mod $name;
        )*
    };
}

// `engine`, `os` and `control` are public for the preload library (through
// `ffi_surface`, the whole of what it uses) and this project's tests and
// benches only: not API, hidden from the docs.
mod allocator;
#[doc(hidden)]
pub mod control;
#[doc(hidden)]
pub mod engine;
#[doc(hidden)]
pub mod ffi_surface;
pub mod launch;
#[doc(hidden)]
pub mod os;
pub mod profile;
pub mod report;
#[cfg(feature = "threads")]
mod thread_hook;
#[cfg(feature = "tower")]
pub mod tower;

// Short paths for the modules used across layers and by the ways in.

pub use allocator::Profiler;
pub use control::config::Config;
pub use engine::labels::{labeled, with_labels, LabelSet, Labeled};
pub use profile::tallies::{StackFrame, StackTally};
pub use report::leak_check::{
    assert_no_leaks, leaks_during, leaks_during_with, Leak, LeakReport, GLOBAL_ALLOCATOR_LINE,
};

/// The heap profile at the highest estimated in-use heap so far, as the
/// dumper thread saw it (see [`control::peak`]); `None` before any growth.
pub fn peak_profile() -> Option<profile::proto::Profile> {
    control::peak::peak_profile()
}

/// Why a profile of this program would be empty: nothing feeds the engine.
fn not_fed() -> Option<String> {
    (!control::startup::way_in()).then(|| {
        format!(
            "heapprof: heapprof::Profiler is not this program's global allocator, so no \
             allocation reaches it and its profiles are empty; add: {}",
            report::leak_check::GLOBAL_ALLOCATOR_LINE
        )
    })
}

/// [`not_fed`] as an error, for the calls that return one.
fn fed() -> std::io::Result<()> {
    match not_fed() {
        Some(why) => Err(std::io::Error::other(why)),
        None => Ok(()),
    }
}

/// [`not_fed`] said once on stderr, for the calls that cannot fail.
fn say_if_not_fed() {
    static SAID: std::sync::Once = std::sync::Once::new();
    if let Some(why) = not_fed() {
        SAID.call_once(|| {
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "{why}");
        });
    }
}

/// Writes the gzipped heap profile to `path`, atomically. Fails, naming
/// the line to add, when `heapprof::Profiler` is not the program's global
/// allocator (the profile would be empty).
pub fn dump_to(path: impl AsRef<std::path::Path>) -> std::io::Result<()> {
    fed()?;
    profile::dump::dump_to(path)
}

/// Writes the gzipped heap profile to `w`. Fails as [`dump_to`] does when
/// nothing feeds the profile.
pub fn write_profile<W: std::io::Write + ?Sized>(w: &mut W) -> std::io::Result<()> {
    fed()?;
    profile::dump::write_profile(w)
}

/// The current heap profile, gzipped (a `.pb.gz` file's contents). Says
/// once on stderr when nothing feeds it.
pub fn profile_gz() -> Vec<u8> {
    say_if_not_fed();
    profile::dump::profile_gz()
}

/// The current heap profile as a pprof message. Says once on stderr when
/// nothing feeds it.
pub fn profile() -> profile::proto::Profile {
    say_if_not_fed();
    profile::dump::profile()
}

/// The per-stack tallies right now, heaviest in-use first. Says once on
/// stderr when nothing feeds them.
pub fn tallies() -> Vec<StackTally> {
    say_if_not_fed();
    profile::tallies::from_profile(&profile::dump::profile())
}

/// Per-stack tallies of any heapprof-written profile (e.g. one decoded from
/// a dump file), heaviest in-use first.
pub fn tallies_of(profile: &profile::proto::Profile) -> Vec<StackTally> {
    profile::tallies::from_profile(profile)
}

/// Decodes a pprof profile, gzipped or not.
pub fn decode_profile(bytes: &[u8]) -> std::io::Result<profile::proto::Profile> {
    report::read::decode("profile", bytes)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))
}

/// Sets the mean bytes between samples (1: every allocation; 0: off).
/// Applies at once to the calling thread and to others at their next sample,
/// and stays across a later `Config::from_env()….install()` (unless
/// `HEAPPROF_RATE` is set or that config sets a rate).
pub fn set_rate(rate: u64) {
    control::config::remember_rate_from_code(rate);
    engine::set_rate(rate);
}

/// Writes the next `PREFIX.PID.SEQ.pb.gz` under the configured prefix
/// (`HEAPPROF_OUT`, default `./heapprof`); returns its path.
pub fn dump() -> std::io::Result<std::path::PathBuf> {
    fed()?;
    let path = profile::dump::dump_numbered(
        &control::triggers::out_prefix(),
        profile::dump::Trigger::Code,
    )?;
    control::heap_triggers::prune_after_dump();
    Ok(path)
}

/// Runs `f` while holding every lock heapprof's dump path takes. Only for
/// tests proving that allocation hooks never wait on them.
#[doc(hidden)]
pub fn __with_profiler_locks_held<R>(f: impl FnOnce() -> R) -> R {
    let _busy = engine::thread_state::current().enter();
    let _a = engine::aggregate::lock();
    let _s = profile::symbolize::lock();
    f()
}

//! Taking a profile on demand: snapshot, symbolize, encode, write.
//!
//! Before any of it, a dump checks that the address space has room for what
//! it will need ([`crate::engine::pressure`]): a symbolized profile needs
//! room for the symbolizer (the mapped files it reads DWARF from, and its
//! tables); without it the profile is written raw; without room even for a
//! raw profile, none is written (an `OutOfMemory` error) and no file appears.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::engine::pressure;
use crate::{
    engine::thread_state, profile::mappings, profile::output, profile::pprof, profile::proto,
    profile::snapshot, profile::symbolize,
};

/// Heap the symbolizer may use while it parses the program's DWARF (a
/// generous bound of what scripts/bench-dump-memory.sh measures).
const SYMBOLIZER_HEAP: usize = 24 << 20;

/// What a profile will need, beyond the symbolizer: the snapshot, the
/// pprof message, its encoding and the gzip stream, each a few hundred bytes
/// per bucket and per stack frame, twice over for the copies between steps.
fn raw_need() -> usize {
    let (buckets, stacks) = crate::engine::aggregate::with(|a| (a.bucket_count(), a.stacks.len()));
    (2 << 20) + buckets * 1024 + stacks * 128 * 16
}

/// Room for the symbolizer: its heap and the largest mapped object, which
/// it maps whole to read its symbols and DWARF (one object at a time).
fn symbolize_need(maps: &[mappings::Mapping]) -> usize {
    let mapped: u64 = maps
        .iter()
        .filter_map(|m| std::fs::metadata(&m.path).ok())
        .map(|m| m.len())
        .max()
        .unwrap_or(0);
    SYMBOLIZER_HEAP + mapped as usize
}

fn out_of_memory() -> io::Error {
    io::Error::new(
        io::ErrorKind::OutOfMemory,
        "heapprof: not enough memory for a profile now; none written",
    )
}

/// The current heap profile, or `None` when there is no room even for a raw
/// one.
fn try_profile() -> Option<proto::Profile> {
    profile_from(None)
}

/// The profile of `kept` (a snapshot taken earlier: the peak), or of a
/// snapshot taken now; `None` when there is no room even for a raw one.
pub fn profile_from(kept: Option<&snapshot::Snapshot>) -> Option<proto::Profile> {
    let _busy = thread_state::current().enter();
    let raw = raw_need();
    if !pressure::room_for(raw) {
        pressure::skipped_dump();
        return None;
    }
    let maps = mappings::current();
    let mut symbolized = crate::profile::settings::symbolize_enabled();
    if symbolized && !pressure::room_for(raw + symbolize_need(&maps)) {
        pressure::raw_dump();
        symbolized = false;
    }
    // What the process holds besides the heap heapprof sees: reports
    // compare the two.
    let facts = pprof::ProcessFacts {
        rss_anon: crate::os::rss_anon_bytes(),
        memory_limit: crate::profile::settings::memory_limit(),
    };
    let now;
    let snap = match kept {
        Some(s) => s,
        None => {
            now = snapshot::take();
            &now
        }
    };
    Some(if symbolized {
        symbolize::with(|sym| pprof::build(snap, Some(sym), &maps, &facts))
    } else {
        pprof::build(snap, None, &maps, &facts)
    })
}

/// The current heap profile as a pprof message (empty when there is no
/// memory for one).
pub fn profile() -> proto::Profile {
    try_profile().unwrap_or_default()
}

fn try_profile_gz() -> io::Result<Vec<u8>> {
    try_profile_gz_because(None, None)
}

/// The gzipped profile, with comments saying what took it (`trigger=NAME`)
/// and why, in words.
fn try_profile_gz_because(trigger: Option<Trigger>, why: Option<&str>) -> io::Result<Vec<u8>> {
    let _busy = thread_state::current().enter();
    let mut p = try_profile().ok_or_else(out_of_memory)?;
    if let Some(t) = trigger {
        p.comment.push(p.string_table.len() as i64);
        p.string_table.push(format!(
            "{}{}",
            crate::profile::pprof::TRIGGER_KEY,
            t.name()
        ));
    }
    if let Some(why) = why {
        p.comment.push(p.string_table.len() as i64);
        p.string_table.push(why.to_string());
    }
    let gz = output::encode_gz(&p);
    drop(p);
    // Hand what a symbolizing dump freed back to the kernel (glibc keeps
    // it otherwise).
    symbolize::trim_heap_if_due();
    Ok(gz)
}

/// The current heap profile, gzipped (a `.pb.gz` file's contents).
pub fn profile_gz() -> Vec<u8> {
    try_profile_gz().unwrap_or_default()
}

/// Writes the gzipped profile to `w`.
pub fn write_profile<W: Write + ?Sized>(w: &mut W) -> io::Result<()> {
    let bytes = try_profile_gz()?;
    w.write_all(&bytes)
}

/// Writes the gzipped profile to `path`, atomically.
pub fn dump_to(path: impl AsRef<Path>) -> io::Result<()> {
    let _busy = thread_state::current().enter();
    output::write_atomic(path.as_ref(), &try_profile_gz()?)
}

/// Writes the next `PREFIX.PID.SEQ.pb.gz`, taken for `trigger` (said in
/// its comment, and counted); returns its path.
pub fn dump_numbered(prefix: &Path, trigger: Trigger) -> io::Result<PathBuf> {
    dump_numbered_because(prefix, trigger, None)
}

/// What a profile was taken for: each counts in its own
/// `heapprof_dumps_total{trigger}`, and a numbered dump says it in its
/// comment (`trigger=NAME`), which `heapprof report` shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// The dump signal (`SIGUSR2`, `HEAPPROF_SIGNAL`).
    Signal = 0,
    /// `HEAPPROF_INTERVAL`.
    Interval = 1,
    /// The exit dump (`HEAPPROF_AT_EXIT`).
    Exit = 2,
    /// The program's own call (`heapprof::dump()`).
    Code = 3,
    /// `HEAPPROF_GROWTH`.
    Growth = 4,
    /// `HEAPPROF_NEAR_LIMIT`.
    NearLimit = 5,
    /// One the watcher's copies could not make, made later.
    Deferred = 6,
    /// A profile served over HTTP.
    Http = 7,
    /// A profile taken for `/debug/pprof/report`.
    Report = 8,
    /// A periodic profile for that report's history.
    History = 9,
}

impl Trigger {
    pub const ALL: [Trigger; 10] = [
        Trigger::Signal,
        Trigger::Interval,
        Trigger::Exit,
        Trigger::Code,
        Trigger::Growth,
        Trigger::NearLimit,
        Trigger::Deferred,
        Trigger::Http,
        Trigger::Report,
        Trigger::History,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Trigger::Signal => "signal",
            Trigger::Interval => "interval",
            Trigger::Exit => "exit",
            Trigger::Code => "code",
            Trigger::Growth => "growth",
            Trigger::NearLimit => "near_limit",
            Trigger::Deferred => "deferred",
            Trigger::Http => "http",
            Trigger::Report => "report",
            Trigger::History => "history",
        }
    }

    /// The trigger at `i` of [`Trigger::ALL`] (for one kept in an atomic).
    pub fn from_index(i: usize) -> Option<Trigger> {
        Trigger::ALL.get(i).copied()
    }
}

/// Atomics: counted from any thread, and nothing to lock in a fork.
static DUMPS: [std::sync::atomic::AtomicU64; Trigger::ALL.len()] =
    [const { std::sync::atomic::AtomicU64::new(0) }; Trigger::ALL.len()];

/// Counts one profile taken for `t`.
pub fn count_dump(t: Trigger) {
    DUMPS[t as usize].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// Profiles taken for `t` so far.
pub fn dumps(t: Trigger) -> u64 {
    DUMPS[t as usize].load(std::sync::atomic::Ordering::Relaxed)
}

/// [`dump_numbered`] with one more comment saying why, in words.
pub fn dump_numbered_because(
    prefix: &Path,
    trigger: Trigger,
    why: Option<&str>,
) -> io::Result<PathBuf> {
    let _busy = thread_state::current().enter();
    let path = output::write_numbered(prefix, &try_profile_gz_because(Some(trigger), why)?)?;
    count_dump(trigger);
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_trigger_counts_in_its_own_slot() {
        for (i, t) in Trigger::ALL.into_iter().enumerate() {
            assert_eq!(t as usize, i);
            let before: Vec<u64> = Trigger::ALL.into_iter().map(dumps).collect();
            count_dump(t);
            let after: Vec<u64> = Trigger::ALL.into_iter().map(dumps).collect();
            for (j, (b, a)) in before.iter().zip(&after).enumerate() {
                assert_eq!(*a, b + u64::from(i == j), "{t:?}");
            }
        }
    }
}

//! The peak profile: the live samples as they were at the highest estimated
//! in-use heap seen so far, as tcmalloc's "peak heap" and dhat's `t-gmax`.
//!
//! The dumper thread looks at the estimated in-use heap (the aggregate's
//! live samples, scaled) at each of its wake-ups ([`tick`]: every second,
//! every 50 ms while a near-limit or growth trigger is set) and keeps a
//! copy of the tallies ([`crate::profile::snapshot::Snapshot`]) when the heap
//! exceeds the kept peak by an eighth (and at least 1 MiB): re-taken only on
//! real growth, so the cost stays amortized, off the allocation paths. The
//! copy keeps only the buckets with live samples and their stacks. A
//! peak held for less than the dumper's period can be missed; the profile
//! is of the highest point the dumper saw.
//!
//! Ways out: [`peak_profile`] (`heapprof::peak_profile()`), and
//! `PREFIX.PID.peak.pb.gz`, written (replaced) with every dump
//! (signal, interval, the near-limit and growth triggers of
//! [`crate::control::heap_triggers`]) and at exit when a peak was kept
//! and the process writes profile files (it wrote one, or the exit dump is
//! on).
//!
//! A single-threaded program under the preload library has no dumper but
//! the watcher (`crate::control::watcher`), which cannot take a snapshot
//! (it allocates): it follows the aggregate's running estimate instead,
//! and has a copy of the process write the peak file at each new peak
//! ([`watcher_due`], `write_now`). A peak the dumper keeps later
//! replaces that file only when it is higher.

use core::sync::atomic::{AtomicU64, Ordering};

use crate::control::dump_errors::DumpError;
use crate::control::fork_fresh::ForkFresh;
use crate::profile::snapshot::Snapshot;

/// (estimated in-use bytes, the tallies then).
pub(crate) static PEAK: ForkFresh<Option<(u64, Snapshot)>> = ForkFresh::new(None, || None);
static AT_EXIT: std::sync::Once = std::sync::Once::new();

/// The estimated in-use heap of the peak profile a copy wrote for the
/// watcher (0: none). A peak kept later must pass it to replace the file.
static WRITTEN: AtomicU64 = AtomicU64::new(0);

/// Profile files are asked for (the exit dump or interval dumps are on);
/// see [`files_wanted`].
static FILES_WANTED: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Says whether the configuration asks for profile files.
pub fn set_files_wanted(on: bool) {
    FILES_WANTED.store(on, Ordering::Relaxed);
}

/// Whether a peak file belongs beside this process's profiles: it writes
/// them (asked to, or it wrote one: a signal, a trigger). A process that
/// writes none (served over HTTP, or reading `peak_profile()`) gets no
/// file. Atomics only (the watcher asks).
pub fn files_wanted() -> bool {
    FILES_WANTED.load(Ordering::Relaxed) || crate::profile::output::sequence() > 0
}

/// How far past a peak the heap must go to make a new one.
fn margin(peak: u64) -> u64 {
    (peak / 8).max(1 << 20)
}

/// Keeps a new peak if the heap (`in_use`, estimated now) passed the kept
/// one by enough (see the module doc).
pub fn tick(in_use: u64) {
    let mut g = PEAK.lock();
    let kept = g
        .as_ref()
        .map_or(0, |p| p.0)
        .max(WRITTEN.load(Ordering::Relaxed));
    if in_use > kept.saturating_add(margin(kept)) {
        *g = Some((in_use, live_snapshot()));
        AT_EXIT.call_once(|| {
            // SAFETY: registering a plain extern "C" function that lives
            // for the whole process.
            unsafe { libc::atexit(at_exit) };
        });
    }
}

/// The tallies now, without the stacks of what is not live.
fn live_snapshot() -> Snapshot {
    let mut snap = crate::profile::snapshot::take();
    // Only what was live matters at a peak: keep no stacks of the rest.
    snap.entries.retain(|e| e.live > 0);
    let live: hashbrown::HashSet<_> = snap.entries.iter().map(|e| e.key.stack).collect();
    snap.stacks.retain(|id, _| live.contains(id));
    snap
}

/// For the watcher, which has no dumper's state (atomics only): whether the
/// heap (`in_use`) passed the peak last written by enough that a copy
/// should write a new one (`write_now`).
pub fn watcher_due(in_use: u64) -> bool {
    let w = WRITTEN.load(Ordering::Relaxed);
    in_use > w.saturating_add(margin(w)) && files_wanted()
}

/// The watcher's copy wrote the heap at `in_use` as the peak profile.
pub fn watcher_wrote(in_use: u64) {
    WRITTEN.store(in_use, Ordering::Relaxed);
}

/// In a forked child: no peak of its own written yet.
pub fn after_fork() {
    WRITTEN.store(0, Ordering::Relaxed);
}

/// The heap profile at the highest estimated in-use heap so far (None
/// before the dumper has seen any growth, or without memory for it).
pub fn peak_profile() -> Option<crate::profile::proto::Profile> {
    let snap = PEAK.lock().clone()?.1;
    profile_of(&snap)
}

fn profile_of(snap: &Snapshot) -> Option<crate::profile::proto::Profile> {
    let mut p = crate::profile::dump::profile_from(Some(snap))?;
    p.comment.push(p.string_table.len() as i64);
    p.string_table.push(format!(
        "{} the live heap at the highest estimated in-use heap seen",
        crate::profile::pprof::PEAK_COMMENT
    ));
    Some(p)
}

/// Writes `PREFIX.PID.peak.pb.gz` (replacing an earlier one) if a peak is
/// kept, higher than one a copy wrote for the watcher; its path.
pub(crate) fn write() -> Result<Option<std::path::PathBuf>, DumpError> {
    let Some(kept) = PEAK.lock().clone() else {
        return Ok(None);
    };
    if kept.0 <= WRITTEN.load(Ordering::Relaxed) {
        return Ok(None);
    }
    profile_of(&kept.1).map_or(Ok(None), |p| write_profile(&p).map(Some))
}

/// In a copy made for the watcher: writes the heap now as the peak
/// profile; its path.
pub(crate) fn write_now() -> Result<Option<std::path::PathBuf>, DumpError> {
    profile_of(&live_snapshot()).map_or(Ok(None), |p| write_profile(&p).map(Some))
}

fn write_profile(p: &crate::profile::proto::Profile) -> Result<std::path::PathBuf, DumpError> {
    let prefix = crate::control::triggers::out_prefix();
    let mut name = prefix.clone().into_os_string();
    name.push(format!(".{}.peak.pb.gz", crate::os::pid()));
    let path = std::path::PathBuf::from(name);
    crate::profile::output::write_atomic(&path, &crate::profile::output::encode_gz(p))
        .map(|()| path)
        .map_err(|e| {
            DumpError::writing(
                &prefix,
                &e,
                format!("{e} (set HEAPPROF_OUT to a path prefix in a writable directory)"),
            )
        })
}

extern "C" fn at_exit() {
    // Only beside profile files: a process that writes none (one served
    // over HTTP, one that only reads `peak_profile()`) leaves no file.
    if !files_wanted() {
        return;
    }
    let _busy = crate::engine::thread_state::current().enter();
    if let Ok(Err(e)) = std::panic::catch_unwind(write) {
        e.say_once();
    }
}

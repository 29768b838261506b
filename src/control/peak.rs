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
//! `PREFIX.PID.peak.pb.gz`, written (replaced) with every dump the
//! near-limit and growth triggers write ([`crate::control::heap_triggers`])
//! and at exit when a peak was kept.

use crate::control::fork_fresh::ForkFresh;

use crate::profile::snapshot::Snapshot;

/// (estimated in-use bytes, the tallies then).
pub(crate) static PEAK: ForkFresh<Option<(u64, Snapshot)>> = ForkFresh::new(None, || None);
static AT_EXIT: std::sync::Once = std::sync::Once::new();

/// Keeps a new peak if the heap (`in_use`, estimated now) passed the kept
/// one by enough (see the module doc).
pub fn tick(in_use: u64) {
    let mut g = PEAK.lock();
    let kept = g.as_ref().map_or(0, |p| p.0);
    if in_use > kept + (kept / 8).max(1 << 20) {
        let mut snap = crate::profile::snapshot::take();
        // Only what was live matters at a peak: keep no stacks of the rest.
        snap.entries.retain(|e| e.live > 0);
        let live: hashbrown::HashSet<_> = snap.entries.iter().map(|e| e.key.stack).collect();
        snap.stacks.retain(|id, _| live.contains(id));
        *g = Some((in_use, snap));
        AT_EXIT.call_once(|| {
            // SAFETY: registering a plain extern "C" function that lives
            // for the whole process.
            unsafe { libc::atexit(at_exit) };
        });
    }
}

/// The heap profile at the highest estimated in-use heap so far (None
/// before the dumper has seen any growth, or without memory for it).
pub fn peak_profile() -> Option<crate::profile::proto::Profile> {
    let snap = PEAK.lock().clone()?.1;
    let mut p = crate::profile::dump::profile_from(Some(&snap))?;
    p.comment.push(p.string_table.len() as i64);
    p.string_table
        .push("heapprof peak: the live heap at the highest estimated in-use heap seen".into());
    Some(p)
}

/// Writes `PREFIX.PID.peak.pb.gz` (replacing an earlier one) if a peak is
/// kept; its path.
pub fn write() -> Option<std::path::PathBuf> {
    let p = peak_profile()?;
    let mut name = crate::control::triggers::out_prefix().into_os_string();
    name.push(format!(".{}.peak.pb.gz", crate::os::pid()));
    let path = std::path::PathBuf::from(name);
    match crate::profile::output::write_atomic(&path, &crate::profile::output::encode_gz(&p)) {
        Ok(()) => Some(path),
        Err(e) => {
            crate::control::triggers::say(&format!(
                "heapprof: cannot write the peak profile: {e} (set HEAPPROF_OUT to a path prefix in a writable directory)"
            ));
            None
        }
    }
}

extern "C" fn at_exit() {
    let _busy = crate::engine::thread_state::current().enter();
    let _ = std::panic::catch_unwind(write);
}

//! Dumps before the OOM killer comes, and a bound on how many stay:
//!
//! - `HEAPPROF_NEAR_LIMIT=80,95`: a heap dump when the process's memory
//!   first crosses each percentage of its limit, re-armed once it falls
//!   back below (by 5 % of the threshold, so a process hovering at the
//!   line does not dump on every wobble). On cgroup v1 the kernel tells
//!   the dumper at each crossing (threshold events on
//!   `memory.usage_in_bytes`, [`MemCgroup::usage_events`], waited on with
//!   the dumper's other wake-ups): nothing is polled. Elsewhere (v2 has no
//!   usage-threshold event) the dumper polls every [`POLL`]. The dump's
//!   comment says which. The memory and the limit: the
//!   process's memory cgroup (v2 `memory.current` against the lowest
//!   `memory.max`/`memory.high` of it and its ancestors; v1
//!   `memory.usage_in_bytes` against `memory.limit_in_bytes`); without a
//!   cgroup limit, the address space against `RLIMIT_AS`; without that,
//!   the resident set against physical memory. Several thresholds crossed
//!   in one step make one dump, naming the highest.
//! - `HEAPPROF_GROWTH=BYTES`: a heap dump each time the estimated in-use
//!   heap (the scaled live samples) exceeds that of the last such dump by
//!   BYTES (the first at BYTES), as gperftools'
//!   `HEAP_PROFILE_INUSE_INTERVAL`.
//! - `HEAPPROF_KEEP=N`: only the newest N heap dumps of this process are
//!   kept (with their companion files), whatever wrote them, so no trigger
//!   can fill a disk: each numbered dump, once written, prunes the older
//!   ones ([`prune_after_dump`]), on whichever thread or copy of the
//!   process wrote it, the exit's dump included.
//!
//! Each such dump's profile carries a comment saying what triggered it,
//! and comes with the peak profile ([`crate::control::peak`]).
//! All of it runs on the dumper thread ([`tick`]), which polls every
//! [`POLL`] while a trigger is set: a cheap read of one cgroup file and the
//! aggregate's running in-use estimate. A single-threaded program under
//! the preload library, which otherwise has only the watcher
//! ([`crate::control::watcher`]), gets the dumper thread at start when
//! `HEAPPROF_NEAR_LIMIT` or `HEAPPROF_GROWTH` is set ([`wanted`]): glibc's
//! malloc then takes its multi-threaded paths, the price of asking.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::control::cgroup::MemCgroup;
use crate::control::dump_errors::DumpError;
use crate::control::fork_fresh::ForkFresh;
use crate::profile::dump::Trigger;

/// How often the dumper looks while a trigger is set.
pub const POLL: Duration = Duration::from_millis(50);

pub(crate) struct State {
    /// (threshold %, armed), ascending.
    near: Vec<(u64, bool)>,
    growth: Option<u64>,
    /// Estimated in-use heap at the last growth dump.
    growth_base: u64,
    cgroup: Option<MemCgroup>,
    /// The kernel reports the crossings (cgroup v1 threshold events).
    events: bool,
}

pub(crate) static STATE: ForkFresh<Option<State>> = ForkFresh::new(None, || None);

impl State {
    fn from_env() -> State {
        let mut s = State {
            near: Vec::new(),
            growth: None,
            growth_base: 0,
            cgroup: None,
            events: false,
        };
        let get = |n: &str| {
            crate::control::config::getenv(n)
                .map(str::trim)
                .filter(|v| !v.is_empty())
        };
        if let Some(v) = get("HEAPPROF_NEAR_LIMIT") {
            match parse_percentages(v) {
                Some(p) => s.near = p.into_iter().map(|p| (p, true)).collect(),
                None => crate::control::triggers::say(&format!(
                    "heapprof: HEAPPROF_NEAR_LIMIT={v:?} is not a list of percentages from 1 to 99 (such as 80,95); no near-limit dumps"
                )),
            }
        }
        if let Some(v) = get("HEAPPROF_GROWTH") {
            match crate::control::config::parse_bytes(v).filter(|&b| b > 0) {
                Some(b) => s.growth = Some(b),
                None => crate::control::triggers::say(&format!(
                    "heapprof: HEAPPROF_GROWTH={v:?} is not a number of bytes such as 100m; no growth dumps"
                )),
            }
        }
        // A bad HEAPPROF_KEEP said at start, not at the first dump.
        keep();
        if !s.near.is_empty() {
            s.cgroup = MemCgroup::of(std::process::id());
            s.events = s.register_events();
        }
        s
    }
}

impl State {
    /// Asks the kernel for an event at each threshold and at each re-arm
    /// point (cgroup v1); whether it agreed.
    fn register_events(&self) -> bool {
        let Some(cg) = self.cgroup.as_ref() else {
            return false;
        };
        let Some(limit) = cg.tightest_limit() else {
            return false;
        };
        let points: Vec<u64> = self
            .near
            .iter()
            .flat_map(|&(p, _)| {
                let at = limit / 100 * p;
                [at, at - at / 20]
            })
            .collect();
        match cg.usage_events(&points) {
            Some(fd) => {
                let old = EVENTS.set(fd);
                if old >= 0 && old != fd {
                    crate::os::raw::close(old);
                }
                true
            }
            None => false,
        }
    }
}

/// The cgroup v1 threshold eventfd, when registered: the dumper's wait
/// includes it ([`event_fd`]).
static EVENTS: crate::os::fds::Held = crate::os::fds::Held::new();

/// The descriptor the dumper's wait should include (`-1`: none). In a
/// forked child the parent's is let go (the child registers its own).
pub fn event_fd() -> i32 {
    if EVENTS.raw() >= 0 && !EVENTS.made_here() {
        // Inherited: the same cgroup's events, but the child's state
        // registers anew.
        EVENTS.close();
    }
    EVENTS.raw()
}

/// Empties the eventfd after a wake-up (raw calls only).
pub fn drain_events() {
    if let Some(fd) = EVENTS.get() {
        let mut v = [0u8; 8];
        // SAFETY: an 8-byte local buffer, an eventfd's read size.
        unsafe { crate::os::raw::read(fd, v.as_mut_ptr(), 8) };
    }
}

/// Whether a near-limit or growth trigger is asked for (then the process
/// needs the dumper thread). Allocation-free: start-up calls it.
pub fn wanted() -> bool {
    ["HEAPPROF_NEAR_LIMIT", "HEAPPROF_GROWTH"]
        .into_iter()
        .any(|n| crate::control::config::getenv(n).is_some_and(|v| !v.trim().is_empty()))
}

/// `80,95` → [80, 95] (sorted, each 1 to 99).
pub fn parse_percentages(v: &str) -> Option<Vec<u64>> {
    let mut out = Vec::new();
    for part in v.split(',') {
        let p: u64 = part.trim().trim_end_matches('%').parse().ok()?;
        if !(1..=99).contains(&p) {
            return None;
        }
        out.push(p);
    }
    out.sort_unstable();
    out.dedup();
    Some(out)
}

/// How long the dumper may wait before its next [`tick`]: [`POLL`] while
/// a near-limit or growth trigger is set.
pub fn poll_every() -> Option<Duration> {
    let mut g = STATE.lock();
    let s = g.get_or_insert_with(State::from_env);
    ((!s.near.is_empty() && !s.events) || s.growth.is_some()).then_some(POLL)
}

/// The dumper's periodic call (see the module doc).
pub fn tick() {
    let mut g = STATE.lock();
    let s = g.get_or_insert_with(State::from_env);
    let now = in_use_estimate();
    crate::control::peak::tick(now);
    if let Some(step) = s.growth {
        if now >= s.growth_base.saturating_add(step) {
            dump(Trigger::Growth, &format!(
                "heapprof trigger: HEAPPROF_GROWTH={step}: estimated in-use heap {} MiB, {} MiB over the last growth dump",
                now >> 20,
                (now - s.growth_base) >> 20
            ));
            s.growth_base = now;
        }
    }
    if !s.near.is_empty() {
        if let Some((used, limit, what)) = memory(s.cgroup.as_ref()) {
            let crossed = s
                .near
                .iter()
                .filter(|&&(p, armed)| armed && used >= limit / 100 * p)
                .map(|&(p, _)| p)
                .max();
            for (p, armed) in &mut s.near {
                let at = limit / 100 * *p;
                if used >= at {
                    *armed = false;
                } else if used < at - at / 20 {
                    *armed = true;
                }
            }
            if let Some(p) = crossed {
                dump(Trigger::NearLimit, &format!(
                    "heapprof trigger: HEAPPROF_NEAR_LIMIT: memory {} MiB is {}% of the {what} {} MiB (threshold {p}%; {})",
                    used >> 20,
                    used * 100 / limit.max(1),
                    limit >> 20,
                    if s.events {
                        "told by a cgroup v1 threshold event"
                    } else {
                        "polled every 50 ms"
                    }
                ));
            }
        }
    }
}

fn dump(trigger: Trigger, why: &str) {
    let prefix = crate::control::triggers::out_prefix();
    if let Err(e) = crate::control::peak::write() {
        e.say_once();
    }
    match crate::profile::dump::dump_numbered_because(&prefix, trigger, Some(why)) {
        Ok(_) => {
            crate::control::dump_errors::cleared();
            prune_after_dump();
        }
        Err(e) if e.kind() == std::io::ErrorKind::OutOfMemory => {}
        Err(e) => DumpError::writing(
            &prefix,
            &e,
            format!("{e} (set HEAPPROF_OUT to a path prefix in a writable directory)"),
        )
        .say_once(),
    }
}

/// The estimated in-use heap: the live samples, scaled (drained first).
fn in_use_estimate() -> u64 {
    crate::engine::aggregate::with(|_| ());
    crate::engine::aggregate::in_use_estimate()
}

/// (memory used, its limit, what the limit is), by the first source that
/// has a limit (see the module doc).
fn memory(cgroup: Option<&MemCgroup>) -> Option<(u64, u64, &'static str)> {
    if let Some(cg) = cgroup {
        if let (Some(used), Some(limit)) = (cg.usage(), cg.tightest_limit()) {
            return Some((used, limit, "cgroup limit"));
        }
    }
    let statm = crate::os::fds::read_to_string("/proc/self/statm").ok()?;
    let mut it = statm
        .split_whitespace()
        .map(|v| v.parse::<u64>().unwrap_or(0));
    let (size, resident) = (it.next()?, it.next()?);
    // SAFETY: sysconf and getrlimit only fill in values.
    let (page, phys, as_limit) = unsafe {
        let mut r: libc::rlimit = core::mem::zeroed();
        let as_limit = if libc::getrlimit(libc::RLIMIT_AS, &mut r) == 0 {
            r.rlim_cur
        } else {
            libc::RLIM_INFINITY
        };
        (
            libc::sysconf(libc::_SC_PAGESIZE).max(1) as u64,
            libc::sysconf(libc::_SC_PHYS_PAGES).max(0) as u64,
            as_limit,
        )
    };
    if as_limit != libc::RLIM_INFINITY {
        return Some((size * page, as_limit, "address-space limit (RLIMIT_AS)"));
    }
    (phys > 0).then(|| (resident * page, phys * page, "physical memory"))
}

/// `HEAPPROF_KEEP`, read once (said once if it is not a number): 0 keeps
/// every dump.
fn keep() -> usize {
    static KEEP: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *KEEP.get_or_init(|| {
        let Some(v) = crate::control::config::getenv("HEAPPROF_KEEP")
            .map(str::trim)
            .filter(|v| !v.is_empty())
        else {
            return 0;
        };
        v.parse::<usize>().ok().filter(|&n| n > 0).unwrap_or_else(|| {
            crate::control::triggers::say(&format!(
                "heapprof: HEAPPROF_KEEP={v:?} is not a whole number of dumps from 1 up; every dump is kept"
            ));
            0
        })
    })
}

/// After a numbered dump of this process was written: with
/// `HEAPPROF_KEEP=N`, removes all but the newest N.
pub fn prune_after_dump() {
    let n = keep();
    if n > 0 {
        prune(&crate::control::triggers::out_prefix(), crate::os::pid(), n);
    }
}

/// Removes all but the newest `keep` dumps `PREFIX.PID.SEQ.pb.gz` of
/// process `pid`, with their companions (`PREFIX.PID.SEQ.KIND.pb.gz`).
pub fn prune(prefix: &Path, pid: u32, keep: usize) {
    let dir = match prefix.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let stem = format!(
        "{}.{pid}.",
        prefix
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    );
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    let mut files: Vec<(u64, PathBuf)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let rest = name.strip_prefix(&stem)?.strip_suffix(".pb.gz")?;
            let seq = rest.split('.').next()?.parse().ok()?;
            Some((seq, e.path()))
        })
        .collect();
    let mut seqs: Vec<u64> = files.iter().map(|(s, _)| *s).collect();
    seqs.sort_unstable();
    seqs.dedup();
    let Some(&oldest_kept) = seqs.len().checked_sub(keep).and_then(|i| seqs.get(i)) else {
        return;
    };
    files.retain(|(s, _)| *s < oldest_kept);
    for (_, path) in files {
        let _ = std::fs::remove_file(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_parse_sorted() {
        assert_eq!(parse_percentages("95,80"), Some(vec![80, 95]));
        assert_eq!(parse_percentages("90%"), Some(vec![90]));
        assert_eq!(parse_percentages("0"), None);
        assert_eq!(parse_percentages("80,lots"), None);
    }

    #[test]
    fn prune_keeps_the_newest_dumps_and_their_companions() {
        let d = std::env::temp_dir().join(format!("heapprof-prune-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        for n in [
            "heapprof.7.0.pb.gz",
            "heapprof.7.1.pb.gz",
            "heapprof.7.1.threads.pb.gz",
            "heapprof.7.2.pb.gz",
            "heapprof.7.10.pb.gz",
            "heapprof.8.0.pb.gz",
            "heapprof.7.blackbox",
        ] {
            std::fs::write(d.join(n), b"").unwrap();
        }
        prune(&d.join("heapprof"), 7, 2);
        let mut left: Vec<String> = std::fs::read_dir(&d)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "heapprof.7.10.pb.gz",
                "heapprof.7.2.pb.gz",
                "heapprof.7.blackbox",
                "heapprof.8.0.pb.gz"
            ]
        );
        std::fs::remove_dir_all(&d).unwrap();
    }
}

//! The process's own recent heap profiles, for `/debug/pprof/report`: the
//! page `heapprof report` writes, drawn from this process's history.
//!
//! # Model
//! A bounded ring of the last [`CAPACITY`] profiles the HTTP server took
//! (each `/debug/pprof/heap` or `allocs` request, and one per report
//! request), kept gzipped with what took them. Interval dumps
//! (`HEAPPROF_INTERVAL`) are already on disk as `PREFIX.PID.SEQ.pb.gz`, so
//! the report reads this process's newest ones back instead of keeping a
//! second copy. Both are merged by time and the newest [`CAPACITY`] drawn.
//! When neither has had a profile for [`PERIOD`], an idle HTTP worker takes
//! one for the ring, so a live service's page shows its recent hour even
//! when nothing else asks for profiles.
//!
//! Only control's threads touch the ring, marked busy (their allocations
//! are not sampled); the engine's hot paths know nothing of it.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::control::fork_fresh::ForkFresh;
use crate::profile::proto::Profile;

/// Profiles kept, and drawn in a report.
pub const CAPACITY: usize = 60;

/// How long the ring may go without a profile while the HTTP server runs:
/// an idle server's worker takes one then ([`due`]), so the report of a
/// service nobody asked for profiles still covers its last hour.
pub const PERIOD: Duration = Duration::from_secs(60);

pub(crate) struct Taken {
    time_nanos: i64,
    trigger: &'static str,
    gz: Vec<u8>,
}

pub(crate) static RING: ForkFresh<VecDeque<Taken>> = ForkFresh::new(VecDeque::new(), VecDeque::new);

/// Keeps `p` (taken for `trigger`: `http`, `report`, `history`), dropping the oldest
/// beyond [`CAPACITY`].
pub fn record(p: &Profile, trigger: &'static str) {
    let gz = crate::profile::output::encode_gz(p);
    let mut ring = RING.lock();
    if ring.len() >= CAPACITY {
        ring.pop_front();
    }
    ring.push_back(Taken {
        time_nanos: p.time_nanos,
        trigger,
        gz,
    });
}

/// Whether the newest profile kept, or written as a numbered dump by this
/// process, is older than `period` (or there is none): then a periodic one
/// is due. `now_nanos` is the Unix time.
pub fn due(now_nanos: i64, period: Duration) -> bool {
    let newest_kept = {
        let ring = RING.lock();
        ring.back().map_or(0, |t| t.time_nanos)
    };
    let newest_file = numbered_dumps(&crate::control::triggers::out_prefix(), 1)
        .first()
        .and_then(|p| std::fs::metadata(p).ok()?.modified().ok())
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as i64);
    let newest = newest_kept.max(newest_file);
    now_nanos.saturating_sub(newest) >= period.as_nanos() as i64
}

/// The Unix time in nanoseconds.
pub fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// This process's newest numbered dumps under `prefix`, at most `n`, oldest
/// first.
fn numbered_dumps(prefix: &Path, n: usize) -> Vec<PathBuf> {
    let dir = match prefix.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let Some(base) = prefix.file_name().and_then(|b| b.to_str()) else {
        return Vec::new();
    };
    let head = format!("{base}.{}.", crate::os::pid());
    let mut found: Vec<(u64, PathBuf)> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name();
            let seq = name
                .to_str()?
                .strip_prefix(&head)?
                .strip_suffix(".pb.gz")?
                .parse()
                .ok()?;
            Some((seq, e.path()))
        })
        .collect();
    found.sort();
    let skip = found.len().saturating_sub(n);
    found.into_iter().skip(skip).map(|(_, p)| p).collect()
}

/// The newest profiles, oldest first, as `(name, trigger, gzipped bytes)`:
/// the ring and this process's interval dumps on disk, by time.
pub fn recent() -> Vec<(String, &'static str, Vec<u8>)> {
    let mut all: Vec<(i64, String, &'static str, Vec<u8>)> = Vec::new();
    {
        let ring = RING.lock();
        for (i, t) in ring.iter().enumerate() {
            all.push((
                t.time_nanos,
                format!("{}-{i}", t.trigger),
                t.trigger,
                t.gz.clone(),
            ));
        }
    }
    for path in numbered_dumps(&crate::control::triggers::out_prefix(), CAPACITY) {
        let Ok(gz) = std::fs::read(&path) else {
            continue;
        };
        // The time, for ordering only; a dump that does not decode is left
        // out.
        let Ok(p) = crate::report::read::decode("", &gz) else {
            continue;
        };
        all.push((p.time_nanos, path.display().to_string(), "file", gz));
    }
    all.sort_by_key(|a| a.0);
    all.dedup_by_key(|a| a.0);
    let skip = all.len().saturating_sub(CAPACITY);
    all.into_iter()
        .skip(skip)
        .map(|(_, name, trigger, gz)| (name, trigger, gz))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_periodic_profile_is_due_only_when_the_newest_is_old() {
        let now = now_nanos();
        let p = Profile {
            time_nanos: now,
            ..Default::default()
        };
        record(&p, "http");
        assert!(!due(now + 1_000_000_000, PERIOD));
        assert!(due(now + PERIOD.as_nanos() as i64, PERIOD));
        let newest = recent().into_iter().last().unwrap();
        assert_eq!(newest.1, "http");
    }
}

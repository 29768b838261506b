//! The threads profile: live threads by the stack that created them, in
//! pprof format — what Go's goroutine profile is to goroutines, for the
//! threads of a native program (a thread that never exits keeps its stack
//! mapped, 8 MiB by default, which a heap profile never shows).
//!
//! - Sample types `threads/count` (live threads) and
//!   `stack_reservation/bytes` (the stack sizes they were created with);
//!   period type `threads/count`, period 1; default sample type `threads`.
//!   Every thread is counted: nothing is sampled or scaled.
//! - One sample per (creation stack, thread name, age bucket): a string
//!   label `thread_name` (from `/proc/self/task/TID/comm`, so names set at
//!   any time count; empty for a thread that has not started running yet)
//!   and a numeric label `age` (unit `seconds`, the lower bound of the same
//!   buckets heap profiles use, see `profile::snapshot::age_bucket`).
//!   Summing a stack's samples gives its live count.
//! - Stacks start at the caller of `pthread_create` (heapprof's hook is left
//!   out; for Rust threads, std's spawn plumbing too, so the leaf is the
//!   program's call to `spawn`), symbolized with the heap profiles'
//!   symbolizer and mappings, or raw with `HEAPPROF_SYMBOLIZE=0`.
//! - `time_nanos` is the moment of the snapshot, so a series of these
//!   profiles (one per interval dump) orders in time for `heapprof leaks`.
//!
//! Not Go's `threadcreate` profile: that one is cumulative (every thread
//! ever created, by creating stack); this one is what is alive now.

use std::io;
use std::path::{Path, PathBuf};

use hashbrown::HashMap;

use crate::engine::stack_table::StackTable;
use crate::engine::threads::{self, LiveThread};
use crate::profile::pprof::Builder;
use crate::profile::snapshot::age_bucket;
use crate::profile::symbolize::{Frame, Symbolizer};
use crate::{engine::thread_state, profile::mappings, profile::output, profile::proto};

/// Whether threads are tracked in this process (the preload library, or a
/// Rust program built with the `threads` feature), i.e. whether threads
/// profiles are written.
pub fn tracking() -> bool {
    threads::enabled()
}

/// Live tracked threads right now (for an index page or a health check).
pub fn live_count() -> usize {
    threads::live_count()
}

/// A thread's name by kernel thread id, read at dump time.
fn thread_name(tid: u32) -> String {
    if tid == 0 {
        return String::new();
    }
    crate::os::fds::read_to_string(format!("/proc/{}/task/{tid}/comm", crate::os::pid()))
        .map(|s| s.trim_end_matches('\n').to_owned())
        .unwrap_or_default()
}

/// Builds the threads profile of `live` (as of monotonic time `now_mono`,
/// wall-clock `time_unix_ns`). `names` gives a thread's name by tid.
pub(crate) fn build(
    live: &[LiveThread],
    now_mono: u64,
    time_unix_ns: u64,
    sym: Option<&mut Symbolizer>,
    maps: &[mappings::Mapping],
    mut names: impl FnMut(u32) -> String,
) -> proto::Profile {
    let symbolized = sym.is_some();
    let mut sym = sym;
    if let Some(sym) = sym.as_deref_mut() {
        sym.prepare(live.iter().flat_map(|t| t.frames.iter().copied()));
    }
    let mut b = Builder::new(sym, maps);
    b.also_trim = Some(is_spawn_plumbing);
    for (t, u) in [("threads", "count"), ("stack_reservation", "bytes")] {
        let vt = b.value_type(t, u);
        b.p.sample_type.push(vt);
    }
    b.p.period_type = Some(b.value_type("threads", "count"));
    b.p.period = 1;
    b.p.time_nanos = time_unix_ns as i64;
    b.p.duration_nanos = now_mono.saturating_sub(crate::engine::start_mono_ns()) as i64;
    b.p.default_sample_type = b.s.get("threads");
    let comment = b.s.get(&format!(
        "heapprof {}: live threads by creation stack; live={} created={} untracked={}",
        env!("CARGO_PKG_VERSION"),
        live.len(),
        threads::created_count(),
        threads::untracked_count(),
    ));
    b.p.comment.push(comment);
    b.add_mappings(symbolized);

    // (stack, name, age bucket) -> (threads, stack bytes).
    let mut stacks = StackTable::default();
    let mut groups: HashMap<(u32, String, u64), (i64, i64)> = HashMap::new();
    for t in live {
        let id = stacks.intern(&t.frames);
        let age = age_bucket(now_mono.saturating_sub(t.created_mono_ns));
        let g = groups.entry((id, names(t.tid), age)).or_default();
        g.0 += 1;
        g.1 = g.1.saturating_add(t.stack_bytes as i64);
    }
    let mut groups: Vec<_> = groups.into_iter().collect();
    groups.sort_unstable();
    let (k_name, k_age, u_seconds) = (b.s.get("thread_name"), b.s.get("age"), b.s.get("seconds"));
    for ((id, name, age), (n, bytes)) in groups {
        let locs = b.stack(id, stacks.get(id));
        let name = b.s.get(&name);
        b.p.sample.push(proto::Sample {
            location_id: locs,
            value: vec![n, bytes],
            label: vec![
                proto::Label {
                    key: k_name,
                    str: name,
                    ..Default::default()
                },
                proto::Label {
                    key: k_age,
                    num: age as i64,
                    num_unit: u_seconds,
                    ..Default::default()
                },
            ],
        });
    }
    b.finish()
}

/// Rust's thread-spawning plumbing (`std::thread::Builder::spawn`, `std::sys`'s
/// `Thread::new`, …), left out at the leaf so a Rust thread's stack starts
/// at the program's call to spawn, as a C thread's starts at its call to
/// `pthread_create`.
fn is_spawn_plumbing(f: &Frame) -> bool {
    const PLUMBING: &[&str] = &[
        "std::thread::",
        "<std::thread::",
        "std::sys::",
        "<std::sys::",
    ];
    PLUMBING.iter().any(|p| f.name.starts_with(p))
}

/// The threads profile now, as a pprof message.
pub fn profile() -> proto::Profile {
    let _busy = thread_state::current().enter();
    let live = threads::snapshot();
    let now = crate::os::monotonic_ns();
    let wall = crate::os::realtime_ns();
    let maps = mappings::current();
    if crate::profile::settings::symbolize_enabled() {
        crate::profile::symbolize::with(|sym| {
            build(&live, now, wall, Some(sym), &maps, thread_name)
        })
    } else {
        build(&live, now, wall, None, &maps, thread_name)
    }
}

/// The threads profile now, gzipped (what `/debug/pprof/threads` serves).
pub fn profile_gz() -> Vec<u8> {
    let _busy = thread_state::current().enter();
    output::encode_gz(&profile())
}

/// Writes the gzipped threads profile to `path`, atomically.
pub fn dump_to(path: impl AsRef<Path>) -> io::Result<()> {
    let _busy = thread_state::current().enter();
    output::write_atomic(path.as_ref(), &profile_gz())
}

/// Next to the numbered heap profile `heap` (`PREFIX.PID.SEQ.pb.gz`), writes
/// `PREFIX.threads.PID.SEQ.pb.gz` if threads are tracked; returns its path.
pub fn write_beside(heap: &Path) -> io::Result<Option<PathBuf>> {
    if !tracking() {
        return Ok(None);
    }
    let _busy = thread_state::current().enter();
    output::write_companion(heap, "threads", &profile_gz()).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(p: &proto::Profile, i: i64) -> &str {
        &p.string_table[i as usize]
    }

    #[inline(never)]
    fn here() -> Vec<u64> {
        let mut f = [0u64; 32];
        let n = crate::engine::stack::capture(&mut f, 0);
        f[..n].to_vec()
    }

    #[test]
    fn one_sample_per_stack_name_and_age_with_exact_counts() {
        let a = here();
        let b = vec![a[1], a[2]];
        let now = 1_000_000_000_000u64;
        let t = |frames: &Vec<u64>, age_s: u64, tid: u32| LiveThread {
            frames: frames.clone(),
            created_mono_ns: now - age_s * 1_000_000_000,
            stack_bytes: 8 << 20,
            tid,
        };
        let live = vec![
            t(&a, 0, 1),
            t(&a, 0, 2),
            t(&a, 120, 3),
            t(&b, 5, 4),
            t(&a, 0, 5),
        ];
        let names = |tid: u32| if tid == 5 { "other" } else { "worker" }.to_string();
        let maps = mappings::current();
        let mut sym = Symbolizer::default();
        let p = build(&live, now, 42, Some(&mut sym), &maps, names);
        let types: Vec<(&str, &str)> = p
            .sample_type
            .iter()
            .map(|t| (s(&p, t.r#type), s(&p, t.unit)))
            .collect();
        assert_eq!(
            types,
            [("threads", "count"), ("stack_reservation", "bytes")]
        );
        assert_eq!(s(&p, p.default_sample_type), "threads");
        assert_eq!(p.time_nanos, 42);
        let got: Vec<(String, i64, Vec<i64>)> = p
            .sample
            .iter()
            .map(|x| {
                (
                    s(&p, x.label[0].str).to_string(),
                    x.label[1].num,
                    x.value.clone(),
                )
            })
            .collect();
        assert_eq!(p.sample.len(), 4, "{got:?}");
        let total: i64 = p.sample.iter().map(|x| x.value[0]).sum();
        assert_eq!(total, 5);
        let bytes: i64 = p.sample.iter().map(|x| x.value[1]).sum();
        assert_eq!(bytes, 5 * (8 << 20));
        let has = |name: &str, age: i64, v: [i64; 2]| {
            got.iter().any(|g| g.0 == name && g.1 == age && g.2 == v)
        };
        // The two fresh "worker" threads of stack `a` share a sample.
        assert!(has("worker", 0, [2, 2 * (8 << 20)]), "{got:?}");
        let bucket = |secs: u64| age_bucket(secs * 1_000_000_000) as i64;
        assert!(has("worker", bucket(120), [1, 8 << 20]), "{got:?}");
        assert!(has("worker", bucket(5), [1, 8 << 20]), "{got:?}");
        assert!(has("other", 0, [1, 8 << 20]), "{got:?}");
        // Symbolized: locations name their functions.
        assert!(p.sample.iter().all(|x| !x.location_id.is_empty()));
        assert!(p.location.iter().any(|l| !l.line.is_empty()));
        assert!(p.mapping.iter().all(|m| m.has_functions));
    }
}

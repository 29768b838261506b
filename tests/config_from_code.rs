//! The same settings from code: `Config` overrides the environment it starts
//! from, and takes effect in a running process (interval, signal, prefix).

mod common;

use std::alloc::System;
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: heapprof::Profiler<System> = heapprof::Profiler::new(System);

fn wait_for(dir: &std::path::Path, n: usize) -> usize {
    let end = Instant::now() + Duration::from_secs(20);
    while common::dumps(dir).len() < n && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    common::dumps(dir).len()
}

#[test]
fn interval_signal_and_prefix_from_code() {
    let dir = common::temp_dir("config-code");
    let config = heapprof::Config::from_env()
        .out(dir.join("code"))
        .interval(Some(Duration::from_millis(300)))
        .signal(Some(libc::SIGUSR1));
    assert_eq!(config.out, dir.join("code"));
    config.clone().install();
    assert!(wait_for(&dir, 2) >= 2, "interval dumps from code");

    // Periodic dumps off; the signal set from code triggers one.
    config.clone().interval(None).install();
    std::thread::sleep(Duration::from_millis(400));
    let before = common::dumps(&dir).len();
    // To the process, as `kill` does: heapprof blocks its signal in the
    // program's threads, so a raise() here would stay pending.
    // SAFETY: signalling our own process with a signal heapprof handles.
    unsafe { libc::kill(libc::getpid(), libc::SIGUSR1) };
    assert_eq!(wait_for(&dir, before + 1), before + 1);
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(
        common::dumps(&dir).len(),
        before + 1,
        "no more interval dumps"
    );

    // The numbered dump API writes under the configured prefix, never
    // overwriting: sequence numbers keep counting.
    let p = heapprof::dump().unwrap();
    assert!(p.starts_with(&dir), "{}", p.display());
    let pid = std::process::id();
    let seqs: Vec<u64> = common::dumps(&dir).iter().map(|d| d.1).collect();
    assert!(common::dumps(&dir).iter().all(|d| d.0 == pid));
    assert_eq!(seqs, (0..seqs.len() as u64).collect::<Vec<_>>());
}

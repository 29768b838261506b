//! A program that leaks at a known, steady rate, to read over heapprof's
//! `/debug/pprof/` endpoint:
//!
//! ```text
//! HEAPPROF_HTTP=6060 cargo run --example leak_server -- --seconds 60
//! go tool pprof -top http://127.0.0.1:6060/debug/pprof/heap
//! ```
//! Every `--tick-ms` (10) it leaks one `--bytes` (10000) block in
//! `leak_at_known_rate`, paced by absolute deadlines so the rate does not
//! drift, and allocates and frees scratch memory in `scratch_churn`.
//! `--http ADDR` turns the server on from code (`Config::http`) instead of
//! `HEAPPROF_HTTP`; `--fork` forks once, half a second in, and runs the
//! loop in both processes. Prints `pid N` first (and `child pid N` in a forked child),
//! `done` at the end.

use std::alloc::System;
use std::hint::black_box;
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: heapprof::Profiler<System> = heapprof::Profiler::new(System);

#[inline(never)]
fn leak_at_known_rate(bytes: usize) {
    Box::leak(vec![7u8; bytes].into_boxed_slice());
}

#[inline(never)]
fn scratch_churn() {
    for _ in 0..4 {
        black_box(vec![3u8; 4096]);
    }
}

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let seconds: f64 = arg(&args, "--seconds", 10.0);
    let tick = Duration::from_millis(arg(&args, "--tick-ms", 10));
    let bytes: usize = arg(&args, "--bytes", 10_000);
    if let Some(addr) = args
        .iter()
        .position(|a| a == "--http")
        .and_then(|i| args.get(i + 1))
    {
        let addr = addr.parse().expect("--http HOST:PORT");
        heapprof::Config::from_env().http(Some(addr)).install();
    }
    println!("pid {}", std::process::id());
    let mut fork = args.iter().any(|a| a == "--fork");
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(seconds);
    let mut next = start;
    while Instant::now() < end {
        leak_at_known_rate(bytes);
        scratch_churn();
        if fork && start.elapsed() >= Duration::from_millis(500) {
            fork = false;
            // SAFETY: fork in a program whose only other threads are
            // heapprof's (its atfork handlers deal with them); both
            // processes run on in this loop.
            if unsafe { libc::fork() } == 0 {
                println!("child pid {}", std::process::id());
            }
        }
        next += tick;
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    println!("done");
}

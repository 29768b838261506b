//! Threads that never exit, in a Rust program built with heapprof's
//! `threads` feature (`cargo run --example thread_leak --features threads`):
//! - `leak_worker` spawns a named worker per "connection" that parks forever
//!   (the leak to find);
//! - `churn` spawns and joins short-lived threads (no growth);
//! - `scoped` runs `std::thread::scope` threads, which end before it returns;
//! - one more is spawned and joined while heapprof's own locks are held by
//!   another thread (the hook must not wait on them).
//!
//! Prints `ready live=N` once its threads are in place, where N is the live
//! count heapprof reports; then waits for a line on stdin (send SIGUSR2
//! meanwhile for a heap and a threads profile), and exits.

use std::alloc::System;
use std::io::BufRead;
use std::time::Duration;

#[global_allocator]
static GLOBAL: heapprof::Profiler<System> = heapprof::Profiler::new(System);

const LEAKED: usize = 5;

#[inline(never)]
fn leak_worker(i: usize) {
    std::thread::Builder::new()
        .name(format!("conn-{i}"))
        .stack_size(256 << 10)
        .spawn(|| loop {
            std::thread::park();
        })
        .expect("spawn");
}

#[inline(never)]
fn churn() {
    let h = std::thread::spawn(|| std::hint::black_box(vec![0u8; 100]).len());
    assert_eq!(h.join().unwrap(), 100);
}

#[inline(never)]
fn scoped() {
    let mut sums = [0u64; 4];
    std::thread::scope(|s| {
        for (i, out) in sums.iter_mut().enumerate() {
            s.spawn(move || *out = (0..1000u64).map(|x| x * i as u64).sum());
        }
    });
    assert_eq!(sums[1], 499_500);
}

fn main() {
    for i in 0..LEAKED {
        leak_worker(i);
    }
    for _ in 0..50 {
        churn();
    }
    scoped();
    // While this thread holds heapprof's locks (and so counts as heapprof's
    // own work, whose threads are not tracked), another thread spawns one:
    // the hook must not wait on those locks (it would deadlock).
    let n = heapprof::__with_profiler_locks_held(|| {
        std::thread::spawn(|| std::thread::spawn(|| 7).join().unwrap())
            .join()
            .unwrap()
    });
    assert_eq!(n, 7);
    // A joined thread has ended (and been forgotten) when join returns;
    // `scope` returns when its threads' closures are done, a moment before
    // the threads end: wait for that.
    let mut live = heapprof::profile::threads_pprof::live_count();
    for _ in 0..2000 {
        if live == LEAKED {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
        live = heapprof::profile::threads_pprof::live_count();
    }
    println!("ready live={live}");
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
}

//! An idle program holding live memory from a few hundred distinct stacks,
//! for measuring what heapprof's dumps cost it (`scripts/bench-dump-memory.sh`,
//! `tests/dump_memory.rs`).
//!
//! ```text
//! idle [--mb N] [--seconds S]
//! ```
//! Allocates about N MiB (default 21) in 64 KiB blocks from 256 different
//! call stacks, touches every byte, prints `ready PID`, then sleeps until S
//! seconds (default 60) have passed or stdin is closed.

use std::alloc::System;
use std::hint::black_box;
use std::io::Read;

#[global_allocator]
static GLOBAL: heapprof::Profiler<System> = heapprof::Profiler::new(System);

/// Allocates one block at recursion depth `depth`: every (depth, branch)
/// pair is its own stack.
#[inline(never)]
fn grow(depth: u32, branch: u32, keep: &mut Vec<Vec<u8>>) {
    if depth == 0 {
        keep.push(black_box(vec![(branch & 0xff) as u8 | 1; 64 * 1024]));
        return;
    }
    if branch & 1 == 0 {
        left(depth - 1, branch >> 1, keep)
    } else {
        right(depth - 1, branch >> 1, keep)
    }
}

#[inline(never)]
fn left(depth: u32, branch: u32, keep: &mut Vec<Vec<u8>>) {
    grow(depth, branch, keep);
    black_box(());
}

#[inline(never)]
fn right(depth: u32, branch: u32, keep: &mut Vec<Vec<u8>>) {
    grow(depth, branch, keep);
    black_box(());
}

fn arg(args: &[String], name: &str, default: f64) -> f64 {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mb = arg(&args, "--mb", 21.0);
    let seconds = arg(&args, "--seconds", 60.0);
    let blocks = (mb * 16.0) as u32;
    let mut keep = Vec::with_capacity(blocks as usize);
    for i in 0..blocks {
        // 8 levels of left/right: 256 stacks.
        grow(8, i % 256, &mut keep);
    }
    println!("ready {}", std::process::id());
    // Idle until the driver closes stdin (or the time is up).
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        let _ = tx.send(());
    });
    let _ = rx.recv_timeout(std::time::Duration::from_secs_f64(seconds));
    black_box(&keep);
    println!("done {}", keep.len());
}

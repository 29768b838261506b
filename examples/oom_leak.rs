//! A Rust program for the black box tests (tests/blackbox.rs), with
//! heapprof's `Profiler` as its global allocator:
//! - `oom_leak grow CHUNK [MAX [PAUSE_MS]]`: leaks CHUNK bytes at a time
//!   (touched) in `leak_chunk`, with some churn, pausing PAUSE_MS after
//!   each, until killed (or until MAX bytes, then idles half a second and
//!   exits); after each leak prints the total leaked so far;
//! - `oom_leak peak`: grows to 200 MiB in `grow_peak` (1 MiB blocks),
//!   holds it 1.5 s, frees it, keeps 8 MiB in `leak_known`, prints
//!   `freed`, waits for a line on stdin (or its end), and writes
//!   `heapprof::peak_profile()` to `$PEAK_OUT` before exiting;
//! - `oom_leak idle N SIZE`: leaks N objects of SIZE bytes in `leak_known`,
//!   every other one under the heap label `tenant=acme`, prints `ready`,
//!   then sleeps until killed.
//!
//! Run it with `HEAPPROF_BLACKBOX=DIR`, kill it, then
//! `heapprof recover DIR/heapprof.PID.blackbox -o heap.pb.gz`.

use std::hint::black_box;
use std::io::Write;

#[global_allocator]
static GLOBAL: heapprof::Profiler<std::alloc::System> = heapprof::Profiler::new(std::alloc::System);

#[inline(never)]
fn leak_chunk(n: usize) {
    Box::leak(vec![1u8; n].into_boxed_slice());
}

#[inline(never)]
fn leak_known(n: usize) {
    Box::leak(vec![2u8; n].into_boxed_slice());
}

#[inline(never)]
fn grow_peak(n: usize) -> Vec<u8> {
    // Used here, so the allocation is not a tail call (which would leave
    // this frame out of the stack).
    black_box(vec![3u8; n])
}

#[inline(never)]
fn churn() {
    for i in 0..64 {
        black_box(vec![0u8; 1000 + i * 37]);
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let num = |i: usize| -> usize { args[i].parse().expect("a number") };
    let mut out = std::io::stdout().lock();
    match args.get(1).map(String::as_str) {
        Some("grow") if (3..=5).contains(&args.len()) => {
            let chunk = num(2);
            let max = if args.len() > 3 { num(3) } else { usize::MAX };
            let pause = if args.len() > 4 { num(4) } else { 0 };
            let mut total = 0usize;
            while total < max {
                leak_chunk(chunk);
                total += chunk;
                writeln!(out, "leaked {total}").unwrap();
                out.flush().unwrap();
                churn();
                std::thread::sleep(std::time::Duration::from_millis(pause as u64));
            }
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
        Some("peak") => {
            let held: Vec<Vec<u8>> = (0..200).map(|_| grow_peak(1 << 20)).collect();
            std::thread::sleep(std::time::Duration::from_millis(1500));
            drop(held);
            for _ in 0..8 {
                leak_known(1 << 20);
            }
            writeln!(out, "freed").unwrap();
            out.flush().unwrap();
            // Until stdin has a line or is closed.
            let _ = std::io::stdin().read_line(&mut String::new());
            let p = heapprof::peak_profile().expect("a peak was kept");
            let path = std::env::var_os("PEAK_OUT").expect("PEAK_OUT");
            std::fs::write(path, prost::Message::encode_to_vec(&p)).unwrap();
        }
        Some("idle") if args.len() == 4 => {
            // Every other one under a heap label, which the black box
            // keeps too.
            for i in 0..num(2) {
                if i % 2 == 1 {
                    heapprof::with_labels(&[("tenant", "acme")], || leak_known(num(3)));
                } else {
                    leak_known(num(3));
                }
            }
            writeln!(out, "ready").unwrap();
            out.flush().unwrap();
            loop {
                std::thread::sleep(std::time::Duration::from_secs(3600));
            }
        }
        _ => {
            eprintln!("usage: oom_leak grow CHUNK [MAX [PAUSE_MS]] | oom_leak idle N SIZE");
            std::process::exit(2);
        }
    }
}

//! A fixed multi-threaded churn workload under a global allocator chosen at
//! start-up, so one binary can be run alternately with and without heapprof
//! (see `scripts/bench-rust.sh`).
//!
//! ```text
//! bench_churn --mode system|profiler|off [--rate BYTES] [--threads N] [--ops N]
//!             [--slots N] [--pair-size BYTES]
//! ```
//! Each thread keeps `--slots` live blocks (default 4096) and `--ops` times
//! (default 3,000,000) frees a random one and allocates a block of a random
//! size in its place, log-uniform over 16 B..8 KiB, touching its first byte.
//! The random streams are fixed, so every run does the same work. With
//! `--pair-size`, each thread instead does `--ops` alloc + free pairs of that
//! size (the multi-threaded form of `pair_2t` in `benches/alloc.rs`). Prints
//! one line: `mode=... threads=... ops_per_thread=... elapsed_ms=...
//! ns_per_op=...` where `ns_per_op` is wall time per operation per thread.
//!
//! # Why a switch
//! `#[global_allocator]` is fixed at build time, so this program installs a
//! dispatcher, [`Switch`], which sends every call to either `System` or a
//! `heapprof::Profiler<System>` according to [`MODE`]. Both arms pay the same
//! relaxed load and branch, so the comparison is of `Profiler<System>` against
//! `System` plus an identical small constant (the dispatcher), not of the
//! profiler against nothing. Modes: `system` (`System` alone), `profiler`
//! (default rate, 512 KiB, or `--rate`), `off` (`Profiler` with rate 0).

use heapprof::engine::sampler::Rng;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Barrier;
use std::time::Instant;

use heapprof::control::config::DEFAULT_RATE;
use heapprof::Profiler;

const SYSTEM: u8 = 0;
const PROFILER: u8 = 1;

/// Which allocator [`Switch`] forwards to. Set once, early in `main`, from
/// `SYSTEM` to `PROFILER` and never back: blocks the runtime allocated before
/// the switch came from `System`, and `Profiler` frees any block it did not
/// sample through its inner `System` with the caller's layout, which is
/// exactly how `System` wants them freed. The reverse (a sample, which lives
/// in heapprof's sample heap, handed to `System`) never happens.
static MODE: AtomicU8 = AtomicU8::new(SYSTEM);
static HEAPPROF: Profiler<System> = Profiler::new(System);

/// The global allocator: `System` or `Profiler<System>`, chosen by [`MODE`].
struct Switch;

#[global_allocator]
static GLOBAL: Switch = Switch;

#[inline(always)]
fn profiling() -> bool {
    MODE.load(Ordering::Relaxed) == PROFILER
}

// SAFETY: every call forwards unchanged to one of two correct allocators, and
// a block is only ever released through the allocator that allocated it or,
// for blocks allocated before the one-way switch, through `Profiler<System>`,
// which frees unsampled blocks through `System` with their layout (see MODE).
unsafe impl GlobalAlloc for Switch {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarding the caller's contract.
        unsafe {
            if profiling() {
                HEAPPROF.alloc(layout)
            } else {
                System.alloc(layout)
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarding the caller's contract.
        unsafe {
            if profiling() {
                HEAPPROF.alloc_zeroed(layout)
            } else {
                System.alloc_zeroed(layout)
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarding the caller's contract (see MODE for blocks that
        // predate the switch).
        unsafe {
            if profiling() {
                HEAPPROF.dealloc(ptr, layout)
            } else {
                System.dealloc(ptr, layout)
            }
        }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarding the caller's contract (see MODE for blocks that
        // predate the switch).
        unsafe {
            if profiling() {
                HEAPPROF.realloc(ptr, layout, new_size)
            } else {
                System.realloc(ptr, layout, new_size)
            }
        }
    }
}

/// Log-uniform over 16 B..8 KiB (an octave, then a size within it), as in
/// `benches/alloc.rs`: mean about 1.4 KiB.
fn churn_layout(rng: &mut Rng) -> Layout {
    let r = rng.next_u64();
    let base = 16usize << (r % 9);
    let size = base + ((r >> 8) as usize % base);
    Layout::from_size_align(size, 8).unwrap()
}

fn alloc_one(rng: &mut Rng) -> (*mut u8, Layout) {
    let l = churn_layout(rng);
    // SAFETY: nonzero size; freed later with the same layout.
    let p = unsafe { std::alloc::alloc(l) };
    if p.is_null() {
        std::alloc::handle_alloc_error(l);
    }
    // SAFETY: `p` is a live block of at least one byte.
    unsafe { p.write_volatile(1) };
    (p, l)
}

/// One thread's share: fill (untimed), wait for the others, churn (timed),
/// empty (untimed). Returns the timed span.
fn worker(seed: u64, slots: usize, ops: u64, go: &Barrier) -> (Instant, Instant) {
    let mut rng = Rng::new(seed);
    let mut live: Vec<(*mut u8, Layout)> = (0..slots).map(|_| alloc_one(&mut rng)).collect();
    go.wait();
    let t0 = Instant::now();
    for _ in 0..ops {
        let i = rng.next_u64() as usize % slots;
        let (p, l) = live[i];
        // SAFETY: allocated above with `l`, freed once.
        unsafe { std::alloc::dealloc(p, l) };
        live[i] = alloc_one(&mut rng);
    }
    let t1 = Instant::now();
    for (p, l) in live {
        // SAFETY: as above.
        unsafe { std::alloc::dealloc(p, l) };
    }
    (t0, t1)
}

/// The `--pair-size` workload: `ops` alloc + free pairs of `size` bytes.
fn pairs(size: usize, ops: u64, go: &Barrier) -> (Instant, Instant) {
    let l = Layout::from_size_align(size, 8).unwrap();
    go.wait();
    let t0 = Instant::now();
    for _ in 0..ops {
        // black_box keeps the size a run-time value and the pair from being
        // deleted as unused.
        let l = std::hint::black_box(l);
        // SAFETY: nonzero size; freed at once with the same layout.
        unsafe {
            let p = std::alloc::alloc(l);
            std::hint::black_box(p);
            std::alloc::dealloc(p, l);
        }
    }
    (t0, Instant::now())
}

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    match args.iter().position(|a| a == name) {
        None => default,
        Some(i) => match args.get(i + 1).map(|v| v.parse()) {
            Some(Ok(v)) => v,
            _ => usage(&format!("{name} needs a value")),
        },
    }
}

fn usage(why: &str) -> ! {
    eprintln!("bench_churn: {why}");
    eprintln!(
        "usage: bench_churn --mode system|profiler|off [--rate BYTES] [--threads N] [--ops N] \
         [--slots N] [--pair-size BYTES]"
    );
    std::process::exit(2)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode: String = arg(&args, "--mode", String::new());
    let rate: u64 = arg(&args, "--rate", DEFAULT_RATE);
    let threads: usize = arg(&args, "--threads", 2);
    let ops: u64 = arg(&args, "--ops", 3_000_000);
    let slots: usize = arg(&args, "--slots", 4096);
    let pair_size: usize = arg(&args, "--pair-size", 0);
    if threads == 0 || slots == 0 {
        usage("--threads and --slots must be at least 1");
    }
    match mode.as_str() {
        "system" => {}
        "profiler" | "off" => {
            heapprof::set_rate(if mode == "off" { 0 } else { rate });
            MODE.store(PROFILER, Ordering::Relaxed);
            // The first profiled allocation initialises heapprof (reads the
            // environment, starts its dumper thread, warms up the unwinder):
            // pay that here, outside the timed span.
            drop(std::hint::black_box(vec![0u8; 64]));
        }
        _ => usage("--mode must be system, profiler or off"),
    }

    let go = Barrier::new(threads);
    let spans: Vec<(Instant, Instant)> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|t| {
                let go = &go;
                s.spawn(move || match pair_size {
                    0 => worker(0x9E37_79B9 + t as u64, slots, ops, go),
                    n => pairs(n, ops, go),
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let start = spans.iter().map(|s| s.0).min().unwrap();
    let end = spans.iter().map(|s| s.1).max().unwrap();
    let ns = (end - start).as_nanos() as f64;
    println!(
        "mode={mode} workload={} threads={threads} ops_per_thread={ops} elapsed_ms={:.1} ns_per_op={:.2}",
        match pair_size {
            0 => "churn".to_string(),
            n => format!("pair{n}"),
        },
        ns / 1e6,
        ns / ops as f64
    );
}

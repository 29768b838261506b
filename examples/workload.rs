//! A small service-like program with three kinds of memory behaviour, to try
//! heapprof on and to drive its tests:
//! - `leak_steadily` leaks a little on every tick (the leak to find);
//! - `fill_cache` grows a cache by one entry a tick to 16 MiB, then stops
//!   (a plateau: about 2.5 s at the default tick; see `--cache-secs`);
//! - `churn` allocates and frees (no growth).
//!
//! ```text
//! workload [--seconds S] [--tick-ms MS] [--threads N] [--fork] [--dump PATH] [--own-usr2]
//!          [--leak-kib K] [--cache-mib M] [--cache-secs S] [--churn-threads N]
//! ```
//! `--leak-kib` sets the size of each leaked object (default 64 KiB a tick);
//! `--cache-mib` the cache's final size (default 16 MiB, in 64 KiB entries)
//! and `--cache-secs` the time it takes to fill, evenly (default: one entry
//! a tick); `--churn-threads` adds threads that only churn, flat out (GB/s).
//! `--close-fds` closes every descriptor above 2 at start, as daemons do.
//! `--own-usr2` installs the program's own SIGUSR2 handler (which then wins
//! over heapprof's) and reports how often it ran.
//! Prints `pid N` first. With `--dump PATH` it writes a profile at the end and
//! prints the heaviest in-use stacks. `--fork` forks once halfway and runs the
//! loop in both processes.

use std::alloc::System;
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: heapprof::Profiler<System> = heapprof::Profiler::new(System);

static LEAK_BYTES: AtomicUsize = AtomicUsize::new(64 * 1024);

#[inline(never)]
fn leak_steadily() {
    Box::leak(vec![1u8; LEAK_BYTES.load(Ordering::Relaxed)].into_boxed_slice());
}

/// Lives as long as the process, as caches do.
static CACHE: std::sync::Mutex<Vec<Box<[u8]>>> = std::sync::Mutex::new(Vec::new());

/// Fills the cache up to `target` entries of 64 KiB.
#[inline(never)]
fn fill_cache(target: usize) {
    let mut cache = CACHE.lock().unwrap();
    let (len, want) = (cache.len(), 256.max(target));
    if cache.capacity() < want {
        // Room for all entries at once: the cache's own vector grows once.
        cache.reserve_exact(want - len);
    }
    while cache.len() < target {
        cache.push(vec![2u8; 64 * 1024].into_boxed_slice());
    }
}

#[inline(never)]
fn churn() {
    for _ in 0..16 {
        black_box(vec![3u8; 32 * 1024]);
    }
}

static USR2_SEEN: AtomicUsize = AtomicUsize::new(0);

extern "C" fn on_usr2(_: libc::c_int) {
    USR2_SEEN.fetch_add(1, Ordering::Relaxed);
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
    let seconds: f64 = arg(&args, "--seconds", 3.0);
    let tick = Duration::from_millis(arg(&args, "--tick-ms", 10));
    let threads: usize = arg(&args, "--threads", 0);
    let churn_threads: usize = arg(&args, "--churn-threads", 0);
    LEAK_BYTES.store(arg(&args, "--leak-kib", 64) * 1024, Ordering::Relaxed);
    let cache_entries: usize = arg(&args, "--cache-mib", 16) * 16;
    let cache_secs: f64 = arg(&args, "--cache-secs", 0.0);
    let fork = args.iter().any(|a| a == "--fork");
    let dump: Option<String> = args
        .iter()
        .position(|a| a == "--dump")
        .and_then(|i| args.get(i + 1).cloned());
    if args.iter().any(|a| a == "--own-usr2") {
        // SAFETY: installing an async-signal-safe handler (one atomic add).
        unsafe {
            libc::signal(
                libc::SIGUSR2,
                on_usr2 as extern "C" fn(libc::c_int) as libc::sighandler_t,
            )
        };
    }
    if args.iter().any(|a| a == "--close-fds") {
        for fd in 3..4096 {
            // SAFETY: closing descriptors this program does not use.
            unsafe { libc::close(fd) };
        }
    }
    println!("pid {}", std::process::id());

    let start = Instant::now();
    let end = start + Duration::from_secs_f64(seconds);
    let churners: Vec<_> = (0..churn_threads)
        .map(|_| {
            std::thread::spawn(move || {
                while Instant::now() < end {
                    for _ in 0..64 {
                        churn();
                    }
                    // A breath now and then, so a shared machine stays usable.
                    std::thread::sleep(Duration::from_micros(200));
                }
            })
        })
        .collect();
    let mut ticks = 0usize;
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            std::thread::spawn(move || {
                while Instant::now() < end {
                    churn();
                    leak_steadily();
                    std::thread::sleep(tick);
                }
            })
        })
        .collect();
    let mut forked = !fork;
    let half = Instant::now() + Duration::from_secs_f64(seconds / 2.0);
    while Instant::now() < end {
        leak_steadily();
        ticks += 1;
        let target = if cache_secs > 0.0 {
            let done = start.elapsed().as_secs_f64() / cache_secs;
            (cache_entries as f64 * done.min(1.0)) as usize
        } else {
            ticks.min(cache_entries)
        };
        fill_cache(target);
        churn();
        if !forked && Instant::now() >= half {
            forked = true;
            // SAFETY: fork in a program whose other threads only allocate;
            // the child continues this loop and exits normally.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                println!("child pid {}", std::process::id());
            }
        }
        std::thread::sleep(tick);
    }
    for w in workers.into_iter().chain(churners) {
        w.join().unwrap();
    }
    if let Some(path) = dump {
        heapprof::dump_to(&path).expect("dump");
        println!("wrote {path}; heaviest in-use stacks:");
        for t in heapprof::tallies().iter().take(5) {
            let leaf = t.frames.first().map(|f| f.function.as_str()).unwrap_or("?");
            println!("{:>12} bytes in use  {leaf}", t.inuse_space);
        }
    }
    if args.iter().any(|a| a == "--own-usr2") {
        println!(
            "application got SIGUSR2 {} time(s)",
            USR2_SEEN.load(Ordering::Relaxed)
        );
    }
}

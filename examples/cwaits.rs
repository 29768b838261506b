//! A Rust program under `heapprof::Profiler` whose threads wait in the C
//! library, as a C dependency's event loop would: `nanosleep`, `poll` and
//! `epoll_wait`, none of which `SA_RESTART` restarts. Every wait must last its
//! full time while dump signals arrive (tests/dump_signal.rs).
//!
//! ```text
//! cwaits        prints "pid N", waits on two threads until stdin closes,
//!               then "waits A and B, problems P" (each problem on a line)
//! ```

use std::alloc::System;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: heapprof::Profiler<System> = heapprof::Profiler::new(System);

static STOP: AtomicBool = AtomicBool::new(false);
static PROBLEMS: AtomicUsize = AtomicUsize::new(0);

const WAIT: Duration = Duration::from_millis(100);

/// A wait that returned `r` (0: timed out) after starting at `t0`.
fn check(who: &str, what: &str, r: i32, t0: Instant) {
    let took = t0.elapsed();
    if r != 0 {
        let e = std::io::Error::last_os_error();
        println!("{who}: {what}: returned {r} ({e})");
        PROBLEMS.fetch_add(1, Ordering::Relaxed);
    } else if took + Duration::from_micros(500) < WAIT {
        println!("{who}: {what}: lasted {took:?} of {WAIT:?}");
        PROBLEMS.fetch_add(1, Ordering::Relaxed);
    }
}

fn waits(who: &str, watch_stdin: bool) -> usize {
    let ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: WAIT.as_nanos() as libc::c_long,
    };
    // SAFETY: creating an epoll descriptor this function owns.
    let ep = unsafe { libc::epoll_create1(0) };
    let mut ev = libc::epoll_event { events: 0, u64: 0 };
    let mut n = 0;
    while !STOP.load(Ordering::Relaxed) {
        if watch_stdin {
            let mut pfd = libc::pollfd {
                fd: 0,
                events: libc::POLLIN,
                revents: 0,
            };
            let t0 = Instant::now();
            // SAFETY: one valid pollfd.
            let r = unsafe { libc::poll(&mut pfd, 1, WAIT.as_millis() as i32) };
            if r > 0 {
                let mut b = [0u8; 64];
                // SAFETY: reading into a local buffer.
                if unsafe { libc::read(0, b.as_mut_ptr().cast(), b.len()) } <= 0 {
                    STOP.store(true, Ordering::Relaxed);
                }
                continue;
            }
            check(who, "poll(stdin)", r, t0);
        }
        let t0 = Instant::now();
        // SAFETY: a valid timespec; no remainder wanted.
        check(
            who,
            "nanosleep",
            unsafe { libc::nanosleep(&ts, core::ptr::null_mut()) },
            t0,
        );
        let t0 = Instant::now();
        // SAFETY: no descriptors: a pure timed wait.
        check(
            who,
            "poll",
            unsafe { libc::poll(core::ptr::null_mut(), 0, 100) },
            t0,
        );
        let t0 = Instant::now();
        // SAFETY: an empty epoll set and one event slot.
        check(
            who,
            "epoll_wait",
            unsafe { libc::epoll_wait(ep, &mut ev, 1, 100) },
            t0,
        );
        // Something for the profiles to show.
        std::hint::black_box(vec![0u8; 4096]);
        n += 4;
    }
    n
}

fn main() {
    println!("pid {}", std::process::id());
    let other = std::thread::spawn(|| waits("thread", true));
    let a = waits("main", false);
    let b = other.join().unwrap();
    println!(
        "waits {a} and {b}, problems {}",
        PROBLEMS.load(Ordering::Relaxed)
    );
}

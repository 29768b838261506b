//! The rules of the allocation hooks, enforced: they never allocate through
//! the profiled allocator, never take a lock heapprof's other work holds,
//! and never print.
//!
//! The global allocator here is a guard *around* `Profiler<System>`: it
//! counts calls that arrive while another call on the same thread is still
//! inside the profiler — that is, allocations made by a hook itself.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use heapprof::Profiler;

struct ReentryGuard {
    inner: Profiler<System>,
}

thread_local! {
    static DEPTH: Cell<u32> = const { Cell::new(0) };
}
static REENTRIES: AtomicUsize = AtomicUsize::new(0);

impl ReentryGuard {
    fn enter(&self) {
        DEPTH.with(|d| {
            if d.get() > 0 {
                REENTRIES.fetch_add(1, Ordering::Relaxed);
            }
            d.set(d.get() + 1);
        });
    }
    fn leave(&self) {
        DEPTH.with(|d| d.set(d.get() - 1));
    }
}

// SAFETY: forwards every call unchanged to the inner allocator.
unsafe impl GlobalAlloc for ReentryGuard {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        self.enter();
        // SAFETY: forwarding the caller's contract.
        let p = unsafe { self.inner.alloc(l) };
        self.leave();
        p
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        self.enter();
        // SAFETY: forwarding the caller's contract.
        let p = unsafe { self.inner.alloc_zeroed(l) };
        self.leave();
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        self.enter();
        // SAFETY: forwarding the caller's contract.
        unsafe { self.inner.dealloc(p, l) };
        self.leave();
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        self.enter();
        // SAFETY: forwarding the caller's contract.
        let q = unsafe { self.inner.realloc(p, l, n) };
        self.leave();
        q
    }
}

#[global_allocator]
static GLOBAL: ReentryGuard = ReentryGuard {
    inner: Profiler::new(System),
};

#[inline(never)]
fn churn_on_threads(threads: usize, rounds: usize) {
    let hs: Vec<_> = (0..threads)
        .map(|t| {
            std::thread::spawn(move || {
                let mut keep = Vec::new();
                for i in 0..rounds {
                    let v = black_box(vec![t as u8; 16 + (i * 37) % 5000]);
                    if i % 3 == 0 {
                        keep.push(v);
                    }
                    if keep.len() > 50 {
                        keep.swap_remove(i % 50);
                    }
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
}

#[test]
fn hooks_never_allocate_through_the_profiled_allocator() {
    // Rate 1: every allocation takes the sampled path (stack capture, buffer,
    // live table growth, thread buffers acquired and released).
    heapprof::set_rate(1);
    churn_on_threads(4, 20_000);
    // Dumps allocate plenty, but outside any hook.
    let _ = heapprof::profile_gz();
    churn_on_threads(2, 5_000);
    assert_eq!(REENTRIES.load(Ordering::Relaxed), 0);
}

#[test]
fn hooks_take_no_lock_a_dump_holds() {
    heapprof::set_rate(1);
    let (done_tx, done_rx) = mpsc::channel();
    // Hold heapprof's locks (as a slow dump would) while other threads
    // allocate and free at rate 1: they must finish regardless.
    heapprof::__with_profiler_locks_held(|| {
        std::thread::spawn(move || {
            churn_on_threads(3, 10_000);
            done_tx.send(()).unwrap();
        });
        done_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("allocations blocked while heapprof's locks were held");
    });
}

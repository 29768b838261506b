//! How the engine wakes the thread above it that waits for heapprof's
//! wake-ups (the dumper, or the watcher standing in for it): one function,
//! set by that thread's layer each time it waits, called from the sampled
//! and free paths (a free that retains pages for the decay, a thread whose
//! records pile up). It must be lock-free, async-signal-safe and leave errno
//! alone: it runs inside allocations and frees.

use core::sync::atomic::{AtomicUsize, Ordering};

/// The waker, a `fn()` stored as usize (0: none yet).
static WAKE: AtomicUsize = AtomicUsize::new(0);

/// Sets the function that wakes the waiting thread (see the module doc).
pub fn set(wake: fn()) {
    WAKE.store(wake as usize, Ordering::Release);
}

/// Wakes the waiting thread, if one has said how.
pub fn wake() {
    let w = WAKE.load(Ordering::Acquire);
    if w != 0 {
        // SAFETY: WAKE only ever holds a `fn()` stored by `set`.
        let wake = unsafe { core::mem::transmute::<usize, fn()>(w) };
        wake();
    }
}

//! heapprof's allocator inside a short-lived copy of the process.
//!
//! # Why
//! Parsing a program's DWARF to name its frames maps and touches megabytes
//! of its binary and builds tables about as big. Done in the profiled
//! process, all of it counts in the process's RSS and peak (VmHWM), which is
//! what an OOM killer and a memory limit watch. So a dump may hand that work
//! to a copy of the process (made with a bare `clone`, see
//! [`crate::profile::copy_process`]): the copy resolves the addresses,
//! sends the frames back through a pipe and exits, and what it touched goes
//! with it.
//!
//! # The model
//! The copy holds one thread: the one that made it. A lock another thread
//! held at that moment stays held in the copy for ever, and the inner
//! allocator's locks are such locks (glibc's arenas, any allocator's). So
//! in the copy heapprof's own allocations never reach the inner allocator:
//! once [`enter`] has run, both ways in serve them here.
//!
//! - **Memory** is carved off the sample heap's large region
//!   ([`crate::engine::sample_heap`]), in the copy's own address space, so
//!   every block lies inside heapprof's range and every free of one comes
//!   back to heapprof rather than to the inner allocator. Carving commits
//!   address space only; pages cost memory once touched.
//! - **Allocation** bumps a pointer. Memory is never reused, with one
//!   exception that covers how a growing buffer behaves: the newest block
//!   grows or shrinks in place, and freeing the newest block gives its bytes
//!   back. Every other free is a no-op: the copy lives for one task.
//! - **Threads:** [`enter`] parks the calling thread's sampling countdown at
//!   0, so the Rust way in's hot paths send every allocation to its slow
//!   path, where this arena is asked first. Nothing here is thread-safe, and
//!   nothing needs to be: the copy has one thread.
//!
//! Outside a copy [`active`] is false and nothing here runs; the slow paths
//! pay one relaxed load to ask.

use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::engine::{sample_heap, thread_state};

/// Address space carved at a time (committed, resident only when touched).
const CHUNK: usize = 64 << 20;

static ACTIVE: AtomicBool = AtomicBool::new(false);
/// The bump pointer and the end of the current chunk.
static TOP: AtomicUsize = AtomicUsize::new(0);
static END: AtomicUsize = AtomicUsize::new(0);
/// The newest block's start (0: none), the one that may grow in place.
static LAST: AtomicUsize = AtomicUsize::new(0);

/// Whether heapprof's allocations are served here (only in a copy of the
/// process, after [`enter`]).
#[inline]
pub fn active() -> bool {
    ACTIVE.load(Ordering::Relaxed)
}

/// Makes this arena serve heapprof's allocations from now on. Call only in
/// a copy of the process, on its one thread; false (and nothing changed) if
/// the sample heap has no room to carve from.
pub fn enter() -> bool {
    if !carve(CHUNK) {
        return false;
    }
    ACTIVE.store(true, Ordering::Relaxed);
    // Every allocation of the Rust way in now takes its slow path. The
    // thread is busy (heapprof's own work), so nothing restores the
    // countdown before the copy exits.
    thread_state::current().countdown.set(0);
    true
}

fn carve(bytes: usize) -> bool {
    match sample_heap::carve_private(bytes) {
        Some(p) => {
            TOP.store(p as usize, Ordering::Relaxed);
            END.store(p as usize + bytes, Ordering::Relaxed);
            LAST.store(0, Ordering::Relaxed);
            true
        }
        None => false,
    }
}

/// `size` bytes aligned to `align` (a power of two), or null when no more
/// memory can be carved. Not zeroed: a block given back may be served again.
pub fn alloc(size: usize, align: usize) -> *mut u8 {
    let fit = |top: usize| {
        let start = top.checked_next_multiple_of(align)?;
        let end = start.checked_add(size)?;
        (end <= END.load(Ordering::Relaxed)).then_some((start, end))
    };
    let (start, end) = match fit(TOP.load(Ordering::Relaxed)) {
        Some(r) => r,
        None => {
            let Some(want) = size
                .checked_add(align)
                .and_then(|n| n.max(CHUNK).checked_next_multiple_of(CHUNK))
            else {
                return core::ptr::null_mut();
            };
            if !carve(want) {
                return core::ptr::null_mut();
            }
            match fit(TOP.load(Ordering::Relaxed)) {
                Some(r) => r,
                None => return core::ptr::null_mut(),
            }
        }
    };
    TOP.store(end, Ordering::Relaxed);
    LAST.store(start, Ordering::Relaxed);
    start as *mut u8
}

/// [`alloc`], zeroed.
pub fn alloc_zeroed(size: usize, align: usize) -> *mut u8 {
    let p = alloc(size, align);
    if !p.is_null() {
        // SAFETY: a fresh block of `size` writable bytes.
        unsafe { core::ptr::write_bytes(p, 0, size) };
    }
    p
}

/// Gives back the newest block; any other free is a no-op.
pub fn free(p: *mut u8) {
    if p as usize == LAST.load(Ordering::Relaxed) && !p.is_null() {
        TOP.store(p as usize, Ordering::Relaxed);
        LAST.store(0, Ordering::Relaxed);
    }
}

/// Resizes a block of `old` bytes (one of this arena's, or any live block
/// made before the copy, which stays where it is) to `new` bytes aligned to
/// `align`, keeping its contents; null when no memory can be carved (the
/// old block then stays valid).
///
/// # Safety
/// `p` must be valid for reads of `old` bytes.
pub unsafe fn realloc(p: *mut u8, old: usize, new: usize, align: usize) -> *mut u8 {
    let start = p as usize;
    if start == LAST.load(Ordering::Relaxed) && start != 0 {
        if let Some(end) = start.checked_add(new) {
            if end <= END.load(Ordering::Relaxed) {
                TOP.store(end, Ordering::Relaxed);
                return p;
            }
        }
    }
    let q = alloc(new, align);
    if !q.is_null() {
        // SAFETY: `p` has `old` readable bytes, `q` has `new` writable ones,
        // and `q` is a fresh block, distinct from `p`.
        unsafe { core::ptr::copy_nonoverlapping(p, q, old.min(new)) };
    }
    q
}

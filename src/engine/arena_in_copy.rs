//! heapprof's allocator inside a short-lived copy of the process.
//!
//! # Why
//! Parsing a program's DWARF to name its frames maps and touches megabytes
//! of its binary and builds tables about as big. Done in the profiled
//! process, all of it counts in the process's RSS and peak (VmHWM), which is
//! what an OOM killer and a memory limit watch. So a dump may hand that work
//! to a copy of the process (made with a bare `clone`, see
//! [`crate::profile::forked_copy`]): the copy resolves the addresses,
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
//! - **Locks** of heapprof's own that another thread held at the copy are
//!   held for ever too: [`lock`] takes them with a try-lock in a copy and,
//!   finding one held, ends the copy with [`LOCK_HELD`], so that its maker
//!   can try again with a new copy a moment later.
//! - **The preload library's C callers** (glibc's own allocations, made
//!   inside functions a dump calls) reach the hooks, not heapprof's Rust
//!   allocator: the library registers [`set_on_enter`] to send those to
//!   this arena as well.
//!
//! Outside a copy [`active`] is false and nothing here runs; the slow paths
//! pay one relaxed load to ask.

use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, TryLockError};

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
    // The black box is the process's file, shared with this copy: hands off.
    crate::engine::blackbox::detach();
    let hook = ON_ENTER.load(Ordering::Acquire);
    if !hook.is_null() {
        // SAFETY: only ever set from a `fn()` by `set_on_enter`.
        unsafe { core::mem::transmute::<*mut (), fn()>(hook)() };
    }
    // Every allocation of the Rust way in now takes its slow path. The
    // thread is busy (heapprof's own work), so nothing restores the
    // countdown before the copy exits.
    thread_state::current().countdown.set(0);
    true
}

static ON_ENTER: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());

/// Registers what [`enter`] also runs, in the copy, once this arena is
/// active (the preload library points its real-allocator slots here).
pub fn set_on_enter(f: fn()) {
    ON_ENTER.store(f as *mut (), Ordering::Release);
}

/// Exit status of a copy that found one of heapprof's locks held.
pub const LOCK_HELD: i32 = 5;

/// Takes `m`: as usual outside a copy; in a copy, without waiting — a lock
/// held there is held for ever, so the copy ends ([`LOCK_HELD`]). Poisoning
/// is ignored (heapprof's state stays consistent: nothing panics midway
/// through an update).
pub fn lock<T>(m: &'static Mutex<T>) -> MutexGuard<'static, T> {
    if !active() {
        return m.lock().unwrap_or_else(|e| e.into_inner());
    }
    match m.try_lock() {
        Ok(g) => g,
        Err(TryLockError::Poisoned(e)) => e.into_inner(),
        // SAFETY: ends this process, a copy, without running anything more.
        Err(TryLockError::WouldBlock) => unsafe { libc::_exit(LOCK_HELD) },
    }
}

/// The chunks carved so far (start, end), for [`owns`]; a copy lives for
/// one dump, which needs a few.
const MAX_CHUNKS: usize = 64;
static CHUNKS: [[AtomicUsize; 2]; MAX_CHUNKS] =
    [const { [AtomicUsize::new(0), AtomicUsize::new(0)] }; MAX_CHUNKS];
static NCHUNKS: AtomicUsize = AtomicUsize::new(0);

/// Whether `p` lies in memory this arena carved (so a block of its own).
pub fn owns(p: *const u8) -> bool {
    let p = p as usize;
    CHUNKS[..NCHUNKS.load(Ordering::Relaxed)]
        .iter()
        .any(|[s, e]| (s.load(Ordering::Relaxed)..e.load(Ordering::Relaxed)).contains(&p))
}

fn carve(bytes: usize) -> bool {
    let n = NCHUNKS.load(Ordering::Relaxed);
    if n == MAX_CHUNKS {
        return false;
    }
    match sample_heap::carve_private(bytes) {
        Some(p) => {
            CHUNKS[n][0].store(p as usize, Ordering::Relaxed);
            CHUNKS[n][1].store(p as usize + bytes, Ordering::Relaxed);
            NCHUNKS.store(n + 1, Ordering::Relaxed);
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

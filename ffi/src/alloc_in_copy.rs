//! The real allocator inside a copy of the process.
//!
//! A dump may run in a copy of the process (`heapprof::profile::forked_copy`),
//! where any lock another thread held stays held, and where a
//! single-threaded program's allocator may have been caught in the middle
//! of an update. heapprof's own Rust allocations there come from the copy's
//! arena (`heapprof::engine::arena_in_copy`); glibc's own allocations, made
//! inside the C functions a dump calls, reach the hooks instead, and the
//! hooks forward them through the real allocator's slots ([`crate::real`]).
//! So on entering the copy every slot is pointed here ([`install`]): the
//! same arena serves the C side, and nothing in the copy calls the real
//! allocator again.
//!
//! Blocks carry a 16-byte header (their size) before the address handed
//! out, so `realloc` and `malloc_usable_size` know them. A block from
//! before the copy stays where it is: freeing it does nothing, and growing
//! it copies it into the arena, its size read from the bootstrap arena or
//! the sample heap (heapprof's own blocks) or from the real allocator's
//! `malloc_usable_size` (which only reads the block's own header).

use core::ffi::{c_int, c_void};
use core::ptr::null_mut;
use core::sync::atomic::{AtomicPtr, Ordering};
use heapprof::ffi_surface::os;

use heapprof::ffi_surface::engine::{self, arena_in_copy};

const HEADER: usize = 16;

/// The real allocator's `malloc_usable_size`, for blocks made before the copy.
static BEFORE_USABLE: AtomicPtr<c_void> = AtomicPtr::new(null_mut());

/// In the copy, once its arena is active: every real-allocator slot to the
/// functions here.
pub fn install() {
    crate::real::divert(&BEFORE_USABLE);
}

/// `size` bytes aligned to `align` (at least 16), the size in the header.
fn alloc_aligned(size: usize, align: usize) -> *mut c_void {
    let align = align.max(HEADER);
    let Some(total) = size.checked_add(align) else {
        return null_mut();
    };
    let base = arena_in_copy::alloc(total, align);
    if base.is_null() {
        return null_mut();
    }
    // SAFETY: `base` has `align + size` writable bytes; the header takes
    // the 16 just below the block, inside them.
    unsafe {
        let p = base.add(align);
        p.sub(HEADER).cast::<usize>().write(size);
        p.cast()
    }
}

/// The size of a live block, wherever it came from.
fn size_of(p: *mut c_void) -> usize {
    if arena_in_copy::owns(p.cast()) {
        // SAFETY: an arena block made here: its header lies just below it.
        return unsafe { p.cast::<u8>().sub(HEADER).cast::<usize>().read() };
    }
    if crate::bootstrap::contains(p.cast()) {
        return crate::bootstrap::size_of(p.cast());
    }
    if engine::owns(p.cast()) {
        return engine::sample_usable_size(p.cast());
    }
    let f = BEFORE_USABLE.load(Ordering::Relaxed);
    if f.is_null() {
        return 0;
    }
    // SAFETY: the real allocator's malloc_usable_size, on one of its live
    // blocks.
    unsafe { core::mem::transmute::<*mut c_void, unsafe extern "C" fn(*mut c_void) -> usize>(f)(p) }
}

/// `malloc` in the copy.
///
/// # Safety
/// As the C function of that name, in a copy of the process.
pub unsafe extern "C" fn malloc(size: usize) -> *mut c_void {
    alloc_aligned(size, HEADER)
}

/// `free` in the copy: gives the newest block back, otherwise nothing.
///
/// # Safety
/// As the C function of that name, in a copy of the process.
pub unsafe extern "C" fn free(p: *mut c_void) {
    if !p.is_null() && arena_in_copy::owns(p.cast()) {
        // SAFETY: an arena block with a 16-aligned header: its arena block
        // starts 16 bytes below (or more, for bigger alignments, which then
        // simply stay).
        arena_in_copy::free(unsafe { p.cast::<u8>().sub(HEADER) });
    }
}

/// `calloc` in the copy.
///
/// # Safety
/// As the C function of that name, in a copy of the process.
pub unsafe extern "C" fn calloc(n: usize, size: usize) -> *mut c_void {
    let Some(total) = n.checked_mul(size) else {
        return null_mut();
    };
    let p = alloc_aligned(total, HEADER);
    if !p.is_null() {
        // SAFETY: a fresh block of `total` bytes (the arena reuses memory).
        unsafe { core::ptr::write_bytes(p.cast::<u8>(), 0, total) };
    }
    p
}

/// `realloc` in the copy.
///
/// # Safety
/// As the C function of that name, in a copy of the process.
pub unsafe extern "C" fn realloc(p: *mut c_void, size: usize) -> *mut c_void {
    if p.is_null() {
        return alloc_aligned(size, HEADER);
    }
    let old = size_of(p);
    let q = alloc_aligned(size, HEADER);
    if !q.is_null() {
        // SAFETY: `p` is live with at least `old` bytes, `q` is fresh with
        // `size`.
        unsafe { core::ptr::copy_nonoverlapping(p.cast::<u8>(), q.cast::<u8>(), old.min(size)) };
    }
    q
}

/// `malloc_usable_size` in the copy.
///
/// # Safety
/// As the C function of that name, in a copy of the process.
pub unsafe extern "C" fn usable_size(p: *mut c_void) -> usize {
    if p.is_null() {
        0
    } else {
        size_of(p)
    }
}

/// `posix_memalign` in the copy.
///
/// # Safety
/// As the C function of that name, in a copy of the process.
pub unsafe extern "C" fn posix_memalign(out: *mut *mut c_void, align: usize, size: usize) -> c_int {
    let p = alloc_aligned(size, align);
    if p.is_null() {
        return libc::ENOMEM;
    }
    // SAFETY: the caller's contract: `out` is writable.
    unsafe { *out = p };
    0
}

/// `memalign`/`aligned_alloc` in the copy.
///
/// # Safety
/// As the C function of that name, in a copy of the process.
pub unsafe extern "C" fn memalign(align: usize, size: usize) -> *mut c_void {
    alloc_aligned(size, align)
}

/// `valloc` in the copy.
///
/// # Safety
/// As the C function of that name, in a copy of the process.
pub unsafe extern "C" fn valloc(size: usize) -> *mut c_void {
    alloc_aligned(size, os::PAGE)
}

/// `pvalloc` in the copy.
///
/// # Safety
/// As the C function of that name, in a copy of the process.
pub unsafe extern "C" fn pvalloc(size: usize) -> *mut c_void {
    alloc_aligned(size.next_multiple_of(os::PAGE), os::PAGE)
}

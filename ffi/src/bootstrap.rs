//! The bootstrap arena: memory for the few calls that arrive while the real
//! allocator's functions are being looked up.
//!
//! `dlsym` may itself allocate (a failed lookup allocates the `dlerror`
//! message; older glibc callocs per-thread error state on first use), and the
//! hooks cannot forward those calls to a function they are still looking
//! for. They are served here instead: a static, zero-initialised (`.bss`,
//! costing no memory until touched) region handed out by an atomic bump
//! pointer. Nothing is ever reused, so every block is zeroed (which serves
//! `calloc` too), and freeing a block does nothing.
//!
//! The arena is the first 256 KiB of heapprof's sample heap range (the
//! `prefix` of `heapprof::engine::sample_heap`, reserved by the first call
//! here if the engine has not yet; a static array if no address space can
//! be reserved). That way the hooks need no extra test on their hot paths:
//! `free`, `realloc` and `malloc_usable_size` only look further at pointers
//! in that range (which is also how they spot sampled objects), and there
//! [`contains`] tells the arena apart. Blocks start on page boundaries; the
//! requested size of each block is kept per page, for `realloc` (which
//! copies it out) and `malloc_usable_size`.

use core::sync::atomic::{AtomicUsize, Ordering};

use heapprof::ffi_surface::engine::sample_heap;
use heapprof::ffi_surface::os::PAGE;

const BYTES: usize = sample_heap::PREFIX_BYTES;
const PAGES: usize = BYTES / PAGE;

/// Offset of the first byte not handed out yet.
static NEXT: AtomicUsize = AtomicUsize::new(0);
/// Requested size of the block starting at each page (0 for other pages).
static SIZES: [AtomicUsize; PAGES] = [const { AtomicUsize::new(0) }; PAGES];
/// The arena's address, once known (0 before: nothing is in it).
static BASE: AtomicUsize = AtomicUsize::new(0);

fn base() -> usize {
    BASE.load(Ordering::Acquire)
}

/// A zeroed block of `size` bytes aligned to `align` (at least a page), or
/// null when the arena is exhausted. Lock-free; callable from any hook.
pub fn alloc(size: usize, align: usize) -> *mut u8 {
    let align = align.max(PAGE);
    if !align.is_power_of_two() || size > BYTES {
        return core::ptr::null_mut();
    }
    let pages = size.max(1).div_ceil(PAGE) * PAGE;
    let Some((arena, _)) = sample_heap::prefix().filter(|_| crate::hooks::publish_range()) else {
        // Another thread is reserving the range this very moment.
        return core::ptr::null_mut();
    };
    let base = arena as usize;
    BASE.store(base, Ordering::Release);
    let mut next = NEXT.load(Ordering::Relaxed);
    loop {
        // Align the absolute address (the arena itself is page-aligned).
        let start = (base + next).next_multiple_of(align) - base;
        let end = start + pages;
        if end > BYTES {
            return core::ptr::null_mut();
        }
        match NEXT.compare_exchange_weak(next, end, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => {
                SIZES[start / PAGE].store(size, Ordering::Relaxed);
                return (base + start) as *mut u8;
            }
            Err(now) => next = now,
        }
    }
}

/// Whether any block was ever handed out.
pub fn used() -> bool {
    NEXT.load(Ordering::Relaxed) != 0
}

/// Whether `p` points into the arena.
#[inline]
pub fn contains(p: *const u8) -> bool {
    let base = base();
    base != 0 && (p as usize).wrapping_sub(base) < BYTES
}

/// The requested size of the arena block starting at `p` (0 if `p` does not
/// start a block).
pub fn size_of(p: *const u8) -> usize {
    let off = (p as usize).wrapping_sub(base());
    if off < BYTES && off.is_multiple_of(PAGE) {
        SIZES[off / PAGE].load(Ordering::Relaxed)
    } else {
        0
    }
}

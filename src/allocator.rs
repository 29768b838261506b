//! [`Profiler`]: the `#[global_allocator]` way in.
//!
//! The hot paths are inline here and cost one thread-local compare and
//! subtract on allocation and one AND on free; everything else is behind a
//! cold call into [`crate::engine`]. Sampled objects are allocated from the
//! inner allocator with at least page alignment (that is how a free
//! recognises them, see [`crate::live_table`]) and freed with that same
//! layout, as `GlobalAlloc` requires.

use core::alloc::{GlobalAlloc, Layout};

use crate::engine;
use crate::os::PAGE;
use crate::thread_state::{rust_tls_state, ThreadState};

/// A global allocator that samples allocations of an inner allocator.
///
/// ```no_run
/// #[global_allocator]
/// static GLOBAL: heapprof::Profiler<std::alloc::System> =
///     heapprof::Profiler::new(std::alloc::System);
/// ```
pub struct Profiler<A> {
    inner: A,
}

impl<A> Profiler<A> {
    /// Wraps `inner` (System, mimalloc, jemalloc, any `GlobalAlloc`).
    pub const fn new(inner: A) -> Profiler<A> {
        Profiler { inner }
    }

    /// The wrapped allocator.
    pub fn inner(&self) -> &A {
        &self.inner
    }
}

#[inline(always)]
fn state() -> &'static ThreadState {
    // SAFETY: the pointer is this thread's state, valid for the thread's life.
    unsafe { &*rust_tls_state() }
}

/// The address of a local in a hook frame, kept in memory (not a register)
/// so it lies inside that frame: stack capture starts above it.
#[inline(always)]
fn hook_marker(local: &u8) -> usize {
    core::hint::black_box(local) as *const u8 as usize
}

/// The layout a sampled object is allocated with.
#[inline]
fn sampled_layout(layout: Layout) -> Option<Layout> {
    Layout::from_size_align(layout.size(), layout.align().max(PAGE)).ok()
}

impl<A: GlobalAlloc> Profiler<A> {
    #[cold]
    #[inline(never)]
    unsafe fn alloc_slow(&self, layout: Layout, zeroed: bool) -> *mut u8 {
        let marker = 0u8;
        crate::startup::ensure();
        let st = state();
        let sampled = engine::should_sample(st, layout.size())
            .then(|| sampled_layout(layout))
            .flatten();
        let l = sampled.unwrap_or(layout);
        // SAFETY: forwarding the caller's contract (nonzero size) with a
        // layout of the same size and at least the same alignment.
        let p = unsafe {
            if zeroed {
                self.inner.alloc_zeroed(l)
            } else {
                self.inner.alloc(l)
            }
        };
        if sampled.is_some() && !p.is_null() {
            engine::record_alloc_from(st, p, layout.size(), hook_marker(&marker));
        }
        p
    }

    #[cold]
    #[inline(never)]
    unsafe fn dealloc_slow(&self, ptr: *mut u8, layout: Layout) {
        let l = if engine::release(state(), ptr) {
            sampled_layout(layout).unwrap_or(layout)
        } else {
            layout
        };
        // SAFETY: `ptr` was allocated by the inner allocator with `l`.
        unsafe { self.inner.dealloc(ptr, l) }
    }

    #[cold]
    #[inline(never)]
    unsafe fn realloc_slow(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let marker = 0u8;
        crate::startup::ensure();
        let st = state();
        let sample_new = !st.skip(new_size) && engine::should_sample(st, new_size);
        if !sample_new && !engine::is_sampled(ptr) {
            // SAFETY: an unsampled object was allocated with `layout` itself.
            return unsafe { self.inner.realloc(ptr, layout, new_size) };
        }
        // A sample is involved: move by hand so the new object gets the
        // right alignment and both ends are accounted.
        // SAFETY: the caller guarantees `new_size` forms a valid layout with
        // `layout.align()`.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        let sampled = if sample_new {
            sampled_layout(new_layout)
        } else {
            None
        };
        // SAFETY: nonzero size per the realloc contract.
        let new = unsafe { self.inner.alloc(sampled.unwrap_or(new_layout)) };
        if new.is_null() {
            return new;
        }
        if sampled.is_some() {
            engine::record_alloc_from(st, new, new_size, hook_marker(&marker));
        }
        // SAFETY: both blocks are valid for the copied length and distinct.
        unsafe {
            core::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
            self.dealloc(ptr, layout);
        }
        new
    }
}

// SAFETY: every path forwards to the inner allocator with a layout of the
// requested size and at least the requested alignment, and frees each block
// with the layout it was allocated with.
unsafe impl<A: GlobalAlloc> GlobalAlloc for Profiler<A> {
    #[inline(always)]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if state().skip(layout.size()) {
            // SAFETY: forwarding the caller's contract.
            return unsafe { self.inner.alloc(layout) };
        }
        // SAFETY: forwarding the caller's contract.
        unsafe { self.alloc_slow(layout, false) }
    }

    #[inline(always)]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if state().skip(layout.size()) {
            // SAFETY: forwarding the caller's contract.
            return unsafe { self.inner.alloc_zeroed(layout) };
        }
        // SAFETY: forwarding the caller's contract.
        unsafe { self.alloc_slow(layout, true) }
    }

    #[inline(always)]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if ptr as usize & (PAGE - 1) != 0 {
            // SAFETY: not page-aligned, so never a sample: allocated by the
            // inner allocator with `layout`.
            return unsafe { self.inner.dealloc(ptr, layout) };
        }
        // SAFETY: forwarding the caller's contract.
        unsafe { self.dealloc_slow(ptr, layout) }
    }

    #[inline(always)]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let st = state();
        let c = st.countdown.get();
        if c > new_size && ptr as usize & (PAGE - 1) != 0 {
            st.countdown.set(c - new_size);
            // SAFETY: an unsampled object, allocated with `layout`.
            return unsafe { self.inner.realloc(ptr, layout, new_size) };
        }
        // SAFETY: forwarding the caller's contract.
        unsafe { self.realloc_slow(ptr, layout, new_size) }
    }
}

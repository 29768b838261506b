//! [`Profiler`]: the `#[global_allocator]` way in.
//!
//! The hot paths are inline here: on allocation one subtract from the
//! thread's countdown, in memory, and a branch (three instructions with the
//! TLS offset); on free one subtract and compare against the sample heap's
//! range, kept in this allocator's own fields so the program reads them
//! without the GOT (four instructions). Everything else is behind a cold
//! call into [`crate::engine`]. Sampled objects are served by
//! heapprof's own sample heap ([`crate::engine::sample_heap`]), not by the
//! inner allocator; a free recognises them by address (one compare against
//! the heap's range) and gives them back there. If the sample heap cannot
//! serve a sampled allocation, the inner allocator serves it unsampled.
//! Unsampled large allocations ([`engine::large_unsampled`]) are served by
//! the sample heap too when the inner allocator is `System` (or by
//! setting: [`Profiler::large_blocks_in_sample_heap`]).

use core::alloc::{GlobalAlloc, Layout};

use crate::engine;
use crate::engine::thread_state::{rust_tls_state, ThreadState};

/// Done once as profiling starts, before heapprof's threads exist: with the
/// `threads` feature, this way in's `pthread_create` definition is enabled,
/// so their creation is heapprof's own.
#[cfg(feature = "threads")]
const BEFORE_TRIGGERS: fn() = crate::thread_hook::enable;
#[cfg(not(feature = "threads"))]
const BEFORE_TRIGGERS: fn() = || {};

/// A global allocator that samples allocations of an inner allocator.
///
/// ```no_run
/// #[global_allocator]
/// static GLOBAL: heapprof::Profiler<std::alloc::System> =
///     heapprof::Profiler::new(std::alloc::System);
/// ```
pub struct Profiler<A> {
    inner: A,
    /// The sample heap's range, in the program's own static (this
    /// allocator), so the free test reads it without the GOT (see
    /// [`engine::sample_heap::RangeMirror`]). Published by the slow paths
    /// before they hand out the first block of the heap.
    heap: engine::sample_heap::RangeMirror,
    /// Who serves unsampled large blocks: [`LARGE_AUTO`], [`LARGE_HEAP`] or
    /// [`LARGE_INNER`].
    large: u8,
}

const LARGE_AUTO: u8 = 0;
const LARGE_HEAP: u8 = 1;
const LARGE_INNER: u8 = 2;

impl<A> Profiler<A> {
    /// Wraps `inner` (System, mimalloc, jemalloc, any `GlobalAlloc`).
    pub const fn new(inner: A) -> Profiler<A> {
        Profiler {
            inner,
            heap: engine::sample_heap::RangeMirror::new(),
            large: LARGE_AUTO,
        }
    }

    /// Whether large allocations ([`engine::large_unsampled`]) that are not
    /// sampled are served by heapprof's sample heap (true) or by the inner
    /// allocator (false). By default they are when the inner allocator is
    /// [`std::alloc::System`] and not otherwise: a program that chose its
    /// allocator keeps it for everything heapprof does not sample.
    ///
    /// Why serve them here: nearly every large buffer that is sampled lives
    /// in the sample heap, so a program whose large buffers are split
    /// between the two heaps keeps a warm footprint in both and copies a
    /// buffer from one to the other when a `realloc` samples it. With every
    /// large block in the sample heap, freed runs are reused warm, grown in
    /// place, and given back on the heap's decay.
    ///
    /// ```no_run
    /// #[global_allocator]
    /// static GLOBAL: heapprof::Profiler<std::alloc::System> =
    ///     heapprof::Profiler::new(std::alloc::System).large_blocks_in_sample_heap(false);
    /// ```
    pub const fn large_blocks_in_sample_heap(mut self, on: bool) -> Profiler<A> {
        self.large = if on { LARGE_HEAP } else { LARGE_INNER };
        self
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

impl<A: GlobalAlloc + 'static> Profiler<A> {
    /// Whether an unsampled allocation of `size` bytes is served by the
    /// sample heap (see [`Self::large_blocks_in_sample_heap`]).
    #[inline]
    fn large_here(&self, size: usize) -> bool {
        engine::large_unsampled(size)
            && match self.large {
                LARGE_HEAP => true,
                LARGE_INNER => false,
                _ => core::any::TypeId::of::<A>() == core::any::TypeId::of::<std::alloc::System>(),
            }
    }

    /// Makes [`Self::heap`] hold the sample heap's range before a block of
    /// it is handed out (the heap is reserved: the block came from it).
    #[inline]
    fn heap_block(&self, p: *mut u8) -> *mut u8 {
        if !p.is_null() && !self.heap.published() {
            self.heap.publish();
        }
        p
    }

    /// The allocation slow path, after the hot path's
    /// [`ThreadState::consume`] of `layout.size()` returned false.
    #[cold]
    #[inline(never)]
    unsafe fn alloc_slow(&self, layout: Layout, zeroed: bool) -> *mut u8 {
        let marker = 0u8;
        let st = state();
        st.unconsume(layout.size());
        // Not sampled, and small: the inner allocator's, at once.
        if layout.size() < engine::LARGE && st.refill(layout.size()) {
            // SAFETY: forwarding the caller's contract.
            return unsafe {
                if zeroed {
                    self.inner.alloc_zeroed(layout)
                } else {
                    self.inner.alloc(layout)
                }
            };
        }
        if engine::arena_in_copy::active() {
            // In a copy of the process (see `engine::arena_in_copy`).
            let p = if zeroed {
                engine::arena_in_copy::alloc_zeroed(layout.size(), layout.align())
            } else {
                engine::arena_in_copy::alloc(layout.size(), layout.align())
            };
            return self.heap_block(p);
        }
        crate::control::startup::mark_way_in();
        crate::control::startup::ensure_with(BEFORE_TRIGGERS);
        if engine::should_sample(st, layout.size()) {
            let p = engine::alloc_sample(
                st,
                layout.size(),
                layout.align(),
                zeroed,
                hook_marker(&marker),
            );
            if !p.is_null() {
                return self.heap_block(p);
            }
        } else if self.large_here(layout.size()) {
            let p = engine::alloc_large(layout.size(), layout.size(), layout.align(), zeroed);
            if !p.is_null() {
                return self.heap_block(p);
            }
        }
        // SAFETY: forwarding the caller's contract.
        unsafe {
            if zeroed {
                self.inner.alloc_zeroed(layout)
            } else {
                self.inner.alloc(layout)
            }
        }
    }

    #[cold]
    #[inline(never)]
    fn dealloc_slow(&self, ptr: *mut u8) {
        engine::free_sample(state(), ptr);
    }

    #[cold]
    #[inline(never)]
    unsafe fn realloc_slow(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let marker = 0u8;
        if engine::arena_in_copy::active() {
            // SAFETY: `ptr` is live with `layout`, so readable for its size.
            let p = unsafe {
                engine::arena_in_copy::realloc(ptr, layout.size(), new_size, layout.align())
            };
            return self.heap_block(p);
        }
        crate::control::startup::ensure_with(BEFORE_TRIGGERS);
        let st = state();
        let sample_new = !st.skip(new_size) && engine::should_sample(st, new_size);
        let old_sampled = engine::owns(ptr);
        let move_here = !sample_new && !old_sampled && self.large_here(new_size);
        if !sample_new && !old_sampled && !move_here {
            // SAFETY: an unsampled object was allocated with `layout` itself.
            return unsafe { self.inner.realloc(ptr, layout, new_size) };
        }
        let new = if old_sampled {
            match engine::realloc_sample(
                st,
                ptr,
                new_size,
                sample_new,
                layout.align(),
                hook_marker(&marker),
            ) {
                engine::Resized::InPlace => return ptr,
                engine::Resized::MoveTo(p) => self.heap_block(p),
                // SAFETY: the caller guarantees `new_size` (nonzero) forms
                // a valid layout with `layout.align()`.
                engine::Resized::MoveToInner => unsafe {
                    self.inner
                        .alloc(Layout::from_size_align_unchecked(new_size, layout.align()))
                },
            }
        } else {
            let room = engine::realloc_room(new_size);
            let p = if sample_new {
                engine::alloc_sample_with_room(
                    st,
                    new_size,
                    room,
                    layout.align(),
                    hook_marker(&marker),
                )
            } else {
                // Grown large: into the sample heap, with room to grow in place.
                engine::alloc_large(new_size, room, layout.align(), false)
            };
            if p.is_null() {
                // Not sampled after all (the sample heap could not serve it).
                // SAFETY: an unsampled object was allocated with `layout` itself.
                return unsafe { self.inner.realloc(ptr, layout, new_size) };
            }
            self.heap_block(p)
        };
        if new.is_null() {
            return new;
        }
        // SAFETY: both blocks are valid for the copied length and distinct.
        unsafe { core::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size)) };
        if old_sampled {
            engine::free_sample(st, ptr);
        } else {
            // SAFETY: an unsampled object, allocated with `layout`.
            unsafe { self.inner.dealloc(ptr, layout) };
        }
        new
    }
}

// SAFETY: every block the inner allocator serves was requested with the
// caller's own layout and is freed (or reallocated) with it; sampled
// objects come from the sample heap with at least the layout's size and
// alignment, are recognised by address and go back there.
unsafe impl<A: GlobalAlloc + 'static> GlobalAlloc for Profiler<A> {
    #[inline(always)]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if state().consume(layout.size()) {
            // SAFETY: forwarding the caller's contract.
            return unsafe { self.inner.alloc(layout) };
        }
        // SAFETY: forwarding the caller's contract.
        unsafe { self.alloc_slow(layout, false) }
    }

    #[inline(always)]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if state().consume(layout.size()) {
            // SAFETY: forwarding the caller's contract.
            return unsafe { self.inner.alloc_zeroed(layout) };
        }
        // SAFETY: forwarding the caller's contract.
        unsafe { self.alloc_slow(layout, true) }
    }

    #[inline(always)]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if !self.heap.contains(ptr) {
            // SAFETY: not in the sample heap, so never a sample: allocated by
            // the inner allocator with `layout`.
            return unsafe { self.inner.dealloc(ptr, layout) };
        }
        self.dealloc_slow(ptr)
    }

    #[inline(always)]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let st = state();
        let c = st.countdown.get();
        if c > new_size && !self.heap.contains(ptr) {
            st.countdown.set(c - new_size);
            // SAFETY: an unsampled object, allocated with `layout`.
            return unsafe { self.inner.realloc(ptr, layout, new_size) };
        }
        // SAFETY: forwarding the caller's contract.
        unsafe { self.realloc_slow(ptr, layout, new_size) }
    }
}

//! The interposed malloc family.
//!
//! Each hook has the hot path of [`heapprof::Profiler`] inline — for an
//! allocation, the thread's countdown outlasts the size ([`ThreadState::skip`])
//! and the call goes straight to the real function; for a free, the pointer
//! is not heapprof's own memory (one compare against the sample heap's
//! address range, [`engine::owns`]) and goes straight to the real `free`
//! (null returns at once) — and everything else behind a cold call:
//!
//! - before the real functions are known (only while they are being looked
//!   up) the [`bootstrap`] arena serves the call;
//! - before the library is ready (another library's constructor running
//!   before ours) calls are forwarded unsampled, and the countdown stays 0 so
//!   the next call looks again;
//! - otherwise [`engine::should_sample`] decides; a sampled object is served
//!   by heapprof's sample heap with the alignment asked for (at least 16)
//!   and recorded with the size the program asked for. If the sample heap
//!   cannot serve it, the real function serves it unsampled. An allocation
//!   of `heapprof::engine::LARGE` bytes or more always comes here (the hot
//!   countdown never exceeds it); not sampled, and below
//!   `heapprof::engine::LARGE_MAX`, it is served by the sample heap as an
//!   unsampled block (`heapprof::engine::alloc_large`), and so
//!   is a block of the real allocator that a `realloc` grows that large.
//!
//! Frees of heapprof's own memory: a bootstrap block (the start of the
//! sample heap's range) is ignored; a sample's free is recorded and its
//! memory goes back to the sample heap ([`engine::free_sample`]).
//!
//! `realloc` when a sample is involved: a sample that still fits (and is not
//! shrinking below half its slot), or a large one that grows in place at the
//! end of the sample heap, and is sampled again stays in place (its free and
//! the new sample are recorded); otherwise the new block is a new sample or
//! a block of the real allocator, by the usual rule, the contents are copied
//! and the old sample is freed. An unsampled block whose new size is
//! sampled is moved into the sample heap: its usable bytes are copied
//! straight from it (the real allocator is not asked to resize it first,
//! which may copy it too), then it is freed.
//!
//! No hook locks, prints, formats, panics, or allocates through the hooks:
//! the engine's own allocations go to the real allocator (the crate's
//! `#[global_allocator]`, and the busy state parks the countdown so C
//! functions heapprof calls take the hot path). The slow paths save and
//! restore `errno` around the engine, so the program sees what the real
//! allocator set (and `free` leaves it alone, as POSIX.1-2024 requires).
//!
//! Sizes recorded: the requested size, i.e. `n * size` for `calloc` and
//! `reallocarray`, and for `pvalloc` the size rounded up to whole pages (what
//! `pvalloc` is defined to allocate).

use core::ffi::{c_int, c_void};
use core::ptr::null_mut;
use core::sync::atomic::{AtomicUsize, Ordering};

use heapprof::ffi_surface::engine;
use heapprof::ffi_surface::engine::arena_in_copy;
use heapprof::ffi_surface::engine::sample_heap::RangeMirror;
use heapprof::ffi_surface::engine::thread_state::ThreadState;
use heapprof::ffi_surface::os::PAGE;

use crate::{bootstrap, real, tls};

/// Calls to `malloc` that took the slow path before the library was ready.
pub static EARLY_MALLOCS: AtomicUsize = AtomicUsize::new(0);

/// Alignment malloc guarantees on 64-bit glibc (and jemalloc).
pub const MIN_ALIGN: usize = 16;

/// heapprof's own range (the sample heap, which begins with the bootstrap
/// arena), mirrored into this crate's static, which the hot paths read
/// directly (see [`RangeMirror`]). Published before any pointer in the
/// range is handed out: by the bootstrap arena before its first block, and
/// by the constructor before the library is ready (only then does anything
/// sample).
static RANGE: RangeMirror = RangeMirror::new();

/// Copies the engine's range into [`RANGE`] (reserving it if need be).
/// False only while another thread is reserving it.
pub fn publish_range() -> bool {
    RANGE.publish()
}

/// Whether `p` is heapprof's own memory (a sample or a bootstrap block):
/// the same test as `heapprof::engine::owns`, on the mirrored range.
#[inline(always)]
fn owned(p: *const c_void) -> bool {
    RANGE.contains(p.cast())
}

/// Slow paths only: whether this allocation of `size` bytes is sampled.
#[inline]
fn sample(st: &ThreadState, size: usize) -> bool {
    if !crate::ready() {
        crate::park_if_inert(st);
        return false;
    }
    // Zero-byte objects carry no weight (and would scale by 1/0).
    size != 0 && engine::should_sample(st, size)
}

/// Frees the sample at `p`, leaving errno as it was.
#[inline(always)]
fn free_sample(st: &ThreadState, p: *mut c_void) {
    let errno = real::KeptErrno::keep();
    engine::free_sample(st, p.cast());
    errno.restore();
}

/// The marker of the calling hook frame (see
/// `heapprof::engine::record_alloc_from`).
///
/// Always inlined into a slow path, which the exported hook reached with a
/// tail call: that frame returns straight into the program, and the address
/// of a local in it tells the engine where the program's stack starts. Were
/// the tail call not made (an unoptimised build), the hook's own frame would
/// be left at the leaf and trimmed by name when the profile is written.
macro_rules! marker {
    () => {{
        let marker = 0u8;
        core::hint::black_box(&marker) as *const u8 as usize
    }};
}

/// A sampled object from the sample heap: `size` bytes aligned to `align`
/// (a power of two), zeroed if asked, recorded; errno left as it was. Null
/// if the sample heap cannot serve it; the caller then makes the ordinary
/// call. Always inlined, so the record is made from the hook's frame.
#[inline(always)]
fn alloc_sampled(st: &ThreadState, size: usize, align: usize, zero: bool) -> *mut c_void {
    let errno = real::KeptErrno::keep();
    let p = engine::alloc_sample(st, size, align.max(MIN_ALIGN), zero, marker!());
    errno.restore();
    p.cast()
}

/// A sample that a `realloc` moves, with room to grow in place (see
/// `heapprof::engine::realloc_room`); errno left as it was. Always inlined,
/// like [`alloc_sampled`].
#[inline(always)]
fn alloc_grown(st: &ThreadState, size: usize) -> *mut c_void {
    let errno = real::KeptErrno::keep();
    let room = engine::realloc_room(size);
    let p = engine::alloc_sample_with_room(st, size, room, MIN_ALIGN, marker!());
    errno.restore();
    p.cast()
}

/// An allocation of `size` bytes that is not sampled, from the sample heap
/// if it is large (`heapprof::engine::large_unsampled`: see
/// `heapprof::engine::alloc_large`), with room for `room`; errno left as it
/// was. Null otherwise, or if the heap cannot serve it: the caller then
/// makes the ordinary call.
#[inline(always)]
fn alloc_large(size: usize, room: usize, align: usize, zero: bool) -> *mut c_void {
    if !engine::large_unsampled(size) || !crate::ready() || arena_in_copy::active() {
        return null_mut();
    }
    let errno = real::KeptErrno::keep();
    let p = engine::alloc_large(size, room, align.max(MIN_ALIGN), zero);
    errno.restore();
    p.cast()
}

/// The slow path's own block for an allocation: a sample if the sampler
/// says so, else a large block of the sample heap ([`alloc_large`]); null
/// for neither (the caller then makes the ordinary call). Always inlined,
/// like [`alloc_sampled`].
#[inline(always)]
fn alloc_ours(st: &ThreadState, size: usize, align: usize, zero: bool) -> *mut c_void {
    if sample(st, size) {
        alloc_sampled(st, size, align, zero)
    } else {
        alloc_large(size, size, align, zero)
    }
}

/// A bootstrap block, or null with errno ENOMEM.
fn bootstrap_alloc(size: usize, align: usize) -> *mut c_void {
    let p = bootstrap::alloc(size, align);
    if p.is_null() {
        real::set_errno(libc::ENOMEM);
    }
    p.cast()
}

/// Interposed `malloc`, on x86-64 written out in four instructions: load
/// the TLS block's offset from the GOT, subtract the size from the
/// countdown in place, branch to the slow path if it did not stay above 0,
/// jump to the real function through its slot (a nonzero countdown implies
/// resolved). The compiler's version of the portable one below takes eight:
/// it reads and writes the countdown through `%fs` in separate steps and
/// jumps through a register. A subtraction that ran the countdown out is
/// added back first thing on the way to the slow path
/// ([`malloc_slow_consumed`]); a signal handler that allocates in between
/// sees the countdown as it would in sequence (the arithmetic is modular).
///
/// # Safety
/// As C's `malloc`.
#[cfg(target_arch = "x86_64")]
#[no_mangle]
#[unsafe(naked)]
pub unsafe extern "C" fn malloc(size: usize) -> *mut c_void {
    core::arch::naked_asm!(
        "mov rax, qword ptr [rip + {state}@GOTTPOFF]",
        "sub qword ptr fs:[rax + {countdown}], rdi",
        "jbe {slow}",
        "jmp qword ptr [rip + {real}]",
        state = sym tls::heapprof_state,
        countdown = const engine::thread_state::COUNTDOWN_OFFSET,
        slow = sym malloc_slow_consumed,
        real = sym real::MALLOC,
    )
}

/// [`malloc`]'s way to its slow path: the TLS block's offset still in
/// `rax`, the size in `rdi`; gives the countdown back the size the hot path
/// took, then goes on to [`malloc_slow`].
///
/// # Safety
/// Only as the target of [`malloc`]'s branch.
#[cfg(target_arch = "x86_64")]
#[unsafe(naked)]
unsafe extern "C" fn malloc_slow_consumed(size: usize) -> *mut c_void {
    core::arch::naked_asm!(
        "add qword ptr fs:[rax + {countdown}], rdi",
        "jmp {slow}",
        countdown = const engine::thread_state::COUNTDOWN_OFFSET,
        slow = sym malloc_slow,
    )
}

/// Interposed `malloc`.
///
/// # Safety
/// As C's `malloc`.
#[cfg(not(target_arch = "x86_64"))]
#[no_mangle]
pub unsafe extern "C" fn malloc(size: usize) -> *mut c_void {
    if let Some(st) = tls::fast_state() {
        if st.skip(size) {
            // SAFETY: a nonzero countdown implies resolved (the countdown's
            // states: `heapprof::engine::thread_state::ThreadState`).
            return unsafe { real::malloc(size) };
        }
    }
    // SAFETY: as C's malloc.
    unsafe { malloc_slow(size) }
}

// The slow paths are C-ABI functions taking only the call's arguments (they
// look the thread state up again): that way the hot paths end in tail calls
// — jumps, with no stack frame — on every branch. (A C-ABI function cannot
// unwind, which is what lets the compiler jump to it.)

#[cold]
#[inline(never)]
unsafe extern "C" fn malloc_slow(size: usize) -> *mut c_void {
    // Not sampled, and small: the real malloc's, at once.
    if let Some(st) = tls::fast_state().filter(|_| size < engine::LARGE) {
        if st.refill(size) {
            // SAFETY: a reserve implies a countdown set by the sampler, so
            // resolved (see real).
            return unsafe { real::malloc(size) };
        }
    }
    if !crate::ready() {
        // Before the library is ready every malloc comes here: count them, so
        // the constructor can tell whether calls reach us at all.
        EARLY_MALLOCS.fetch_add(1, Ordering::Relaxed);
    }
    if !real::ensure() {
        return bootstrap_alloc(size, MIN_ALIGN);
    }
    let st = tls::state();
    let p = alloc_ours(st, size, MIN_ALIGN, false);
    if !p.is_null() {
        return p;
    }
    // SAFETY: resolved just above.
    unsafe { real::malloc(size) }
}

/// Interposed `free`, on x86-64 written out: [`owned`] and the jump to the
/// real function in five instructions, three fewer than the compiler's (it
/// neither subtracts nor compares nor jumps from memory). The range's base
/// is read before its length, the reverse of `owned`'s `Acquire` order:
/// harmless, because a pointer in the range reaches a freeing thread only
/// after the range was published, and x86 keeps the loads after that one
/// in order. `free(NULL)` needs no test of its own: 0 lies outside the
/// range, so it goes to the real `free`, which returns at once; a null test
/// here would cost every other free two instructions.
///
/// # Safety
/// As C's `free`.
#[cfg(target_arch = "x86_64")]
#[no_mangle]
#[unsafe(naked)]
pub unsafe extern "C" fn free(p: *mut c_void) {
    core::arch::naked_asm!(
        "mov rax, rdi",
        "sub rax, qword ptr [rip + {range} + {base}]",
        "cmp rax, qword ptr [rip + {range} + {len}]",
        "jb {slow}",
        "jmp qword ptr [rip + {real}]",
        range = sym RANGE,
        len = const RangeMirror::LEN_OFFSET,
        base = const RangeMirror::BASE_OFFSET,
        slow = sym free_slow,
        real = sym real::FREE,
    )
}

/// Interposed `free`.
///
/// # Safety
/// As C's `free`.
#[cfg(not(target_arch = "x86_64"))]
#[no_mangle]
pub unsafe extern "C" fn free(p: *mut c_void) {
    // free(NULL) is common (glibc alone makes about 20 such calls per thread
    // it creates): tested first, it costs three instructions, where the
    // range test, the jump to the real free and its own test cost twelve.
    if p.is_null() {
        return;
    }
    if !owned(p) {
        // SAFETY: neither a bootstrap block nor a sample: a block the real
        // allocator handed out, which it did only after being resolved.
        return unsafe { real::free(p) };
    }
    free_slow(p)
}

#[cold]
#[inline(never)]
extern "C" fn free_slow(p: *mut c_void) {
    if arena_in_copy::active() {
        // SAFETY: in a copy, every block is the copy allocator's to judge.
        return unsafe { crate::alloc_in_copy::free(p) };
    }
    if bootstrap::contains(p.cast()) {
        // Bootstrap blocks are never reused.
        return;
    }
    free_sample(tls::state(), p);
}

/// Interposed `calloc`.
///
/// # Safety
/// As C's `calloc`.
#[no_mangle]
pub unsafe extern "C" fn calloc(n: usize, size: usize) -> *mut c_void {
    if let (Some(st), Some(total)) = (tls::fast_state(), n.checked_mul(size)) {
        if st.skip(total) {
            // SAFETY: a nonzero countdown implies resolved.
            return unsafe { real::calloc(n, size) };
        }
    }
    // SAFETY: as C's calloc.
    unsafe { calloc_slow(n, size) }
}

#[cold]
#[inline(never)]
unsafe extern "C" fn calloc_slow(n: usize, size: usize) -> *mut c_void {
    let Some(total) = n.checked_mul(size) else {
        real::set_errno(libc::ENOMEM);
        return null_mut();
    };
    if !real::ensure() {
        // Bootstrap memory is never reused, hence already zero.
        return bootstrap_alloc(total, MIN_ALIGN);
    }
    let st = tls::state();
    let p = alloc_ours(st, total, MIN_ALIGN, true);
    if !p.is_null() {
        return p;
    }
    // SAFETY: resolved just above.
    unsafe { real::calloc(n, size) }
}

/// Interposed `realloc`, on x86-64 written out: the portable version's
/// steps below in nine instructions rather than the compiler's fifteen
/// (the tests read their operands from memory, and the countdown is
/// subtracted in place as in [`malloc`], given back on the way to the slow
/// path). `realloc(NULL, n)` of an unsampled size goes to the real
/// `realloc`, which is `malloc` there; `realloc(p, 0)` and heapprof's own
/// blocks take the slow path.
///
/// # Safety
/// As C's `realloc`.
#[cfg(target_arch = "x86_64")]
#[no_mangle]
#[unsafe(naked)]
pub unsafe extern "C" fn realloc(p: *mut c_void, size: usize) -> *mut c_void {
    core::arch::naked_asm!(
        "test rsi, rsi",
        "jz 2f",
        "mov rax, rdi",
        "sub rax, qword ptr [rip + {range} + {base}]",
        "cmp rax, qword ptr [rip + {range} + {len}]",
        "jb 2f",
        "mov rax, qword ptr [rip + {state}@GOTTPOFF]",
        "sub qword ptr fs:[rax + {countdown}], rsi",
        "jbe 3f",
        "jmp qword ptr [rip + {real}]",
        // The countdown ran out: given back, and the sampler asked.
        "3:",
        "add qword ptr fs:[rax + {countdown}], rsi",
        "mov edx, 1",
        "jmp {slow}",
        // Size 0, or heapprof's own block.
        "2:",
        "xor edx, edx",
        "jmp {slow}",
        range = sym RANGE,
        base = const RangeMirror::BASE_OFFSET,
        len = const RangeMirror::LEN_OFFSET,
        state = sym tls::heapprof_state,
        countdown = const engine::thread_state::COUNTDOWN_OFFSET,
        slow = sym realloc_slow,
        real = sym real::REALLOC,
    )
}

/// Interposed `realloc`, with glibc's semantics at the edges:
/// `realloc(NULL, n)` is `malloc(n)` and `realloc(p, 0)` frees `p` and
/// returns NULL, whatever the real allocator would do.
///
/// # Safety
/// As C's `realloc`.
#[cfg(not(target_arch = "x86_64"))]
#[no_mangle]
pub unsafe extern "C" fn realloc(p: *mut c_void, size: usize) -> *mut c_void {
    if let Some(st) = tls::fast_state() {
        if !owned(p) && size != 0 {
            if st.skip(size) {
                // SAFETY: an ordinary block of the real allocator (so
                // resolved).
                return unsafe { real::realloc(p, size) };
            }
            // SAFETY: as C's realloc.
            return unsafe { realloc_slow(p, size, true) };
        }
    }
    if p.is_null() {
        // Common (CPython grows buffers from NULL): straight to malloc.
        // SAFETY: as C's malloc.
        return unsafe { malloc(size) };
    }
    // SAFETY: as C's realloc.
    unsafe { realloc_slow(p, size, false) }
}

/// `countdown_checked`: the hot path already found the countdown too short
/// for `size` (so ask the sampler without consuming it again).
#[cold]
#[inline(never)]
unsafe extern "C" fn realloc_slow(
    p: *mut c_void,
    size: usize,
    countdown_checked: bool,
) -> *mut c_void {
    if p.is_null() {
        // SAFETY: as C's malloc.
        return unsafe { malloc(size) };
    }
    if size == 0 {
        // SAFETY: `p` is live (caller's contract) and not used again.
        unsafe { free(p) };
        return null_mut();
    }
    if arena_in_copy::active() {
        // SAFETY: `p` is live (caller's contract).
        return unsafe { crate::alloc_in_copy::realloc(p, size) };
    }
    if bootstrap::contains(p.cast()) {
        // Move out of the arena (its blocks never grow).
        // SAFETY: as C's malloc; the copy stays within both blocks.
        unsafe {
            let new = malloc(size);
            if !new.is_null() {
                let n = bootstrap::size_of(p.cast()).min(size);
                core::ptr::copy_nonoverlapping(p.cast::<u8>(), new.cast::<u8>(), n);
            }
            return new;
        }
    }
    if !real::resolved() {
        // Not ours to resize (see free_slow).
        real::set_errno(libc::ENOMEM);
        return null_mut();
    }
    let st = tls::state();
    let sample_new = if countdown_checked {
        sample(st, size)
    } else {
        !st.skip(size) && sample(st, size)
    };
    if !owned(p) {
        // SAFETY: a live block of the real allocator.
        unsafe { return realloc_unowned(st, p, size, sample_new) };
    }
    // The old block is a sample (or a former one: it stays in the sample
    // heap, see `heapprof::engine::sample_heap`): the engine's policy.
    let usable = engine::sample_usable_size(p.cast());
    let errno = real::KeptErrno::keep();
    let resized = engine::realloc_sample(st, p.cast(), size, sample_new, MIN_ALIGN, marker!());
    errno.restore();
    let new: *mut c_void = match resized {
        engine::Resized::InPlace => return p,
        engine::Resized::MoveTo(q) => q.cast(),
        engine::Resized::MoveToInner => {
            // SAFETY: resolved (the sample exists).
            let q = unsafe { real::malloc(size) };
            if q.is_null() {
                // Out of memory: the sample stays as it was (errno from
                // malloc).
                return q;
            }
            q
        }
    };
    // SAFETY: the sample has `usable` bytes, the new block `size`; they are
    // distinct.
    unsafe { core::ptr::copy_nonoverlapping(p.cast::<u8>(), new.cast::<u8>(), usable.min(size)) };
    free_sample(st, p);
    new
}

/// `realloc` of `p`, a live block of the real allocator; `sample_new`:
/// whether the new block is a sample.
///
/// A new sample moves into the sample heap, and so does a block grown
/// large (see `heapprof::engine::large_unsampled`), unsampled, with room to grow in
/// place: copied straight from `p`, as many bytes as it holds (its usable
/// size), so that the real allocator neither resizes nor copies it first.
/// Only an allocator that cannot tell a block's size has it resized by its
/// own `realloc` first, which makes `size` bytes of it valid to copy (an
/// unsampled block then stays there).
///
/// # Safety
/// Resolved; `p` is a live block of the real allocator, not used again by
/// the caller unless the result is null.
#[inline(always)]
unsafe fn realloc_unowned(
    st: &ThreadState,
    p: *mut c_void,
    size: usize,
    sample_new: bool,
) -> *mut c_void {
    let large = !sample_new && engine::large_unsampled(size) && !arena_in_copy::active();
    if !sample_new && !large {
        // SAFETY: a live block of the real allocator; its contents are kept.
        return unsafe { real::realloc(p, size) };
    }
    // SAFETY: a live block of the real allocator.
    let held = unsafe { real::usable_size(p) };
    let (from, n, resized) = if held != 0 {
        (p, held.min(size), false)
    } else {
        // SAFETY: as above; its contents are kept.
        let q = unsafe { real::realloc(p, size) };
        if q.is_null() || large {
            return q;
        }
        (q, size, true)
    };
    let a = if sample_new {
        alloc_grown(st, size)
    } else {
        alloc_large(size, engine::realloc_room(size), MIN_ALIGN, false)
    };
    if a.is_null() {
        if resized {
            return from;
        }
        // SAFETY: as above: the real allocator resizes it, unsampled.
        return unsafe { real::realloc(p, size) };
    }
    // SAFETY: `from` is live with at least `n` bytes, `a` is a distinct new
    // block of `size` >= `n` bytes; `from` is not used again.
    unsafe {
        core::ptr::copy_nonoverlapping(from.cast::<u8>(), a.cast::<u8>(), n);
        real::free(from);
    }
    a
}

/// Interposed `reallocarray`: an overflow-checked `realloc`. Never forwarded:
/// glibc's calls its internal realloc, which would miss our bookkeeping for
/// a sampled block, and jemalloc has none.
///
/// # Safety
/// As C's `reallocarray`.
#[no_mangle]
pub unsafe extern "C" fn reallocarray(p: *mut c_void, n: usize, size: usize) -> *mut c_void {
    match n.checked_mul(size) {
        // SAFETY: as C's realloc.
        Some(total) => unsafe { realloc(p, total) },
        None => {
            real::set_errno(libc::ENOMEM);
            null_mut()
        }
    }
}

/// Interposed `posix_memalign`.
///
/// # Safety
/// As C's `posix_memalign`.
#[no_mangle]
pub unsafe extern "C" fn posix_memalign(out: *mut *mut c_void, align: usize, size: usize) -> c_int {
    if let Some(st) = tls::fast_state() {
        if st.skip(size) {
            // SAFETY: a nonzero countdown implies resolved; caller's contract.
            return unsafe { real::posix_memalign(out, align, size) };
        }
    }
    // SAFETY: as C's posix_memalign.
    unsafe { posix_memalign_slow(out, align, size) }
}

#[cold]
#[inline(never)]
unsafe extern "C" fn posix_memalign_slow(
    out: *mut *mut c_void,
    align: usize,
    size: usize,
) -> c_int {
    let valid =
        align.is_power_of_two() && align.is_multiple_of(core::mem::size_of::<*mut c_void>());
    if !real::ensure() {
        if !valid {
            return libc::EINVAL;
        }
        let p = bootstrap::alloc(size, align);
        if p.is_null() {
            return libc::ENOMEM;
        }
        // SAFETY: `out` is writable (caller's contract).
        unsafe { *out = p.cast() };
        return 0;
    }
    let st = tls::state();
    if valid {
        let p = alloc_ours(st, size, align, false);
        if !p.is_null() {
            // SAFETY: `out` is writable (caller's contract).
            unsafe { *out = p };
            return 0;
        }
    }
    // SAFETY: resolved; caller's contract (an invalid alignment gets the
    // real function's answer).
    unsafe { real::posix_memalign(out, align, size) }
}

/// Which aligned function an [`aligned_slow`] call stands for.
#[derive(Clone, Copy)]
enum Which {
    AlignedAlloc,
    Memalign,
    Valloc,
    Pvalloc,
}

/// The shared slow path of `aligned_alloc`, `memalign`, `valloc` and
/// `pvalloc` (whose `size` is already rounded to pages): bootstrap, sample
/// (when `align` is a power of two; anything else gets the real function's
/// treatment), or forward.
#[inline(always)]
unsafe fn aligned_slow(kind: Which, align: usize, size: usize) -> *mut c_void {
    if !real::ensure() {
        return bootstrap_alloc(size, align);
    }
    let st = tls::state();
    if align.is_power_of_two() {
        let p = alloc_ours(st, size, align, false);
        if !p.is_null() {
            return p;
        }
    }
    // SAFETY: resolved just above; the caller's contract for the function.
    unsafe {
        match kind {
            Which::AlignedAlloc => real::aligned_alloc(align, size),
            Which::Memalign => real::memalign(align, size),
            Which::Valloc => real::valloc(size),
            // Given the rounded size, pvalloc rounds it to itself.
            Which::Pvalloc => real::pvalloc(size),
        }
    }
}

#[cold]
#[inline(never)]
unsafe extern "C" fn aligned_alloc_slow(align: usize, size: usize) -> *mut c_void {
    // SAFETY: as C's aligned_alloc.
    unsafe { aligned_slow(Which::AlignedAlloc, align, size) }
}

#[cold]
#[inline(never)]
unsafe extern "C" fn memalign_slow(align: usize, size: usize) -> *mut c_void {
    // SAFETY: as C's memalign.
    unsafe { aligned_slow(Which::Memalign, align, size) }
}

#[cold]
#[inline(never)]
unsafe extern "C" fn valloc_slow(size: usize) -> *mut c_void {
    // SAFETY: as C's valloc.
    unsafe { aligned_slow(Which::Valloc, PAGE, size) }
}

#[cold]
#[inline(never)]
unsafe extern "C" fn pvalloc_slow(rounded: usize) -> *mut c_void {
    // SAFETY: as C's pvalloc, with the size already rounded.
    unsafe { aligned_slow(Which::Pvalloc, PAGE, rounded) }
}

/// Interposed `aligned_alloc`.
///
/// # Safety
/// As C's `aligned_alloc`.
#[no_mangle]
pub unsafe extern "C" fn aligned_alloc(align: usize, size: usize) -> *mut c_void {
    if let Some(st) = tls::fast_state() {
        if st.skip(size) {
            // SAFETY: a nonzero countdown implies resolved.
            return unsafe { real::aligned_alloc(align, size) };
        }
    }
    // SAFETY: as C's aligned_alloc.
    unsafe { aligned_alloc_slow(align, size) }
}

/// Interposed `memalign`.
///
/// # Safety
/// As C's `memalign`.
#[no_mangle]
pub unsafe extern "C" fn memalign(align: usize, size: usize) -> *mut c_void {
    if let Some(st) = tls::fast_state() {
        if st.skip(size) {
            // SAFETY: a nonzero countdown implies resolved.
            return unsafe { real::memalign(align, size) };
        }
    }
    // SAFETY: as C's memalign.
    unsafe { memalign_slow(align, size) }
}

/// Interposed `valloc`.
///
/// # Safety
/// As C's `valloc`.
#[no_mangle]
pub unsafe extern "C" fn valloc(size: usize) -> *mut c_void {
    if let Some(st) = tls::fast_state() {
        if st.skip(size) {
            // SAFETY: a nonzero countdown implies resolved.
            return unsafe { real::valloc(size) };
        }
    }
    // SAFETY: as C's valloc.
    unsafe { valloc_slow(size) }
}

/// Interposed `pvalloc`: `size` rounded up to whole pages (at least one),
/// page-aligned.
///
/// # Safety
/// As C's `pvalloc`.
#[no_mangle]
pub unsafe extern "C" fn pvalloc(size: usize) -> *mut c_void {
    let Some(rounded) = size.max(1).checked_next_multiple_of(PAGE) else {
        real::set_errno(libc::ENOMEM);
        return null_mut();
    };
    if let Some(st) = tls::fast_state() {
        if st.skip(rounded) {
            // SAFETY: a nonzero countdown implies resolved.
            return unsafe { real::pvalloc(size) };
        }
    }
    // Sampled or not, the object is `rounded` bytes.
    // SAFETY: as C's pvalloc.
    unsafe { pvalloc_slow(rounded) }
}

/// Interposed `malloc_usable_size`.
///
/// # Safety
/// As C's `malloc_usable_size`.
#[no_mangle]
pub unsafe extern "C" fn malloc_usable_size(p: *mut c_void) -> usize {
    if !owned(p) {
        if p.is_null() {
            return 0;
        }
        // SAFETY: an ordinary block of the real allocator (so resolved).
        return unsafe { real::usable_size(p) };
    }
    if arena_in_copy::active() {
        // SAFETY: `p` is live (caller's contract).
        return unsafe { crate::alloc_in_copy::usable_size(p) };
    }
    if bootstrap::contains(p.cast()) {
        return bootstrap::size_of(p.cast());
    }
    engine::sample_usable_size(p.cast())
}

//! The engine both ways in share: the sampling decision, the sampled path and
//! the matching of frees to samples.
//!
//! A way in (the `#[global_allocator]` wrapper or the LD_PRELOAD hooks) keeps
//! the hot paths itself, inline:
//! - allocation: `if countdown > size { countdown -= size; inner alloc }`,
//!   otherwise [`should_sample`] decides; a sampled object is served by
//!   [`alloc_sample`] from heapprof's own [`sample_heap`] and recorded (if
//!   the heap cannot serve it, the way in allocates it unsampled). The
//!   countdown never exceeds [`LARGE`], so every large allocation comes
//!   here; one not sampled may be served by the sample heap too
//!   ([`alloc_large`]);
//! - free: `if !owns(ptr) { inner free }` — one compare against the sample
//!   heap's address range — otherwise [`free_sample`] records the free and
//!   gives the memory back to the sample heap.
//!
//! Everything here runs only on those rare slow paths. It takes no lock, makes
//! no allocation through the profiled allocator (the thread is marked busy
//! while heapprof's own code runs, see [`crate::engine::thread_state`]) and never
//! prints or panics.
//!
//! **Who drains the record buffers.** Normally a thread above the engine
//! (the dumper) applies the per-thread buffers to the aggregate now and
//! then, which bounds their memory. When no such thread runs
//! ([`set_self_drain`]: the preload library keeps a single-threaded program
//! single-threaded in glibc's eyes), the sampled path does it: a record that
//! fills a buffer chunk (64 KiB of records) applies every buffer, if the
//! aggregator's lock is free at that moment — a try-lock, never a wait. The
//! aggregate's tables then grow through heapprof's own allocator (the inner
//! one, never the hooks), with `try_reserve`, as on the dumper. Under the
//! preload library ([`set_backlog_drain`]), a thread
//! that fills a chunk the dumper has not drained yet does the same while a
//! dumper runs, so a thread sampling densely between the dumper's turns
//! reuses its drained chunk (see [`buffer`]) instead of mapping fresh
//! ones: its records take a chunk or two, not all it recorded since the
//! dumper's last turn. In the Rust way in, where draining would allocate
//! through the hook that drains, such a thread wakes the dumper instead
//! ([`waiter`]), which drains at once.

pub(crate) mod aggregate;
pub mod arena_in_copy;
pub mod blackbox;
pub(crate) mod buffer;
pub mod labels;
pub(crate) mod live_table;
pub mod loader_fence;
pub(crate) mod record;
pub mod sample_heap;
pub mod sampler;
pub(crate) mod stack;
pub(crate) mod stack_table;
pub(crate) mod tagged_stack;
pub mod thread_state;
pub mod threads;
pub mod waiter;
pub(crate) mod word_hash;
// On the sampled path or the watcher, hence under the raw-thread lints.
raw_thread_modules! {
    pub(crate) mod cfi;
    pub(crate) mod pressure;
    pub(crate) mod unwind;
}

use core::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};

use crate::engine::sampler::{Rng, DEFAULT_RATE};
use crate::engine::thread_state::ThreadState;

static RATE: AtomicU64 = AtomicU64::new(DEFAULT_RATE);
static RATE_SET_BY_CODE: AtomicBool = AtomicBool::new(false);
static SEED: AtomicU64 = AtomicU64::new(0);
static THREADS: AtomicU64 = AtomicU64::new(0);
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Countdown while sampling is off: bytes between looks at the rate.
const RECHECK_WHEN_OFF: usize = 64 << 20;

const UNINIT: u8 = 0;
const RUNNING: u8 = 1;
const DONE: u8 = 2;
static INIT: AtomicU8 = AtomicU8::new(UNINIT);
static START_MONO_NS: AtomicU64 = AtomicU64::new(0);
static THREAD_KEY: AtomicU64 = AtomicU64::new(u64::MAX);

/// The current mean bytes between samples.
pub fn rate() -> u64 {
    RATE.load(Ordering::Relaxed)
}

/// Sets the sampling rate. Takes effect on the calling thread at once and on
/// other threads at their next sample (their current countdown runs out
/// first), so set it before the allocations that matter.
pub fn set_rate(rate: u64) {
    RATE_SET_BY_CODE.store(true, Ordering::Relaxed);
    RATE.store(rate, Ordering::Relaxed);
    let st = crate::engine::thread_state::current();
    if !st.is_busy() {
        st.countdown.set(0);
    }
}

/// Fixes the sampler seed for threads that start sampling from now on (and
/// restarts the calling thread's stream).
pub fn set_seed(seed: u64) {
    SEED.store(seed, Ordering::Relaxed);
    THREADS.store(0, Ordering::Relaxed);
    let st = crate::engine::thread_state::current();
    if !st.is_busy() {
        st.started.set(false);
        st.countdown.set(0);
    }
}

/// Monotonic time at which profiling started.
pub fn start_mono_ns() -> u64 {
    START_MONO_NS.load(Ordering::Relaxed)
}

/// One-time engine set-up: the rate and seed the start-up layer read (a
/// rate already set from code wins), the thread exit key and the unwinder.
/// Returns true in the one call that did the work. Idempotent and safe to
/// call from a hook (it runs with the calling thread marked busy). A second
/// thread arriving while the first is still here carries on with the
/// defaults rather than wait.
pub fn init(env_rate: Option<u64>, env_seed: Option<u64>) -> bool {
    if INIT
        .compare_exchange(UNINIT, RUNNING, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        return false;
    }
    let st = crate::engine::thread_state::current();
    let _busy = st.enter();
    START_MONO_NS.store(crate::os::monotonic_ns(), Ordering::Relaxed);
    if let Some(r) = env_rate.filter(|_| !RATE_SET_BY_CODE.load(Ordering::Relaxed)) {
        RATE.store(r, Ordering::Relaxed);
    }
    let seed = env_seed.unwrap_or_else(|| {
        // Differ in every process: time, pid and ASLR.
        crate::os::realtime_ns()
            ^ (u64::from(std::process::id()) << 32)
            ^ (&SEED as *const AtomicU64 as u64)
    });
    SEED.store(seed, Ordering::Relaxed);
    let mut key: libc::pthread_key_t = 0;
    // SAFETY: `key` is a valid out-pointer; the destructor is an extern "C" fn.
    if unsafe { libc::pthread_key_create(&mut key, Some(thread_exit)) } == 0 {
        THREAD_KEY.store(u64::from(key), Ordering::Relaxed);
    }
    sample_heap::reserve();
    stack::warm_up();
    INIT.store(DONE, Ordering::Release);
    true
}

/// Allocations of this many bytes or more always reach the slow path: the
/// countdown the hot paths subtract from never exceeds it (glibc's initial
/// mmap threshold). The rest of the thread's countdown waits in its reserve
/// and refills the hot one when that runs out (no draw, no sample). So a
/// large allocation costs the hot paths nothing extra to single out, and a
/// way in can serve it from the sample heap whether sampled or not.
pub const LARGE: usize = 128 << 10;

/// Unsampled blocks of this many bytes or more stay with the inner
/// allocator (glibc's largest mmap threshold: above it glibc maps and
/// unmaps each block itself, so there is no warm memory to share, and the
/// sample heap would keep a freed one resident until its decay).
pub const LARGE_MAX: usize = 32 << 20;

/// Whether an unsampled allocation of `size` bytes is one a way in serves
/// from the sample heap ([`alloc_large`]) where it can.
#[inline]
pub fn large_unsampled(size: usize) -> bool {
    (LARGE..LARGE_MAX).contains(&size)
}

/// Decides whether an allocation of `size` bytes is sampled. Call only when
/// the thread's countdown is not greater than `size` (the hot path handles
/// the rest). Updates the countdown.
///
/// The decision is made on the real countdown (the hot one plus the
/// reserve): while that outlasts `size` the allocation is not sampled and
/// the hot countdown is refilled from the reserve; the statistics are those
/// of one countdown (see [`sampler`]).
#[cold]
#[inline(never)]
pub fn should_sample(st: &ThreadState, size: usize) -> bool {
    if st.is_busy() {
        st.countdown.set(usize::MAX);
        return false;
    }
    // (A countdown reset to 0 — a new rate or seed, a leak check — drops
    // the reserve: the next decision starts afresh.)
    if st.refill(size) {
        return false;
    }
    if !st.started.get() {
        start_thread(st);
    }
    if st.tag.get() != 0 {
        // A leak-check session records every allocation.
        st.countdown.set(0);
        return true;
    }
    match RATE.load(Ordering::Relaxed) {
        0 => {
            // Off: look again after a while, so a later `set_rate` reaches
            // every thread without a check on the hot path.
            st.set_countdown(RECHECK_WHEN_OFF);
            false
        }
        1 => {
            st.countdown.set(0);
            true
        }
        rate => {
            let mut rng = Rng::from_state(st.rng.get());
            let mut c = st.countdown.get();
            if c == 0 || c == RECHECK_WHEN_OFF {
                // Fresh thread, changed rate, or sampling was off.
                c = sampler::next_interval(&mut rng, rate);
            }
            let sampled = if c > size {
                st.set_countdown(c - size);
                false
            } else {
                st.set_countdown(sampler::next_interval(&mut rng, rate));
                true
            };
            st.rng.set(rng.state());
            sampled
        }
    }
}

fn start_thread(st: &ThreadState) {
    let n = THREADS.fetch_add(1, Ordering::Relaxed);
    let seed = SEED.load(Ordering::Relaxed) ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    st.rng.set(Rng::new(seed).state());
    st.countdown.set(0);
    st.reserve.set(0);
    st.started.set(true);
}

/// Whether `ptr` is heapprof's own memory (a sample, or the preload
/// library's bootstrap arena at the start of the sample heap's range): the
/// free hot path's one compare and branch.
#[inline(always)]
pub fn owns(ptr: *const u8) -> bool {
    sample_heap::contains(ptr)
}

/// The sampled path of an allocation: `size` bytes aligned to `align` (a
/// power of two) from the sample heap, zeroed if asked, and recorded. Null
/// if the sample heap cannot serve it (counted there): the way in then
/// serves the allocation from its inner allocator, unsampled. Always
/// inlined, so [`record_alloc_from`] is called from the hook's own frame
/// (see [`crate::engine::stack`]).
#[inline(always)]
pub fn alloc_sample(
    st: &ThreadState,
    size: usize,
    align: usize,
    zero: bool,
    hook_marker: usize,
) -> *mut u8 {
    let p = sample_heap::alloc(size, align, zero);
    if !p.is_null() {
        record_alloc_from(st, p, size, hook_marker);
    }
    p
}

/// Room to give a sample that a `realloc` moves because it grew: large
/// buffers grow by repeated reallocs (a string builder, a vector, a hash
/// table's bucket array), nearly every one sampled at their size, and each
/// move copies the whole buffer. Growth is mostly by doubling, so with four
/// times the size to spare the next two doublings fit in place (with one
/// and a half, none would). The spare pages are address space only until
/// written.
pub fn realloc_room(size: usize) -> usize {
    if size >= 64 << 10 {
        size.saturating_mul(4)
    } else {
        size
    }
}

/// Where a `realloc` of a block of the sample heap goes ([`realloc_sample`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resized {
    /// It stays where it is, resized, with its records made.
    InPlace,
    /// The way in copies it into this block of the sample heap (recorded as
    /// a sample if the new size is sampled), then [`free_sample`]s the old.
    MoveTo(*mut u8),
    /// The way in copies it into a block of its inner allocator, then
    /// [`free_sample`]s the old: a small former sample goes back there (so
    /// its later reallocs take the hot path again), or the sample heap
    /// could not serve it.
    MoveToInner,
}

/// The one `realloc` policy for a block of the sample heap (a sample, a
/// former sample, a large unsampled block), for both ways in: a `realloc`
/// of `ptr` to `size` bytes, sampled at the new size if `sample_new`.
///
/// The block stays where it is if it is kept in the sample heap (sampled
/// again, or large: [`keeps_former_sample`]) and can be resized in place;
/// else it moves, with room to grow ([`realloc_room`]), to a block of the
/// sample heap if it is kept, or to the inner allocator. The caller copies
/// (as many bytes as the old block held) and frees the old block.
#[inline(always)]
pub fn realloc_sample(
    st: &ThreadState,
    ptr: *mut u8,
    size: usize,
    sample_new: bool,
    align: usize,
    hook_marker: usize,
) -> Resized {
    let keep = sample_new || keeps_former_sample(size);
    if keep && try_resize_in_place(ptr, size) {
        // The old sample's free, then the new sample if sampled (else it
        // stays as a former sample, see `sample_heap`).
        if sample_new {
            record_free(st, ptr);
            record_alloc_from(st, ptr, size, hook_marker);
        } else {
            unsample(st, ptr);
        }
        return Resized::InPlace;
    }
    let room = realloc_room(size);
    let new = if sample_new {
        alloc_sample_with_room(st, size, room, align, hook_marker)
    } else if keep {
        alloc_unsampled(size, room, align)
    } else {
        core::ptr::null_mut()
    };
    if new.is_null() {
        Resized::MoveToInner
    } else {
        Resized::MoveTo(new)
    }
}

/// Resizes the sample (or former sample) at `ptr` to `size` bytes where
/// it is, if it can: it fits without stranding most of its slot; or it is
/// a large one (64 KiB or more) that fits, which keeps its run (the room
/// [`realloc_room`] gave it) less the pages after its new end, filed free;
/// or it is a large one followed by a free run or the end of the sample
/// heap's carved pages, which grows in place instead of being copied.
/// Whether it did.
fn try_resize_in_place(ptr: *const u8, size: usize) -> bool {
    let usable = sample_heap::usable_size(ptr);
    if usable >= size {
        size > usable / 2 || sample_heap::shrink_in_place(ptr, size)
    } else {
        // With room to spare if it can, else just enough.
        sample_heap::grow_in_place(ptr, realloc_room(size)) || sample_heap::grow_in_place(ptr, size)
    }
}

/// [`alloc_sample`] of a sample of `size` bytes with room for `room`
/// (at least `size`) before a later `realloc` must move it.
#[inline(always)]
pub fn alloc_sample_with_room(
    st: &ThreadState,
    size: usize,
    room: usize,
    align: usize,
    hook_marker: usize,
) -> *mut u8 {
    let p = sample_heap::alloc(room.max(size), align, false);
    if !p.is_null() {
        record_alloc_from(st, p, size, hook_marker);
    }
    p
}

/// Records a sampled allocation of `size` requested bytes at `ptr` (an
/// object of the sample heap). Captures the stack first, before touching
/// anything shared. `hook_marker` is the address of a local variable in the
/// way in's hook frame (a function never inlined into its caller), so the
/// stack starts at the program's call into the allocator; 0 keeps every
/// frame (see [`crate::engine::stack`]).
#[inline(never)]
pub fn record_alloc_from(st: &ThreadState, ptr: *mut u8, size: usize, hook_marker: usize) {
    let tag = st.tag.get();
    let labels = st.labels.get();
    let _busy = st.enter();
    // The record is made in place in this thread's buffer (no copy), or
    // here when the buffer has no room (it is then dropped, and counted).
    let b = own_buffer(st);
    let (room, full) = if b.is_null() {
        (core::ptr::null_mut(), true)
    } else {
        // SAFETY: this thread owns `b`; MAX_WORDS is far below a chunk.
        unsafe { buffer::reserve(b, record::MAX_WORDS) }
    };
    let mut here = [core::mem::MaybeUninit::uninit(); record::MAX_WORDS];
    let rec = if room.is_null() {
        &mut here
    } else {
        // SAFETY: `reserve` gave MAX_WORDS words, aligned, that only this
        // thread touches until it commits them.
        unsafe { &mut *room.cast::<[core::mem::MaybeUninit<u64>; record::MAX_WORDS]>() }
    };
    let n = stack::capture_from_engine(&mut rec[record::ALLOC_HEADER..], hook_marker);
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let rate = if tag != 0 { 1 } else { rate().max(1) };
    let now = crate::os::monotonic_ns();
    // SAFETY: the capture initialised the n frames it returned.
    let words = unsafe { record::alloc(rec, n, id, size as u64, rate, now, tag, labels) };
    let frames = &words[record::ALLOC_HEADER..];
    blackbox::record(id, size as u64, rate, now, labels, frames);
    if !room.is_null() {
        // SAFETY: the record's words are written, in the room reserved.
        unsafe { buffer::commit(b, words.len()) };
    }
    if !b.is_null() {
        pushed(b, full);
    }
    // The record is published before the id is stored by the object, so a
    // free that finds the id always finds the sample's record somewhere
    // (maybe not drained yet).
    sample_heap::set_id(ptr, id);
}

/// Frees the sample at `ptr` (which [`owns`], and is not the preload
/// library's bootstrap arena): records its free and gives its memory back
/// to the sample heap.
#[inline(never)]
pub fn free_sample(st: &ThreadState, ptr: *mut u8) {
    if arena_in_copy::active() {
        // In a copy of the process every block in range is the copy's.
        return arena_in_copy::free(ptr);
    }
    // Found once: the id read, its free recorded, the memory given back.
    if let Some((o, id)) = sample_heap::live(ptr) {
        record_free_of(st, id);
        o.release();
    }
}

/// Records the free of the live sample at `ptr` but keeps its memory (a
/// `realloc` that stays in place and is sampled again). False if `ptr` is
/// not a sample.
pub fn record_free(st: &ThreadState, ptr: *mut u8) -> bool {
    let Some((_, id)) = sample_heap::live(ptr) else {
        return false;
    };
    record_free_of(st, id);
    true
}

/// [`record_free`] of a live object's id (0: a former sample, see
/// `unsample`: nothing to record).
fn record_free_of(st: &ThreadState, id: u64) {
    if id != 0 {
        blackbox::forget(id);
        push(st, &record::free(id));
    }
}

/// Whether a former sample reallocated to `size` bytes (not sampled) stays
/// in the sample heap: only large blocks, whose copies cost; a small one
/// goes back to the inner allocator (a cheap copy), so that its later
/// reallocs take the hot path again.
pub fn keeps_former_sample(size: usize) -> bool {
    size >= 64 << 10
}

/// A `realloc` of the sample at `ptr` to a size that is not sampled but
/// fits where it is: records the sample's free and keeps the memory as an
/// unsampled object of the sample heap (its free then records nothing).
pub fn unsample(st: &ThreadState, ptr: *mut u8) {
    if record_free(st, ptr) {
        sample_heap::set_id(ptr, 0);
    }
}

/// A block of the sample heap for a former sample moved by a `realloc` to
/// a size that is not sampled (`room`: see [`realloc_room`]); null if the
/// heap cannot serve it (the way in then uses its inner allocator).
pub fn alloc_unsampled(size: usize, room: usize, align: usize) -> *mut u8 {
    let p = sample_heap::alloc_uncounted(room.max(size), align, false);
    if !p.is_null() {
        sample_heap::set_id(p, 0);
    }
    p
}

/// An allocation of `size` bytes ([`large_unsampled`]) that is not sampled,
/// served by the sample heap's large runs (reused, grown in place, given
/// back on a decay) as an unsampled block: its free and `realloc` come back
/// by address and record nothing, and a `realloc` that samples it records
/// it where it is. Null if the heap cannot serve it (counted:
/// [`sample_heap::large_to_inner`]); the way in then uses its inner
/// allocator.
pub fn alloc_large(size: usize, room: usize, align: usize, zero: bool) -> *mut u8 {
    let p = sample_heap::alloc_uncounted(room.max(size), align, zero);
    if p.is_null() {
        sample_heap::count_large_to_inner();
    } else {
        sample_heap::set_id(p, 0);
    }
    p
}

/// Bytes usable at the live sample `ptr`: at least its requested size.
pub fn sample_usable_size(ptr: *const u8) -> usize {
    sample_heap::usable_size(ptr)
}

static SELF_DRAIN: AtomicBool = AtomicBool::new(false);

static BACKLOG_DRAIN: AtomicBool = AtomicBool::new(false);

/// Whether the sampled path drains the buffers when its own holds a full
/// chunk undrained, while a dumper thread runs (see the module docs). Only
/// for a way in whose hooks heapprof's own allocations bypass (the preload
/// library): draining grows the aggregate's tables, which in the Rust way
/// in would allocate through the hook that is draining.
pub fn set_backlog_drain(on: bool) {
    BACKLOG_DRAIN.store(on, Ordering::Relaxed);
}

/// A drain asked of the dumper and not yet answered: one per backlog. A
/// thread whose buffer holds a full chunk undrained and may not drain
/// itself (the Rust way in, where draining would allocate through the hook
/// that drains) wakes the dumper ([`waiter`]), which drains at once rather
/// than at its next turn, so records do not pile up between turns.
static DRAIN_ASKED: AtomicBool = AtomicBool::new(false);

/// Whether the sampled path asked for a drain since the last call (the
/// dumper drains when it did).
pub fn take_drain_ask() -> bool {
    DRAIN_ASKED.swap(false, Ordering::AcqRel)
}

/// Full chunks of records a thread's buffer may hold undrained before its
/// sampled path drains the buffers itself, even while a dumper thread runs
/// (see the module docs): one, so that the chunk it drains is the spare
/// its next one reuses.
const BACKLOG: usize = 1;

/// Whether the sampled path drains the record buffers itself (see the
/// module docs): on while no dumper thread runs.
pub fn set_self_drain(on: bool) {
    SELF_DRAIN.store(on, Ordering::Relaxed);
}

static DRAIN_WANTED: AtomicBool = AtomicBool::new(false);

/// While the sampled path drains (no dumper thread): asks the next sample
/// to drain even if its buffer is not full, so the aggregate's running
/// estimate ([`aggregate::in_use_estimate`]) catches up. Lock-free (the
/// watcher calls it).
pub fn want_drain() {
    DRAIN_WANTED.store(true, Ordering::Relaxed);
}

fn push(st: &ThreadState, words: &[u64]) {
    let b = own_buffer(st);
    if b.is_null() {
        return;
    }
    // SAFETY: this thread owns `b` (acquired by this thread) and records
    // are at most MAX_WORDS, far below a chunk.
    let full = unsafe { buffer::push(b, words) };
    pushed(b, full);
}

/// This thread's record buffer, acquired on its first record; null when
/// none can be mapped.
fn own_buffer(st: &ThreadState) -> *mut buffer::Buffer {
    let mut b = st.buffer.get();
    if b.is_null() {
        let _busy = st.enter();
        b = buffer::acquire();
        if b.is_null() {
            return b;
        }
        st.buffer.set(b);
        let key = THREAD_KEY.load(Ordering::Relaxed);
        if key != u64::MAX {
            // SAFETY: the key was created by init; setspecific only stores.
            unsafe { libc::pthread_setspecific(key as libc::pthread_key_t, b.cast()) };
        }
    }
    b
}

/// After a record went into this thread's buffer `b` (`full`: it began a
/// new chunk, or was dropped): drains, or wakes the dumper, when it is
/// time.
fn pushed(b: *mut buffer::Buffer, full: bool) {
    let backlog = || {
        // SAFETY: this thread owns `b` (its own buffer).
        unsafe { buffer::backlog(b) }
    };
    let self_drain = SELF_DRAIN.load(Ordering::Relaxed);
    if (full && (self_drain || (BACKLOG_DRAIN.load(Ordering::Relaxed) && backlog() >= BACKLOG)))
        || (self_drain
            && DRAIN_WANTED.load(Ordering::Relaxed)
            && DRAIN_WANTED.swap(false, Ordering::Relaxed))
    {
        aggregate::try_drain();
    } else if full && backlog() >= BACKLOG && !DRAIN_ASKED.swap(true, Ordering::AcqRel) {
        waiter::wake();
    }
}

/// pthread key destructor: the thread is exiting, give its buffer back. Runs
/// before some other TLS destructors; a later record simply acquires again.
extern "C" fn thread_exit(b: *mut libc::c_void) {
    let st = crate::engine::thread_state::current();
    if st.buffer.get() == b.cast() {
        st.buffer.set(core::ptr::null_mut());
    }
    // SAFETY: the value stored under the key is the buffer this thread owns,
    // and it no longer writes into it (its state now points elsewhere).
    unsafe { buffer::release(b.cast()) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_is_owned_until_freed_and_its_memory_reused() {
        let _turn = sample_heap::tests::SERIAL
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let st = ThreadState::new();
        let p = alloc_sample(&st, 200, 16, true, 0);
        assert!(!p.is_null() && owns(p));
        assert!(sample_usable_size(p) >= 200);
        free_sample(&st, p);
        let q = alloc_sample(&st, 200, 16, false, 0);
        assert_eq!(p, q, "a freed slot is the next one handed out");
        free_sample(&st, q);
        let local = 0u64;
        assert!(!owns(&local as *const u64 as *const u8));
    }
}

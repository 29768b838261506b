//! The engine both ways in share: the sampling decision, the sampled path and
//! the matching of frees to samples.
//!
//! A way in (the `#[global_allocator]` wrapper or the LD_PRELOAD hooks) keeps
//! the hot paths itself, inline:
//! - allocation: `if countdown > size { countdown -= size; inner alloc }`,
//!   otherwise [`should_sample`] decides; a sampled object is allocated
//!   page-aligned and passed to [`record_alloc_from`];
//! - free: `if ptr & 4095 != 0 { inner free }`, otherwise [`release`] says
//!   whether it was a sample (and records its free).
//!
//! Everything here runs only on those rare slow paths. It takes no lock, makes
//! no allocation through the profiled allocator (the thread is marked busy
//! while heapprof's own code runs, see [`crate::thread_state`]) and never
//! prints or panics.

pub(crate) mod aggregate;
pub(crate) mod buffer;
pub mod labels;
pub(crate) mod live_table;
pub(crate) mod record;
pub mod sampler;
pub(crate) mod stack;
pub(crate) mod stack_table;
pub mod thread_state;

use core::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};

use crate::live_table::LiveTable;
use crate::sampler::{Rng, DEFAULT_RATE};
use crate::thread_state::ThreadState;

static RATE: AtomicU64 = AtomicU64::new(DEFAULT_RATE);
static RATE_SET_BY_CODE: AtomicBool = AtomicBool::new(false);
static SEED: AtomicU64 = AtomicU64::new(0);
static THREADS: AtomicU64 = AtomicU64::new(0);
static NEXT_ID: AtomicU64 = AtomicU64::new(1);
static LIVE: LiveTable = LiveTable::new();

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
    let st = crate::thread_state::current();
    if !st.is_busy() {
        st.countdown.set(0);
    }
}

/// Fixes the sampler seed for threads that start sampling from now on (and
/// restarts the calling thread's stream).
pub fn set_seed(seed: u64) {
    SEED.store(seed, Ordering::Relaxed);
    THREADS.store(0, Ordering::Relaxed);
    let st = crate::thread_state::current();
    if !st.is_busy() {
        st.started.set(false);
        st.countdown.set(0);
    }
}

/// Monotonic time at which profiling started.
pub fn start_mono_ns() -> u64 {
    START_MONO_NS.load(Ordering::Relaxed)
}

/// Whether [`init`] has completed.
#[inline]
pub fn initialized() -> bool {
    INIT.load(Ordering::Acquire) == DONE
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
    let st = crate::thread_state::current();
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
    stack::warm_up();
    INIT.store(DONE, Ordering::Release);
    true
}

/// Decides whether an allocation of `size` bytes is sampled. Call only when
/// the thread's countdown is not greater than `size` (the hot path handles
/// the rest). Updates the countdown.
#[cold]
#[inline(never)]
pub fn should_sample(st: &ThreadState, size: usize) -> bool {
    if st.is_busy() {
        st.countdown.set(usize::MAX);
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
            st.countdown.set(RECHECK_WHEN_OFF);
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
                st.countdown.set(c - size);
                false
            } else {
                st.countdown.set(sampler::next_interval(&mut rng, rate));
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
    st.started.set(true);
}

/// Records a sampled allocation of `size` requested bytes at `ptr` (which the
/// way in allocated page-aligned). Captures the stack first, before touching
/// anything shared. `hook_marker` is the address of a local variable in the
/// way in's hook frame (a function never inlined into its caller), so the
/// stack starts at the program's call into the allocator; 0 keeps every
/// frame (see [`crate::stack`]).
#[inline(never)]
pub fn record_alloc_from(st: &ThreadState, ptr: *mut u8, size: usize, hook_marker: usize) {
    let tag = st.tag.get();
    let labels = st.labels.get();
    let _busy = st.enter();
    let mut rec = [0u64; record::MAX_WORDS];
    let n = stack::capture(&mut rec[record::ALLOC_HEADER..], hook_marker);
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let rate = if tag != 0 { 1 } else { rate().max(1) };
    let now = crate::os::monotonic_ns();
    let words = record::alloc(&mut rec, n, id, size as u64, rate, now, tag, labels);
    push(st, words);
    // The record is published before the address, so a free that finds the
    // address always finds the sample's record somewhere (maybe not drained).
    LIVE.insert(ptr as usize, id);
    // Before the program sees the address (see NOT_SAMPLED).
    let slot = filter_slot(ptr as usize);
    if slot.load(Ordering::Relaxed) == ptr as usize {
        slot.store(0, Ordering::Relaxed);
    }
}

/// Page-aligned addresses recently found *not* to be samples.
///
/// Why: a freed sample's page-aligned block goes back to the allocator,
/// which hands it out again at once (glibc's per-thread cache is LIFO), now
/// unsampled; a program that churns that size class then frees the same
/// page-aligned address over and over, and every such free would search the
/// live-sample table (measured on CPython under the preload library at the
/// default rate: ~190k such frees in a 0.9 s run, ~0.4 µs each when the
/// table is out of cache). The filter makes the repeat a load and a compare.
///
/// Why it is exact: a slot holds `p` only if some thread found `p` not to be
/// a sample and stored it before freeing (or keeping) the block;
/// [`record_alloc_from`] clears the slot of every new sample before the
/// program can see its address. A thread freeing `p` obtained it from the
/// allocation that made it (through the program's own synchronisation, and
/// the allocator's own if the block was reused), so it sees that clear or a
/// later store, and a later store of `p` can only come from a free that
/// found `p` unsampled. Relaxed atomics suffice: every order needed comes
/// with those happens-before edges.
const FILTER_SLOTS: usize = 4096;
static NOT_SAMPLED: [AtomicUsize; FILTER_SLOTS] = [const { AtomicUsize::new(0) }; FILTER_SLOTS];

#[inline(always)]
fn filter_slot(addr: usize) -> &'static AtomicUsize {
    // Page numbers, mixed (Fibonacci hashing) into FILTER_SLOTS buckets.
    let h = ((addr >> 12) as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 52;
    &NOT_SAMPLED[h as usize % FILTER_SLOTS]
}

/// Called for a page-aligned pointer about to be freed (or moved): if it is
/// a live sample, records its free and returns true (the way in must then
/// free it with the page-aligned layout it was allocated with).
#[inline(never)]
pub fn release(st: &ThreadState, ptr: *mut u8) -> bool {
    let addr = ptr as usize;
    let slot = filter_slot(addr);
    if slot.load(Ordering::Relaxed) == addr {
        return false;
    }
    match LIVE.remove(addr) {
        Some(id) => {
            push(st, &record::free(id));
            true
        }
        None => {
            // Before the block goes back to the allocator (see NOT_SAMPLED).
            slot.store(addr, Ordering::Relaxed);
            false
        }
    }
}

/// Whether `ptr` is a live sample (without releasing it).
pub fn is_sampled(ptr: *mut u8) -> bool {
    let addr = ptr as usize;
    addr & (crate::os::PAGE - 1) == 0
        && filter_slot(addr).load(Ordering::Relaxed) != addr
        && LIVE.contains(addr)
}

fn push(st: &ThreadState, words: &[u64]) {
    let mut b = st.buffer.get();
    if b.is_null() {
        let _busy = st.enter();
        b = buffer::acquire();
        if b.is_null() {
            return;
        }
        st.buffer.set(b);
        let key = THREAD_KEY.load(Ordering::Relaxed);
        if key != u64::MAX {
            // SAFETY: the key was created by init; setspecific only stores.
            unsafe { libc::pthread_setspecific(key as libc::pthread_key_t, b.cast()) };
        }
    }
    // SAFETY: this thread owns `b` (acquired above or earlier by this thread)
    // and records are at most MAX_WORDS, far below a chunk.
    unsafe { buffer::push(b, words) };
}

/// pthread key destructor: the thread is exiting, give its buffer back. Runs
/// before some other TLS destructors; a later record simply acquires again.
extern "C" fn thread_exit(b: *mut libc::c_void) {
    let st = crate::thread_state::current();
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
    fn the_not_sampled_filter_never_hides_a_later_sample() {
        let st = ThreadState::new();
        let addr = 0x7f00_dead_0000usize;
        assert!(!release(&st, addr as *mut u8));
        assert!(!release(&st, addr as *mut u8), "filtered miss");
        assert!(!is_sampled(addr as *mut u8));
        // The same address becomes a sample (as when the allocator hands
        // the block back and this time it is sampled).
        record_alloc_from(&st, addr as *mut u8, 64, 0);
        assert!(is_sampled(addr as *mut u8), "the filter must not hide it");
        assert!(release(&st, addr as *mut u8), "the cache must not hide it");
        assert!(!release(&st, addr as *mut u8));
    }
}

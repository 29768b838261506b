//! Per-thread state: the sampling countdown, the re-entrancy guard and the
//! thread's record buffer.
//!
//! The state is plain `Cell`s whose all-zero bit pattern is the initial state
//! and which has no `Drop`: it can live in any thread-local storage, including
//! the initial-exec TLS block of the LD_PRELOAD library (where Rust's
//! `thread_local!` could call `__tls_get_addr`, which may allocate), and it
//! stays valid while the thread's TLS destructors run.
//!
//! The countdown the hot paths subtract from never exceeds
//! [`crate::engine::LARGE`] once the slow path has set it: the rest of the
//! thread's countdown waits in `reserve` and refills it when it runs out,
//! so every allocation of that size or more reaches the slow path, at no
//! cost to the hot paths (see [`crate::engine::should_sample`]).
//!
//! Re-entrancy: while heapprof itself runs on a thread (capturing a stack,
//! symbolizing, writing a profile), the thread is *busy*. Entering that state
//! parks the sampling countdown at `usize::MAX`, so the allocations heapprof
//! makes take the unsampled hot path to the inner allocator without any extra
//! check there, and restores it on leaving.

use core::cell::Cell;
use core::sync::atomic::{AtomicPtr, Ordering};

use crate::engine::buffer::Buffer;

/// One thread's profiler state. All zeros is the initial state.
///
/// # The countdown's states
/// Every hot path (both ways in; the preload library's x86-64 `malloc` in
/// three instructions: `sub size, countdown; jbe slow`) subtracts the
/// allocation's size from `countdown` and goes on to the inner allocator
/// unless that borrows or reaches 0. What the value means:
///
/// ```text
///   countdown            meaning                          who sets it
///   ---------            -------                          -----------
///   0                    decide in the slow path          the initial state; a rate
///                        (nothing drawn yet)              change; a dropped reserve
///   1 ..= LARGE          bytes until the next sample;     the slow path (set_countdown),
///                        the rest waits in `reserve`      after the way in was ready
///   RECHECK_WHEN_OFF     sampling is off: look at the     the slow path, rate 0
///   (64 MiB, split too)  rate again after that many bytes
///   usize::MAX           busy: heapprof's own work runs   enter(); the saved value
///                        here, never sampled              returns on leaving
/// ```
///
/// - **Nonzero implies ready.** Only a slow path that found the way in
///   ready (the preload library: the real allocator resolved) sets a
///   nonzero countdown, and the busy state exists only once the engine
///   runs: so a hot path that did not branch to the slow path may call the
///   inner allocator without checking. The preload library's `// SAFETY:`
///   comments on its forwards rely on this.
/// - **Consume, then give back.** The in-memory subtraction happens before
///   the test ([`ThreadState::consume`]); a slow path reached that way
///   first adds the size back ([`ThreadState::unconsume`]) before anything
///   reads the countdown.
/// - **Large allocations always reach the slow path**: the hot countdown
///   never exceeds [`crate::engine::LARGE`]; [`ThreadState::refill`] moves
///   the reserve in when the hot part runs out.
#[repr(C)]
pub struct ThreadState {
    /// Bytes until the next sample; 0 means "decide in the slow path".
    pub(crate) countdown: Cell<usize>,
    /// The countdown saved while the thread is busy inside heapprof.
    pub(crate) saved_countdown: Cell<usize>,
    /// Sampler state ([`crate::engine::sampler::Rng`]); 0 until the thread starts.
    pub(crate) rng: Cell<u64>,
    /// Nesting depth of heapprof's own work on this thread.
    pub(crate) busy: Cell<u32>,
    /// Whether the thread has drawn its first countdown.
    pub(crate) started: Cell<bool>,
    /// The current label set ([`crate::engine::labels`]; 0: none). Read only
    /// by the sampled path, never by the hot paths.
    pub(crate) labels: Cell<u32>,
    /// A leak-check session recording every allocation of this thread (0: none).
    pub(crate) tag: Cell<u64>,
    /// This thread's record buffer, acquired on its first record.
    pub(crate) buffer: Cell<*mut Buffer>,
    /// Bytes of the sampling countdown held back from `countdown`, which
    /// never exceeds [`crate::engine::LARGE`] after the slow path set it:
    /// the thread's real countdown is `countdown + reserve` (while
    /// `countdown` is nonzero; a countdown reset to 0 drops the reserve).
    pub(crate) reserve: Cell<usize>,
}

/// Where the countdown lies in a [`ThreadState`] (the preload library's
/// hand-written hot paths read it there).
pub const COUNTDOWN_OFFSET: usize = core::mem::offset_of!(ThreadState, countdown);

/// Size the C side of the preload library reserves for a [`ThreadState`].
pub const THREAD_STATE_BYTES: usize = 64;
const _: () = assert!(core::mem::size_of::<ThreadState>() <= THREAD_STATE_BYTES);

impl ThreadState {
    /// The initial state (all zeros).
    pub const fn new() -> ThreadState {
        ThreadState {
            countdown: Cell::new(0),
            saved_countdown: Cell::new(0),
            rng: Cell::new(0),
            busy: Cell::new(0),
            started: Cell::new(false),
            labels: Cell::new(0),
            tag: Cell::new(0),
            buffer: Cell::new(core::ptr::null_mut()),
            reserve: Cell::new(0),
        }
    }

    /// The hot path: if the countdown outlasts `size` bytes, consume them and
    /// return true (not sampled, no further work). Otherwise return false and
    /// let [`crate::engine::should_sample`] decide.
    #[inline(always)]
    pub fn skip(&self, size: usize) -> bool {
        let c = self.countdown.get();
        if c > size {
            self.countdown.set(c - size);
            true
        } else {
            false
        }
    }

    /// [`skip`](Self::skip) in three instructions (`sub size, countdown;
    /// jbe slow`, the countdown subtracted in memory): the countdown is
    /// decremented even when it does not outlast `size`, and then the slow
    /// path must call [`unconsume`](Self::unconsume) with the same `size`
    /// before anything else reads it.
    #[inline(always)]
    pub fn consume(&self, size: usize) -> bool {
        let (c, borrow) = self.countdown.get().overflowing_sub(size);
        self.countdown.set(c);
        !borrow && c != 0
    }

    /// Undoes a [`consume`](Self::consume) of `size` that returned false.
    #[inline(always)]
    pub fn unconsume(&self, size: usize) {
        self.countdown.set(self.countdown.get().wrapping_add(size));
    }

    /// The slow path's first step after a hot path ran the countdown out
    /// for `size` bytes: if the reserve outlasts what remains (see
    /// [`crate::engine::LARGE`]), the allocation is not sampled, and the
    /// countdown is refilled from the reserve (true). Otherwise false, with
    /// the reserve folded back into the countdown (or dropped, if the
    /// countdown was reset to 0), for [`crate::engine::should_sample`].
    #[inline(always)]
    pub fn refill(&self, size: usize) -> bool {
        let reserve = self.reserve.get();
        if reserve == 0 || self.is_busy() {
            return false;
        }
        self.reserve.set(0);
        let hot = self.countdown.get();
        if hot == 0 {
            return false;
        }
        let c = hot.saturating_add(reserve);
        if c > size {
            self.set_countdown(c - size);
            return true;
        }
        self.countdown.set(c);
        false
    }

    /// Sets the real countdown to `c` (nonzero): at most
    /// [`crate::engine::LARGE`] of it where the hot paths subtract, the
    /// rest in reserve.
    #[inline(always)]
    pub(crate) fn set_countdown(&self, c: usize) {
        let hot = c.min(crate::engine::LARGE);
        self.countdown.set(hot);
        self.reserve.set(c - hot);
    }

    /// Whether heapprof's own work is running on this thread.
    pub fn is_busy(&self) -> bool {
        self.busy.get() != 0
    }

    /// Marks the thread busy until the guard drops (nests).
    pub fn enter(&self) -> BusyGuard<'_> {
        let depth = self.busy.get();
        if depth == 0 {
            self.saved_countdown.set(self.countdown.get());
            self.countdown.set(usize::MAX);
        }
        self.busy.set(depth + 1);
        BusyGuard { state: self }
    }

    /// Marks the thread busy for good (heapprof's own threads).
    pub fn enter_forever(&self) {
        core::mem::forget(self.enter());
    }
}

impl Default for ThreadState {
    fn default() -> Self {
        Self::new()
    }
}

/// Leaves the busy state of a thread when dropped.
pub struct BusyGuard<'a> {
    state: &'a ThreadState,
}

impl<'a> BusyGuard<'a> {
    /// Takes over one level of busy state entered earlier and forgotten
    /// (as across the two halves of a fork handler).
    pub fn adopt(state: &'a ThreadState) -> BusyGuard<'a> {
        BusyGuard { state }
    }
}

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        let depth = self.state.busy.get() - 1;
        self.state.busy.set(depth);
        if depth == 0 {
            self.state.countdown.set(self.state.saved_countdown.get());
        }
    }
}

/// How a way in (the Rust allocator or the preload library) finds the calling
/// thread's state. Returns a pointer valid for the calling thread's lifetime.
pub type StateFn = fn() -> *const ThreadState;

std::thread_local! {
    static RUST_STATE: ThreadState = const { ThreadState::new() };
}

/// The state in Rust's own thread-local storage (for the `#[global_allocator]`
/// way in, where the TLS lives in the executable and needs no allocation).
#[inline(always)]
pub fn rust_tls_state() -> *const ThreadState {
    RUST_STATE.with(|s| s as *const ThreadState)
}

static STATE_FN: AtomicPtr<()> = AtomicPtr::new(rust_tls_state as *mut ());

/// Chooses where thread state lives; the preload library calls this from its
/// constructor, before any thread but the main one exists.
pub fn set_state_fn(f: StateFn) {
    STATE_FN.store(f as *mut (), Ordering::Release);
}

/// The calling thread's state, wherever the way in keeps it.
pub fn current() -> &'static ThreadState {
    let p = STATE_FN.load(Ordering::Acquire);
    // SAFETY: STATE_FN only ever holds a `StateFn` (initialised with one and
    // written only by `set_state_fn`), so transmuting back is sound.
    let f: StateFn = unsafe { core::mem::transmute::<*mut (), StateFn>(p) };
    // SAFETY: a StateFn returns a pointer to the calling thread's state, which
    // lives as long as the thread; callers use it only on this thread.
    unsafe { &*f() }
}

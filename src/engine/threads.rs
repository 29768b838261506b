//! The thread registry: every live thread created through `pthread_create`,
//! with the stack that created it — the native analogue of Go's goroutine
//! profile.
//!
//! # Model
//! A way in interposes `pthread_create` (the preload library always; a Rust
//! executable with the `threads` feature, see `crate::thread_hook`). Its
//! hook calls [`register`], which captures the creating stack (every
//! creation: threads are rare next to allocations, so nothing is sampled),
//! takes a slot and fills it, and returns a pointer to the slot. The hook
//! then calls the real `pthread_create` with [`trampoline`] as the start
//! routine and the slot as its argument; the slot carries the program's own
//! start routine and argument. If the real call fails, [`abandon`] gives the
//! slot back.
//!
//! The new thread runs [`trampoline`], which stores its kernel thread id in
//! the slot (its name is read from `/proc/self/task/TID/comm` when a profile
//! is written, so names set later with `pthread_setname_np` or `prctl` are
//! seen) and its `pthread_self` (for `fork`, below), then runs the
//! program's start routine inside a pthread cancellation cleanup handler
//! (`pthread_cleanup_push`, in `thread_start.c`: its `sigsetjmp` returns
//! twice, which Rust cannot write). The handler forgets the thread, on
//! every way the thread ends, for joinable and detached threads alike:
//! - the start routine returns: the handler is popped and run;
//! - `pthread_exit` or cancellation: both unwind the thread's stack with
//!   glibc's forced unwinder, which jumps back into the handler's frame as
//!   it passes it (after the handlers the program pushed itself, inner C++
//!   destructors included), then unwinds on to glibc's thread start.
//!
//! So neither `pthread_exit` nor `pthread_cancel` needs interposing, and the
//! thread's exit sets no pthread key (glibc's key-destructor pass at exit,
//! which is about half as costly as creating the thread, is skipped for
//! threads that never set one). A thread is counted from just before the
//! real `pthread_create` to the moment its start routine is left; its TLS
//! destructors, key destructors and stack release come after.
//!
//! Limits: a start routine that leaves by `longjmp` to a buffer set outside
//! it (undefined behaviour in C) is not seen leaving; unwinding needs
//! `libgcc_s`, which glibc itself needs for `pthread_exit`.
//!
//! # Memory and concurrency
//! Slots live in memory heapprof maps itself, in tiers that double in size
//! and are never unmapped (like `engine::live_table`), so a reader can
//! always touch any slot it has heard of. Free slots form a lock-free stack
//! (a Treiber stack whose head carries a generation count against ABA);
//! fresh slots come from a bump counter. Nothing on these paths locks,
//! allocates through the profiled allocator, prints or panics.
//!
//! Each slot has a seqlock-style `state` word, `generation << 2 | phase`:
//! the creating thread moves a slot it owns to WRITING (new generation),
//! writes the fields, then publishes LIVE; the exiting thread sets FREE.
//! A reader ([`snapshot`], off the hook paths) copies a LIVE slot and keeps
//! the copy only if the state word is unchanged afterwards.
//!
//! After `fork` only the forking thread exists in the child: a
//! `pthread_atfork` child handler forgets every other thread and rebuilds
//! the free list.
//!
//! # Stack reservation
//! Each thread's stack size, from its attributes (`pthread_attr_getstacksize`)
//! or, for threads created without attributes, glibc's default
//! (`pthread_getattr_default_np`, read when tracking starts: honours
//! `RLIMIT_STACK`, 8 MiB by default). glibc maps that much (plus a guard
//! page) with `mmap`, so it never shows in a heap profile.

use core::ffi::{c_int, c_void};
use core::mem::MaybeUninit;
use core::sync::atomic::{fence, AtomicPtr, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};

use crate::engine::tagged_stack::TaggedStack;
use crate::engine::thread_state::ThreadState;
use crate::os;

/// Frames kept per creation stack. Deeper stacks keep their innermost frames.
pub const MAX_THREAD_FRAMES: usize = 64;

const FREE: u64 = 0;
const WRITING: u64 = 1;
const LIVE: u64 = 2;
const PHASE: u64 = 3;

#[repr(C)]
struct Slot {
    /// `generation << 2 | phase`.
    state: AtomicU64,
    /// Next free slot (index + 1; 0: none) while on the free list.
    next_free: AtomicU32,
    /// This slot's own index, stored when it is taken (for `release`).
    index: AtomicU32,
    /// Kernel thread id, set by the thread when it starts (0 before).
    tid: AtomicU32,
    /// The thread's `pthread_self`, set with `tid` (0 before): the one
    /// identity that survives `fork` in the child.
    thread: AtomicUsize,
    nframes: AtomicU32,
    created_mono_ns: AtomicU64,
    stack_bytes: AtomicU64,
    /// The program's start routine and argument, for the trampoline.
    start: AtomicUsize,
    arg: AtomicUsize,
    frames: [AtomicU64; MAX_THREAD_FRAMES],
}

const FIRST_TIER_SLOTS: usize = 64;
const MAX_TIERS: usize = 20;

/// Slots of every tier, in index order: tier `k` holds indices
/// `FIRST * (2^k - 1) .. FIRST * (2^(k+1) - 1)`.
static TIERS: [AtomicPtr<Slot>; MAX_TIERS] =
    [const { AtomicPtr::new(core::ptr::null_mut()) }; MAX_TIERS];
/// Slots ever handed out from the tiers (indices below it may be in use).
static FRESH: AtomicU32 = AtomicU32::new(0);
/// The free slots (see [`crate::engine::tagged_stack`]).
static FREE_SLOTS: TaggedStack = TaggedStack::new();
/// Threads created while the registry could not take them (no memory).
static UNTRACKED: AtomicU64 = AtomicU64::new(0);
/// Threads ever registered.
static CREATED: AtomicU64 = AtomicU64::new(0);

const OFF: u8 = 0;
const STARTING: u8 = 1;
const ON: u8 = 2;
static ENABLED: AtomicU8 = AtomicU8::new(OFF);
/// glibc's default stack size for threads created without attributes.
static DEFAULT_STACK: AtomicU64 = AtomicU64::new(8 << 20);

fn tier_of(index: usize) -> (usize, usize) {
    let q = index / FIRST_TIER_SLOTS + 1;
    let k = (usize::BITS - 1 - q.leading_zeros()) as usize;
    (k, index - FIRST_TIER_SLOTS * ((1 << k) - 1))
}

fn tier_bytes(k: usize) -> usize {
    (FIRST_TIER_SLOTS << k) * core::mem::size_of::<Slot>()
}

/// The slot at `index`, if its tier is mapped.
fn slot(index: usize) -> Option<&'static Slot> {
    let (k, off) = tier_of(index);
    let base = TIERS.get(k)?.load(Ordering::Acquire);
    // SAFETY: a mapped tier holds FIRST << k slots, off is below that, and
    // tiers are never unmapped; all-zero is a valid (FREE) slot.
    (!base.is_null()).then(|| unsafe { &*base.add(off) })
}

/// A never-used slot from the tiers, mapping a new tier if needed.
fn fresh() -> Option<u32> {
    let index = FRESH.fetch_add(1, Ordering::Relaxed) as usize;
    let (k, _) = tier_of(index);
    if k >= MAX_TIERS {
        return None;
    }
    if TIERS[k].load(Ordering::Acquire).is_null() {
        let mem = os::map(tier_bytes(k)).cast::<Slot>();
        if mem.is_null() {
            return None;
        }
        if TIERS[k]
            .compare_exchange(
                core::ptr::null_mut(),
                mem,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_err()
        {
            // SAFETY: our mapping was never published.
            unsafe { os::unmap(mem.cast(), tier_bytes(k)) };
        }
    }
    Some(index as u32)
}

/// A free slot's index, or a fresh one.
fn pop() -> Option<u32> {
    // Slots are never unmapped: reading a stale `next_free` is harmless (see
    // `engine::tagged_stack`).
    FREE_SLOTS
        .pop(|i| slot(i).map(|s| s.next_free.load(Ordering::Relaxed)))
        .map(|i| i as u32)
        .or_else(fresh)
}

fn push(index: u32, s: &Slot) {
    FREE_SLOTS.push(index as usize, |v| s.next_free.store(v, Ordering::Relaxed));
}

/// Sets the slot FREE (next generation) and puts it on the free list.
fn release(s: &Slot) {
    let g = s.state.load(Ordering::Relaxed) >> 2;
    s.state.store((g + 1) << 2 | FREE, Ordering::Release);
    push(s.index.load(Ordering::Relaxed), s);
}

/// Turns tracking on: the fork handler, the default stack size.
/// Idempotent; returns whether tracking is on. A thread arriving while
/// another is still here gets false (its thread goes untracked) rather than
/// waiting. Safe from a hook (allocations it makes go to the real allocator
/// in both ways in: libc's `pthread_atfork` and `dlsym` reach a Rust
/// program's `malloc`, not its global allocator).
pub fn enable() -> bool {
    match ENABLED.compare_exchange(OFF, STARTING, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => {}
        Err(s) => return s == ON,
    }
    if let Some(n) = default_stack_size() {
        DEFAULT_STACK.store(n, Ordering::Relaxed);
    }
    // SAFETY: registering a plain extern "C" function for the whole process.
    unsafe { libc::pthread_atfork(None, None, Some(fork_child)) };
    ENABLED.store(ON, Ordering::Release);
    true
}

/// Whether threads are being tracked.
#[inline]
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Acquire) == ON
}

extern "C" {
    // glibc >= 2.18; not in the libc crate.
    fn pthread_getattr_default_np(attr: *mut libc::pthread_attr_t) -> c_int;
}

fn default_stack_size() -> Option<u64> {
    // SAFETY: the attr is initialised by pthread_getattr_default_np before
    // it is read and destroyed afterwards.
    unsafe {
        let mut attr: libc::pthread_attr_t = core::mem::zeroed();
        if pthread_getattr_default_np(&mut attr) != 0 {
            return None;
        }
        let mut size = 0usize;
        let rc = libc::pthread_attr_getstacksize(&attr, &mut size);
        libc::pthread_attr_destroy(&mut attr);
        (rc == 0 && size > 0).then_some(size as u64)
    }
}

/// The start routine type of `pthread_create`, callable with unwinding
/// allowed (cancellation and `pthread_exit` unwind through it).
pub type StartRoutine = unsafe extern "C-unwind" fn(*mut c_void) -> *mut c_void;

/// Records a thread about to be created with `attr` (may be null) to run
/// `start(arg)`, capturing the calling stack. `hook_marker` is the address
/// of a local in the way in's `pthread_create` frame, into which this is
/// always inlined, so the hook's is the only frame of heapprof's above the
/// capture (see `engine::stack`). Returns the record to pass to the real
/// `pthread_create` as the argument of [`trampoline`], or null when the
/// thread is not tracked (tracking off, the caller is heapprof itself, or no
/// memory for the registry): then call the real function with the
/// program's own `start` and `arg`.
///
/// # Safety
/// `attr` is null or an initialised attribute object.
#[inline(always)]
pub unsafe fn register(
    st: &ThreadState,
    attr: *const libc::pthread_attr_t,
    start: usize,
    arg: usize,
    hook_marker: usize,
) -> *mut c_void {
    if !enabled() || st.is_busy() {
        return core::ptr::null_mut();
    }
    let _busy = st.enter();
    let mut frames = [MaybeUninit::<u64>::uninit(); MAX_THREAD_FRAMES];
    let n = crate::engine::stack::capture_in_hook(&mut frames, hook_marker);
    let Some(index) = pop() else {
        UNTRACKED.fetch_add(1, Ordering::Relaxed);
        return core::ptr::null_mut();
    };
    let Some(s) = slot(index as usize) else {
        UNTRACKED.fetch_add(1, Ordering::Relaxed);
        return core::ptr::null_mut();
    };
    let mut stack = 0usize;
    // SAFETY: a non-null attr is initialised (contract).
    if attr.is_null() || unsafe { libc::pthread_attr_getstacksize(attr, &mut stack) } != 0 {
        stack = DEFAULT_STACK.load(Ordering::Relaxed) as usize;
    }
    let g = s.state.load(Ordering::Relaxed) >> 2;
    s.state.store((g + 1) << 2 | WRITING, Ordering::Relaxed);
    fence(Ordering::Release);
    s.index.store(index, Ordering::Relaxed);
    s.tid.store(0, Ordering::Relaxed);
    s.thread.store(0, Ordering::Relaxed);
    s.nframes.store(n as u32, Ordering::Relaxed);
    for (d, f) in s.frames.iter().zip(&frames[..n]) {
        // SAFETY: capture_in_hook initialised the first n.
        d.store(unsafe { f.assume_init() }, Ordering::Relaxed);
    }
    s.created_mono_ns
        .store(os::monotonic_ns(), Ordering::Relaxed);
    s.stack_bytes.store(stack as u64, Ordering::Relaxed);
    s.start.store(start, Ordering::Relaxed);
    s.arg.store(arg, Ordering::Relaxed);
    s.state.store((g + 1) << 2 | LIVE, Ordering::Release);
    CREATED.fetch_add(1, Ordering::Relaxed);
    (s as *const Slot).cast_mut().cast()
}

/// The signature of `pthread_create`, for the next definition a way in
/// forwards to.
pub type CreateFn = unsafe extern "C" fn(
    *mut libc::pthread_t,
    *const libc::pthread_attr_t,
    StartRoutine,
    *mut c_void,
) -> c_int;

/// The body of a way in's `pthread_create` hook: [`register`] the thread,
/// create it with `real` running [`trampoline`] (or, untracked, the
/// program's own `start`), and [`abandon`] the record if creation fails.
/// Always inlined into the hook, like [`register`], whose frame
/// `hook_marker` lies in.
///
/// # Safety
/// As C's `pthread_create`; `real` is the next `pthread_create`.
#[inline(always)]
pub unsafe fn create(
    real: CreateFn,
    st: &ThreadState,
    thread: *mut libc::pthread_t,
    attr: *const libc::pthread_attr_t,
    start: StartRoutine,
    arg: *mut c_void,
    hook_marker: usize,
) -> c_int {
    // SAFETY: `attr` is null or initialised (pthread_create's contract).
    let record = unsafe { register(st, attr, start as usize, arg as usize, hook_marker) };
    if record.is_null() {
        // SAFETY: forwarding the caller's arguments.
        return unsafe { real(thread, attr, start, arg) };
    }
    // SAFETY: the trampoline runs `start(arg)` from the record.
    let rc = unsafe { real(thread, attr, trampoline, record) };
    if rc != 0 {
        // SAFETY: no thread received the record.
        unsafe { abandon(record) };
    }
    rc
}

/// Forgets a registered thread whose creation failed.
///
/// # Safety
/// `record` came from [`register`] and was not passed to a thread.
pub unsafe fn abandon(record: *mut c_void) {
    // SAFETY: a record is a slot of a tier (contract), never unmapped.
    release(unsafe { &*record.cast::<Slot>() });
}

extern "C-unwind" {
    /// `thread_start.c`: runs `start(arg)` and returns its result, calling
    /// `end(record)` however the thread leaves it (return, `pthread_exit`,
    /// cancellation).
    fn heapprof_thread_run(
        start: StartRoutine,
        arg: *mut c_void,
        end: extern "C" fn(*mut c_void),
        record: *mut c_void,
    ) -> *mut c_void;
}

/// The start routine heapprof passes to the real `pthread_create`: notes
/// the thread's identity and runs the program's routine with its argument
/// under the cleanup handler that forgets the thread. Holds nothing that
/// needs dropping across that call, so the forced unwinding of
/// cancellation and `pthread_exit` may pass.
///
/// # Safety
/// `record` came from [`register`] and is passed to exactly one thread.
pub unsafe extern "C-unwind" fn trampoline(record: *mut c_void) -> *mut c_void {
    // SAFETY: a record is a live slot (contract); pthread_create made the
    // creator's writes visible to this thread.
    let s = unsafe { &*record.cast::<Slot>() };
    let start = s.start.load(Ordering::Relaxed);
    let arg = s.arg.load(Ordering::Relaxed) as *mut c_void;
    // SAFETY: gettid and pthread_self have no preconditions.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) } as u32;
    s.tid.store(tid, Ordering::Relaxed);
    // SAFETY: as above.
    s.thread
        .store(unsafe { libc::pthread_self() } as usize, Ordering::Relaxed);
    // SAFETY: `start` is the program's start routine, of this type; it may
    // unwind (cancellation), which "C-unwind" permits.
    let f: StartRoutine = unsafe { core::mem::transmute::<usize, StartRoutine>(start) };
    // SAFETY: calling the program's start routine as pthread_create would;
    // `thread_end` gets this record once.
    unsafe { heapprof_thread_run(f, arg, thread_end, record) }
}

/// The cleanup handler: the thread is leaving its start routine (returned,
/// exited or cancelled).
extern "C" fn thread_end(record: *mut c_void) {
    // SAFETY: the trampoline passes its own slot record, exactly once.
    release(unsafe { &*record.cast::<Slot>() });
    let notice = END_NOTICE.load(Ordering::Acquire);
    if !notice.is_null() {
        // SAFETY: only ever set from a `fn()` by `set_end_notice`.
        unsafe { core::mem::transmute::<*mut (), fn()>(notice)() };
    }
}

/// What the cleanup handler calls after forgetting a thread (null: nothing).
static END_NOTICE: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());

/// Has `f` called each time a tracked thread ends, on that thread, after
/// its record is gone (control's `lifetime` watches for the program's
/// last thread). `f` keeps the hook rules: no lock, no allocation.
pub fn set_end_notice(f: fn()) {
    END_NOTICE.store(f as *mut (), Ordering::Release);
}

/// In a forked child only the forking thread exists: forget the others.
extern "C" fn fork_child() {
    super::sample_heap::after_fork_child();
    // SAFETY: pthread_self has no preconditions; it is the forking thread's
    // identity in the parent too.
    let mine = unsafe { libc::pthread_self() } as usize;
    // Single-threaded here: rebuild the free list from scratch.
    FREE_SLOTS.clear();
    let fresh = (FRESH.load(Ordering::Relaxed) as usize).min(slots_capacity());
    for i in (0..fresh).rev() {
        let Some(s) = slot(i) else { continue };
        let st = s.state.load(Ordering::Relaxed);
        let is_mine = s.thread.load(Ordering::Relaxed) == mine;
        if is_mine && st & PHASE == LIVE {
            continue;
        }
        if st & PHASE != FREE {
            s.state
                .store(((st >> 2) + 1) << 2 | FREE, Ordering::Relaxed);
        }
        push(i as u32, s);
    }
    FRESH.store(fresh as u32, Ordering::Relaxed);
}

fn slots_capacity() -> usize {
    FIRST_TIER_SLOTS * ((1 << MAX_TIERS) - 1)
}

/// One live thread, as [`snapshot`] copies it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveThread {
    /// The creating stack, innermost first (the caller of `pthread_create`).
    pub frames: Vec<u64>,
    /// Monotonic creation time.
    pub created_mono_ns: u64,
    /// The stack size it was created with.
    pub stack_bytes: u64,
    /// Kernel thread id; 0 if it has not started running yet.
    pub tid: u32,
}

/// Every live tracked thread (allocates: call off the hook paths).
pub fn snapshot() -> Vec<LiveThread> {
    let mut out = Vec::new();
    let fresh = (FRESH.load(Ordering::Acquire) as usize).min(slots_capacity());
    for i in 0..fresh {
        let Some(s) = slot(i) else { continue };
        let before = s.state.load(Ordering::Acquire);
        if before & PHASE != LIVE {
            continue;
        }
        let n = (s.nframes.load(Ordering::Relaxed) as usize).min(MAX_THREAD_FRAMES);
        let t = LiveThread {
            frames: s.frames[..n]
                .iter()
                .map(|f| f.load(Ordering::Relaxed))
                .collect(),
            created_mono_ns: s.created_mono_ns.load(Ordering::Relaxed),
            stack_bytes: s.stack_bytes.load(Ordering::Relaxed),
            tid: s.tid.load(Ordering::Relaxed),
        };
        fence(Ordering::Acquire);
        if s.state.load(Ordering::Relaxed) == before {
            out.push(t);
        }
    }
    out
}

/// How many tracked threads are live now (no allocation).
pub fn live_count() -> usize {
    let fresh = (FRESH.load(Ordering::Acquire) as usize).min(slots_capacity());
    (0..fresh)
        .filter_map(slot)
        .filter(|s| s.state.load(Ordering::Relaxed) & PHASE == LIVE)
        .count()
}

/// Threads registered since the process started.
pub fn created_count() -> u64 {
    CREATED.load(Ordering::Relaxed)
}

/// Threads that went untracked for lack of registry memory.
pub fn untracked_count() -> u64 {
    UNTRACKED.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers_cover_indices_without_gaps() {
        assert_eq!(tier_of(0), (0, 0));
        assert_eq!(tier_of(63), (0, 63));
        assert_eq!(tier_of(64), (1, 0));
        assert_eq!(tier_of(191), (1, 127));
        assert_eq!(tier_of(192), (2, 0));
        let mut next = 0;
        for k in 0..6 {
            let first = FIRST_TIER_SLOTS * ((1 << k) - 1);
            assert_eq!(first, next);
            assert_eq!(tier_of(first), (k, 0));
            next = first + (FIRST_TIER_SLOTS << k);
            assert_eq!(tier_of(next - 1), (k, (FIRST_TIER_SLOTS << k) - 1));
        }
    }

    fn state_of(record: usize) -> u64 {
        // SAFETY: records are slots, never unmapped.
        unsafe { &*(record as *const Slot) }
            .state
            .load(Ordering::Relaxed)
            & PHASE
    }

    /// The registry is process-wide: one test drives it through its whole
    /// life, from several threads at once. With the `threads` feature the
    /// test harness's own threads are tracked too, so counts over the whole
    /// registry are exact only without it.
    #[test]
    fn register_release_reuse_and_snapshot_under_concurrency() {
        let exact = !cfg!(feature = "threads");
        assert!(enable());
        let base = live_count();
        let st = ThreadState::new();
        // SAFETY: null attr; records are abandoned exactly once.
        let recs: Vec<usize> = (0..300)
            .map(|i| unsafe { register(&st, core::ptr::null(), 0x1000 + i, i, 0) } as usize)
            .collect();
        assert!(recs.iter().all(|&r| r != 0 && state_of(r) == LIVE));
        // SAFETY: as above.
        let s0 = unsafe { &*(recs[0] as *const Slot) };
        assert_eq!(s0.start.load(Ordering::Relaxed), 0x1000);
        assert_eq!(
            s0.stack_bytes.load(Ordering::Relaxed),
            DEFAULT_STACK.load(Ordering::Relaxed)
        );
        let snap = snapshot();
        assert!(snap.len() >= 300);
        assert!(snap.iter().all(|t| !t.frames.is_empty()));
        if exact {
            assert_eq!(live_count(), base + 300);
        }
        for &r in &recs {
            // SAFETY: each record once.
            unsafe { abandon(r as *mut c_void) };
        }
        assert!(recs.iter().all(|&r| state_of(r) == FREE));
        if exact {
            assert_eq!(live_count(), base);
        }
        let before = FRESH.load(Ordering::Relaxed);
        let hs: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(|| {
                    let st = ThreadState::new();
                    for round in 0..2000 {
                        // SAFETY: as above.
                        let r = unsafe { register(&st, core::ptr::null(), 1, round, 0) };
                        assert!(!r.is_null() && state_of(r as usize) == LIVE);
                        // SAFETY: as above.
                        unsafe { abandon(r) };
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        if exact {
            assert_eq!(live_count(), base);
            // Freed slots are reused: at most one per concurrent thread is new.
            assert!(FRESH.load(Ordering::Relaxed) <= before + 4);
        } else {
            assert!(FRESH.load(Ordering::Relaxed) <= before + 64);
        }
    }
}

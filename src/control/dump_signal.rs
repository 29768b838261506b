//! The dump signal and the program's threads: who receives it, and what the
//! program sees of heapprof's part in that.
//!
//! # Model
//! Linux delivers a process-directed signal (`kill -USR2 PID`) to the main
//! thread unless that thread blocks it, and then to any other thread that
//! does not. A handler running in a program thread interrupts whatever that
//! thread waits in: `SA_RESTART` restarts `read` and friends, but `sleep`,
//! `nanosleep`, `poll`, `epoll_wait`, `select` and socket calls with timeouts
//! come back early (or with `EINTR`). So heapprof keeps its signal out of the
//! program's threads:
//!
//! - **Hidden block.** When the handler is installed ([`take`]), the signal
//!   is blocked in the calling thread: under the preload library the main
//!   thread, in the constructor, before `main` and before other threads
//!   normally exist; in a Rust binary the thread of the first allocation,
//!   normally the main thread before `main`. Threads inherit the mask, so
//!   every thread the program creates blocks it too.
//! - **The dumper takes it.** heapprof's dumper thread (or, in a
//!   single-threaded program under the preload library, the watcher that
//!   stands in for it: [`crate::control::watcher`]) blocks every signal,
//!   except this one while it waits (the mask swapped around the wait):
//!   the signal is delivered there, its handler sets a bit and bumps the
//!   word the wait is on, and the wait returns. A signal arriving during a dump stays pending until the
//!   next wait (which is the coalescing the triggers want anyway), so a dump
//!   itself is never interrupted.
//! - **The handler stays the fallback**: a thread that unblocks the signal
//!   behind heapprof's back (a raw system call) still gets a dump, not death.
//!
//! What the program observes stays as bare, which needs interposition — the
//! preload library's `signals` module does it, with this module's state:
//! masks read back without the hidden signal ([`view`]), new masks keep it
//! blocked, temporary masks (`sigsuspend`, `ppoll`, …) keep it blocked, and
//! `exec`/`posix_spawn` children start with the mask the program would have
//! had. A program that shows it wants the signal — blocks it itself (not as
//! part of blocking everything), waits for it (`sigwait*`, `signalfd`) or
//! installs its own handler — gets it: heapprof *yields* ([`program_takes`]),
//! stops hiding it, the dumper blocks it too (so a process-directed signal
//! stays pending for the program's `sigwait`), and the dumper says so once.
//!
//! "Blocking everything" ([`blanket`]) is told apart from "blocking the
//! signal": code that blocks all signals around a critical section or a
//! `pthread_create` (glib does) does not want SIGUSR2, and a thread in such a
//! mask reads back with the signal in it.
//!
//! # The Rust way in
//! Nothing is interposed in a Rust binary, so the waits are as safe (the
//! block and the dumper need no interposition) but the block shows:
//! - the program's own `libc::pthread_sigmask` reads the signal as blocked;
//! - children inherit the block: `std::process::Command` (std, as of Rust
//!   1.95, spawns with `posix_spawn` without setting a mask, so the child
//!   starts with its parent thread's), and a C library's `system()`,
//!   `popen()` or `fork`+`exec`. A child that uses heapprof itself still
//!   dumps on the signal (its dumper takes a signal it finds blocked); one
//!   that relies on the signal's default action does not die of it. A
//!   program that cares can unblock it in `CommandExt::pre_exec`;
//! - a handler the program installs later runs on the dumper thread (the
//!   only one taking the signal): once per signal, as it would, but not on
//!   the main thread; the dumper says once that it no longer dumps on it;
//! - `sigwait` on the signal competes with the dumper (which then dumps);
//! - a thread-directed signal (`raise`, `pthread_kill`) to a program thread
//!   stays pending there: send it to the process (`kill`), or call
//!   `heapprof::dump()`.
//!
//! A start-up on another thread than the main one (the first allocation
//! made on a thread spawned before any other: not with std) would leave the
//! main thread exposed.
//!
//! # heapprof's own calls
//! Under the preload library `pthread_sigmask`, `sigaction` and `ppoll` are
//! the library's interposed versions, even when heapprof's own code calls
//! them. The library registers the real ones ([`set_real_calls`]) before
//! starting; this module's [`sigmask`], [`sigaction`] and [`ppoll`] use
//! those (libc's, in a Rust binary).
//!
//! Everything here is lock-free and allocation-free: the interposed
//! functions call it from any context, a forked child before `exec`
//! included. The one wait: a yield waits, once, up to 200 ms (normally a
//! context switch) for the dumper to leave a wait begun with the signal
//! unblocked ([`program_takes`]).

use core::ffi::c_int;
use core::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicUsize, Ordering};

pub type SigmaskFn =
    unsafe extern "C" fn(c_int, *const libc::sigset_t, *mut libc::sigset_t) -> c_int;
pub type SigactionFn =
    unsafe extern "C" fn(c_int, *const libc::sigaction, *mut libc::sigaction) -> c_int;
pub type PpollFn = unsafe extern "C" fn(
    *mut libc::pollfd,
    libc::nfds_t,
    *const libc::timespec,
    *const libc::sigset_t,
) -> c_int;

static REAL_SIGMASK: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());
static REAL_SIGACTION: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());
static REAL_PPOLL: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());

/// The signal blocked in program threads behind their back (0: none).
static HIDDEN: AtomicI32 = AtomicI32::new(0);
/// The signal the dumper thread unblocks while it waits (0: none).
static DUMPER_TAKES: AtomicI32 = AtomicI32::new(0);
/// A signal yielded to the program, not yet reported: `sig | why << 8`.
static YIELDED: AtomicI32 = AtomicI32::new(0);
/// The dumper thread's `pthread_t` (0: not running).
static DUMPER_THREAD: AtomicUsize = AtomicUsize::new(0);
/// Whether the dumper is in (or about to enter) its wait, and how many
/// waits it has finished: a yield waits for the dumper to leave a wait
/// that may have the signal unblocked.
static IN_WAIT: AtomicBool = AtomicBool::new(false);
static WAITS_DONE: AtomicUsize = AtomicUsize::new(0);

/// Why heapprof left its signal to the program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum Why {
    /// It blocked the signal itself.
    Blocks = 1,
    /// It waits for it (`sigwait*`, `signalfd`).
    Waits = 2,
    /// It installed its own disposition.
    Handler = 3,
}

/// Points heapprof's own mask, disposition and wait calls at the real
/// functions (the preload library's, which interposes those names). Call
/// before profiling starts.
pub fn set_real_calls(sigmask: SigmaskFn, sigaction: SigactionFn, ppoll: PpollFn) {
    REAL_SIGMASK.store(sigmask as *mut (), Ordering::Release);
    REAL_SIGACTION.store(sigaction as *mut (), Ordering::Release);
    REAL_PPOLL.store(ppoll as *mut (), Ordering::Release);
}

/// The real `pthread_sigmask`.
///
/// # Safety
/// As `pthread_sigmask`: null or valid sets.
pub unsafe fn sigmask(how: c_int, set: *const libc::sigset_t, old: *mut libc::sigset_t) -> c_int {
    let f = REAL_SIGMASK.load(Ordering::Acquire);
    if f.is_null() {
        // SAFETY: the caller's contract.
        unsafe { libc::pthread_sigmask(how, set, old) }
    } else {
        // SAFETY: registered as a SigmaskFn; the caller's contract.
        unsafe { core::mem::transmute::<*mut (), SigmaskFn>(f)(how, set, old) }
    }
}

/// The real `sigaction`.
///
/// # Safety
/// As `sigaction`: null or valid structs.
pub unsafe fn sigaction(
    sig: c_int,
    act: *const libc::sigaction,
    old: *mut libc::sigaction,
) -> c_int {
    let f = REAL_SIGACTION.load(Ordering::Acquire);
    if f.is_null() {
        // SAFETY: the caller's contract.
        unsafe { libc::sigaction(sig, act, old) }
    } else {
        // SAFETY: registered as a SigactionFn; the caller's contract.
        unsafe { core::mem::transmute::<*mut (), SigactionFn>(f)(sig, act, old) }
    }
}

/// The real `ppoll`.
///
/// # Safety
/// As `ppoll`.
pub unsafe fn ppoll(
    fds: *mut libc::pollfd,
    n: libc::nfds_t,
    timeout: *const libc::timespec,
    mask: *const libc::sigset_t,
) -> c_int {
    let f = REAL_PPOLL.load(Ordering::Acquire);
    if f.is_null() {
        // SAFETY: the caller's contract.
        unsafe { libc::ppoll(fds, n, timeout, mask) }
    } else {
        // SAFETY: registered as a PpollFn; the caller's contract.
        unsafe { core::mem::transmute::<*mut (), PpollFn>(f)(fds, n, timeout, mask) }
    }
}

// Set operations on the first word, inline: these run in every wrapped
// call. glibc's layout: signal n (1..=64, every signal Linux has) is bit
// n - 1 of the first `unsigned long`.

#[inline]
fn bit(sig: c_int) -> u64 {
    if (1..=64).contains(&sig) {
        1 << sig.wrapping_sub(1)
    } else {
        0
    }
}

#[inline]
fn word(set: &libc::sigset_t) -> u64 {
    // SAFETY: sigset_t is an array of at least one 64-bit unsigned long.
    unsafe { *(set as *const libc::sigset_t).cast::<u64>() }
}

#[inline]
fn word_mut(set: &mut libc::sigset_t) -> &mut u64 {
    // SAFETY: as above.
    unsafe { &mut *(set as *mut libc::sigset_t).cast::<u64>() }
}

/// Whether `set` holds `sig`.
#[inline]
pub fn member(set: &libc::sigset_t, sig: c_int) -> bool {
    sig != 0 && word(set) & bit(sig) != 0
}

/// Adds `sig` to `set`.
#[inline]
pub fn add(set: &mut libc::sigset_t, sig: c_int) {
    *word_mut(set) |= bit(sig);
}

/// Removes `sig` from `set`.
#[inline]
pub fn del(set: &mut libc::sigset_t, sig: c_int) {
    *word_mut(set) &= !bit(sig);
}

/// The set holding `sig` alone.
pub fn only(sig: c_int) -> libc::sigset_t {
    // SAFETY: a zeroed sigset_t is the empty set.
    let mut s: libc::sigset_t = unsafe { core::mem::zeroed() };
    add(&mut s, sig);
    s
}

/// The signal heapprof currently blocks in program threads and hides from
/// their view of the mask (0: none).
#[inline]
pub fn hidden() -> c_int {
    HIDDEN.load(Ordering::Acquire)
}

/// The signal the dumper thread takes (0: none, or yielded).
#[inline]
pub fn dumper_takes() -> c_int {
    DUMPER_TAKES.load(Ordering::Acquire)
}

/// The signals whose presence together marks "block everything" rather
/// than "block this signal".
// Evaluated at compile time: indexing and arithmetic cannot fail at run time.
#[allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)]
const BLANKET: u64 = {
    let s = [
        libc::SIGHUP,
        libc::SIGINT,
        libc::SIGQUIT,
        libc::SIGUSR1,
        libc::SIGUSR2,
        libc::SIGPIPE,
        libc::SIGALRM,
        libc::SIGTERM,
        libc::SIGCHLD,
        libc::SIGWINCH,
    ];
    let mut w = 0u64;
    let mut i = 0;
    while i < s.len() {
        w |= 1 << (s[i] - 1);
        i += 1;
    }
    w
};

/// Whether `set` blocks (nearly) everything — all but at most
/// `BLANKET_SLACK` of the common asynchronous signals besides `sig` — as
/// `sigfillset` masks do, and masks that leave a few open for a moment
/// (PostgreSQL's while a backend starts leaves SIGQUIT, SIGTERM and
/// SIGALRM open): such code does not want the dump signal, it wants quiet.
#[inline]
pub fn blanket(set: &libc::sigset_t, sig: c_int) -> bool {
    let need = BLANKET & !bit(sig);
    (word(set) & need).count_ones().saturating_add(BLANKET_SLACK) >= need.count_ones()
}

/// Common asynchronous signals a "block everything" mask may leave open.
const BLANKET_SLACK: u32 = 3;

/// Turns a thread's real mask into the program's view of it: without the
/// hidden signal `h` (pass [`hidden`] as read before the call that produced
/// `set`), unless the mask blocks everything anyway.
#[inline]
pub fn view(set: &mut libc::sigset_t, h: c_int) {
    if member(set, h) && !blanket(set, h) {
        del(set, h);
    }
}

/// Blocks `sig` in the calling thread and makes it the dumper's (called by
/// the triggers when the handler is installed on it). A signal the thread
/// already blocked is the program's block, so it is not hidden from the
/// view — the dumper still takes it.
pub fn take(sig: c_int) {
    let set = only(sig);
    // SAFETY: a zeroed sigset_t is a valid out-set.
    let mut old: libc::sigset_t = unsafe { core::mem::zeroed() };
    // SAFETY: blocking one signal in the calling thread; valid sets.
    let r = unsafe { sigmask(libc::SIG_BLOCK, &set, &mut old) };
    HIDDEN.store(
        if r == 0 && !member(&old, sig) { sig } else { 0 },
        Ordering::Release,
    );
    DUMPER_TAKES.store(sig, Ordering::Release);
}

/// Gives `sig` back (the configuration moved away from it): unblocked in
/// the calling thread if heapprof blocked it. Other threads keep the block
/// until they set their masks.
pub fn release(sig: c_int) {
    if HIDDEN.compare_exchange(sig, 0, Ordering::AcqRel, Ordering::Acquire) == Ok(sig) {
        let set = only(sig);
        // SAFETY: unblocking one signal in the calling thread.
        unsafe { sigmask(libc::SIG_UNBLOCK, &set, core::ptr::null_mut()) };
    }
    let _ = DUMPER_TAKES.compare_exchange(sig, 0, Ordering::AcqRel, Ordering::Acquire);
}

/// The program wants `sig` for itself: if it is heapprof's, stop hiding it
/// and stop taking it in the dumper, and have the dumper say so. Lock-free,
/// allocation-free (atomics and one `write(2)`).
pub fn program_takes(sig: c_int, why: Why) {
    if sig == 0 {
        return;
    }
    let hid = HIDDEN.compare_exchange(sig, 0, Ordering::AcqRel, Ordering::Acquire) == Ok(sig);
    let took = DUMPER_TAKES.compare_exchange(sig, 0, Ordering::SeqCst, Ordering::SeqCst) == Ok(sig);
    if hid || took {
        YIELDED.store(sig | (why as i32) << 8, Ordering::Release);
        // The dumper may be waiting with the signal unblocked: wake it so it
        // waits with it blocked from now on.
        crate::control::wake::poke();
        if took {
            settle();
        }
    }
}

/// Waits (briefly, once per yield) until the dumper is out of any wait
/// begun with the yielded signal unblocked, so that signal never reaches
/// it again — with the program's own handler installed it would run there.
/// (Without it, one arriving meanwhile runs heapprof's handler on the
/// dumper, which sends it on.) Bounded: a dumper that cannot be scheduled
/// for 200 ms is not waited for.
fn settle() {
    if on_dumper_thread() {
        return;
    }
    let done = WAITS_DONE.load(Ordering::SeqCst);
    let ms = libc::timespec {
        tv_sec: 0,
        tv_nsec: 1_000_000,
    };
    for _ in 0..200 {
        if !IN_WAIT.load(Ordering::SeqCst) || WAITS_DONE.load(Ordering::SeqCst) != done {
            return;
        }
        // SAFETY: sleeping on a valid timespec.
        unsafe { libc::nanosleep(&ms, core::ptr::null_mut()) };
    }
}

/// A yield not yet reported, as (signal, why).
pub(crate) fn take_yielded() -> Option<(c_int, Why)> {
    let v = YIELDED.swap(0, Ordering::AcqRel);
    let why = match v >> 8 {
        1 => Why::Blocks,
        2 => Why::Waits,
        3 => Why::Handler,
        _ => return None,
    };
    Some((v & 0xff, why))
}

/// Records the calling thread as the dumper.
pub(crate) fn set_dumper_thread() {
    // SAFETY: pthread_self has no preconditions.
    DUMPER_THREAD.store(unsafe { libc::pthread_self() } as usize, Ordering::Release);
}

/// Whether the calling thread is the dumper (async-signal-safe in glibc:
/// `pthread_self` reads the thread pointer).
pub(crate) fn on_dumper_thread() -> bool {
    // SAFETY: as above.
    DUMPER_THREAD.load(Ordering::Acquire) == unsafe { libc::pthread_self() } as usize
}

/// The mask the dumper waits in: its own (`base`) without the signal it
/// takes. (`base` rather than a full set: glibc never lets a thread block
/// its internal SIGCANCEL/SIGSETXID, and `ppoll` would.)
///
/// Marks the wait begun: call [`wait_done`] when it returns.
pub(crate) fn wait_mask(base: &libc::sigset_t) -> libc::sigset_t {
    let mut m = *base;
    // Before reading the signal (both SeqCst, as in `program_takes`): a
    // yield either sees this wait or is seen by it.
    IN_WAIT.store(true, Ordering::SeqCst);
    del(&mut m, DUMPER_TAKES.load(Ordering::SeqCst));
    m
}

/// The dumper's wait (begun by [`wait_mask`]) has returned.
pub(crate) fn wait_done() {
    WAITS_DONE.fetch_add(1, Ordering::SeqCst);
    IN_WAIT.store(false, Ordering::SeqCst);
}

/// In a forked child: the parent's dumper, and its wait, are gone.
pub(crate) fn after_fork() {
    IN_WAIT.store(false, Ordering::SeqCst);
    DUMPER_THREAD.store(0, Ordering::Release);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(sigs: &[c_int], fill: bool) -> libc::sigset_t {
        // SAFETY: a zeroed sigset_t is valid input to sigemptyset/sigfillset.
        let mut s: libc::sigset_t = unsafe { core::mem::zeroed() };
        // SAFETY: valid sets; adding or removing valid signal numbers.
        unsafe {
            if fill {
                libc::sigfillset(&mut s);
            } else {
                libc::sigemptyset(&mut s);
            }
            for &g in sigs {
                if fill {
                    libc::sigdelset(&mut s, g);
                } else {
                    libc::sigaddset(&mut s, g);
                }
            }
        }
        s
    }

    #[test]
    fn blocking_nearly_everything_is_not_wanting_the_signal() {
        let usr2 = libc::SIGUSR2;
        assert!(blanket(&set(&[], true), usr2));
        // PostgreSQL's mask while a backend starts.
        let pg = [libc::SIGQUIT, libc::SIGTERM, libc::SIGALRM];
        assert!(blanket(&set(&pg, true), usr2));
        // One more left open: a choice of signals, not quiet.
        let four = [libc::SIGQUIT, libc::SIGTERM, libc::SIGALRM, libc::SIGINT];
        assert!(!blanket(&set(&four, true), usr2));
        // A signal thread's set, or the signal alone: wanted.
        let thread = [
            usr2,
            libc::SIGINT,
            libc::SIGTERM,
            libc::SIGHUP,
            libc::SIGQUIT,
        ];
        assert!(!blanket(&set(&thread, false), usr2));
        assert!(!blanket(&set(&[usr2], false), usr2));
    }
}

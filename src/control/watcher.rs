//! The watcher: heapprof's dumper for a program that has no threads of its
//! own, made so that glibc never learns it exists.
//!
//! # Why
//! The moment a process has a second thread that glibc knows of (one made
//! with `pthread_create`), glibc's malloc and free leave their
//! single-threaded paths for good: arena locks and atomic fast bins on every
//! call. A dumper thread made that way costs a single-threaded program more
//! than all of heapprof's own code (README, "The figures behind the
//! design"). So the preload library starts this watcher
//! instead, and the real dumper thread ([`crate::control::triggers`]) only when the
//! program creates its first thread (glibc is multi-threaded from then on
//! anyway) or HTTP serving is asked for.
//!
//! # The model
//! - **A bare thread.** The watcher is made with a raw `clone` of the
//!   thread kind ([`raw::spawn_thread`]) on a stack heapprof maps itself.
//!   glibc has no record of it, so it stays single-threaded. The price:
//!   the watcher shares the main thread's thread pointer, so it must never
//!   touch TLS — not `errno` (which every libc wrapper writes on failure),
//!   not heapprof's thread state. It makes only raw system calls
//!   ([`crate::os::raw`]) and reads and writes atomics, and it allocates
//!   nothing.
//! - **It waits as the dumper does**: on the triggers' futex word, with
//!   every signal blocked but the dump signal, which program threads keep
//!   blocked (see [`crate::control::dump_signal`]); the signal's handler,
//!   run on the watcher, sets its bit and bumps the word with raw calls.
//!   The wait's timeout serves `HEAPPROF_INTERVAL`.
//! - **Dumps are made in a copy of the process**
//!   (`crate::profile::forked_copy`): the watcher cannot run the dump
//!   itself (it allocates and uses TLS), but a copy has the watcher's thread
//!   alone, so there the main thread's TLS is the copy's own, and everything
//!   heapprof allocates comes from the copy's arena
//!   ([`crate::engine::arena_in_copy`]; the preload library sends glibc's own
//!   calls there too). The copy writes the profile file and sends the
//!   watcher a short report: the sequence number reached, what it said
//!   (lines for stderr, which the watcher prints), so the process's own
//!   state moves on as if it had dumped. A copy that finds one of heapprof's
//!   locks held by the program's thread ends at once and is made again a
//!   few milliseconds later.
//! - **Record buffers are drained by the sampled path** meanwhile
//!   ([`crate::engine::set_self_drain`]): nothing else would bound them.
//! - **The peak**: once a second it reads the aggregate's running in-use
//!   estimate (an atomic; it asks the program's next sample to drain the
//!   buffers, so the estimate is at most a second old), and when the heap has passed the last peak
//!   written by an eighth (at least 1 MiB) a copy writes the heap as it is
//!   then as `PREFIX.PID.peak.pb.gz` ([`crate::control::peak`]).
//! - **Handing over.** When the program creates a thread, the real dumper
//!   starts and the watcher ends at its next wake-up. Should both dump at
//!   once, numbered files never replace each other.
//!
//! What the program can notice: one more task in `/proc/PID/task` (named
//! `heapprof-dumper`, as the dumper thread is), and copies of the process,
//! reaped as the symbolizer's are. At exit the program's own thread writes
//! the last profile, as before. A line for stderr that arises while only
//! the watcher runs (the program took the dump signal, say) is printed
//! from the next copy; the skipped-children note waits for the real dumper
//! or the exit.
//!
//! Everything the watcher runs is declared through `raw_thread_modules!`
//! (`lib.rs`), whose lints deny panics, `unwrap`, indexing and overflowing
//! arithmetic in it: this module, `control::wake` (its wait and wake-ups),
//! `control::dump_in_copy` and `profile::forked_copy` (the copies),
//! `control::dump_signal` (the masks), `control::peak` (when a peak is
//! due), `control::signal_notices`, `control::dump_errors` and
//! `engine::pressure` (the lines it prints), `os::own_table`, beside
//! `os::raw`'s system calls; beyond them it touches atomics only
//! (`engine::aggregate::in_use_estimate`, `engine::want_drain`,
//! `profile::output::advance_sequence`, the triggers' taken-signal flag).
//! `tests/preload.rs` checks that the watcher leaves the program's errno
//! alone while it dumps.

use core::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};

use crate::os::raw;
use crate::profile::dump::Trigger;

/// The watcher's stack: a dump runs on (a copy of) it, so as big as a
/// thread's default; untouched pages cost nothing.
const STACK_BYTES: usize = 8 << 20;
const GUARD_BYTES: usize = 64 << 10;

/// The watcher's thread id while it runs (the kernel clears it, with a
/// futex wake, when the thread ends).
static TID: AtomicI32 = AtomicI32::new(0);
/// Set to end the watcher at its next wake-up.
static STOP: AtomicBool = AtomicBool::new(false);
/// How soon a deferred dump is tried again (see `crate::control::dump_in_copy`).
const DEFERRED_RETRY_NS: u64 = 1_000_000_000;
/// `HEAPPROF_INTERVAL` in nanoseconds (0: none).
static INTERVAL_NS: AtomicU64 = AtomicU64::new(0);

/// A copy of the process could be made (checked at the first start).
static COPIES_WORK: AtomicBool = AtomicBool::new(false);

/// Where glibc's `__libc_single_threaded` is (null: not looked up yet, or
/// missing: [`NO_FLAG`]).
static SINGLE_FLAG: core::sync::atomic::AtomicPtr<u8> =
    core::sync::atomic::AtomicPtr::new(core::ptr::null_mut());
const NO_FLAG: *mut u8 = 1 as *mut u8;

/// glibc's own flag (`__libc_single_threaded`, glibc 2.32 and later): true
/// until the process first creates a thread. True where it is missing.
/// Looked up once, at the first start (the library constructor): never in a
/// forked child, where `dlsym` could wait on a loader lock held by a thread
/// the child does not have.
fn glibc_single_threaded() -> bool {
    let mut p = SINGLE_FLAG.load(Ordering::Relaxed);
    if p.is_null() {
        // SAFETY: looking up a data symbol by a NUL-terminated name.
        let q = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"__libc_single_threaded".as_ptr()) };
        p = if q.is_null() { NO_FLAG } else { q.cast() };
        SINGLE_FLAG.store(p, Ordering::Relaxed);
    }
    // SAFETY: glibc's one-byte flag (declared `char`), for the process's life.
    p == NO_FLAG || unsafe { *p } != 0
}

/// Whether this target can run a watcher.
pub fn supported() -> bool {
    raw::SUPPORTED
}

/// Starts the watcher, dumping every `interval_ns` too (0: only when
/// asked). False if it could not be started (the caller then starts the
/// dumper thread).
pub fn start(interval_ns: u64) -> bool {
    if !supported() || running() {
        return running();
    }
    // Already multi-threaded (a library's constructor made a thread before
    // ours ran): nothing to keep.
    if !glibc_single_threaded() {
        return false;
    }
    // A copy must be possible: a process refused one (a seccomp filter, a
    // process limit) keeps the ordinary dumper thread, which can dump
    // in-process. Checked once: a forked child inherits the answer.
    if !COPIES_WORK.load(Ordering::Relaxed) {
        if !crate::profile::forked_copy::probe() {
            return false;
        }
        COPIES_WORK.store(true, Ordering::Relaxed);
    }
    // Under an address-space limit, a sixteenth of the room it leaves (the
    // stack counts against it whether used or not), at least 1 MiB.
    let stack = crate::engine::pressure::address_room().map_or(STACK_BYTES, |room| {
        (room / 16).clamp(1 << 20, STACK_BYTES) & !4095
    });
    let base = raw::map(
        stack.saturating_add(GUARD_BYTES),
        libc::MAP_NORESERVE | libc::MAP_STACK,
    );
    if base.is_null() {
        return false;
    }
    // SAFETY: the lowest pages of the mapping just made, unused: a guard.
    unsafe { raw::protect_none(base, GUARD_BYTES) };
    INTERVAL_NS.store(interval_ns, Ordering::Relaxed);
    STOP.store(false, Ordering::Relaxed);
    // The watcher starts with every signal blocked (it inherits the mask);
    // the caller's mask is put back.
    // SAFETY: masks of the calling thread, valid sets.
    let old = unsafe {
        let mut all: libc::sigset_t = core::mem::zeroed();
        let mut old: libc::sigset_t = core::mem::zeroed();
        libc::sigfillset(&mut all);
        crate::control::dump_signal::sigmask(libc::SIG_SETMASK, &all, &mut old);
        old
    };
    // SAFETY: the stack is a fresh mapping the watcher alone uses (never
    // unmapped: leaked when it ends); `TID` is a static; `main` uses no TLS.
    let r = unsafe {
        raw::spawn_thread(
            base.add(stack.saturating_add(GUARD_BYTES)),
            main,
            TID.as_ptr(),
        )
    };
    // SAFETY: restoring the caller's own mask.
    unsafe { crate::control::dump_signal::sigmask(libc::SIG_SETMASK, &old, core::ptr::null_mut()) };
    if r <= 0 {
        TID.store(0, Ordering::Relaxed);
        return false;
    }
    // The kernel stored the id (CLONE_PARENT_SETTID) before clone returned.
    true
}

/// Whether the watcher runs.
pub fn running() -> bool {
    TID.load(Ordering::Acquire) != 0
}

/// Whether the calling thread is the watcher (a system call: only for the
/// signal handler, which must know before it touches anything).
pub fn on_watcher() -> bool {
    let tid = TID.load(Ordering::Acquire);
    tid != 0 && raw::gettid() == tid
}

/// Asks the watcher to end at its next wake-up (the caller wakes it).
pub fn stop() {
    STOP.store(true, Ordering::Release);
}

/// Waits (at most `ms` milliseconds) for the watcher to have ended.
pub fn wait_ended(ms: u64) {
    let deadline = raw::monotonic_ns().saturating_add(ms.saturating_mul(1_000_000));
    loop {
        let tid = TID.load(Ordering::Acquire);
        let now = raw::monotonic_ns();
        if tid == 0 || now >= deadline {
            return;
        }
        raw::futex_wait(&TID, tid, deadline.saturating_sub(now));
    }
}

/// In a forked child: the watcher is the parent's (fork copies only the
/// forking thread).
pub fn after_fork() {
    TID.store(0, Ordering::Release);
}

/// The watcher thread. Raw system calls and atomics only, up to the copy.
extern "C" fn main() -> ! {
    // First: its copies' pipes never take one of the program's numbers.
    crate::os::own_table::enter();
    raw::set_thread_name(c"heapprof-dumper");
    // Every signal blocked, glibc's own two included (its handlers for them
    // would act on the main thread's state), and the same in the wait but
    // for the dump signal (the kernel keeps SIGKILL and SIGSTOP deliverable
    // whatever a mask says).
    // SAFETY: a zeroed sigset_t is the empty set; its first word holds
    // signals 1 to 64, all of Linux's.
    let all = unsafe {
        let mut s: libc::sigset_t = core::mem::zeroed();
        *(&mut s as *mut libc::sigset_t).cast::<u64>() = u64::MAX;
        s
    };
    raw::set_mask(&all);
    let mut next_interval = 0u64;
    let mut next_peak_look = 0u64;
    loop {
        if STOP.load(Ordering::Acquire) {
            raw::exit_thread();
        }
        let every = INTERVAL_NS.load(Ordering::Relaxed);
        let now = raw::monotonic_ns();
        if every == 0 {
            next_interval = 0;
        } else if next_interval == 0 {
            next_interval = now.saturating_add(every);
        }
        let mut timeout =
            (next_interval != 0).then(|| next_interval.saturating_sub(now).max(1_000_000));
        // The peak is looked at once a second, as the dumper does.
        timeout = Some(timeout.map_or(PEAK_LOOK_NS, |t| t.min(PEAK_LOOK_NS)));
        // A dump no copy could make is tried again within a second.
        let deferred = crate::control::dump_in_copy::deferred();
        if deferred {
            timeout = Some(timeout.map_or(DEFERRED_RETRY_NS, |t| t.min(DEFERRED_RETRY_NS)));
        }
        let asked = crate::control::wake::wait_for_wake(timeout, &all);
        if STOP.load(Ordering::Acquire) {
            // (A deferred dump is the dumper's to take: not asked again.)
            if asked {
                // Taken after the dumper started: its now.
                crate::control::wake::request_dump_raw();
            }
            raw::exit_thread();
        }
        let mut dump = if asked {
            Some(Trigger::Signal)
        } else if deferred {
            Some(Trigger::Deferred)
        } else {
            None
        };
        let now = raw::monotonic_ns();
        if next_interval != 0 && now >= next_interval {
            dump = dump.or(Some(Trigger::Interval));
            next_interval = next_interval.saturating_add(every);
            if next_interval <= now {
                next_interval = now.saturating_add(every);
            }
        }
        round(dump);
        let now = raw::monotonic_ns();
        if now >= next_peak_look {
            next_peak_look = now.saturating_add(PEAK_LOOK_NS);
            let in_use = crate::engine::aggregate::in_use_estimate();
            if crate::control::peak::watcher_due(in_use) && crate::control::dump_in_copy::run_peak()
            {
                crate::control::peak::watcher_wrote(in_use);
            }
            // Fresh numbers for the next look: the program's next sample
            // drains the buffers.
            crate::engine::want_drain();
        }
    }
}

/// How often the watcher looks for a new peak of the heap.
const PEAK_LOOK_NS: u64 = 1_000_000_000;

/// One round of the watcher after a wake-up: the lines there are to say
/// (formatted here, without allocating) and, if asked, a dump, made by a
/// copy of the process whose report moves this process's state on. Raw
/// system calls and atomics only.
pub(crate) fn round(dump: Option<Trigger>) {
    say_pending();
    if let Some(trigger) = dump {
        crate::control::dump_in_copy::run(trigger);
        // A dump short of memory has a line to say.
        say_pending();
    }
}

/// The dumper's pending lines (`triggers::print_pending`), for the watcher: every line is built in a fixed buffer.
fn say_pending() {
    let mut line = raw::LineBuf::<1024>::new();
    let mut say_line = |write: &mut dyn FnMut(&mut raw::LineBuf<1024>) -> bool| {
        line.clear();
        if write(&mut line) {
            let _ = core::fmt::Write::write_str(&mut line, "\n");
            crate::os::own_table::write_stderr(&[line.bytes()]);
        }
    };
    say_line(&mut |w| {
        crate::control::wake::note_source()
            .and_then(|n| (n.take)())
            .is_some_and(|note| core::fmt::Write::write_str(w, note).is_ok())
    });
    say_line(&mut |w| match crate::control::dump_signal::take_yielded() {
        Some((sig, why)) if crate::control::signal_notices::first_yield_line(sig) => {
            crate::control::signal_notices::write_yield_line(w, sig, why).is_ok()
        },
        _ => false,
    });
    say_line(&mut |w| match crate::control::triggers::take_signal_taken() {
        0 => false,
        sig => crate::control::signal_notices::write_taken_line(w, sig).is_ok(),
    });
    say_line(&mut |w| crate::engine::pressure::limit_note_into(w));
    say_line(&mut |w| crate::engine::pressure::take_note_into(w));
}

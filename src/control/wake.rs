//! How heapprof's waiting thread (the dumper, or the watcher that stands
//! in for it) is woken: a futex word, so a process holds no descriptor of
//! heapprof's for it.
//!
//! An ask (a dump: the signal's handler, [`request_dump`]; anything else:
//! [`poke`]) sets its bit in `WAKE_BITS`, bumps the futex word and wakes
//! the waiter: atomics and raw system calls, so signal handlers, the
//! watcher (no TLS, no errno) and the sample heap's free path may ask. The
//! waiter (`wait_for_wake`) reads the word before it looks at the bits,
//! so an ask that lands in between makes the futex wait return at once, and
//! takes every bit set in one go: a storm of asks coalesces.
//!
//! A registered [`NoteSource`] (the preload library's skipped-children
//! socket) and the cgroup's threshold events of `HEAPPROF_NEAR_LIMIT`
//! (cgroup v1, [`crate::control::heap_triggers`]) are descriptors, which a
//! futex cannot be waited on with: while one exists the wait is a `ppoll`
//! on them and on a self-pipe (high, close-on-exec, checked:
//! [`crate::os::fds`]) that every ask also writes a byte to.

use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};

use crate::control::dump_signal;
use crate::os::{fds, raw};

/// What the waiting thread has been asked ([`WAKE_DUMP`],
/// [`WAKE_RECONFIGURE`] bits), and a counter bumped after each ask: the
/// futex word it waits on. No descriptor is needed to wake it.
static WAKE_BITS: AtomicU32 = AtomicU32::new(0);
static WAKE_SEQ: AtomicI32 = AtomicI32::new(0);
/// A pipe the waiting thread polls beside the note source's descriptor or
/// the cgroup's threshold events (only then: a futex cannot be polled
/// with a descriptor), high and
/// checked (see [`crate::os::fds`]).
static PIPE_READ: fds::Held = fds::Held::new();
static PIPE_WRITE: fds::Held = fds::Held::new();

const WAKE_DUMP: u32 = 1;
const WAKE_RECONFIGURE: u32 = 2;

/// Makes the self-pipe now, if a note source with a descriptor will be
/// polled: at start-up or in a fork's child, before the program runs on,
/// so the pipe's numbers are taken (and moved high) before the program
/// makes descriptors of its own, as in a bare run; made lazily by the
/// waiter instead, it could take a number the program's own next pipe or
/// open would get.
pub(crate) fn open_pipe_if_needed() {
    if NOTE_SOURCE.get().is_some_and(|n| (n.fd)() >= 0) && !pipe_is_ours() {
        open_pipe();
    }
}

/// Makes the self-pipe (high, close-on-exec: [`crate::os::fds`]), closing
/// the one it replaces if that is still ours. Raw system calls: the
/// watcher remakes the pipe too.
fn open_pipe() {
    // A wake-up meanwhile is lost, as a full pipe drops one.
    PIPE_WRITE.close();
    PIPE_READ.close();
    if let Ok([r, w]) = fds::pipe(libc::O_NONBLOCK) {
        PIPE_READ.set(r);
        PIPE_WRITE.set(w);
    }
}

/// Whether both ends are still the pipe we made (the program may have
/// closed every descriptor, or reused a number for a file of its own).
fn pipe_is_ours() -> bool {
    PIPE_READ.get().is_some() && PIPE_WRITE.get().is_some()
}

/// Wakes the waiting thread to re-read its state (lock-free, async-signal-safe,
/// no descriptor, errno untouched: the engine's paths call it, see
/// [`crate::engine::waiter`]).
pub fn poke() {
    wake(WAKE_RECONFIGURE);
}

/// Asks the dumper for a dump, as the signal does (lock-free,
/// async-signal-safe, no descriptor).
pub fn request_dump() {
    wake(WAKE_DUMP);
}

/// [`request_dump`] from the watcher (the same raw calls).
pub(crate) fn request_dump_raw() {
    wake(WAKE_DUMP);
}

/// Sets `bits`, bumps the futex word and wakes its waiter. Atomics and raw
/// system calls only (errno untouched): signal handlers, the watcher and
/// the free path call it.
fn wake(bits: u32) {
    WAKE_BITS.fetch_or(bits, Ordering::AcqRel);
    WAKE_SEQ.fetch_add(1, Ordering::AcqRel);
    raw::futex_wake(&WAKE_SEQ);
    // A waiter polling a descriptor (notes, cgroup events) waits on the pipe:
    // checked, never a byte into a file of the program's that took the
    // number (a wake-up is lost instead; the waiter remakes the pipe).
    if PIPE_WRITE.raw() >= 0 {
        if let Some(fd) = PIPE_WRITE.get() {
            raw::write_all(fd, &[1]);
        }
    }
}

/// The dumper's and the watcher's wait: on the futex word (or, with a note
/// source, `ppoll` on it and the self-pipe), with the dump signal unblocked
/// only in here (its handler runs on this thread, between dumps, and bumps
/// the word); `None` waits an hour. Returns whether a dump was asked for.
/// Raw system calls only, for the watcher ([`crate::control::watcher`]).
pub(crate) fn wait_for_wake(timeout_ns: Option<u64>, base: &libc::sigset_t) -> bool {
    // Read before anything is taken: an ask after this moves it, so the
    // wait below returns at once rather than missing it.
    let seq = WAKE_SEQ.load(Ordering::Acquire);
    // The engine's paths wake whichever thread waits here; the sample
    // heap's decay runs here too.
    crate::engine::waiter::set(poke);
    let decay = crate::engine::sample_heap::decay_tick(raw::monotonic_ns());
    let timeout_ns = match (timeout_ns, decay) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let note = NOTE_SOURCE.get().map_or(-1, |n| (n.fd)());
    let events = crate::control::heap_triggers::event_fd();
    if WAKE_BITS.load(Ordering::Acquire) == 0 {
        let mask = dump_signal::wait_mask(base);
        if note >= 0 || events >= 0 {
            wait_with_fds(note, events, timeout_ns, &mask);
        } else {
            // No descriptor at all: the futex word, with the dump signal
            // unblocked only around it (a signal in between bumps the word,
            // so the wait returns at once).
            let old = raw::swap_mask(&mask);
            raw::futex_wait(&WAKE_SEQ, seq, timeout_ns.unwrap_or(3_600_000_000_000));
            raw::swap_mask(&old);
        }
        dump_signal::wait_done();
    }
    WAKE_BITS.swap(0, Ordering::AcqRel) & WAKE_DUMP != 0
}

/// The wait of a process that hears notes, or the cgroup's threshold
/// events, on a descriptor (`-1`: none): `ppoll` on them and on the
/// self-pipe that [`wake`] then also writes to.
fn wait_with_fds(note: i32, events: i32, timeout_ns: Option<u64>, mask: &libc::sigset_t) {
    if !pipe_is_ours() {
        open_pipe();
    }
    let fd = PIPE_READ.raw();
    let mut fds = [fd, note, events].map(|fd| libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    });
    let ts = timeout_ns.map(|ns| libc::timespec {
        tv_sec: (ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (ns % 1_000_000_000) as libc::c_long,
    });
    let r = raw::ppoll(&mut fds, ts.as_ref(), mask);
    if r > 0 && fds[0].revents & libc::POLLNVAL != 0 {
        // Closed under us: wait out the timeout rather than spin; the next
        // round makes a new pipe.
        raw::sleep_ns(timeout_ns.unwrap_or(100_000_000));
    } else if r != 0 {
        // The bytes only wake; what was asked is in WAKE_BITS. The pipe is
        // non-blocking, so draining an empty one costs one read.
        let mut buf = [0u8; 256];
        // SAFETY: a local buffer of that length.
        while unsafe { raw::read(fd, buf.as_mut_ptr(), buf.len()) } > 0 {}
        if fds[2].revents & libc::POLLIN != 0 {
            // The dumper's next round reads the cgroup and acts.
            crate::control::heap_triggers::drain_events();
        }
    }
}

/// A source of one-off lines for the dumper to print (the preload library's
/// "programs this process started were not profiled"): `fd` is a descriptor
/// to wake the dumper when readable (-1: none; polled alongside the pipe),
/// `take` the line, if any, asked for at every wake-up and at exit. Both run
/// on the dumper thread, the watcher or in the `atexit` handler, never on a
/// hook, and keep the watcher's rules: raw system calls only, no
/// allocation, no TLS ([`crate::control::watcher`]); `take` must stop `fd` from being
/// readable (or return -1 from `fd` afterwards), and in a forked child must
/// close a descriptor inherited from the parent (the fork child handler
/// asks, so it is closed in the table the child's program has, not only in
/// its dumper's own: [`crate::os::own_table`]).
#[derive(Clone, Copy)]
pub struct NoteSource {
    pub fd: fn() -> i32,
    pub take: fn() -> Option<&'static str>,
}

static NOTE_SOURCE: std::sync::OnceLock<NoteSource> = std::sync::OnceLock::new();

/// The note source, if one is registered.
pub(crate) fn note_source() -> Option<&'static NoteSource> {
    NOTE_SOURCE.get()
}

/// Registers the note source (the first registration wins).
pub fn set_note_source(source: NoteSource) {
    let _ = NOTE_SOURCE.set(source);
}

/// In a forked child: the parent's asks, its pipe and its note source's
/// descriptor are not this process's.
pub(crate) fn after_fork() {
    WAKE_BITS.store(0, Ordering::Release);
    if let Some(n) = NOTE_SOURCE.get() {
        let _ = (n.take)();
    }
    PIPE_WRITE.close();
    PIPE_READ.close();
}

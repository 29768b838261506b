//! heapprof's threads never keep a finished process alive.
//!
//! # Why
//! glibc ends a process when the last thread it knows of ends: every thread
//! made with `pthread_create`, and the main thread through `pthread_exit`,
//! decrements glibc's thread count as it ends, and the one that takes it to
//! zero calls `exit(0)`. heapprof's dumper and HTTP threads are such
//! threads. Without more, a program whose last thread ends with
//! `pthread_exit` (main calling it; a child forked from a non-main thread
//! whose one thread exits) would not end: a zombie leader, heapprof's
//! threads with nearly every signal blocked, and a parent waiting for ever.
//!
//! # Model
//! - **heapprof's threads are not counted.** The program's thread that
//!   makes the dumper takes it off glibc's count at once
//!   ([`uncount_created`]: glibc's `__nptl_nthreads`), so glibc ends the
//!   process on the program's last thread, exactly as bare, with the
//!   program's table of descriptors still there for its `atexit` handlers
//!   and stdio. A heapprof thread counts itself again just before it
//!   returns ([`OwnThread`]). HTTP threads, which the dumper makes, can
//!   only take themselves off ([`OwnThread::uncount_self`]), which races
//!   with the program's end; so while the HTTP server is asked for, the
//!   dumper stays counted, and the rest of this model is how the process
//!   then ends.
//! - **The program has ended** when its leader (the main thread) is a
//!   zombie and no task is left but heapprof's own: `/proc/self/stat` gives
//!   both, the leader's state and the process's task count. heapprof's
//!   threads count themselves ([`OwnThread`]) from inside, after they start
//!   and until just before they return, so the count is never above the
//!   kernel's: the test can come late, never early. Once true it stays true:
//!   no program thread is left to make another.
//! - **Then heapprof's threads return.** The dumper stops the HTTP server
//!   (its threads return when their work is done) and returns from its
//!   start routine. glibc's count reaches zero on heapprof's last thread and
//!   glibc calls `exit(0)` there, as it would have on the program's: the
//!   program's `atexit` handlers, stdio flushed, heapprof's exit dump,
//!   status 0.
//! - **When the dumper looks.** At a wake-up at most once a second (it
//!   wakes at least that often), and soon after a hint: the
//!   preload library's `pthread_exit` on the main thread, or the end of a
//!   tracked thread (`crate::engine::threads`) once the main thread is
//!   known to be gone. The hinting thread still exists when it hints, so
//!   the dumper looks again after 2, 4, 8 … 512 ms.
//! - The watcher (`crate::control::watcher`) is not a thread glibc counts:
//!   a single-threaded program's `pthread_exit` ends it as bare. A forked
//!   child counts its own threads afresh ([`after_fork`]).
//!
//! Signals are untouched: the program's threads get those they do not
//! block while they live, and once they are gone the process ends.
//!
//! # Limits
//! - With the HTTP server asked for, the Rust way in (no `pthread_exit`
//!   hook) ends a process whose main thread calls `pthread_exit` last up
//!   to a second later than bare.
//! - A thread the program makes with a raw `clone` (which glibc does not
//!   count) keeps a profiled process alive where the bare one would end.

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::os::{fds, raw};

/// heapprof's glibc threads running now (the dumper, the HTTP server's).
static OWN: AtomicUsize = AtomicUsize::new(0);
/// The main thread has called `pthread_exit`, or was seen a zombie.
static LEADER_GONE: AtomicBool = AtomicBool::new(false);
/// A hint since the dumper last looked.
static HINTED: AtomicBool = AtomicBool::new(false);
/// `/proc/self/stat`, kept open high and close-on-exec, checked before
/// each read (the rules of [`crate::os::fds`]).
static STAT: fds::Held = fds::Held::new();

/// Longest the dumper goes without looking.
const PERIOD: Duration = Duration::from_secs(1);
/// The first and last gap between looks after a hint.
const FIRST_STEP: Duration = Duration::from_millis(2);
const LAST_STEP: Duration = Duration::from_millis(512);

/// Counts one of heapprof's threads while it lives (made by that thread),
/// and whether glibc's count of threads still includes it.
pub struct OwnThread {
    uncounted: bool,
}

impl OwnThread {
    /// Counts the calling thread, until the guard drops; `uncounted`: its
    /// creator took it off glibc's count ([`uncount_created`]).
    pub fn enter(uncounted: bool) -> OwnThread {
        OWN.fetch_add(1, Ordering::AcqRel);
        OwnThread { uncounted }
    }

    /// Takes the calling thread off glibc's count itself, unless it is the
    /// last counted one (then the program's threads are gone already, and
    /// glibc must end the process on a thread of heapprof's, see the module
    /// doc). Not free of races, unlike [`uncount_created`]: a program whose
    /// last thread ends just before leaves it counted. Whether it did.
    pub fn uncount_self(&mut self) -> bool {
        if !self.uncounted {
            self.uncounted = take_one_off();
        }
        self.uncounted
    }

    /// Whether glibc does not count this thread: then the program's last
    /// thread ends the process, as bare, and never this one.
    pub fn uncounted(&self) -> bool {
        self.uncounted
    }
}

impl Drop for OwnThread {
    fn drop(&mut self) {
        // Counted again before it returns: glibc's end of the thread takes
        // it off once more.
        if self.uncounted {
            if let Some(n) = glibc_count() {
                n.fetch_add(1, Ordering::AcqRel);
            }
        }
        OWN.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Right after a thread of the program made one of heapprof's: takes the
/// new thread off glibc's count, so that the program's last thread, not
/// heapprof's, ends the process, as bare. Free of races: the creator is
/// counted and busy here, so the count stays above zero and no program
/// thread that ends meanwhile takes it for the last. Whether it did (not
/// glibc, or no count found: no).
pub fn uncount_created() -> bool {
    take_one_off()
}

/// Takes one thread off glibc's count, never the last one.
fn take_one_off() -> bool {
    glibc_count().is_some_and(|n| {
        n.fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| {
            (c > 1).then(|| c - 1)
        })
        .is_ok()
    })
}

/// glibc's count of the threads it knows (`__nptl_nthreads`, found at
/// start-up; null: not glibc, or none found).
static GLIBC_COUNT: core::sync::atomic::AtomicPtr<AtomicU32> =
    core::sync::atomic::AtomicPtr::new(core::ptr::null_mut());

fn glibc_count() -> Option<&'static AtomicU32> {
    let p = GLIBC_COUNT.load(Ordering::Acquire);
    // SAFETY: glibc's `unsigned int __nptl_nthreads`, which it changes
    // only atomically, for the process's life.
    (!p.is_null()).then(|| unsafe { &*p })
}

/// Registers the hint on the ends of tracked threads, and finds glibc's
/// thread count (at start-up, on the program's thread).
pub fn install() {
    crate::engine::threads::set_end_notice(tracked_thread_ended);
    // SAFETY: looking up a data symbol by a NUL-terminated name.
    let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"__nptl_nthreads".as_ptr()) };
    GLIBC_COUNT.store(p.cast(), Ordering::Release);
}

/// A thread of the program calls `pthread_exit` (the preload library's
/// hook): if it is the main thread, the process may end soon. Lock-free,
/// allocation-free.
pub fn thread_exits() {
    if raw::gettid() == raw::getpid() {
        LEADER_GONE.store(true, Ordering::Release);
        hint();
    }
}

fn tracked_thread_ended() {
    if LEADER_GONE.load(Ordering::Relaxed) {
        hint();
    }
}

/// Asks the dumper to look soon. Lock-free: an atomic and one `write(2)`.
fn hint() {
    HINTED.store(true, Ordering::Release);
    crate::control::wake::poke();
}

/// In a forked child: its one thread is the program's, the parent's
/// heapprof threads are not here, and its leader is alive.
pub fn after_fork() {
    OWN.store(0, Ordering::Release);
    LEADER_GONE.store(false, Ordering::Release);
    HINTED.store(false, Ordering::Release);
}

/// The dumper's schedule of looks.
pub struct Watch {
    next: Instant,
    /// The gap after the next look while following a hint (zero: none).
    step: Duration,
}

impl Default for Watch {
    fn default() -> Self {
        Watch::new()
    }
}

impl Watch {
    pub fn new() -> Watch {
        Watch {
            next: Instant::now() + PERIOD,
            step: Duration::ZERO,
        }
    }

    /// How long the dumper may wait before its next look.
    pub fn wait_bound(&mut self, now: Instant) -> Duration {
        self.take_hint(now);
        self.next.saturating_duration_since(now)
    }

    fn take_hint(&mut self, now: Instant) {
        if HINTED.swap(false, Ordering::AcqRel) {
            self.step = FIRST_STEP;
            self.next = now;
        }
    }

    /// Whether the program has ended (looked at only when due).
    pub fn program_ended(&mut self, now: Instant) -> bool {
        self.take_hint(now);
        if now < self.next {
            return false;
        }
        if program_has_ended() {
            return true;
        }
        if self.step.is_zero() {
            self.next = now + PERIOD;
        } else {
            self.next = now + self.step;
            self.step *= 2;
            if self.step > LAST_STEP {
                self.step = Duration::ZERO;
            }
        }
        false
    }
}

/// Whether the leader is a zombie and every task left is heapprof's.
fn program_has_ended() -> bool {
    let mut buf = [0u8; 1024];
    let Some(n) = read_stat(&mut buf) else {
        return false;
    };
    let Some((state, tasks)) = parse_stat(&buf[..n]) else {
        return false;
    };
    if state != b'Z' {
        return false;
    }
    LEADER_GONE.store(true, Ordering::Release);
    // The zombie leader is one of the tasks.
    tasks.saturating_sub(1) <= OWN.load(Ordering::Acquire) as u64
}

/// Reads `/proc/self/stat` into `buf` from the descriptor kept open, (re)opened
/// as needed (first use, a fork, the program closing ours).
fn read_stat(buf: &mut [u8]) -> Option<usize> {
    let fd = match STAT.get().filter(|_| STAT.made_here()) {
        Some(fd) => fd,
        None => {
            // First use, a fork (the inherited copy names the parent's
            // file: close it), or the program closed ours (the number is
            // not ours to close any more).
            if !STAT.made_here() {
                let inherited = STAT.take();
                if inherited >= 0 {
                    raw::close(inherited);
                }
            }
            let fd = fds::open(c"/proc/self/stat", libc::O_RDONLY);
            if fd < 0 {
                return None;
            }
            STAT.set(fd);
            fd
        }
    };
    // SAFETY: a local buffer of that length; offset 0 makes the kernel
    // write the file afresh.
    let n = unsafe { libc::pread(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
    (n > 0).then_some(n as usize)
}

/// The leader's state and the task count from the text of
/// `/proc/PID/stat` ("PID (COMM) STATE PPID …", COMM may hold spaces and
/// parentheses; the count is the 20th field).
fn parse_stat(stat: &[u8]) -> Option<(u8, u64)> {
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = core::str::from_utf8(&stat[close + 1..]).ok()?;
    let mut fields = rest.split_ascii_whitespace();
    let state = *fields.next()?.as_bytes().first()?;
    let tasks = fields.nth(16)?.parse().ok()?;
    Some((state, tasks))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_and_task_count_are_read_past_an_odd_command_name() {
        let line =
            b"15473 (a) (b) Z 15471 15471 10798 0 -1 4227084 321 2 0 0 0 0 0 0 20 0 2 0 60369 0 0";
        assert_eq!(parse_stat(line), Some((b'Z', 2)));
        assert_eq!(parse_stat(b"1 (x) R 0"), None);
    }

    #[test]
    fn this_process_is_running_with_its_threads() {
        let mut buf = [0u8; 1024];
        let n = read_stat(&mut buf).expect("read /proc/self/stat");
        let (state, tasks) = parse_stat(&buf[..n]).unwrap();
        assert_ne!(state, b'Z');
        assert!(tasks >= 1);
        // A second read through the same descriptor is fresh.
        let t = std::thread::spawn(move || {
            let mut buf = [0u8; 1024];
            let n = read_stat(&mut buf).unwrap();
            parse_stat(&buf[..n]).unwrap().1
        });
        assert!(t.join().unwrap() >= 2);
        assert!(!program_has_ended());
    }
}

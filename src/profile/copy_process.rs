//! Work done in a short-lived copy of the process, so that its memory is
//! never the profiled program's.
//!
//! A dump's costliest step, parsing the program's DWARF, touches megabytes
//! of the mapped binary and builds tables as large; done in the program, it
//! all counts in the program's RSS and peak. [`run`] makes a copy of the
//! process, lets the work run there and write its result into a pipe, and
//! returns the bytes. The copy then exits, and everything it touched is
//! gone with it: the program's own memory only holds the result.
//!
//! # What the program can notice: nothing it can act on
//! - The copy is made with a bare `clone` system call, not `fork`: no
//!   `pthread_atfork` handler of the program runs, and glibc's fork
//!   bookkeeping is untouched.
//! - It has no exit signal, so no `SIGCHLD` arrives, and `wait`/`waitpid`
//!   without `__WCLONE`/`__WALL` never report it. [`run`] reaps it itself.
//! - It writes nothing but the pipe: its stdout and stderr go to
//!   `/dev/null`, it blocks every signal, and its core size limit is 0.
//! - It has only the calling thread, so a lock another thread held at the
//!   moment of the copy stays held there for ever. heapprof's allocations
//!   in the copy are therefore served by [`crate::engine::copy_arena`],
//!   never by the inner allocator. What else might wait on such a lock (a C
//!   library function that allocates internally) is caught: the copy never
//!   sleeps for its own reasons (it reads files it has mapped and writes a
//!   pipe the parent drains), so a copy found asleep at [`STUCK_CHECKS`]
//!   checks in a row while sending nothing is stuck, and is killed; so is
//!   one that sends nothing for [`STALL`].
//!
//! When the copy cannot be made (no process slots, a seccomp filter that
//! refuses it, no sample heap to carve its arena from), gets stuck, dies,
//! or its result is cut short, [`run`] returns `None` and the caller does
//! the work in-process as before: slower on memory, never wrong. (A sandbox
//! whose filter *kills* for a `clone` that makes no thread, as a browser's
//! renderer does, would kill the program: profile such programs with
//! `HEAPPROF_SYMBOLIZE=0`. Filters that allow threads otherwise allow this
//! `clone` or refuse it with an error.)
//!
//! # Cost, and when a copy is not worth it
//! The `clone` copies the process's page tables (about 2 MB per GB of
//! resident memory, in the copy; a few milliseconds for a large process),
//! and pages are shared copy-on-write: every page the program writes while
//! the copy lives is duplicated until the copy exits. For a small process
//! both are small, and the copy saves the parse's 16 MB or so. For a big,
//! busy one the duplicated pages could outweigh what the copy saves, while
//! parsing in-process adds only a few percent to its memory; so above
//! [`MAX_RSS_ANON`] of anonymous memory no copy is made ([`worth_it`]).

use std::time::{Duration, Instant};

use crate::engine::copy_arena;

/// Anonymous resident memory above which the process parses in-process
/// rather than in a copy (see the module docs).
pub const MAX_RSS_ANON: u64 = 512 << 20;

/// Whether a copy is worth making now: the process's `RssAnon` is at most
/// [`MAX_RSS_ANON`].
pub fn worth_it() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| rss_anon(&s))
        .is_some_and(|bytes| bytes <= MAX_RSS_ANON)
}

/// `RssAnon` in bytes from the text of `/proc/PID/status`.
fn rss_anon(status: &str) -> Option<u64> {
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    kb.checked_mul(1024)
}

/// How long a copy may send nothing at all before it is taken to be stuck
/// (DWARF indexing of a very large binary, before the first result).
const STALL: Duration = Duration::from_secs(60);

/// How often a silent copy's scheduler state is looked at.
const CHECK_EVERY_MS: i32 = 100;

/// A silent copy asleep at this many checks in a row waits on a lock that
/// nobody in it will release.
const STUCK_CHECKS: u32 = 3;

/// Ends every complete result; a result without it was cut short.
const TRAILER: &[u8; 8] = b"HPCOPY\0\x01";

/// The copy's end of the pipe.
pub struct Sink {
    fd: libc::c_int,
}

impl Sink {
    /// Writes all of `bytes` (the copy is killed if the reader goes away).
    pub fn write(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            // SAFETY: `bytes` is valid for reads of its length.
            let n = unsafe { libc::write(self.fd, bytes.as_ptr().cast(), bytes.len()) };
            if n < 0 {
                if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                exit(4);
            }
            bytes = &bytes[n as usize..];
        }
    }
}

/// Runs `work` in a copy of the process and returns everything it wrote,
/// or `None` if there was no copy or its work did not complete.
pub fn run(work: impl FnOnce(&mut Sink)) -> Option<Vec<u8>> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return None;
    }
    let [read_fd, write_fd] = fds;
    // SAFETY: a clone with no flags and no new stack is a fork without
    // glibc's wrapper: the child gets a copy of this address space with only
    // this thread, continuing from here. Exit signal 0: the parent gets no
    // SIGCHLD and only a `__WCLONE` wait sees the child.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            0 as libc::c_long,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if pid == 0 {
        // SAFETY: closing our copy of the read end, which nothing else here uses.
        unsafe { libc::close(read_fd) };
        in_copy(write_fd, work);
    }
    // SAFETY: the write end is ours; the copy holds its own.
    unsafe { libc::close(write_fd) };
    if pid < 0 {
        // SAFETY: the read end is ours, used by nothing else.
        unsafe { libc::close(read_fd) };
        return None;
    }
    let pid = pid as libc::pid_t;
    let (out, complete) = read_all(read_fd, pid);
    // SAFETY: as above.
    unsafe { libc::close(read_fd) };
    if !complete {
        // SAFETY: `pid` is our own child, not yet reaped (so not reused).
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    reap(pid);
    let mut out = out?;
    if !complete || !out.ends_with(TRAILER) {
        return None;
    }
    out.truncate(out.len() - TRAILER.len());
    Some(out)
}

/// The copy's side: quiet, then the work, then the trailer; never returns.
fn in_copy(fd: libc::c_int, work: impl FnOnce(&mut Sink)) -> ! {
    // SAFETY: plain system calls on this process's own state: every signal
    // blocked (so none of the program's handlers runs here), no core dump,
    // stdout and stderr onto /dev/null (the copy never writes the
    // program's output).
    unsafe {
        // Gone if the thread that made it ends before it does.
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        let mut all: libc::sigset_t = core::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, core::ptr::null_mut());
        let none = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        libc::setrlimit(libc::RLIMIT_CORE, &none);
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if null >= 0 {
            libc::dup2(null, 1);
            libc::dup2(null, 2);
            libc::close(null);
        }
    }
    if !copy_arena::enter() {
        exit(2);
    }
    let mut sink = Sink { fd };
    let done = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(&mut sink)));
    if done.is_err() {
        exit(3);
    }
    sink.write(TRAILER);
    exit(0)
}

/// Ends the copy at once: no atexit handler, no stdio flush (`_exit`).
fn exit(code: libc::c_int) -> ! {
    // SAFETY: ends this process (the copy) only.
    unsafe { libc::_exit(code) }
}

/// Everything from `fd` until end of file; false if the copy `pid` got
/// stuck or the bytes could not be kept (then what was read is dropped).
fn read_all(fd: libc::c_int, pid: libc::pid_t) -> (Option<Vec<u8>>, bool) {
    let mut out = Vec::new();
    let mut chunk = [0u8; 16 << 10];
    let mut deadline = Instant::now() + STALL;
    let mut asleep = 0;
    loop {
        if Instant::now() >= deadline {
            return (None, false);
        }
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut p, 1, CHECK_EVERY_MS) };
        if r < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return (None, false);
        }
        if r == 0 {
            asleep = if is_asleep(pid) { asleep + 1 } else { 0 };
            if asleep >= STUCK_CHECKS {
                return (None, false);
            }
            continue;
        }
        asleep = 0;
        // SAFETY: `chunk` is valid for writes of its length.
        let n = unsafe { libc::read(fd, chunk.as_mut_ptr().cast(), chunk.len()) };
        match n {
            0 => return (Some(out), true),
            n if n > 0 => {
                let n = n as usize;
                if out.try_reserve(n).is_err() {
                    return (None, false);
                }
                out.extend_from_slice(&chunk[..n]);
                deadline = Instant::now() + STALL;
            }
            _ if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted => {}
            _ => return (None, false),
        }
    }
}

/// Whether process `pid` is in an interruptible sleep (state `S` in
/// `/proc/PID/stat`, which is what waiting on a futex shows).
fn is_asleep(pid: libc::pid_t) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "PID (COMM) STATE ...": COMM may hold spaces and parentheses.
    stat.rsplit_once(')')
        .is_some_and(|(_, rest)| rest.trim_start().starts_with('S'))
}

/// Waits for the copy to end. ECHILD (the program reaped it with a
/// `__WALL` wait of its own) is fine: the result is judged by its trailer.
fn reap(pid: libc::pid_t) {
    loop {
        let mut status = 0;
        // SAFETY: waits for our own clone child; `status` is writable.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::__WCLONE) };
        if r >= 0 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_what_the_copy_wrote() {
        let out = run(|sink| {
            // Allocations in the copy come from its arena.
            let v: Vec<u64> = (0..10_000).collect();
            sink.write(format!("{}", v.iter().sum::<u64>()).as_bytes());
        });
        assert_eq!(out.as_deref(), Some(&b"49995000"[..]));
    }

    #[test]
    fn rss_anon_is_read_from_the_status_text() {
        let status = "Name:\tx\nRssAnon:\t   21632 kB\nRssFile:\t 3 kB\n";
        assert_eq!(rss_anon(status), Some(21632 * 1024));
        assert_eq!(rss_anon("Name:\tx\n"), None);
        // This test process is small: a copy is worth it.
        assert!(worth_it());
    }

    #[test]
    fn a_copy_that_dies_gives_none() {
        let out = run(|sink| {
            sink.write(b"partial");
            exit(9);
        });
        assert_eq!(out, None);
    }

    #[test]
    fn a_copy_stuck_on_a_lock_is_killed_and_gives_none() {
        // A lock held by another thread at the moment of the copy stays held
        // there for ever.
        static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let (release, held) = std::sync::mpsc::channel::<()>();
        let (locked, is_locked) = std::sync::mpsc::channel::<()>();
        let holder = std::thread::spawn(move || {
            let _g = LOCK.lock().unwrap();
            locked.send(()).unwrap();
            held.recv().unwrap();
        });
        is_locked.recv().unwrap();
        let t = Instant::now();
        let out = run(|sink| {
            let _g = LOCK.lock();
            sink.write(b"never");
        });
        assert_eq!(out, None);
        assert!(t.elapsed() < STALL / 2, "took {:?}", t.elapsed());
        release.send(()).unwrap();
        holder.join().unwrap();
    }

    #[test]
    fn a_panic_in_the_copy_gives_none_and_the_parent_goes_on() {
        let out = run(|_| panic!("in the copy"));
        assert_eq!(out, None);
    }
}

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
//!   in the copy are therefore served by [`crate::engine::arena_in_copy`],
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
//! # Whole dumps, from the watcher
//! The watcher (`crate::control::watcher`), which stands in for the dumper
//! thread in a single-threaded program under the preload library, has each
//! dump written by a copy (`crate::control::dump_in_copy`). It shares the main
//! thread's thread pointer, so the caller's side here ([`start`],
//! [`finish`], [`probe`]) makes raw system calls only. And since Linux keeps
//! user and group ids per thread, and glibc changes only those of the
//! threads it knows, a copy first takes the main thread's ids
//! (`adopt_credentials`): a daemon that gave up root writes its profiles as
//! itself.
//!
//! # Cost, and when a copy is not worth it
//! The `clone` copies the process's page tables (about 2 MB per GB of
//! resident memory, in the copy; a few milliseconds for a large process),
//! and pages are shared copy-on-write: every page the program writes while
//! the copy lives is duplicated until the copy exits. For a small process
//! both are small, and the copy saves the parse's megabytes. For a big,
//! busy one the duplicated pages could outweigh what the copy saves, while
//! parsing in-process adds only a few percent to its memory; so above
//! [`MAX_RSS_ANON`] of anonymous memory no copy is made ([`worth_it`]).

use std::time::Duration;

use crate::engine::arena_in_copy;
use crate::os::raw;

/// Anonymous resident memory above which the process parses in-process
/// rather than in a copy (see the module docs).
pub const MAX_RSS_ANON: u64 = 512 << 20;

/// Whether a copy is worth making now: the process's `RssAnon` is at most
/// [`MAX_RSS_ANON`].
pub fn worth_it() -> bool {
    crate::os::fds::read_to_string("/proc/self/status")
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
const CHECK_EVERY_NS: libc::c_long = CHECK_EVERY_MS as libc::c_long * 1_000_000;

/// A silent copy asleep at this many checks in a row waits on a lock that
/// nobody in it will release.
const STUCK_CHECKS: u32 = 3;
/// `-EINTR`, as the raw system calls return it.
const NEG_EINTR: isize = -(libc::EINTR as isize);

/// Ends every complete result; a result without it was cut short.
pub const TRAILER: &[u8; 8] = b"HPCOPY\0\x01";

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
            bytes = bytes.get(n as usize..).unwrap_or_default();
        }
    }
}

/// Runs `work` in a copy of the process and returns everything it wrote,
/// or `None` if there was no copy or its work did not complete.
pub fn run(work: impl FnOnce(&mut Sink)) -> Option<Vec<u8>> {
    let (pid, fd) = start(work)?;
    let mut out = Vec::new();
    let mut kept = true;
    let ended = finish(pid, fd, |bytes| {
        kept = out.try_reserve(bytes.len()).is_ok();
        if kept {
            out.extend_from_slice(bytes);
        }
        kept
    });
    if !ended.complete || !kept {
        return None;
    }
    let body = out.strip_suffix(TRAILER)?.len();
    out.truncate(body);
    Some(out)
}

/// Makes a copy of the process running `work`: in the caller, the copy's
/// pid and the read end of its pipe, for [`finish`]. Only raw system calls
/// run on the caller's side (the watcher thread makes copies too, see
/// [`crate::os::raw`]).
pub fn start(work: impl FnOnce(&mut Sink)) -> Option<(i32, i32)> {
    let [read_fd, write_fd] = crate::os::fds::pipe(0).ok()?;
    let parent = crate::os::pid() as i32;
    // SAFETY: the copy continues here with this thread alone and goes
    // straight into `in_copy`, which never returns.
    let pid = unsafe { raw::clone_process() };
    if pid == 0 {
        raw::close(read_fd);
        in_copy(parent, write_fd, work);
    }
    raw::close(write_fd);
    if pid < 0 {
        raw::close(read_fd);
        return None;
    }
    Some((pid as i32, read_fd))
}

/// How a copy ended, for [`finish`]'s caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ended {
    /// The copy ran to the end of its output.
    pub complete: bool,
    /// Its exit status, if it exited (rather than died of a signal).
    pub status: Option<i32>,
}

/// Whether a copy of the process can be made here (a seccomp filter or a
/// process limit may refuse one): one that exits at once, reaped. Raw
/// system calls only.
pub fn probe() -> bool {
    // SAFETY: the copy does nothing but end (`exit_group`, no handlers).
    let pid = unsafe { raw::clone_process() };
    if pid == 0 {
        loop {
            // SAFETY: ends the copy at once.
            unsafe { raw::syscall6(libc::SYS_exit_group, 0, 0, 0, 0, 0, 0) };
        }
    }
    pid > 0 && reap(pid as i32) == Some(0)
}

/// Hands everything the copy `pid` writes on `fd` to `take` (which returns
/// false to stop early) until the copy closes it, then closes `fd` and reaps
/// the copy. Incomplete if the copy got stuck (then it is killed) or `take`
/// stopped. Raw system calls only, as [`start`].
pub fn finish(pid: i32, fd: i32, mut take: impl FnMut(&[u8]) -> bool) -> Ended {
    let complete = read_all(fd, pid, &mut take);
    raw::close(fd);
    if !complete {
        raw::kill(pid, libc::SIGKILL);
    }
    let status = reap(pid);
    Ended { complete, status }
}

/// The copy's side: quiet, then the work, then the trailer; never returns.
fn in_copy(parent: i32, fd: libc::c_int, work: impl FnOnce(&mut Sink)) -> ! {
    crate::os::set_copy_of(parent);
    // SAFETY: plain system calls on this process's own state: every signal
    // blocked (so none of the program's handlers runs here), no core dump,
    // stdout and stderr onto /dev/null (the copy never writes the
    // program's output). (libc is fine here: this thread is the copy's
    // only one, whatever thread pointer it has.)
    unsafe {
        // Gone if the thread that made it ends before it does.
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        let mut all: libc::sigset_t = core::mem::zeroed();
        libc::sigfillset(&mut all);
        raw::set_mask(&all);
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
    if !arena_in_copy::enter() {
        exit(2);
    }
    if !adopt_credentials(parent) {
        exit(6);
    }
    let mut sink = Sink { fd };
    let done = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(&mut sink)));
    if done.is_err() {
        exit(3);
    }
    sink.write(TRAILER);
    exit(0)
}

/// Gives the copy the credentials of the process's main thread, in case
/// the thread that made it has others. Linux keeps user and group ids per
/// thread, and a single-threaded program's `setuid` changes only its main
/// thread's: the watcher (`control::watcher`), which glibc does not know,
/// keeps those it started with (root's, in a daemon that dropped them), and
/// a profile must be written as the program would write it. True if the
/// copy now has them (or had them already). Raw system calls: glibc's would
/// try to change every thread it knows of, and they are not in the copy.
fn adopt_credentials(parent: i32) -> bool {
    let Ok(status) = crate::os::fds::read_to_string(format!("/proc/{parent}/task/{parent}/status"))
    else {
        return true;
    };
    let ids = |key: &str| -> Option<Vec<u64>> {
        let line = status.lines().find_map(|l| l.strip_prefix(key))?;
        line.split_whitespace().map(|w| w.parse().ok()).collect()
    };
    let (Some(uid), Some(gid), Some(groups)) = (ids("Uid:"), ids("Gid:"), ids("Groups:")) else {
        return true;
    };
    let (&[u0, u1, u2, ..], &[g0, g1, g2, ..]) = (&uid[..], &gid[..]) else {
        return true;
    };
    let (mut r, mut e, mut sv) = (0u32, 0u32, 0u32);
    // SAFETY: three writable ids.
    unsafe { libc::getresuid(&mut r, &mut e, &mut sv) };
    let mut same = [r, e, sv]
        .iter()
        .zip(&uid)
        .all(|(a, b)| u64::from(*a) == *b);
    // SAFETY: three writable ids.
    unsafe { libc::getresgid(&mut r, &mut e, &mut sv) };
    same &= [r, e, sv]
        .iter()
        .zip(&gid)
        .all(|(a, b)| u64::from(*a) == *b);
    if same {
        return true;
    }
    let groups: Vec<libc::gid_t> = groups.iter().map(|&g| g as libc::gid_t).collect();
    let call = |nr: libc::c_long, a: u64, b: u64, c: u64| {
        // SAFETY: credential system calls on this process (the copy) alone,
        // with plain integer arguments (or the local list of groups).
        unsafe { raw::syscall6(nr, a as usize, b as usize, c as usize, 0, 0, 0) == 0 }
    };
    // Groups first, then group ids, then user ids (after which changing
    // the others may no longer be allowed).
    call(
        libc::SYS_setgroups,
        groups.len() as u64,
        groups.as_ptr() as u64,
        0,
    ) && call(libc::SYS_setresgid, g0, g1, g2)
        && call(libc::SYS_setresuid, u0, u1, u2)
}

/// Ends the copy at once: no atexit handler, no stdio flush (`_exit`).
fn exit(code: libc::c_int) -> ! {
    // SAFETY: ends this process (the copy) only.
    unsafe { libc::_exit(code) }
}

/// Gives `take` everything from `fd` until end of file; false if the copy
/// `pid` got stuck, a read failed or `take` stopped.
fn read_all(fd: i32, pid: i32, take: &mut impl FnMut(&[u8]) -> bool) -> bool {
    let mut chunk = [0u8; 16 << 10];
    let stall = STALL.as_nanos() as u64;
    let mut deadline = raw::monotonic_ns().saturating_add(stall);
    let mut asleep = 0u32;
    // SAFETY: a zeroed sigset_t is the empty set; the poll keeps the mask.
    let mut mask: libc::sigset_t = unsafe { core::mem::zeroed() };
    raw::current_mask(&mut mask);
    loop {
        if raw::monotonic_ns() >= deadline {
            return false;
        }
        let mut p = [libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        }];
        let every = libc::timespec {
            tv_sec: 0,
            tv_nsec: CHECK_EVERY_NS,
        };
        let r = raw::ppoll(&mut p, Some(&every), &mask);
        if r == NEG_EINTR {
            continue;
        }
        if r < 0 {
            return false;
        }
        if r == 0 {
            asleep = if is_asleep(pid) {
                asleep.saturating_add(1)
            } else {
                0
            };
            if asleep >= STUCK_CHECKS {
                return false;
            }
            continue;
        }
        asleep = 0;
        // SAFETY: `chunk` is valid for writes of its length.
        let n = unsafe { raw::read(fd, chunk.as_mut_ptr(), chunk.len()) };
        match n {
            0 => return true,
            n if n > 0 => {
                if !take(chunk.get(..n as usize).unwrap_or_default()) {
                    return false;
                }
                deadline = raw::monotonic_ns().saturating_add(stall);
            }
            n if n == NEG_EINTR => {}
            _ => return false,
        }
    }
}

/// Whether process `pid` is in an interruptible sleep (state `S` in
/// `/proc/PID/stat`, which is what waiting on a futex shows).
fn is_asleep(pid: i32) -> bool {
    let mut path = raw::LineBuf::<32>::new();
    if core::fmt::Write::write_fmt(&mut path, format_args!("/proc/{pid}/stat\0")).is_err() {
        return false;
    }
    let Ok(path) = core::ffi::CStr::from_bytes_until_nul(path.bytes()) else {
        return false;
    };
    let fd = crate::os::fds::open(path, libc::O_RDONLY);
    if fd < 0 {
        return false;
    }
    let mut buf = [0u8; 512];
    // SAFETY: a local buffer of that length.
    let n = unsafe { raw::read(fd, buf.as_mut_ptr(), buf.len()) };
    raw::close(fd);
    if n <= 0 {
        return false;
    }
    let stat = buf.get(..n as usize).unwrap_or_default();
    // "PID (COMM) STATE ...": COMM may hold spaces and parentheses.
    let after_comm = stat.rsplit(|&b| b == b')').next().unwrap_or_default();
    stat.contains(&b')') && after_comm.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'S')
}

/// Waits for the copy to end. ECHILD (the program reaped it with a
/// `__WALL` wait of its own) is fine: the result is judged by its trailer.
fn reap(pid: i32) -> Option<i32> {
    let mut status = 0;
    loop {
        match raw::wait_clone(pid, 0, &mut status) {
            r if r == NEG_EINTR => continue,
            r if r == pid as isize && libc::WIFEXITED(status) => {
                return Some(libc::WEXITSTATUS(status))
            }
            _ => return None,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use std::time::Instant;

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

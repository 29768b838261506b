//! Which processes are profiled: the one the user asked for, through every
//! `exec`, and its children only by choice.
//!
//! # Model
//! The library stays in `LD_PRELOAD`, so every program a profiled process
//! starts loads it too. What a program is to the user depends on how it
//! began, which the constructor tells by one number in the environment:
//! `HEAPPROF_PID=PID:TAG[:FD]` (the pid; the rest names the notification
//! socket below), written by the first profiled process (edited in the
//! `environ` array in place, see `env::set_var`) and inherited by
//! everything it starts.
//!
//! - **No `HEAPPROF_PID`**: the process the user started. Profiled.
//! - **`PID` is our own pid**: this process replaced its image with `execve`
//!   (a shim, `env VAR=… prog`, `nohup`, `exec ./server` at the end of a
//!   script, valgrind's launcher): the same process, so profiled, with the
//!   same settings, under the same pid. Sequence numbers restart at 0; a
//!   name an earlier image wrote is skipped, never replaced (see
//!   `heapprof::profile::output`). Chains of any length work.
//! - **Another pid**: a new process (fork + exec, `vfork`, `posix_spawn`,
//!   `system`, CPython's `subprocess`). Telling it by pid, not by a fork
//!   handler, is what makes the `vfork` and `posix_spawn` paths follow the
//!   rule: no atfork handler runs there, but the child always has a pid of
//!   its own. With `HEAPPROF_CHILDREN=1` it is profiled, records its own pid
//!   (for its own exec chain) and writes files under it. Otherwise the
//!   library is **inert** there: no engine, no dumper thread, no signal
//!   handler, no exit dump, and [`crate::unhook`] takes the hooks out of the
//!   process's calls, so it costs nothing per allocation either. The child's
//!   environment is left as it was given (`LD_PRELOAD` included: its own
//!   children are inert the same way, and launchers that re-exec, such as
//!   valgrind's, keep working).
//!
//! Forked children that do not exec are the profiled process's own code (a
//! pre-fork worker pool): they keep profiling, under their own pid, as the
//! fork handlers in `heapprof::control::triggers` arrange. A process reusing a
//! recorded pid (wrapped around) would be taken for the exec case; that
//! takes a descendant outliving the whole pid space.
//!
//! # Telling the user
//! An inert child knows it was skipped; the profiled process must say so,
//! once. The first profiled image binds an abstract-namespace unix datagram
//! socket named `heapprof.PID.TAG` (`TAG` random): no file, gone with the
//! process. The inert child's constructor sends it an empty datagram; the
//! profiled process's dumper thread watches the socket (with its dump pipe)
//! and, at the first datagram or at exit, prints one line naming
//! `HEAPPROF_CHILDREN=1`, and closes the socket. The first skipped child
//! waits (up to 200 ms, polling every millisecond) until its sends are
//! refused, i.e. the line is out: a parent that ends with `_exit` (dash)
//! right after the child could otherwise go before its dumper thread ran.
//! Later children find the socket closed at once.
//!
//! Once per process, not per image: the socket's descriptor is recorded too
//! (`HEAPPROF_PID=PID:TAG:FD`), so the next image of the same process
//! adopts it (checked by name with `getsockname`), and once it has been
//! closed no later image listens again. Like every descriptor of heapprof's
//! it is high and close-on-exec (see `heapprof::os::fds`): the process's
//! own `exec` functions, interposed in [`crate::signals`], clear the flag
//! just for that call ([`before_exec`]: only in the process that made the
//! socket, so no new process, whether it loads the library or is static
//! or setuid, ever receives it) and the image adopting it sets the flag
//! again. An `exec` that bypasses the interposed functions (a raw system
//! call) closes it: the next image then does not listen. A new process
//! that inherits the descriptor anyway (forked by another thread while an
//! `exec` was under way) closes it in its constructor. Children of forked
//! children, whose environment names the profiled ancestor, are reported
//! by that ancestor; a datagram sent after the profiled process exited is
//! lost.

use core::ffi::c_void;
use core::sync::atomic::{AtomicBool, Ordering};
use heapprof::ffi_surface::control;
use heapprof::ffi_surface::os;

use heapprof::ffi_surface::control::config;
use heapprof::ffi_surface::control::triggers::say;
use heapprof::ffi_surface::os::{fds, raw};

use crate::env;

/// The variable recording the profiled process: `PID:TAG[:FD]`.
const VAR: &str = "HEAPPROF_PID";

/// Set in a process the library stays inert in.
static INERT: AtomicBool = AtomicBool::new(false);
/// The notification socket of this profiled image (none: -1), with the
/// file it is (to tell it from a descriptor the program reused) and the
/// process that made it (a forked child inherits the descriptor, not the
/// role).
static SOCKET: fds::Held = fds::Held::new();

/// The line a profiled process prints (once) when programs it started were
/// not profiled.
pub const SKIPPED: &str = "heapprof: programs this process started were not profiled (set HEAPPROF_CHILDREN=1, or run it with `heapprof run --children`, to profile them too)";

/// Whether the library is inert in this process.
#[inline]
pub fn inert() -> bool {
    INERT.load(Ordering::Relaxed)
}

/// Decides this process's role (see the module docs) and sets it up: for a
/// profiled one, records its pid and opens the notification socket, and
/// returns true; for an inert one, tells the profiled process, unhooks, and
/// returns false. Called once, from the constructor.
pub fn profile_this_process() -> bool {
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() };
    let recorded = config::getenv(VAR).and_then(parse);
    // The socket an earlier image of this process left open for us, or a
    // profiled parent's copy that this new process inherited.
    let inherited = recorded.and_then(|r| r.fd.filter(|&fd| is_socket_of(fd, r.pid, r.tag)));
    let same_process = recorded.is_some_and(|r| r.pid == me);
    if !same_process {
        if let Some(fd) = inherited {
            // Not this process's to keep (see the module docs).
            // SAFETY: a descriptor this process inherited and never used.
            unsafe { libc::close(fd) };
        }
    }
    let profiled = recorded.is_none() || same_process || children_wanted();
    if !profiled {
        if let Some(r) = recorded {
            notify(r.pid, r.tag);
        }
        INERT.store(true, Ordering::Relaxed);
        crate::tls::state().enter_forever();
        crate::unhook::unhook();
        return false;
    }
    let (tag, fd) = match recorded {
        // The exec chain goes on: same name, same socket (if still open:
        // closed once the line was printed).
        Some(r) if same_process => (r.tag, inherited),
        // A new root (first, or a child asked for): with
        // HEAPPROF_CHILDREN=1 no child is ever skipped, so nothing to hear.
        _ => {
            let tag = new_tag();
            (
                tag,
                if children_wanted() {
                    None
                } else {
                    listen(me, tag)
                },
            )
        }
    };
    match fd {
        Some(fd) => {
            // Adopted from the previous image without it (see the module
            // docs); a no-op on a socket just made.
            set_cloexec(fd, true);
            SOCKET.set(fd);
            env::set_var(VAR, &format!("{me}:{tag:016x}:{fd}"));
        }
        None => env::set_var(VAR, &format!("{me}:{tag:016x}")),
    }
    control::wake::set_note_source(control::wake::NoteSource {
        fd: || SOCKET.raw(),
        take: note,
    });
    true
}

/// `HEAPPROF_CHILDREN`, with one line on stderr (from a profiled process
/// only: inert ones never print) if it is not valid.
fn children_wanted() -> bool {
    match config::getenv("HEAPPROF_CHILDREN") {
        None => false,
        Some(v) => config::parse_bool(v).unwrap_or_else(|| {
            static SAID: AtomicBool = AtomicBool::new(false);
            if !SAID.swap(true, Ordering::Relaxed) && !inert_by_pid() {
                say(&format!(
                    "heapprof: HEAPPROF_CHILDREN={v:?} is not valid: use 1 or 0; using the default (0: programs this one runs are not profiled)"
                ));
            }
            false
        }),
    }
}

/// Whether the recorded pid is another process's (so this one is a child).
fn inert_by_pid() -> bool {
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() };
    config::getenv(VAR)
        .and_then(parse)
        .is_some_and(|r| r.pid != me)
}

/// What `HEAPPROF_PID` says.
#[derive(Clone, Copy)]
struct Recorded {
    pid: i32,
    tag: u64,
    /// The notification socket's descriptor, while it is open.
    fd: Option<i32>,
}

/// `PID:TAG[:FD]` (TAG in hex).
fn parse(v: &str) -> Option<Recorded> {
    let mut parts = v.trim().split(':');
    let pid = parts.next()?.parse().ok()?;
    let tag = u64::from_str_radix(parts.next()?, 16).ok()?;
    let fd = parts.next().and_then(|f| f.parse().ok());
    Some(Recorded { pid, tag, fd })
}

/// Whether `fd` is the notification socket `heapprof.PID.TAG`.
fn is_socket_of(fd: i32, pid: i32, tag: u64) -> bool {
    let (want, want_len) = address(pid, tag);
    // SAFETY: all-zero is a valid sockaddr_un; getsockname writes at most
    // `len` bytes into it.
    unsafe {
        let mut got: libc::sockaddr_un = core::mem::zeroed();
        let mut len = core::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
        libc::getsockname(fd, (&mut got as *mut libc::sockaddr_un).cast(), &mut len) == 0
            && len == want_len
            && got.sun_path == want.sun_path
    }
}

fn new_tag() -> u64 {
    let mut tag = 0u64;
    // SAFETY: getrandom writes at most 8 bytes into `tag`.
    let n = unsafe {
        libc::getrandom(
            (&mut tag as *mut u64).cast(),
            core::mem::size_of::<u64>(),
            libc::GRND_NONBLOCK,
        )
    };
    if n != 8 {
        // No entropy yet (early boot): time and an ASLR'd address.
        tag = os::realtime_ns() ^ (&tag as *const u64 as u64).rotate_left(32);
    }
    tag
}

/// The abstract socket address `\0heapprof.PID.TAG` and its length.
fn address(pid: i32, tag: u64) -> (libc::sockaddr_un, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_un.
    let mut a: libc::sockaddr_un = unsafe { core::mem::zeroed() };
    a.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let name = format!("heapprof.{pid}.{tag:016x}");
    // sun_path[0] stays 0: the abstract namespace.
    for (d, s) in a.sun_path[1..].iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    let used = 1 + name.len().min(a.sun_path.len() - 1);
    let len = core::mem::offset_of!(libc::sockaddr_un, sun_path) + used;
    (a, len as libc::socklen_t)
}

/// Binds the notification socket; its descriptor, high and close-on-exec
/// (see the module docs).
fn listen(pid: i32, tag: u64) -> Option<i32> {
    let (addr, len) = address(pid, tag);
    // SAFETY: plain socket calls on a descriptor we own; `addr` is valid for
    // `len` bytes.
    unsafe {
        let fd = libc::socket(
            libc::AF_UNIX,
            libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        );
        if fd < 0 {
            return None;
        }
        let fd = fds::move_high(fd);
        if libc::bind(fd, (&addr as *const libc::sockaddr_un).cast(), len) != 0 {
            libc::close(fd);
            return None;
        }
        Some(fd)
    }
}

/// Sets or clears `fd`'s close-on-exec flag (a raw system call: errno is
/// left alone, for the `exec` wrappers).
fn set_cloexec(fd: i32, on: bool) {
    let flag = if on { libc::FD_CLOEXEC } else { 0 };
    // SAFETY: F_SETFD on a descriptor of ours; no memory involved.
    unsafe {
        raw::syscall6(
            libc::SYS_fcntl,
            fd as usize,
            libc::F_SETFD as usize,
            flag as usize,
            0,
            0,
            0,
        )
    };
}

/// Called by the `exec` wrappers just before the real call: in the process
/// that made the notification socket, lets it survive this `exec` for the
/// next image to adopt; returns it (-1: none) for [`exec_failed`]. Raw
/// system calls only, errno untouched (a `vfork` child may be calling:
/// it changes nothing shared, as it is not the socket's process).
pub fn before_exec() -> i32 {
    if !SOCKET.made_here() {
        return -1;
    }
    // Taken, so the dumper does not close it under the `exec`.
    let fd = SOCKET.take();
    if fd >= 0 {
        set_cloexec(fd, false);
    }
    fd
}

/// The `exec` failed: the socket [`before_exec`] returned is close-on-exec
/// and watched again.
pub fn exec_failed(fd: i32) {
    if fd >= 0 {
        set_cloexec(fd, true);
        SOCKET.set(fd);
    }
}

/// Longest an inert child waits for the profiled process to print.
const NOTIFY_WAIT_MS: u32 = 200;

/// From an inert child: an empty datagram to the profiled process, then —
/// so the line is out before a parent that ends with `_exit` (dash) is
/// gone — a wait until the profiled process has printed it and closed the
/// socket (further sends are refused), at most [`NOTIFY_WAIT_MS`]. Only
/// the first skipped child of a process waits: later ones find the socket
/// closed at once. Fails silently (the profiled process has exited, or
/// never listened).
fn notify(pid: i32, tag: u64) {
    let (addr, len) = address(pid, tag);
    // SAFETY: a socket we own, sends of zero bytes to a valid address, and
    // sleeps on a local timespec.
    unsafe {
        let fd = libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return;
        }
        for _ in 0..NOTIFY_WAIT_MS {
            let sent = libc::sendto(
                fd,
                core::ptr::null::<c_void>(),
                0,
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                (&addr as *const libc::sockaddr_un).cast(),
                len,
            );
            if sent < 0 && *libc::__errno_location() != libc::EAGAIN {
                // Refused: printed (or nobody listens).
                break;
            }
            let ms = libc::timespec {
                tv_sec: 0,
                tv_nsec: 1_000_000,
            };
            libc::nanosleep(&ms, core::ptr::null_mut());
        }
        libc::close(fd);
    }
}

/// The note source of the dumper thread and the watcher (see
/// `heapprof::control::triggers`): the skipped children line, the first time a
/// datagram is waiting.
fn note() -> Option<&'static str> {
    // Raw system calls only: the watcher thread asks too, which must never
    // touch errno (see `heapprof::control::watcher`).
    let fd = SOCKET.raw();
    if fd < 0 {
        return None;
    }
    // Never read from a descriptor the program reused for its own.
    if SOCKET.get().is_none() || !SOCKET.made_here() {
        // A forked child's copy (the parent reports: closed here), or not
        // ours any more (forgotten).
        SOCKET.close();
        return None;
    }
    let mut byte = 0u8;
    // SAFETY: a non-blocking receive into a one-byte local buffer.
    if unsafe { raw::recv_nowait(fd, &mut byte, 1) } < 0 {
        return None;
    }
    // Shut, not only closed: the dumper or watcher asking may have a
    // descriptor table of its own (`heapprof::os::own_table`), where a
    // close leaves the program's copy open; a shut socket refuses later
    // children at once, as a closed one did.
    // SAFETY: shutdown(2) on our socket (checked above); no memory touched.
    unsafe {
        raw::syscall6(
            libc::SYS_shutdown,
            fd as usize,
            libc::SHUT_RD as usize,
            0,
            0,
            0,
            0,
        )
    };
    SOCKET.close();
    Some(SKIPPED)
}

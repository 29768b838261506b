//! heapprof's own descriptor table: its threads open their files, pipes
//! and sockets where the program's descriptor numbers are not.
//!
//! # Why
//! The kernel gives every new descriptor the lowest free number of the
//! table it is made in. In the program's table, a descriptor heapprof made
//! after start-up (a dump's file, a `/proc` read, a copy's pipe, an HTTP
//! connection) could take a number the program had just freed and meant to
//! fill again: a thread that closes its stdout and `dup2`s another file
//! onto 1 has its `dup2` close heapprof's descriptor instead, and
//! heapprof's move of "its" descriptor to a high number
//! ([`crate::os::fds::move_high`]) then closes the program's stdout. (A
//! CPython regression-test worker lost its stdout so.) No check closes that
//! window: there is no atomic "close if still mine".
//!
//! # How
//! heapprof's own threads that do such work call [`enter`] first thing:
//! the watcher (`crate::control::watcher`), which stands in for the dumper
//! in a single-threaded program under the preload library and has a copy
//! of the process write each dump, and the dumper thread when glibc does
//! not count it (`crate::control::lifetime`), with the HTTP threads it
//! starts. [`enter`] gives the thread a table of its own
//! (`unshare(CLONE_FILES)`), a copy of the program's, and at once closes
//! in it everything but heapprof's own long-lived descriptors
//! ([`crate::os::fds::held_now`]): a copy that held the program's pipes
//! and sockets open would keep their readers from ever seeing an end (a
//! test waiting for a child's pipe to close hung so). From then on nothing
//! those threads open is in the program's table, even for an instant; what
//! the program closes, `dup2`s over or lists never reaches them; and the
//! copies of the process they make inherit the private table. Closing
//! there never releases the program's POSIX record locks: Linux keys them
//! to the table they were taken through.
//!
//! Only a thread that never runs the program's code may leave the table:
//! glibc runs the program's exit (its `atexit` handlers, its stdio flush)
//! on the last thread it counts, and once the program's threads are gone
//! so is their table. So the dumper takes a table of its own only when
//! glibc does not count it; otherwise it keeps to [`crate::os::fds`]'s
//! rules in the shared table.
//!
//! Numbers 0, 1 and 2 of the private table hold a marker (the read end of
//! a pipe of its own), so nothing of heapprof's lands there and a stray
//! write to them goes nowhere. Lines for the program's stderr are written
//! through [`write_stderr`], which, in a private table, takes a duplicate
//! of the program's descriptor 2 as it is at that moment
//! (`pidfd_getfd`, through a pidfd of the process kept at a fixed high
//! number), writes, and closes it: heapprof never holds the program's
//! stderr open.
//!
//! Where the kernel lacks or refuses any of `unshare`, `close_range`,
//! `pidfd_open` or `pidfd_getfd` (before Linux 5.9, or under a seccomp
//! filter), [`enter`] changes nothing and the thread shares the program's
//! table as before, under [`crate::os::fds`]'s rules alone.
//!
//! Raw system calls only, no allocation, no TLS: the watcher calls in too.

use core::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};

use super::{fds, raw};

/// Where a private table keeps the pidfd of the process (`-1`: no private
/// table was made); the same number in every private table.
static PIDFD_AT: AtomicI32 = AtomicI32::new(-1);
/// The markers on 0, 1 and 2 of the private tables alive (inodes of
/// their pipes; 0: free), so [`write_stderr`] can tell which table it is in.
static MARKERS: [AtomicU64; MARKER_SLOTS] = [const { AtomicU64::new(0) }; MARKER_SLOTS];
const MARKER_SLOTS: usize = 4;
/// A private table was made in this process (or the one it was forked
/// from): [`write_stderr`] looks further only then.
static ACTIVE: AtomicBool = AtomicBool::new(false);

/// Gives the calling thread a descriptor table of its own holding only
/// heapprof's long-lived descriptors (see the module doc). True if it now
/// has one; false if the kernel would not (nothing changed then).
pub fn enter() -> bool {
    // Each call the private table needs, tried first where an error
    // changes nothing: pid 0 and descriptor -1 are refused by a kernel
    // that has the call (EINVAL, EBADF) and by one that lacks it or a
    // filter that refuses it otherwise (ENOSYS, EPERM).
    const EINVAL: isize = -(libc::EINVAL as isize);
    const EBADF: isize = -(libc::EBADF as isize);
    if raw::pidfd_open(0) != EINVAL
        || raw::pidfd_getfd(-1, 2) != EBADF
        || raw::close_range(2, 1) != EINVAL
    {
        return false;
    }
    if raw::unshare_files() != 0 {
        return false;
    }
    // Everything but heapprof's own goes, in ascending gaps between them.
    let mut keep = [0i32; 16];
    let n = fds::held_now(&mut keep);
    let keep = keep.get_mut(..n).unwrap_or_default();
    keep.sort_unstable();
    let mut first = 0u32;
    for &fd in keep.iter() {
        if fd as u32 > first {
            raw::close_range(first, (fd as u32).saturating_sub(1));
        }
        first = (fd as u32).saturating_add(1);
    }
    raw::close_range(first, u32::MAX);
    place_marker(keep);
    let at = fds::top();
    let pidfd = raw::pidfd_open(raw::getpid());
    if pidfd >= 0 {
        let pidfd = pidfd as i32;
        // At the fixed number unless the descriptor limit is tiny.
        let placed = if pidfd != at && raw::dup3_cloexec(pidfd, at) == at as isize {
            raw::close(pidfd);
            at
        } else {
            pidfd
        };
        PIDFD_AT.store(placed, Ordering::Release);
    }
    ACTIVE.store(true, Ordering::Release);
    true
}

/// Fills 0, 1 and 2 (those not kept) with the read end of a new pipe, and
/// lists its inode.
fn place_marker(keep: &[i32]) {
    let Ok([r, w]) = raw::pipe2(libc::O_CLOEXEC) else {
        return;
    };
    raw::close(w);
    for fd in 0..3 {
        if fd != r && !keep.contains(&fd) {
            raw::dup3_cloexec(r, fd);
        }
    }
    let ino = raw::inode(r).max(1);
    if r > 2 {
        raw::close(r);
    }
    let free = MARKERS.iter().find(|m| {
        m.compare_exchange(0, ino, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    });
    if free.is_none() {
        // More private tables than slots (threads come and go): reuse.
        if let Some(m) = MARKERS.get(ino as usize % MARKER_SLOTS) {
            m.store(ino, Ordering::Release);
        }
    }
}

/// Whether the calling thread is in one of heapprof's private tables.
pub fn in_private_table() -> bool {
    if !ACTIVE.load(Ordering::Acquire) {
        return false;
    }
    let Some(st) = raw::fstat(2) else {
        return false;
    };
    st.st_mode & libc::S_IFMT == libc::S_IFIFO
        && MARKERS
            .iter()
            .any(|m| m.load(Ordering::Acquire) == st.st_ino)
}

/// Writes `parts` (at most four: one line), one after the other, in one
/// system call, to the program's stderr from whichever table the calling
/// thread is in (dropped if the program's descriptor 2 cannot be reached).
/// Raw system calls, errno untouched.
pub fn write_stderr(parts: &[&[u8]]) {
    let (fd, taken) = if in_private_table() {
        let fd = raw::pidfd_getfd(PIDFD_AT.load(Ordering::Acquire), 2);
        if fd < 0 {
            return;
        }
        (fd as i32, true)
    } else {
        (2, false)
    };
    raw::writev_all(fd, parts);
    if taken {
        raw::close(fd);
    }
}

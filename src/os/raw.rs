//! System calls without libc, for code that runs on heapprof's watcher
//! thread ([`crate::control::watcher`]).
//!
//! That thread is made with a bare `clone` and shares the main thread's
//! thread pointer: anything reached through it (glibc's `errno`, which every
//! libc wrapper writes on failure, the thread's TLS, stack-protector
//! canaries) is the main thread's. So the watcher makes its system calls
//! here: each returns the kernel's result, `-errno` on failure, and touches
//! nothing but its arguments. Only x86-64 and AArch64 are written out; on
//! other targets [`SUPPORTED`] is false and heapprof keeps an ordinary
//! dumper thread.

#![allow(clippy::too_many_arguments)]

/// Whether this target has raw system calls here (and so a watcher).
pub const SUPPORTED: bool = cfg!(any(target_arch = "x86_64", target_arch = "aarch64"));

/// A system call with six arguments (unused ones 0): the kernel's result.
///
/// # Safety
/// As the system call `nr` with these arguments.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub unsafe fn syscall6(
    nr: libc::c_long,
    a: usize,
    b: usize,
    c: usize,
    d: usize,
    e: usize,
    f: usize,
) -> isize {
    let ret: isize;
    // SAFETY: the caller's contract; `syscall` clobbers rcx and r11 only.
    unsafe {
        core::arch::asm!(
            "syscall",
            inlateout("rax") nr as isize => ret,
            in("rdi") a,
            in("rsi") b,
            in("rdx") c,
            in("r10") d,
            in("r8") e,
            in("r9") f,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

/// A system call with six arguments (unused ones 0): the kernel's result.
///
/// # Safety
/// As the system call `nr` with these arguments.
#[cfg(target_arch = "aarch64")]
#[inline(always)]
pub unsafe fn syscall6(
    nr: libc::c_long,
    a: usize,
    b: usize,
    c: usize,
    d: usize,
    e: usize,
    f: usize,
) -> isize {
    let ret: isize;
    // SAFETY: the caller's contract; `svc 0` clobbers nothing else.
    unsafe {
        core::arch::asm!(
            "svc 0",
            in("x8") nr,
            inlateout("x0") a => ret,
            in("x1") b,
            in("x2") c,
            in("x3") d,
            in("x4") e,
            in("x5") f,
            options(nostack),
        );
    }
    ret
}

/// Not supported here: always `-ENOSYS` (see [`SUPPORTED`]).
///
/// # Safety
/// None needed.
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
pub unsafe fn syscall6(
    _nr: libc::c_long,
    _a: usize,
    _b: usize,
    _c: usize,
    _d: usize,
    _e: usize,
    _f: usize,
) -> isize {
    -(libc::ENOSYS as isize)
}

/// Starts a thread of this process on `stack_top` (16-byte aligned) running
/// `entry`, which must never return (it ends with [`exit_thread`]). The
/// thread shares everything with the caller, its thread pointer included
/// (no `CLONE_SETTLS`), and glibc knows nothing of it. Returns its thread id
/// or `-errno`; `tid` gets the id and is cleared (with a futex wake) when
/// the thread has ended.
///
/// # Safety
/// `stack_top` ends a writable region the thread alone uses for its life;
/// `tid` stays valid as long as the thread runs; `entry` touches nothing
/// through the thread pointer.
pub unsafe fn spawn_thread(
    stack_top: *mut u8,
    entry: extern "C" fn() -> !,
    tid: *mut i32,
) -> isize {
    let flags = (libc::CLONE_VM
        | libc::CLONE_FS
        | libc::CLONE_FILES
        | libc::CLONE_SIGHAND
        | libc::CLONE_THREAD
        | libc::CLONE_SYSVSEM
        | libc::CLONE_PARENT_SETTID
        | libc::CLONE_CHILD_CLEARTID) as usize;
    let ret: isize;
    #[cfg(target_arch = "x86_64")]
    // SAFETY: clone(flags, stack, ptid, ctid, tls). In the new thread only
    // rax (0) and rsp (the new stack) differ: it calls `entry` from there,
    // with the stack aligned as a call expects, and never comes back here.
    unsafe {
        core::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "xor ebp, ebp",
            "and rsp, -16",
            "call r12",
            "ud2",
            "2:",
            inlateout("rax") libc::SYS_clone as isize => ret,
            in("rdi") flags,
            in("rsi") stack_top,
            in("rdx") tid,
            in("r10") tid,
            in("r8") 0usize,
            in("r12") entry,
            lateout("rcx") _,
            lateout("r11") _,
        );
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: clone(flags, stack, ptid, tls, ctid); as above, the new thread
    // branches to `entry` on its own stack and never comes back.
    unsafe {
        core::arch::asm!(
            "svc 0",
            "cbnz x0, 2f",
            "mov x29, xzr",
            "mov x30, xzr",
            "blr x9",
            "brk #0",
            "2:",
            in("x8") libc::SYS_clone,
            inlateout("x0") flags => ret,
            in("x1") stack_top,
            in("x2") tid,
            in("x3") 0usize,
            in("x4") tid,
            in("x9") entry,
        );
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        let _ = (flags, stack_top, entry, tid);
        ret = -(libc::ENOSYS as isize);
    }
    ret
}

/// A copy of the process (`clone` with no flags: `fork` without glibc's
/// wrapper, no exit signal): 0 in the copy, its pid in the caller, or
/// `-errno`.
///
/// # Safety
/// The copy continues from here with one thread; see
/// [`crate::profile::forked_copy`] for what it may do.
pub unsafe fn clone_process() -> isize {
    // SAFETY: no flags, no new stack: the copy returns here on a copy of
    // this stack.
    unsafe { syscall6(libc::SYS_clone, 0, 0, 0, 0, 0, 0) }
}

/// Ends the calling thread only (not the process).
pub fn exit_thread() -> ! {
    loop {
        // SAFETY: exit(2) ends this thread; it does not return.
        unsafe { syscall6(libc::SYS_exit, 0, 0, 0, 0, 0, 0) };
    }
}

/// `read(2)`.
///
/// # Safety
/// `buf` is valid for writes of `len` bytes.
pub unsafe fn read(fd: i32, buf: *mut u8, len: usize) -> isize {
    // SAFETY: the caller's contract.
    unsafe { syscall6(libc::SYS_read, fd as usize, buf as usize, len, 0, 0, 0) }
}

/// `write(2)` of all of `bytes` (short writes continued, errors dropped).
pub fn write_all(fd: i32, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        // SAFETY: `bytes` is valid for reads of its length.
        let n = unsafe {
            syscall6(
                libc::SYS_write,
                fd as usize,
                bytes.as_ptr() as usize,
                bytes.len(),
                0,
                0,
                0,
            )
        };
        if n == -(libc::EINTR as isize) {
            continue;
        }
        if n <= 0 {
            return;
        }
        bytes = &bytes[n as usize..];
    }
}

/// `parts` written one after the other to `fd`, in one `writev(2)` when
/// the kernel takes it whole (a line said this way is not interleaved with
/// another process's writes to the same pipe or terminal); a short write
/// is continued part by part, and errors dropped. At most four parts.
pub fn writev_all(fd: i32, parts: &[&[u8]]) {
    let mut iov = [libc::iovec {
        iov_base: core::ptr::null_mut(),
        iov_len: 0,
    }; 4];
    for (v, part) in iov.iter_mut().zip(parts) {
        v.iov_base = part.as_ptr() as *mut libc::c_void;
        v.iov_len = part.len();
    }
    let count = parts.len().min(iov.len());
    // SAFETY: `count` iovecs, each naming a live byte slice of its length.
    let n = unsafe {
        syscall6(
            libc::SYS_writev,
            fd as usize,
            iov.as_ptr() as usize,
            count,
            0,
            0,
            0,
        )
    };
    if n < 0 && n != -(libc::EINTR as isize) {
        return;
    }
    // What is left (a short write, an interruption, parts past four).
    let mut done = n.max(0) as usize;
    for part in parts {
        let skip = done.min(part.len());
        done -= skip;
        write_all(fd, &part[skip..]);
    }
}

/// `close(2)`.
pub fn close(fd: i32) {
    // SAFETY: closing a descriptor the caller owns.
    unsafe { syscall6(libc::SYS_close, fd as usize, 0, 0, 0, 0, 0) };
}

/// A system call whose arguments are plain integers (no memory passed):
/// its result or `-errno`.
fn call_ints(nr: libc::c_long, a: usize, b: usize, c: usize, d: usize) -> isize {
    // SAFETY: only for calls that take no pointer (descriptors, numbers,
    // flags): none can touch memory of this process's.
    unsafe { syscall6(nr, a, b, c, d, 0, 0) }
}

/// Gives the calling thread a descriptor table of its own, a copy of the
/// one it shared (`unshare(CLONE_FILES)`): 0 or `-errno`.
pub fn unshare_files() -> isize {
    call_ints(libc::SYS_unshare, libc::CLONE_FILES as usize, 0, 0, 0)
}

/// `close_range(first, last, 0)`: 0 or `-errno`.
pub fn close_range(first: u32, last: u32) -> isize {
    call_ints(libc::SYS_close_range, first as usize, last as usize, 0, 0)
}

/// `dup3(fd, to, O_CLOEXEC)`: `to` or `-errno`.
pub fn dup3_cloexec(fd: i32, to: i32) -> isize {
    call_ints(
        libc::SYS_dup3,
        fd as usize,
        to as usize,
        libc::O_CLOEXEC as usize,
        0,
    )
}

/// `pidfd_open(pid, 0)`: the descriptor or `-errno`.
pub fn pidfd_open(pid: i32) -> isize {
    call_ints(libc::SYS_pidfd_open, pid as usize, 0, 0, 0)
}

/// `pidfd_getfd(pidfd, fd, 0)`: a duplicate (close-on-exec), in the
/// caller's table, of descriptor `fd` of the process `pidfd` names, or
/// `-errno`.
pub fn pidfd_getfd(pidfd: i32, fd: i32) -> isize {
    call_ints(libc::SYS_pidfd_getfd, pidfd as usize, fd as usize, 0, 0)
}

/// `fcntl(fd, F_DUPFD_CLOEXEC, min)`: the new descriptor or `-errno`.
pub fn dup_cloexec_at_least(fd: i32, min: i32) -> i32 {
    // SAFETY: duplicating a descriptor; no memory involved.
    unsafe {
        syscall6(
            libc::SYS_fcntl,
            fd as usize,
            libc::F_DUPFD_CLOEXEC as usize,
            min as usize,
            0,
            0,
            0,
        ) as i32
    }
}

/// Gives the CPU to another runnable thread, if there is one (errno
/// untouched: a raw call).
pub fn yield_now() {
    // SAFETY: sched_yield takes no arguments and cannot fail.
    unsafe { syscall6(libc::SYS_sched_yield, 0, 0, 0, 0, 0, 0) };
}

/// Sleeps `ns` nanoseconds (a signal may end it early).
pub fn sleep_ns(ns: u64) {
    let ts = libc::timespec {
        tv_sec: (ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (ns % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: a valid timespec; no remainder asked for.
    unsafe {
        syscall6(
            libc::SYS_nanosleep,
            &ts as *const libc::timespec as usize,
            0,
            0,
            0,
            0,
            0,
        )
    };
}

/// `pipe2(2)`: `[read, write]`, or `-errno`.
pub fn pipe2(flags: i32) -> Result<[i32; 2], isize> {
    let mut fds = [-1i32; 2];
    // SAFETY: `fds` has room for the two descriptors.
    let r = unsafe {
        syscall6(
            libc::SYS_pipe2,
            fds.as_mut_ptr() as usize,
            flags as usize,
            0,
            0,
            0,
            0,
        )
    };
    if r < 0 {
        Err(r)
    } else {
        Ok(fds)
    }
}

/// `ppoll(2)`: `timeout` none waits for ever; `mask` is the signal mask
/// during the wait.
pub fn ppoll(
    fds: &mut [libc::pollfd],
    timeout: Option<&libc::timespec>,
    mask: &libc::sigset_t,
) -> isize {
    let ts = timeout.map_or(0, |t| t as *const libc::timespec as usize);
    // SAFETY: valid pollfds, timeout and mask (the kernel's sigset is 8
    // bytes, the first word of glibc's).
    unsafe {
        syscall6(
            libc::SYS_ppoll,
            fds.as_mut_ptr() as usize,
            fds.len(),
            ts,
            mask as *const libc::sigset_t as usize,
            8,
            0,
        )
    }
}

/// `rt_sigprocmask(2)` of the calling thread: `SIG_SETMASK` to `set`.
pub fn set_mask(set: &libc::sigset_t) {
    // SAFETY: a valid set; the old mask is not asked for.
    unsafe {
        syscall6(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK as usize,
            set as *const libc::sigset_t as usize,
            0,
            8,
            0,
            0,
        )
    };
}

/// The calling thread's signal mask, into `out`.
pub fn current_mask(out: &mut libc::sigset_t) {
    // SAFETY: a valid out-set; no new mask.
    unsafe {
        syscall6(
            libc::SYS_rt_sigprocmask,
            libc::SIG_BLOCK as usize,
            0,
            out as *mut libc::sigset_t as usize,
            8,
            0,
            0,
        )
    };
}

/// `getpid(2)`.
pub fn getpid() -> i32 {
    // SAFETY: no arguments.
    unsafe { syscall6(libc::SYS_getpid, 0, 0, 0, 0, 0, 0) as i32 }
}

/// `gettid(2)`.
pub fn gettid() -> i32 {
    // SAFETY: no arguments.
    unsafe { syscall6(libc::SYS_gettid, 0, 0, 0, 0, 0, 0) as i32 }
}

/// `kill(2)`.
pub fn kill(pid: i32, sig: i32) {
    // SAFETY: sends a signal; no memory involved.
    unsafe { syscall6(libc::SYS_kill, pid as usize, sig as usize, 0, 0, 0, 0) };
}

/// `wait4(pid, &status, __WCLONE | flags, NULL)`: the pid reaped, 0 or
/// `-errno`; `status` gets the wait status.
pub fn wait_clone(pid: i32, flags: i32, status: &mut i32) -> isize {
    // SAFETY: `status` is writable; no rusage asked for.
    unsafe {
        syscall6(
            libc::SYS_wait4,
            pid as usize,
            status as *mut i32 as usize,
            (libc::__WCLONE | flags) as usize,
            0,
            0,
            0,
        )
    }
}

/// `fstat(fd)`, or `None` if it is not open.
pub fn fstat(fd: i32) -> Option<libc::stat> {
    // SAFETY: fstat writes into a zeroed local struct of the kernel's layout
    // (glibc's `struct stat` on these targets).
    unsafe {
        let mut st: libc::stat = core::mem::zeroed();
        let r = syscall6(
            libc::SYS_fstat,
            fd as usize,
            &mut st as *mut libc::stat as usize,
            0,
            0,
            0,
            0,
        );
        (r == 0).then_some(st)
    }
}

/// The inode of `fd` (0 if it is not open).
pub fn inode(fd: i32) -> u64 {
    fstat(fd).map_or(0, |st| st.st_ino)
}

/// `open(path, flags)` (a NUL-terminated path): the descriptor or `-errno`.
pub fn open(path: &core::ffi::CStr, flags: i32) -> isize {
    // SAFETY: a NUL-terminated path.
    unsafe {
        syscall6(
            libc::SYS_openat,
            libc::AT_FDCWD as usize,
            path.as_ptr() as usize,
            flags as usize,
            0,
            0,
            0,
        )
    }
}

/// `mmap` of anonymous private memory, or null.
pub fn map(len: usize, extra_flags: i32) -> *mut u8 {
    // SAFETY: a new anonymous mapping touches no existing memory.
    let p = unsafe {
        syscall6(
            libc::SYS_mmap,
            0,
            len,
            (libc::PROT_READ | libc::PROT_WRITE) as usize,
            (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | extra_flags) as usize,
            usize::MAX,
            0,
        )
    };
    if p < 0 && p > -4096 {
        core::ptr::null_mut()
    } else {
        p as *mut u8
    }
}

/// `mprotect(p, len, PROT_NONE)`.
///
/// # Safety
/// `p..p+len` is a mapping nothing uses.
pub unsafe fn protect_none(p: *mut u8, len: usize) {
    // SAFETY: the caller's contract.
    unsafe {
        syscall6(
            libc::SYS_mprotect,
            p as usize,
            len,
            libc::PROT_NONE as usize,
            0,
            0,
            0,
        )
    };
}

/// Gives `p..p+len` back to the system, memory and commit charge both: a
/// fresh inaccessible, unreserved mapping replaces it (`mmap(MAP_FIXED,
/// PROT_NONE, MAP_NORESERVE)`); false if the kernel refused (then nothing
/// changed).
///
/// # Safety
/// `p..p+len` is page-aligned memory of a mapping of ours that nothing uses.
pub unsafe fn decommit(p: *mut u8, len: usize) -> bool {
    // SAFETY: the caller's contract; MAP_FIXED replaces only that range.
    let r = unsafe {
        syscall6(
            libc::SYS_mmap,
            p as usize,
            len,
            libc::PROT_NONE as usize,
            (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED | libc::MAP_NORESERVE)
                as usize,
            usize::MAX,
            0,
        )
    };
    r == p as isize
}

/// `madvise(p, len, MADV_DONTNEED)`: the pages read as zero when next
/// touched; whether the kernel agreed.
///
/// # Safety
/// `p..p+len` is page-aligned memory of ours whose contents nobody needs.
pub unsafe fn dontneed(p: *mut u8, len: usize) -> bool {
    // SAFETY: the caller's contract.
    unsafe {
        syscall6(
            libc::SYS_madvise,
            p as usize,
            len,
            libc::MADV_DONTNEED as usize,
            0,
            0,
            0,
        ) == 0
    }
}

/// `prctl(PR_SET_NAME, name)` for the calling thread.
pub fn set_thread_name(name: &core::ffi::CStr) {
    // SAFETY: a NUL-terminated name of at most 16 bytes is read.
    unsafe {
        syscall6(
            libc::SYS_prctl,
            libc::PR_SET_NAME as usize,
            name.as_ptr() as usize,
            0,
            0,
            0,
            0,
        )
    };
}

/// `CLOCK_MONOTONIC` in nanoseconds, by system call (the vDSO is libc's).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer.
    unsafe {
        syscall6(
            libc::SYS_clock_gettime,
            libc::CLOCK_MONOTONIC as usize,
            &mut ts as *mut libc::timespec as usize,
            0,
            0,
            0,
            0,
        )
    };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Waits on the futex word `addr` while it holds `val`, at most `ns`.
pub fn futex_wait(addr: &core::sync::atomic::AtomicI32, val: i32, ns: u64) {
    let ts = libc::timespec {
        tv_sec: (ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (ns % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: a valid futex word and timeout.
    unsafe {
        syscall6(
            libc::SYS_futex,
            addr.as_ptr() as usize,
            libc::FUTEX_WAIT as usize,
            val as usize,
            &ts as *const libc::timespec as usize,
            0,
            0,
        )
    };
}

/// Wakes every waiter on the futex word `addr`.
pub fn futex_wake(addr: &core::sync::atomic::AtomicI32) {
    // SAFETY: a valid futex word; waking touches no memory of ours.
    unsafe {
        syscall6(
            libc::SYS_futex,
            addr.as_ptr() as usize,
            libc::FUTEX_WAKE as usize,
            i32::MAX as usize,
            0,
            0,
            0,
        )
    };
}

/// Sets the calling thread's signal mask to `set`; returns the one before.
pub fn swap_mask(set: &libc::sigset_t) -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; the kernel writes its first 8 bytes.
    let mut old: libc::sigset_t = unsafe { core::mem::zeroed() };
    // SAFETY: valid sets of at least the 8 bytes the kernel reads/writes.
    unsafe {
        syscall6(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK as usize,
            set as *const libc::sigset_t as usize,
            &mut old as *mut libc::sigset_t as usize,
            8,
            0,
            0,
        )
    };
    old
}

/// A line built in a fixed buffer (no allocation): `core::fmt::Write`
/// into it, then [`LineBuf::bytes`]. Text beyond its size is cut.
pub struct LineBuf<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> LineBuf<N> {
    /// An empty line.
    pub const fn new() -> Self {
        LineBuf {
            buf: [0; N],
            len: 0,
        }
    }

    /// What was written so far.
    pub fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// Forgets what was written.
    pub fn clear(&mut self) {
        self.len = 0;
    }
}

impl<const N: usize> Default for LineBuf<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> core::fmt::Write for LineBuf<N> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let end = self.len + s.len();
        if end > N {
            return Err(core::fmt::Error);
        }
        self.buf[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// `recv(fd, buf, len, MSG_DONTWAIT)`: bytes or `-errno`.
///
/// # Safety
/// `buf` is valid for writes of `len` bytes.
pub unsafe fn recv_nowait(fd: i32, buf: *mut u8, len: usize) -> isize {
    // SAFETY: the caller's contract; no source address asked for.
    unsafe {
        syscall6(
            libc::SYS_recvfrom,
            fd as usize,
            buf as usize,
            len,
            libc::MSG_DONTWAIT as usize,
            0,
            0,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_reach_the_kernel() {
        assert_eq!(getpid(), std::process::id() as i32);
        let [r, w] = pipe2(libc::O_CLOEXEC).unwrap();
        write_all(w, b"hi");
        let mut buf = [0u8; 4];
        // SAFETY: a local buffer of that length.
        assert_eq!(unsafe { read(r, buf.as_mut_ptr(), 4) }, 2);
        assert_eq!(&buf[..2], b"hi");
        assert_ne!(inode(r), 0);
        close(r);
        close(w);
        assert_eq!(inode(r), 0);
        let t0 = monotonic_ns();
        assert!(monotonic_ns() >= t0);
    }
}

//! The few raw OS services the hook paths may use: anonymous memory and the
//! monotonic clock. Neither allocates through the profiled allocator.
//! [`raw`] has system calls without libc, for the watcher thread; [`fds`]
//! the rule every descriptor and file heapprof makes follows, and
//! [`own_table`] the descriptor table heapprof's threads keep apart from
//! the program's; [`next_symbol`] finds the functions the ways in wrap.

use core::ptr;
use core::sync::atomic::{AtomicI32, Ordering};

pub mod fds;
pub mod next_symbol;
raw_thread_modules! {
    pub mod own_table;
}
pub mod raw;
pub mod signals;

/// In a copy of the process ([`crate::profile::forked_copy`]): the pid of
/// the process it copies (0 elsewhere).
static COPY_OF: AtomicI32 = AtomicI32::new(0);

/// The profiled process's pid, which names its profiles: in a copy of the
/// process made for a dump, the pid of the process copied.
pub fn pid() -> u32 {
    match COPY_OF.load(Ordering::Relaxed) {
        0 => std::process::id(),
        p => p as u32,
    }
}

/// Called first thing in a copy of the process: `parent` is the pid of the
/// process copied.
pub fn set_copy_of(parent: i32) {
    COPY_OF.store(parent, Ordering::Relaxed);
}

/// The profiled process's resident anonymous memory (`RssAnon` in
/// `/proc/PID/status`, of the process copied when in a copy), in bytes:
/// heap, `mmap`'d memory and thread stacks, whoever allocated them. For
/// dumps, not for hook paths: it reads a file.
pub fn rss_anon_bytes() -> Option<u64> {
    let status = crate::os::fds::read_to_string(format!("/proc/{}/status", pid())).ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("RssAnon:"))?;
    let kib: u64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    kib.checked_mul(1024)
}

/// Anonymous zeroed memory straight from the kernel, or null.
pub fn map(len: usize) -> *mut u8 {
    // SAFETY: an anonymous private mapping touches no existing memory.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        ptr::null_mut()
    } else {
        p.cast()
    }
}

/// Returns memory obtained from [`map`].
///
/// # Safety
/// `p` and `len` must be exactly one earlier `map` result, no longer used.
pub unsafe fn unmap(p: *mut u8, len: usize) {
    // SAFETY: the caller passes a whole mapping it no longer uses.
    unsafe { libc::munmap(p.cast(), len) };
}

/// Nanoseconds on the monotonic clock (vDSO: no system call).
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// Nanoseconds since the Unix epoch.
pub fn realtime_ns() -> u64 {
    clock_ns(libc::CLOCK_REALTIME)
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer for the duration of the call.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The page size heapprof assumes (4 KiB): the sample heap's runs, the
/// preload library's bootstrap arena and `pvalloc`/`valloc` are measured
/// in it.
pub const PAGE: usize = 4096;

//! When heapprof's own memory runs out.
//!
//! # Model
//! heapprof must never be what kills the program it watches, so none of its
//! own growth may go through an allocation whose failure aborts (Rust's
//! infallible `Vec`/`HashMap` growth calls `handle_alloc_error`):
//! - record buffers are memory heapprof maps itself; a chunk that cannot be
//!   mapped drops its record ([`crate::engine::buffer`]);
//! - the aggregator reserves room (`try_reserve`) before it keeps a record;
//!   when that fails the record is dropped and counted here;
//! - a dump first checks that the address space has room for what it will
//!   need (a reservation of that size, made and released at once): without room
//!   for symbolizing it writes a raw profile (addresses, mappings, build IDs,
//!   which `heapprof top` names later); without room even for that it writes
//!   nothing — never a partial file — and the program runs on.
//!
//! - the sample heap ([`crate::engine::sample_heap`]) that cannot reserve
//!   or map memory serves the allocation unsampled, counted.
//!
//! Whichever happens first is said once on stderr, by the dumper thread
//! (never from a hook); later ones are only counted (the counts are in each
//! profile's comment).

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

static DROPPED: AtomicU64 = AtomicU64::new(0);
static RAW_DUMPS: AtomicU64 = AtomicU64::new(0);
static SKIPPED_DUMPS: AtomicU64 = AtomicU64::new(0);
static DUMP_FALLBACKS: AtomicU64 = AtomicU64::new(0);
/// Something happened that has not been said yet.
static PENDING: AtomicBool = AtomicBool::new(false);
static SAID: AtomicBool = AtomicBool::new(false);

/// A record the aggregator could not keep.
pub fn dropped_record() {
    DROPPED.fetch_add(1, Ordering::Relaxed);
    PENDING.store(true, Ordering::Relaxed);
}

/// An allocation chosen for sampling that the sample heap could not serve
/// for want of address space or memory (served unsampled; counted by
/// [`crate::engine::sample_heap::fallbacks`]). Safe on a hook: atomics only.
pub fn unsampled() {
    PENDING.store(true, Ordering::Relaxed);
}

/// A dump written raw for want of memory to symbolize.
pub fn raw_dump() {
    RAW_DUMPS.fetch_add(1, Ordering::Relaxed);
    PENDING.store(true, Ordering::Relaxed);
}

/// A dump not written for want of memory.
pub fn skipped_dump() {
    SKIPPED_DUMPS.fetch_add(1, Ordering::Relaxed);
    PENDING.store(true, Ordering::Relaxed);
}

/// A dump that its first copy of the process could not make, made again
/// later or elsewhere (see `crate::control::dump_in_copy`). Atomics only.
pub fn dump_fallback() {
    DUMP_FALLBACKS.fetch_add(1, Ordering::Relaxed);
}

/// Dumps that needed [`dump_fallback`].
pub fn dump_fallbacks() -> u64 {
    DUMP_FALLBACKS.load(Ordering::Relaxed)
}

/// Records dropped by the aggregator for want of memory.
pub fn dropped_records() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// Dumps written raw, and dumps skipped, for want of memory.
pub fn dumps_degraded() -> (u64, u64) {
    (
        RAW_DUMPS.load(Ordering::Relaxed),
        SKIPPED_DUMPS.load(Ordering::Relaxed),
    )
}

/// Counts dumps a copy of the process wrote raw or skipped (atomics only).
pub fn add_degraded(raw: u64, skipped: u64) {
    RAW_DUMPS.fetch_add(raw, Ordering::Relaxed);
    SKIPPED_DUMPS.fetch_add(skipped, Ordering::Relaxed);
}

/// The one line to print, the first time there is something to say.
pub fn take_note() -> Option<String> {
    let mut s = String::new();
    take_note_into(&mut s).then_some(s)
}

/// [`take_note`] into `w` (no allocation of its own: the watcher thread
/// prints it): whether there was a line.
pub fn take_note_into(w: &mut impl core::fmt::Write) -> bool {
    if !PENDING.swap(false, Ordering::Relaxed) || SAID.swap(true, Ordering::Relaxed) {
        return false;
    }
    let (raw, skipped) = dumps_degraded();
    let _ = write!(
        w,
        "heapprof: low on memory; the program runs on, heapprof saves memory \
         (so far: {} records dropped, {} samples served unsampled, {raw} profiles written raw, \
         {skipped} not written; counts in each profile's comment; said once)",
        dropped_records(),
        crate::engine::sample_heap::fallbacks()
    );
    true
}

/// The one line to print about the sample heap's fallbacks, the first time
/// there are any, when the user's `HEAPPROF_SAMPLE_HEAP_LIMIT` caused them
/// (running out of address space or memory is [`take_note`]'s).
pub fn limit_note() -> Option<String> {
    let mut s = String::new();
    limit_note_into(&mut s).then_some(s)
}

/// [`limit_note`] into `w` (no allocation of its own: the watcher thread
/// prints it): whether there was a line.
pub fn limit_note_into(w: &mut impl core::fmt::Write) -> bool {
    static SAID_LIMIT: AtomicBool = AtomicBool::new(false);
    let n = crate::engine::sample_heap::fallbacks();
    let limit = crate::engine::sample_heap::limit();
    if n == 0 || limit == usize::MAX || SAID_LIMIT.swap(true, Ordering::Relaxed) {
        return false;
    }
    let _ = write!(
        w,
        "heapprof: the sample heap is full because its limit (HEAPPROF_SAMPLE_HEAP_LIMIT={limit}) is reached; {n} allocation(s) chosen for sampling were served unsampled by the allocator, so the profile undercounts (free samples, or raise the limit)"
    );
    true
}

/// The address space an address-space limit (`ulimit -v`, RLIMIT_AS)
/// leaves now, to within a 256th of the limit; None when there is no such
/// limit. Found by bisection over [`room_for`] probes (no descriptor, no
/// allocation; raw system calls but for the probes' `mmap`).
pub fn address_room() -> Option<usize> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: prlimit64 of this process, reading into a local.
    let r = unsafe {
        crate::os::raw::syscall6(
            libc::SYS_prlimit64,
            0,
            libc::RLIMIT_AS as usize,
            0,
            &mut lim as *mut libc::rlimit as usize,
            0,
            0,
        )
    };
    if r != 0 || lim.rlim_cur == libc::RLIM_INFINITY {
        return None;
    }
    let limit = usize::try_from(lim.rlim_cur)
        .unwrap_or(usize::MAX)
        .min(1 << 46);
    let (mut lo, mut hi) = (0usize, limit);
    // lo <= hi throughout: neither wraps.
    while hi.wrapping_sub(lo) > (limit / 256).max(4096) {
        let mid = lo.wrapping_add(hi.wrapping_sub(lo) / 2) & !4095;
        if room_for(mid) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Some(lo)
}

/// Whether `bytes` of address space can be had now: reserves that much and
/// releases it at once. The reservation is inaccessible and unreserved
/// (`PROT_NONE`, `MAP_NORESERVE`), so it costs no memory and no commit
/// charge that the program could miss meanwhile; it fails where the
/// address-space limit (`ulimit -v`, RLIMIT_AS) leaves no room.
pub fn room_for(bytes: usize) -> bool {
    let len = bytes.max(4096);
    // SAFETY: a new anonymous mapping touches no existing memory.
    let p = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            len,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return false;
    }
    // SAFETY: unmapping exactly the mapping just made, never used.
    unsafe { libc::munmap(p, len) };
    true
}

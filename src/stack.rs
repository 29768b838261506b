//! Stack capture on the sampled path.
//!
//! Uses the platform unwinder (`_Unwind_Backtrace` through the `backtrace`
//! crate's unsynchronized tracer), which reads DWARF CFI and so works for code
//! built without frame pointers — Rust's standard library and most C/C++
//! distributions. It takes no lock of ours and allocates nothing in the common
//! case; anything the unwinder does allocate (first use of an object's unwind
//! tables) goes to the inner allocator because the caller is marked busy.
//! Cost on these machines is on the order of microseconds per capture, paid
//! once per sample: at the default rate (one sample per 512 KiB) that is well
//! under 1% of a core even at 1 GB/s of allocation.
//!
//! Frames are raw return addresses, innermost first, including heapprof's own
//! frames; those are trimmed at write time by symbol (see
//! [`crate::symbolize::is_allocator_frame`]), so capture stays cheap.

/// Frames kept per sample. Deeper stacks keep their innermost frames.
pub const MAX_FRAMES: usize = 128;

/// Writes up to `out.len()` return addresses, innermost first; returns how many.
#[inline(never)]
pub fn capture(out: &mut [u64]) -> usize {
    let mut n = 0;
    // SAFETY: the unsynchronized tracer is safe to call concurrently with
    // itself; the synchronized one would take a global lock and allocate.
    unsafe {
        backtrace::trace_unsynchronized(|frame| {
            let ip = frame.ip() as u64;
            // A null return address marks the outermost frame (thread start).
            if n == out.len() || ip == 0 {
                return false;
            }
            out[n] = ip;
            n += 1;
            true
        });
    }
    n
}

/// Makes the unwinder load and index what it needs once, at start-up, rather
/// than on the first sampled allocation.
pub fn warm_up() {
    let mut frames = [0u64; 8];
    capture(&mut frames);
}

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
//! Frames are raw return addresses, innermost first. heapprof's own frames
//! are dropped here, by position rather than by name: the way in passes the
//! address of a local variable in its own (never inlined) hook frame. For
//! each frame the unwinder reports the stack pointer that frame had at its
//! call (the callee's CFA), which lies below the frame's locals; so the hook
//! and everything it called report values at or below the marker, and the
//! hook's caller is the first frame above it. Frames before that are dropped. This needs no
//! symbols, so raw profiles start at the program's call into the allocator
//! too. What remains of the allocator (`__rust_alloc`, inlined `alloc::`
//! frames, `operator new`) is trimmed by name at write time
//! ([`crate::symbolize::is_allocator_frame`]).

/// Frames kept per sample. Deeper stacks keep their innermost frames.
pub const MAX_FRAMES: usize = 128;

/// Writes up to `out.len()` return addresses, innermost first; returns how
/// many. With a nonzero `hook_marker` (the address of a local in the hook's
/// frame) the hook's frame and everything it called are left out; if the
/// marker is never passed (no CFA information) nothing is left out.
#[inline(never)]
pub fn capture(out: &mut [u64], hook_marker: usize) -> usize {
    let n = capture_from(out, hook_marker);
    if n == 0 && hook_marker != 0 {
        capture_from(out, 0)
    } else {
        n
    }
}

fn capture_from(out: &mut [u64], hook_marker: usize) -> usize {
    let mut n = 0;
    let mut past_hook = hook_marker == 0;
    // SAFETY: the unsynchronized tracer is safe to call concurrently with
    // itself; the synchronized one would take a global lock and allocate.
    unsafe {
        backtrace::trace_unsynchronized(|frame| {
            let ip = frame.ip() as u64;
            // A null return address marks the outermost frame (thread start).
            if n == out.len() || ip == 0 {
                return false;
            }
            if !past_hook {
                past_hook = frame.sp() as usize > hook_marker;
                if !past_hook {
                    return true;
                }
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
    capture(&mut frames, 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[inline(never)]
    fn hook(out: &mut [u64]) -> usize {
        let marker = 0u8;
        let marker = std::hint::black_box(&marker) as *const u8 as usize;
        deeper(out, marker)
    }

    #[inline(never)]
    fn deeper(out: &mut [u64], marker: usize) -> usize {
        std::hint::black_box(capture(out, marker))
    }

    #[inline(never)]
    fn caller_of_hook() -> Vec<u64> {
        let mut out = [0u64; 64];
        let n = hook(&mut out);
        out[..n].to_vec()
    }

    #[test]
    fn the_hook_and_its_callees_are_left_out() {
        let frames = caller_of_hook();
        let mut sym = crate::symbolize::Symbolizer::default();
        let first: Vec<String> = sym
            .frames(frames[0])
            .iter()
            .map(|f| f.name.clone())
            .collect();
        assert!(
            first.iter().any(|n| n.ends_with("caller_of_hook")),
            "leaf should be the hook's caller: {first:?}"
        );
        let all: Vec<String> = frames
            .iter()
            .flat_map(|&ip| {
                sym.frames(ip)
                    .iter()
                    .map(|f| f.name.clone())
                    .collect::<Vec<_>>()
            })
            .collect();
        assert!(
            !all.iter()
                .any(|n| n.ends_with("::hook") || n.ends_with("::deeper")),
            "{all:?}"
        );
    }
}

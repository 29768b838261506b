//! Stack capture on the sampled path.
//!
//! Two unwinders, both reading DWARF CFI, so code built without frame
//! pointers (Rust's standard library, most C/C++ distributions) unwinds:
//! - **libunwind's `unw_backtrace`** (`libunwind.so.8`, Debian `libunwind8`),
//!   loaded with `dlopen` at start-up by a constructor, before `main` (the
//!   preload library's, or the one [`crate::startup`] registers for the
//!   Rust way in), else by the dumper thread — never inside a hook, and
//!   never linked, so nothing depends on it being installed. It
//!   caches the unwind rule of each return address, so a capture costs about
//!   0.2 µs for 30 frames on these machines;
//! - **libgcc's `_Unwind_Backtrace`**, through the `backtrace` crate's
//!   unsynchronized tracer, when libunwind is missing or not loaded yet:
//!   about 3.5 µs for 30 frames (~18,000 instructions), as it searches and
//!   decodes unwind tables on every frame. Such captures are counted
//!   ([`libgcc_captures`], in each profile's comment).
//!
//! Neither takes a lock of ours; anything an unwinder allocates (its caches,
//! first use of an object's tables) goes to the inner allocator because the
//! caller is marked busy.
//!
//! heapprof's own frames are dropped here, so stacks start at the program's
//! call into the allocator, with or without symbols (raw profiles too). The
//! way in calls [`crate::engine::record_alloc_from`] directly from its hook
//! function (never inlined into its caller), passing the address of a local
//! in the hook's frame:
//! - with libunwind the call structure is fixed: `capture_below` ←
//!   `record_alloc_from` ← hook ← caller ([`capture`]), so the first three
//!   return addresses are dropped, after checking the first is
//!   `capture_below`'s own; the `pthread_create` hooks, which have the
//!   engine's part inlined, call libunwind from their own frame
//!   ([`capture_in_hook`]: hook ← caller, one dropped, two frames fewer to
//!   unwind for every thread);
//! - with libgcc each frame comes with the stack pointer it had at its call
//!   (the callee's CFA), which lies below the frame's locals: the hook and
//!   everything it called report values at or below the marker, the hook's
//!   caller is the first frame above it.
//!
//! What remains of the allocator (`__rust_alloc`, inlined `alloc::` frames,
//! `operator new`) is trimmed by name at write time
//! ([`crate::symbolize::is_allocator_frame`]).

use core::ffi::{c_int, c_void};
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

/// Frames kept per sample. Deeper stacks keep their innermost frames.
pub const MAX_FRAMES: usize = 128;

/// Writes up to `out.len()` return addresses, innermost first; returns how
/// many. With a nonzero `hook_marker` (the address of a local in the hook's
/// frame) the hook's frame and everything it called are left out; if the
/// marker is never passed (no CFA information) nothing is left out. The
/// hook calls an engine function (never inlined) that calls this.
#[inline(always)]
pub fn capture(out: &mut [u64], hook_marker: usize) -> usize {
    // SAFETY: same layout; capture_below only ever writes initialised values.
    let out = unsafe { &mut *(out as *mut [u64] as *mut [MaybeUninit<u64>]) };
    capture_below(out, hook_marker, OWN_FRAMES)
}

/// As [`capture`], inlined into the hook's own frame (call it only from
/// code inlined there): libunwind is called from the hook itself, so its
/// first frame is the hook's and there are two frames fewer to unwind.
/// `out` need not be initialised (no zeroing on the way in); the first
/// frames returned are.
#[inline(always)]
pub fn capture_in_hook(out: &mut [MaybeUninit<u64>], hook_marker: usize) -> usize {
    let fast = UNW_BACKTRACE.load(Ordering::Acquire);
    if !fast.is_null() && hook_marker != 0 {
        // SAFETY: UNW_BACKTRACE only ever holds libunwind's unw_backtrace.
        let f: UnwBacktrace = unsafe { core::mem::transmute::<*mut (), UnwBacktrace>(fast) };
        let n = unwind_fast(f, out);
        if n != 0 {
            return keep_after(out, n, 1);
        }
    }
    // libgcc (libunwind not loaded yet): the marker finds the hook's frame.
    capture_below(out, hook_marker, OWN_FRAMES - 1)
}

/// `own_frames`: frames from this one up to and including the hook. The
/// first frames returned of `out` are initialised.
#[inline(never)]
fn capture_below(out: &mut [MaybeUninit<u64>], hook_marker: usize, own_frames: usize) -> usize {
    let fast = UNW_BACKTRACE.load(Ordering::Acquire);
    if !fast.is_null() {
        // SAFETY: UNW_BACKTRACE only ever holds libunwind's unw_backtrace.
        let f: UnwBacktrace = unsafe { core::mem::transmute::<*mut (), UnwBacktrace>(fast) };
        let skip = if hook_marker != 0 { own_frames } else { 1 };
        if let Some(n) = capture_libunwind(f, out, skip) {
            return n;
        }
    } else {
        LIBGCC_CAPTURES.fetch_add(1, Ordering::Relaxed);
    }
    let n = capture_libgcc(out, hook_marker);
    if n == 0 && hook_marker != 0 {
        capture_libgcc(out, 0)
    } else {
        n
    }
}

type UnwBacktrace = unsafe extern "C" fn(*mut *mut c_void, c_int) -> c_int;
static UNW_BACKTRACE: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());
/// The return address inside [`capture_below`] after its call to
/// `unw_backtrace`.
static CAPTURE_RET: AtomicU64 = AtomicU64::new(0);
/// Captures libunwind gave that did not start in `capture_below` (expected: 0).
static FAST_REFUSED: AtomicU64 = AtomicU64::new(0);
/// Captures made by libgcc because libunwind was not loaded (yet).
static LIBGCC_CAPTURES: AtomicU64 = AtomicU64::new(0);
/// Frames from `capture_below` up to and including the hook, through
/// [`capture`]: it, `record_alloc_from`, the hook.
const OWN_FRAMES: usize = 3;

/// Inlined into [`capture_below`], so the first frame reported is its own;
/// drops the first `skip`.
#[inline(always)]
fn capture_libunwind(f: UnwBacktrace, out: &mut [MaybeUninit<u64>], skip: usize) -> Option<usize> {
    let n = unwind_fast(f, out);
    if n == 0 {
        return None;
    }
    // SAFETY: unw_backtrace wrote the first n entries.
    let first = unsafe { out[0].assume_init() };
    let own = CAPTURE_RET.load(Ordering::Relaxed);
    if own == 0 {
        CAPTURE_RET.store(first, Ordering::Relaxed);
    } else if own != first {
        // Not the structure we expect: use the other unwinder.
        FAST_REFUSED.fetch_add(1, Ordering::Relaxed);
        return None;
    }
    Some(keep_after(out, n, skip))
}

/// Frames from `unw_backtrace` into `out`: how many it wrote, the first
/// being the caller's.
#[inline(always)]
fn unwind_fast(f: UnwBacktrace, out: &mut [MaybeUninit<u64>]) -> usize {
    let len = out.len().min(c_int::MAX as usize) as c_int;
    // SAFETY: `out` has room for `len` pointer-sized entries.
    unsafe { f(out.as_mut_ptr().cast(), len) }.max(0) as usize
}

/// Drops the first `skip` of the `n` frames written to `out`, and anything
/// past a null return address; returns how many are left.
#[inline(always)]
fn keep_after(out: &mut [MaybeUninit<u64>], n: usize, skip: usize) -> usize {
    let skip = skip.min(n);
    out.copy_within(skip..n, 0);
    let mut kept = n - skip;
    // A null return address marks the outermost frame (thread start).
    // SAFETY: the first `kept` entries are initialised (moved from skip..n).
    if let Some(end) = out[..kept]
        .iter()
        .position(|ip| unsafe { ip.assume_init() } == 0)
    {
        kept = end;
    }
    kept
}

/// Loads libunwind, if the system has it, for cheaper captures. Call from
/// heapprof's own thread, not from a hook (`dlopen` takes the loader lock
/// and allocates).
pub fn load_fast_unwinder() {
    if !UNW_BACKTRACE.load(Ordering::Acquire).is_null() {
        return;
    }
    // SAFETY: dlopen/dlsym with NUL-terminated names; RTLD_LOCAL keeps
    // libunwind's own `_Unwind_*` symbols from interposing libgcc's.
    unsafe {
        let h = libc::dlopen(
            c"libunwind.so.8".as_ptr(),
            libc::RTLD_NOW | libc::RTLD_LOCAL,
        );
        if h.is_null() {
            return;
        }
        let f = libc::dlsym(h, c"unw_backtrace".as_ptr());
        if !f.is_null() {
            // Warm it up (its per-thread cache) before hooks use it.
            let mut frames = [0u64; 8];
            let g: UnwBacktrace = core::mem::transmute::<*mut c_void, UnwBacktrace>(f);
            g(frames.as_mut_ptr().cast(), frames.len() as c_int);
            UNW_BACKTRACE.store(f.cast(), Ordering::Release);
        }
    }
}

/// Whether captures use libunwind.
pub fn fast_unwinder_loaded() -> bool {
    !UNW_BACKTRACE.load(Ordering::Acquire).is_null()
}

/// Captures made by libgcc's unwinder because libunwind was not loaded
/// (yet, or not installed): 0 when a constructor loaded it before the
/// first sample.
pub fn libgcc_captures() -> u64 {
    LIBGCC_CAPTURES.load(Ordering::Relaxed)
}

fn capture_libgcc(out: &mut [MaybeUninit<u64>], hook_marker: usize) -> usize {
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
            out[n].write(ip);
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
    if fast_unwinder_loaded() {
        capture(&mut frames, 0);
    } else {
        // Not a sample's capture: not counted in `libgcc_captures`.
        let mut raw = [MaybeUninit::<u64>::uninit(); 8];
        capture_libgcc(&mut raw, 0);
    }
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

    /// A hook with the engine's part inlined, as the `pthread_create` hooks.
    #[inline(never)]
    fn direct_hook(out: &mut [MaybeUninit<u64>]) -> usize {
        let marker = 0u8;
        let marker = std::hint::black_box(&marker) as *const u8 as usize;
        std::hint::black_box(capture_in_hook(out, marker))
    }

    #[inline(never)]
    fn caller_of_hook(direct: bool) -> Vec<u64> {
        if direct {
            let mut out = [MaybeUninit::uninit(); 64];
            let n = direct_hook(&mut out);
            // SAFETY: the first n are initialised.
            out[..n]
                .iter()
                .map(|f| unsafe { f.assume_init() })
                .collect()
        } else {
            let mut out = [0u64; 64];
            let n = hook(&mut out);
            out[..n].to_vec()
        }
    }

    #[test]
    fn the_hook_and_its_callees_are_left_out_with_either_unwinder() {
        check_trimming();
        load_fast_unwinder();
        assert!(
            fast_unwinder_loaded(),
            "libunwind.so.8 is on these machines"
        );
        check_trimming();
        check_trimming();
    }

    fn check_trimming() {
        check_trimming_of(false);
        check_trimming_of(true);
    }

    fn check_trimming_of(direct: bool) {
        let refused = FAST_REFUSED.load(Ordering::Relaxed);
        let frames = caller_of_hook(direct);
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
            !all.iter().any(|n| n.ends_with("::hook")
                || n.ends_with("::direct_hook")
                || n.ends_with("::deeper")),
            "{all:?}"
        );
        assert!(
            all.iter()
                .any(|n| n.contains("left_out_with_either_unwinder")),
            "{all:?}"
        );
        assert_eq!(FAST_REFUSED.load(Ordering::Relaxed), refused);
    }
}

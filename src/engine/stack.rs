//! Stack capture on the sampled path.
//!
//! Three unwinders, all reading DWARF CFI, so code built without frame
//! pointers (Rust's standard library, most C/C++ distributions) unwinds:
//! - **heapprof's own walk** ([`crate::engine::unwind`], x86-64 with glibc
//!   2.35+), inlined into the capture: each return address's rule derived
//!   once from `.eh_frame` and cached, a few instructions a frame after.
//!   It takes every stack whose frames all have a rule of the common form,
//!   and leaves the rest (a signal frame, code without unwind information)
//!   to the next. `HEAPPROF_UNWIND` chooses ([`Unwinder`]); its `check`
//!   mode compares it with libunwind on every capture;
//! - **libunwind's `unw_backtrace`** (`libunwind.so.8`, Debian `libunwind8`;
//!   x86-64), loaded with `dlopen` at start-up by a constructor, before `main` (the
//!   preload library's, or the one [`crate::control::startup`] registers for the
//!   Rust way in), else by the dumper thread — never inside a hook, and
//!   never linked, so nothing depends on it being installed. It
//!   caches the unwind rule of each return address, so a capture is cheap
//!   once the program's code paths have been seen;
//! - **libgcc's `_Unwind_Backtrace`**, through the `backtrace` crate's
//!   unsynchronized tracer, when libunwind is missing or not loaded yet:
//!   an order of magnitude slower, as it searches and decodes unwind
//!   tables on every frame. Such captures are counted
//!   ([`libgcc_captures`], in each profile's comment).
//!
//! libunwind is called inside [`crate::engine::loader_fence`], which a
//! fork closes: meanwhile libgcc's unwinder serves.
//!
//! Neither takes a lock of ours; anything an unwinder allocates (its caches,
//! first use of an object's tables) goes to the inner allocator because the
//! caller is marked busy.
//!
//! **libunwind's descriptors.** libunwind 1.6 validates the addresses it
//! reads for frames it had to guess (no unwind information: hand-written
//! assembly, code without unwind tables) through a pipe: its one-time
//! initialisation opens it with `pipe2` on the two lowest free descriptors,
//! and each validation reads a byte from one end and writes one to the
//! other. Those are the program's numbers: a daemon that closes every
//! descriptor and opens a socket gets them, and libunwind then steals and
//! injects bytes on it, or blocks in its `read`; with stdin closed the pipe
//! is fd 0. On EBADF libunwind even opens a new pipe, from inside a hook.
//! So on x86-64 heapprof removes the pipe's use rather than moving it
//! (moving would leave that re-open): at load, before any hook unwinds, it
//! notes which low numbers are free, runs libunwind's initialisation
//! (`unw_get_accessors` on the local address space), checks that what
//! appeared on them is that pipe (one FIFO, a read end and a write end,
//! non-blocking, close-on-exec; anything else and libunwind is not used)
//! and closes it, then replaces the local
//! address space's `access_mem` accessor (the fourth member of the public
//! `unw_accessors_t`, all eight checked to be libunwind's code) with
//! [`libunwind`]'s, which validates without a descriptor (`rt_sigprocmask`
//! with an invalid `how` reads the word or fails with `EFAULT`, and changes
//! nothing), so libunwind never reaches its pipe code again. If anything is
//! not as expected (another libunwind, a sandbox that answers the probe
//! otherwise), libunwind is not used and libgcc's unwinder serves. On
//! AArch64 libunwind keeps its validation flag in a private cursor
//! structure, so libgcc's unwinder is used there.
//!
//! heapprof's own frames are dropped here, so stacks start at the program's
//! call into the allocator, with or without symbols (raw profiles too). The
//! way in calls [`crate::engine::record_alloc_from`] directly from its hook
//! function (never inlined into its caller), passing the address of a local
//! in the hook's frame:
//! - with the walk or libunwind the call structure is fixed: `capture_below` ←
//!   `record_alloc_from` ← hook ← caller ([`capture`]), so the first three
//!   return addresses are dropped, after checking the first is
//!   `capture_below`'s own; heapprof's own walk is inlined into
//!   `record_alloc_from` itself ([`capture_from_engine`]: two dropped,
//!   one frame fewer to walk on every sample); the `pthread_create`
//!   hooks, which have the engine's part inlined, call libunwind from
//!   their own frame
//!   ([`capture_in_hook`]: hook ← caller, one dropped, two frames fewer to
//!   unwind for every thread);
//! - with libgcc each frame comes with the stack pointer it had at its call
//!   (the callee's CFA), which lies below the frame's locals: the hook and
//!   everything it called report values at or below the marker, the hook's
//!   caller is the first frame above it.
//!
//! What remains of the allocator (`__rust_alloc`, inlined `alloc::` frames,
//! `operator new`) is trimmed by name at write time
//! ([`crate::profile::symbolize::is_allocator_frame`]).

use core::ffi::{c_int, c_void};
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicPtr, AtomicU64, AtomicU8, Ordering};

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

/// As [`capture`], into memory that need not be initialised (the first
/// frames returned are), for the engine function the hook calls (call it
/// only from there): heapprof's own walk is inlined into that function,
/// so its first frame is that function's and there is one frame fewer to
/// walk (`HEAPPROF_UNWIND=check` compares this walk too). Anything else
/// (a walk that gives up, `HEAPPROF_UNWIND=libunwind`, no marker) goes
/// through [`capture_below`], as from [`capture`].
#[inline(always)]
pub fn capture_from_engine(out: &mut [MaybeUninit<u64>], hook_marker: usize) -> usize {
    let mode = WALK.load(Ordering::Relaxed);
    let skip = OWN_FRAMES - 1;
    // Two copies of the walk: one walk followed by the check's branch
    // compiled to a slower hot path (the README's figures).
    if hook_marker != 0 && mode == WALK_ON {
        if let Some(kept) = crate::engine::unwind::walk(out, skip) {
            return kept;
        }
    } else if hook_marker != 0 && mode == WALK_CHECKED {
        if let Some(kept) = crate::engine::unwind::walk(out, skip) {
            check_against_libunwind(out, kept, skip);
            return kept;
        }
    }
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
        if let Some(_inside) = crate::engine::loader_fence::try_enter() {
            // SAFETY: UNW_BACKTRACE only ever holds libunwind's unw_backtrace.
            let f: UnwBacktrace = unsafe { core::mem::transmute::<*mut (), UnwBacktrace>(fast) };
            let n = unwind_fast(f, out);
            if n != 0 {
                return keep_after(out, n, 1);
            }
        }
    }
    // libgcc (libunwind not loaded yet): the marker finds the hook's frame.
    capture_below(out, hook_marker, OWN_FRAMES - 1)
}

/// `own_frames`: frames from this one up to and including the hook. The
/// first frames returned of `out` are initialised.
#[inline(never)]
fn capture_below(out: &mut [MaybeUninit<u64>], hook_marker: usize, own_frames: usize) -> usize {
    let skip = if hook_marker != 0 { own_frames } else { 1 };
    let mode = WALK.load(Ordering::Relaxed);
    if mode != WALK_OFF {
        // heapprof's own walk, inlined here: its first frame is this one,
        // as libunwind's is below.
        if let Some(kept) = crate::engine::unwind::walk(out, skip) {
            // Not counted (a shared counter bumped on every sample would
            // bounce between threads sampling densely): the fallbacks are.
            if mode == WALK_CHECKED {
                check_against_libunwind(out, kept, skip);
            }
            return kept;
        }
        WALK_FALLBACKS.fetch_add(1, Ordering::Relaxed);
    }
    let fast = UNW_BACKTRACE.load(Ordering::Acquire);
    if !fast.is_null() {
        // While a fork is under way libgcc's unwinder serves (see
        // crate::engine::loader_fence).
        if let Some(_inside) = crate::engine::loader_fence::try_enter() {
            // SAFETY: UNW_BACKTRACE only ever holds libunwind's unw_backtrace.
            let f: UnwBacktrace = unsafe { core::mem::transmute::<*mut (), UnwBacktrace>(fast) };
            if let Some(n) = capture_libunwind(f, out, skip) {
                return n;
            }
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

/// Which unwinder captures ([`set_walk`]).
static WALK: AtomicU8 = AtomicU8::new(WALK_OFF);
const WALK_OFF: u8 = 0;
const WALK_ON: u8 = 1;
const WALK_CHECKED: u8 = 2;
/// Captures heapprof's own walk left to a full unwinder.
static WALK_FALLBACKS: AtomicU64 = AtomicU64::new(0);
/// Walks compared with libunwind's unwind, and those that differed.
static CHECKS: AtomicU64 = AtomicU64::new(0);
static MISMATCHES: AtomicU64 = AtomicU64::new(0);

/// Which unwinder captures stacks (`HEAPPROF_UNWIND`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unwinder {
    /// heapprof's own walk over cached DWARF rules
    /// ([`crate::engine::unwind`]), libunwind where it cannot: the default.
    Own,
    /// libunwind (else libgcc's unwinder) for every capture.
    Full,
    /// Both, compared frame for frame; the capture is the walk's, and
    /// [`walk_counts`] says how many differed (a testing mode: it costs a
    /// full unwind per sample).
    Checked,
}

/// Chooses the unwinder. The walk starts only once [`load_fast_unwinder`]
/// has found what it needs; until then the full unwinders serve.
pub fn set_walk(u: Unwinder) {
    CHOSEN.store(
        match u {
            Unwinder::Own => WALK_ON,
            Unwinder::Full => WALK_OFF,
            Unwinder::Checked => WALK_CHECKED,
        },
        Ordering::Relaxed,
    );
    if crate::engine::unwind::available() {
        WALK.store(CHOSEN.load(Ordering::Relaxed), Ordering::Relaxed);
    }
}
static CHOSEN: AtomicU8 = AtomicU8::new(WALK_ON);

/// The walk's counts: `[fallbacks to a full unwind, walks checked (in the
/// `check` mode), mismatches]`.
pub fn walk_counts() -> [u64; 3] {
    [&WALK_FALLBACKS, &CHECKS, &MISMATCHES].map(|c| c.load(Ordering::Relaxed))
}

/// Compares the walk's `kept` frames in `out` with libunwind's, called
/// from here (one frame deeper than the walk's capture).
#[inline(never)]
#[cold]
fn check_against_libunwind(out: &[MaybeUninit<u64>], kept: usize, skip: usize) {
    let fast = UNW_BACKTRACE.load(Ordering::Acquire);
    let Some(_inside) = crate::engine::loader_fence::try_enter() else {
        return;
    };
    if fast.is_null() {
        return;
    }
    // SAFETY: UNW_BACKTRACE only ever holds libunwind's unw_backtrace.
    let f: UnwBacktrace = unsafe { core::mem::transmute::<*mut (), UnwBacktrace>(fast) };
    let mut full = [MaybeUninit::<u64>::uninit(); MAX_FRAMES + 8];
    // Room for the frames left out (the walk's and this function's), so
    // as many of the program's frames fit.
    let room = (out.len() + skip + 1).min(full.len());
    let n = unwind_fast(f, &mut full[..room]);
    let n = keep_after(&mut full, n, skip + 1);
    CHECKS.fetch_add(1, Ordering::Relaxed);
    // SAFETY: the first `kept` of `out` and `n` of `full` are initialised.
    let same =
        n == kept && (0..n).all(|i| unsafe { out[i].assume_init() == full[i].assume_init() });
    if !same {
        MISMATCHES.fetch_add(1, Ordering::Relaxed);
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
    if let Some(end) = out[..kept].iter().position(|ip| {
        // SAFETY: the first `kept` entries are initialised (moved from skip..n).
        (unsafe { ip.assume_init() }) == 0
    }) {
        kept = end;
    }
    kept
}

/// Loads libunwind, if the system has it, for cheaper captures, and takes
/// its descriptors out of the program's way (see the module doc). Call
/// from heapprof's own thread or a constructor, not from a hook (`dlopen`
/// takes the loader lock and allocates).
pub fn load_fast_unwinder() {
    if crate::engine::cfi::load() && crate::engine::unwind::available() {
        WALK.store(CHOSEN.load(Ordering::Relaxed), Ordering::Relaxed);
    }
    if !UNW_BACKTRACE.load(Ordering::Acquire).is_null() {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if let Some(f) = libunwind::load() {
        // Warm it up (its per-thread cache) before hooks use it.
        let mut frames = [MaybeUninit::<u64>::uninit(); 8];
        unwind_fast(f, &mut frames);
        UNW_BACKTRACE.store(f as *mut (), Ordering::Release);
    }
}

/// libunwind 1.6 on x86-64: loading it with its memory validation made
/// descriptor-free (see the module doc).
#[cfg(target_arch = "x86_64")]
mod libunwind {
    use core::ffi::{c_int, c_void};

    use super::UnwBacktrace;
    use crate::os::raw;

    /// `unw_accessors_t`'s members up to and including the one replaced, in
    /// the order of libunwind's public header (`libunwind-common.h`):
    /// `find_proc_info`, `put_unwind_info`, `get_dyn_info_list_addr`,
    /// `access_mem`, then `access_reg`, `access_fpreg`, `resume`,
    /// `get_proc_name`. All eight are checked to be libunwind's own code.
    const ACCESSORS: usize = 8;
    const ACCESS_MEM: usize = 3;

    type GetAccessors = unsafe extern "C" fn(*mut c_void) -> *mut usize;

    /// `dlopen`s libunwind and returns its `unw_backtrace` with the local
    /// address space's `access_mem` replaced by [`access_mem`] and the
    /// validation pipe closed, or `None` (then libgcc's unwinder is used)
    /// if anything is not as expected.
    pub(super) fn load() -> Option<UnwBacktrace> {
        if !probe_works() {
            return None;
        }
        // SAFETY: dlopen/dlsym with NUL-terminated names; RTLD_LOCAL keeps
        // libunwind's own `_Unwind_*` symbols from interposing libgcc's.
        let (bt, get, local) = unsafe {
            let h = libc::dlopen(
                c"libunwind.so.8".as_ptr(),
                libc::RTLD_NOW | libc::RTLD_LOCAL,
            );
            if h.is_null() {
                return None;
            }
            (
                libc::dlsym(h, c"unw_backtrace".as_ptr()),
                libc::dlsym(h, c"_Ux86_64_get_accessors".as_ptr()),
                libc::dlsym(h, c"_ULx86_64_local_addr_space".as_ptr()),
            )
        };
        if bt.is_null() || get.is_null() || local.is_null() {
            return None;
        }
        let (free, end) = free_numbers()?;
        // SAFETY: `_Ux86_64_get_accessors` has unw_get_accessors' type;
        // `_ULx86_64_local_addr_space` is the variable `unw_local_addr_space`
        // (a pointer to the local address space). The call runs libunwind's
        // one-time initialisation, which opens the pipe.
        let acc = unsafe {
            let get: GetAccessors = core::mem::transmute::<*mut c_void, GetAccessors>(get);
            get(*(local as *const *mut c_void))
        };
        let pipe_gone = close_validation_pipe(&free, end);
        if acc.is_null() || !pipe_gone {
            return None;
        }
        let base = object_of(bt as usize)?;
        // SAFETY: `acc` points to the local address space's accessor
        // struct (eight function pointers, see ACCESSORS), in libunwind's
        // writable data; no other thread unwinds with libunwind yet (it is
        // published after this returns).
        unsafe {
            for i in 0..ACCESSORS {
                let f = acc.add(i).read();
                if f == 0 || object_of(f) != Some(base) {
                    return None;
                }
            }
            let slot = &*(acc.add(ACCESS_MEM) as *const core::sync::atomic::AtomicUsize);
            slot.store(
                access_mem as *const () as usize,
                core::sync::atomic::Ordering::Release,
            );
            Some(core::mem::transmute::<*mut c_void, UnwBacktrace>(bt))
        }
    }

    /// The load address of the object holding code address `f`.
    fn object_of(f: usize) -> Option<usize> {
        // SAFETY: dladdr only fills the Dl_info it is given.
        unsafe {
            let mut info: libc::Dl_info = core::mem::zeroed();
            (libc::dladdr(f as *const c_void, &mut info) != 0).then_some(info.dli_fbase as usize)
        }
    }

    /// Flags of `fd` (`F_GETFD`/`F_GETFL`), or `-errno`.
    fn fcntl(fd: i32, cmd: c_int) -> isize {
        // SAFETY: a query on a descriptor number; no memory involved.
        unsafe { raw::syscall6(libc::SYS_fcntl, fd as usize, cmd as usize, 0, 0, 0, 0) }
    }

    /// Descriptor numbers looked at for libunwind's pipe (at most): it goes
    /// on the lowest free ones; [`ROOM`] more leave space for a few the
    /// program's other threads may open meanwhile (when the dumper thread
    /// loads libunwind).
    const SCAN: usize = 128;
    const ROOM: usize = 32;

    /// Free numbers below [`SCAN`]: a bitmap, and how far it goes (the
    /// lowest free number plus [`ROOM`]); `None` if none is free.
    fn free_numbers() -> Option<([u64; SCAN / 64], usize)> {
        let mut free = [0u64; SCAN / 64];
        let mut end = SCAN;
        let mut fd = 0;
        while fd < end {
            if fcntl(fd as i32, libc::F_GETFD) == -(libc::EBADF as isize) {
                free[fd / 64] |= 1 << (fd % 64);
                end = end.min(fd + ROOM);
            }
            fd += 1;
        }
        free.iter().any(|&w| w != 0).then_some((free, end))
    }

    /// After libunwind's initialisation: closes its pipe if it opened one
    /// on numbers that were `free` (both ends of one FIFO, non-blocking
    /// and close-on-exec, one read, one write) and says whether nothing
    /// else appeared there (if anything did, all is left alone).
    fn close_validation_pipe(free: &[u64; SCAN / 64], end: usize) -> bool {
        let flags = |fd: i32| {
            let fd_flags = fcntl(fd, libc::F_GETFD);
            let fl = fcntl(fd, libc::F_GETFL);
            (fd_flags >= 0
                && fd_flags & libc::FD_CLOEXEC as isize != 0
                && fl >= 0
                && fl & libc::O_NONBLOCK as isize != 0)
                .then_some(fl as c_int & libc::O_ACCMODE)
        };
        let fifo = |fd: i32| {
            raw::fstat(fd)
                .filter(|st| st.st_mode & libc::S_IFMT == libc::S_IFIFO)
                .map(|st| (st.st_dev, st.st_ino))
        };
        // The pipe's ends: [read, write], and their file.
        let mut ends = [-1i32; 2];
        let mut file = None;
        for fd in 0..end as i32 {
            let was_free = free[fd as usize / 64] & (1 << (fd % 64)) != 0;
            if !was_free || fcntl(fd, libc::F_GETFD) == -(libc::EBADF as isize) {
                continue;
            }
            // New since the scan: only a libunwind-style pipe end will do
            // (a number the program's other threads took is not ours to
            // judge, so libunwind is then not used).
            let end = match flags(fd) {
                Some(libc::O_RDONLY) => 0,
                Some(libc::O_WRONLY) => 1,
                _ => return false,
            };
            let Some(f) = fifo(fd) else { return false };
            if ends[end] >= 0 || file.is_some_and(|g| g != f) {
                return false;
            }
            ends[end] = fd;
            file = Some(f);
        }
        match ends {
            // Initialised earlier (the program uses libunwind): its pipe,
            // if any, is the program's, as in a bare run.
            [-1, -1] => true,
            [r, w] if r >= 0 && w >= 0 => {
                raw::close(r);
                raw::close(w);
                true
            }
            _ => false,
        }
    }

    /// Whether [`readable`] tells a readable word from an unmapped one here
    /// (a sandbox could answer the system call otherwise).
    fn probe_works() -> bool {
        let word = 0u64;
        readable(core::hint::black_box(&word) as *const u64 as usize) && !readable(8)
    }

    /// Whether the 8 bytes at `addr` can be read, without a descriptor:
    /// `rt_sigprocmask` with an invalid `how` copies the new mask from
    /// `addr` first (`EFAULT` if it cannot) and then refuses the change
    /// (`EINVAL`), so nothing changes (the probe abseil's
    /// `AddressIsReadable` uses). One raw system call; errno untouched.
    fn readable(addr: usize) -> bool {
        if addr < crate::os::PAGE {
            return false;
        }
        // SAFETY: the kernel only reads `addr` (validating it) and makes
        // no change: `how` is invalid, no old mask is asked for.
        let r = unsafe {
            raw::syscall6(
                libc::SYS_rt_sigprocmask,
                usize::MAX,
                addr,
                0,
                core::mem::size_of::<u64>(),
                0,
                0,
            )
        };
        r == -(libc::EINVAL as isize)
    }

    /// The replacement for libunwind's local `access_mem` (x86-64, 1.6):
    /// the same reads and writes, but an address is validated, when the
    /// cursor asks (bit 0 of `arg`, set for frames libunwind guessed and,
    /// with its conservative checks, for every `unw_step`), by [`readable`]
    /// rather than by libunwind's pipe. Runs inside hooks: no allocation,
    /// no lock, no errno.
    unsafe extern "C" fn access_mem(
        _as: *mut c_void,
        addr: usize,
        val: *mut usize,
        write: c_int,
        arg: *mut c_void,
    ) -> c_int {
        // SAFETY: libunwind's contract for access_mem: `val` is valid, and
        // `addr` is a word of this process's memory libunwind reads or
        // writes (its own writes go to the context it was given); reads it
        // asks to validate are checked first.
        unsafe {
            // Unaligned accesses: a guessed frame's addresses may be
            // anything (one x86-64 `mov` either way).
            if write != 0 {
                (addr as *mut usize).write_unaligned(*val);
                return 0;
            }
            if arg as usize & 1 != 0 && !readable(addr) {
                return -1;
            }
            *val = (addr as *const usize).read_unaligned();
        }
        0
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn the_probe_tells_readable_from_unmapped() {
            assert!(super::probe_works());
            let page = crate::os::map(4096);
            assert!(super::readable(page as usize));
            // SAFETY: the mapping just made, unused.
            unsafe { crate::os::unmap(page, 4096) };
            assert!(!super::readable(page as usize));
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
        assert_eq!(
            fast_unwinder_loaded(),
            cfg!(target_arch = "x86_64"),
            "libunwind.so.8 is on these machines, used on x86-64"
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
        let mut sym = crate::profile::symbolize::Symbolizer::default();
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

//! Where each thread's [`ThreadState`] lives: an initial-exec TLS block
//! defined in C (`tls.c`), reached through a two-instruction accessor that
//! never calls `__tls_get_addr` and so never allocates (see the crate docs).
//!
//! The hot paths do not even call the accessor: initial-exec TLS sits at
//! the same offset from the thread pointer in every thread. On x86-64,
//! [`fast_state`] loads that offset from the GOT entry the loader filled in
//! (the block's `@gottpoff`, as C does) and adds the thread pointer: three
//! instructions, valid from the thread's first instruction, no check. On
//! AArch64 the constructor measures the offset once; until then (other
//! libraries' constructors allocating before ours runs) the hooks take
//! their slow paths, where [`state`] calls the accessor.

use core::ffi::c_void;
use core::sync::atomic::{AtomicIsize, Ordering};

use heapprof::ffi_surface::engine::thread_state::{ThreadState, THREAD_STATE_BYTES};

extern "C" {
    fn heapprof_preload_state() -> *mut c_void;
    fn heapprof_preload_state_bytes() -> usize;
}

/// The calling thread's block minus its thread pointer: the same for every
/// thread (that is what initial-exec TLS is), measured once by
/// [`measure_offset`]. 0 until then (a real offset is never 0: the block
/// lies below the thread pointer on x86-64 and above the TCB on AArch64).
static OFFSET: AtomicIsize = AtomicIsize::new(0);

/// The thread pointer: what initial-exec TLS offsets are relative to.
#[inline(always)]
fn thread_pointer() -> usize {
    let tp: usize;
    #[cfg(target_arch = "x86_64")]
    // SAFETY: %fs:0 holds the thread control block's pointer to itself on
    // x86-64 Linux; reading it has no side effects.
    unsafe {
        core::arch::asm!("mov {}, qword ptr fs:[0]", out(reg) tp,
            options(nostack, readonly, preserves_flags, pure));
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: TPIDR_EL0 is the thread pointer register; reading it has no
    // side effects.
    unsafe {
        core::arch::asm!("mrs {}, tpidr_el0", out(reg) tp,
            options(nostack, nomem, preserves_flags, pure));
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        tp = 0;
    }
    tp
}

/// Measures `OFFSET`, so that [`fast_state`] can compute the block's address
/// inline (a register read and an add) instead of calling into C (AArch64;
/// x86-64 reads the offset from the GOT instead and needs no measure).
/// Called from the library constructor; harmless to call again.
pub fn measure_offset() {
    if cfg!(not(any(target_arch = "x86_64", target_arch = "aarch64"))) {
        return;
    }
    // SAFETY: a plain C function returning this thread's block.
    let block = unsafe { heapprof_preload_state() } as usize;
    let offset = block.wrapping_sub(thread_pointer()) as isize;
    OFFSET.store(offset, Ordering::Relaxed);
}

extern "C" {
    /// The C block itself (x86-64: named in the GOT-relative loads, below
    /// and in the hand-written hooks).
    #[cfg(target_arch = "x86_64")]
    pub(crate) static heapprof_state: u8;
}

/// The calling thread's state, computed inline (x86-64: always; elsewhere
/// `None` until the constructor has measured the offset, and the hooks then
/// take their slow path, which uses [`state`]).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub fn fast_state() -> Option<&'static ThreadState> {
    let block: usize;
    // SAFETY: the initial-exec access sequence: the GOT entry holds the
    // block's offset from the thread pointer (a TPOFF relocation the loader
    // resolves before any code of this library runs), %fs:0 the thread
    // pointer. Reads only, no stack.
    unsafe {
        core::arch::asm!(
            "mov {b}, qword ptr [rip + {s}@GOTTPOFF]",
            "add {b}, qword ptr fs:[0]",
            b = out(reg) block,
            s = sym heapprof_state,
            options(nostack, readonly, pure),
        );
    }
    // SAFETY: `block` is the calling thread's block; see `from_block`.
    Some(unsafe { from_block(block as *const ThreadState) })
}

/// The calling thread's state, computed inline; `None` until the
/// constructor has measured the offset (the hooks then take their slow path,
/// which uses [`state`]).
#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
pub fn fast_state() -> Option<&'static ThreadState> {
    let offset = OFFSET.load(Ordering::Relaxed);
    if offset == 0 {
        return None;
    }
    let block = thread_pointer().wrapping_add_signed(offset) as *const ThreadState;
    // SAFETY: every thread's block is at this offset from its thread
    // pointer (initial-exec TLS), so `block` is the calling thread's; see
    // `from_block` for the rest.
    Some(unsafe { from_block(block) })
}

/// The calling thread's state, at any time.
#[inline]
pub fn state() -> &'static ThreadState {
    match fast_state() {
        Some(st) => st,
        // SAFETY: the accessor returns the calling thread's block.
        None => unsafe { from_block(heapprof_preload_state().cast()) },
    }
}

/// # Safety
/// `block` is the calling thread's TLS block from `tls.c`. That block is
/// 16-aligned, at least THREAD_STATE_BYTES long (checked by [`fits`] before
/// profiling starts; the type's size by a const assertion in the engine),
/// zero-filled when the thread starts (all zeros is `ThreadState::new()`),
/// and alive for as long as the thread runs code. ThreadState is made of
/// Cells and only ever used from its own thread.
#[inline(always)]
unsafe fn from_block(block: *const ThreadState) -> &'static ThreadState {
    // SAFETY: per the contract above.
    unsafe { &*block }
}

/// [`state`] as the engine's [`heapprof::engine::thread_state::StateFn`].
pub fn state_ptr() -> *const ThreadState {
    state()
}

/// Whether the C block can hold a `ThreadState` (it always can unless the
/// two sides were edited apart).
pub fn fits() -> bool {
    // SAFETY: a plain C function returning a constant.
    let bytes = unsafe { heapprof_preload_state_bytes() };
    bytes >= THREAD_STATE_BYTES
        && bytes >= core::mem::size_of::<ThreadState>()
        && 16 % core::mem::align_of::<ThreadState>() == 0
}

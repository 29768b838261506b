//! The interposed `pthread_create`: every thread the program creates is
//! registered with its creating stack (`heapprof::engine::threads`), for the
//! threads profile written next to each heap profile
//! (`PREFIX.threads.PID.SEQ.pb.gz`).
//!
//! The hook forwards to the next definition (`dlsym(RTLD_NEXT,
//! "pthread_create")`, glibc's), looked up in the library constructor, or on
//! the first call if another library's constructor creates a thread before
//! ours runs (those early threads are not tracked: the registry starts with
//! the constructor). The new thread starts in the engine's trampoline, which
//! runs the program's start routine under a pthread cleanup handler that
//! forgets the thread however it ends — return, `pthread_exit`,
//! cancellation — so neither `pthread_exit` nor `pthread_cancel` needs a
//! hook (see `heapprof::engine::threads`).
//!
//! `pthread_exit` is interposed for one thing: the main thread calling it
//! may leave heapprof's threads the last ones, which must then end so the
//! process does (`heapprof::control::lifetime`).
//!
//! Not seen: threads glibc starts for itself without going through the
//! symbol (the helper of `timer_create` with `SIGEV_THREAD`, POSIX AIO's
//! workers), and threads made with `clone` directly.
//!
//! Like the malloc hooks: no lock, nothing allocated through the hooks (the
//! thread is busy while the engine captures the stack), nothing printed.
//! The engine's registration is inlined into the hook, which calls the
//! unwinder from its own frame: the creating stack starts at the program's
//! call with the fewest frames unwound.
//! The real `pthread_create` runs outside the busy state, so the memory it
//! allocates for the new thread (its TLS) is profiled as before.

use core::ffi::{c_int, c_void};
use heapprof::ffi_surface::control;
use heapprof::ffi_surface::engine::threads;
use heapprof::ffi_surface::os::NextSymbol;

/// glibc's `pthread_create` (null if there is none, which a dynamically
/// linked glibc program always has). dlsym's allocations go through the
/// malloc hooks, which serve them.
static REAL: NextSymbol = NextSymbol::new(c"pthread_create");

/// From the constructor: find the real function and start tracking.
pub fn start() {
    REAL_EXIT.get();
    let real = REAL.get();
    if !real.is_null() {
        // SAFETY: glibc's pthread_create, of this signature.
        control::triggers::set_real_pthread_create(unsafe {
            core::mem::transmute::<*mut c_void, control::triggers::PthreadCreateFn>(real)
        });
        threads::enable();
    }
}

/// Interposed `pthread_create`.
///
/// # Safety
/// As C's `pthread_create`.
#[no_mangle]
#[inline(never)]
pub unsafe extern "C" fn pthread_create(
    thread: *mut libc::pthread_t,
    attr: *const libc::pthread_attr_t,
    start: threads::StartRoutine,
    arg: *mut c_void,
) -> c_int {
    let real = REAL.get();
    if real.is_null() {
        return libc::EAGAIN;
    }
    // The first thread of the program's own: the dumper thread takes over
    // from the watcher.
    control::triggers::program_creates_thread();
    // SAFETY: REAL holds glibc's pthread_create, of this signature.
    let real: threads::CreateFn =
        unsafe { core::mem::transmute::<*mut c_void, threads::CreateFn>(real) };
    if !crate::ready() {
        // SAFETY: forwarding the caller's arguments.
        return unsafe { real(thread, attr, start, arg) };
    }
    let marker = 0u8;
    let marker = core::hint::black_box(&marker) as *const u8 as usize;
    let st = crate::tls::state();
    // SAFETY: the caller's contract; `real` is the next pthread_create.
    unsafe { threads::create(real, st, thread, attr, start, arg, marker) }
}

/// glibc's `pthread_exit` (null if there is none).
static REAL_EXIT: NextSymbol = NextSymbol::new(c"pthread_exit");

/// `pthread_exit`'s type: it unwinds the caller's stack (a forced unwind).
type ExitFn = unsafe extern "C-unwind" fn(*mut c_void) -> !;

/// Interposed `pthread_exit`: tells heapprof when the main thread ends, then
/// forwards (its forced unwind passes through this frame, which holds
/// nothing to drop).
///
/// # Safety
/// As C's `pthread_exit`.
#[no_mangle]
pub unsafe extern "C-unwind" fn pthread_exit(retval: *mut c_void) -> ! {
    control::lifetime::thread_exits();
    let p = REAL_EXIT.get();
    if p.is_null() {
        // No glibc definition (never with a dynamically linked glibc
        // program): end the thread as its last resort would.
        loop {
            // SAFETY: ends the calling thread.
            unsafe { libc::syscall(libc::SYS_exit, 0) };
        }
    }
    // SAFETY: glibc's pthread_exit, of this signature.
    unsafe { core::mem::transmute::<*mut c_void, ExitFn>(p)(retval) }
}

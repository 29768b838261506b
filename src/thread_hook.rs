//! The Rust way in for the threads profile (cargo feature `threads`):
//! `pthread_create` interposed from the executable itself.
//!
//! # How it works
//! With the feature on, this crate defines `pthread_create` (a weak symbol
//! that jumps to the hook). Linked into an executable, that definition wins
//! over libc's in two ways:
//! - at static link time, every call from the executable's own code —
//!   `std::thread::spawn` and `Builder::spawn`, rayon, tokio's blocking
//!   pool, any C code compiled in — binds to it, because a definition in an
//!   object file takes precedence over a shared library's;
//! - at run time, shared libraries that call `pthread_create` (a C library
//!   loaded by the program) find it first too: the linker exports an
//!   executable's definition of a symbol that a shared library on the link
//!   line also defines, and the executable comes first in the loader's
//!   search order.
//!
//! The hook registers the thread with its creating stack
//! ([`crate::engine::threads`]) and forwards to the next definition,
//! `dlsym(RTLD_NEXT, "pthread_create")` (glibc's). Threads profiles are then
//! written beside every triggered heap dump (`PREFIX.threads.PID.SEQ.pb.gz`)
//! and by [`crate::profile::threads_pprof`].
//!
//! Profiling start-up ([`crate::control::startup`], run by `Profiler`'s first
//! allocation) refers to this module, which is what makes the linker keep
//! it: a definition in a library crate is only linked if something pulls its
//! object file in. A program that uses the feature without `Profiler` gets
//! tracking from its first `pthread_create` on.
//!
//! # Limits
//! - Only threads created after start-up are tracked (in practice every
//!   thread: spawning one allocates, which starts profiling first). The
//!   main thread and threads created by `clone` directly are not.
//! - A statically linked executable has no `RTLD_NEXT` to forward to; the
//!   hook then fails thread creation with `EAGAIN`, so the feature is for
//!   dynamically linked programs (the Rust default on Linux).
//! - A thread is forgotten when it leaves its start routine: by returning
//!   (all `std::thread` threads: std catches panics), `pthread_exit` or
//!   cancellation, through the engine's cleanup handler (see
//!   [`crate::engine::threads`]). The last two are a forced unwind, which
//!   Rust leaves undefined through frames with destructors (std's thread
//!   start has some): they are for threads C code starts, which are
//!   counted right on either way in.
//! - Under the LD_PRELOAD library the executable's definition still comes
//!   first; it forwards to the library's, so both engines count the thread.
//! - The symbol is weak so that it never clashes with a strong definition
//!   in the same link: the preload library's own, when a workspace build
//!   (`--all-features`) unifies this feature into the library's copy of
//!   this crate; that one then serves.
//! - Why opt-in: interposing a libc function changes every thread creation
//!   in the process, including those of C libraries the program links.

use core::ffi::{c_int, c_void};
use core::sync::atomic::{AtomicUsize, Ordering};

use crate::engine::threads;
use crate::os::next_symbol::NextSymbol;

/// The next `pthread_create` (glibc's). dlsym's own allocations go to
/// libc's malloc, not to the program's global allocator.
static REAL: NextSymbol = NextSymbol::new(c"pthread_create");
/// The hook's address, stored by [`enable`] so that start-up refers to it.
static HOOK: AtomicUsize = AtomicUsize::new(0);

/// Finds the real function and turns tracking on (from start-up).
pub(crate) fn enable() {
    HOOK.store(pthread_create as *const () as usize, Ordering::Relaxed);
    if !REAL.get().is_null() {
        threads::enable();
    }
}

extern "C" {
    /// The exported name: a weak alias of [`hook`] (below), so that a
    /// strong `pthread_create` elsewhere in the same link wins without a
    /// clash — the preload library's, when a workspace build unifies this
    /// feature into the library's copy of this crate. Referring to it here
    /// keeps its object file in the link.
    fn pthread_create(
        thread: *mut libc::pthread_t,
        attr: *const libc::pthread_attr_t,
        start: threads::StartRoutine,
        arg: *mut c_void,
    ) -> c_int;
}

// A jump, not a call: the hook's frame sits directly above the program's,
// as stack capture expects (see `engine::stack`).
#[cfg(target_arch = "x86_64")]
core::arch::global_asm!(
    ".pushsection .text.heapprof_pthread_create,\"ax\",@progbits",
    ".weak pthread_create",
    ".type pthread_create,@function",
    "pthread_create:",
    "jmp {hook}@PLT",
    ".size pthread_create, . - pthread_create",
    ".popsection",
    hook = sym hook,
);
#[cfg(target_arch = "aarch64")]
core::arch::global_asm!(
    ".pushsection .text.heapprof_pthread_create,\"ax\",@progbits",
    ".weak pthread_create",
    ".type pthread_create,%function",
    "pthread_create:",
    "b {hook}",
    ".size pthread_create, . - pthread_create",
    ".popsection",
    hook = sym hook,
);

/// The interposed `pthread_create`, reached through the exported weak
/// `pthread_create` (see the module docs).
///
/// # Safety
/// As C's `pthread_create`.
#[inline(never)]
unsafe extern "C" fn hook(
    thread: *mut libc::pthread_t,
    attr: *const libc::pthread_attr_t,
    start: threads::StartRoutine,
    arg: *mut c_void,
) -> c_int {
    let real = REAL.get();
    if real.is_null() {
        return libc::EAGAIN;
    }
    // SAFETY: REAL holds the next pthread_create, of this signature.
    let real: threads::CreateFn =
        unsafe { core::mem::transmute::<*mut c_void, threads::CreateFn>(real) };
    let st = crate::engine::thread_state::current();
    if !threads::enabled() && !st.is_busy() {
        threads::enable();
    }
    let marker = 0u8;
    let marker = core::hint::black_box(&marker) as *const u8 as usize;
    // SAFETY: the caller's contract; `real` is the next pthread_create.
    unsafe { threads::create(real, st, thread, attr, start, arg, marker) }
}

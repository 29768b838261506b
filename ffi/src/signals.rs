//! The dump signal, invisible to the program: interposed mask, disposition,
//! wait, `exec` and spawn calls.
//!
//! # Model
//! heapprof blocks its dump signal (SIGUSR2, or `HEAPPROF_SIGNAL`) in the
//! main thread from the constructor on, so every program thread inherits the
//! block, and only heapprof's dumper thread takes it (the model is in
//! `heapprof::control::dump_signal`). That block is heapprof's, not the
//! program's, so these functions keep it out of everything the program can
//! observe, each forwarding to the next definition (`dlsym(RTLD_NEXT)`,
//! glibc's):
//!
//! - `pthread_sigmask`, `sigprocmask`: the old mask reads as if heapprof had
//!   not blocked its signal (unless the thread blocks everything, which
//!   includes it); a new mask keeps it blocked. A program that blocks the
//!   signal itself (a set naming it, not a block-everything set) wants it,
//!   for `sigwait`, `signalfd` or to defer it: heapprof yields — stops hiding
//!   it, the dumper blocks it too so the process-directed signal stays
//!   pending for the program — and the dumper says so once.
//! - `sigwait`, `sigwaitinfo`, `sigtimedwait`, `signalfd` on a set with the
//!   signal: the same yield (a program that waits without blocking first).
//! - `sigaction`, `signal` installing a handler (or `SIG_IGN`) on it: the
//!   program wins, as before; the signal is also unblocked in the calling
//!   thread so it is delivered as bare, and the dumper says so once. Reading
//!   the disposition while heapprof's handler is in place answers
//!   `SIG_DFL`, and setting `SIG_DFL` then keeps heapprof's handler (bare,
//!   the program has the default; heapprof just takes the signal instead of
//!   dying of it) — so a save-and-restore of the "default" changes nothing.
//! - `raise` of the signal (thread-directed, so it would stay pending in
//!   the raising thread): asks the dumper for the dump directly.
//! - `sigsuspend`, `ppoll`, `pselect`, `epoll_pwait`, `epoll_pwait2`: a
//!   temporary mask keeps the signal blocked, so a dump never wakes them.
//! - `execve`, `execv`, `execvp`, `execvpe`, `execveat`, `fexecve`, and the
//!   variadic `execl`, `execlp`, `execle` (glibc builds those on its
//!   internal `__execve`, past an interposed `execve`, so each is wrapped;
//!   the variadic ones are C in `exec.c`, rebuilt over the interposed
//!   `execv*`, and exported through naked trampolines): the thread's mask is
//!   set to the program's view for the `exec` (and restored if it fails), so
//!   the new image starts with the mask it would have had. Dispositions
//!   need nothing: `exec` resets handled signals to the default.
//! - `posix_spawn`, `posix_spawnp`: the child gets `POSIX_SPAWN_SETSIGMASK`
//!   with the program's view, unless the program set a mask itself.
//! - `system`, `popen`: glibc spawns through its internal `posix_spawn`
//!   with the caller's real mask, so the calling thread takes the program's
//!   view for the call. A dump signal that arrives meanwhile may run the
//!   handler on that thread; `system` retries its wait and `popen` does not
//!   wait, so neither returns early.
//!
//! Not covered: `sigset`, `sysv_signal`, `bsd_signal` (old System V and BSD
//! names), `pthread_kill`/`tgkill` of the signal to a program thread (it
//! stays pending there), `clone`/`vfork` followed by a raw `execve` system
//! call, glibc-internal spawns other than `system`/`popen` (`wordexp`),
//! masks set with the raw `rt_sigprocmask` system call, and what
//! `/proc/self/status` says (`SigBlk` shows the block). A thread created while
//! another thread's mask blocked everything reads the signal as unblocked.
//!
//! # Cost
//! Each wrapper adds a few loads, bit operations and compares to the
//! system call it makes (a copy of the set when it must change it), next
//! to a system call that costs far more (`sigaction` on heapprof's own
//! signal makes one more, to read the disposition; figures: README, "The
//! figures behind the design");
//! none locks or allocates, so all of them are as async-signal-safe as the
//! functions they wrap, and a forked child may call them before `exec`. The
//! real functions are resolved in the constructor ([`init`]); one called
//! before (by another library's constructor) is resolved on first use.
#![allow(clippy::missing_safety_doc)]

use core::ffi::{c_char, c_int, c_short, c_void};
use core::ptr::null_mut;
use heapprof::ffi_surface::control;
use heapprof::ffi_surface::os;

use heapprof::ffi_surface::control::dump_signal::{self, Why};
use libc::{sigset_t, timespec};

/// A real function, looked up on first use.
type Real = os::NextSymbol;

macro_rules! call {
    ($real:expr, fn($($t:ty),* $(,)?) -> $r:ty, $($arg:expr),* $(,)?) => {{
        let p = $real.get();
        if p.is_null() {
            crate::real::set_errno(libc::ENOSYS);
            -1
        } else {
            // SAFETY: the symbol of that name has this C signature.
            let f = unsafe {
                core::mem::transmute::<*mut c_void, unsafe extern "C" fn($($t),*) -> $r>(p)
            };
            // SAFETY: forwarding the caller's arguments unchanged or as a
            // local copy of the same type.
            unsafe { f($($arg),*) }
        }
    }};
}

static PTHREAD_SIGMASK: Real = Real::new(c"pthread_sigmask");
static SIGPROCMASK: Real = Real::new(c"sigprocmask");
static SIGACTION: Real = Real::new(c"sigaction");
static SIGNAL: Real = Real::new(c"signal");
static SIGSUSPEND: Real = Real::new(c"sigsuspend");
static SIGWAIT: Real = Real::new(c"sigwait");
static SIGWAITINFO: Real = Real::new(c"sigwaitinfo");
static SIGTIMEDWAIT: Real = Real::new(c"sigtimedwait");
static SIGNALFD: Real = Real::new(c"signalfd");
static PPOLL: Real = Real::new(c"ppoll");
static PSELECT: Real = Real::new(c"pselect");
static EPOLL_PWAIT: Real = Real::new(c"epoll_pwait");
static EPOLL_PWAIT2: Real = Real::new(c"epoll_pwait2");
static EXECVE: Real = Real::new(c"execve");
static EXECV: Real = Real::new(c"execv");
static EXECVP: Real = Real::new(c"execvp");
static EXECVPE: Real = Real::new(c"execvpe");
static EXECVEAT: Real = Real::new(c"execveat");
static FEXECVE: Real = Real::new(c"fexecve");
static POSIX_SPAWN: Real = Real::new(c"posix_spawn");
static POSIX_SPAWNP: Real = Real::new(c"posix_spawnp");
static SYSTEM: Real = Real::new(c"system");
static POPEN: Real = Real::new(c"popen");
static RAISE: Real = Real::new(c"raise");

static ALL: [&Real; 24] = [
    &RAISE,
    &PTHREAD_SIGMASK,
    &SIGPROCMASK,
    &SIGACTION,
    &SIGNAL,
    &SIGSUSPEND,
    &SIGWAIT,
    &SIGWAITINFO,
    &SIGTIMEDWAIT,
    &SIGNALFD,
    &PPOLL,
    &PSELECT,
    &EPOLL_PWAIT,
    &EPOLL_PWAIT2,
    &EXECVE,
    &EXECV,
    &EXECVP,
    &EXECVPE,
    &EXECVEAT,
    &FEXECVE,
    &POSIX_SPAWN,
    &POSIX_SPAWNP,
    &SYSTEM,
    &POPEN,
];

/// Resolves every real function (so a forked child never calls `dlsym`)
/// and points heapprof's own mask, disposition and wait calls at them.
/// Called by the constructor before profiling starts.
pub fn init() {
    for r in ALL {
        r.get();
    }
    let (m, a, p) = (PTHREAD_SIGMASK.get(), SIGACTION.get(), PPOLL.get());
    if !m.is_null() && !a.is_null() && !p.is_null() {
        // SAFETY: the symbols of those names have these signatures.
        unsafe {
            dump_signal::set_real_calls(
                core::mem::transmute::<*mut c_void, dump_signal::SigmaskFn>(m),
                core::mem::transmute::<*mut c_void, dump_signal::SigactionFn>(a),
                core::mem::transmute::<*mut c_void, dump_signal::PpollFn>(p),
            );
        }
    }
}

use dump_signal::{member, only};

/// The calling thread's real mask.
fn current_mask() -> sigset_t {
    // SAFETY: reading the mask into a local.
    unsafe {
        let mut m: sigset_t = core::mem::zeroed();
        dump_signal::sigmask(libc::SIG_BLOCK, core::ptr::null(), &mut m);
        m
    }
}

/// The mask/sigprocmask wrapper around `real`.
///
/// # Safety
/// As `pthread_sigmask`.
unsafe fn mask_call(real: &Real, how: c_int, set: *const sigset_t, old: *mut sigset_t) -> c_int {
    let h = dump_signal::hidden();
    let r = if h == 0 || set.is_null() {
        call!(
            real,
            fn(c_int, *const sigset_t, *mut sigset_t) -> c_int,
            how,
            set,
            old
        )
    } else {
        // SAFETY: a non-null set from the caller.
        let given = unsafe { &*set };
        let asks = member(given, h);
        // A copy only when the set must change (it is 128 bytes).
        let mut copy;
        let mut pass = set;
        if asks && how != libc::SIG_UNBLOCK && !dump_signal::blanket(given, h) {
            // The program blocks the signal itself: it wants it.
            dump_signal::program_takes(h, Why::Blocks);
        } else if (how == libc::SIG_UNBLOCK && asks) || (how == libc::SIG_SETMASK && !asks) {
            // Unblocking it, or a new mask without it: it stays blocked.
            copy = *given;
            if asks {
                dump_signal::del(&mut copy, h);
            } else {
                dump_signal::add(&mut copy, h);
            }
            pass = &copy;
        }
        call!(
            real,
            fn(c_int, *const sigset_t, *mut sigset_t) -> c_int,
            how,
            pass,
            old
        )
    };
    if r == 0 && !old.is_null() {
        // SAFETY: the real call filled the caller's set.
        dump_signal::view(unsafe { &mut *old }, h);
    }
    r
}

#[no_mangle]
pub unsafe extern "C" fn pthread_sigmask(
    how: c_int,
    set: *const sigset_t,
    old: *mut sigset_t,
) -> c_int {
    // SAFETY: the caller's contract.
    unsafe { mask_call(&PTHREAD_SIGMASK, how, set, old) }
}

#[no_mangle]
pub unsafe extern "C" fn sigprocmask(
    how: c_int,
    set: *const sigset_t,
    old: *mut sigset_t,
) -> c_int {
    // SAFETY: the caller's contract.
    unsafe { mask_call(&SIGPROCMASK, how, set, old) }
}

/// Unblocks the signal `h` heapprof hid in the calling thread (the program
/// took it over), unless the thread blocks everything.
fn unhide_here(h: c_int) {
    let cur = current_mask();
    if member(&cur, h) && !dump_signal::blanket(&cur, h) {
        let s = only(h);
        // SAFETY: unblocking one signal in the calling thread.
        unsafe { dump_signal::sigmask(libc::SIG_UNBLOCK, &s, null_mut()) };
    }
}

/// The program's handler replaces heapprof's on `sig`.
fn handed_over(sig: c_int) {
    let h = dump_signal::hidden();
    dump_signal::program_takes(sig, Why::Handler);
    if h == sig {
        unhide_here(sig);
    }
}

/// Whether heapprof's handler is on `sig` now (the program has not set
/// its own since).
fn ours_installed(sig: c_int) -> bool {
    if sig == 0 || sig != control::triggers::handler_signal() {
        return false;
    }
    // SAFETY: querying a disposition into a zeroed local.
    let cur = unsafe {
        let mut cur: libc::sigaction = core::mem::zeroed();
        dump_signal::sigaction(sig, core::ptr::null(), &mut cur);
        cur.sa_sigaction
    };
    control::triggers::is_our_handler(cur)
}

fn default_action() -> libc::sigaction {
    // SAFETY: a zeroed sigaction is SIG_DFL with no flags and an empty
    // mask, which is how the kernel reports a default disposition.
    unsafe { core::mem::zeroed() }
}

#[no_mangle]
pub unsafe extern "C" fn sigaction(
    sig: c_int,
    act: *const libc::sigaction,
    old: *mut libc::sigaction,
) -> c_int {
    if !ours_installed(sig) {
        return call!(
            SIGACTION,
            fn(c_int, *const libc::sigaction, *mut libc::sigaction) -> c_int,
            sig,
            act,
            old
        );
    }
    // SAFETY: a non-null act from the caller.
    if !act.is_null() && unsafe { (*act).sa_sigaction } == libc::SIG_DFL {
        // Setting the default the program already sees: keep ours.
        if !old.is_null() {
            // SAFETY: the caller's out-struct.
            unsafe { *old = default_action() };
        }
        return 0;
    }
    let r = call!(
        SIGACTION,
        fn(c_int, *const libc::sigaction, *mut libc::sigaction) -> c_int,
        sig,
        act,
        old
    );
    if r == 0 {
        if !old.is_null() {
            // SAFETY: the caller's out-struct (it held ours).
            unsafe { *old = default_action() };
        }
        if !act.is_null() {
            handed_over(sig);
        }
    }
    r
}

#[no_mangle]
pub unsafe extern "C" fn signal(sig: c_int, handler: libc::sighandler_t) -> libc::sighandler_t {
    if !ours_installed(sig) {
        let p = SIGNAL.get();
        if p.is_null() {
            crate::real::set_errno(libc::ENOSYS);
            return libc::SIG_ERR;
        }
        // SAFETY: `signal` has this signature; the caller's arguments.
        return unsafe {
            core::mem::transmute::<
                *mut c_void,
                unsafe extern "C" fn(c_int, libc::sighandler_t) -> libc::sighandler_t,
            >(p)(sig, handler)
        };
    }
    if handler == libc::SIG_DFL {
        return libc::SIG_DFL;
    }
    let p = SIGNAL.get();
    if p.is_null() {
        crate::real::set_errno(libc::ENOSYS);
        return libc::SIG_ERR;
    }
    // SAFETY: as above.
    let r = unsafe {
        core::mem::transmute::<
            *mut c_void,
            unsafe extern "C" fn(c_int, libc::sighandler_t) -> libc::sighandler_t,
        >(p)(sig, handler)
    };
    if r == libc::SIG_ERR {
        return r;
    }
    handed_over(sig);
    libc::SIG_DFL
}

/// `raise` of the dump signal while heapprof blocks it in this thread: the
/// signal would stay pending here, so ask the dumper directly, which is
/// what heapprof's handler would have done before `raise` returned.
#[no_mangle]
pub unsafe extern "C" fn raise(sig: c_int) -> c_int {
    let h = dump_signal::hidden();
    if sig != 0 && sig == h && ours_installed(sig) {
        let cur = current_mask();
        if member(&cur, h) && !dump_signal::blanket(&cur, h) {
            control::wake::request_dump();
            return 0;
        }
    }
    call!(RAISE, fn(c_int) -> c_int, sig)
}

/// `mask` with the hidden signal added, if the caller's temporary mask
/// would unblock it (None: use the caller's as is).
///
/// # Safety
/// `mask` is null or a valid set.
unsafe fn keep_hidden(mask: *const sigset_t) -> Option<sigset_t> {
    let h = dump_signal::hidden();
    if h == 0 || mask.is_null() {
        return None;
    }
    // SAFETY: non-null, the caller's set.
    if member(unsafe { &*mask }, h) {
        return None;
    }
    // SAFETY: as above.
    let mut m = unsafe { *mask };
    dump_signal::add(&mut m, h);
    Some(m)
}

#[no_mangle]
pub unsafe extern "C" fn sigsuspend(mask: *const sigset_t) -> c_int {
    // SAFETY: the caller's contract.
    let m = unsafe { keep_hidden(mask) };
    let mask = m.as_ref().map_or(mask, |m| m as *const sigset_t);
    call!(SIGSUSPEND, fn(*const sigset_t) -> c_int, mask)
}

#[no_mangle]
pub unsafe extern "C" fn ppoll(
    fds: *mut libc::pollfd,
    n: libc::nfds_t,
    ts: *const timespec,
    mask: *const sigset_t,
) -> c_int {
    // SAFETY: the caller's contract.
    let m = unsafe { keep_hidden(mask) };
    let mask = m.as_ref().map_or(mask, |m| m as *const sigset_t);
    call!(
        PPOLL,
        fn(*mut libc::pollfd, libc::nfds_t, *const timespec, *const sigset_t) -> c_int,
        fds,
        n,
        ts,
        mask
    )
}

#[no_mangle]
pub unsafe extern "C" fn pselect(
    n: c_int,
    r: *mut libc::fd_set,
    w: *mut libc::fd_set,
    e: *mut libc::fd_set,
    ts: *const timespec,
    mask: *const sigset_t,
) -> c_int {
    // SAFETY: the caller's contract.
    let m = unsafe { keep_hidden(mask) };
    let mask = m.as_ref().map_or(mask, |m| m as *const sigset_t);
    call!(
        PSELECT,
        fn(
            c_int,
            *mut libc::fd_set,
            *mut libc::fd_set,
            *mut libc::fd_set,
            *const timespec,
            *const sigset_t,
        ) -> c_int,
        n,
        r,
        w,
        e,
        ts,
        mask
    )
}

#[no_mangle]
pub unsafe extern "C" fn epoll_pwait(
    ep: c_int,
    events: *mut libc::epoll_event,
    max: c_int,
    timeout: c_int,
    mask: *const sigset_t,
) -> c_int {
    // SAFETY: the caller's contract.
    let m = unsafe { keep_hidden(mask) };
    let mask = m.as_ref().map_or(mask, |m| m as *const sigset_t);
    call!(
        EPOLL_PWAIT,
        fn(c_int, *mut libc::epoll_event, c_int, c_int, *const sigset_t) -> c_int,
        ep,
        events,
        max,
        timeout,
        mask
    )
}

#[no_mangle]
pub unsafe extern "C" fn epoll_pwait2(
    ep: c_int,
    events: *mut libc::epoll_event,
    max: c_int,
    timeout: *const timespec,
    mask: *const sigset_t,
) -> c_int {
    // SAFETY: the caller's contract.
    let m = unsafe { keep_hidden(mask) };
    let mask = m.as_ref().map_or(mask, |m| m as *const sigset_t);
    call!(
        EPOLL_PWAIT2,
        fn(c_int, *mut libc::epoll_event, c_int, *const timespec, *const sigset_t) -> c_int,
        ep,
        events,
        max,
        timeout,
        mask
    )
}

/// A wait for signals in `set`: if it names heapprof's, the program wants it.
///
/// # Safety
/// `set` is null or a valid set.
unsafe fn claim(set: *const sigset_t) {
    if set.is_null() {
        return;
    }
    // SAFETY: non-null, the caller's set.
    let set = unsafe { &*set };
    for sig in [dump_signal::hidden(), dump_signal::dumper_takes()] {
        if sig != 0 && member(set, sig) {
            dump_signal::program_takes(sig, Why::Waits);
        }
    }
}

#[no_mangle]
pub unsafe extern "C" fn sigwait(set: *const sigset_t, sig: *mut c_int) -> c_int {
    // SAFETY: the caller's contract.
    unsafe { claim(set) };
    call!(SIGWAIT, fn(*const sigset_t, *mut c_int) -> c_int, set, sig)
}

#[no_mangle]
pub unsafe extern "C" fn sigwaitinfo(set: *const sigset_t, info: *mut libc::siginfo_t) -> c_int {
    // SAFETY: the caller's contract.
    unsafe { claim(set) };
    call!(
        SIGWAITINFO,
        fn(*const sigset_t, *mut libc::siginfo_t) -> c_int,
        set,
        info
    )
}

#[no_mangle]
pub unsafe extern "C" fn sigtimedwait(
    set: *const sigset_t,
    info: *mut libc::siginfo_t,
    ts: *const timespec,
) -> c_int {
    // SAFETY: the caller's contract.
    unsafe { claim(set) };
    call!(
        SIGTIMEDWAIT,
        fn(*const sigset_t, *mut libc::siginfo_t, *const timespec) -> c_int,
        set,
        info,
        ts
    )
}

#[no_mangle]
pub unsafe extern "C" fn signalfd(fd: c_int, mask: *const sigset_t, flags: c_int) -> c_int {
    // SAFETY: the caller's contract.
    unsafe { claim(mask) };
    call!(
        SIGNALFD,
        fn(c_int, *const sigset_t, c_int) -> c_int,
        fd,
        mask,
        flags
    )
}

/// Gives the calling thread the program's view of its mask for an `exec`
/// or spawn; returns the signal unblocked, for [`after_exec`].
fn before_exec() -> c_int {
    let h = dump_signal::hidden();
    if h == 0 {
        return 0;
    }
    let cur = current_mask();
    if !member(&cur, h) || dump_signal::blanket(&cur, h) {
        return 0;
    }
    let s = only(h);
    // SAFETY: unblocking one signal in the calling thread.
    unsafe { dump_signal::sigmask(libc::SIG_UNBLOCK, &s, null_mut()) };
    h
}

/// Blocks `h` again (the exec failed, or the spawn is done), keeping errno.
fn after_exec(h: c_int) {
    if h != 0 {
        let errno = crate::real::KeptErrno::keep();
        let s = only(h);
        // SAFETY: blocking one signal in the calling thread.
        unsafe { dump_signal::sigmask(libc::SIG_BLOCK, &s, null_mut()) };
        errno.restore();
    }
}

type Argv = *const *const c_char;

/// The `exec` functions, from one body: the program's view of its mask
/// and the children-note socket readied for the next image
/// ([`crate::lineage::before_exec`]), the real call, and both undone if it
/// returns (the `exec` failed).
macro_rules! exec_wrapper {
    ($name:ident, $real:ident, ($($arg:ident: $t:ty),* $(,)?)) => {
        #[no_mangle]
        pub unsafe extern "C" fn $name($($arg: $t),*) -> c_int {
            let h = before_exec();
            let kept = crate::lineage::before_exec();
            let r = call!($real, fn($($t),*) -> c_int, $($arg),*);
            crate::lineage::exec_failed(kept);
            after_exec(h);
            r
        }
    };
}

exec_wrapper!(execve, EXECVE, (path: *const c_char, argv: Argv, envp: Argv));
exec_wrapper!(execv, EXECV, (path: *const c_char, argv: Argv));
exec_wrapper!(execvp, EXECVP, (file: *const c_char, argv: Argv));
exec_wrapper!(execvpe, EXECVPE, (file: *const c_char, argv: Argv, envp: Argv));
exec_wrapper!(
    execveat,
    EXECVEAT,
    (dirfd: c_int, path: *const c_char, argv: Argv, envp: Argv, flags: c_int)
);
exec_wrapper!(fexecve, FEXECVE, (fd: c_int, argv: Argv, envp: Argv));

// The variadic exec functions: C (exec.c) builds the argument array and
// calls the interposed execv/execvp/execve; these trampolines export them
// under the standard names (rustc exports only Rust items from a cdylib)
// and jump there with every argument register and the stack untouched.
extern "C" {
    fn heapprof_execl();
    fn heapprof_execlp();
    fn heapprof_execle();
}

macro_rules! trampoline {
    ($name:ident, $target:ident) => {
        #[no_mangle]
        #[unsafe(naked)]
        pub unsafe extern "C" fn $name() {
            #[cfg(target_arch = "x86_64")]
            core::arch::naked_asm!("jmp {f}", f = sym $target);
            #[cfg(target_arch = "aarch64")]
            core::arch::naked_asm!("b {f}", f = sym $target);
        }
    };
}
trampoline!(execl, heapprof_execl);
trampoline!(execlp, heapprof_execlp);
trampoline!(execle, heapprof_execle);

/// A spawn attribute giving the child the program's view of the mask, if
/// the program did not choose a mask (None: use the caller's).
///
/// # Safety
/// `attr` is null or an initialised attribute.
unsafe fn spawn_attr(attr: *const libc::posix_spawnattr_t) -> Option<libc::posix_spawnattr_t> {
    let h = dump_signal::hidden();
    if h == 0 {
        return None;
    }
    let mut cur = current_mask();
    if !member(&cur, h) || dump_signal::blanket(&cur, h) {
        return None;
    }
    // SAFETY: glibc's attribute is plain data (destroy is a no-op), so a
    // bitwise copy is a valid attribute; a null one is initialised fresh.
    unsafe {
        let mut a: libc::posix_spawnattr_t = core::mem::zeroed();
        let mut flags: c_short = 0;
        if attr.is_null() {
            libc::posix_spawnattr_init(&mut a);
        } else {
            a = *attr;
            libc::posix_spawnattr_getflags(&a, &mut flags);
            if flags as c_int & libc::POSIX_SPAWN_SETSIGMASK != 0 {
                return None;
            }
        }
        dump_signal::del(&mut cur, h);
        libc::posix_spawnattr_setflags(&mut a, flags | libc::POSIX_SPAWN_SETSIGMASK as c_short);
        libc::posix_spawnattr_setsigmask(&mut a, &cur);
        Some(a)
    }
}

/// `posix_spawn` or `posix_spawnp` (`real`, null if absent) with the
/// child's mask made what the program would have given it ([`spawn_attr`]).
///
/// # Safety
/// As C's `posix_spawn`; `real` is null or a function of [`SpawnFn`]'s type.
unsafe fn spawn(
    real: *mut c_void,
    pid: *mut libc::pid_t,
    path: *const c_char,
    actions: *const libc::posix_spawn_file_actions_t,
    attr: *const libc::posix_spawnattr_t,
    argv: *const *mut c_char,
    envp: *const *mut c_char,
) -> c_int {
    if real.is_null() {
        return libc::ENOSYS;
    }
    // SAFETY: the caller's contract.
    let a = unsafe { spawn_attr(attr) };
    let attr = a.as_ref().map_or(attr, |a| a as *const _);
    // SAFETY: `real` has this signature (contract); the caller's arguments.
    unsafe {
        core::mem::transmute::<*mut c_void, SpawnFn>(real)(pid, path, actions, attr, argv, envp)
    }
}

#[no_mangle]
pub unsafe extern "C" fn posix_spawn(
    pid: *mut libc::pid_t,
    path: *const c_char,
    actions: *const libc::posix_spawn_file_actions_t,
    attr: *const libc::posix_spawnattr_t,
    argv: *const *mut c_char,
    envp: *const *mut c_char,
) -> c_int {
    // SAFETY: the caller's contract; the slot holds `posix_spawn` or null.
    unsafe { spawn(POSIX_SPAWN.get(), pid, path, actions, attr, argv, envp) }
}

#[no_mangle]
pub unsafe extern "C" fn posix_spawnp(
    pid: *mut libc::pid_t,
    file: *const c_char,
    actions: *const libc::posix_spawn_file_actions_t,
    attr: *const libc::posix_spawnattr_t,
    argv: *const *mut c_char,
    envp: *const *mut c_char,
) -> c_int {
    // SAFETY: the caller's contract; the slot holds `posix_spawnp` or null.
    unsafe { spawn(POSIX_SPAWNP.get(), pid, file, actions, attr, argv, envp) }
}

type SpawnFn = unsafe extern "C" fn(
    *mut libc::pid_t,
    *const c_char,
    *const libc::posix_spawn_file_actions_t,
    *const libc::posix_spawnattr_t,
    *const *mut c_char,
    *const *mut c_char,
) -> c_int;

#[no_mangle]
pub unsafe extern "C" fn system(cmd: *const c_char) -> c_int {
    let h = before_exec();
    let r = call!(SYSTEM, fn(*const c_char) -> c_int, cmd);
    after_exec(h);
    r
}

#[no_mangle]
pub unsafe extern "C" fn popen(cmd: *const c_char, mode: *const c_char) -> *mut libc::FILE {
    let h = before_exec();
    let p = POPEN.get();
    let r = if p.is_null() {
        crate::real::set_errno(libc::ENOSYS);
        null_mut()
    } else {
        // SAFETY: `popen` has this signature; the caller's arguments.
        unsafe {
            core::mem::transmute::<
                *mut c_void,
                unsafe extern "C" fn(*const c_char, *const c_char) -> *mut libc::FILE,
            >(p)(cmd, mode)
        }
    };
    after_exec(h);
    r
}

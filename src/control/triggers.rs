//! Dump triggers: a signal, an interval, process exit — their settings, the
//! signal's installation and the entry every dump goes through
//! ([`dump_now`]); the thread that does the work for all of them is
//! `control::dumper`.
//!
//! # Model
//! Nothing that writes a profile ever runs in a signal handler or on an
//! allocation hook. The signal handler only asks the dumper for a dump
//! ([`crate::control::wake`]: a bit and a futex word, atomics and raw system
//! calls, `errno` untouched); a dedicated dumper thread, with every signal
//! blocked so the application's own signal handling is untouched, waits on
//! that word with a timeout. One wake-up takes every ask and writes one
//! profile, so a storm of signals coalesces: signals that arrive during a
//! dump cause at most one more. The timeout serves the
//! `HEAPPROF_INTERVAL` dumps and a periodic drain of the per-thread buffers
//! (which bounds their memory at high sampling rates).
//!
//! **The signal never interrupts the program** (no `EINTR`, no sleep cut
//! short): installing the handler also blocks the signal in the calling
//! thread — the main thread, before other threads exist — so every program
//! thread inherits the block, and the dumper thread alone unblocks it, only
//! while it waits on the word, where the handler then runs. The model, what
//! the program sees of it (nothing, under the preload library, which
//! interposes the mask, disposition, wait, `exec` and spawn calls) and the
//! limits of the Rust way in: [`crate::control::dump_signal`].
//!
//! The handler is installed only if the signal has no handler yet; if the
//! application already has one, heapprof leaves it and says so once. If the
//! application installs its own later, it wins, and the dumper says so once
//! (under the preload library the program's handler then runs where it
//! would bare; in a Rust binary it runs on the dumper thread). A program
//! that blocks or waits for the signal itself gets it too (see
//! `dump_signal`).
//!
//! **A single-threaded program under the preload library gets no dumper
//! thread** until it creates a thread of its own: a thread glibc knows of
//! would switch its malloc to the multi-threaded paths for good, costing
//! more than heapprof itself. The [`watcher`] stands in: a bare thread that
//! waits on the same word and signal and has each dump written by a copy of
//! the process (`crate::control::wake::wait_for_wake`, `watcher::round`); the sampled path
//! drains the buffers meanwhile. The program's first `pthread_create` starts
//! the dumper ([`program_creates_thread`]), and the watcher ends.
//!
//! A registered note source's one-off line (the preload library's
//! skipped-children note, [`crate::control::wake::NoteSource`]) is printed
//! with the pending messages.
//!
//! At exit, an `atexit` handler waits for a dump under way, writes a last
//! profile if asked (and prints any configuration problem not printed
//! yet). After `fork` the child restarts numbering at 0 under its own pid
//! with a new dumper thread (or watcher: the child has one thread); what
//! the fork handlers do is in `crate::control::fork_handlers`.
//!
//! The dumper never keeps a finished process alive: once the program's
//! last thread has ended (with `pthread_exit`), it stops the HTTP server
//! and returns, and glibc ends the process on it ([`lifetime`]).
//!
//! All messages go to stderr as one line each through `write(2)`, without
//! Rust's stderr lock (which a thread lost in a fork could hold).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::control::config::Config;
use crate::control::dump_errors::DumpError;
use crate::control::dump_signal::{self, Why};
use crate::control::signal_notices;
use crate::control::{lifetime, watcher};
use crate::engine::thread_state;
use crate::os::raw;
use crate::profile::dump::Trigger;

pub(crate) struct Settings {
    pub(crate) config: Config,
    /// Messages not yet printed (bad variables, a signal already taken).
    pending: Vec<String>,
}

static SETTINGS: Mutex<Option<Settings>> = Mutex::new(None);
/// The signal our handler is installed on (0: none).
static INSTALLED_SIGNAL: AtomicI32 = AtomicI32::new(0);
/// A signal we wanted but found with a handler already (0: none), to report.
static SIGNAL_TAKEN: AtomicI32 = AtomicI32::new(0);

/// The signal found taken since the last call, if any (0: none).
pub(crate) fn take_signal_taken() -> i32 {
    SIGNAL_TAKEN.swap(0, Ordering::AcqRel)
}
static AT_EXIT_DEFAULT: AtomicBool = AtomicBool::new(false);
static STARTED: AtomicBool = AtomicBool::new(false);
/// Whether a single-threaded program gets the watcher rather than the
/// dumper thread until it creates a thread of its own (see
/// [`crate::control::watcher`]; the preload library asks for it).
static DEFER_DUMPER: AtomicBool = AtomicBool::new(false);
/// The dumper thread has been started in this process.
static DUMPER_STARTED: AtomicBool = AtomicBool::new(false);
/// The real `pthread_create`, when the way in interposes the name (the
/// dumper is heapprof's own thread, never one of the program's).
pub(crate) static REAL_PTHREAD_CREATE: std::sync::atomic::AtomicPtr<()> =
    std::sync::atomic::AtomicPtr::new(core::ptr::null_mut());

pub(crate) fn settings() -> MutexGuard<'static, Option<Settings>> {
    crate::engine::arena_in_copy::lock(&SETTINGS)
}

/// The settings' lock, for the fork handlers to hold across a fork.
pub(crate) fn settings_lock() -> impl Sized {
    settings()
}

/// In a forked child (the fork handlers' last step): no dump of the
/// parent's is under way here, and the child gets its own dumper thread,
/// or the watcher.
pub(crate) fn after_fork() {
    DUMPING.store(0, Ordering::Release);
    DUMPER_STARTED.store(false, Ordering::Release);
    crate::control::wake::open_pipe_if_needed();
    start_dumper_or_watcher();
}

/// Whether a plain run dumps at exit (the preload library turns this on
/// before starting). `HEAPPROF_AT_EXIT` still overrides it.
pub fn set_at_exit_default(on: bool) {
    AT_EXIT_DEFAULT.store(on, Ordering::Relaxed);
}

/// Keeps the dumper thread out of a single-threaded program until it
/// creates a thread (the watcher serves meanwhile). Call before starting.
pub fn set_defer_dumper(on: bool) {
    DEFER_DUMPER.store(on, Ordering::Relaxed);
}

/// The signature of `pthread_create`.
pub type PthreadCreateFn = unsafe extern "C" fn(
    *mut libc::pthread_t,
    *const libc::pthread_attr_t,
    extern "C" fn(*mut libc::c_void) -> *mut libc::c_void,
    *mut libc::c_void,
) -> libc::c_int;

/// The real `pthread_create`, for a way in that interposes it.
pub fn set_real_pthread_create(f: PthreadCreateFn) {
    REAL_PTHREAD_CREATE.store(f as *mut (), Ordering::Release);
}

/// The program is about to create a thread: if the watcher stands in for
/// the dumper, start the dumper (glibc is multi-threaded from now on
/// anyway) and let the watcher end. One relaxed load otherwise.
#[inline]
pub fn program_creates_thread() {
    if watcher::running() && !DUMPER_STARTED.load(Ordering::Relaxed) {
        hand_over();
    }
}

#[cold]
fn hand_over() {
    if DUMPER_STARTED.swap(true, Ordering::AcqRel) {
        return;
    }
    // What glibc allocates for the dumper thread is heapprof's, not the
    // program's.
    let _busy = thread_state::current().enter();
    crate::engine::set_self_drain(false);
    watcher::stop();
    // The dumper wakes the watcher until it has ended (see
    // `control::dumper`).
    crate::control::dumper::spawn();
}

/// Prints one line on the program's stderr without taking any lock.
pub fn say(line: &str) {
    crate::os::own_table::write_stderr(&[line.as_bytes(), b"\n"]);
}

/// Installs the signal handler, the exit and fork handlers, and starts the
/// dumper thread. Called once by [`crate::control::startup`], possibly from
/// inside the program's first allocation: it allocates nothing through the
/// profiled allocator (only system calls and libc, whose own allocations in
/// a Rust program do not reach a Rust global allocator); the dumper thread
/// then reads the full configuration.
pub fn start() {
    if STARTED.swap(true, Ordering::AcqRel) {
        return;
    }
    crate::control::signal_notices::map_tree_said();
    let signal = match crate::control::config::getenv("HEAPPROF_SIGNAL") {
        // An unparsable value falls back to the default; the dumper reports it.
        Some(v) => crate::control::config::parse_signal(v).unwrap_or(Some(libc::SIGUSR2)),
        None => Some(libc::SIGUSR2),
    };
    install_signal(signal.unwrap_or(0));
    crate::control::fork_handlers::install();
    crate::control::wake::open_pipe_if_needed();
    // SAFETY: registering a plain extern "C" function that lives for the
    // whole process.
    unsafe { libc::atexit(at_exit) };
    lifetime::install();
    start_dumper_or_watcher();
}

/// The dumper thread, or, if asked for and possible, the watcher.
fn start_dumper_or_watcher() {
    if DEFER_DUMPER.load(Ordering::Relaxed) {
        let (http, interval) = {
            let mut g = settings();
            let c = &ensure(&mut g).config;
            (c.http.is_some(), c.interval)
        };
        let every = interval.map_or(0, |d| d.as_nanos().clamp(1, u64::MAX as u128) as u64);
        // HTTP serving needs threads of its own, and the heap triggers
        // the dumper's running state: no point in waiting.
        if !http && !crate::control::heap_triggers::wanted() && watcher::start(every) {
            crate::engine::set_self_drain(true);
            // Said now, on this thread: the watcher cannot format lines.
            print_pending();
            return;
        }
    }
    DUMPER_STARTED.store(true, Ordering::Release);
    crate::control::dumper::spawn();
}

/// The settings, read from the environment on first use.
pub(crate) fn ensure(g: &mut Option<Settings>) -> &mut Settings {
    g.get_or_insert_with(|| {
        let base = Config::default().at_exit(AT_EXIT_DEFAULT.load(Ordering::Relaxed));
        let (config, pending) = Config::from_lookup_with(base, |n| {
            crate::control::config::getenv(n).map(str::to_owned)
        });
        push_down(&config);
        Settings { config, pending }
    })
}

/// Applies a configuration from code ([`Config::install`]).
pub fn configure(config: Config) {
    let signal = config.signal.unwrap_or(0);
    {
        // Pushed down after `ensure`, under the same lock: a first `ensure`
        // pushes the environment's settings, which must not win.
        let mut g = settings();
        let s = ensure(&mut g);
        push_down(&config);
        s.config = config;
    }
    install_signal(signal);
    crate::control::wake::poke();
}

/// Loads the configuration from the environment if nothing has (so the
/// profile layer holds its settings before a profile is written).
pub fn load_settings() {
    ensure(&mut settings());
}

/// Hands the profile layer what it takes from the configuration.
fn push_down(config: &Config) {
    crate::profile::output::set_file_mode(config.file_mode);
    crate::control::peak::set_files_wanted(config.at_exit || config.interval.is_some());
    crate::profile::settings::set(config.symbolize, config.labels.clone());
}

/// The configured dump prefix.
pub fn out_prefix() -> PathBuf {
    ensure(&mut settings()).config.out.clone()
}

extern "C" fn on_signal(sig: libc::c_int) {
    if watcher::on_watcher() {
        // On the watcher nothing may touch TLS (errno included): raw calls.
        if sig != dump_signal::dumper_takes() {
            // Yielded meanwhile: on to the program, as below.
            raw::kill(raw::getpid(), sig);
        } else {
            crate::control::wake::request_dump_raw();
        }
        return;
    }
    // Async-signal-safe: errno saved, one write(2) (or kill(2)), errno
    // restored.
    // SAFETY: __errno_location is the calling thread's errno slot.
    let errno = unsafe { *libc::__errno_location() };
    if sig != dump_signal::dumper_takes() && dump_signal::on_dumper_thread() {
        // Yielded to the program (or moved) while the dumper was waiting
        // with it unblocked: send it on, process-directed; the dumper now
        // blocks it, so it reaches the program's sigwait or thread.
        // SAFETY: kill(2) on our own process.
        unsafe { libc::kill(libc::getpid(), sig) };
    } else {
        crate::control::wake::request_dump();
    }
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}

fn handler_addr() -> libc::sighandler_t {
    on_signal as extern "C" fn(libc::c_int) as *const () as libc::sighandler_t
}

/// A signal's name in heapprof's lines.
/// Moves our handler to signal `want` (0: none), if that signal is free.
/// Allocation-free; a signal found taken is remembered in [`SIGNAL_TAKEN`]
/// and reported by the dumper thread.
fn install_signal(want: i32) {
    let have = INSTALLED_SIGNAL.load(Ordering::Acquire);
    if want == have {
        return;
    }
    if have != 0 {
        // Give the old signal back, unless the application took it since.
        // SAFETY: querying and restoring a signal disposition.
        unsafe {
            let mut cur: libc::sigaction = core::mem::zeroed();
            dump_signal::sigaction(have, core::ptr::null(), &mut cur);
            if cur.sa_sigaction == handler_addr() {
                let mut dfl: libc::sigaction = core::mem::zeroed();
                dfl.sa_sigaction = libc::SIG_DFL;
                dump_signal::sigaction(have, &dfl, core::ptr::null_mut());
            }
        }
        INSTALLED_SIGNAL.store(0, Ordering::Release);
        dump_signal::release(have);
    }
    if want == 0 {
        return;
    }
    // SAFETY: sigaction with zeroed structs and a valid extern "C" handler.
    unsafe {
        let mut old: libc::sigaction = core::mem::zeroed();
        dump_signal::sigaction(want, core::ptr::null(), &mut old);
        if old.sa_sigaction != libc::SIG_DFL && old.sa_sigaction != handler_addr() {
            SIGNAL_TAKEN.store(want, Ordering::Release);
            return;
        }
        let mut act: libc::sigaction = core::mem::zeroed();
        act.sa_sigaction = handler_addr();
        act.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut act.sa_mask);
        if dump_signal::sigaction(want, &act, core::ptr::null_mut()) == 0 {
            INSTALLED_SIGNAL.store(want, Ordering::Release);
            dump_signal::take(want);
        }
    }
}

/// Prints the lines waiting to be said (bad variables, signals left to the
/// program, notes of the layers below).
pub(crate) fn print_pending() {
    let mut pending = std::mem::take(&mut ensure(&mut settings()).pending);
    pending.extend(
        crate::control::wake::note_source()
            .and_then(|n| (n.take)())
            .map(str::to_owned),
    );
    if let Some((sig, why)) = dump_signal::take_yielded() {
        if signal_notices::first_yield_line(sig) {
            pending.push(line_of(|w| signal_notices::write_yield_line(w, sig, why)));
        }
    }
    if let Some(sig) = handler_replaced() {
        if signal_notices::first_yield_line(sig) {
            pending.push(line_of(|w| {
                signal_notices::write_yield_line(w, sig, Why::Handler)
            }));
        }
    }
    let taken = take_signal_taken();
    if taken != 0 {
        pending.push(line_of(|w| signal_notices::write_taken_line(w, taken)));
    }
    pending.extend(crate::engine::pressure::limit_note());
    for line in pending {
        say(&line);
    }
}

fn line_of(write: impl FnOnce(&mut String) -> core::fmt::Result) -> String {
    let mut s = String::new();
    let _ = write(&mut s);
    s
}

/// The signal our handler was installed on, if a handler the program set
/// without heapprof seeing it (the Rust way in) has replaced it since: once.
/// The dumper keeps taking the signal, so the program's handler runs there.
fn handler_replaced() -> Option<i32> {
    static SAID: AtomicI32 = AtomicI32::new(0);
    let sig = INSTALLED_SIGNAL.load(Ordering::Acquire);
    if sig == 0 || sig != dump_signal::dumper_takes() || SAID.load(Ordering::Relaxed) == sig {
        return None;
    }
    // SAFETY: querying a disposition into a zeroed local.
    let cur = unsafe {
        let mut cur: libc::sigaction = core::mem::zeroed();
        dump_signal::sigaction(sig, core::ptr::null(), &mut cur);
        cur.sa_sigaction
    };
    if cur == handler_addr() {
        return None;
    }
    SAID.store(sig, Ordering::Relaxed);
    Some(sig)
}

/// Whether `handler` is heapprof's signal handler.
pub fn is_our_handler(handler: libc::sighandler_t) -> bool {
    handler == handler_addr()
}

/// The signal heapprof's handler is installed on (0: none).
pub fn handler_signal() -> i32 {
    INSTALLED_SIGNAL.load(Ordering::Acquire)
}

/// Writes the next numbered profile now, reporting (once per distinct
/// problem) any failure. Returns the path written.
pub fn dump_now(trigger: Trigger) -> Option<PathBuf> {
    match try_dump(trigger) {
        Ok(p) => p,
        Err(e) => {
            e.say_once();
            None
        }
    }
}

/// Writes the next numbered profile: its path, `None` when memory is short
/// (said once elsewhere, with the other low-memory events), or what went
/// wrong. A written dump lets the next problem be said again.
pub(crate) fn try_dump(trigger: Trigger) -> Result<Option<PathBuf>, DumpError> {
    let prefix = out_prefix();
    // Threads profiles (when threads are tracked) share the heap profile's
    // number. A panic inside heapprof (a bug, or a library that panics on
    // memory it could not get) fails this dump, never the program: the
    // dumper and at-exit callers are C-ABI functions, through which a panic
    // would abort the process. Files are written whole or not at all.
    let _dumping = Dumping::enter();
    let written = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        crate::profile::dump::dump_numbered(&prefix, trigger)
            .and_then(|p| crate::profile::threads_pprof::write_beside(&p).map(|_| p))
    }));
    match written {
        Ok(Ok(p)) => {
            crate::control::dump_errors::cleared();
            crate::control::heap_triggers::prune_after_dump();
            // The high point beside every triggered dump (when one is
            // kept), its failure said as any other.
            if let Ok(Err(e)) = std::panic::catch_unwind(crate::control::peak::write) {
                e.say_once();
            }
            Ok(Some(p))
        }
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::OutOfMemory => Ok(None),
        Ok(Err(e)) => Err(DumpError::writing(
            &prefix,
            &e,
            format!("{e} (set HEAPPROF_OUT to a path prefix in a writable directory; heapprof will retry at the next dump)"),
        )),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default()
                .replace('\n', " ");
            Err(DumpError::other(format!("heapprof: a dump failed inside heapprof ({what}; a bug: please report it); none written, the next dump will try again")))
        }
    }
}

/// Dumps being written in this process now: the exit waits for them, so
/// a heap profile written just before the exit keeps its threads profile.
static DUMPING: AtomicI32 = AtomicI32::new(0);
/// Longest the exit waits for a dump under way on another thread.
const EXIT_WAITS_FOR_DUMP: Duration = Duration::from_secs(5);

/// One dump under way, until dropped.
struct Dumping(());

impl Dumping {
    fn enter() -> Dumping {
        DUMPING.fetch_add(1, Ordering::AcqRel);
        Dumping(())
    }
}

impl Drop for Dumping {
    fn drop(&mut self) {
        DUMPING.fetch_sub(1, Ordering::AcqRel);
    }
}

extern "C" fn at_exit() {
    let _busy = thread_state::current().enter();
    // A dump another thread is writing (an interval dump, say) is finished
    // before the process goes, or its threads profile could be missing.
    let until = Instant::now() + EXIT_WAITS_FOR_DUMP;
    while DUMPING.load(Ordering::Acquire) > 0 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(1));
    }
    print_pending();
    // A dump the watcher's copies could not make: made here, in-process.
    if crate::control::dump_in_copy::take_deferred() {
        dump_now(Trigger::Deferred);
    }
    let wanted = ensure(&mut settings()).config.at_exit;
    if wanted {
        dump_now(Trigger::Exit);
    }
    if let Some(line) = crate::engine::pressure::take_note() {
        say(&line);
    }
}

//! The dumper thread: heapprof's own thread that waits for the triggers
//! (the signal's wake-up, the interval, the heap triggers, HTTP) and writes
//! the profiles, drains the record buffers and says pending lines. Started
//! by [`crate::control::triggers`]; in a single-threaded program under the
//! preload library the watcher ([`crate::control::watcher`]) stands in for
//! it until the program makes a thread.

use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use crate::control::triggers::{
    dump_now, ensure, print_pending, say, settings, PthreadCreateFn, REAL_PTHREAD_CREATE,
};
use crate::control::{dump_signal, lifetime, watcher};
use crate::engine::thread_state;
use crate::profile::dump::Trigger;

/// Whether the dumper thread just made is off glibc's count (see
/// `dumper_main`): 0 while its creator has not said, then [`YES`] or [`NO`].
static DUMPER_UNCOUNTED: AtomicI32 = AtomicI32::new(0);
const YES: i32 = 1;
const NO: i32 = 2;

/// Starts the dumper thread, from a thread of the program's. Unless the
/// HTTP server is asked for, the dumper is taken off glibc's count of
/// threads ([`lifetime::uncount_created`]) and works in a descriptor table
/// of its own ([`crate::os::own_table`]): glibc then ends the process on
/// the program's last thread, never on the dumper, whose table is not the
/// program's. (The HTTP server's threads, made later by the dumper, could
/// only take themselves off the count, which races with the program's end;
/// with them, the dumper keeps the shared table, and `lifetime` ends the
/// process on heapprof's last thread.)
pub(crate) fn spawn() {
    // Without allocating (start-up runs inside the allocator): the
    // settings if read already, else the variable.
    let private = match settings().as_ref() {
        Some(s) => s.config.http.is_none(),
        None => {
            crate::control::config::getenv("HEAPPROF_HTTP").map_or(true, |v| v.trim().is_empty())
        }
    };
    DUMPER_UNCOUNTED.store(0, Ordering::Release);
    // SAFETY: a detached pthread running an extern "C" fn with no argument;
    // pthread_attr is initialised and destroyed here.
    let made = unsafe {
        let mut attr: libc::pthread_attr_t = core::mem::zeroed();
        libc::pthread_attr_init(&mut attr);
        libc::pthread_attr_setdetachstate(&mut attr, libc::PTHREAD_CREATE_DETACHED);
        let mut tid: libc::pthread_t = 0;
        // Block every signal while creating, so the thread starts with all
        // blocked (it inherits the mask) and the creator's mask is restored.
        let mut all: libc::sigset_t = core::mem::zeroed();
        let mut old: libc::sigset_t = core::mem::zeroed();
        libc::sigfillset(&mut all);
        dump_signal::sigmask(libc::SIG_SETMASK, &all, &mut old);
        let real = REAL_PTHREAD_CREATE.load(Ordering::Acquire);
        let made = if real.is_null() {
            libc::pthread_create(&mut tid, &attr, dumper_main, core::ptr::null_mut())
        } else {
            // SAFETY: registered as a PthreadCreateFn.
            let create = core::mem::transmute::<*mut (), PthreadCreateFn>(real);
            create(&mut tid, &attr, dumper_main, core::ptr::null_mut())
        };
        dump_signal::sigmask(libc::SIG_SETMASK, &old, core::ptr::null_mut());
        libc::pthread_attr_destroy(&mut attr);
        made == 0
    };
    let uncounted = made && private && lifetime::uncount_created();
    DUMPER_UNCOUNTED.store(if uncounted { YES } else { NO }, Ordering::Release);
}

/// In the dumper: whether its creator took it off glibc's count (waits the
/// moment it takes to say; a creator that never says, none).
fn dumper_uncounted() -> bool {
    for _ in 0..10_000 {
        match DUMPER_UNCOUNTED.load(Ordering::Acquire) {
            0 => std::thread::sleep(Duration::from_micros(100)),
            v => return v == YES,
        }
    }
    false
}

extern "C" fn dumper_main(_: *mut libc::c_void) -> *mut libc::c_void {
    let own = lifetime::OwnThread::enter(dumper_uncounted());
    // Not counted by glibc, so the program's exit never runs here: what
    // this thread and its copies of the process open can live in a
    // descriptor table of their own (see `spawn`).
    if own.uncounted() {
        crate::os::own_table::enter();
    }
    thread_state::current().enter_forever();
    let name = c"heapprof-dumper";
    // SAFETY: naming the calling thread with a short NUL-terminated string.
    unsafe { libc::pthread_setname_np(libc::pthread_self(), name.as_ptr()) };
    crate::engine::stack::load_fast_unwinder();
    // Taking over from the watcher: wake it (it shares the word) until it
    // has seen that it must end, before this thread takes the asks itself,
    // so that a program counting its threads soon finds one again.
    while watcher::running() {
        crate::control::wake::poke();
        watcher::wait_ended(20);
    }
    dump_signal::set_dumper_thread();
    // A dump the watcher's copies could not make: made here, in-process.
    if crate::control::dump_in_copy::take_deferred() {
        dump_now(Trigger::Deferred);
    }
    // The mask this thread was created with (all but glibc's internal
    // signals); it waits in it minus the dump signal.
    // SAFETY: reading the calling thread's mask into a local.
    let base = unsafe {
        let mut m: libc::sigset_t = core::mem::zeroed();
        dump_signal::sigmask(libc::SIG_BLOCK, core::ptr::null(), &mut m);
        m
    };
    let mut next_interval: Option<Instant> = None;
    let mut last_drain = Instant::now();
    let mut http = crate::control::http::Control::new();
    let mut lifetime = lifetime::Watch::new();
    loop {
        print_pending();
        crate::control::blackbox::tick();
        crate::control::heap_triggers::tick();
        let (interval, rate, http_addr) = {
            let mut g = settings();
            let c = &ensure(&mut g).config;
            (c.interval, crate::engine::rate(), c.http)
        };
        http.ensure(http_addr);
        let now = Instant::now();
        match (interval, next_interval) {
            (Some(every), None) => next_interval = Some(now + every),
            (None, Some(_)) => next_interval = None,
            _ => {}
        }
        // Drain often when sampling densely, so buffers stay small.
        let drain_every = if (1..65536).contains(&rate) {
            Duration::from_millis(100)
        } else {
            Duration::from_secs(1)
        };
        let mut wait = drain_every.saturating_sub(now - last_drain);
        if let Some(t) = next_interval {
            wait = wait.min(t.saturating_duration_since(now));
        }
        wait = wait.min(lifetime.wait_bound(now));
        // Never straight back to the aggregator's lock: a drain that took
        // longer than the period (samples arriving as fast as they are
        // applied) would otherwise starve fork handlers and dumps waiting
        // for that lock.
        if let Some(poll) = crate::control::heap_triggers::poll_every() {
            wait = wait.min(poll);
        }
        let wait = wait.max(Duration::from_millis(5));
        let dump = crate::control::wake::wait_for_wake(
            Some(wait.as_nanos().min(u64::MAX as u128) as u64),
            &base,
        );
        if dump {
            dump_now(Trigger::Signal);
        }
        let now = Instant::now();
        if let (Some(t), Some(every)) = (next_interval, interval) {
            if now >= t {
                dump_now(Trigger::Interval);
                next_interval = Some(t + every).filter(|&n| n > now).or(Some(now + every));
            }
        }
        if crate::engine::take_drain_ask() || now - last_drain >= drain_every {
            crate::engine::aggregate::with(|_| ());
            crate::engine::unwind::forget_rules_if_unloaded();
            last_drain = now;
        }
        if let Some(line) = crate::engine::pressure::take_note() {
            say(&line);
        }
        if lifetime.program_ended(now) {
            break;
        }
    }
    // The program's threads are gone: heapprof's return, and glibc ends
    // the process on the last of them, as it would have on the program's
    // (see `lifetime`).
    http.stop();
    core::ptr::null_mut()
}

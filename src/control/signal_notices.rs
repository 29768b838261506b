//! The lines that say heapprof left a signal to the program: written
//! without allocating, so the watcher (a thread glibc does not know) says
//! them as well as the dumper, each once per process tree.

use core::sync::atomic::{AtomicI32, Ordering};

use crate::control::dump_signal::Why;
use crate::os::signals::SignalName;

pub(crate) fn write_taken_line(w: &mut impl core::fmt::Write, sig: i32) -> core::fmt::Result {
    write!(
        w,
        "heapprof: {} already has a handler in this program; leaving it, so no dumps on it (",
        SignalName(sig)
    )?;
    write_suggestion(w)?;
    w.write_str(")")
}

pub(crate) fn write_yield_line(
    w: &mut impl core::fmt::Write,
    sig: i32,
    why: Why,
) -> core::fmt::Result {
    let name = SignalName(sig);
    match why {
        Why::Blocks => write!(w, "heapprof: the program blocks {name} itself")?,
        Why::Waits => write!(w, "heapprof: the program waits for {name} itself")?,
        Why::Handler => write!(w, "heapprof: the program set its own handler for {name}")?,
    }
    w.write_str("; leaving it to the program, so no dumps on it (")?;
    write_suggestion(w)?;
    w.write_str(")")
}

/// What to set instead: a real-time signal the program leaves alone (its
/// disposition is the default one), or no signal with interval dumps.
fn write_suggestion(w: &mut impl core::fmt::Write) -> core::fmt::Result {
    match crate::os::signals::free_realtime() {
        Some(s) => {
            let name = SignalName(s);
            write!(
                w,
                "set HEAPPROF_SIGNAL={name:#} and send {name}, a signal the program leaves alone; or HEAPPROF_SIGNAL=none with HEAPPROF_INTERVAL"
            )
        }
        None => w.write_str("set HEAPPROF_SIGNAL=none and use HEAPPROF_INTERVAL or HEAPPROF_HTTP"),
    }
}

/// Whether no line has said yet that the program took `sig`. Both ways of
/// noticing it can see the same event: the interposed `sigaction` installs
/// the program's handler before it yields, and the dumper may look at the
/// handler in between.
///
/// Said once per process tree: the flags live in a shared page that forked
/// children inherit (a server's workers would each say it otherwise).
pub(crate) fn first_yield_line(sig: i32) -> bool {
    static SAID: AtomicI32 = AtomicI32::new(0);
    if SAID.swap(sig, Ordering::AcqRel) == sig {
        return false;
    }
    let bit = 1u64 << sig.clamp(1, 64).wrapping_sub(1);
    tree_said().map_or(true, |w| w.fetch_or(bit, Ordering::AcqRel) & bit == 0)
}

/// One word shared by this process and every child it forks (an
/// anonymous shared page, made at start): which signals' lines the tree
/// has said. None if it could not be made.
fn tree_said() -> Option<&'static core::sync::atomic::AtomicU64> {
    let p = TREE_SAID.load(Ordering::Acquire);
    // SAFETY: TREE_SAID is null or a page mapped for the process's life,
    // whose first word is only ever used as an AtomicU64.
    (!p.is_null()).then(|| unsafe { &*p.cast::<core::sync::atomic::AtomicU64>() })
}

static TREE_SAID: core::sync::atomic::AtomicPtr<u8> =
    core::sync::atomic::AtomicPtr::new(core::ptr::null_mut());

/// Maps [`tree_said`]'s page (at start; a forked child keeps its parent's).
pub(crate) fn map_tree_said() {
    if !TREE_SAID.load(Ordering::Acquire).is_null() {
        return;
    }
    // SAFETY: a new anonymous shared mapping of one page; no memory of
    // ours is touched.
    let p = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p != libc::MAP_FAILED {
        TREE_SAID.store(p.cast(), Ordering::Release);
    }
}


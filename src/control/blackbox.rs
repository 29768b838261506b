//! `HEAPPROF_BLACKBOX=DIR`: the file behind the engine's black box
//! ([`crate::engine::blackbox`], which explains the format and what survives
//! a kill), for both ways in.
//!
//! - **Start-up** ([`start`], from [`crate::control::startup`], possibly inside the
//!   program's first allocation: system calls only, nothing allocated)
//!   creates `DIR/heapprof.PID.blackbox` (`O_CREAT|O_EXCL|O_NOFOLLOW|
//!   O_CLOEXEC`, mode 0600), reserves its whole size with `fallocate` (so a
//!   full disk is found now, never as a `SIGBUS` on a later store into a
//!   hole), maps it shared, writes the header and installs it in the
//!   engine. Any failure (a missing or read-only directory, no room, a
//!   file system that cannot reserve space) is one line on stderr naming
//!   the directory and the fix; the program runs on without a black box.
//!   A file of the same name left by this very process before an `exec`
//!   (same pid, same start time) is replaced; one left by an earlier
//!   process with this pid is kept, and this process goes without.
//! - **Mappings** (with build IDs) are written by [`refresh_mappings`],
//!   off the sampled path: by the preload library's constructor, and by the
//!   dumper thread ([`tick`]) whenever the loader's count of loaded and
//!   unloaded objects changes (`dl_iterate_phdr`'s `dlpi_adds`/`dlpi_subs`),
//!   so a library loaded with `dlopen` is named within a dumper period.
//!   [`tick`] also writes a heartbeat (the last time the process was seen
//!   alive). A single-threaded program under the preload library has no
//!   dumper thread: its mappings are those of start-up until it creates a
//!   thread.
//! - **fork:** a child must not write its parent's file, and cannot copy
//!   it either (the parent's threads keep changing it while the child
//!   starts). The child's first `atfork` handler (registered before the
//!   triggers', so it runs before the child has a second thread) only
//!   detaches the inherited mapping; its last one (registered after them:
//!   heapprof's locks are free again) creates the child's own file, fills
//!   it from the child's private copy of the engine's live samples (the
//!   aggregate, after draining the record buffers: exactly what was live at
//!   the fork, plus what the child allocated since), installs it and unmaps
//!   the parent's. A child that `exec`s a program without heapprof, or ends
//!   with `_exit`, leaves its file.
//! - **Exit:** a normal exit removes the file, unless
//!   `HEAPPROF_BLACKBOX_KEEP=1` (then its header says the process exited).
//!   The mapping itself stays until the process ends: other threads may
//!   still be sampling.
//!
//! Settings: `HEAPPROF_BLACKBOX` (directory), `HEAPPROF_BLACKBOX_SLOTS`
//! (live samples it can hold, default [`DEFAULT_SLOTS`]: about 32 GiB of
//! live heap at the default rate; 512 bytes of file per slot),
//! `HEAPPROF_BLACKBOX_KEEP`.

use core::cell::UnsafeCell;
use core::fmt::Write as _;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};

use crate::control::config;
use crate::control::fork_fresh::ForkFresh;
use crate::engine::blackbox as bb;
use crate::os::raw::LineBuf;

/// Live samples the file holds unless `HEAPPROF_BLACKBOX_SLOTS` says.
pub const DEFAULT_SLOTS: usize = 65536;
const MAX_SLOTS: u64 = 1 << 24;

/// A path kept in a static (set before it is published; no allocation).
struct PathBuf {
    bytes: UnsafeCell<[u8; 4096]>,
    len: AtomicUsize,
}
// SAFETY: written only before `len` is published with Release, by start-up
// or a forked child's single thread; read after an Acquire load of `len`.
unsafe impl Sync for PathBuf {}

impl PathBuf {
    const fn new() -> PathBuf {
        PathBuf {
            bytes: UnsafeCell::new([0; 4096]),
            len: AtomicUsize::new(0),
        }
    }
    /// Stores `s` (NUL-terminated inside); false if too long.
    fn set(&self, s: &[u8]) -> bool {
        if s.len() >= 4096 {
            return false;
        }
        self.len.store(0, Ordering::Release);
        // SAFETY: see the Sync impl: no reader while len is 0.
        unsafe {
            let b = &mut *self.bytes.get();
            b[..s.len()].copy_from_slice(s);
            b[s.len()] = 0;
        }
        self.len.store(s.len(), Ordering::Release);
        true
    }
    fn get(&self) -> &[u8] {
        let n = self.len.load(Ordering::Acquire);
        // SAFETY: see the Sync impl.
        unsafe { &(&*self.bytes.get())[..n] }
    }
    /// The path with its NUL, for system calls.
    fn c_ptr(&self) -> *const libc::c_char {
        self.bytes.get().cast()
    }
}

static DIR: PathBuf = PathBuf::new();
static FILE: PathBuf = PathBuf::new();
static KEEP: AtomicBool = AtomicBool::new(false);
static HANDLERS: AtomicBool = AtomicBool::new(false);
/// The loader's (adds, subs) when the mappings were last written.
static LOADER_COUNT: AtomicU64 = AtomicU64::new(u64::MAX);
pub(crate) static REFRESH: ForkFresh<()> = ForkFresh::new((), || ());

/// Writes one line on stderr, without allocating.
fn say(mut line: LineBuf<4600>) {
    if line.write_str("\n").is_err() {
        let mut cut = LineBuf::<4600>::new();
        let _ = cut.write_str(core::str::from_utf8(&line.bytes()[..4000]).unwrap_or("heapprof: ?"));
        let _ = cut.write_str("…\n");
        line = cut;
    }
    crate::os::own_table::write_stderr(&[line.bytes()]);
}

/// The text of an errno value, without allocating.
fn describe(errno: i32, out: &mut LineBuf<4600>) {
    let mut buf = [0u8; 128];
    // SAFETY: the buffer is ours and its length is passed (XSI strerror_r).
    let ok = unsafe { libc::strerror_r(errno, buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let n = buf.iter().position(|&c| c == 0).unwrap_or(0);
    match core::str::from_utf8(&buf[..n]) {
        Ok(s) if ok && !s.is_empty() => {
            let _ = out.write_str(s);
        }
        _ => {
            let _ = write!(out, "error {errno}");
        }
    }
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Reads the settings and, if `HEAPPROF_BLACKBOX` names a directory, opens
/// the black box (see the module doc). Called once, after the engine's
/// initialisation and before the triggers start.
pub fn start() {
    let Some(dir) = config::getenv("HEAPPROF_BLACKBOX")
        .map(str::trim)
        .filter(|d| !d.is_empty())
    else {
        return;
    };
    let mut slots = DEFAULT_SLOTS;
    if let Some(v) = config::getenv("HEAPPROF_BLACKBOX_SLOTS") {
        match config::parse_bytes(v) {
            Some(n) if (1..=MAX_SLOTS).contains(&n) => slots = n as usize,
            _ => {
                let mut l = LineBuf::<4600>::new();
                let _ = write!(
                    l,
                    "heapprof: HEAPPROF_BLACKBOX_SLOTS={v:?} is not a number of slots from 1 to {MAX_SLOTS} (such as 65536 or 256k); using {DEFAULT_SLOTS}"
                );
                say(l);
            }
        }
    }
    if let Some(v) = config::getenv("HEAPPROF_BLACKBOX_KEEP") {
        match config::parse_bool(v) {
            Some(k) => KEEP.store(k, Ordering::Relaxed),
            None => {
                let mut l = LineBuf::<4600>::new();
                let _ = write!(
                    l,
                    "heapprof: HEAPPROF_BLACKBOX_KEEP={v:?} is not 1 or 0; the black box file is removed at exit"
                );
                say(l);
            }
        }
    }
    // Absolute, so the exit handler removes the right file after a chdir.
    let mut abs = LineBuf::<4600>::new();
    if !dir.starts_with('/') {
        let mut cwd = [0u8; 4096];
        // SAFETY: getcwd writes at most the buffer's length, NUL included.
        let ok = unsafe { !libc::getcwd(cwd.as_mut_ptr().cast(), cwd.len()).is_null() };
        let n = cwd.iter().position(|&c| c == 0).unwrap_or(0);
        if ok {
            let _ = abs.write_str(core::str::from_utf8(&cwd[..n]).unwrap_or("."));
            let _ = abs.write_str("/");
        }
    }
    let _ = abs.write_str(dir);
    if !DIR.set(abs.bytes()) {
        let mut l = LineBuf::<4600>::new();
        let _ = write!(l, "heapprof: HEAPPROF_BLACKBOX: the directory name is too long; the black box is off (use a shorter path)");
        say(l);
        return;
    }
    let Some(base) = open(slots) else { return };
    // SAFETY: the mapping is file_len(slots) bytes, page-aligned, and is
    // never unmapped while installed (see `fork_child_last`).
    unsafe { bb::install(base, slots) };
    crate::engine::labels::note_all_in_blackbox();
    write_prepared_mappings();
    if !HANDLERS.swap(true, Ordering::Relaxed) {
        // SAFETY: registering plain extern "C" functions that live for the
        // whole process.
        unsafe {
            libc::pthread_atfork(None, None, Some(fork_child_first));
            libc::atexit(at_exit);
        }
    }
}

/// Registers the fork handler that gives a child its own file: call after
/// the triggers have registered theirs (see the module doc).
pub fn after_triggers() {
    static ONCE: AtomicBool = AtomicBool::new(false);
    if HANDLERS.load(Ordering::Relaxed) && !ONCE.swap(true, Ordering::Relaxed) {
        // SAFETY: as in `start`.
        unsafe { libc::pthread_atfork(None, None, Some(fork_child_last)) };
    }
}

/// The path of this process's black box file, if it has one.
pub fn path() -> Option<std::path::PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    let p = FILE.get();
    (bb::installed().is_some() && !p.is_empty())
        .then(|| std::path::PathBuf::from(std::ffi::OsStr::from_bytes(p)))
}

/// Creates, reserves and maps this process's file and writes its header;
/// None (said on stderr) on failure.
fn open(slots: usize) -> Option<*mut u8> {
    let pid = crate::os::raw::getpid();
    let mut name = LineBuf::<4600>::new();
    let dir = core::str::from_utf8(DIR.get()).unwrap_or("");
    if write!(
        name,
        "{}/heapprof.{pid}.blackbox",
        dir.trim_end_matches('/')
    )
    .is_err()
        || !FILE.set(name.bytes())
    {
        return None;
    }
    let len = bb::file_len(slots);
    let flags = libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    let path = FILE.c_ptr();
    let start = proc_start_ticks();
    // SAFETY: `path` is NUL-terminated (PathBuf::set).
    let mut fd = unsafe { libc::open(path, flags, 0o600) };
    if fd < 0 && errno() == libc::EEXIST && left_by_this_process(path, pid, start) {
        // SAFETY: as above.
        unsafe {
            libc::unlink(path);
            fd = libc::open(path, flags, 0o600);
        }
    }
    if fd < 0 {
        fail("cannot create", errno(), len);
        return None;
    }
    // SAFETY: fd is ours; len fits off_t.
    let r = unsafe { libc::fallocate(fd, 0, 0, len as libc::off_t) };
    let e = errno();
    let base = if r == 0 {
        // SAFETY: a shared mapping of the whole file we just sized.
        unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        }
    } else {
        libc::MAP_FAILED
    };
    let e = if r == 0 { errno() } else { e };
    // SAFETY: closing our own descriptor; the mapping keeps the file.
    unsafe { libc::close(fd) };
    if base == libc::MAP_FAILED {
        // SAFETY: removing the file we created.
        unsafe { libc::unlink(path) };
        fail(
            if r == 0 {
                "cannot map"
            } else {
                "cannot reserve space for"
            },
            e,
            len,
        );
        return None;
    }
    let base: *mut u8 = base.cast();
    let words = |b: *mut u8, i: usize| -> &AtomicU64 {
        // SAFETY: callers pass word indexes inside a mapping of `len` bytes.
        unsafe { &*b.cast::<AtomicU64>().add(i) }
    };
    let now = crate::os::monotonic_ns();
    let start_mono = crate::engine::start_mono_ns();
    let header = [
        (bb::H_MAGIC, bb::MAGIC),
        (bb::H_VERSION, bb::VERSION),
        (bb::H_SLOTS, slots as u64),
        (bb::H_SLOT_FRAMES, bb::SLOT_FRAMES as u64),
        (bb::H_PID, pid as u64),
        (bb::H_START_MONO_NS, start_mono),
        (
            bb::H_START_UNIX_NS,
            crate::os::realtime_ns().saturating_sub(now.saturating_sub(start_mono)),
        ),
        (bb::H_RATE, crate::engine::rate()),
        (bb::H_HEARTBEAT_NS, now),
        (bb::H_PROC_START, start),
    ];
    for (i, v) in header {
        words(base, i).store(v, Ordering::Relaxed);
    }
    Some(base)
}

/// Copies the mappings and label sets of a parent's black box into a
/// child's.
fn copy_maps(from: *mut u8, to: *mut u8, slots: usize) {
    let w = |b: *mut u8, off: usize| -> &AtomicU64 {
        // SAFETY: offsets inside the layout of a file of `slots` slots,
        // which both mappings are.
        unsafe { &*b.add(off).cast::<AtomicU64>() }
    };
    for off in (bb::maps_offset(slots, 1)..bb::file_len(slots)).step_by(8) {
        w(to, off).store(w(from, off).load(Ordering::Relaxed), Ordering::Relaxed);
    }
    // The label sets, after the mappings in the file, came along.
    for h in [bb::H_LABELS_USED, bb::H_LABELS_LOST, bb::H_MAPS_CURRENT] {
        w(to, h * 8).store(w(from, h * 8).load(Ordering::Acquire), Ordering::Release);
    }
}

/// Whether the file at `path` is a black box this very process left
/// before an `exec` (same pid and start time).
fn left_by_this_process(path: *const libc::c_char, pid: i32, start: u64) -> bool {
    let mut h = [0u64; 16];
    // SAFETY: reading into a local buffer of that size from a descriptor we
    // open and close here.
    let n = unsafe {
        let fd = libc::open(path, libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC);
        if fd < 0 {
            return false;
        }
        let n = libc::pread(fd, h.as_mut_ptr().cast(), 128, 0);
        libc::close(fd);
        n
    };
    n == 128
        && h[bb::H_MAGIC] == bb::MAGIC
        && h[bb::H_PID] == pid as u64
        && start != 0
        && h[bb::H_PROC_START] == start
}

/// This process's start time (clock ticks since boot, `/proc/self/stat`
/// field 22), 0 if unreadable.
fn proc_start_ticks() -> u64 {
    let mut buf = [0u8; 1024];
    // SAFETY: reading into a local buffer from a descriptor opened here.
    let n = unsafe {
        let fd = libc::open(
            c"/proc/self/stat".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        );
        if fd < 0 {
            return 0;
        }
        let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
        libc::close(fd);
        n
    };
    let text = &buf[..n.max(0) as usize];
    let Some(close) = text.iter().rposition(|&c| c == b')') else {
        return 0;
    };
    // Fields after the command: state is field 3, start time field 22.
    core::str::from_utf8(&text[close + 1..])
        .ok()
        .and_then(|rest| rest.split_whitespace().nth(19))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn fail(what: &str, errno: i32, len: usize) {
    let mut l = LineBuf::<4600>::new();
    let file = core::str::from_utf8(FILE.get()).unwrap_or("?");
    let dir = core::str::from_utf8(DIR.get()).unwrap_or("?");
    let _ = write!(l, "heapprof: HEAPPROF_BLACKBOX: {what} {file} (");
    describe(errno, &mut l);
    let _ = write!(
        l,
        "); the black box is off, the program runs on (set HEAPPROF_BLACKBOX to an existing, writable directory with {} MiB free instead of {dir}, or fewer HEAPPROF_BLACKBOX_SLOTS)",
        len.div_ceil(1 << 20)
    );
    say(l);
    FILE.set(b"");
}

/// Writes the executable mappings (with build IDs) into the black box, if
/// there is one. Allocates: never call it from a hook.
pub fn refresh_mappings() {
    if bb::installed().is_none() {
        return;
    }
    let _turn = REFRESH.lock();
    let count = loader_count();
    let maps = crate::profile::mappings::current();
    write_mappings(&crate::profile::mappings::encode(&maps, bb::MAPS_BYTES));
    LOADER_COUNT.store(count, Ordering::Relaxed);
}

/// Encoded mappings made by a constructor ([`prepare_mappings`]) for
/// [`start`], which may run inside an allocation and cannot make them.
static PREPARED: AtomicPtr<Vec<u8>> = AtomicPtr::new(core::ptr::null_mut());
static PREPARED_COUNT: AtomicU64 = AtomicU64::new(u64::MAX);

/// From a constructor, before the program's first allocation: when a
/// black box is asked for, encodes the mappings now, so that the black box
/// holds them from its start. Without this a program killed before the
/// dumper's first look would leave samples no one can symbolize. The Rust
/// way in starts inside its first allocation; the preload library's
/// constructor writes them itself.
pub fn prepare_mappings() {
    if !config::getenv("HEAPPROF_BLACKBOX").is_some_and(|d| !d.trim().is_empty()) {
        return;
    }
    let count = loader_count();
    let maps = crate::profile::mappings::current();
    let bytes = Box::new(crate::profile::mappings::encode(&maps, bb::MAPS_BYTES));
    PREPARED_COUNT.store(count, Ordering::Relaxed);
    // Kept for the process's life (a few KiB); a second call keeps the first.
    let _ = PREPARED.compare_exchange(
        core::ptr::null_mut(),
        Box::into_raw(bytes),
        Ordering::AcqRel,
        Ordering::Acquire,
    );
}

/// Writes the prepared mappings, if any, into the black box just installed
/// (allocation-free).
fn write_prepared_mappings() {
    let p = PREPARED.load(Ordering::Acquire);
    if p.is_null() {
        return;
    }
    // SAFETY: PREPARED only ever holds a leaked Box<Vec<u8>>, never freed.
    let bytes: &Vec<u8> = unsafe { &*p };
    write_mappings(bytes);
    LOADER_COUNT.store(PREPARED_COUNT.load(Ordering::Relaxed), Ordering::Relaxed);
}

/// Writes encoded mappings into the copy not in use, then switches to it.
/// Allocation-free.
fn write_mappings(bytes: &[u8]) {
    let Some((base, slots)) = bb::installed() else {
        return;
    };
    let cur = bb::header(bb::H_MAPS_CURRENT) & 0xff;
    let next = if cur == 1 { 2 } else { 1 };
    let off = bb::maps_offset(slots, next);
    for (i, chunk) in bytes.chunks(8).enumerate() {
        let mut w = [0u8; 8];
        w[..chunk.len()].copy_from_slice(chunk);
        // SAFETY: the copy is MAPS_BYTES long and `bytes` no longer; the
        // mapping is installed, so mapped for the rest of the process.
        let word = unsafe { &*base.add(off + i * 8).cast::<AtomicU64>() };
        word.store(u64::from_ne_bytes(w), Ordering::Relaxed);
    }
    bb::set_header(bb::H_MAPS_CURRENT, next as u64 | (bytes.len() as u64) << 8);
}

/// The dumper's periodic call: the heartbeat, label sets the black box
/// missed, and the mappings again if objects were loaded or unloaded since
/// they were written.
pub fn tick() {
    if bb::installed().is_none() {
        return;
    }
    bb::set_header(bb::H_HEARTBEAT_NS, crate::os::monotonic_ns());
    crate::engine::labels::note_all_in_blackbox();
    if loader_count() != LOADER_COUNT.load(Ordering::Relaxed) {
        refresh_mappings();
    }
}

/// The loader's counts of objects loaded and unloaded, as one word.
fn loader_count() -> u64 {
    unsafe extern "C" fn first(
        info: *mut libc::dl_phdr_info,
        size: libc::size_t,
        data: *mut libc::c_void,
    ) -> libc::c_int {
        let need = core::mem::offset_of!(libc::dl_phdr_info, dlpi_subs)
            + core::mem::size_of::<libc::c_ulonglong>();
        if size >= need {
            // SAFETY: the loader hands a valid info of `size` bytes, and
            // `data` is the u64 below.
            unsafe {
                *data.cast::<u64>() = ((*info).dlpi_adds << 32) ^ (*info).dlpi_subs;
            }
        }
        1
    }
    let mut v = 0u64;
    let _inside = crate::engine::loader_fence::enter();
    // SAFETY: the callback writes only `v`, live for the whole call.
    unsafe { libc::dl_iterate_phdr(Some(first), (&mut v as *mut u64).cast()) };
    v
}

/// The parent's mapping, detached in a forked child until its own file
/// replaces it.
static INHERITED: core::sync::atomic::AtomicPtr<u8> =
    core::sync::atomic::AtomicPtr::new(core::ptr::null_mut());
static INHERITED_SLOTS: AtomicUsize = AtomicUsize::new(0);

extern "C" fn fork_child_first() {
    let (old, slots) = bb::detach();
    INHERITED_SLOTS.store(slots, Ordering::Relaxed);
    INHERITED.store(old, Ordering::Release);
}

extern "C" fn fork_child_last() {
    let old = INHERITED.swap(core::ptr::null_mut(), Ordering::AcqRel);
    if old.is_null() {
        return;
    }
    let slots = INHERITED_SLOTS.load(Ordering::Relaxed);
    let _busy = crate::engine::thread_state::current().enter();
    if let Some(base) = open(slots) {
        copy_maps(old, base, slots);
        crate::engine::aggregate::with(|agg| {
            for (id, s) in agg.live() {
                let k = s.key;
                let frames = agg.stacks.get(k.stack);
                // SAFETY: `base` is the new file, mapped whole; nothing else
                // knows of it until it is installed below.
                unsafe {
                    bb::record_into(
                        base,
                        slots,
                        (id, k.size, k.rate, s.time_ns, k.labels),
                        frames,
                    )
                };
            }
        });
        // SAFETY: as in `start`.
        unsafe { bb::install(base, slots) };
    }
    // SAFETY: the parent's mapping, detached before this child had a second
    // thread; nothing writes through it any more.
    unsafe { libc::munmap(old.cast(), bb::file_len(slots)) };
}

extern "C" fn at_exit() {
    if bb::installed().is_none() {
        return;
    }
    bb::set_header(bb::H_HEARTBEAT_NS, crate::os::monotonic_ns());
    crate::engine::labels::note_all_in_blackbox();
    if KEEP.load(Ordering::Relaxed) {
        bb::set_header(bb::H_EXITED, 1);
    } else if !FILE.get().is_empty() {
        // SAFETY: FILE is NUL-terminated.
        unsafe { libc::unlink(FILE.c_ptr()) };
    }
}

//! # heapprof's LD_PRELOAD library
//!
//! Sampled heap profiles of any dynamically linked Linux process, with the
//! same engine, settings and output as the Rust `#[global_allocator]`:
//!
//! ```sh
//! LD_PRELOAD=$PWD/target/release/libheapprof_preload.so HEAPPROF_RATE=524288 ./my-server &
//! kill -USR2 %1          # a profile now: ./heapprof.PID.0.pb.gz
//! go tool pprof -top ./my-server heapprof.PID.0.pb.gz
//! ```
//!
//! or, in one line that finds the library, passes the exit status through
//! and shows the result: `heapprof run -- ./my-server` (`heapprof::launch`).
//!
//! All `HEAPPROF_*` variables apply (see `heapprof::control::config`), including
//! `HEAPPROF_HTTP=6060`, which serves `/debug/pprof/heap` from the process
//! (`heapprof::control::http`); here
//! `HEAPPROF_AT_EXIT` defaults to on, so a plain run leaves a profile of what
//! was still live at exit. Chain it in front of another allocator with
//! `LD_PRELOAD="libheapprof_preload.so libjemalloc.so.2"`.
//!
//! Heap labels: only the process-wide `HEAPPROF_LABELS=key=value,…` here;
//! per-request scopes (`heapprof::with_labels`) are a Rust API, with no C
//! API yet.
//!
//! ## Model
//!
//! **Interposition.** The library defines the whole malloc family — `malloc`,
//! `free`, `calloc`, `realloc`, `reallocarray`, `posix_memalign`,
//! `aligned_alloc`, `memalign`, `valloc`, `pvalloc`, `malloc_usable_size`
//! ([`hooks`]) — and, being preloaded, the loader binds every call in the
//! process to them: the program's, every library's, libc's own internal ones
//! (`strdup`, `fopen`, …), the loader's (TLS blocks, `dlopen`), and C++'s
//! `operator new`/`delete`, which libstdc++ implements with `malloc`/`free`
//! (aligned `new` with `aligned_alloc`).
//!
//! Not interposed, on purpose: glibc's `__libc_malloc`, `__libc_memalign` and
//! the other `__libc_*` aliases, and the compatibility symbol `cfree` (not
//! linkable by new programs). The loader's allocations (TLS blocks among
//! them) go through `__rtld_malloc` and friends, bound to the global
//! `malloc` family — ours — once the program is loaded (glibc 2.33 and
//! later). Nothing else calls the `__libc_*` names but
//! programs that ask for glibc's allocator by name; that memory is glibc's,
//! and freeing it through `free` works (an unsampled pointer goes straight
//! to the real `free`), as long as glibc is the real allocator.
//!
//! **The real functions** are found with `dlsym(RTLD_NEXT, …)`: glibc's, or
//! those of the allocator listed after this library in `LD_PRELOAD`. All come
//! from the object that defines `malloc`; one it lacks is built from the
//! others rather than taken from glibc (jemalloc has no `pvalloc`) — see
//! [`real`]. The library's own Rust allocations (the engine allocates while
//! dumping and symbolizing) go straight to those functions through this
//! crate's `#[global_allocator]`, never through the hooks.
//!
//! **Sampled objects** (about one allocation in several thousand at the
//! default rate; all of them at `HEAPPROF_RATE=1`) are served by heapprof's
//! own sample heap (`heapprof::engine::sample_heap`), never by the real
//! allocator: a range of address space the engine reserves at start-up, so
//! that a free recognises a sample by its address alone (one compare), cut
//! into size classes for small samples and page runs for large ones. The
//! real allocator never sees a sample; if the sample heap cannot map memory,
//! the allocation is served by the real allocator, unsampled, and one line
//! on stderr says so.
//!
//! **The bootstrap arena.** `dlsym` may allocate, and other libraries'
//! constructors may run (and allocate) before ours: the first call to any
//! hook resolves the real functions, and while that is under way every hook
//! serves calls from an arena of page-aligned blocks (the first 256 KiB of
//! the sample heap's range, so the same one compare on `free` covers it)
//! that `free`, `realloc` and `malloc_usable_size` recognise by address
//! ([`bootstrap`]).
//!
//! **Thread state in initial-exec TLS.** Each thread's sampling countdown,
//! re-entrancy flag and record buffer (`heapprof::engine::thread_state::ThreadState`,
//! 64 bytes, all-zero initial, no destructor) live in a TLS block declared in
//! C with the initial-exec model ([`tls`], `src/tls.c`). Rust's
//! `thread_local!` in a cdylib would go through `__tls_get_addr`, which glibc
//! may make allocate — inside `malloc` — after a `dlopen` of a module with
//! TLS; initial-exec TLS is a fixed offset from the thread pointer, valid
//! from a thread's first instruction to its last destructor. The constructor
//! measures that offset once, and the hot paths then compute the address
//! inline from the thread pointer register (no call at all).
//!
//! **Start-up.** The library constructor (an `.init_array` entry, so it runs
//! when the loader initialises this library, before the program's `main`;
//! the libraries the program itself links are initialised before it)
//! resolves the real functions, registers the TLS accessor with the engine
//! (first, so the engine never touches Rust TLS), decides whether this
//! process is profiled at all (next section), prints any warning (below),
//! turns the at-exit dump on by default, reads every setting, and starts
//! the engine (signal handler, `atexit` and `pthread_atfork` handlers, and
//! the watcher: a thread glibc does not know of, so that a single-threaded
//! program's malloc stays on glibc's single-threaded paths; the dumper
//! thread starts at the program's first `pthread_create`, see
//! `heapprof::control::watcher`). Only then does it mark the library ready. Before that, hooks
//! forward unsampled (their countdown stays 0, so each call looks again):
//! nothing ever starts the engine from inside an allocation, which could be
//! `atexit` or `pthread_create` holding a lock the start-up needs.
//!
//! **Exec and children** ([`lineage`]). The library stays in `LD_PRELOAD`;
//! the first profiled process records its pid in the environment
//! (`HEAPPROF_PID`). An image whose pid is the recorded one is the same
//! process after `execve` (a shim, `env`, `nohup`, `exec` in a script) and
//! is profiled, under that pid. Another pid is a new process — fork + exec,
//! `vfork`, `posix_spawn`, `system` — profiled only with
//! `HEAPPROF_CHILDREN=1`; otherwise the library is inert there (no engine,
//! no thread, no handlers), leaves the child's environment alone, rewrites
//! the process's GOT slots to call the real allocator directly ([`unhook`]),
//! and sends the profiled process one datagram, which prints, once, that
//! programs it started were not profiled and how to change that.
//! Forked children that do not exec keep profiling, under their own pid.
//!
//! **After exit starts.** Nothing is torn down: the `atexit` dump runs after
//! the handlers the program registered, and the allocations that follow
//! (later handlers, thread and TLS destructors, stdio) keep being forwarded —
//! and sampled — against state that is never freed.
//!
//! **Warnings** (one line each, on stderr, from the constructor): the program
//! (or a library loaded before this one) defines its own `malloc`, so calls
//! never reach the hooks; the program is CPython with pymalloc (suggesting
//! `PYTHONMALLOC=malloc`). Statically linked and setuid programs never load
//! the library at all (the loader ignores `LD_PRELOAD` for them), so nothing
//! can be said there.
//!
//! ## Costs
//! An unsampled allocation costs four instructions over the real function
//! on x86-64 (`malloc`: load the TLS block's offset from the GOT, subtract
//! the size from the countdown in place through `%fs`, branch, jump through
//! the real function's slot); freeing an unsampled pointer five (`free`:
//! copy the pointer, subtract the sample heap's base, compare with its
//! length, branch, jump), whatever its alignment; an unsampled `realloc`
//! nine. (`malloc`, `free` and `realloc` are written out in assembly
//! there; `calloc` and the aligned functions are the compiler's, two to
//! four instructions more.) Sampled objects cost a
//! stack capture each and a few dozen instructions of the sample heap.
//! No thread that glibc knows of is added to a single-threaded program (the
//! watcher, above): one would cost more than all of this, as glibc's
//! malloc turns to arena locks and atomics for good; each dump of such a
//! program is made by a short-lived copy of the process instead. A child
//! the library is inert in pays the loader's work for the library and the
//! constructor's, once, and nothing per call. Figures, with the commands
//! that measure them: README, "The figures behind the design".
#![deny(unsafe_op_in_unsafe_fn)]
#![cfg(target_os = "linux")]

use core::alloc::{GlobalAlloc, Layout};
use core::sync::atomic::{AtomicBool, Ordering};
use heapprof::ffi_surface::control;
use heapprof::ffi_surface::engine;
use heapprof::ffi_surface::engine::arena_in_copy;

pub mod alloc_in_copy;
pub mod bootstrap;
mod env;
pub mod hooks;
pub mod lineage;
pub mod real;
pub mod signals;
pub mod threads;
pub mod tls;
pub mod unhook;
pub mod unload;

/// Set once the constructor has started the engine.
static READY: AtomicBool = AtomicBool::new(false);

/// Whether the engine is running and hooks may sample.
#[inline]
pub fn ready() -> bool {
    READY.load(Ordering::Acquire)
}

/// From a slow path that found the library not ready: in an inert process
/// (see [`lineage`]), parks the thread's countdown for good, so its later
/// calls take the hot path straight to the real function.
#[cold]
pub fn park_if_inert(st: &engine::thread_state::ThreadState) {
    if lineage::inert() && !st.is_busy() {
        st.enter_forever();
    }
}

/// The library constructor, run by the loader when it initialises this
/// library (before the program's `main`).
extern "C" fn start() {
    if !real::ensure() {
        // No malloc after this library (or we were called while resolving,
        // which cannot happen here): stay out of the way.
        return;
    }
    if !tls::fits() {
        control::triggers::say(
            "heapprof: the preload library was built with a thread-state block too small for the engine; profiling is off",
        );
        return;
    }
    // First: from here on the engine finds thread state in our TLS block.
    tls::measure_offset();
    engine::thread_state::set_state_fn(tls::state_ptr);
    engine::thread_state::set_state_fn(tls::state_ptr);
    // heapprof's own allocations bypass the hooks (see the module docs), so
    // a sampled path may drain the record buffers.
    engine::set_backlog_drain(true);
    // Before anything else: heapprof's own signal calls must reach the real
    // functions, not the interposed ones (also in an inert child, where the
    // wrappers stay and pass calls straight through).
    signals::init();
    if !lineage::profile_this_process() {
        // A child not asked for: inert, unhooked, silent.
        return;
    }
    env::warn_if_blind();
    quiet_panics();
    control::triggers::set_at_exit_default(true);
    // No dumper thread that glibc knows of until the program has threads
    // of its own (`heapprof::control::watcher`).
    control::triggers::set_defer_dumper(true);
    // In a copy of the process, glibc's own allocations go to its arena.
    arena_in_copy::set_on_enter(alloc_in_copy::install);
    // Read every setting now, on this thread, before the program's main:
    // the dumper thread would otherwise read them lazily, calling getenv
    // while the program starts up, and a program may have its own getenv
    // over data it is still building (bash does).
    let _ = control::triggers::out_prefix();
    // Before the engine starts, so no sample ever takes libgcc's unwinder
    // (and nothing dlopen allocates is sampled: not ready yet).
    control::startup::load_unwinder();
    control::startup::start();
    // The black box's mappings now: a single-threaded program has no dumper
    // thread to write them.
    {
        let _busy = engine::thread_state::current().enter();
        control::blackbox::refresh_mappings();
    }
    control::startup::mark_way_in();
    // Live threads by creation stack: the pthread_create hook ([`threads`]).
    threads::start();
    // Before anything samples: the hooks' copy of the sample heap's range
    // (waiting out, should it be so, another thread's reservation).
    while !hooks::publish_range() {
        // SAFETY: plain system call.
        unsafe { libc::sched_yield() };
    }
    READY.store(true, Ordering::Release);
}

#[used]
#[link_section = ".init_array"]
static CONSTRUCTOR: extern "C" fn() = start;

/// Keeps a panic inside the library (this library's own copy of std, not
/// the program's) off the program's stderr: the dump that panicked fails
/// and says so in one line with the panic's message
/// (`heapprof::control::triggers::dump_now`).
fn quiet_panics() {
    std::panic::set_hook(Box::new(|_| {}));
}

/// The allocator of the library's own Rust code: the real functions
/// directly (the bootstrap arena before they are known), never the hooks;
/// in a copy of the process made for a dump, the copy's own arena
/// (`heapprof::engine::arena_in_copy`), as the real allocator's locks may be
/// held there for ever.
struct RealAllocator;

/// Whether plain `malloc` honours `layout` (std's rule for System).
fn malloc_fits(layout: &Layout) -> bool {
    layout.align() <= hooks::MIN_ALIGN && layout.align() <= layout.size()
}

// SAFETY: every block comes from the real allocator with at least the
// layout's size and alignment (malloc when it guarantees the alignment,
// an aligned allocation otherwise) or from the bootstrap arena (page-aligned,
// at least `size` bytes, zeroed), and goes back to where it came from; in a
// copy of the process, from the copy's arena (the layout's size and
// alignment), whose frees are no-ops or give back its newest block.
unsafe impl GlobalAlloc for RealAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if arena_in_copy::active() {
            return arena_in_copy::alloc(layout.size(), layout.align());
        }
        if !real::ensure() {
            return bootstrap::alloc(layout.size(), layout.align());
        }
        // SAFETY: resolved just above.
        unsafe {
            if malloc_fits(&layout) {
                real::malloc(layout.size()).cast()
            } else {
                real::aligned(layout.align(), layout.size()).cast()
            }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if arena_in_copy::active() {
            return arena_in_copy::alloc_zeroed(layout.size(), layout.align());
        }
        if !real::ensure() {
            // Bootstrap memory is never reused, hence zero.
            return bootstrap::alloc(layout.size(), layout.align());
        }
        // SAFETY: resolved just above; a non-null aligned block has
        // `layout.size()` writable bytes.
        unsafe {
            if malloc_fits(&layout) {
                return real::calloc(1, layout.size()).cast();
            }
            let p = real::aligned(layout.align(), layout.size()).cast::<u8>();
            if !p.is_null() {
                core::ptr::write_bytes(p, 0, layout.size());
            }
            p
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        if arena_in_copy::active() {
            // Blocks made before the copy stay: the real allocator's locks
            // may be held there for ever.
            return arena_in_copy::free(ptr);
        }
        if bootstrap::contains(ptr) {
            return;
        }
        if engine::owns(ptr) {
            // An aligned block the real allocator had no function for (see
            // `real::aligned`), served by the sample heap.
            return engine::free_sample(tls::state(), ptr);
        }
        // SAFETY: not heapprof's own memory, so it came from the real
        // allocator (which alloc only used once resolved).
        unsafe { real::free(ptr.cast()) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees the new size forms a valid layout
        // with the same alignment.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        if arena_in_copy::active() {
            // SAFETY: `ptr` is live with `layout`, so readable for its size.
            return unsafe { arena_in_copy::realloc(ptr, layout.size(), new_size, layout.align()) };
        }
        if !bootstrap::contains(ptr) && malloc_fits(&new_layout) {
            // SAFETY: a block of the real allocator (so resolved) whose
            // alignment plain realloc keeps.
            return unsafe { real::realloc(ptr.cast(), new_size).cast() };
        }
        // SAFETY: `ptr` is live with `layout`; the new block is distinct
        // and both are valid for the copied length.
        unsafe {
            let new = self.alloc(new_layout);
            if !new.is_null() {
                core::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            new
        }
    }
}

#[global_allocator]
static GLOBAL: RealAllocator = RealAllocator;

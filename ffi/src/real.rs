//! The real allocator: the functions the hooks forward to.
//!
//! # Finding them
//! [`ensure`] looks each function up once with `dlsym(RTLD_NEXT, name)`,
//! which searches the objects loaded *after* this library: glibc's malloc
//! normally, or another allocator listed after heapprof in `LD_PRELOAD`
//! (`LD_PRELOAD="libheapprof_preload.so libjemalloc.so.2"`). That happens in
//! the library constructor, or earlier if another library's constructor
//! allocates first. While it runs, every hook on every thread serves calls
//! from the [`crate::bootstrap`] arena (`dlsym` may allocate).
//!
//! # One allocator, never two
//! A function the next allocator does not define would be found further down
//! the search order, in glibc: jemalloc 5.3, for one, has no `pvalloc`, and
//! glibc's would hand out glibc memory that jemalloc's `free` cannot take. So
//! every function but `malloc` and `free` is accepted only from the object
//! that defines `malloc` (compared with [`object_of`]), and a missing one is built
//! from the ones present: `calloc` from `malloc` + `memset`, `realloc` from
//! `malloc` + copy + `free`, and all the aligned ones from whichever of
//! `posix_memalign`, `memalign` or `aligned_alloc` exists (with none of
//! them, from heapprof's own sample heap, unsampled: a block aligned inside
//! a bigger `malloc` could not be given back to the allocator's `free`).
//! The stand-in goes into the function's slot, so every forward is one load and one indirect
//! jump, whichever allocator is behind it. `reallocarray` is never
//! forwarded (see [`crate::hooks`]).
//!
//! # Memory ordering
//! The pointers are stored before the state becomes `RESOLVED` (release)
//! and read after seeing it (acquire), on the slow paths. The hot paths read
//! them without that check. An allocation's hot path runs only on a thread
//! whose sampling countdown is nonzero, which only a slow path that saw the
//! library ready (hence resolved) sets, or heapprof's own busy state, which
//! exists only once the engine runs. A free's hot path runs for a pointer
//! outside heapprof's own range (`heapprof::engine::owns`), hence not from
//! the bootstrap arena: the real allocator made it, after being resolved,
//! and the program's own synchronisation carried it to the freeing thread —
//! or null, which may come before anything is resolved: the `free` slot
//! starts as a stand-in that does nothing.

use core::ffi::{c_int, c_void, CStr};
use core::ptr::null_mut;
use core::sync::atomic::{AtomicPtr, AtomicU8, Ordering};
use heapprof::ffi_surface::engine;

use heapprof::ffi_surface::os::PAGE;

type MallocFn = unsafe extern "C" fn(usize) -> *mut c_void;
type FreeFn = unsafe extern "C" fn(*mut c_void);
type CallocFn = unsafe extern "C" fn(usize, usize) -> *mut c_void;
type ReallocFn = unsafe extern "C" fn(*mut c_void, usize) -> *mut c_void;
type PosixMemalignFn = unsafe extern "C" fn(*mut *mut c_void, usize, usize) -> c_int;
type AlignedFn = unsafe extern "C" fn(usize, usize) -> *mut c_void;
type UsableFn = unsafe extern "C" fn(*mut c_void) -> usize;

pub(crate) static MALLOC: AtomicPtr<c_void> = AtomicPtr::new(null_mut());
/// Until resolved: a stand-in, so `free(NULL)` on the hot path (the one
/// call that can reach it that early) is safe.
pub(crate) static FREE: AtomicPtr<c_void> = AtomicPtr::new(free_unresolved as *mut c_void);
static CALLOC: AtomicPtr<c_void> = AtomicPtr::new(null_mut());
pub(crate) static REALLOC: AtomicPtr<c_void> = AtomicPtr::new(null_mut());
static POSIX_MEMALIGN: AtomicPtr<c_void> = AtomicPtr::new(null_mut());
static MEMALIGN: AtomicPtr<c_void> = AtomicPtr::new(null_mut());
static ALIGNED_ALLOC: AtomicPtr<c_void> = AtomicPtr::new(null_mut());
static VALLOC: AtomicPtr<c_void> = AtomicPtr::new(null_mut());
static PVALLOC: AtomicPtr<c_void> = AtomicPtr::new(null_mut());
static USABLE: AtomicPtr<c_void> = AtomicPtr::new(null_mut());
/// The allocator's own aligned functions, for [`aligned`] (null: absent).
static OWN_POSIX_MEMALIGN: AtomicPtr<c_void> = AtomicPtr::new(null_mut());
static OWN_MEMALIGN: AtomicPtr<c_void> = AtomicPtr::new(null_mut());
static OWN_ALIGNED_ALLOC: AtomicPtr<c_void> = AtomicPtr::new(null_mut());

const UNRESOLVED: u8 = 0;
const RESOLVING: u8 = 1;
const RESOLVED: u8 = 2;
/// No `malloc`/`free` found after this library: everything is served from
/// the bootstrap arena (until it runs out) and profiling never starts.
const FAILED: u8 = 3;
static STATE: AtomicU8 = AtomicU8::new(UNRESOLVED);

/// Makes sure the real functions are known. Returns false while they are
/// being looked up (by this or another thread) or if they cannot be found:
/// the caller must then use the bootstrap arena.
#[inline]
pub fn ensure() -> bool {
    match STATE.load(Ordering::Acquire) {
        RESOLVED => true,
        UNRESOLVED => resolve(),
        _ => false,
    }
}

/// Whether the real functions are known (without trying to resolve them).
#[inline]
pub fn resolved() -> bool {
    STATE.load(Ordering::Acquire) == RESOLVED
}

/// The object that defines the code or data at `addr` — the one whose loaded
/// segments contain it — as a number that identifies it (the address of its
/// program headers; 0 if none). Walks the loader's
/// list of objects with `dl_iterate_phdr` rather than calling `dladdr`,
/// which also looks for the nearest symbol by scanning the object's whole
/// symbol table, at every process start.
pub fn object_of(addr: usize) -> usize {
    struct Find {
        addr: usize,
        base: usize,
    }
    unsafe extern "C" fn each(
        info: *mut libc::dl_phdr_info,
        _size: usize,
        data: *mut c_void,
    ) -> c_int {
        // SAFETY: the loader passes a valid info for one object, whose
        // program headers it keeps mapped during the call; `data` is the
        // `Find` passed below.
        unsafe {
            let find = &mut *data.cast::<Find>();
            let info = &*info;
            for i in 0..usize::from(info.dlpi_phnum) {
                let ph = &*info.dlpi_phdr.add(i);
                let start = (info.dlpi_addr as usize).wrapping_add(ph.p_vaddr as usize);
                if ph.p_type == libc::PT_LOAD && find.addr.wrapping_sub(start) < ph.p_memsz as usize
                {
                    find.base = info.dlpi_phdr as usize;
                    return 1;
                }
            }
            0
        }
    }
    let mut find = Find { addr, base: 0 };
    // SAFETY: `each` only reads the loader's data and writes `find`.
    unsafe { libc::dl_iterate_phdr(Some(each), (&mut find as *mut Find).cast()) };
    find.base
}

/// The function each interposed name forwards to, once resolved (null
/// before): what the loader would have bound the name to without this
/// library, or the stand-in built here for one the allocator lacks. For
/// [`crate::unhook`]; `reallocarray` is never forwarded, so not listed.
pub fn forwards() -> [(&'static CStr, *mut c_void); 10] {
    let r = |s: &AtomicPtr<c_void>| {
        if resolved() {
            s.load(Ordering::Relaxed)
        } else {
            null_mut()
        }
    };
    [
        (c"malloc", r(&MALLOC)),
        (c"free", r(&FREE)),
        (c"calloc", r(&CALLOC)),
        (c"realloc", r(&REALLOC)),
        (c"posix_memalign", r(&POSIX_MEMALIGN)),
        (c"memalign", r(&MEMALIGN)),
        (c"aligned_alloc", r(&ALIGNED_ALLOC)),
        (c"valloc", r(&VALLOC)),
        (c"pvalloc", r(&PVALLOC)),
        (c"malloc_usable_size", r(&USABLE)),
    ]
}

#[cold]
fn resolve() -> bool {
    if STATE
        .compare_exchange(UNRESOLVED, RESOLVING, Ordering::Acquire, Ordering::Acquire)
        .is_err()
    {
        return STATE.load(Ordering::Acquire) == RESOLVED;
    }
    let next = |name: &CStr| {
        // SAFETY: a NUL-terminated name; RTLD_NEXT searches the objects
        // loaded after this one. Allocations it makes meanwhile are served
        // from the bootstrap arena (STATE is RESOLVING).
        unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr()) }
    };
    let malloc = next(c"malloc");
    let free = next(c"free");
    if malloc.is_null() || free.is_null() {
        STATE.store(FAILED, Ordering::Release);
        return false;
    }
    let home = object_of(malloc as usize);
    // Only from the object that defines malloc (see the module docs).
    let same = |name: &CStr| {
        let p = next(name);
        if !p.is_null() && object_of(p as usize) == home {
            p
        } else {
            null_mut()
        }
    };
    // A function the allocator lacks is replaced by ours, built from the
    // ones it has, so that every call below is one indirect jump.
    let or = |p: *mut c_void, fallback: *mut c_void| if p.is_null() { fallback } else { p };
    let pm = same(c"posix_memalign");
    let ma = same(c"memalign");
    let aa = same(c"aligned_alloc");
    OWN_POSIX_MEMALIGN.store(pm, Ordering::Relaxed);
    OWN_MEMALIGN.store(ma, Ordering::Relaxed);
    OWN_ALIGNED_ALLOC.store(aa, Ordering::Relaxed);
    MALLOC.store(malloc, Ordering::Relaxed);
    FREE.store(free, Ordering::Relaxed);
    CALLOC.store(
        or(same(c"calloc"), calloc_fallback as *mut c_void),
        Ordering::Relaxed,
    );
    REALLOC.store(
        or(same(c"realloc"), realloc_fallback as *mut c_void),
        Ordering::Relaxed,
    );
    POSIX_MEMALIGN.store(
        or(pm, posix_memalign_fallback as *mut c_void),
        Ordering::Relaxed,
    );
    MEMALIGN.store(or(ma, memalign_fallback as *mut c_void), Ordering::Relaxed);
    ALIGNED_ALLOC.store(
        or(aa, aligned_alloc_fallback as *mut c_void),
        Ordering::Relaxed,
    );
    VALLOC.store(
        or(same(c"valloc"), valloc_fallback as *mut c_void),
        Ordering::Relaxed,
    );
    PVALLOC.store(
        or(same(c"pvalloc"), pvalloc_fallback as *mut c_void),
        Ordering::Relaxed,
    );
    // Needed to move a block by hand; every allocator worth chaining has it,
    // so take it from wherever it is rather than go without.
    USABLE.store(
        or(next(c"malloc_usable_size"), usable_fallback as *mut c_void),
        Ordering::Relaxed,
    );
    STATE.store(RESOLVED, Ordering::Release);
    true
}

/// In a copy of the process: points every slot at [`crate::alloc_in_copy`]'s
/// functions, keeping the real `malloc_usable_size` in `before_usable`.
pub(crate) fn divert(before_usable: &AtomicPtr<c_void>) {
    use crate::alloc_in_copy as c;
    before_usable.store(USABLE.load(Ordering::Relaxed), Ordering::Relaxed);
    let set = |s: &AtomicPtr<c_void>, f: *mut c_void| s.store(f, Ordering::Relaxed);
    set(&MALLOC, c::malloc as *mut c_void);
    set(&FREE, c::free as *mut c_void);
    set(&CALLOC, c::calloc as *mut c_void);
    set(&REALLOC, c::realloc as *mut c_void);
    set(&USABLE, c::usable_size as *mut c_void);
    set(&POSIX_MEMALIGN, c::posix_memalign as *mut c_void);
    set(&OWN_POSIX_MEMALIGN, c::posix_memalign as *mut c_void);
    set(&MEMALIGN, c::memalign as *mut c_void);
    set(&OWN_MEMALIGN, c::memalign as *mut c_void);
    set(&ALIGNED_ALLOC, c::memalign as *mut c_void);
    set(&OWN_ALIGNED_ALLOC, c::memalign as *mut c_void);
    set(&VALLOC, c::valloc as *mut c_void);
    set(&PVALLOC, c::pvalloc as *mut c_void);
}

/// Sets the calling thread's errno.
pub fn set_errno(e: c_int) {
    // SAFETY: __errno_location returns the calling thread's errno slot.
    unsafe { *libc::__errno_location() = e };
}

/// The calling thread's errno as it was, to be put back: one lookup of the
/// thread's slot for both.
pub struct KeptErrno {
    slot: *mut c_int,
    saved: c_int,
}

impl KeptErrno {
    /// Keeps the calling thread's errno.
    #[inline(always)]
    pub fn keep() -> Self {
        // SAFETY: __errno_location returns the calling thread's errno slot,
        // valid for as long as the thread lives.
        let slot = unsafe { libc::__errno_location() };
        // SAFETY: the slot just looked up, readable.
        let saved = unsafe { *slot };
        KeptErrno { slot, saved }
    }

    /// Puts the kept errno back (on the thread that kept it: the type is
    /// not `Send`, as it holds a pointer).
    #[inline(always)]
    pub fn restore(self) {
        // SAFETY: the slot of this thread, which is still alive.
        unsafe { *self.slot = self.saved };
    }
}

/// Loads a resolved slot as a function pointer of type `F`.
///
/// # Safety
/// Resolved, and `F` is the C signature of the function the slot holds.
#[inline(always)]
unsafe fn slot<F: Copy>(s: &AtomicPtr<c_void>) -> F {
    const { assert!(core::mem::size_of::<F>() == core::mem::size_of::<*mut c_void>()) };
    let p = s.load(Ordering::Relaxed);
    // SAFETY: once resolved every slot holds the non-null address of a C
    // function of the slot's signature (the allocator's or our fallback);
    // the sizes match (asserted above).
    unsafe { core::mem::transmute_copy::<*mut c_void, F>(&p) }
}

// The forwarding functions. Each requires, as its safety contract, that the
// functions are resolved ([`ensure`] returned true, or the caller runs on a
// thread whose countdown is nonzero, see the module docs) and the caller's
// own contract for the C function of that name.

/// The real `malloc`.
///
/// # Safety
/// Resolved (see above).
#[inline(always)]
pub unsafe fn malloc(size: usize) -> *mut c_void {
    // SAFETY: resolved (contract); MALLOC is a malloc.
    unsafe { slot::<MallocFn>(&MALLOC)(size) }
}

/// The real `free`.
///
/// # Safety
/// Resolved; `p` is null or came from the real allocator and is not used again.
#[inline(always)]
pub unsafe fn free(p: *mut c_void) {
    // SAFETY: resolved (contract); FREE is a free.
    unsafe { slot::<FreeFn>(&FREE)(p) }
}

/// The real `calloc`.
///
/// # Safety
/// Resolved.
#[inline(always)]
pub unsafe fn calloc(n: usize, size: usize) -> *mut c_void {
    // SAFETY: resolved (contract); CALLOC is a calloc.
    unsafe { slot::<CallocFn>(&CALLOC)(n, size) }
}

/// The real `realloc`.
///
/// # Safety
/// Resolved; `p` is null or a live block of the real allocator.
#[inline(always)]
pub unsafe fn realloc(p: *mut c_void, size: usize) -> *mut c_void {
    // SAFETY: resolved (contract); REALLOC is a realloc.
    unsafe { slot::<ReallocFn>(&REALLOC)(p, size) }
}

/// The real `malloc_usable_size`.
///
/// # Safety
/// Resolved; `p` is null or a live block of the real allocator.
#[inline(always)]
pub unsafe fn usable_size(p: *mut c_void) -> usize {
    // SAFETY: resolved (contract); USABLE is a malloc_usable_size.
    unsafe { slot::<UsableFn>(&USABLE)(p) }
}

/// The real `posix_memalign`.
///
/// # Safety
/// Resolved; `out` is valid for a pointer write.
#[inline(always)]
pub unsafe fn posix_memalign(out: *mut *mut c_void, align: usize, size: usize) -> c_int {
    // SAFETY: resolved (contract); POSIX_MEMALIGN is a posix_memalign.
    unsafe { slot::<PosixMemalignFn>(&POSIX_MEMALIGN)(out, align, size) }
}

/// The real `memalign`.
///
/// # Safety
/// Resolved.
#[inline(always)]
pub unsafe fn memalign(align: usize, size: usize) -> *mut c_void {
    // SAFETY: resolved (contract); MEMALIGN is a memalign.
    unsafe { slot::<AlignedFn>(&MEMALIGN)(align, size) }
}

/// The real `aligned_alloc`.
///
/// # Safety
/// Resolved.
#[inline(always)]
pub unsafe fn aligned_alloc(align: usize, size: usize) -> *mut c_void {
    // SAFETY: resolved (contract); ALIGNED_ALLOC is an aligned_alloc.
    unsafe { slot::<AlignedFn>(&ALIGNED_ALLOC)(align, size) }
}

/// The real `valloc`.
///
/// # Safety
/// Resolved.
#[inline(always)]
pub unsafe fn valloc(size: usize) -> *mut c_void {
    // SAFETY: resolved (contract); VALLOC is a valloc.
    unsafe { slot::<MallocFn>(&VALLOC)(size) }
}

/// The real `pvalloc`.
///
/// # Safety
/// Resolved.
#[inline(always)]
pub unsafe fn pvalloc(size: usize) -> *mut c_void {
    // SAFETY: resolved (contract); PVALLOC is a pvalloc.
    unsafe { slot::<MallocFn>(&PVALLOC)(size) }
}

/// `size` bytes aligned to `align` (a power of two) from the real
/// allocator, through the first of `posix_memalign`, `memalign` and
/// `aligned_alloc` it defines; null (errno ENOMEM) on failure. The
/// stand-ins for missing aligned functions and the library's own
/// over-aligned Rust allocations use it: all three are standard and every
/// allocator one would chain provides at least one.
///
/// # Safety
/// Resolved.
pub unsafe fn aligned(align: usize, size: usize) -> *mut c_void {
    debug_assert!(align.is_power_of_two());
    if !OWN_POSIX_MEMALIGN.load(Ordering::Relaxed).is_null() {
        let mut out = null_mut();
        let align = align.max(core::mem::size_of::<usize>());
        // SAFETY: resolved (contract); the allocator's own posix_memalign,
        // a valid out-pointer, a power-of-two multiple of a pointer size.
        let rc = unsafe { slot::<PosixMemalignFn>(&OWN_POSIX_MEMALIGN)(&mut out, align, size) };
        if rc != 0 {
            set_errno(rc);
            return null_mut();
        }
        return out;
    }
    if !OWN_MEMALIGN.load(Ordering::Relaxed).is_null() {
        // SAFETY: resolved (contract); the allocator's own memalign.
        return unsafe { slot::<AlignedFn>(&OWN_MEMALIGN)(align, size) };
    }
    if !OWN_ALIGNED_ALLOC.load(Ordering::Relaxed).is_null() {
        // C11 wants the size to be a multiple of the alignment.
        let Some(rounded) = size.max(1).checked_next_multiple_of(align) else {
            set_errno(libc::ENOMEM);
            return null_mut();
        };
        // SAFETY: resolved (contract); the allocator's own aligned_alloc.
        return unsafe { slot::<AlignedFn>(&OWN_ALIGNED_ALLOC)(align, rounded) };
    }
    // The allocator has no aligned function at all (a minimal one: malloc,
    // free and perhaps calloc and realloc). Its blocks cannot be aligned
    // from outside and still be freed by it, so heapprof's own memory serves
    // the request, unsampled: its free comes back here by address.
    let p = engine::alloc_unsampled(size.max(1), size.max(1), align);
    if p.is_null() || !crate::hooks::publish_range() {
        set_errno(libc::ENOMEM);
        return null_mut();
    }
    p.cast()
}

/// `free` before the real one is known: only null can get here (every
/// other pointer the program frees came from an allocator that was
/// resolved), and freeing null does nothing.
unsafe extern "C" fn free_unresolved(_p: *mut c_void) {}

// Fallbacks for functions the allocator lacks, installed in their slots by
// `resolve` (so only ever called once resolved). C ABI, like the functions
// they stand in for.

unsafe extern "C" fn calloc_fallback(n: usize, size: usize) -> *mut c_void {
    let Some(total) = n.checked_mul(size) else {
        set_errno(libc::ENOMEM);
        return null_mut();
    };
    // SAFETY: resolved; a non-null result has `total` writable bytes.
    unsafe {
        let p = malloc(total);
        if !p.is_null() {
            core::ptr::write_bytes(p.cast::<u8>(), 0, total);
        }
        p
    }
}

unsafe extern "C" fn realloc_fallback(p: *mut c_void, size: usize) -> *mut c_void {
    // SAFETY: resolved; `p` is null or live (realloc's contract); the copy
    // stays within both blocks.
    unsafe {
        if p.is_null() {
            return malloc(size);
        }
        let new = malloc(size.max(1));
        if !new.is_null() {
            let n = usable_size(p).min(size);
            core::ptr::copy_nonoverlapping(p.cast::<u8>(), new.cast::<u8>(), n);
            free(p);
        }
        new
    }
}

unsafe extern "C" fn usable_fallback(_p: *mut c_void) -> usize {
    0
}

unsafe extern "C" fn posix_memalign_fallback(
    out: *mut *mut c_void,
    align: usize,
    size: usize,
) -> c_int {
    if !align.is_power_of_two() || !align.is_multiple_of(core::mem::size_of::<usize>()) {
        return libc::EINVAL;
    }
    // SAFETY: resolved.
    let p = unsafe { aligned(align, size) };
    if p.is_null() {
        return libc::ENOMEM;
    }
    // SAFETY: `out` is writable (posix_memalign's contract).
    unsafe { *out = p };
    0
}

/// Rounds a non-power-of-two alignment up, as glibc's memalign does.
unsafe extern "C" fn memalign_fallback(align: usize, size: usize) -> *mut c_void {
    let Some(align) = align.checked_next_power_of_two() else {
        set_errno(libc::EINVAL);
        return null_mut();
    };
    // SAFETY: resolved.
    unsafe { aligned(align, size) }
}

unsafe extern "C" fn aligned_alloc_fallback(align: usize, size: usize) -> *mut c_void {
    if !align.is_power_of_two() {
        set_errno(libc::EINVAL);
        return null_mut();
    }
    // SAFETY: resolved.
    unsafe { aligned(align, size) }
}

unsafe extern "C" fn valloc_fallback(size: usize) -> *mut c_void {
    // SAFETY: resolved.
    unsafe { aligned(PAGE, size) }
}

/// The size rounded up to whole pages (at least one), as glibc does.
unsafe extern "C" fn pvalloc_fallback(size: usize) -> *mut c_void {
    let Some(rounded) = size.max(1).checked_next_multiple_of(PAGE) else {
        set_errno(libc::ENOMEM);
        return null_mut();
    };
    // SAFETY: resolved.
    unsafe { aligned(PAGE, rounded) }
}

//! The sample heap: heapprof's own memory, from which every sampled object
//! is served (never from the inner allocator).
//!
//! # Why
//! A free must recognise a sample by its address alone, at no cost to the
//! frees that are not samples. Samples kept in the inner allocator would
//! need a mark it can see (page alignment, which costs glibc its slowest
//! path and a page per sample) or a table probed on frees; owning the
//! memory, as tcmalloc's and jemalloc's samplers do, needs neither.
//!
//! # The address test
//! At start-up heapprof reserves one large range of address space
//! (`mmap(PROT_NONE, MAP_NORESERVE)`: no memory, no commit charge, 32 GiB,
//! halved until the kernel agrees). Under an address-space limit
//! (`ulimit -v`, RLIMIT_AS), which counts reservations too, it reserves an
//! eighth of the room the limit leaves (at least 4 MiB), so a program that
//! runs under a limit bare runs under it profiled; past that share samples
//! fall back (below). A pointer is heapprof's
//! iff `p - BASE < LEN` (wrapping subtraction), one compare and a branch on
//! every free. Both statics are 0 until the reservation is published (LEN
//! last, with `Release`; [`contains`] reads LEN first with `Acquire`), so
//! before that nothing is in range; a sample's address reaches a freeing
//! thread only after the reservation, through the program's own
//! synchronisation. The range never changes once published. The ways in
//! test a copy of the two words kept in their own statics
//! ([`RangeMirror`]: the `Profiler`, the preload library), which code in
//! another crate reads directly instead of through the GOT.
//!
//! # Layout of the range
//! | part | what | committed |
//! |---|---|---|
//! | prefix (256 KiB) | the preload library's bootstrap arena ([`prefix`]) | at reservation |
//! | span table | one byte per small span: its class + 1 (0: not carved) | at reservation |
//! | small metadata | 8 bytes per possible slot, 4096 per span | with its span |
//! | large metadata | 16 bytes per page of the large region | before the bump pointer passes it |
//! | small region (an eighth) | 64 KiB spans, each cut into slots of one class | span by span |
//! | large region (five eighths) | runs of whole pages | run by run |
//!
//! (In a short-lived copy of the process made for a dump, the copy's own
//! allocations take pages off the large region's bump pointer too, in its
//! copy of the range: [`carve_private`], for [`crate::engine::arena_in_copy`].)
//!
//! Memory is committed (`mprotect` to read-write) only when a span or run is
//! first carved from its region's bump pointer (and a large run again when
//! reused after it was given back); carving is contiguous, so the kernel
//! merges the committed parts into a handful of mappings. Pages
//! never touched cost nothing even when committed. If the reservation
//! itself fails (a tight `ulimit -v`), the range is a 256 KiB static array
//! holding only the prefix, and every sample falls back (below).
//!
//! # Small samples: size classes
//! Sizes up to 16 KiB use 36 classes: 16 to 128 bytes in steps of 16, then
//! four classes per doubling (160, 192, 224, 256, 320, …, 16384), so a
//! sample wastes under 25% of its size (under 16 bytes below 128). Each
//! class carves 64 KiB spans (64 KiB-aligned) into equal slots. A request
//! aligned to `A` (16 < A ≤ 16 KiB) takes the first class whose size is a
//! multiple of `A` and holds the size rounded up to `A`; slot addresses in a
//! span are multiples of the class size, hence of `A`. Every power of two
//! from 16 to 16384 is a class, so one always exists.
//!
//! Free slots of a class form a lock-free stack (Treiber), linked through
//! the slots' metadata words, not through the objects. The head packs a
//! 32-bit slot number with a 32-bit tag that every successful push or pop
//! increments, so a pop that read a stale link (the slot was popped and
//! pushed again meanwhile: ABA) fails its compare-and-swap and retries.
//! A span is carved by the thread that found its class empty: it keeps the
//! first slot and pushes the rest as one pre-linked chain, one CAS.
//!
//! # Large samples: page runs, kept and reused
//! Larger sizes, and alignments above 16 KiB (any power of two up to 1 GiB),
//! take runs of whole pages. An aligned request takes a run of `pages +
//! align/4096 - 1` pages and starts at the first aligned page inside; the
//! pages skipped are virtual only. At the default rate nearly every buffer
//! of a MiB or more is a sample, and the unsampled ones are served here
//! too (see "Unsampled blocks"), so for large objects this *is* the
//! program's allocator, and it must cost what the inner one would: no
//! system call and no page fault per buffer in a steady churn.
//!
//! - **Freed runs stay resident** (dirty) and are filed as free runs, merged
//!   with free neighbours on either side (boundary tags: a free run's first
//!   and last pages' metadata name each other), in bins by page count
//!   (1 to 8, then four per doubling). An allocation takes, of the runs
//!   that hold it, the lowest in address space (up to 32 looked at: its
//!   bin, then the bins above), split to size; so the pages in use stay
//!   packed at the bottom of the region, and the pages reused are the ones
//!   already touched. When none holds it, a free run at the top of the
//!   carved pages is extended by fresh pages, else fresh pages are carved
//!   from the region's bump pointer. The region thus grows only to the
//!   peak of live large samples plus what is retained, however long the
//!   churn: it never runs out through churn.
//! - **Growth in place**: a `realloc` grows a run into the free run after it
//!   (taking what it needs, the rest stays free), or, at the top, into
//!   fresh pages; the way in asks for geometric room first (see
//!   `engine::realloc_room`), so a buffer grown by doubling is rarely
//!   copied. A shrink files the pages after the new end as a free run.
//! - **The lock**: free runs change only under one lock that is only ever
//!   *tried*, never waited for, and only by the sampled path, large frees
//!   and the decay. A free that finds it taken pushes its run on a
//!   lock-free pending stack, which every holder files before it lets go
//!   (and takes the lock again for runs pushed meanwhile); an allocation
//!   that finds it taken carves fresh pages (lock-free: the bump pointer
//!   is a compare-and-swap, and a run's metadata is committed before the
//!   pointer passes it, so a page below the pointer always has readable
//!   metadata). A thread interrupted by a signal whose handler allocates
//!   thus never deadlocks. A child forked while another thread held the
//!   lock forgets the free runs (their pages are lost to the child only).
//! - **Given back on a decay, or past a budget**, never a system call per
//!   free. The decay runs on the thread that waits for heapprof's wake-ups
//!   (the dumper or the watcher: [`decay_tick`], atomics and raw system
//!   calls only) in steps half the decay period apart
//!   (`HEAPPROF_DECAY_MS`, 10 s by default): each step gives back as many
//!   retained pages as no allocation needed since the step before (the
//!   least retained meanwhile), so memory unused for a whole period is back
//!   with the system within it, and a steady churn keeps its pages. The
//!   first free that retains pages while no step is scheduled wakes that
//!   thread (one raw `write`). Past the budget — retained bytes above both
//!   64 MiB and the most live large bytes since the last step — a free
//!   gives back runs (largest bins first) down to three quarters of it.
//!   So resident large memory is at most the recent live peak plus the
//!   larger of 64 MiB and that peak, and falls to the live size within a
//!   decay period of quiet. A run is given back by mapping fresh
//!   inaccessible memory over it (`mmap(MAP_FIXED, PROT_NONE,
//!   MAP_NORESERVE)`), which returns its commit charge too (a strict
//!   overcommit policy counts writable private memory), and is committed
//!   again when reused, reading as zero; `calloc` zeroes a dirty run
//!   itself. The profile comment shows `retained_bytes=`, `purges=` and
//!   `purged_bytes=`.

//! # Metadata, from the address alone
//! A small slot's metadata word is found from its span (`offset >> 16`),
//! its class (the span table) and its index in the span (`offset / size`);
//! a large object's from its page. While a slot is live the word holds the
//! sample id, which the free record carries (no hash table anywhere), and
//! the usable size is the class size (or the run's end minus the address):
//! at least what was asked, as `malloc_usable_size` and `realloc` need.
//!
//! # Unsampled blocks
//! Every allocation of `engine::LARGE` bytes or more reaches a way in's
//! slow path (see `engine::should_sample`), and under the preload library
//! and `Profiler<System>` the ones not sampled, up to `engine::LARGE_MAX`
//! (beyond which glibc maps and unmaps each block itself), are served here
//! too, as
//! blocks whose metadata word holds 0 (no sample id): their free gives the
//! run back and records nothing, a `realloc` grows them in place with the
//! same room as a sample, and one that samples the new size records the
//! block where it is. So all of a program's large buffers share one set
//! of warm runs, under the bounds above (the budget counts live unsampled
//! pages like live sampled ones). When the heap cannot serve one, the
//! inner allocator does, counted in [`large_to_inner`] (the profile
//! comment's `large_to_inner=`); no profile undercounts through it.
//!
//! # Former samples
//! A large sample (64 KiB or more) that a `realloc` resizes without
//! sampling the new size stays in the heap, unsampled (its metadata word holds 0, no sample id): in
//! place if it fits, else in a new block here. Moving it back to the inner
//! allocator would copy it, and a buffer grown by many reallocs, sampled at
//! some sizes and not at others, would be copied back and forth. (A small
//! one goes back: the copy is cheap, and its later reallocs are then the
//! allocator's hot path again.)
//!
//! # Exhaustion and limits
//! The heap never blocks and never fails an allocation: when it cannot
//! carve (region full, `mprotect` refused, or the testing/limit knob
//! [`set_limit`] reached, `HEAPPROF_SAMPLE_HEAP_LIMIT`), the way in serves
//! the allocation from the inner allocator, unsampled, and [`fallbacks`]
//! counts it (also in each profile's comment); the dumper thread says so
//! once: [`crate::engine::pressure::limit_note`] for the user's limit, the
//! one "low on memory" line of [`crate::engine::pressure`] otherwise.
//! Hooks never print.
//!
//! # Rules kept
//! No lock is ever waited for (atomics, and the large runs' try-lock), no
//! allocation (memory comes from `mmap`), frees from any thread. Fork-safe: the child inherits a copy of the range and
//! of every stack head, so it can free its parent's samples; a thread caught
//! mid-carve in the parent only leaks that span's free slots in the child.

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};

use crate::engine::tagged_stack::TaggedStack;
use crate::os::{raw, PAGE};

/// Bytes at the start of the range for the way in's own use (the preload
/// library's bootstrap arena).
pub const PREFIX_BYTES: usize = 256 << 10;

/// Reservation sizes tried, largest first (halving down to the smallest).
const RESERVE_MAX: usize = 32 << 30;
// Small enough to fit under a tight `ulimit -v` (the layout needs about
// 3 MiB of it), so a constrained process still samples.
const RESERVE_MIN: usize = 4 << 20;

const SPAN_SHIFT: u32 = 16;
const SPAN: usize = 1 << SPAN_SHIFT;
/// Most slots a span holds (16-byte slots).
const SLOTS_PER_SPAN: usize = SPAN / 16;
const SLOTS_SHIFT: u32 = 12;
const _: () = assert!(SLOTS_PER_SPAN == 1 << SLOTS_SHIFT);
/// Largest size served from a size class.
pub const SMALL_MAX: usize = 16 << 10;
const SMALL_CLASSES: usize = 36;
const LARGE_CLASSES: usize = 128;
/// Largest alignment served (more falls back to the inner allocator).
pub const MAX_ALIGN: usize = 1 << 30;

// The reservation. BASE and LEN are the address test; the rest is the
// layout, written before LEN is published.
static BASE: AtomicUsize = AtomicUsize::new(0);
static LEN: AtomicUsize = AtomicUsize::new(0);
static SPAN_TABLE: AtomicUsize = AtomicUsize::new(0);
static SMALL_META: AtomicUsize = AtomicUsize::new(0);
static SMALL_BASE: AtomicUsize = AtomicUsize::new(0);
static SMALL_SPANS: AtomicUsize = AtomicUsize::new(0);
static LARGE_META: AtomicUsize = AtomicUsize::new(0);
static LARGE_BASE: AtomicUsize = AtomicUsize::new(0);
static LARGE_PAGES: AtomicUsize = AtomicUsize::new(0);

const UNRESERVED: u8 = 0;
const RESERVING: u8 = 1;
const RESERVED: u8 = 2;
static STATE: AtomicU8 = AtomicU8::new(UNRESERVED);

/// Spans carved so far (the small region's bump pointer).
static SPANS_CARVED: AtomicUsize = AtomicUsize::new(0);
/// Pages carved so far (the large region's bump pointer).
static PAGES_CARVED: AtomicUsize = AtomicUsize::new(0);
/// Bytes carved from both regions, against [`LIMIT`].
static CARVED_BYTES: AtomicUsize = AtomicUsize::new(0);
static LIMIT: AtomicUsize = AtomicUsize::new(usize::MAX);

// ---- free large runs (see "Large samples" in the module doc) ----
//
// A free run's first page's words: [FREE_BIT | (prev + 1) << 32 | (next + 1)
// in its bin, HEAD | flags | pages]; its last page's (2 pages or more):
// [FREE_BIT, TAIL | first page]. A live run's first and last pages and its
// object's page hold the run info word, (pages << 32) | first page, which
// has no tag bit. All of it changes only under LARGE_LOCK, except a
// pending run's link (a lock-free stack).
const HEAD: u64 = 1 << 62;
const RUN_DIRTY: u64 = 1 << 61;
const RUN_DECOMMITTED: u64 = 1 << 60;
const TAIL: u64 = 1 << 59;
const LOW: u64 = 0xffff_ffff;
const LINK: u64 = 0x7fff_ffff;

/// Taken with a try-lock only: a thread that cannot have it never waits
/// (a free queues its run on PENDING, an allocation carves fresh pages).
static LARGE_LOCK: AtomicBool = AtomicBool::new(false);
/// Free runs by size class of their page count: first run + 1, 0 empty.
static BINS: [AtomicU32; LARGE_CLASSES] = [const { AtomicU32::new(0) }; LARGE_CLASSES];
/// Which bins hold runs.
static BIN_MASK: [AtomicU64; LARGE_CLASSES / 64] =
    [const { AtomicU64::new(0) }; LARGE_CLASSES / 64];
/// Runs freed while the lock was taken, for its holder (or the next) to
/// file: (tag << 32) | (run + 1), linked through the runs' first words.
static PENDING: TaggedStack = TaggedStack::new();
/// Pages in free runs that may be resident (dirty), and the least that
/// number has been since the last decay step.
static RETAINED_PAGES: AtomicUsize = AtomicUsize::new(0);
static LOW_WATER: AtomicUsize = AtomicUsize::new(0);
/// Pages of live runs, and the most there were since the last decay step:
/// the retained budget.
static LIVE_PAGES: AtomicUsize = AtomicUsize::new(0);
static PEAK_LIVE: AtomicUsize = AtomicUsize::new(0);
/// Runs given back to the system, and their bytes.
static PURGES: AtomicU64 = AtomicU64::new(0);
static PURGED_BYTES: AtomicU64 = AtomicU64::new(0);
/// Retained pages idle for this long go back to the system.
static DECAY_NS: AtomicU64 = AtomicU64::new(10_000_000_000);
/// When the next decay step is due (monotonic ns; 0: none scheduled).
static NEXT_DECAY: AtomicU64 = AtomicU64::new(0);
/// Whether the thread that runs [`decay_tick`] knows there is work: the
/// first free that retains pages after it found none wakes it.
static DECAY_ARMED: AtomicBool = AtomicBool::new(false);
/// Retained bytes always allowed, whatever the live size.
const RETAIN_FLOOR: usize = 64 << 20;

static FALLBACKS: AtomicU64 = AtomicU64::new(0);
/// Unsampled large blocks the heap could not serve (see
/// `engine::alloc_large`), served by the inner allocator instead.
static LARGE_TO_INNER: AtomicU64 = AtomicU64::new(0);

/// Set in the metadata word of a free slot or run (beside its link), so a
/// second free of the same pointer is ignored rather than corrupting a
/// stack. Sample ids never reach it.
const FREE_BIT: u64 = 1 << 63;

/// Free stacks, one per small class: (tag << 32) | (slot number + 1); 0 in
/// the low half is empty.
static SMALL_FREE: [TaggedStack; SMALL_CLASSES] = [const { TaggedStack::new() }; SMALL_CLASSES];

/// Where the range lives if nothing can be reserved: the prefix only.
#[repr(C, align(4096))]
struct Fallback(core::cell::UnsafeCell<[u8; PREFIX_BYTES]>);
// SAFETY: never read or written here; the way in owns what it carves from
// the prefix.
unsafe impl Sync for Fallback {}
static FALLBACK: Fallback = Fallback(core::cell::UnsafeCell::new([0; PREFIX_BYTES]));

/// Whether `p` lies in heapprof's range (a sample, or the prefix): the free
/// hot path's one test.
#[inline(always)]
pub fn contains(p: *const u8) -> bool {
    let len = LEN.load(Ordering::Acquire);
    (p as usize).wrapping_sub(BASE.load(Ordering::Relaxed)) < len
}

/// A copy of the address test's two words in a way in's own static.
///
/// The statics behind [`contains`] belong to this crate, so code inlined
/// into another crate (a `#[global_allocator]` in the program, the preload
/// library) reaches them through the GOT: two more loads on every free.
/// A mirror living in that crate's own static (a field of its
/// `Profiler`, a static of the preload library) is read directly, so
/// the test is `mov, sub, cmp, jb`.
///
/// Both words are 0 (nothing in range) until [`RangeMirror::publish`];
/// a way in publishes before it hands out any pointer of the range, length
/// last, so a thread that got such a pointer through the program's own
/// synchronisation sees both words.
#[repr(C)]
pub struct RangeMirror {
    base: AtomicUsize,
    len: AtomicUsize,
}

impl RangeMirror {
    /// Byte offsets of the two words, for hot paths written in assembly.
    pub const BASE_OFFSET: usize = core::mem::offset_of!(RangeMirror, base);
    pub const LEN_OFFSET: usize = core::mem::offset_of!(RangeMirror, len);

    /// Nothing in range.
    pub const fn new() -> RangeMirror {
        RangeMirror {
            base: AtomicUsize::new(0),
            len: AtomicUsize::new(0),
        }
    }

    /// [`contains`], on the mirrored words. Relaxed loads suffice: a
    /// pointer of the range reaches the caller through synchronisation that
    /// follows its publication (relaxed loads also let the compiler fold
    /// them into the subtract and the compare).
    #[inline(always)]
    pub fn contains(&self, p: *const u8) -> bool {
        let base = self.base.load(Ordering::Relaxed);
        (p as usize).wrapping_sub(base) < self.len.load(Ordering::Relaxed)
    }

    /// Whether the range has been copied here.
    #[inline]
    pub fn published(&self) -> bool {
        self.len.load(Ordering::Acquire) != 0
    }

    /// Copies the range here (reserving it if need be). False only while
    /// another thread is reserving it.
    pub fn publish(&self) -> bool {
        match range() {
            Some((base, len)) => {
                self.base.store(base, Ordering::Relaxed);
                self.len.store(len, Ordering::Release);
                true
            }
            None => false,
        }
    }
}

impl Default for RangeMirror {
    fn default() -> Self {
        Self::new()
    }
}

/// The whole range (start, length), reserving it if need be; None only
/// while another thread is reserving it.
pub fn range() -> Option<(usize, usize)> {
    reserve().then(|| (BASE.load(Ordering::Relaxed), LEN.load(Ordering::Relaxed)))
}

/// The prefix (start, length) once reserved.
pub fn prefix() -> Option<(*mut u8, usize)> {
    reserve().then(|| (BASE.load(Ordering::Relaxed) as *mut u8, PREFIX_BYTES))
}

/// Caps the bytes the heap carves (a limit, and a way for tests to
/// simulate exhaustion). Applies to carving from now on.
pub fn set_limit(bytes: usize) {
    LIMIT.store(bytes, Ordering::Relaxed);
}

/// Allocations chosen for sampling that the heap could not serve (served
/// unsampled by the inner allocator instead).
pub fn fallbacks() -> u64 {
    FALLBACKS.load(Ordering::Relaxed)
}

/// The `HEAPPROF_SAMPLE_HEAP_LIMIT` in force (`usize::MAX`: none).
pub fn limit() -> usize {
    LIMIT.load(Ordering::Relaxed)
}

/// Unsampled large blocks served by the inner allocator because the heap
/// could not serve them (no undercount: they are no samples).
pub fn large_to_inner() -> u64 {
    LARGE_TO_INNER.load(Ordering::Relaxed)
}

/// Counts one [`large_to_inner`].
pub fn count_large_to_inner() {
    LARGE_TO_INNER.fetch_add(1, Ordering::Relaxed);
}

/// Bytes carved from the heap so far (committed; only touched pages are
/// resident).
#[cfg(test)]
fn carved_bytes() -> usize {
    CARVED_BYTES.load(Ordering::Relaxed)
}

/// Reserves the range, once. Lock-free: a thread arriving while another
/// reserves gets false (its caller falls back) rather than wait.
pub fn reserve() -> bool {
    match STATE.load(Ordering::Acquire) {
        RESERVED => return true,
        RESERVING => return false,
        _ => {}
    }
    if STATE
        .compare_exchange(UNRESERVED, RESERVING, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        return STATE.load(Ordering::Acquire) == RESERVED;
    }
    let mut len = reserve_cap();
    let base = loop {
        // SAFETY: a fresh anonymous mapping touches no existing memory.
        let p = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                len,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p != libc::MAP_FAILED {
            break Some(p as usize);
        }
        if len <= RESERVE_MIN {
            break None;
        }
        len /= 2;
    };
    match base.filter(|&b| layout(b, len)) {
        Some(b) => {
            BASE.store(b, Ordering::Relaxed);
            LEN.store(len, Ordering::Release);
        }
        None => {
            if let Some(b) = base {
                // SAFETY: our own mapping, never published.
                unsafe { libc::munmap(b as *mut libc::c_void, len) };
            }
            BASE.store(FALLBACK.0.get() as usize, Ordering::Relaxed);
            LEN.store(PREFIX_BYTES, Ordering::Release);
        }
    }
    STATE.store(RESERVED, Ordering::Release);
    true
}

/// The most to reserve: [`RESERVE_MAX`], or under an address-space limit
/// (`ulimit -v`, RLIMIT_AS) an eighth of the room the limit leaves now
/// (at least [`RESERVE_MIN`]), so the program keeps nearly all of it.
fn reserve_cap() -> usize {
    crate::engine::pressure::address_room().map_or(RESERVE_MAX, |room| {
        (room / 8).clamp(RESERVE_MIN, RESERVE_MAX)
    })
}

/// Lays the parts out in `[base, base + len)` and commits the fixed ones.
fn layout(base: usize, len: usize) -> bool {
    // An eighth for small spans (and a sixteenth for their metadata), five
    // eighths for large runs: large samples take most of the bytes.
    let small_len = len / 8;
    let spans = small_len / SPAN;
    let large_pages = len / 8 * 5 / PAGE;
    let span_table = base + PREFIX_BYTES;
    let small_meta = (span_table + spans).next_multiple_of(PAGE);
    let large_meta = small_meta + spans * SLOTS_PER_SPAN * 8;
    let small_base = (large_meta + large_pages * 16).next_multiple_of(SPAN);
    let large_base = small_base + spans * SPAN;
    if large_base + large_pages * PAGE > base + len || !commit(base, span_table + spans - base) {
        return false;
    }
    SPAN_TABLE.store(span_table, Ordering::Relaxed);
    SMALL_META.store(small_meta, Ordering::Relaxed);
    SMALL_BASE.store(small_base, Ordering::Relaxed);
    SMALL_SPANS.store(spans, Ordering::Relaxed);
    LARGE_META.store(large_meta, Ordering::Relaxed);
    LARGE_BASE.store(large_base, Ordering::Relaxed);
    LARGE_PAGES.store(large_pages, Ordering::Relaxed);
    true
}

/// Makes `[addr, addr + len)` (inside the reservation) readable and writable.
fn commit(addr: usize, len: usize) -> bool {
    let start = addr & !(PAGE - 1);
    let end = (addr + len).next_multiple_of(PAGE);
    // SAFETY: the range lies inside our own reservation, which nothing else
    // maps; making it accessible affects no other memory.
    unsafe {
        libc::mprotect(
            start as *mut libc::c_void,
            end - start,
            libc::PROT_READ | libc::PROT_WRITE,
        ) == 0
    }
}

/// Takes `bytes` from the limit, or says no.
fn charge(bytes: usize) -> bool {
    let limit = LIMIT.load(Ordering::Relaxed);
    CARVED_BYTES
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
            c.checked_add(bytes).filter(|&n| n <= limit)
        })
        .is_ok()
}

/// Advances a region's bump pointer by `n` units if it stays within `cap`.
fn bump(cursor: &AtomicUsize, n: usize, cap: usize) -> Option<usize> {
    cursor
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
            c.checked_add(n).filter(|&e| e <= cap)
        })
        .ok()
}

// ---- size classes ----

/// The small class of `size` (1..=SMALL_MAX).
#[inline]
fn small_class(size: usize) -> usize {
    debug_assert!((1..=SMALL_MAX).contains(&size));
    if size <= 128 {
        return size.div_ceil(16) - 1;
    }
    let k = usize::BITS - 1 - (size - 1).leading_zeros(); // 2^k < size <= 2^(k+1)
    let step = 1usize << (k - 2);
    let j = (size - (1 << k)).div_ceil(step) - 1;
    8 + 4 * (k as usize - 7) + j
}

/// The slot size of small class `c`.
#[inline]
fn small_size(c: usize) -> usize {
    if c < 8 {
        return 16 * (c + 1);
    }
    let k = 7 + (c - 8) / 4;
    let j = (c - 8) % 4;
    (1 << k) + (j + 1) * (1 << (k - 2))
}

/// The class for `size` bytes aligned to `align`, if small.
fn small_class_for(size: usize, align: usize) -> Option<usize> {
    if align <= 16 {
        return (size <= SMALL_MAX).then(|| small_class(size.max(1)));
    }
    let s = size.max(1).checked_next_multiple_of(align)?;
    if s > SMALL_MAX {
        return None;
    }
    (small_class(s)..SMALL_CLASSES).find(|&c| small_size(c) % align == 0)
}

/// The large class of a run of `pages` pages, and its page count.
fn large_class(pages: usize) -> usize {
    if pages <= 8 {
        return pages.max(1) - 1;
    }
    let k = usize::BITS - 1 - (pages - 1).leading_zeros(); // k >= 3
    let step = 1usize << (k - 2);
    let j = (pages - (1 << k)).div_ceil(step) - 1;
    8 + 4 * (k as usize - 3) + j
}

#[cfg(test)]
fn large_pages(c: usize) -> usize {
    if c < 8 {
        return c + 1;
    }
    let k = 3 + (c - 8) / 4;
    let j = (c - 8) % 4;
    (1 << k) + (j + 1) * (1 << (k - 2))
}

// ---- lock-free stacks over metadata words (`engine::tagged_stack`) ----

/// The next-entry half of a free slot's or run's link word.
fn link_of(word: &AtomicU64) -> u32 {
    word.load(Ordering::Relaxed) as u32
}

/// Stores a free slot's or run's stack link, marked free.
fn set_stack_link(word: &AtomicU64, next: u32) {
    word.store(FREE_BIT | u64::from(next), Ordering::Relaxed);
}

/// The metadata word of global small slot `g` (span << 12 | index).
fn small_word(g: usize) -> &'static AtomicU64 {
    let a = SMALL_META.load(Ordering::Relaxed) + g * 8;
    // SAFETY: `g` names a slot of a carved span, whose metadata was
    // committed before the slot became reachable; AtomicU64 has the size
    // and alignment of the word, and the memory is only ever used as one.
    unsafe { &*(a as *const AtomicU64) }
}

/// The two metadata words of large page `q`: [id or link, run info].
fn large_words(q: usize) -> &'static [AtomicU64; 2] {
    let a = LARGE_META.load(Ordering::Relaxed) + q * 16;
    // SAFETY: as for small_word: committed with the run that holds page q.
    unsafe { &*(a as *const [AtomicU64; 2]) }
}

fn span_class(span: usize) -> &'static AtomicU8 {
    // SAFETY: the span table (one byte per span) is committed at
    // reservation, and `span` < SMALL_SPANS.
    unsafe { &*((SPAN_TABLE.load(Ordering::Relaxed) + span) as *const AtomicU8) }
}

// ---- allocation ----

/// `size` bytes aligned to `align` (a power of two) from the heap, or null
/// when it cannot serve them (counted in [`fallbacks`], except while another
/// thread is still reserving the range): the caller then serves the
/// allocation unsampled. Zeroed if `zero`.
pub fn alloc(size: usize, align: usize, zero: bool) -> *mut u8 {
    if !reserve() {
        return core::ptr::null_mut();
    }
    let p = alloc_reserved(size, align, zero);
    if p.is_null() {
        FALLBACKS.fetch_add(1, Ordering::Relaxed);
        if LIMIT.load(Ordering::Relaxed) == usize::MAX {
            // Out of address space or memory, not the user's limit: one of
            // the things `pressure` says, in its one line.
            crate::engine::pressure::unsampled();
        }
    }
    p
}

/// [`alloc`] without counting a failure (for blocks that are no samples).
pub fn alloc_uncounted(size: usize, align: usize, zero: bool) -> *mut u8 {
    if !reserve() {
        return core::ptr::null_mut();
    }
    alloc_reserved(size, align, zero)
}

/// [`alloc_uncounted`] once the heap is reserved.
#[inline(always)]
fn alloc_reserved(size: usize, align: usize, zero: bool) -> *mut u8 {
    if !align.is_power_of_two() || align > MAX_ALIGN {
        core::ptr::null_mut()
    } else {
        match small_class_for(size, align) {
            Some(c) => {
                let p = alloc_small(c);
                if zero && !p.is_null() {
                    // SAFETY: a slot of at least `size` bytes, ours to give out.
                    unsafe { core::ptr::write_bytes(p, 0, size) };
                }
                p
            }
            None => alloc_large(size, align, zero),
        }
    }
}

fn alloc_small(c: usize) -> *mut u8 {
    let g = match SMALL_FREE[c].pop(|g| Some(link_of(small_word(g)))) {
        Some(g) => g,
        None => match carve_span(c) {
            Some(g) => g,
            None => return core::ptr::null_mut(),
        },
    };
    let (span, index) = (g >> SLOTS_SHIFT, g & (SLOTS_PER_SPAN - 1));
    (SMALL_BASE.load(Ordering::Relaxed) + (span << SPAN_SHIFT) + index * small_size(c)) as *mut u8
}

/// Carves a new span for class `c`; returns its first slot, the others
/// pushed onto the class's stack.
fn carve_span(c: usize) -> Option<usize> {
    let spans = SMALL_SPANS.load(Ordering::Relaxed);
    if spans == 0 || !charge(SPAN) {
        return None;
    }
    let span = bump(&SPANS_CARVED, 1, spans)?;
    let meta = SMALL_META.load(Ordering::Relaxed) + span * SLOTS_PER_SPAN * 8;
    let data = SMALL_BASE.load(Ordering::Relaxed) + (span << SPAN_SHIFT);
    if !commit(meta, SLOTS_PER_SPAN * 8) || !commit(data, SPAN) {
        return None;
    }
    span_class(span).store(c as u8 + 1, Ordering::Relaxed);
    let n = SPAN / small_size(c);
    let first = span << SLOTS_SHIFT;
    if n > 1 {
        for i in 1..n - 1 {
            small_word(first + i).store(FREE_BIT | (first + i + 2) as u64, Ordering::Relaxed);
        }
        SMALL_FREE[c].push(first + 1, |v| set_stack_link(small_word(first + n - 1), v));
    }
    Some(first)
}

fn alloc_large(size: usize, align: usize, zero: bool) -> *mut u8 {
    let Some(pages) = size.max(1).checked_next_multiple_of(PAGE).map(|b| b / PAGE) else {
        return core::ptr::null_mut();
    };
    let need = pages + align.max(PAGE) / PAGE - 1;
    if need > LARGE_PAGES.load(Ordering::Relaxed) {
        return core::ptr::null_mut();
    }
    let (run, flags) = match locked(|| take_fit(need).or_else(|| take_top(need))).flatten() {
        Some((run, flags)) if flags & RUN_DECOMMITTED == 0 => (run, flags),
        Some((run, flags)) => {
            if !commit(LARGE_BASE.load(Ordering::Relaxed) + run * PAGE, need * PAGE) {
                // Out of commit (a strict overcommit policy): free again.
                live_grew(need);
                free_run(run, need);
                return core::ptr::null_mut();
            }
            (run, flags & !RUN_DECOMMITTED)
        }
        None => {
            if !charge(need * PAGE) {
                return core::ptr::null_mut();
            }
            match carve_pages(need, true) {
                Some(run) => (run, 0),
                None => {
                    CARVED_BYTES.fetch_sub(need * PAGE, Ordering::Relaxed);
                    return core::ptr::null_mut();
                }
            }
        }
    };
    let base = LARGE_BASE.load(Ordering::Relaxed);
    let p = (base + run * PAGE).next_multiple_of(align.max(PAGE));
    set_live(run, need, (p - base) / PAGE);
    if zero && flags & RUN_DIRTY != 0 {
        // SAFETY: the object's `size` bytes lie inside the run, ours to give.
        unsafe { core::ptr::write_bytes(p as *mut u8, 0, size) };
    }
    p as *mut u8
}

/// Marks `pages` pages from `run` live, holding an object at page `q`.
fn set_live(run: usize, pages: usize, q: usize) {
    let info = ((pages as u64) << 32) | run as u64;
    for page in [run, q, run + pages - 1] {
        large_words(page)[1].store(info, Ordering::Relaxed);
    }
    large_words(run)[0].store(0, Ordering::Relaxed);
    large_words(q)[0].store(0, Ordering::Relaxed);
    live_grew(pages);
}

fn live_grew(pages: usize) {
    let live = LIVE_PAGES.fetch_add(pages, Ordering::Relaxed) + pages;
    PEAK_LIVE.fetch_max(live, Ordering::Relaxed);
}

/// Takes `n` fresh pages from the large region's bump pointer, committing
/// their metadata before the pointer moves past them (so every page below
/// the pointer has readable metadata: the free-run neighbour test reads
/// it) and, if `data`, the pages themselves after. Lock-free.
fn carve_pages(n: usize, data: bool) -> Option<usize> {
    let cap = LARGE_PAGES.load(Ordering::Relaxed);
    let meta = LARGE_META.load(Ordering::Relaxed);
    let mut cur = PAGES_CARVED.load(Ordering::Acquire);
    let run = loop {
        let end = cur.checked_add(n).filter(|&e| e <= cap)?;
        if !commit(meta + cur * 16, n * 16) {
            return None;
        }
        match PAGES_CARVED.compare_exchange_weak(cur, end, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => break cur,
            Err(now) => cur = now,
        }
    };
    // Like a carve whose data cannot be committed, the pages are then lost.
    (!data || commit(LARGE_BASE.load(Ordering::Relaxed) + run * PAGE, n * PAGE)).then_some(run)
}

/// `bytes` (rounded up to pages) of committed memory from the large
/// region, belonging to no run: the arena of a copy of the process
/// ([`crate::engine::arena_in_copy`]). Only ever called in such a copy, whose
/// address space the program never uses again, so the pages are taken
/// without charge against the limit and never given back.
pub(crate) fn carve_private(bytes: usize) -> Option<*mut u8> {
    if !reserve() {
        return None;
    }
    let pages = bytes.checked_next_multiple_of(PAGE)? / PAGE;
    let run = carve_pages(pages, true)?;
    Some((LARGE_BASE.load(Ordering::Relaxed) + run * PAGE) as *mut u8)
}

// ---- free runs: filing, coalescing, best fit, purging, decay ----

/// How many times a thread tries the large lock before it gives up. Its
/// holders run for a few hundred nanoseconds (tens of microseconds when
/// they give pages back), and giving up costs more: an allocation then
/// carves fresh pages and faults them in, so under contention the region
/// would grow by a run per miss. Bounded, so a signal handler that
/// interrupts the holder on its own thread still gets on.
const LOCK_TRIES: u32 = 1 << 10;
/// Then how many times it yields the CPU, trying again after each.
const LOCK_YIELDS: u32 = 16;

/// Runs `f` holding the large lock, with the runs queued by frees filed
/// first (so `f` sees them) and again after; None (and `f` not run) if
/// another thread held it through [`LOCK_TRIES`] tries.
fn locked<R>(f: impl FnOnce() -> R) -> Option<R> {
    let mut tries = 0;
    while LARGE_LOCK
        .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        tries += 1;
        if tries >= LOCK_TRIES + LOCK_YIELDS {
            return None;
        }
        if tries >= LOCK_TRIES {
            // The holder may have been preempted (more threads than CPUs):
            // spinning on cannot help it finish, giving it the CPU can.
            crate::os::raw::yield_now();
            continue;
        }
        while LARGE_LOCK.load(Ordering::Relaxed) && tries < LOCK_TRIES {
            core::hint::spin_loop();
            tries += 1;
        }
    }
    drain_pending();
    let r = f();
    loop {
        drain_pending();
        LARGE_LOCK.store(false, Ordering::Release);
        // A run queued after the drain and before the unlock would wait for
        // the next holder: take the lock again for it if nobody has.
        if PENDING.is_empty()
            || LARGE_LOCK
                .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
        {
            return Some(r);
        }
    }
}

/// Queues the freed run for the lock's holder (lock-free).
fn queue(run: usize, pages: usize) {
    large_words(run)[1].store(((pages as u64) << 32) | run as u64, Ordering::Relaxed);
    PENDING.push(run, |v| set_stack_link(&large_words(run)[0], v));
}

/// Files every queued run. Under the lock.
fn drain_pending() {
    let mut top = PENDING.take_all();
    while let Some(run) = top {
        let w = large_words(run);
        top = link_of(&w[0]).checked_sub(1).map(|n| n as usize);
        let pages = (w[1].load(Ordering::Relaxed) >> 32) as usize;
        file(run, pages, RUN_DIRTY);
    }
}

/// The bin of a free run of `pages` pages: runs in bin `c` have more pages
/// than class `c - 1` and at most class `c`'s count.
fn bin_of(pages: usize) -> usize {
    large_class(pages).min(LARGE_CLASSES - 1)
}

/// Sets one of the two links (`shift` 0: next, 32: prev) of a free run.
fn set_link(run: usize, shift: u32, to: u64) {
    let w = &large_words(run)[0];
    let old = w.load(Ordering::Relaxed);
    w.store((old & !(LINK << shift)) | (to << shift), Ordering::Relaxed);
}

/// Adds the free run `run..run + pages` to its bin (no coalescing).
fn bin_insert(run: usize, pages: usize, flags: u64) {
    let c = bin_of(pages);
    let next = BINS[c].load(Ordering::Relaxed) as u64;
    large_words(run)[0].store(FREE_BIT | next, Ordering::Relaxed);
    if next != 0 {
        set_link(next as usize - 1, 32, run as u64 + 1);
    }
    BINS[c].store(run as u32 + 1, Ordering::Relaxed);
    BIN_MASK[c / 64].fetch_or(1 << (c % 64), Ordering::Relaxed);
    large_words(run)[1].store(HEAD | flags | pages as u64, Ordering::Relaxed);
    if pages > 1 {
        let last = large_words(run + pages - 1);
        last[0].store(FREE_BIT, Ordering::Relaxed);
        last[1].store(TAIL | run as u64, Ordering::Relaxed);
    }
    if flags & RUN_DIRTY != 0 {
        RETAINED_PAGES.fetch_add(pages, Ordering::Relaxed);
    }
}

/// Takes the free run at `run` out of its bin: (pages, flags).
fn bin_remove(run: usize) -> (usize, u64) {
    let w = large_words(run);
    let (links, info) = (w[0].load(Ordering::Relaxed), w[1].load(Ordering::Relaxed));
    let (prev, next) = ((links >> 32) & LINK, links & LINK);
    let pages = (info & LOW) as usize;
    let c = bin_of(pages);
    if prev != 0 {
        set_link(prev as usize - 1, 0, next);
    } else {
        BINS[c].store(next as u32, Ordering::Relaxed);
        if next == 0 {
            BIN_MASK[c / 64].fetch_and(!(1 << (c % 64)), Ordering::Relaxed);
        }
    }
    if next != 0 {
        set_link(next as usize - 1, 32, prev);
    }
    w[1].store(0, Ordering::Relaxed);
    large_words(run + pages - 1)[1].store(0, Ordering::Relaxed);
    if info & RUN_DIRTY != 0 {
        retained_fell(pages);
    }
    (pages, info & (RUN_DIRTY | RUN_DECOMMITTED))
}

/// Retained pages fell by `pages` (taken for use, merged, or given back):
/// the decay's low-water mark follows, so a step never gives back pages
/// that were in use since the last one (a merge's dip only delays it).
fn retained_fell(pages: usize) {
    let now = RETAINED_PAGES.fetch_sub(pages, Ordering::Relaxed) - pages;
    LOW_WATER.fetch_min(now, Ordering::Relaxed);
}

/// The free run whose last page is `end - 1`, if there is one.
fn free_run_ending_at(end: usize) -> Option<usize> {
    let t = end.checked_sub(1)?;
    let w1 = large_words(t)[1].load(Ordering::Relaxed);
    let head = if w1 & TAIL != 0 {
        (w1 & LOW) as usize
    } else if w1 & HEAD != 0 {
        t
    } else {
        return None;
    };
    let h = large_words(head);
    let info = h[1].load(Ordering::Relaxed);
    (head <= t
        && info & HEAD != 0
        && h[0].load(Ordering::Relaxed) & FREE_BIT != 0
        && head + (info & LOW) as usize == end)
        .then_some(head)
}

/// Whether page `q` starts a free run (false at and past the bump pointer).
fn free_run_at(q: usize) -> bool {
    if q >= PAGES_CARVED.load(Ordering::Acquire) {
        return false;
    }
    let w = large_words(q);
    w[1].load(Ordering::Relaxed) & HEAD != 0 && w[0].load(Ordering::Relaxed) & FREE_BIT != 0
}

/// Files a free run, merged with its free neighbours in the same state:
/// dirty (resident, counted as retained) with dirty, given back with given
/// back. Under the lock. Merging across states would make a run's state
/// wrong for most of its pages: a small dirty run merged into a large one
/// given back would count the whole as retained, push the retained pages
/// over the budget, and have the next purge give back the resident pages
/// just freed, which the next allocation faults in again (as jemalloc, which
/// coalesces extents only within one state).
fn file(run: usize, pages: usize, flags: u64) {
    let (mut run, mut pages, mut flags) = (run, pages, flags);
    let dirty = flags & RUN_DIRTY;
    let same_state =
        |head: usize| large_words(head)[1].load(Ordering::Relaxed) & RUN_DIRTY == dirty;
    if let Some(left) = free_run_ending_at(run).filter(|&l| same_state(l)) {
        let (n, f) = bin_remove(left);
        (run, pages, flags) = (left, pages + n, flags | f);
    }
    if free_run_at(run + pages) && same_state(run + pages) {
        let (n, f) = bin_remove(run + pages);
        (pages, flags) = (pages + n, flags | f);
    }
    bin_insert(run, pages, flags);
}

/// The free run for `need` pages, split to size (the rest filed again):
/// (run, flags). Under the lock. Of the runs that hold `need` pages (up to
/// 32 looked at: `need`'s bin, then the bins above it), the lowest in
/// address space, so the pages in use stay packed at the bottom of the
/// region and the ones already touched are the ones reused.
fn take_fit(need: usize) -> Option<(usize, u64)> {
    let first = bin_of(need);
    let mut best: Option<usize> = None;
    let mut looked = 0;
    let mut c = first;
    'bins: while c < LARGE_CLASSES {
        // The next non-empty bin from `c`, a word of the mask at a time.
        let word = BIN_MASK[c / 64].load(Ordering::Relaxed) & (!0u64 << (c % 64));
        if word == 0 {
            c = (c / 64 + 1) * 64;
            continue;
        }
        c = (c / 64) * 64 + word.trailing_zeros() as usize;
        let mut at = BINS[c].load(Ordering::Relaxed) as usize;
        while at != 0 {
            let run = at - 1;
            let pages = (large_words(run)[1].load(Ordering::Relaxed) & LOW) as usize;
            if pages >= need && best.map_or(true, |b| run < b) {
                best = Some(run);
            }
            looked += 1;
            if looked >= 32 {
                break 'bins;
            }
            at = (large_words(run)[0].load(Ordering::Relaxed) & LINK) as usize;
        }
        c += 1;
    }
    let run = best?;
    let (pages, mut flags) = bin_remove(run);
    // A run with given-back parts is committed whole, once: its rest is
    // then reused without an `mprotect` per allocation.
    if flags & RUN_DECOMMITTED != 0
        && pages > need
        && commit(
            LARGE_BASE.load(Ordering::Relaxed) + run * PAGE,
            pages * PAGE,
        )
    {
        flags &= !RUN_DECOMMITTED;
    }
    if pages > need {
        bin_insert(run + need, pages - need, flags);
    }
    Some((run, flags))
}

/// When no free run holds `need` pages: the free run at the top of the
/// carved pages, if there is one, extended by fresh pages to `need`, so the
/// region grows by what is missing only (and reuses the pages of that run)
/// rather than by a whole new run. Under the lock.
fn take_top(need: usize) -> Option<(usize, u64)> {
    let top = PAGES_CARVED.load(Ordering::Acquire);
    let run = free_run_ending_at(top)?;
    let pages = (large_words(run)[1].load(Ordering::Relaxed) & LOW) as usize;
    let extra = need.checked_sub(pages).filter(|&e| e > 0)?;
    if !bump_at(top, extra) {
        return None;
    }
    let (_, flags) = bin_remove(run);
    Some((run, flags))
}

/// Moves the bump pointer from `top` (where it must be) by `extra` fresh,
/// committed pages, charged to the limit. Under the lock.
fn bump_at(top: usize, extra: usize) -> bool {
    if top + extra > LARGE_PAGES.load(Ordering::Relaxed)
        || !commit(LARGE_META.load(Ordering::Relaxed) + top * 16, extra * 16)
        || !charge(extra * PAGE)
    {
        return false;
    }
    if PAGES_CARVED
        .compare_exchange(top, top + extra, Ordering::AcqRel, Ordering::Relaxed)
        .is_err()
    {
        // Another run was carved meanwhile.
        CARVED_BYTES.fetch_sub(extra * PAGE, Ordering::Relaxed);
        return false;
    }
    if !commit(
        LARGE_BASE.load(Ordering::Relaxed) + top * PAGE,
        extra * PAGE,
    ) {
        // Filed free: a later commit may succeed.
        file(top, extra, RUN_DECOMMITTED);
        return false;
    }
    true
}

/// Gives back dirty free runs, largest bins first, until at most `keep`
/// pages are retained. Under the lock. Raw system calls only.
fn purge_down_to(keep: usize) {
    let base = LARGE_BASE.load(Ordering::Relaxed);
    for c in (0..LARGE_CLASSES).rev() {
        let mut at = BINS[c].load(Ordering::Relaxed) as usize;
        while at != 0 {
            if RETAINED_PAGES.load(Ordering::Relaxed) <= keep {
                return;
            }
            let run = at - 1;
            let w = large_words(run);
            at = (w[0].load(Ordering::Relaxed) & LINK) as usize;
            let info = w[1].load(Ordering::Relaxed);
            if info & RUN_DIRTY == 0 {
                continue;
            }
            let pages = (info & LOW) as usize;
            let (p, len) = ((base + run * PAGE) as *mut u8, pages * PAGE);
            // Memory and commit charge both, else the memory only.
            // SAFETY: a free run: ours, in our reservation, used by nobody.
            let flag = if unsafe { raw::decommit(p, len) } {
                RUN_DECOMMITTED
            // SAFETY: as above.
            } else if unsafe { raw::dontneed(p, len) } {
                0
            } else {
                continue;
            };
            w[1].store((info & !RUN_DIRTY) | flag, Ordering::Relaxed);
            retained_fell(pages);
            PURGES.fetch_add(1, Ordering::Relaxed);
            PURGED_BYTES.fetch_add(len as u64, Ordering::Relaxed);
        }
    }
}

/// Pages that may stay retained: the floor, or as many as were live at
/// most since the last decay step.
fn retain_budget() -> usize {
    if DECAY_NS.load(Ordering::Relaxed) == 0 {
        return 0;
    }
    (RETAIN_FLOOR / PAGE).max(PEAK_LIVE.load(Ordering::Relaxed))
}

/// Returns the live run `run..run + pages` to the free runs (never blocks).
fn free_run(run: usize, pages: usize) {
    LIVE_PAGES.fetch_sub(pages, Ordering::Relaxed);
    let filed = locked(|| {
        file(run, pages, RUN_DIRTY);
        let budget = retain_budget();
        if RETAINED_PAGES.load(Ordering::Relaxed) > budget {
            // Down to three quarters of the budget: no system call per free.
            purge_down_to(budget - budget / 4);
        }
    });
    if filed.is_none() {
        queue(run, pages);
    }
    if !DECAY_ARMED.swap(true, Ordering::SeqCst) {
        crate::engine::waiter::wake();
    }
}

/// Sets how long retained pages may stay idle before they go back to the
/// system (`HEAPPROF_DECAY_MS`); 0 gives every freed run back at once.
pub fn set_decay_ms(ms: u64) {
    DECAY_NS.store(ms.saturating_mul(1_000_000), Ordering::Relaxed);
}

/// Bytes of freed large runs kept for reuse that may be resident (an upper
/// bound: a run's pages never touched count too).
pub fn retained_bytes() -> usize {
    RETAINED_PAGES.load(Ordering::Relaxed) * PAGE
}

/// Free runs given back to the system so far, and their bytes.
pub fn purges() -> (u64, u64) {
    (
        PURGES.load(Ordering::Relaxed),
        PURGED_BYTES.load(Ordering::Relaxed),
    )
}

/// The decay, one step when due: retained pages that no allocation took
/// since the last step (the least retained since then) go back to the
/// system; steps are half the decay period apart, so pages idle for the
/// period are back within it. Called by the one thread that waits for
/// heapprof's wake-ups (the dumper or the watcher) each time it wakes,
/// which a free that retains pages while no step is scheduled wakes
/// ([`crate::engine::waiter`]). Returns the
/// nanoseconds until the next step, None while nothing is retained.
/// Atomics and raw system calls only.
pub fn decay_tick(now_ns: u64) -> Option<u64> {
    if RETAINED_PAGES.load(Ordering::SeqCst) == 0 && PENDING.is_empty() {
        DECAY_ARMED.store(false, Ordering::SeqCst);
        // A free that retained pages meanwhile saw the flag still set.
        if RETAINED_PAGES.load(Ordering::SeqCst) == 0 {
            NEXT_DECAY.store(0, Ordering::Relaxed);
            return None;
        }
        DECAY_ARMED.store(true, Ordering::SeqCst);
    }
    let step = (DECAY_NS.load(Ordering::Relaxed) / 2).max(1_000_000);
    let next = NEXT_DECAY.load(Ordering::Relaxed);
    if next == 0 {
        LOW_WATER.store(RETAINED_PAGES.load(Ordering::Relaxed), Ordering::Relaxed);
        NEXT_DECAY.store(now_ns + step, Ordering::Relaxed);
        return Some(step);
    }
    if now_ns < next {
        return Some(next - now_ns);
    }
    let stepped = locked(|| {
        let idle = LOW_WATER.load(Ordering::Relaxed);
        let retained = RETAINED_PAGES.load(Ordering::Relaxed);
        purge_down_to(retained - idle.min(retained));
        LOW_WATER.store(RETAINED_PAGES.load(Ordering::Relaxed), Ordering::Relaxed);
        PEAK_LIVE.store(LIVE_PAGES.load(Ordering::Relaxed), Ordering::Relaxed);
    });
    if stepped.is_none() {
        // Busy: soon again.
        return Some(10_000_000);
    }
    NEXT_DECAY.store(now_ns + step, Ordering::Relaxed);
    Some(step)
}

/// In a forked child (one thread): a parent thread caught holding the large
/// lock left the free runs half-changed, so the child forgets them (their
/// pages are then lost to the child only) and the lock is free again.
pub fn after_fork_child() {
    if LARGE_LOCK.load(Ordering::Relaxed) {
        for b in &BINS {
            b.store(0, Ordering::Relaxed);
        }
        for m in &BIN_MASK {
            m.store(0, Ordering::Relaxed);
        }
        RETAINED_PAGES.store(0, Ordering::Relaxed);
        LARGE_LOCK.store(false, Ordering::Release);
    }
    NEXT_DECAY.store(0, Ordering::Relaxed);
    DECAY_ARMED.store(false, Ordering::Relaxed);
}

/// Where an object lives: a small slot, or a large object's page.
#[derive(Clone, Copy)]
enum Place {
    Small { g: usize, class: usize },
    Large { q: usize },
}

/// Where `p` lives; `None` if neither (the prefix, or an address never
/// handed out).
fn place(p: *const u8) -> Option<Place> {
    let a = p as usize;
    let small = a.wrapping_sub(SMALL_BASE.load(Ordering::Relaxed));
    let spans = SMALL_SPANS.load(Ordering::Relaxed);
    if small < spans << SPAN_SHIFT {
        let span = small >> SPAN_SHIFT;
        let c = span_class(span).load(Ordering::Relaxed) as usize;
        if c == 0 {
            return None;
        }
        let index = (small & (SPAN - 1)) / small_size(c - 1);
        return Some(Place::Small {
            g: (span << SLOTS_SHIFT) | index,
            class: c - 1,
        });
    }
    let large = a.wrapping_sub(LARGE_BASE.load(Ordering::Relaxed));
    if large < LARGE_PAGES.load(Ordering::Relaxed) * PAGE {
        return Some(Place::Large { q: large / PAGE });
    }
    None
}

/// A live object of the heap, found by its address once ([`live`]): a free
/// reads its id, records it and gives the memory back without looking it
/// up again.
pub struct Object(Place);

/// The object at `p`, live or freed; `None` if `p` is no object of the
/// heap (the prefix, or an address never handed out).
#[inline]
fn object(p: *const u8) -> Option<Object> {
    place(p).map(Object)
}

/// The live object at `p` and its sample id (0: an unsampled block);
/// `None` if `p` is no object of the heap or was freed.
#[inline]
pub fn live(p: *const u8) -> Option<(Object, u64)> {
    let o = object(p)?;
    let id = o.id()?;
    Some((o, id))
}

impl Object {
    /// The word that holds its sample id.
    fn id_word(&self) -> &'static AtomicU64 {
        match self.0 {
            Place::Small { g, .. } => small_word(g),
            Place::Large { q } => &large_words(q)[0],
        }
    }

    /// Its sample id (0: an unsampled block); `None` if it was freed.
    #[inline]
    fn id(&self) -> Option<u64> {
        Some(self.id_word().load(Ordering::Relaxed)).filter(|id| id & FREE_BIT == 0)
    }

    /// Remembers that it is sample `id` (0: an unsampled block).
    #[inline]
    fn set_id(&self, id: u64) {
        self.id_word().store(id, Ordering::Relaxed);
    }

    /// Gives the live object back to the heap (see [`free`]). Taken by
    /// value: an `Object` is found live ([`live`]) and released once.
    pub fn release(self) {
        match self.0 {
            Place::Small { g, class } => {
                SMALL_FREE[class].push(g, |v| set_stack_link(small_word(g), v))
            }
            Place::Large { q } => {
                large_words(q)[0].store(FREE_BIT, Ordering::Relaxed);
                let info = large_words(q)[1].load(Ordering::Relaxed);
                let (pages, run) = ((info >> 32) as usize, (info & LOW) as usize);
                large_words(run)[0].store(FREE_BIT, Ordering::Relaxed);
                free_run(run, pages);
            }
        }
    }
}

/// Remembers that the live object at `p` is sample `id`.
pub fn set_id(p: *const u8, id: u64) {
    if let Some(o) = object(p) {
        o.set_id(id);
    }
}

/// The sample id of the live object at `p` (None if `p` is not one: the
/// prefix, or an object already freed). The ways in use [`live`].
#[cfg(test)]
fn id_of(p: *const u8) -> Option<u64> {
    live(p).map(|(_, id)| id)
}

/// Bytes usable at `p` (a live object of the heap): at least its size.
pub fn usable_size(p: *const u8) -> usize {
    match place(p) {
        Some(Place::Small { class, .. }) => small_size(class),
        Some(Place::Large { q }) => {
            let info = large_words(q)[1].load(Ordering::Relaxed);
            let (pages, run) = ((info >> 32) as usize, (info & LOW) as usize);
            (run + pages - q) * PAGE
        }
        None => 0,
    }
}

/// Keeps the live large object at `p` where it is as it shrinks to `size`
/// bytes (64 KiB or more), filing the whole pages after its new end as a
/// free run (retained, like any freed run) rather than copying it into a
/// smaller run: true if it is such an object. Its usable size shrinks to
/// its new last page (unless the free runs are busy: then it keeps them).
pub fn shrink_in_place(p: *const u8, size: usize) -> bool {
    let Some(Place::Large { q }) = place(p) else {
        return false;
    };
    if size < 64 << 10 {
        return false;
    }
    let info = large_words(q)[1].load(Ordering::Relaxed);
    let (pages, run) = ((info >> 32) as usize, (info & LOW) as usize);
    let keep = (q - run) + size.div_ceil(PAGE);
    if keep < pages {
        locked(|| {
            LIVE_PAGES.fetch_sub(pages - keep, Ordering::Relaxed);
            let info = ((keep as u64) << 32) | run as u64;
            for page in [run, q, run + keep - 1] {
                large_words(page)[1].store(info, Ordering::Relaxed);
            }
            file(run + keep, pages - keep, RUN_DIRTY);
        });
    }
    true
}

/// Grows the live object at `p` in place to at least `size` usable bytes
/// when the pages after its run are a free run holding enough (it takes
/// what it needs, the rest stays free) or when its run ends at the large
/// region's bump pointer (it takes fresh pages). True if the object now
/// holds `size` bytes; false when it cannot grow (a small slot, a live run
/// after it, the region or the limit full, the free runs busy), and the
/// caller moves it.
pub fn grow_in_place(p: *const u8, size: usize) -> bool {
    let Some(Place::Large { q }) = place(p) else {
        return false;
    };
    let info = large_words(q)[1].load(Ordering::Relaxed);
    let (have, run) = ((info >> 32) as usize, (info & LOW) as usize);
    let Some(need) = size
        .checked_next_multiple_of(PAGE)
        .map(|b| b / PAGE + (q - run))
    else {
        return false;
    };
    if need <= have {
        return true;
    }
    let (end, extra) = (run + have, need - have);
    let grown = locked(|| {
        let data = LARGE_BASE.load(Ordering::Relaxed) + end * PAGE;
        if free_run_at(end) {
            let (n, flags) = bin_remove(end);
            let committed = flags & RUN_DECOMMITTED == 0 || commit(data, n * PAGE);
            if committed && n >= extra {
                if n > extra {
                    bin_insert(end + extra, n - extra, flags & !RUN_DECOMMITTED);
                }
                return true;
            }
            // A free run up to the bump pointer: it and fresh pages after.
            if committed
                && PAGES_CARVED.load(Ordering::Acquire) == end + n
                && bump_at(end + n, extra - n)
            {
                return true;
            }
            bin_insert(end, n, flags);
            return false;
        }
        PAGES_CARVED.load(Ordering::Acquire) == end && bump_at(end, extra)
    });
    if grown != Some(true) {
        return false;
    }
    live_grew(extra);
    let info = ((need as u64) << 32) | run as u64;
    for page in [run, q, run + need - 1] {
        large_words(page)[1].store(info, Ordering::Relaxed);
    }
    true
}

/// Returns the live object at `p` to the heap. Anything else (the prefix,
/// an object already freed) is ignored. Never blocks, and makes no system
/// call unless the retained budget is passed.
pub fn free(p: *mut u8) {
    if let Some((o, _)) = live(p) {
        o.release();
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The heap is one per process: tests that count or reuse take turns.
    pub(crate) static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    fn small_classes_are_monotone_cover_and_waste_little() {
        assert_eq!(small_size(SMALL_CLASSES - 1), SMALL_MAX);
        for c in 1..SMALL_CLASSES {
            assert!(small_size(c) > small_size(c - 1));
            assert!(small_size(c) % 16 == 0);
        }
        for s in 1..=SMALL_MAX {
            let c = small_class(s);
            assert!(small_size(c) >= s, "size {s}");
            assert!(
                c == 0 || small_size(c - 1) < s,
                "size {s}: not the smallest"
            );
            assert!(
                small_size(c) - s < 16 || (small_size(c) - s) * 4 < s,
                "size {s}"
            );
        }
    }

    #[test]
    fn large_classes_are_monotone_and_cover() {
        for p in 1..100_000 {
            let c = large_class(p);
            assert!(large_pages(c) >= p && (c == 0 || large_pages(c - 1) < p));
        }
        assert!(large_class(1 << 21) < LARGE_CLASSES);
    }

    #[test]
    fn aligned_classes_exist_up_to_small_max() {
        for shift in 4..=14 {
            let a = 1usize << shift;
            for s in [1, a - 1, a, a + 1, 3 * a, SMALL_MAX] {
                if let Some(c) = small_class_for(s, a) {
                    assert!(small_size(c) >= s && small_size(c) % a == 0);
                } else {
                    assert!(s.next_multiple_of(a) > SMALL_MAX);
                }
            }
        }
    }

    #[test]
    fn objects_are_aligned_disjoint_and_reused() {
        let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let mut live: Vec<(usize, usize)> = Vec::new();
        for shift in 0..=20 {
            let align = 1usize << shift;
            for size in [1, 24, 100, 5000, 20_000, 70_000] {
                let p = alloc(size, align, true);
                assert!(!p.is_null() && contains(p));
                set_id(p, 1);
                assert_eq!(p as usize % align, 0, "size {size} align {align}");
                assert!(usable_size(p) >= size);
                // SAFETY: `size` zeroed bytes of our own.
                let bytes = unsafe { core::slice::from_raw_parts_mut(p, size) };
                assert!(bytes.iter().all(|&b| b == 0));
                bytes.fill(0xAB);
                live.push((p as usize, size));
            }
        }
        live.sort();
        for w in live.windows(2) {
            assert!(w[0].0 + w[0].1 <= w[1].0, "overlap");
        }
        let before = carved_bytes();
        for &(p, _) in &live {
            free(p as *mut u8);
        }
        for &(_, size) in &live {
            let p = alloc(size, 16, false);
            set_id(p, 2);
            free(p);
        }
        assert_eq!(carved_bytes(), before, "freed memory is reused");
    }

    #[test]
    fn a_large_object_at_the_end_grows_in_place_and_no_other() {
        let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        // Sizes of classes no other test uses: each is carved at the end.
        let (mb3, mb5) = (3 << 20, 5 << 20);
        let p = alloc(mb3, 16, false);
        set_id(p, 21);
        // SAFETY: `mb3` bytes of our own.
        unsafe { core::slice::from_raw_parts_mut(p, mb3) }.fill(0x5A);
        assert!(grow_in_place(p, mb3 + PAGE + 1));
        assert!(usable_size(p) > mb3 + PAGE);
        // SAFETY: the grown object holds what it held.
        let held = unsafe { core::slice::from_raw_parts(p, mb3) };
        assert!(held.iter().all(|&b| b == 0x5A), "contents kept");
        assert!(grow_in_place(p, 16), "a size that fits");
        let q = alloc(mb5, 16, false);
        set_id(q, 22);
        assert!(!grow_in_place(p, 2 * mb3), "another run follows it");
        assert!(grow_in_place(q, 2 * mb5));
        assert!(usable_size(q) >= 2 * mb5);
        // SAFETY: the whole grown object is writable.
        unsafe { core::ptr::write_bytes(q, 1, 2 * mb5) };
        let s = alloc(100, 16, false);
        set_id(s, 23);
        assert!(!grow_in_place(s, 200), "a small slot never grows");
        for x in [p, q, s] {
            free(x);
        }
    }

    #[test]
    fn ids_are_kept_per_object_from_any_thread() {
        let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let hs: Vec<_> = (0..4u64)
            .map(|t| {
                std::thread::spawn(move || {
                    for round in 0..200u64 {
                        let objs: Vec<(usize, u64)> = (0..50u64)
                            .map(|i| {
                                let p = alloc(16 + (i as usize % 7) * 300, 16, false);
                                let id = (t << 40) | (round << 20) | i;
                                set_id(p, id);
                                (p as usize, id)
                            })
                            .collect();
                        for (p, id) in objs {
                            assert_eq!(id_of(p as *const u8), Some(id));
                            free(p as *mut u8);
                        }
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
    }

    #[test]
    fn a_second_free_is_ignored() {
        let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        for size in [40, 100_000] {
            let p = alloc(size, 16, false);
            set_id(p, 9);
            free(p);
            assert_eq!(id_of(p), None);
            free(p);
            let a = alloc(size, 16, false);
            let b = alloc(size, 16, false);
            assert_ne!(a, b, "size {size}: one slot handed out twice");
            set_id(a, 10);
            set_id(b, 11);
            free(a);
            free(b);
        }
    }

    #[test]
    fn freed_large_runs_coalesce_and_are_reused_resident() {
        let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        // Three neighbours freed out of order make one run that holds an
        // object of their total size: nothing new is carved.
        let sizes = [300 << 10, 500 << 10, 700 << 10];
        let ps: Vec<*mut u8> = sizes.iter().map(|&n| alloc(n, 16, false)).collect();
        for (i, &p) in ps.iter().enumerate() {
            set_id(p, 30 + i as u64);
            // SAFETY: the object's bytes, ours.
            unsafe { core::ptr::write_bytes(p, 0x77, sizes[i]) };
        }
        let before = carved_bytes();
        for i in [2, 0, 1] {
            free(ps[i]);
        }
        assert!(retained_bytes() >= 1500 << 10, "kept resident");
        let whole = alloc(1500 << 10, 16, true);
        set_id(whole, 40);
        assert_eq!(carved_bytes(), before, "served from the coalesced runs");
        // SAFETY: 1500 KiB of our own, zeroed as asked.
        let bytes = unsafe { core::slice::from_raw_parts(whole, 1500 << 10) };
        assert!(
            bytes.iter().all(|&b| b == 0),
            "calloc of a dirty run is zeroed"
        );
        free(whole);
    }

    // Both measure the heap's global counters (carved, retained, purged):
    // other tests' runs and decay state make them wrong in a shared
    // process, so each runs alone, in a process of its own (`.ci/run`:
    // `cargo test -p heapprof --lib -- --ignored --exact NAME`).
    #[test]
    #[ignore = "needs a fresh sample heap: run alone, as .ci/run does"]
    fn large_runs_churned_from_threads_stay_disjoint_and_bounded() {
        let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        assert!(reserve());
        let before = carved_bytes();
        let hs: Vec<_> = (0..4u64)
            .map(|t| {
                std::thread::spawn(move || {
                    let mut x = t + 1;
                    for round in 0..400u64 {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let n = (64 << 10) + (x as usize % (1 << 20));
                        let p = alloc(n, 16, false);
                        set_id(p, (t << 40) | (round + 1));
                        // SAFETY: the object's bytes, ours.
                        let b = unsafe { core::slice::from_raw_parts_mut(p, n) };
                        b[0] = t as u8;
                        b[n - 1] = t as u8;
                        if round % 3 == 0 {
                            assert!(grow_in_place(p, 2 * n) || usable_size(p) >= n);
                        }
                        std::thread::yield_now();
                        assert_eq!((b[0], b[n - 1]), (t as u8, t as u8), "overlap");
                        assert_eq!(id_of(p), Some((t << 40) | (round + 1)));
                        free(p);
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        assert!(
            carved_bytes() - before < 64 << 20,
            "churn reuses freed runs: {} carved",
            carved_bytes() - before
        );
    }

    #[test]
    #[ignore = "needs a fresh sample heap: run alone, as .ci/run does"]
    fn the_decay_gives_idle_retained_runs_back() {
        let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        assert!(reserve());
        let p = alloc(2 << 20, 16, false);
        set_id(p, 50);
        free(p);
        assert!(retained_bytes() > 0);
        set_decay_ms(10);
        let (purges_before, _) = purges();
        let mut now = 1 << 40;
        for _ in 0..4 {
            decay_tick(now);
            now += 10_000_000;
        }
        set_decay_ms(10_000);
        assert_eq!(retained_bytes(), 0);
        assert!(purges().0 > purges_before);
        // A purged run is served again, readable and zeroed.
        let q = alloc(2 << 20, 16, true);
        set_id(q, 51);
        // SAFETY: 2 MiB of our own.
        assert!(unsafe { core::slice::from_raw_parts(q, 2 << 20) }
            .iter()
            .all(|&b| b == 0));
        free(q);
    }

    #[test]
    #[ignore = "needs a fresh sample heap: run alone, as .ci/run does"]
    fn a_freed_run_beside_one_given_back_counts_only_its_own_pages() {
        let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        assert!(reserve());
        // Three runs side by side in a fresh heap: 8 MiB, 1 MiB, a guard.
        let big = alloc(8 << 20, 16, false);
        let small = alloc(1 << 20, 16, false);
        let guard = alloc(1 << 20, 16, false);
        for (i, p) in [big, small, guard].into_iter().enumerate() {
            set_id(p, 60 + i as u64);
        }
        assert_eq!(small as usize, big as usize + (8 << 20), "side by side");
        // The 8 MiB given back at once (no retention), then 1 MiB freed
        // beside it and retained.
        set_decay_ms(0);
        free(big);
        assert_eq!(retained_bytes(), 0);
        set_decay_ms(10_000);
        free(small);
        assert_eq!(
            retained_bytes(),
            1 << 20,
            "only the resident pages just freed are retained"
        );
        free(guard);
    }

    #[test]
    fn nothing_outside_is_in_range() {
        assert!(reserve());
        let x = 5u64;
        assert!(!contains(&x as *const u64 as *const u8));
        assert!(!contains(core::ptr::null()));
        let b = Box::new(1u8);
        assert!(!contains(&*b));
    }
}

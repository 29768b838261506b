//! Per-thread record buffers: how the sampled path hands records to the
//! aggregator without a lock.
//!
//! Each thread writes into its own [`Buffer`], a single-producer,
//! single-consumer queue of `u64` words made of fixed-size chunks linked in
//! order. The producer (the owning thread) appends a whole record — copied
//! ([`push`]), or written in place into room taken for the longest it can
//! be ([`reserve`], [`commit`]) — then publishes the chunk's new length with
//! `Release`; when a record does not fit it maps a new chunk and links it
//! with `Release`. The consumer (the
//! aggregator, under its own lock) reads up to the published length with
//! `Acquire`, and unmaps a chunk once it has read it to the end and a successor
//! exists (the producer never returns to a chunk that has a successor).
//!
//! A chunk read to the end is kept as the buffer's one spare (the previous
//! spare, if any, is unmapped), which the producer takes before it maps a
//! new one: a thread that records steadily reuses the same two or three
//! chunks instead of faulting fresh pages in for every 64 KiB of records.
//! Both sides only ever swap the spare, so neither can take a chunk the
//! other still uses.
//!
//! Buffers come from `mmap`, never from the profiled allocator, and are pushed
//! onto a global lock-free list that is never shortened, so the aggregator can
//! always reach every buffer. A thread that exits releases its buffer (from a
//! pthread key destructor) with whatever records it still holds; the next new
//! thread may adopt it and append after them. No record is ever lost with its
//! thread. If mapping memory fails the record is dropped and counted.

use core::cell::UnsafeCell;
use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};

use crate::os;

const CHUNK_BYTES: usize = 64 * 1024;
const HEADER_WORDS: usize = 2;
/// Words of payload in one chunk.
pub const CHUNK_WORDS: usize = CHUNK_BYTES / 8 - HEADER_WORDS;

#[repr(C)]
struct Chunk {
    next: AtomicPtr<Chunk>,
    len: AtomicUsize,
    words: [u64; CHUNK_WORDS],
}

/// One thread's queue of records.
pub struct Buffer {
    /// Next buffer in the global list (immutable once pushed).
    next: *mut Buffer,
    /// Whether a live thread owns (produces into) this buffer.
    owned: AtomicBool,
    /// Producer side: the chunk being written.
    tail: UnsafeCell<*mut Chunk>,
    /// Consumer side: the chunk being read and the position in it.
    head: UnsafeCell<*mut Chunk>,
    read: UnsafeCell<usize>,
    /// A chunk read to the end, empty again, for the producer's next one.
    spare: AtomicPtr<Chunk>,
    /// Producer side: chunks begun after the first.
    begun: UnsafeCell<usize>,
    /// Consumer side: chunks read to the end and let go.
    done: AtomicUsize,
}

static BUFFERS: AtomicPtr<Buffer> = AtomicPtr::new(ptr::null_mut());
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Records that could not be stored because memory could not be mapped.
pub fn dropped_records() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

fn new_chunk() -> *mut Chunk {
    // Zeroed memory is a valid empty chunk (null next, len 0).
    os::map(core::mem::size_of::<Chunk>()).cast()
}

/// Finds a buffer no thread owns, or maps a new one, and takes ownership.
/// Returns null when memory is exhausted.
pub fn acquire() -> *mut Buffer {
    let mut b = BUFFERS.load(Ordering::Acquire);
    while !b.is_null() {
        // SAFETY: buffers in the list are never unmapped.
        let buf = unsafe { &*b };
        if !buf.owned.load(Ordering::Relaxed)
            && buf
                .owned
                .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        {
            return b;
        }
        b = buf.next;
    }
    let mem = os::map(core::mem::size_of::<Buffer>());
    let chunk = new_chunk();
    if mem.is_null() || chunk.is_null() {
        return ptr::null_mut();
    }
    let b = mem.cast::<Buffer>();
    // SAFETY: fresh mapping, large enough and aligned for a Buffer.
    unsafe {
        b.write(Buffer {
            next: ptr::null_mut(),
            owned: AtomicBool::new(true),
            tail: UnsafeCell::new(chunk),
            head: UnsafeCell::new(chunk),
            read: UnsafeCell::new(0),
            spare: AtomicPtr::new(ptr::null_mut()),
            begun: UnsafeCell::new(0),
            done: AtomicUsize::new(0),
        });
    }
    let mut head = BUFFERS.load(Ordering::Relaxed);
    loop {
        // SAFETY: `b` is not yet shared, so writing `next` is exclusive.
        unsafe { (*b).next = head };
        match BUFFERS.compare_exchange_weak(head, b, Ordering::Release, Ordering::Relaxed) {
            Ok(_) => return b,
            Err(h) => head = h,
        }
    }
}

/// Gives the buffer up; its unread records stay and are drained later.
///
/// # Safety
/// The calling thread must own `b` and not write into it afterwards.
pub unsafe fn release(b: *mut Buffer) {
    // SAFETY: per the contract `b` came from `acquire`, so it is valid.
    unsafe { &*b }.owned.store(false, Ordering::Release);
}

/// Appends one record. Returns whether the buffer now holds a full chunk:
/// the record began a new one, or none could be mapped (the record is then
/// dropped, and counted), so that a caller draining its own buffer
/// ([`crate::engine::set_self_drain`]) knows when to.
///
/// # Safety
/// The calling thread must own `b`; `record.len() <= CHUNK_WORDS`.
pub unsafe fn push(b: *mut Buffer, record: &[u64]) -> bool {
    // SAFETY: the caller owns `b` and the record fits a chunk (its contract).
    let (words, new) = unsafe { reserve(b, record.len()) };
    if words.is_null() {
        return true;
    }
    // SAFETY: `reserve` gave `record.len()` words that are ours alone.
    unsafe {
        ptr::copy_nonoverlapping(record.as_ptr(), words, record.len());
        commit(b, record.len());
    }
    new
}

/// Room for a record of up to `max` words, contiguous, at the end of the
/// buffer: the producer writes it in place, then publishes the words it
/// used with [`commit`]. Returns the room's first word and whether it
/// began a new chunk (the previous one is then full); a null pointer (and
/// `true`) when no chunk could be mapped: the record is dropped, and
/// counted.
///
/// # Safety
/// The calling thread must own `b`; `max <= CHUNK_WORDS`.
pub unsafe fn reserve(b: *mut Buffer, max: usize) -> (*mut u64, bool) {
    // SAFETY: the caller owns the buffer, so the producer fields are ours.
    let buf = unsafe { &*b };
    // SAFETY: only the owning thread touches `tail`.
    let tail = unsafe { &mut *buf.tail.get() };
    // SAFETY: chunks reachable from a buffer stay mapped until consumed past.
    let mut chunk = unsafe { &**tail };
    let mut len = chunk.len.load(Ordering::Relaxed);
    let mut new = false;
    if len + max > CHUNK_WORDS {
        // The consumer emptied the spare before publishing it (Acquire).
        let spare = buf.spare.swap(ptr::null_mut(), Ordering::Acquire);
        let fresh = if spare.is_null() { new_chunk() } else { spare };
        if fresh.is_null() {
            DROPPED.fetch_add(1, Ordering::Relaxed);
            return (ptr::null_mut(), true);
        }
        chunk.next.store(fresh, Ordering::Release);
        *tail = fresh;
        // SAFETY: only the owning thread touches `begun`.
        unsafe { *buf.begun.get() += 1 };
        // SAFETY: just mapped.
        chunk = unsafe { &*fresh };
        len = 0;
        new = true;
    }
    let words = chunk.words.as_ptr() as *mut u64;
    // SAFETY: len + max <= CHUNK_WORDS; the consumer reads only below the
    // published `len`, so the words from `len` on are ours alone.
    (unsafe { words.add(len) }, new)
}

/// Publishes `used` words written into the room [`reserve`] gave.
///
/// # Safety
/// The calling thread must own `b`, have called [`reserve`] for at least
/// `used` words since its last `commit`, and have written them.
pub unsafe fn commit(b: *mut Buffer, used: usize) {
    // SAFETY: the caller owns the buffer; `tail` is the chunk `reserve`
    // gave room in (only `reserve` moves it).
    let chunk = unsafe { &**(*b).tail.get() };
    let len = chunk.len.load(Ordering::Relaxed);
    chunk.len.store(len + used, Ordering::Release);
}

/// Chunks of records in `b` that no drain has read to the end yet, besides
/// the one being written.
///
/// # Safety
/// The calling thread must own `b`.
pub unsafe fn backlog(b: *mut Buffer) -> usize {
    // SAFETY: the caller owns the buffer, so the producer fields are ours.
    let buf = unsafe { &*b };
    // SAFETY: only the owning thread touches `begun`.
    let begun = unsafe { *buf.begun.get() };
    begun.wrapping_sub(buf.done.load(Ordering::Relaxed))
}

/// Calls `f` with every published word range of every buffer, oldest first
/// within each buffer, and frees chunks read to the end.
///
/// # Safety
/// Only one consumer may drain at a time (the aggregator's lock), and records
/// must never straddle chunks (guaranteed by [`push`]).
pub unsafe fn drain_all(mut f: impl FnMut(&[u64])) {
    let mut b = BUFFERS.load(Ordering::Acquire);
    while !b.is_null() {
        // SAFETY: buffers are never unmapped once published in BUFFERS.
        let buf = unsafe { &*b };
        // SAFETY: the consumer fields are touched only by the one drainer
        // (this call, under the aggregator's lock), never by a producer.
        let head = unsafe { &mut *buf.head.get() };
        // SAFETY: as `head`: a consumer field, and we are the one consumer.
        let read = unsafe { &mut *buf.read.get() };
        // Only the chunks that exist now: a producer that fills chunks as
        // fast as they are read must not keep the aggregator here (holding
        // its lock, which fork and dumps wait for) for ever.
        let mut last = *head;
        loop {
            // SAFETY: chunks after the head stay mapped until consumed.
            let next = unsafe { &*last }.next.load(Ordering::Acquire);
            if next.is_null() {
                break;
            }
            last = next;
        }
        loop {
            // SAFETY: the head chunk stays mapped until we unmap it here.
            let chunk = unsafe { &**head };
            let next = chunk.next.load(Ordering::Acquire);
            // Read len after next: once a successor exists, len is final.
            let len = chunk.len.load(Ordering::Acquire);
            if len > *read {
                // SAFETY: words below the published len were fully written
                // (Release/Acquire on len) and are never written again.
                let words = unsafe {
                    core::slice::from_raw_parts(chunk.words.as_ptr().add(*read), len - *read)
                };
                f(words);
                *read = len;
            }
            if next.is_null() || *head == last {
                break;
            }
            let done = *head;
            *head = next;
            *read = 0;
            // The producer moved on to `next` and never returns; the
            // consumer has read everything; nobody else holds `done`: it
            // becomes the spare, emptied first.
            // SAFETY: `done` stays mapped (it was never unmapped).
            let d = unsafe { &*done };
            d.next.store(ptr::null_mut(), Ordering::Relaxed);
            d.len.store(0, Ordering::Relaxed);
            let old = buf.spare.swap(done, Ordering::Release);
            buf.done.fetch_add(1, Ordering::Relaxed);
            if !old.is_null() {
                // SAFETY: a spare swapped out is nobody's: the producer only
                // takes the spare by swapping it out itself.
                unsafe { os::unmap(old.cast(), core::mem::size_of::<Chunk>()) };
            }
        }
        b = buf.next;
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)]
mod tests {
    use super::*;

    /// Records made in place: unseen until committed, then read whole and
    /// in order, across a chunk that lacked room for the largest one.
    #[test]
    fn records_made_in_place_are_read_once_committed() {
        let b = acquire();
        assert!(!b.is_null());
        const MARK: u64 = 0x5eed_0000_0000_0000;
        let mine = |words: &[u64], got: &mut Vec<u64>| {
            got.extend(words.iter().filter(|&&w| w & 0xffff_0000_0000_0000 == MARK));
        };
        let mut got = Vec::new();
        let mut began = 0;
        for i in 0..3 * CHUNK_WORDS as u64 / 100 {
            // SAFETY: this thread owns `b`; 200 words fit a chunk.
            let (room, new) = unsafe { reserve(b, 200) };
            assert!(!room.is_null());
            began += usize::from(new);
            // SAFETY: `reserve` gave 200 words; 100 are written.
            unsafe {
                for k in 0..100 {
                    room.add(k).write(MARK | i << 8 | k as u64);
                }
            }
            if i == 5 {
                // SAFETY: the only drain in this test, nothing else drains.
                unsafe { drain_all(|w| mine(w, &mut got)) };
                assert_eq!(got.len(), 5 * 100, "the uncommitted record is unseen");
            }
            // SAFETY: the 100 words were written into the room.
            unsafe { commit(b, 100) };
        }
        // SAFETY: as above.
        unsafe { drain_all(|w| mine(w, &mut got)) };
        let want: Vec<u64> = (0..3 * CHUNK_WORDS as u64 / 100)
            .flat_map(|i| (0..100).map(move |k| MARK | i << 8 | k))
            .collect();
        assert_eq!(got, want);
        assert!(began >= 3, "{began} chunks begun");
        // SAFETY: this thread owns `b` and writes no more.
        unsafe { release(b) };
    }
}

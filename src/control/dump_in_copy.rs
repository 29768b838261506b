//! A dump written by a copy of the process, for the watcher
//! ([`crate::control::watcher`]), which can neither allocate nor touch the
//! main thread's thread-local state, and so cannot dump itself.
//!
//! [`run`] makes the copy (`crate::profile::forked_copy`); in the copy,
//! `dump_in_copy` writes the profile as any dump does, then a report through
//! the copy's pipe: whether a profile was written, the sequence number
//! reached, the dumps written raw or skipped for want of memory, and the
//! error line if it failed. The copy's own state is gone with it, so the
//! watcher applies the report here: the numbering moves on, the low-memory
//! counts are added, and an error is printed unless it is the one printed
//! last. A copy that found one of heapprof's locks held (the program's
//! thread was draining its buffer: [`crate::engine::arena_in_copy::lock`]) is
//! made again a few milliseconds later.
//!
//! A dump is never lost to a copy that failed otherwise (one whose pipe a
//! library closed under the watcher, say): it is tried again twice, after a
//! short and a longer gap, then deferred. A deferred dump is made at the
//! watcher's next wake-up (within a second), or in-process by the dumper
//! thread when the program creates a thread, or by the exit handler,
//! whichever comes first. The profile comment counts the dumps that needed
//! this (`dump_fallbacks=`).

use core::sync::atomic::Ordering;

use crate::control::dump_errors::DumpError;
use crate::engine::thread_state;
use crate::os::raw;
use crate::profile::dump::Trigger;

/// What a copy of the process reports back after a dump for the watcher:
/// the words of the header ([`REPORT_WORDS`] `u64`s: magic, profile
/// written, the sequence number reached, dumps written raw and skipped for
/// want of memory, the error's key and the length of its line), then the
/// error line (see [`crate::control::dump_errors`]).
const REPORT_MAGIC: u64 = 0x4850_5250_0000_0003;
const REPORT_WORDS: usize = 7;
const REPORT_BYTES: usize = REPORT_WORDS * 8;

/// Gaps before the copies made again after one that failed for another
/// reason than a held lock (a descriptor closed under the watcher, a
/// process slot missing for a moment): each gap is longer.
const RETRY_GAPS_NS: [u64; 2] = [20_000_000, 200_000_000];

/// A dump no copy could make, kept for whoever can make it next: the
/// watcher at its next wake-up ([`deferred`]), the dumper thread when it
/// takes over, or the exit ([`take_deferred`]).
/// What the dump being made is for, read in the copy (an index into
/// [`Trigger::ALL`]).
static TRIGGER: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);
/// The copy writes the peak profile, not a numbered dump ([`run_peak`]).
static PEAK_MODE: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);
/// Whether the last copy's report said it wrote its file.
static LAST_WROTE: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);
static DEFERRED: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Has a copy of the process write the next profile, and moves this
/// process's state on by its report. A copy that found one of heapprof's
/// locks held (the program's thread was draining its buffer) is made again
/// a few milliseconds later; one that failed otherwise, after
/// [`RETRY_GAPS_NS`]; if none succeeds the dump is deferred (see
/// [`DEFERRED`]), never lost. Every dump that needed more than the first
/// series of copies is counted (`dump_fallbacks=` in the profile comment).
/// Raw system calls and atomics only.
pub fn run(trigger: Trigger) {
    TRIGGER.store(trigger as usize, Ordering::Relaxed);
    // A deferred dump stays deferred until a copy has made it, so that the
    // exit handler or the dumper thread can still take it meanwhile.
    let retrying = DEFERRED.load(Ordering::Acquire);
    let gaps: &[u64] = if retrying { &[] } else { &RETRY_GAPS_NS };
    for (round, &gap) in core::iter::once(&0).chain(gaps).enumerate() {
        if round > 0 {
            if round == 1 {
                // Counted before the copy is made, so the profile it
                // writes counts itself.
                crate::engine::pressure::dump_fallback();
            }
            raw::sleep_ns(gap);
        }
        if attempt() {
            DEFERRED.store(false, Ordering::Release);
            return;
        }
    }
    if !retrying {
        DEFERRED.store(true, Ordering::Release);
        const LINE: &[u8] = b"heapprof: a dump could not be made in a copy of the process; it is kept for the next wake-up, the dumper thread or the exit";
        const KEY: u64 = crate::control::dump_errors::fnv(LINE);
        crate::control::dump_errors::say_once(KEY, LINE);
    }
}

/// Has a copy of the process write the heap as it is now as the peak
/// profile (`crate::control::peak::write_now`); whether it was written.
/// Never deferred: the next peak writes it again. Raw system calls and
/// atomics only.
pub fn run_peak() -> bool {
    PEAK_MODE.store(true, Ordering::Release);
    let wrote = attempt() && LAST_WROTE.load(Ordering::Acquire);
    PEAK_MODE.store(false, Ordering::Release);
    wrote
}

/// Whether a dump is deferred (the watcher then wakes soon to retry it).
pub fn deferred() -> bool {
    DEFERRED.load(Ordering::Acquire)
}

/// Takes the deferred dump, if any, for a caller that dumps in-process
/// (the dumper thread starting, the exit handler).
pub fn take_deferred() -> bool {
    DEFERRED.swap(false, Ordering::AcqRel)
}

/// One series of copies: true if one wrote its report (whether or not the
/// dump itself succeeded, which the report says).
fn attempt() -> bool {
    let mut buf = [0u8; 4096];
    for attempt in 0..20 {
        if attempt > 0 {
            raw::sleep_ns(5_000_000);
        }
        // No copy for want of a process slot: tried again shortly too.
        let Some((pid, fd)) = crate::profile::forked_copy::start(dump_in_copy) else {
            continue;
        };
        let mut len = 0usize;
        let ended = crate::profile::forked_copy::finish(pid, fd, |bytes| {
            let end = len.saturating_add(bytes.len());
            let Some(room) = buf.get_mut(len..end) else {
                return false;
            };
            room.copy_from_slice(bytes);
            len = end;
            true
        });
        let trailer = crate::profile::forked_copy::TRAILER;
        let got = buf.get(..len).unwrap_or_default();
        if ended.complete && got.strip_suffix(trailer).is_some_and(apply_report) {
            return true;
        }
        if ended.status != Some(crate::engine::arena_in_copy::LOCK_HELD) {
            return false;
        }
    }
    false
}

/// Moves the process's state on by what the copy reports; false if the
/// report is not one.
fn apply_report(bytes: &[u8]) -> bool {
    let mut h = [0u64; REPORT_WORDS];
    let mut words = bytes.chunks_exact(8);
    for w in h.iter_mut() {
        match words.next() {
            Some(b) => *w = u64::from_le_bytes(b.try_into().unwrap_or_default()),
            None => return false,
        }
    }
    let [magic, wrote, seq, raw_dumps, skipped, err_key, err_len] = h;
    let err = bytes.get(REPORT_BYTES..).unwrap_or_default();
    if magic != REPORT_MAGIC || err_len as usize != err.len() {
        return false;
    }
    crate::profile::output::advance_sequence(seq);
    crate::engine::pressure::add_degraded(raw_dumps, skipped);
    LAST_WROTE.store(wrote != 0, Ordering::Release);
    if wrote != 0 {
        crate::control::dump_errors::cleared();
    }
    if !err.is_empty() {
        crate::control::dump_errors::say_once(err_key, err);
    }
    true
}

/// In the copy: the dump, and the report the watcher reads back.
fn dump_in_copy(sink: &mut crate::profile::forked_copy::Sink) {
    let _busy = thread_state::current().enter();
    let (raw0, skipped0) = crate::engine::pressure::dumps_degraded();
    let written = if PEAK_MODE.load(Ordering::Acquire) {
        crate::control::peak::write_now()
    } else {
        crate::control::triggers::try_dump(
            Trigger::from_index(TRIGGER.load(Ordering::Relaxed)).unwrap_or(Trigger::Signal),
        )
    };
    let (wrote, err) = match written {
        Ok(p) => (p.is_some(), DumpError::other(String::new())),
        Err(e) => (false, e),
    };
    let (raw1, skipped1) = crate::engine::pressure::dumps_degraded();
    let header = [
        REPORT_MAGIC,
        wrote as u64,
        crate::profile::output::sequence(),
        raw1.wrapping_sub(raw0),
        skipped1.wrapping_sub(skipped0),
        err.key,
        err.line.len() as u64,
    ];
    for w in header {
        sink.write(&w.to_le_bytes());
    }
    sink.write(err.line.as_bytes());
}

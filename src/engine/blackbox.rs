//! The black box: the live samples kept in a shared file mapping, so a heap
//! profile of the moment of death can be recovered after a `SIGKILL` (the
//! kernel's OOM killer), which leaves no chance to dump.
//!
//! # Model
//! The control layer creates the file (`DIR/heapprof.PID.blackbox`),
//! reserves its space, maps it `MAP_SHARED` and hands the mapping to the
//! engine ([`install`]). Stores into such a mapping land in the page cache
//! at once: when the process dies, however it dies, the file holds what the
//! last store left. The engine touches it only on the sampled path: a
//! sampled allocation writes a slot ([`record`]), the free of a sample
//! clears it ([`forget`]). Nothing else on the hot paths changes.
//!
//! # Format
//! Native-endian 64-bit words (a black box is read on the machine, or at
//! least the architecture, that wrote it):
//!
//! | part | bytes | what |
//! |---|---|---|
//! | header | 4096 | the `H_*` words below |
//! | keys | 8 × slots, page-rounded | one word per slot: its state |
//! | slots | [`SLOT_BYTES`] × slots, page-rounded | one live sample each |
//! | mappings | 2 × [`MAPS_BYTES`] | two copies of the executable mappings |
//! | label sets | [`LABELS_BYTES`] | the heap label sets, appended as made |
//!
//! A key is 0 (empty), `id` (claimed: being written, or a writer killed
//! mid-write) or `id | COMMITTED` (a complete live sample). A slot holds
//! the requested size, the sampling rate, the monotonic allocation time,
//! the stack depth, and up to [`SLOT_FRAMES`] return addresses, innermost
//! first (a deeper stack keeps its innermost frames; the depth word says how
//! many there were). The mappings are written by the control layer, off the
//! sampled path, into the copy not named by `H_MAPS_CURRENT`, which is then
//! switched to it. A slot's label word names a label set, written once to
//! the label sets ([`note_label_set`]) when the set is first made: a
//! record of one word, `bytes << 32 | id`, then `pairs: u32`, and each key
//! and value as `len: u32` and its bytes, padded to 8.
//!
//! **Why a stack per slot** rather than a table of interned stacks: a slot
//! is then self-contained, so one word decides whether it is complete, a
//! free needs no reference count, and nothing shared can fill up with
//! stacks of samples long freed. The price is file size (512 bytes per
//! slot), which is page cache and disk, and only the slots written are ever
//! touched.
//!
//! **Finding a slot.** Slots are an open-addressed table keyed by the
//! sample's id: a sample may use any empty slot among the [`PROBE`] from
//! its id's hash (a compare-and-swap of its key from 0 claims it), and its
//! free looks at those same slots for its key. A sample that finds none
//! empty is counted in `H_OVERFLOW` and left out.
//!
//! # Write ordering: what a reader sees after a kill at any instruction
//! - A writer claims a key (0 → `id`, `AcqRel` CAS), writes the slot, then
//!   stores `id | COMMITTED` with `Release`. Killed before the CAS: the slot
//!   is empty; after it and before the commit: the key says "claimed", and
//!   the reader counts the sample as in flight and skips it; after the
//!   commit: the slot is complete. A slot's words are written only while its
//!   key is claimed by the writer, so a committed slot is never torn.
//! - A free stores 0 into its committed key (`Release`): killed before that
//!   store, the sample is still live in the file (it was, a moment before).
//! - At rate 1 the file is therefore exact up to the allocations and frees
//!   in flight at the kill (at most one per thread).
//! - The mappings switch is one word naming a copy fully written before it.
//! - A label-set record's first word is stored last (`Release`), after its
//!   bytes: a reader walks records until a zero word, so a record cut by
//!   the kill ends the walk (the last one made; sets are made one at a
//!   time, under the label interner's lock).
//!
//! # Limits
//! The page cache survives the death of the process, not of the machine: a
//! kernel crash or power loss keeps only what writeback reached the disk
//! (slots may then be stale or mixed; nothing here syncs). A forked child
//! gets its own file from the control layer, filled from the child's own
//! copy of the engine's live samples ([`record_into`]); the mapping must
//! never be written by two processes.

use core::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};

/// First header word: "HPBLKBX1".
pub const MAGIC: u64 = u64::from_le_bytes(*b"HPBLKBX1");
pub const VERSION: u64 = 2;
/// Bytes of the header.
pub const HEADER_BYTES: usize = 4096;
/// Return addresses kept per slot.
pub const SLOT_FRAMES: usize = 60;
/// Words before the frames in a slot.
pub const SLOT_HEADER_WORDS: usize = 4;
pub const SLOT_WORDS: usize = SLOT_HEADER_WORDS + SLOT_FRAMES;
pub const SLOT_BYTES: usize = SLOT_WORDS * 8;
/// Bytes of each of the two copies of the mappings.
pub const MAPS_BYTES: usize = 256 << 10;
/// Bytes for the label sets.
pub const LABELS_BYTES: usize = 256 << 10;
/// Slots a sample may use, from its id's hash on.
pub const PROBE: usize = 64;
/// Key bit: the slot is complete.
pub const COMMITTED: u64 = 1 << 63;

/// Header word indexes.
pub const H_MAGIC: usize = 0;
pub const H_VERSION: usize = 1;
pub const H_SLOTS: usize = 2;
pub const H_SLOT_FRAMES: usize = 3;
pub const H_PID: usize = 4;
pub const H_START_MONO_NS: usize = 5;
pub const H_START_UNIX_NS: usize = 6;
pub const H_RATE: usize = 7;
/// Samples left out because their slots were taken.
pub const H_OVERFLOW: usize = 8;
/// Monotonic time the control layer last said the process was alive.
pub const H_HEARTBEAT_NS: usize = 9;
/// 0: no mappings yet; else `copy (1 or 2) | bytes << 8`.
pub const H_MAPS_CURRENT: usize = 10;
/// The process's start time in clock ticks (`/proc/PID/stat` field 22):
/// with the pid, names the process across `exec`.
pub const H_PROC_START: usize = 11;
/// 1 once the process has exited normally (a kept file).
pub const H_EXITED: usize = 12;
/// Bytes of label-set records written.
pub const H_LABELS_USED: usize = 13;
/// Label sets left out: the space for them was full.
pub const H_LABELS_LOST: usize = 14;

/// Byte offset of the keys.
pub const fn keys_offset() -> usize {
    HEADER_BYTES
}

/// Byte offset of the slots in a file of `slots` slots.
pub const fn slots_offset(slots: usize) -> usize {
    HEADER_BYTES + (slots * 8).next_multiple_of(4096)
}

/// Byte offset of mappings copy `copy` (1 or 2).
pub const fn maps_offset(slots: usize, copy: usize) -> usize {
    slots_offset(slots) + (slots * SLOT_BYTES).next_multiple_of(4096) + (copy - 1) * MAPS_BYTES
}

/// Byte offset of the label sets.
pub const fn labels_offset(slots: usize) -> usize {
    maps_offset(slots, 2) + MAPS_BYTES
}

/// Size of a file of `slots` slots.
pub const fn file_len(slots: usize) -> usize {
    labels_offset(slots) + LABELS_BYTES
}

/// The first of the [`PROBE`] slots of sample `id`.
#[inline]
pub fn home(id: u64, slots: usize) -> usize {
    ((u128::from(id.wrapping_mul(0x9E37_79B9_7F4A_7C15)) * slots as u128) >> 64) as usize
}

static BASE: AtomicPtr<AtomicU64> = AtomicPtr::new(core::ptr::null_mut());
static SLOTS: AtomicUsize = AtomicUsize::new(0);

/// Makes the mapping at `base` (a file of `slots` slots, header written)
/// the black box the sampled path writes.
///
/// # Safety
/// `base` is a writable mapping of at least [`file_len`]`(slots)` bytes,
/// 8-aligned, that stays mapped for the rest of the process (or until
/// [`detach`] in a single-threaded forked child).
pub unsafe fn install(base: *mut u8, slots: usize) {
    SLOTS.store(slots, Ordering::Relaxed);
    BASE.store(base.cast(), Ordering::Release);
}

/// Stops writing the black box; returns the mapping that was installed
/// (null if none) and its slots. Writers already inside [`record`] may
/// still finish their store, so unmap only when no other thread runs (a
/// forked child) or never.
pub fn detach() -> (*mut u8, usize) {
    let b = BASE.swap(core::ptr::null_mut(), Ordering::AcqRel);
    (b.cast(), SLOTS.load(Ordering::Relaxed))
}

/// The installed mapping and its slots, if any.
pub fn installed() -> Option<(*mut u8, usize)> {
    let b = BASE.load(Ordering::Acquire);
    (!b.is_null()).then(|| (b.cast(), SLOTS.load(Ordering::Relaxed)))
}

/// The words of a mapping.
struct View {
    base: *mut AtomicU64,
    slots: usize,
}

impl View {
    fn current() -> Option<View> {
        let base = BASE.load(Ordering::Acquire);
        (!base.is_null()).then(|| View {
            base,
            slots: SLOTS.load(Ordering::Relaxed),
        })
    }

    fn word(&self, byte_offset: usize) -> &AtomicU64 {
        // SAFETY: `install`'s contract: the mapping is at least file_len
        // bytes and stays mapped; callers pass offsets inside it, 8-aligned.
        // Every word of it is only ever accessed atomically in this process.
        unsafe { &*self.base.byte_add(byte_offset) }
    }

    fn key(&self, slot: usize) -> &AtomicU64 {
        self.word(keys_offset() + slot * 8)
    }

    fn slot_word(&self, slot: usize, i: usize) -> &AtomicU64 {
        self.word(slots_offset(self.slots) + slot * SLOT_BYTES + i * 8)
    }
}

/// Records a live sample (see the module doc for the order of stores).
/// `frames` innermost first.
#[inline]
pub fn record(id: u64, size: u64, rate: u64, time_ns: u64, labels: u32, frames: &[u64]) {
    if let Some(v) = View::current() {
        v.record(id, size, rate, time_ns, labels, frames);
    }
}

/// [`record`] into the black box at `base`, not installed yet (a forked
/// child's new file, filled before it is installed).
///
/// # Safety
/// As for [`install`]; no other thread writes to it meanwhile.
pub unsafe fn record_into(
    base: *mut u8,
    slots: usize,
    sample: (u64, u64, u64, u64, u32),
    frames: &[u64],
) {
    let (id, size, rate, time_ns, labels) = sample;
    View {
        base: base.cast(),
        slots,
    }
    .record(id, size, rate, time_ns, labels, frames);
}

impl View {
    fn record(&self, id: u64, size: u64, rate: u64, time_ns: u64, labels: u32, frames: &[u64]) {
        let v = self;
        if v.slots == 0 || id == 0 || id & COMMITTED != 0 {
            return;
        }
        let home = home(id, v.slots);
        for i in 0..PROBE.min(v.slots) {
            let slot = (home + i) % v.slots;
            let key = v.key(slot);
            if key.load(Ordering::Relaxed) != 0
                || key
                    .compare_exchange(0, id, Ordering::AcqRel, Ordering::Relaxed)
                    .is_err()
            {
                continue;
            }
            let n = frames.len().min(SLOT_FRAMES);
            v.slot_word(slot, 0).store(size, Ordering::Relaxed);
            v.slot_word(slot, 1).store(rate, Ordering::Relaxed);
            v.slot_word(slot, 2).store(time_ns, Ordering::Relaxed);
            v.slot_word(slot, 3).store(
                frames.len() as u64 | u64::from(labels) << 32,
                Ordering::Relaxed,
            );
            for (j, &f) in frames[..n].iter().enumerate() {
                v.slot_word(slot, SLOT_HEADER_WORDS + j)
                    .store(f, Ordering::Relaxed);
            }
            key.store(id | COMMITTED, Ordering::Release);
            return;
        }
        v.word(H_OVERFLOW * 8).fetch_add(1, Ordering::Relaxed);
    }
}

/// Appends label set `id` to the installed black box (see the module doc
/// for the record). Called under the label interner's lock, once per set
/// made, and for every set at once when a black box is installed: one
/// writer at a time.
pub fn note_label_set(id: u32, pairs: &[(Box<str>, Box<str>)]) {
    if let Some(v) = View::current() {
        v.note_label_set(id, pairs);
    }
}

impl View {
    fn note_label_set(&self, id: u32, pairs: &[(Box<str>, Box<str>)]) {
        let v = self;
        let strings = || {
            pairs
                .iter()
                .flat_map(|(k, val)| [k.as_bytes(), val.as_bytes()])
        };
        let len: usize = 4 + strings().map(|b| 4 + b.len()).sum::<usize>();
        let Ok(len32) = u32::try_from(len) else {
            return;
        };
        let used = v.word(H_LABELS_USED * 8).load(Ordering::Relaxed) as usize;
        let need = 8 + len.next_multiple_of(8);
        if used.saturating_add(need) > LABELS_BYTES {
            v.word(H_LABELS_LOST * 8).fetch_add(1, Ordering::Relaxed);
            return;
        }
        let at = labels_offset(v.slots) + used;
        // The payload, a word at a time (every word of the mapping is atomic).
        let mut word = [0u8; 8];
        let mut n = 0;
        let mut off = at + 8;
        let mut put = |bytes: &[u8]| {
            for &b in bytes {
                word[n] = b;
                n += 1;
                if n == 8 {
                    v.word(off)
                        .store(u64::from_ne_bytes(word), Ordering::Relaxed);
                    (word, n, off) = ([0; 8], 0, off + 8);
                }
            }
        };
        put(&(pairs.len() as u32).to_ne_bytes());
        for b in strings() {
            put(&(b.len() as u32).to_ne_bytes());
            put(b);
        }
        if n > 0 {
            v.word(off)
                .store(u64::from_ne_bytes(word), Ordering::Relaxed);
        }
        v.word(at)
            .store(u64::from(len32) << 32 | u64::from(id), Ordering::Release);
        v.word(H_LABELS_USED * 8)
            .store((used + need) as u64, Ordering::Relaxed);
    }
}

/// The label sets in the label-set bytes `area` of a black box: (id, pairs).
pub fn read_label_sets(area: &[u8]) -> Vec<(u32, Vec<(String, String)>)> {
    let mut out = Vec::new();
    let mut off = 0;
    while let Some(head) = area.get(off..off + 8) {
        let head = u64::from_ne_bytes(head.try_into().unwrap_or([0; 8]));
        if head == 0 {
            break;
        }
        let (len, id) = ((head >> 32) as usize, head as u32);
        let body = off + 8;
        let Some(record) = area.get(body..body.saturating_add(len)) else {
            break;
        };
        let mut at = 0;
        let count = read_u32(record, &mut at).unwrap_or(0);
        let mut pairs = Vec::new();
        for _ in 0..count {
            match (read_str(record, &mut at), read_str(record, &mut at)) {
                (Some(k), Some(v)) => pairs.push((k, v)),
                _ => break,
            }
        }
        out.push((id, pairs));
        off = body + len.next_multiple_of(8);
    }
    out
}

fn read_u32(b: &[u8], at: &mut usize) -> Option<u32> {
    let v = u32::from_ne_bytes(b.get(*at..*at + 4)?.try_into().ok()?);
    *at += 4;
    Some(v)
}

fn read_str(b: &[u8], at: &mut usize) -> Option<String> {
    let n = read_u32(b, at)? as usize;
    let s = b.get(*at..at.checked_add(n)?)?;
    *at += n;
    Some(String::from_utf8_lossy(s).into_owned())
}

/// Clears the slot of the live sample `id`, if it has one.
#[inline]
pub fn forget(id: u64) {
    let Some(v) = View::current() else { return };
    if v.slots == 0 {
        return;
    }
    let want = id | COMMITTED;
    let home = home(id, v.slots);
    for i in 0..PROBE.min(v.slots) {
        let key = v.key((home + i) % v.slots);
        if key.load(Ordering::Relaxed) == want {
            key.store(0, Ordering::Release);
            return;
        }
    }
}

/// Stores header word `i` of the installed black box (control's words:
/// heartbeat, mappings switch, exit flag).
pub fn set_header(i: usize, value: u64) {
    if let Some(v) = View::current() {
        v.word(i * 8).store(value, Ordering::Release);
    }
}

/// Header word `i` of the installed black box (0 without one).
pub fn header(i: usize) -> u64 {
    View::current().map_or(0, |v| v.word(i * 8).load(Ordering::Acquire))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_page_aligned_and_ordered() {
        for slots in [1, 7, 512, 65536] {
            assert_eq!(slots_offset(slots) % 4096, 0);
            assert!(slots_offset(slots) >= keys_offset() + slots * 8);
            assert_eq!(maps_offset(slots, 1) % 4096, 0);
            assert_eq!(
                file_len(slots),
                maps_offset(slots, 1) + 2 * MAPS_BYTES + LABELS_BYTES
            );
        }
        assert_eq!(SLOT_BYTES, 512);
    }

    #[test]
    fn label_sets_read_back_and_a_cut_record_ends_the_walk() {
        let slots = 1;
        let mut file = vec![0u64; file_len(slots) / 8];
        let v = View {
            base: file.as_mut_ptr().cast(),
            slots,
        };
        let set = |pairs: &[(&str, &str)]| -> Vec<(Box<str>, Box<str>)> {
            pairs.iter().map(|&(k, v)| (k.into(), v.into())).collect()
        };
        v.note_label_set(1, &set(&[("route", "/users"), ("tenant", "acme")]));
        v.note_label_set(7, &set(&[("odd\0key", "")]));
        v.note_label_set(9, &set(&[("k", "v")]));
        let at = labels_offset(slots);
        let bytes = |f: &[u64]| -> Vec<u8> {
            f.iter().flat_map(|w| w.to_ne_bytes()).collect::<Vec<u8>>()[at..].to_vec()
        };
        let owned = |p: &[(&str, &str)]| -> Vec<(String, String)> {
            p.iter().map(|&(k, v)| (k.into(), v.into())).collect()
        };
        assert_eq!(
            read_label_sets(&bytes(&file)),
            vec![
                (1, owned(&[("route", "/users"), ("tenant", "acme")])),
                (7, owned(&[("odd\0key", "")])),
                (9, owned(&[("k", "v")])),
            ]
        );
        // Killed before the third record's first word: the walk ends at it.
        let used = file[H_LABELS_USED] as usize;
        // Its 24 bytes: the word, then 14 of pairs (count, "k", "v") padded.
        let third = (at + used - 24) / 8;
        file[third] = 0;
        assert_eq!(read_label_sets(&bytes(&file)).len(), 2);
        // Full: counted, not written.
        file[H_LABELS_USED] = (LABELS_BYTES - 8) as u64;
        let v = View {
            base: file.as_mut_ptr().cast(),
            slots,
        };
        v.note_label_set(10, &set(&[("k", "v")]));
        assert_eq!(file[H_LABELS_LOST], 1);
    }

    #[test]
    fn homes_spread_over_the_table() {
        let slots = 1000;
        let mut seen = vec![0u32; slots];
        for id in 1..=10_000u64 {
            let h = home(id, slots);
            assert!(h < slots);
            seen[h] += 1;
        }
        assert!(seen.iter().all(|&n| (2..=25).contains(&n)), "{seen:?}");
    }
}

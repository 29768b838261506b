//! Recovering a heap profile from a black box file
//! ([`crate::engine::blackbox`] describes the file): `heapprof recover`,
//! and every report, which reads a black box as the profile recovered
//! from it.
//!
//! The profile is what was live when the process last wrote the file,
//! normally the moment it died: each complete slot is one live sample,
//! bucketed by (stack, size, rate) and scaled like any heap profile
//! ([`crate::profile::scale`]), with the `age` of each sample at the end (the
//! heartbeat or the newest allocation, whichever is later). Only live
//! samples are in the file, so `alloc_*` equals `inuse_*`. Addresses are
//! named from the binaries by build ID, as for raw profiles
//! ([`super::symbolize_raw`]). The comment says what could not be
//! recovered: slots claimed but not committed at the kill (allocations in
//! flight), samples left out because the table was full, stacks cut to the
//! slot's frames.

use hashbrown::HashMap;

use super::ReportError;
use crate::engine::aggregate::BucketKey;
use crate::engine::blackbox as bb;
use crate::profile::proto::Profile;
use crate::profile::snapshot::{age_bucket, Entry, Snapshot};

/// Whether `bytes` start like a black box.
pub fn is_blackbox(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && u64::from_ne_bytes(bytes[..8].try_into().unwrap()) == bb::MAGIC
}

/// A recovered profile and what the file said about itself.
#[derive(Debug)]
pub struct Recovered {
    pub profile: Profile,
    pub pid: u64,
    /// Complete live samples recovered.
    pub samples: u64,
    /// Slots claimed but not committed (allocations in flight at the end).
    pub in_flight: u64,
    /// Samples left out because their slots were taken.
    pub overflow: u64,
    /// Samples whose stacks were deeper than a slot holds.
    pub cut_stacks: u64,
    /// The process exited normally (the file was kept).
    pub exited: bool,
    /// Notes of the symbolizer (files gone or rebuilt).
    pub notes: Vec<String>,
}

fn malformed(input: &str, detail: String) -> ReportError {
    ReportError::Malformed {
        input: input.to_string(),
        detail,
    }
}

/// Recovers the heap profile in the black box `bytes` (`input` names it).
pub fn recover(input: &str, bytes: &[u8]) -> Result<Recovered, ReportError> {
    if !is_blackbox(bytes) {
        return Err(ReportError::NotAProfile {
            input: input.to_string(),
            detail: "no black box header".into(),
        });
    }
    let word = |off: usize| -> u64 {
        bytes
            .get(off..off + 8)
            .map_or(0, |b| u64::from_ne_bytes(b.try_into().unwrap()))
    };
    let h = |i: usize| word(i * 8);
    if h(bb::H_VERSION) != bb::VERSION || h(bb::H_SLOT_FRAMES) != bb::SLOT_FRAMES as u64 {
        return Err(malformed(
            input,
            format!(
                "black box version {} with {} frames per slot; this heapprof reads version {} with {}",
                h(bb::H_VERSION),
                h(bb::H_SLOT_FRAMES),
                bb::VERSION,
                bb::SLOT_FRAMES
            ),
        ));
    }
    let slots = h(bb::H_SLOTS) as usize;
    if slots == 0 || slots > 1 << 30 || bytes.len() < bb::file_len(slots) {
        return Err(malformed(
            input,
            format!(
                "black box of {slots} slots is {} bytes, short of {} (truncated?)",
                bytes.len(),
                bb::file_len(slots.min(1 << 30))
            ),
        ));
    }
    let maps_word = h(bb::H_MAPS_CURRENT);
    let maps = match (maps_word & 0xff) as usize {
        c @ (1 | 2) => {
            let off = bb::maps_offset(slots, c);
            let len = ((maps_word >> 8) as usize).min(bb::MAPS_BYTES);
            crate::profile::mappings::decode(&bytes[off..off + len])
        }
        _ => Vec::new(),
    };
    struct Live {
        size: u64,
        rate: u64,
        time_ns: u64,
        labels: u32,
        frames: Vec<u64>,
    }
    let mut live = Vec::new();
    let (mut in_flight, mut cut_stacks) = (0, 0);
    let slots_at = bb::slots_offset(slots);
    for s in 0..slots {
        let key = word(bb::keys_offset() + s * 8);
        if key == 0 {
            continue;
        }
        if key & bb::COMMITTED == 0 {
            in_flight += 1;
            continue;
        }
        let w = |i: usize| word(slots_at + s * bb::SLOT_BYTES + i * 8);
        let depth = (w(3) & 0xffff_ffff) as usize;
        if depth > bb::SLOT_FRAMES {
            cut_stacks += 1;
        }
        let frames = (0..depth.min(bb::SLOT_FRAMES))
            .map(|i| w(bb::SLOT_HEADER_WORDS + i))
            .collect();
        live.push(Live {
            size: w(0),
            rate: w(1).max(1),
            time_ns: w(2),
            labels: (w(3) >> 32) as u32,
            frames,
        });
    }
    // The end: the last sign of life.
    let end = live
        .iter()
        .map(|l| l.time_ns)
        .max()
        .unwrap_or(0)
        .max(h(bb::H_HEARTBEAT_NS));
    let start = h(bb::H_START_MONO_NS);
    // The label sets the samples name (leaked: a reader recovers a file
    // or two and exits).
    let labels_at = bb::labels_offset(slots);
    let label_sets: HashMap<u32, &'static crate::engine::labels::Pairs> =
        bb::read_label_sets(&bytes[labels_at..labels_at + bb::LABELS_BYTES])
            .into_iter()
            .map(|(id, pairs)| {
                let pairs: Box<crate::engine::labels::Pairs> = pairs
                    .into_iter()
                    .map(|(k, v)| (k.into_boxed_str(), v.into_boxed_str()))
                    .collect();
                (id, &*Box::leak(pairs))
            })
            .collect();
    let mut stacks = crate::engine::stack_table::StackTable::default();
    let mut counts: HashMap<BucketKey, HashMap<u64, u64>> = HashMap::new();
    for l in &live {
        let key = BucketKey {
            stack: stacks.intern(&l.frames),
            size: l.size,
            rate: l.rate,
            labels: l.labels,
        };
        *counts
            .entry(key)
            .or_default()
            .entry(age_bucket(end.saturating_sub(l.time_ns)))
            .or_default() += 1;
    }
    let mut entries: Vec<Entry> = counts
        .into_iter()
        .map(|(key, ages)| {
            let mut live_by_age: Vec<(u64, u64)> = ages.into_iter().collect();
            live_by_age.sort_unstable();
            let n = live_by_age.iter().map(|&(_, n)| n).sum();
            Entry {
                key,
                allocs: n,
                live: n,
                live_by_age,
            }
        })
        .collect();
    entries.sort_unstable_by_key(|e| e.key);
    let snap = Snapshot {
        stacks: entries
            .iter()
            .map(|e| (e.key.stack, stacks.get(e.key.stack).into()))
            .collect(),
        entries,
        rate: h(bb::H_RATE),
        time_unix_ns: h(bb::H_START_UNIX_NS) + end.saturating_sub(start),
        duration_ns: end.saturating_sub(start),
        label_sets,
        process_labels: Vec::new(),
    };
    let mut profile = crate::profile::pprof::build(&snap, None, &maps, &Default::default());
    let r = Recovered {
        pid: h(bb::H_PID),
        samples: live.len() as u64,
        in_flight,
        overflow: h(bb::H_OVERFLOW),
        cut_stacks,
        exited: h(bb::H_EXITED) != 0,
        notes: Vec::new(),
        profile: Profile::default(),
    };
    // The comment pprof::build wrote describes this (the reading) process.
    let comment = format!(
        "heapprof {}: recovered from the black box of pid {} ({}): {} live samples at rate {}; {} in flight at the end (left out); {} not recorded, the black box was full{}; {} stacks deeper than {} frames cut at the root; pid={} trigger=black_box",
        env!("CARGO_PKG_VERSION"),
        r.pid,
        if r.exited { "after a normal exit" } else { "at its death" },
        r.samples,
        snap.rate,
        r.in_flight,
        r.overflow,
        if r.overflow > 0 { " (raise HEAPPROF_BLACKBOX_SLOTS)" } else { "" },
        r.cut_stacks,
        bb::SLOT_FRAMES,
        r.pid,
    );
    profile.comment = vec![profile.string_table.len() as i64];
    profile.string_table.push(comment);
    let notes = super::symbolize_raw::symbolize(&mut profile);
    Ok(Recovered {
        profile,
        notes,
        ..r
    })
}

/// `heapprof recover FILE -o OUT`: writes the recovered profile, gzipped,
/// atomically.
pub fn recover_file(input: &str, output: &std::path::Path) -> Result<Recovered, ReportError> {
    let bytes = std::fs::read(input).map_err(|error| ReportError::Read {
        path: input.to_string(),
        error,
    })?;
    let r = recover(input, &bytes)?;
    crate::profile::output::write_atomic(output, &crate::profile::output::encode_gz(&r.profile))
        .map_err(|error| ReportError::Write {
            path: output.display().to_string(),
            error,
        })?;
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A black box of 8 slots as a killed process could leave it: one
    /// complete sample, one claimed but not committed (its writer killed
    /// mid-slot), one freed (key cleared, words left), and overflow.
    fn file() -> Vec<u8> {
        let slots = 8;
        let mut f = vec![0u8; bb::file_len(slots)];
        let mut put = |off: usize, v: u64| f[off..off + 8].copy_from_slice(&v.to_ne_bytes());
        for (i, v) in [
            (bb::H_MAGIC, bb::MAGIC),
            (bb::H_VERSION, bb::VERSION),
            (bb::H_SLOTS, slots as u64),
            (bb::H_SLOT_FRAMES, bb::SLOT_FRAMES as u64),
            (bb::H_PID, 42),
            (bb::H_RATE, 1),
            (bb::H_OVERFLOW, 3),
            (bb::H_HEARTBEAT_NS, 5_000_000_000),
        ] {
            put(i * 8, v);
        }
        let slot = |s: usize, i: usize| bb::slots_offset(slots) + s * bb::SLOT_BYTES + i * 8;
        for (s, key, size) in [(1, 7 | bb::COMMITTED, 100), (4, 9, 200), (6, 0, 300)] {
            put(bb::keys_offset() + s * 8, key);
            put(slot(s, 0), size);
            put(slot(s, 1), 1);
            put(slot(s, 2), 1_000_000_000);
            // 70 frames deep: the slot keeps 60.
            put(slot(s, 3), 70);
            for j in 0..bb::SLOT_FRAMES {
                put(slot(s, bb::SLOT_HEADER_WORDS + j), 0x1000 + j as u64);
            }
        }
        f
    }

    #[test]
    fn only_committed_slots_are_recovered_and_the_rest_is_counted() {
        let r = recover("box", &file()).unwrap();
        assert_eq!(
            (r.pid, r.samples, r.in_flight, r.overflow, r.cut_stacks),
            (42, 1, 1, 3, 1)
        );
        let p = &r.profile;
        let values: Vec<&Vec<i64>> = p.sample.iter().map(|s| &s.value).collect();
        assert_eq!(values, [&vec![1, 100, 1, 100]]);
        assert_eq!(p.sample[0].location_id.len(), bb::SLOT_FRAMES);
        let comment = &p.string_table[p.comment[0] as usize];
        assert!(
            comment.contains("1 live samples at rate 1; 1 in flight")
                && comment.contains(
                    "3 not recorded, the black box was full (raise HEAPPROF_BLACKBOX_SLOTS)"
                ),
            "{comment}"
        );
        // Its age: 4 s before the last heartbeat.
        let age = p.string_table.iter().position(|s| s == "age").unwrap() as i64;
        let label = p.sample[0].label.iter().find(|l| l.key == age).unwrap();
        assert_eq!(label.num, 4);
    }

    #[test]
    fn a_short_or_foreign_file_is_an_error() {
        let f = file();
        assert!(recover("box", &f[..f.len() - 8]).is_err());
        assert!(recover("box", b"not a black box").is_err());
        let mut other = f.clone();
        other[8] = 99; // version
        let e = recover("box", &other).unwrap_err().to_string();
        assert!(e.contains("version 99"), "{e}");
    }
}

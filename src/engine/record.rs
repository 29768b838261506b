//! The records threads send the aggregator: word layouts and parsing.
//!
//! ```text
//! alloc: [ALLOC | nframes << 8, id, size, rate, time_ns, tag, labels, frame0 .. frameN-1]
//! free:  [FREE, id]
//! ```
//! `id` is the sample's unique number (the sample heap keeps it beside the
//! object, so reuse of an address never confuses two samples), `rate` the sampling
//! rate it was taken at (1 for leak-check sessions), `time_ns` the monotonic
//! allocation time, `tag` the leak-check session (0 for none), `labels` the
//! thread's label set when it allocated ([`crate::engine::labels`], 0 for none).

use core::mem::MaybeUninit;

use crate::engine::stack::MAX_FRAMES;

const ALLOC: u64 = 1;
const FREE: u64 = 2;
/// Words before the frames in an alloc record.
pub const ALLOC_HEADER: usize = 7;
/// Longest record, in words.
pub const MAX_WORDS: usize = ALLOC_HEADER + MAX_FRAMES;

/// A decoded record.
#[derive(Debug, PartialEq, Eq)]
pub enum Record<'a> {
    /// A sampled allocation.
    Alloc(Alloc<'a>),
    /// The free of a sampled allocation.
    Free { id: u64 },
}

/// A sampled allocation's record (see the module doc for its fields).
#[derive(Debug, PartialEq, Eq)]
pub struct Alloc<'a> {
    pub id: u64,
    pub size: u64,
    pub rate: u64,
    pub time_ns: u64,
    pub tag: u64,
    pub labels: u32,
    pub frames: &'a [u64],
}

/// Fills the header of an alloc record whose frames are already in
/// `rec[ALLOC_HEADER..ALLOC_HEADER + nframes]`; returns the record. The
/// rest of `rec` need not be initialised.
///
/// # Safety
/// `rec[ALLOC_HEADER..ALLOC_HEADER + nframes]` is initialised.
#[allow(clippy::too_many_arguments)] // one argument per header word
pub unsafe fn alloc(
    rec: &mut [MaybeUninit<u64>; MAX_WORDS],
    nframes: usize,
    id: u64,
    size: u64,
    rate: u64,
    time_ns: u64,
    tag: u64,
    labels: u32,
) -> &[u64] {
    let header = [
        ALLOC | (nframes as u64) << 8,
        id,
        size,
        rate,
        time_ns,
        tag,
        u64::from(labels),
    ];
    for (w, v) in rec.iter_mut().zip(header) {
        w.write(v);
    }
    let len = (ALLOC_HEADER + nframes).min(MAX_WORDS);
    // SAFETY: the header was written above and the frames are initialised
    // (the safety condition), so the first `len` words are.
    unsafe { &*(&rec[..len] as *const [MaybeUninit<u64>] as *const [u64]) }
}

/// A free record.
pub fn free(id: u64) -> [u64; 2] {
    [FREE, id]
}

/// Splits a run of words into records. Stops at anything malformed, which
/// cannot happen for words produced by [`alloc`] and [`free`].
pub fn parse(mut words: &[u64], mut f: impl FnMut(Record<'_>)) {
    while let Some(&hdr) = words.first() {
        match hdr & 0xff {
            ALLOC => {
                let n = (hdr >> 8) as usize;
                let Some(r) = words.get(..ALLOC_HEADER + n) else {
                    return;
                };
                f(Record::Alloc(Alloc {
                    id: r[1],
                    size: r[2],
                    rate: r[3],
                    time_ns: r[4],
                    tag: r[5],
                    labels: r[6] as u32,
                    frames: &r[ALLOC_HEADER..],
                }));
                words = &words[ALLOC_HEADER + n..];
            }
            FREE => {
                let Some(&id) = words.get(1) else { return };
                f(Record::Free { id });
                words = &words[2..];
            }
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut rec = [MaybeUninit::uninit(); MAX_WORDS];
        rec[ALLOC_HEADER].write(0xaa);
        rec[ALLOC_HEADER + 1].write(0xbb);
        // SAFETY: the two frames were written above.
        let mut words = unsafe { alloc(&mut rec, 2, 9, 100, 1, 5, 3, 4) }.to_vec();
        words.extend_from_slice(&free(9));
        let mut got = Vec::new();
        parse(&words, |r| got.push(format!("{r:?}")));
        assert_eq!(
            got,
            [
                "Alloc(Alloc { id: 9, size: 100, rate: 1, time_ns: 5, tag: 3, labels: 4, frames: [170, 187] })",
                "Free { id: 9 }"
            ]
        );
    }
}

//! A point-in-time copy of the tallies, taken under the aggregator lock and
//! then written without it, so a slow symbolizer never delays another dump's
//! drain (allocation hooks never wait on either).

use hashbrown::HashMap;

use crate::engine::aggregate::{self, BucketKey};
use crate::engine::stack_table::StackId;

/// Ages below this many seconds are kept to the second.
pub const AGE_EXACT_BELOW_SECS: u64 = 32;

/// The age bucket (its lower bound in whole seconds) of an age in
/// nanoseconds. Buckets are one second wide below
/// [`AGE_EXACT_BELOW_SECS`], then 16 per doubling (the age rounded down to
/// five significant bits: 32, 34, …, 62, 64, 68, …), so a bucket is never
/// wider than 1/16 of its lower bound. That is fine enough to tell, from one
/// profile, whether a stack's live samples were allocated evenly over the
/// process's life (a leak) or all early (a cache) or all just now (churn),
/// and keeps a (stack, size) bucket to at most ~350 age samples over a year.
pub fn age_bucket(age_ns: u64) -> u64 {
    let secs = age_ns / 1_000_000_000;
    if secs < AGE_EXACT_BELOW_SECS {
        return secs;
    }
    let shift = (64 - secs.leading_zeros()) - 5;
    (secs >> shift) << shift
}

/// The end (exclusive, in seconds) of the age bucket starting at `lower`
/// (a value [`age_bucket`] returns).
pub fn age_bucket_end(lower: u64) -> u64 {
    if lower < AGE_EXACT_BELOW_SECS {
        return lower + 1;
    }
    lower.saturating_add(1 << ((64 - lower.leading_zeros()) - 5))
}

/// Raw counts of one bucket, with its live samples split by age.
#[derive(Clone, Debug)]
pub struct Entry {
    pub key: BucketKey,
    pub allocs: u64,
    pub live: u64,
    /// (age bucket lower bound in seconds, see [`age_bucket`], live
    /// samples), by bucket.
    pub live_by_age: Vec<(u64, u64)>,
}

/// Everything a profile is written from.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub entries: Vec<Entry>,
    pub stacks: HashMap<StackId, Box<[u64]>>,
    pub rate: u64,
    pub time_unix_ns: u64,
    pub duration_ns: u64,
    /// The pairs of every label set the entries name (`key.labels`).
    pub label_sets: HashMap<u32, &'static crate::engine::labels::Pairs>,
    /// Labels on every sample (`HEAPPROF_LABELS`); a set's pair wins over
    /// one of these with the same key.
    pub process_labels: Vec<(String, String)>,
}

/// Drains the buffers and copies the tallies.
pub fn take() -> Snapshot {
    // Before the aggregator lock: the settings lock is never taken under it.
    let process_labels = crate::profile::settings::process_labels();
    let now = crate::os::monotonic_ns();
    aggregate::with(|agg| {
        let mut ages: HashMap<(BucketKey, u64), u64> = HashMap::new();
        for (_, s) in agg.live() {
            *ages
                .entry((s.key, age_bucket(now.saturating_sub(s.time_ns))))
                .or_default() += 1;
        }
        let mut by_key: HashMap<BucketKey, Vec<(u64, u64)>> = HashMap::new();
        for ((key, age), n) in ages {
            by_key.entry(key).or_default().push((age, n));
        }
        let mut entries: Vec<Entry> = agg
            .buckets()
            .filter(|(_, c)| c.allocs > 0)
            .map(|(key, c)| {
                let mut live_by_age = by_key.remove(&key).unwrap_or_default();
                live_by_age.sort_unstable();
                Entry {
                    key,
                    allocs: c.allocs,
                    live: c.live,
                    live_by_age,
                }
            })
            .collect();
        entries.sort_unstable_by_key(|e| e.key);
        let stacks = entries
            .iter()
            .map(|e| (e.key.stack, agg.stacks.get(e.key.stack).into()))
            .collect();
        let mut label_sets = HashMap::new();
        for e in &entries {
            let id = e.key.labels;
            label_sets
                .entry(id)
                .or_insert_with(|| crate::engine::labels::pairs(id));
        }
        Snapshot {
            entries,
            stacks,
            label_sets,
            process_labels,
            rate: crate::engine::rate(),
            time_unix_ns: crate::os::realtime_ns(),
            duration_ns: now.saturating_sub(crate::engine::start_mono_ns()),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_fall_in_their_lower_bound() {
        assert_eq!(age_bucket(0), 0);
        assert_eq!(age_bucket(999_999_999), 0);
        assert_eq!(age_bucket(1_000_000_000), 1);
        assert_eq!(age_bucket(31_999_999_999), 31);
        assert_eq!(age_bucket(33_000_000_000), 32);
        assert_eq!(age_bucket(59_000_000_000), 58);
        assert_eq!(age_bucket(60_000_000_000), 60);
        assert_eq!(age_bucket(67_000_000_000), 64);
        assert_eq!(age_bucket(3_700_000_000_000), 3584);
        assert_eq!(age_bucket(u64::MAX), 18_253_611_008);
    }

    #[test]
    fn buckets_tile_the_ages_finely() {
        let mut lower = 0;
        while lower < 1 << 30 {
            let end = age_bucket_end(lower);
            assert!(end > lower);
            // Never wider than a second or 1/16 of the age.
            assert!(end - lower <= (lower / 16).max(1), "{lower}..{end}");
            assert_eq!(age_bucket(lower * 1_000_000_000), lower);
            assert_eq!(age_bucket((end - 1) * 1_000_000_000 + 999_999_999), lower);
            lower = end;
        }
    }
}

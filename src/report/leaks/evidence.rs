//! From profiles to [`Evidence`]: raw live-sample counts, ages and the
//! window, per stack or per label value.

use std::collections::HashMap;

use super::verdict::{Birth, Evidence};
/// How heapprof's profiles bucket ages (re-exported for simulations).
pub use crate::profile::snapshot::{age_bucket, age_bucket_end};
use crate::report::model::{Frame, FrameKey, LabelValue, Resolved, ResolvedSample, SampleType};
use crate::report::ReportError;

/// What `heapprof leaks` judges one by one.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum Grouping {
    /// Each distinct stack (the default).
    #[default]
    Stack,
    /// Each value of the sample label with this key, stacks merged (string
    /// labels by value, numeric ones with their unit); samples without the
    /// label form one group of their own.
    Label(String),
}

/// The identity of a group.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GroupKey {
    Stack(Vec<FrameKey>),
    Label(Option<String>),
}

/// One group's data over the series.
#[derive(Clone, Debug)]
pub struct Group {
    pub key: GroupKey,
    /// The stack's frames (leaf first); empty when grouped by label.
    pub frames: Vec<Frame>,
    pub evidence: Evidence,
    /// The selected value summed per profile, in time order.
    pub values: Vec<i64>,
}

/// Where the raw counts of one profile come from.
struct Columns {
    value: usize,
    objects: Option<usize>,
    space: Option<usize>,
    /// The sampling rate in bytes (the period), when the profile is a
    /// sampled heap profile (period type `space`/`bytes`, period > 1).
    rate: Option<f64>,
}

impl Columns {
    fn of(p: &Resolved, value: usize) -> Columns {
        let find = |name: &str| p.sample_types.iter().position(|t| t.name == name);
        let rate = match &p.period_type {
            Some(t) if t.unit == "bytes" && p.period > 1 => Some(p.period as f64),
            _ => None,
        };
        Columns {
            value,
            objects: find("inuse_objects"),
            space: find("inuse_space"),
            rate,
        }
    }

    /// How many samples the profiler took for `s`'s live objects.
    ///
    /// Heap profiles are scaled per (stack, size) bucket as Go's
    /// `scaleHeapSample` does: `objects = ⌊n·k⌋`, `space = ⌊n·size·k⌋` with
    /// `k = 1/(1 − e^(−size/rate))`. The object size is `space / objects`
    /// (which the scaling leaves unchanged; the `bytes` label when a value
    /// is zero), so `n = objects / k`, rounded (the truncation loses less
    /// than one object). Unscaled profiles (rate 1, or not heap profiles)
    /// count live things directly: `inuse_objects`, or the selected value
    /// when it is a count (`threads`/`count`, say).
    fn raw(&self, s: &ResolvedSample, selected_is_count: bool) -> u64 {
        let get = |i: Option<usize>| i.and_then(|i| s.values.get(i)).copied().unwrap_or(0);
        let v = get(Some(self.value));
        if v <= 0 {
            return 0;
        }
        let (objects, space) = (get(self.objects), get(self.space));
        if self.objects.is_none() || objects <= 0 {
            if selected_is_count || self.objects.is_none() && self.space.is_none() {
                return v as u64;
            }
            return 1;
        }
        let Some(rate) = self.rate else {
            return objects as u64;
        };
        let size = if space > 0 {
            space as f64 / objects as f64
        } else {
            s.num_label("bytes").map_or(0.0, |(b, _)| b as f64)
        };
        if size.is_nan() || size <= 0.0 {
            return objects as u64;
        }
        let k = 1.0 / (1.0 - (-size / rate).exp());
        if !k.is_finite() || k < 1.0 {
            return objects as u64;
        }
        ((objects as f64 / k).round() as u64).max(1)
    }
}

/// Seconds per unit of an `age` label, for the units a profile may
/// plausibly use; `None` for anything else (then the age is unknown).
pub fn seconds_per(unit: &str) -> Option<f64> {
    Some(match unit {
        "seconds" | "second" | "s" | "" => 1.0,
        "milliseconds" | "ms" => 1e-3,
        "microseconds" | "us" => 1e-6,
        "nanoseconds" | "ns" => 1e-9,
        "minutes" | "minute" | "min" => 60.0,
        "hours" | "hour" | "h" => 3600.0,
        _ => return None,
    })
}

fn age_interval(s: &ResolvedSample) -> Option<(f64, f64)> {
    let (value, unit) = s.num_label("age")?;
    age_interval_of(value, unit)
}

/// When `count` samples whose age is in `[lo, hi)` seconds at the window's
/// end were allocated, in seconds from the window's start, kept inside the
/// window.
pub fn birth_of_age(lo: f64, hi: f64, window: f64, count: u64) -> Birth {
    let clamp = |t: f64| t.clamp(0.0, window.max(0.0));
    Birth {
        from: clamp(window - hi),
        to: clamp(window - lo),
        count,
    }
}

/// A sample's age as an interval of seconds: heapprof's `age` label is the
/// lower bound of a bucket ([`crate::profile::snapshot::age_bucket`]) in whole
/// seconds; other units are taken as exact.
pub fn age_interval_of(value: i64, unit: &str) -> Option<(f64, f64)> {
    let per = seconds_per(unit)?;
    if value < 0 {
        return None;
    }
    if per == 1.0 {
        let end = crate::profile::snapshot::age_bucket_end(value as u64);
        return Some((value as f64, end as f64));
    }
    let age = value as f64 * per;
    Some((age, age))
}

fn group_key(grouping: &Grouping, p: &Resolved, s: &ResolvedSample) -> GroupKey {
    match grouping {
        Grouping::Stack => GroupKey::Stack(
            p.stacks
                .get(s.stack)
                .map(|st| st.key().to_vec())
                .unwrap_or_default(),
        ),
        Grouping::Label(key) => {
            GroupKey::Label(
                s.labels
                    .iter()
                    .find(|l| &l.key == key)
                    .map(|l| match &l.value {
                        LabelValue::Str(v) => v.clone(),
                        LabelValue::Num { value, unit } if unit.is_empty() => value.to_string(),
                        LabelValue::Num { value, unit } => format!("{value} {unit}"),
                    }),
            )
        }
    }
}

/// The series every report is built from.
pub struct Gathered {
    pub groups: Vec<Group>,
    /// Seconds from profiling's start to the last profile.
    pub window: f64,
    /// Of those, the seconds in which the program was busy: the evidence's
    /// times and window are in busy seconds (see `ActivityClock`).
    pub busy_window: f64,
    /// Intervals between profiles in which the program hardly allocated, in
    /// seconds from profiling's start.
    pub quiet: Vec<(f64, f64)>,
    /// Whether the series said how busy the program was (else busy time is
    /// wall time by assumption: one profile, or no `alloc_space`).
    pub activity_measured: bool,
    /// Whether the last profile's ages placed the births (else they were
    /// reconstructed from the series).
    pub from_ages: bool,
    pub sample: SampleType,
}

/// Gathers per-group evidence over `order` (profiles in time order, with
/// the selected value's index in each).
pub fn gather(
    order: &[&Resolved],
    indices: &[usize],
    grouping: &Grouping,
) -> Result<Gathered, ReportError> {
    let (Some(first), Some(last)) = (order.first(), order.last()) else {
        return Err(ReportError::Usage(
            "leaks needs at least one profile".to_string(),
        ));
    };
    let last_index = indices.last().copied().unwrap_or(0);
    let sample = last.sample_type(last_index);
    let selected_is_count = matches!(sample.unit.as_str(), "count" | "");

    let mut groups: HashMap<GroupKey, Group> = HashMap::new();
    let k_last = order.len() - 1;
    // Ages (lower, upper seconds, samples) of the last profile, per group.
    let mut ages: HashMap<GroupKey, Vec<(f64, f64, u64)>> = HashMap::new();
    let mut unaged: HashMap<GroupKey, u64> = HashMap::new();
    let mut max_age: f64 = 0.0;
    for (k, (p, &index)) in order.iter().zip(indices).enumerate() {
        let cols = Columns::of(p, index);
        for s in &p.samples {
            let n = cols.raw(s, selected_is_count);
            let v = s.values.get(index).copied().unwrap_or(0);
            if n == 0 {
                continue;
            }
            let key = group_key(grouping, p, s);
            let g = groups.entry(key.clone()).or_insert_with(|| Group {
                key: key.clone(),
                frames: match grouping {
                    Grouping::Stack => p
                        .stacks
                        .get(s.stack)
                        .map(|st| st.frames.clone())
                        .unwrap_or_default(),
                    Grouping::Label(_) => Vec::new(),
                },
                evidence: Evidence {
                    counts: vec![0; order.len()],
                    ..Evidence::default()
                },
                values: vec![0; order.len()],
            });
            g.evidence.counts[k] = g.evidence.counts[k].saturating_add(n);
            g.values[k] = g.values[k].saturating_add(v);
            if k == k_last {
                match age_interval(s) {
                    Some((lo, hi)) => {
                        max_age = max_age.max(hi);
                        ages.entry(key).or_default().push((lo, hi, n));
                    }
                    None => {
                        let u = unaged.entry(key).or_default();
                        *u = u.saturating_add(n);
                    }
                }
            }
        }
    }

    // The window: from profiling's start (the last profile's duration says
    // when) to the last profile; without one, from the first profile, or
    // the oldest age.
    let secs = |ns: i128| ns as f64 / 1e9;
    let span = secs(i128::from(last.time_nanos) - i128::from(first.time_nanos));
    let window = if last.duration_nanos > 0 {
        secs(i128::from(last.duration_nanos)).max(span)
    } else if order.len() > 1 {
        span.max(max_age)
    } else {
        max_age
    };
    let start_ns = i128::from(last.time_nanos) - (window * 1e9) as i128;
    let wall_times: Vec<f64> = order
        .iter()
        .map(|p| secs(i128::from(p.time_nanos) - start_ns).clamp(0.0, window))
        .collect();
    let clock = ActivityClock::of(order, &wall_times, window);
    let times: Vec<f64> = wall_times.iter().map(|&t| clock.busy_at(t)).collect();
    let busy_window = clock.busy_at(window);

    let mut from_ages = true;
    let mut out: Vec<Group> = groups.into_values().collect();
    for g in &mut out {
        g.evidence.times = times.clone();
        g.evidence.window = busy_window;
        let aged = ages.remove(&g.key).unwrap_or_default();
        if unaged.get(&g.key).copied().unwrap_or(0) == 0 {
            g.evidence.births = aged
                .into_iter()
                .map(|(lo, hi, n)| {
                    let b = birth_of_age(lo, hi, window, n);
                    Birth {
                        from: clock.busy_at(b.from),
                        to: clock.busy_at(b.to),
                        count: b.count,
                    }
                })
                .collect();
        } else {
            from_ages = false;
            g.evidence.births = births_from_series(&times, &g.evidence.counts);
        }
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(Gathered {
        groups: out,
        window,
        busy_window,
        activity_measured: clock.measured,
        quiet: clock.quiet,
        from_ages,
        sample,
    })
}

/// An interval between profiles is quiet when the program allocated at
/// under this fraction of its mean rate over the window.
pub const QUIET_BELOW: f64 = 0.1;

/// Time that counts: the window with the intervals in which the program was
/// quiet (hardly allocating: `alloc_space` hardly moved between two
/// profiles) taken out. A leak grows while the program works and stands
/// still while it idles, so judged on wall time a leak followed by quiet
/// looks like growth that stopped; judged on busy time it is growth all
/// through. A cache that filled early under continuing load still filled
/// early in busy time. Identity when every interval was busy, for one
/// profile, or without a cumulative `alloc_space`.
struct ActivityClock {
    /// (wall seconds, busy seconds) at the window's start and at each
    /// profile, increasing.
    points: Vec<(f64, f64)>,
    /// The quiet intervals, in wall seconds from the window's start.
    quiet: Vec<(f64, f64)>,
    /// Whether the series said how busy the program was (two profiles or
    /// more with a cumulative `alloc_space`).
    measured: bool,
}

impl ActivityClock {
    fn of(order: &[&Resolved], times: &[f64], window: f64) -> ActivityClock {
        let identity = ActivityClock {
            points: vec![(0.0, 0.0), (window, window)],
            quiet: Vec::new(),
            measured: false,
        };
        let Some(allocated) = allocated(order) else {
            return identity;
        };
        let total = allocated.last().copied().unwrap_or(0.0);
        if order.len() < 2 || total <= 0.0 || window <= 0.0 {
            return identity;
        }
        let mean = total / window;
        let mut points = vec![(0.0, 0.0)];
        let mut quiet: Vec<(f64, f64)> = Vec::new();
        let (mut t0, mut a0, mut busy) = (0.0, 0.0, 0.0);
        for (&t, &a) in times.iter().zip(&allocated) {
            let dt = t - t0;
            if dt > 0.0 {
                if (a - a0) / dt < QUIET_BELOW * mean {
                    match quiet.last_mut() {
                        Some(q) if q.1 == t0 => q.1 = t,
                        _ => quiet.push((t0, t)),
                    }
                } else {
                    busy += dt;
                }
                points.push((t, busy));
            }
            (t0, a0) = (t, a);
        }
        if quiet.is_empty() || busy <= 0.0 {
            return ActivityClock {
                measured: true,
                ..identity
            };
        }
        ActivityClock {
            points,
            quiet,
            measured: true,
        }
    }

    /// Busy seconds from the window's start to wall time `t`.
    fn busy_at(&self, t: f64) -> f64 {
        let mut prev = (0.0, 0.0);
        for &(w, b) in &self.points {
            if t <= w {
                return if w > prev.0 {
                    prev.1 + (b - prev.1) * ((t - prev.0) / (w - prev.0)).clamp(0.0, 1.0)
                } else {
                    b
                };
            }
            prev = (w, b);
        }
        prev.1
    }
}

/// The program's cumulative allocation at each profile (the sum of
/// `alloc_space`), when every profile has it and it never falls (heapprof's
/// and Go's count since the program started).
fn allocated(order: &[&Resolved]) -> Option<Vec<f64>> {
    let mut out = Vec::with_capacity(order.len());
    for p in order {
        let i = p
            .sample_types
            .iter()
            .position(|t| t.name == "alloc_space")?;
        let a = p.total(i) as f64;
        if out.last().is_some_and(|&prev| a < prev) {
            return None;
        }
        out.push(a);
    }
    Some(out)
}

/// Allocation times reconstructed from a count series when ages are
/// missing: what the first profile holds was allocated before it, each rise
/// between two profiles in between; a fall removes the most recent.
fn births_from_series(times: &[f64], counts: &[u64]) -> Vec<Birth> {
    let mut births: Vec<Birth> = Vec::new();
    let mut prev_t = 0.0;
    let mut prev_c = 0u64;
    for (&t, &c) in times.iter().zip(counts) {
        if c > prev_c {
            births.push(Birth {
                from: prev_t,
                to: t,
                count: c - prev_c,
            });
        } else {
            let mut drop = prev_c - c;
            while drop > 0 {
                let Some(last) = births.last_mut() else { break };
                let d = drop.min(last.count);
                last.count -= d;
                drop -= d;
                if last.count == 0 {
                    births.pop();
                }
            }
        }
        prev_t = t;
        prev_c = c;
    }
    births
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_births() {
        let b = |from, to, count| Birth { from, to, count };
        let got = births_from_series(&[10.0, 20.0, 30.0], &[2, 2, 5]);
        assert_eq!(got, [b(0.0, 10.0, 2), b(20.0, 30.0, 3)]);
        let got = births_from_series(&[10.0, 20.0, 30.0], &[2, 5, 1]);
        assert_eq!(got, [b(0.0, 10.0, 1)]);
    }
}

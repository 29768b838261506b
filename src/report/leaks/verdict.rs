//! The verdict on one stack (or label value) from its live samples: see the
//! model in the [module docs](super).

use super::stats;

/// A live sample older than this fraction of the window (allocated in its
/// first two thirds) is a survivor: churn's objects never get that old.
pub const SURVIVOR_BEFORE: f64 = 2.0 / 3.0;
/// A live sample allocated after this fraction of the window is a recent
/// arrival: a cache that filled in the first half has none.
pub const ARRIVAL_AFTER: f64 = 0.5;
/// Fewest live samples for a steady-growth verdict.
pub const MIN_SAMPLES: u64 = 2;
/// Live samples a leak should have for a verdict (about 90% of leaks with
/// this many expected samples get one): the target of the wait estimate.
pub const VERDICT_SAMPLES: u64 = 6;
/// The confidence's null hypotheses: growth in the later half of the window
/// slowed to at most this ratio of the earlier half's (a filling cache), or
/// at most this ratio of the earlier half's samples survived (turnover).
pub const SLOWED_RATIO: f64 = 0.25;
/// p-values below this read as "high" confidence, below
/// [`MEDIUM_CONFIDENCE`] as "medium", else "low".
pub const HIGH_CONFIDENCE: f64 = 0.01;
pub const MEDIUM_CONFIDENCE: f64 = 0.1;
/// Confidence of the interval on the leak rate.
pub const RATE_INTERVAL: f64 = 0.9;
/// A leak's live samples split between the window's halves like fair coin
/// flips; a split this unlikely (either way) is not a leak's: too few old
/// samples survive (turnover) or too few new ones arrive (slowing growth).
pub const LEAK_SPLIT_MIN_CHANCE: f64 = 0.01;
/// A plateau needs the chance that a leak at the earlier rate added nothing
/// in the later half to be below this.
pub const PLATEAU_MAX_CHANCE: f64 = 0.05;

/// What a stack's live samples say over the window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LeakClass {
    /// Allocated through the whole window and never freed: a leak suspect.
    SteadyGrowth,
    /// Grew, then stopped: nothing allocated in the later half is live
    /// (a cache or pool that filled once).
    Plateau,
    /// Never freed so far, but too few samples for a verdict.
    NotEnoughSamples,
    /// Freed again: the live count fell, or nothing live survived long.
    Churn,
}

impl LeakClass {
    /// What the class means, for the report.
    pub fn meaning(self) -> &'static str {
        match self {
            LeakClass::SteadyGrowth => {
                "live samples allocated all through the window and none freed; leak suspects, \
                 fastest first"
            }
            LeakClass::Plateau => {
                "grew, then stopped while the program kept allocating: nothing allocated in \
                 the later half of the window is live (a cache or pool that filled once); not \
                 leaks"
            }
            LeakClass::NotEnoughSamples => {
                "none freed so far, but too few samples for a verdict; profile longer"
            }
            LeakClass::Churn => {
                "freed again (the live count fell, or too few live samples survived long); not \
                 leaks"
            }
        }
    }

    /// The class's name in reports.
    pub fn label(self) -> &'static str {
        match self {
            LeakClass::SteadyGrowth => "steady growth",
            LeakClass::Plateau => "plateau",
            LeakClass::NotEnoughSamples => "not enough samples yet",
            LeakClass::Churn => "churn",
        }
    }
}

/// What one stack's samples show, as [`judge`] reads it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Evidence {
    /// Seconds from the window's start (when profiling started) to each
    /// profile, increasing. One entry for a single profile.
    pub times: Vec<f64>,
    /// Live samples (raw, unscaled) in each profile.
    pub counts: Vec<u64>,
    /// Seconds from the window's start to the last profile.
    pub window: f64,
    /// When the samples live in the last profile were allocated: from their
    /// ages, or reconstructed from the series when the profile has none.
    pub births: Vec<Birth>,
}

/// `count` live samples allocated between `from` and `to` seconds after the
/// window's start (an age bucket, or the time between two profiles),
/// assumed spread evenly over that span.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Birth {
    pub from: f64,
    pub to: f64,
    pub count: u64,
}

impl Birth {
    /// Samples allocated at `t` exactly.
    pub fn at(t: f64, count: u64) -> Birth {
        Birth {
            from: t,
            to: t,
            count,
        }
    }
}

/// The verdict on one stack.
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    pub class: LeakClass,
    /// Live samples in the last profile.
    pub samples: u64,
    /// Of those, allocated in the first half of the window / the later half.
    pub early: u64,
    pub late: u64,
    /// Total fall of the live count from profile to profile.
    pub fell: u64,
    /// Allocation times of the oldest and youngest live sample, as fractions
    /// of the window (0 = its start).
    pub oldest: f64,
    pub youngest: f64,
    /// The confidence: an upper bound on the chance that memory that is not
    /// leaking (growth slowed to a quarter, a quarter surviving, or, over a
    /// series, no upward trend) shows samples spread like these.
    pub p_value: f64,
    /// The Mann–Kendall p-value of the count series (1 for fewer than three
    /// profiles).
    pub trend_p: f64,
    /// Live samples gained per second (`samples / window`), with its
    /// [`RATE_INTERVAL`] exact Poisson interval.
    pub rate: f64,
    pub rate_interval: (f64, f64),
    /// How many more seconds at this rate until a verdict (for
    /// [`LeakClass::NotEnoughSamples`]) or high confidence (for
    /// [`LeakClass::SteadyGrowth`]) can be expected; `None` when there.
    pub wait_seconds: Option<f64>,
}

impl Verdict {
    /// The confidence in plain words.
    pub fn confidence(&self) -> &'static str {
        if self.p_value < HIGH_CONFIDENCE {
            "high"
        } else if self.p_value < MEDIUM_CONFIDENCE {
            "medium"
        } else {
            "low"
        }
    }
}

/// Fewest samples, split evenly between the window's halves, for high
/// confidence.
pub fn samples_for_high_confidence() -> u64 {
    let pi = SLOWED_RATIO / (1.0 + SLOWED_RATIO);
    (2..10_000)
        .find(|&m| stats::binomial_upper_tail(m, m / 2, pi) < HIGH_CONFIDENCE)
        .unwrap_or(10_000)
}

/// Classifies one stack; see the model in the [module docs](super).
pub fn judge(e: &Evidence) -> Verdict {
    let mut v = classify(e);
    if matches!(
        v.class,
        LeakClass::SteadyGrowth | LeakClass::NotEnoughSamples
    ) {
        let (lo, hi) = stats::poisson_interval(v.samples, 1.0 - RATE_INTERVAL);
        v.rate_interval = if v.samples > 0 {
            (
                v.rate * lo / v.samples as f64,
                v.rate * hi / v.samples as f64,
            )
        } else {
            (0.0, 0.0)
        };
    }
    v
}

fn classify(e: &Evidence) -> Verdict {
    let window = if e.window.is_finite() && e.window > 0.0 {
        e.window
    } else {
        0.0
    };
    let n = e.counts.last().copied().unwrap_or(0);
    let peak = e.counts.iter().copied().max().unwrap_or(0);
    let fell: u64 = e
        .counts
        .windows(2)
        .fold(0u64, |a, w| a.saturating_add(w[0].saturating_sub(w[1])));
    let frac = |t: f64| {
        if window > 0.0 && t.is_finite() {
            (t / window).clamp(0.0, 1.0)
        } else {
            1.0
        }
    };
    let (mut survivors, mut arrivals, mut total) = (0u64, 0u64, 0u64);
    let mut early_share = 0.0f64;
    let (mut oldest, mut youngest) = (1.0f64, 0.0f64);
    for b in &e.births {
        if b.count == 0 {
            continue;
        }
        let (from, to) = (frac(b.from.min(b.to)), frac(b.to.max(b.from)));
        let u = 0.5 * (from + to);
        oldest = oldest.min(u);
        youngest = youngest.max(u);
        total = total.saturating_add(b.count);
        // The part of the span in the window's first half: a bucket that
        // straddles the middle counts half and half.
        let in_first_half = if to > from {
            ((to.min(0.5) - from) / (to - from)).clamp(0.0, 1.0)
        } else if u < 0.5 {
            1.0
        } else {
            0.0
        };
        early_share += b.count as f64 * in_first_half;
        if u < SURVIVOR_BEFORE {
            survivors = survivors.saturating_add(b.count);
        }
        if u > ARRIVAL_AFTER {
            arrivals = arrivals.saturating_add(b.count);
        }
    }
    let early = (early_share.round() as u64).min(total);
    let late = total - early;
    let pi = SLOWED_RATIO / (1.0 + SLOWED_RATIO);
    let trend_p = stats::mann_kendall_upward(&e.counts);
    let mut p_value =
        stats::binomial_upper_tail(n, late, pi).max(stats::binomial_upper_tail(n, early, pi));
    if e.counts.len() >= 3 {
        p_value = p_value.max(trend_p);
    }
    let per_second = |k: f64| if window > 0.0 { k / window } else { 0.0 };
    let mut v = Verdict {
        class: LeakClass::Churn,
        samples: n,
        early,
        late,
        fell,
        oldest,
        youngest,
        p_value,
        trend_p,
        rate: per_second(n as f64),
        rate_interval: (0.0, 0.0),
        wait_seconds: None,
    };
    // Seconds until `target` samples are expected at the current rate.
    let wait_for = |target: u64| window * (target as f64 / n.max(1) as f64 - 1.0).max(0.5);
    if n == 0 || window <= 0.0 {
        return v;
    }
    // Sampled objects of a leak are never freed: a count that fell is
    // churn (beyond 2% of its peak, for big stacks that also free some;
    // those are split-tested below).
    if fell > peak / 50 || survivors == 0 {
        return v;
    }
    if arrivals == 0 {
        // A leak at the rate of the earlier half would have added about
        // `n` samples in the later half; none came.
        if (-(n as f64)).exp() < PLATEAU_MAX_CHANCE {
            v.class = LeakClass::Plateau;
        } else {
            v.class = LeakClass::NotEnoughSamples;
            v.wait_seconds = Some(wait_for(VERDICT_SAMPLES));
        }
        return v;
    }
    if stats::binomial_upper_tail(total, total - early, 0.5) < LEAK_SPLIT_MIN_CHANCE
        && !(e.counts.len() >= 3 && trend_p < MEDIUM_CONFIDENCE)
    {
        // Far more young samples than a leak would have: objects turn over.
        // Unless a series says the count only ever rose: then the leak sped
        // up (more load later, or a start starved of CPU), and calling it
        // churn would hide it; it is judged as growth, and its early/late
        // split keeps the confidence low.
        return v;
    }
    if stats::binomial_upper_tail(total, total - late, 0.5) < LEAK_SPLIT_MIN_CHANCE {
        // Far fewer new samples than old: growth is stopping.
        v.class = LeakClass::Plateau;
        return v;
    }
    if n < MIN_SAMPLES {
        v.class = LeakClass::NotEnoughSamples;
        v.wait_seconds = Some(wait_for(VERDICT_SAMPLES));
        return v;
    }
    v.class = LeakClass::SteadyGrowth;
    if v.p_value >= HIGH_CONFIDENCE {
        v.wait_seconds = Some(wait_for(samples_for_high_confidence()));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn evidence(counts: &[u64], births: &[(f64, u64)]) -> Evidence {
        let births = births.iter().map(|&(t, c)| Birth::at(t, c)).collect();
        let k = counts.len();
        Evidence {
            times: (1..=k).map(|i| i as f64 * 10.0).collect(),
            counts: counts.to_vec(),
            window: k as f64 * 10.0,
            births,
        }
    }

    #[test]
    fn the_classes() {
        let leak = evidence(
            &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
            &(0..10)
                .map(|i| (i as f64 * 10.0 + 5.0, 1))
                .collect::<Vec<_>>(),
        );
        let v = judge(&leak);
        assert_eq!(v.class, LeakClass::SteadyGrowth, "{v:?}");
        assert_eq!((v.samples, v.early, v.late, v.fell), (10, 5, 5, 0));
        assert!((v.rate - 0.1).abs() < 1e-12);
        assert!(v.rate_interval.0 < 0.1 && v.rate_interval.1 > 0.1);

        let cache = evidence(&[8, 16, 16, 16, 16, 16, 16, 16, 16, 16], &[(5.0, 16)]);
        assert_eq!(judge(&cache).class, LeakClass::Plateau);

        let churn = evidence(&[3, 1, 4, 1, 5, 2, 6, 2, 5, 3], &[(99.5, 3)]);
        assert_eq!(judge(&churn).class, LeakClass::Churn);
        // Never fell, but nothing lived long: churn.
        let young = evidence(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 2], &[(99.5, 2)]);
        assert_eq!(judge(&young).class, LeakClass::Churn);

        // A leak that sped up: never fell, rising all through, but most of
        // its samples young. Growth (with low confidence), never churn.
        let mut counts = vec![];
        let mut births = vec![];
        for i in 0..24u64 {
            let born = 1 + i * i / 2;
            births.push((i as f64 * 10.0 + 5.0, born));
            counts.push(births.iter().map(|b| b.1).sum());
        }
        let faster = evidence(&counts, &births);
        let v = judge(&faster);
        assert_eq!(v.class, LeakClass::SteadyGrowth, "{v:?}");
        assert_eq!(v.confidence(), "low");
        // The same samples in one profile cannot tell it from turnover.
        let one_profile = Evidence {
            times: vec![240.0],
            counts: counts[23..].to_vec(),
            ..faster
        };
        let v = judge(&one_profile);
        assert_eq!(v.class, LeakClass::Churn, "{v:?}");
        assert!(v.oldest < 0.1, "the same window: {v:?}");

        let one = evidence(&[0, 0, 0, 0, 1, 1, 1, 1, 1, 1], &[(45.0, 1)]);
        let v = judge(&one);
        assert_eq!(v.class, LeakClass::NotEnoughSamples);
        // One sample in 100 s: six expected after 600 s, 500 s more.
        assert_eq!(v.wait_seconds, Some(500.0));

        // Coarse buckets straddling the middle count half and half.
        let mut coarse = evidence(&[1, 2, 3], &[]);
        coarse.births = (0..3)
            .map(|i| Birth {
                from: 10.0 * i as f64,
                to: 10.0 * (i + 1) as f64,
                count: 100,
            })
            .collect();
        let v = judge(&coarse);
        assert_eq!((v.early, v.late), (150, 150));
        assert_eq!(v.class, LeakClass::SteadyGrowth);

        // As the module docs say.
        assert_eq!(samples_for_high_confidence(), 16);

        assert_eq!(judge(&Evidence::default()).class, LeakClass::Churn);
        let nan = Evidence {
            window: f64::NAN,
            ..leak
        };
        let _ = judge(&nan);
    }
}

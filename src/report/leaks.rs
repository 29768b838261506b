//! `heapprof leaks`: which stacks hold memory that is not coming back.
//!
//! Two modes, chosen by the number of profiles:
//!
//! - **Trend** (three or more profiles of one process): profiles are ordered
//!   by `time_nanos`; per stack the `inuse_space` series is fitted with a
//!   least-squares line and classified by [`classify`] as steady growth,
//!   plateau or churn.
//! - **Age** (one profile): stacks are ranked by in-use bytes whose `age`
//!   label says they have been alive at least `--older-than` seconds.

use std::collections::HashMap;
use std::fmt;

use super::format;
use super::model::{Frame, FrameKey, Resolved, SampleKind, SampleType};
use super::ReportError;

/// `--older-than`'s default, in seconds.
pub const DEFAULT_OLDER_THAN_SECS: u64 = 60;

/// Steady growth needs a fit at least this good (R²): growth, not noise.
pub const STEADY_MIN_R_SQUARED: f64 = 0.7;
/// Steady growth needs at least this fraction of intervals to grow.
pub const STEADY_MIN_GREW_FRACTION: f64 = 0.5;
/// Steady growth needs the later half of the series to grow at least this
/// fraction of the overall rate: a plateau's late slope is near zero.
pub const STEADY_MIN_LATE_RATIO: f64 = 0.5;
/// A plateau's later half stays within this fraction of its rise of the
/// final level.
pub const PLATEAU_TOLERANCE: f64 = 0.1;

/// How a stack's in-use series behaves over time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LeakClass {
    /// Grew at a steady rate through the whole series: a leak suspect.
    SteadyGrowth,
    /// Grew, then stayed flat for the later half of the series: memory
    /// that was filled once (a cache, a pool, a lazily built table).
    Plateau,
    /// No sustained growth: allocated and freed, up and down.
    Churn,
}

impl LeakClass {
    /// What the class means, for the report.
    pub fn meaning(self) -> &'static str {
        match self {
            LeakClass::SteadyGrowth => {
                "in-use memory rose at a steady rate through the whole series; leak suspects, \
                 fastest first"
            }
            LeakClass::Plateau => {
                "grew, then stayed flat for the later half of the series (a cache or pool that \
                 filled once); not leaks"
            }
            LeakClass::Churn => "no sustained growth (allocated and freed); not leaks",
        }
    }

    fn label(self) -> &'static str {
        match self {
            LeakClass::SteadyGrowth => "steady growth",
            LeakClass::Plateau => "plateau",
            LeakClass::Churn => "churn",
        }
    }
}

/// The fit of one series and its class.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Trend {
    pub class: LeakClass,
    /// Least-squares slope, in the sample unit per second.
    pub slope: f64,
    /// Coefficient of determination of the linear fit (0 for a constant
    /// series).
    pub r_squared: f64,
    /// Fraction of consecutive intervals in which the value grew.
    pub grew_fraction: f64,
    /// Least-squares slope over the later half of the series.
    pub late_slope: f64,
}

/// Least-squares slope and R² of `ys` over `xs` (equal lengths assumed;
/// extra elements of the longer are ignored).
fn fit(xs: &[f64], ys: &[f64]) -> (f64, f64) {
    let n = xs.len().min(ys.len());
    if n < 2 {
        return (0.0, 0.0);
    }
    let (xs, ys) = (&xs[..n], &ys[..n]);
    let mx = xs.iter().sum::<f64>() / n as f64;
    let my = ys.iter().sum::<f64>() / n as f64;
    let (mut sxx, mut sxy, mut syy) = (0.0, 0.0, 0.0);
    for (x, y) in xs.iter().zip(ys) {
        sxx += (x - mx) * (x - mx);
        sxy += (x - mx) * (y - my);
        syy += (y - my) * (y - my);
    }
    if sxx <= 0.0 || !sxx.is_finite() {
        return (0.0, 0.0);
    }
    let slope = sxy / sxx;
    let r2 = if syy > 0.0 && syy.is_finite() {
        (sxy * sxy / (sxx * syy)).clamp(0.0, 1.0)
    } else {
        0.0
    };
    (if slope.is_finite() { slope } else { 0.0 }, r2)
}

/// Classifies a series of in-use values at increasing times (seconds).
///
/// - [`LeakClass::SteadyGrowth`]: positive slope and net growth, R² at least
///   [`STEADY_MIN_R_SQUARED`], at least [`STEADY_MIN_GREW_FRACTION`] of the
///   intervals growing, and the later half still growing at no less than
///   [`STEADY_MIN_LATE_RATIO`] of the overall rate.
/// - [`LeakClass::Plateau`]: otherwise, if the series rose above its first
///   value and its later half stays within [`PLATEAU_TOLERANCE`] of that rise
///   around the final level, which keeps at least half the rise.
/// - [`LeakClass::Churn`]: everything else.
pub fn classify(times: &[f64], values: &[f64]) -> Trend {
    let n = times.len().min(values.len());
    let (times, values) = (&times[..n], &values[..n]);
    let (slope, r_squared) = fit(times, values);
    let intervals = n.saturating_sub(1);
    let grew = values.windows(2).filter(|w| w[1] > w[0]).count();
    let grew_fraction = if intervals == 0 {
        0.0
    } else {
        grew as f64 / intervals as f64
    };
    let late = n.saturating_sub(1) / 2;
    let (late_slope, _) = fit(&times[late..], &values[late..]);
    let mut trend = Trend {
        class: LeakClass::Churn,
        slope,
        r_squared,
        grew_fraction,
        late_slope,
    };
    let (Some(&first), Some(&last)) = (values.first(), values.last()) else {
        return trend;
    };
    if n >= 3
        && slope > 0.0
        && last > first
        && r_squared >= STEADY_MIN_R_SQUARED
        && grew_fraction >= STEADY_MIN_GREW_FRACTION
        && late_slope >= STEADY_MIN_LATE_RATIO * slope
    {
        trend.class = LeakClass::SteadyGrowth;
        return trend;
    }
    let peak = values.iter().copied().fold(first, f64::max);
    let rise = peak - first;
    if n >= 3
        && rise > 0.0
        && last - first >= 0.5 * rise
        && values[late..]
            .iter()
            .all(|v| (v - last).abs() <= PLATEAU_TOLERANCE * rise)
    {
        trend.class = LeakClass::Plateau;
    }
    trend
}

/// One stack of a [`TrendReport`].
#[derive(Clone, Debug)]
pub struct TrendRow {
    /// Leaf first.
    pub frames: Vec<Frame>,
    pub trend: Trend,
    /// The stack's value in each profile, in time order (0 where absent).
    pub series: Vec<i64>,
}

/// Leak classification over a time series of profiles.
#[derive(Clone, Debug)]
pub struct TrendReport {
    pub sample: SampleType,
    /// Inputs and their `time_nanos`, in time order.
    pub profiles: Vec<(String, i64)>,
    /// Seconds from the first profile to the last.
    pub span_seconds: f64,
    /// Steady growers, fastest first (the first `n`).
    pub steady: Vec<TrendRow>,
    /// How many stacks grew steadily (before truncation to `n`).
    pub steady_count: usize,
    /// Plateaus, largest final level first (the first `n`).
    pub plateau: Vec<TrendRow>,
    pub plateau_count: usize,
    /// How many stacks churned (never listed).
    pub churn_count: usize,
    pub skipped_samples: usize,
}

/// Classifies every stack with in-use memory across `profiles` (three or
/// more of one process, any order: they are sorted by `time_nanos`, which
/// must be set and distinct). `n` limits each list (0 = all).
pub fn leak_trend(profiles: &[Resolved], n: usize) -> Result<TrendReport, ReportError> {
    if profiles.len() < 3 {
        return Err(ReportError::Usage(format!(
            "leaks over time needs at least three profiles, got {}; for two, use heapprof diff \
             BASE NEW",
            profiles.len()
        )));
    }
    let mut order: Vec<&Resolved> = profiles.iter().collect();
    order.sort_by_key(|p| p.time_nanos);
    for p in &order {
        if p.time_nanos == 0 {
            return Err(ReportError::Unsuitable {
                input: p.input.clone(),
                detail: "carries no time (time_nanos is 0), so it cannot be placed in a series"
                    .to_string(),
            });
        }
    }
    for w in order.windows(2) {
        if w[0].time_nanos == w[1].time_nanos {
            return Err(ReportError::Unsuitable {
                input: w[1].input.clone(),
                detail: format!(
                    "was taken at the same time_nanos as {}; pass profiles taken at different \
                     times",
                    w[0].input
                ),
            });
        }
    }
    let mut indices = Vec::with_capacity(order.len());
    for p in &order {
        indices.push(p.sample_index(&SampleKind::Default)?);
    }
    let t0 = order[0].time_nanos;
    let times: Vec<f64> = order
        .iter()
        .map(|p| (i128::from(p.time_nanos) - i128::from(t0)) as f64 / 1e9)
        .collect();

    // Stack identity -> (frames, series).
    let mut series: HashMap<&[FrameKey], (&[Frame], Vec<i64>)> = HashMap::new();
    for (k, (p, &index)) in order.iter().zip(&indices).enumerate() {
        for (stack, v) in p.stacks.iter().zip(p.stack_totals(index)) {
            let e = series
                .entry(stack.key())
                .or_insert_with(|| (&stack.frames, vec![0; order.len()]));
            if let Some(slot) = e.1.get_mut(k) {
                *slot = slot.saturating_add(v);
            }
        }
    }
    let mut steady = Vec::new();
    let mut plateau = Vec::new();
    let mut churn_count = 0;
    let mut keyed: Vec<(&[FrameKey], &[Frame], Vec<i64>)> = series
        .into_iter()
        .filter(|(_, (_, s))| s.iter().any(|v| *v != 0))
        .map(|(k, (f, s))| (k, f, s))
        .collect();
    // Deterministic order before the stable sorts below.
    keyed.sort_by(|a, b| a.0.cmp(b.0));
    for (_, frames, values) in keyed {
        let ys: Vec<f64> = values.iter().map(|v| *v as f64).collect();
        let trend = classify(&times, &ys);
        let row = TrendRow {
            frames: frames.to_vec(),
            trend,
            series: values,
        };
        match trend.class {
            LeakClass::SteadyGrowth => steady.push(row),
            LeakClass::Plateau => plateau.push(row),
            LeakClass::Churn => churn_count += 1,
        }
    }
    steady.sort_by(|a, b| b.trend.slope.total_cmp(&a.trend.slope));
    plateau.sort_by_key(|r| std::cmp::Reverse(r.series.last().copied().unwrap_or(0)));
    let (steady_count, plateau_count) = (steady.len(), plateau.len());
    if n > 0 {
        steady.truncate(n);
        plateau.truncate(n);
    }
    Ok(TrendReport {
        sample: order[0].sample_type(indices[0]),
        profiles: order
            .iter()
            .map(|p| (p.input.clone(), p.time_nanos))
            .collect(),
        span_seconds: times.last().copied().unwrap_or(0.0),
        steady,
        steady_count,
        plateau,
        plateau_count,
        churn_count,
        skipped_samples: order.iter().map(|p| p.skipped_samples).sum(),
    })
}

/// One stack of an [`AgeReport`].
#[derive(Clone, Debug)]
pub struct AgeRow {
    /// Leaf first.
    pub frames: Vec<Frame>,
    /// In-use bytes whose `age` label is at least the threshold.
    pub old: i64,
    /// All in-use bytes of the stack.
    pub inuse: i64,
}

/// Old in-use memory in one profile, by the `age` sample label.
#[derive(Clone, Debug)]
pub struct AgeReport {
    pub input: String,
    pub older_than_secs: u64,
    pub sample: SampleType,
    /// In-use bytes at least `older_than_secs` old.
    pub old_total: i64,
    pub inuse_total: i64,
    /// In-use bytes in samples without a usable `age` label (not counted as
    /// old).
    pub unknown_age_total: i64,
    /// Stacks holding old memory (what `rows` is the head of).
    pub stacks: usize,
    /// Most old memory first.
    pub rows: Vec<AgeRow>,
    pub skipped_samples: usize,
}

/// Nanoseconds per unit of an `age` label, for the units a profile may
/// plausibly use; `None` for anything else (then the age is unknown).
fn nanos_per(unit: &str) -> Option<i128> {
    Some(match unit {
        "seconds" | "second" | "s" | "" => 1_000_000_000,
        "milliseconds" | "ms" => 1_000_000,
        "microseconds" | "us" => 1_000,
        "nanoseconds" | "ns" => 1,
        "minutes" | "minute" | "min" => 60_000_000_000,
        "hours" | "hour" | "h" => 3_600_000_000_000,
        _ => return None,
    })
}

/// Ranks stacks of one profile by in-use bytes alive at least
/// `older_than_secs`, read from each sample's numeric `age` label (the lower
/// bound of its age bucket, so "at least" is exact). Samples without one are
/// of unknown age and never counted as old. `n` limits the rows (0 = all).
pub fn leak_age(
    profile: &Resolved,
    older_than_secs: u64,
    n: usize,
) -> Result<AgeReport, ReportError> {
    let index = profile.sample_index(&SampleKind::InuseSpace)?;
    let threshold = i128::from(older_than_secs) * 1_000_000_000;
    let mut old = vec![0i64; profile.stacks.len()];
    let (mut old_total, mut unknown_age_total) = (0i64, 0i64);
    let mut any_age = false;
    let mut any_inuse = false;
    for s in &profile.samples {
        let Some(&v) = s.values.get(index) else {
            continue;
        };
        any_inuse |= v != 0;
        let age = s
            .num_label("age")
            .and_then(|(value, unit)| Some(i128::from(value) * nanos_per(unit)?));
        match age {
            None => unknown_age_total = unknown_age_total.saturating_add(v),
            Some(age) => {
                any_age = true;
                if age >= threshold {
                    if let Some(o) = old.get_mut(s.stack) {
                        *o = o.saturating_add(v);
                    }
                    old_total = old_total.saturating_add(v);
                }
            }
        }
    }
    if any_inuse && !any_age {
        return Err(ReportError::Unsuitable {
            input: profile.input.clone(),
            detail: "has no `age` sample labels, so one profile cannot tell old memory from new; \
                     pass three or more profiles of the process taken over time instead"
                .to_string(),
        });
    }
    let inuse = profile.stack_totals(index);
    let mut ranked: Vec<usize> = (0..profile.stacks.len())
        .filter(|&i| old.get(i).is_some_and(|v| *v != 0))
        .collect();
    let stacks = ranked.len();
    ranked.sort_by(|&a, &b| {
        old[b]
            .cmp(&old[a])
            .then_with(|| profile.stacks[a].key().cmp(profile.stacks[b].key()))
    });
    if n > 0 {
        ranked.truncate(n);
    }
    let rows = ranked
        .into_iter()
        .map(|i| AgeRow {
            frames: profile.stacks[i].frames.clone(),
            old: old[i],
            inuse: inuse.get(i).copied().unwrap_or(0),
        })
        .collect();
    Ok(AgeReport {
        input: profile.input.clone(),
        older_than_secs,
        sample: profile.sample_type(index),
        old_total,
        inuse_total: profile.total(index),
        unknown_age_total,
        stacks,
        rows,
        skipped_samples: profile.skipped_samples,
    })
}

/// The result of `heapprof leaks`.
#[derive(Clone, Debug)]
pub enum LeaksReport {
    Trend(TrendReport),
    Age(AgeReport),
}

/// One profile: [`leak_age`]; three or more: [`leak_trend`]; two: an error
/// pointing at `diff`.
pub fn leaks(
    profiles: &[Resolved],
    older_than_secs: u64,
    n: usize,
) -> Result<LeaksReport, ReportError> {
    match profiles {
        [] => Err(ReportError::Usage(
            "leaks needs one profile, or three or more of one process".to_string(),
        )),
        [one] => leak_age(one, older_than_secs, n).map(LeaksReport::Age),
        many => leak_trend(many, n).map(LeaksReport::Trend),
    }
}

impl fmt::Display for LeaksReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LeaksReport::Trend(t) => t.fmt(f),
            LeaksReport::Age(a) => a.fmt(f),
        }
    }
}

impl fmt::Display for TrendReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = &self.sample.unit;
        let first = self.profiles.first().map(|p| p.0.as_str()).unwrap_or("");
        let last = self.profiles.last().map(|p| p.0.as_str()).unwrap_or("");
        writeln!(
            f,
            "{} profiles over {:.1} s ({} … {}), by {}, leaf function first",
            self.profiles.len(),
            self.span_seconds,
            format::one_line(first),
            format::one_line(last),
            format::one_line(&self.sample.name)
        )?;
        format::skipped_note(f, self.skipped_samples)?;
        let intervals = self.profiles.len().saturating_sub(1);
        for (class, rows, count) in [
            (LeakClass::SteadyGrowth, &self.steady, self.steady_count),
            (LeakClass::Plateau, &self.plateau, self.plateau_count),
        ] {
            writeln!(f)?;
            writeln!(
                f,
                "{} ({count} stacks): {}:",
                class.label(),
                class.meaning()
            )?;
            if rows.is_empty() {
                writeln!(f, "  (none)")?;
            }
            for (i, row) in rows.iter().enumerate() {
                let first = row.series.first().copied().unwrap_or(0);
                let last = row.series.last().copied().unwrap_or(0);
                writeln!(
                    f,
                    "{:>4}. {} -> {}  rate {}  R² {:.2}  grew in {} of {} intervals",
                    i + 1,
                    format::value(first, unit),
                    format::value(last, unit),
                    format::rate(row.trend.slope, unit),
                    row.trend.r_squared,
                    (row.trend.grew_fraction * intervals as f64).round() as usize,
                    intervals
                )?;
                format::write_stack(f, "      ", 6, &row.frames)?;
            }
        }
        writeln!(f)?;
        writeln!(
            f,
            "churn ({} stacks): {}; not listed.",
            self.churn_count,
            LeakClass::Churn.meaning()
        )
    }
}

impl fmt::Display for AgeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = &self.sample.unit;
        writeln!(
            f,
            "{}: {} older than {} s (by the `age` sample label), leaf function first",
            format::one_line(&self.input),
            format::one_line(&self.sample.name),
            self.older_than_secs
        )?;
        writeln!(
            f,
            "old: {} of {} in use ({}); {} of unknown age (samples without an `age` label, not \
             counted as old)",
            format::value(self.old_total, unit),
            format::value(self.inuse_total, unit),
            format::share(self.old_total, self.inuse_total),
            format::value(self.unknown_age_total, unit)
        )?;
        writeln!(
            f,
            "Memory alive this long is a leak suspect, but so is anything long-lived by design \
             (caches, pools); three or more profiles over time tell steady growth from a \
             plateau."
        )?;
        format::skipped_note(f, self.skipped_samples)?;
        writeln!(f)?;
        writeln!(f, "{:>4}  {:>10}  {:>10}  stack", "rank", "old", "in use")?;
        if self.rows.is_empty() {
            writeln!(f, "  (none)")?;
        }
        for (i, row) in self.rows.iter().enumerate() {
            let prefix = format!(
                "{:>4}  {:>10}  {:>10}  ",
                i + 1,
                format::value(row.old, unit),
                format::value(row.inuse, unit)
            );
            format::write_stack(f, &prefix, 30, &row.frames)?;
        }
        Ok(())
    }
}

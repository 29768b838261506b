//! `heapprof leaks`: which stacks hold memory that is not coming back, with
//! a confidence, a leak rate and, when the samples are too few, how long to
//! wait — from one profile or a series.
//!
//! # The model
//!
//! heapprof samples allocations as a Poisson process over allocated bytes
//! (one sample per `rate` bytes on average, see [`crate::engine::sampler`]), so the
//! sampled allocations of one stack form a Poisson process in time whose
//! intensity is the stack's allocation rate over `rate`. A sampled object
//! stays in the profile, under the same stack, until it is freed. What a
//! verdict looks at is therefore the stack's **live samples** — raw counts,
//! not the scaled bytes (the scale is inverted per (stack, size) bucket, see
//! [`evidence`]) — and two things about them:
//!
//! - **the series** (two or more profiles of one process, ordered by
//!   `time_nanos`): a leak's sampled objects are never freed, so its live
//!   count never falls; churn's objects are freed, so its count rises and
//!   falls; a cache's count rises, then stops. A count that fell at all
//!   (by more than 2% of its peak, for big stacks) means freed samples:
//!   churn. The upward trend
//!   is tested one-sided with Mann–Kendall on the counts, which uses only
//!   their order (valid for small, heavily tied counts; no line is fitted);
//! - **the ages** (each live sample's numeric `age` label: whole seconds
//!   below 32 s, then 16 buckets per doubling,
//!   [`crate::profile::snapshot::age_bucket`]) against the **window**, the time since
//!   profiling started (the profile's `duration_nanos`): they say when each
//!   live sample was allocated. A leak's survivors were allocated at a
//!   steady pace, so their allocation times are uniform over the window; a
//!   cache's are all early, churn's all recent. This works on one profile.
//!   Without ages (Go's profiles) the allocation times are reconstructed
//!   from the rises of the series.
//!
//! **Busy time, not wall time.** A leak grows while the program works and
//! stands still while it idles; a cache stops growing while the program
//! stays busy. Over a series, the intervals between profiles in which the
//! program hardly allocated (its cumulative `alloc_space` moved at under a
//! tenth of its mean rate) are quiet, and every time above — the window,
//! the allocation times, the profiles' times — is counted in busy seconds,
//! the quiet intervals left out (the report names them). Without quiet
//! intervals busy time is wall time. So a leak that grew through 90 s of
//! load and then sat through 25 s of idling is growth all through its busy
//! window, not a plateau; a cache that filled in the load's first seconds
//! is still a plateau. The leak rate is per busy second.
//!
//! Per stack ([`Grouping::Stack`], or per label value with
//! [`Grouping::Label`]) the live samples of the last profile are split by
//! allocation time, as fractions `u` of the window, and [`judge`] decides:
//!
//! 1. **churn** when the count fell (above), or when no live sample is a
//!    *survivor* (allocated before `u = 2/3`, i.e. alive for a third of the
//!    window): churn's objects never get old;
//! 2. **plateau** when none is a *recent arrival* (allocated after
//!    `u = 1/2`) and a leak going on at the earlier rate would almost surely
//!    have added one (`e^−n < 5%`, three samples or more);
//! 3. churn or plateau, too, when the split of the live samples between
//!    the window's halves is one a leak (a fair coin per sample) would give
//!    with under 1% chance: far too few old ones (turnover) or new ones
//!    (growth stopping) — this catches big stacks that mix a cache or
//!    long-lived objects with churn. Not turnover, though, over a series
//!    of three or more whose count never fell and trends up: that is a
//!    leak that sped up (busier later), judged as growth with the low
//!    confidence its lopsided split earns;
//! 4. **not enough samples yet** for one live sample, or no recent arrival
//!    among one or two — with the wait until about six samples are
//!    expected at the stack's rate;
//! 5. **steady growth** otherwise: two or more live samples, never freed,
//!    survivors and recent arrivals both.
//!
//! Why this is safe against false alarms: churn's objects are freed within
//! much less than a third of the window, so rule 1 catches them whatever the
//! allocation rate (GB/s churn only adds young samples); a cache that filled
//! in the first half of the window has no sample allocated later, so rule 2
//! catches it however many samples it has. Churn whose objects live a
//! sizeable part of the window is caught by the series (its count falls);
//! one profile cannot tell it from a leak. Why it finds slow leaks: for a
//! leak with `m` expected samples over the window, the verdict fails only
//! when it has fewer than two, or all of them fall in the first half or in
//! the last third (or, rarely, split 1%-unevenly): about
//! `(m+1)e^−m + e^−m/2 + e^−2m/3`, 6% at six expected samples. The
//! simulation in `tests/leak_verdicts.rs` (Poisson sampling, 2000 seeds per
//! process) holds the classifier to at least 90% of such leaks found (99%
//! at twelve), leaks that speed up found over a series, and under 1% of
//! caches (3 to 100 samples, filled in the first 10–50% of the window), of
//! fast churn and, over a series, of slow churn (lives of 5–20% of the
//! window) called leaks.
//!
//! **The confidence** of a suspect is a p-value against the not-quite-leaks
//! the data cannot exclude outright, combined as an intersection–union test
//! (the largest of the p-values, which is valid without a multiplicity
//! correction): growth in the later half slowed to a quarter of the earlier
//! half's (the binomial tail of the later half's share of the samples with
//! `p = 1/5`), only a quarter of the earlier samples surviving (the same for
//! the earlier half), and, over three or more profiles, no upward trend
//! (Mann–Kendall). Below 1% it reads "high", below 10% "medium", else "low";
//! about 16 samples split evenly give "high".
//!
//! **The rate** is the live samples over the window, with an exact
//! (Garwood) 90% Poisson interval, times the in-use value per sample: bytes
//! per second for `inuse_space`, things per second for a count.
//!
//! A profile whose only sample type counts live things (`threads`/`count`,
//! say) is judged the same way: its values are the counts.
//!
//! What it cannot tell: objects that live longer than the whole window by
//! design (a session table whose entries last an hour, watched for ten
//! minutes) are indistinguishable from a leak until they are freed; a leak
//! that began in the last third of the window looks like churn until its
//! samples have survived; a container that grows by reallocation (one live
//! sample whose size doubles) is not a count of samples at all — `heapprof
//! diff` shows it.
//!
//! # Modes
//!
//! One profile or several: [`leak_verdicts`]. `--older-than SECS` on one
//! profile ranks stacks by memory at least that old instead ([`leak_age`]).

mod age;
pub mod evidence;
pub mod stats;
pub mod verdict;

use std::cmp::Reverse;
use std::fmt;

pub use age::{leak_age, AgeReport, AgeRow, DEFAULT_OLDER_THAN_SECS};
pub use evidence::{GroupKey, Grouping};
pub use verdict::{judge, Birth, Evidence, LeakClass, Verdict};

use super::format;
use super::model::{Frame, Resolved, SampleKind, SampleType};
use super::ReportError;

/// What `heapprof leaks` is asked.
#[derive(Clone, Debug, Default)]
pub struct LeakOptions {
    /// The value to judge: [`SampleKind::Default`] is `inuse_space`, or the
    /// profile's only count of live things.
    pub sample: SampleKind,
    pub group: Grouping,
    /// Rows per list (0 = all).
    pub n: usize,
    /// For one profile: rank by memory at least this old instead
    /// ([`leak_age`]).
    pub older_than_secs: Option<u64>,
}

/// One stack (or label value) of a [`VerdictReport`].
#[derive(Clone, Debug)]
pub struct VerdictRow {
    /// Leaf first; empty when grouped by label.
    pub frames: Vec<Frame>,
    /// The label value, when grouped by label (`None`: samples without it).
    pub label: Option<Option<String>>,
    pub verdict: Verdict,
    /// The selected value in each profile, in time order.
    pub series: Vec<i64>,
    /// Live samples in each profile.
    pub counts: Vec<u64>,
    /// The estimated leak rate in the sample's unit per second, with its
    /// 90% interval.
    pub rate: f64,
    pub rate_interval: (f64, f64),
}

impl VerdictRow {
    /// The value in the last profile.
    pub fn inuse(&self) -> i64 {
        self.series.last().copied().unwrap_or(0)
    }
}

/// The verdicts over one profile or a series.
#[derive(Clone, Debug)]
pub struct VerdictReport {
    pub sample: SampleType,
    /// Inputs and their `time_nanos`, in time order.
    pub profiles: Vec<(String, i64)>,
    /// Seconds from the first profile to the last.
    pub span_seconds: f64,
    /// Seconds from profiling's start to the last profile.
    pub window_seconds: f64,
    /// Of those, the seconds in which the program was busy (allocating):
    /// verdicts and rates are judged in busy time.
    pub busy_seconds: f64,
    /// Intervals between profiles in which the program hardly allocated
    /// (seconds from profiling's start), left out of busy time.
    pub quiet: Vec<(f64, f64)>,
    /// Whether the series said how busy the program was (two profiles or
    /// more with `alloc_space`).
    pub activity_measured: bool,
    /// The last profile's sampling rate (its period; 0 or 1 when unscaled).
    pub period: i64,
    /// Whether allocation times came from `age` labels (else from the
    /// series).
    pub from_ages: bool,
    pub group: Grouping,
    /// Steady growers, fastest first (the first `n`), and how many.
    pub steady: Vec<VerdictRow>,
    pub steady_count: usize,
    /// Plateaus, largest first.
    pub plateau: Vec<VerdictRow>,
    pub plateau_count: usize,
    /// Not enough samples yet, largest first.
    pub undecided: Vec<VerdictRow>,
    pub undecided_count: usize,
    /// How many stacks churned (never listed).
    pub churn_count: usize,
    pub skipped_samples: usize,
}

/// Profiles in time order, checked to be a series.
fn in_time_order(profiles: &[Resolved]) -> Result<Vec<&Resolved>, ReportError> {
    let mut order: Vec<&Resolved> = profiles.iter().collect();
    if order.len() < 2 {
        return Ok(order);
    }
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
    Ok(order)
}

/// The dump taken at exit that ends a series of three or more, when the
/// program had freed nearly all of its heap by then (by `inuse_space`,
/// under a hundredth of the most in use before, or two sampling periods,
/// what a sample or two left make; a program that freed most of its heap
/// while it ran and then exited keeps more than that): an interpreter's
/// shutdown (CPython frees its objects at exit) or a program that tears
/// down, not a moment of its steady state. Kept, it would make every stack's count fall at the
/// end and every leak read as churn. `series` in time order; its index and
/// the line that says it was left out.
pub fn shutdown_dump(series: &[Resolved]) -> Option<(usize, String)> {
    let (last, before) = series.split_last()?;
    if before.len() < 2 || !last.at_exit {
        return None;
    }
    let in_use = |r: &Resolved| {
        r.sample_index(&SampleKind::InuseSpace)
            .map_or(0, |i| r.total(i).max(0))
    };
    let most = before.iter().map(in_use).max().unwrap_or(0);
    let at_exit = in_use(last);
    // A sample or two left (an estimate of one sampling period each) is
    // nothing at a low rate.
    let nearly_nothing = (most / 100).max(2 * last.period.max(0));
    (most > 0 && at_exit < nearly_nothing && at_exit < most / 4).then(|| {
        (
            series.len() - 1,
            format!(
                "heapprof: left out {}: the dump at exit holds {} in use against {} before it: the program freed its heap as it shut down (interpreters do), which says nothing of what it held while it ran; the series ends at the dump before",
                last.input,
                format::value(at_exit, "bytes"),
                format::value(most, "bytes")
            ),
        )
    })
}

/// Judges every stack (or label value) with live samples across `profiles`
/// (one, or several of one process in any order: they are sorted by
/// `time_nanos`, which must then be set and distinct).
pub fn leak_verdicts(
    profiles: &[Resolved],
    opts: &LeakOptions,
) -> Result<VerdictReport, ReportError> {
    if profiles.is_empty() {
        return Err(ReportError::Usage(
            "leaks needs one profile or several of one process".to_string(),
        ));
    }
    super::one_kind(profiles)?;
    let order = in_time_order(profiles)?;
    let mut indices = Vec::with_capacity(order.len());
    for p in &order {
        let i = p.sample_index(&opts.sample)?;
        let name = &p.sample_type(i).name;
        if name.starts_with("alloc_") {
            return Err(ReportError::Usage(format!(
                "leaks judges what is live; {name} only ever grows: use --sample inuse_space or \
                 inuse_objects"
            )));
        }
        indices.push(i);
    }
    let last = order[order.len() - 1];
    let single_without_ages = order.len() == 1
        && last.duration_nanos <= 0
        && !last.samples.iter().any(|s| s.num_label("age").is_some());
    if single_without_ages && !last.samples.is_empty() {
        return Err(ReportError::Unsuitable {
            input: last.input.clone(),
            detail: "has no `age` sample labels and no duration, so one profile cannot tell old \
                     memory from new; pass several profiles of the process taken over time \
                     instead"
                .to_string(),
        });
    }
    let g = evidence::gather(&order, &indices, &opts.group)?;
    let (mut steady, mut plateau, mut undecided) = (Vec::new(), Vec::new(), Vec::new());
    let mut churn_count = 0;
    for group in g.groups {
        let verdict = judge(&group.evidence);
        let n = verdict.samples.max(1) as f64;
        let per_sample = group.values.last().copied().unwrap_or(0) as f64 / n;
        let row = VerdictRow {
            label: match &group.key {
                GroupKey::Label(v) => Some(v.clone()),
                GroupKey::Stack(_) => None,
            },
            frames: group.frames,
            rate: verdict.rate * per_sample,
            rate_interval: (
                verdict.rate_interval.0 * per_sample,
                verdict.rate_interval.1 * per_sample,
            ),
            verdict,
            series: group.values,
            counts: group.evidence.counts,
        };
        match row.verdict.class {
            LeakClass::SteadyGrowth => steady.push(row),
            LeakClass::Plateau => plateau.push(row),
            LeakClass::NotEnoughSamples => undecided.push(row),
            LeakClass::Churn => churn_count += 1,
        }
    }
    // Groups arrive in key order; stable sorts keep ties deterministic.
    steady.sort_by(|a, b| b.rate.total_cmp(&a.rate));
    plateau.sort_by_key(|r| Reverse(r.inuse()));
    undecided.sort_by_key(|r| Reverse(r.inuse()));
    let counts = (steady.len(), plateau.len(), undecided.len());
    if opts.n > 0 {
        steady.truncate(opts.n);
        plateau.truncate(opts.n);
        undecided.truncate(opts.n);
    }
    let first = order[0];
    Ok(VerdictReport {
        sample: g.sample,
        profiles: order
            .iter()
            .map(|p| (p.input.clone(), p.time_nanos))
            .collect(),
        span_seconds: (i128::from(last.time_nanos) - i128::from(first.time_nanos)) as f64 / 1e9,
        window_seconds: g.window,
        busy_seconds: g.busy_window,
        quiet: g.quiet,
        activity_measured: g.activity_measured,
        period: last.period,
        from_ages: g.from_ages,
        group: opts.group.clone(),
        steady,
        steady_count: counts.0,
        plateau,
        plateau_count: counts.1,
        undecided,
        undecided_count: counts.2,
        churn_count,
        skipped_samples: order.iter().map(|p| p.skipped_samples).sum(),
    })
}

/// The result of `heapprof leaks`.
#[derive(Clone, Debug)]
pub enum LeaksReport {
    Verdicts(VerdictReport),
    Age(AgeReport),
}

/// [`leak_age`] for one profile when `opts.older_than_secs` is set, else
/// [`leak_verdicts`].
pub fn leaks(profiles: &[Resolved], opts: &LeakOptions) -> Result<LeaksReport, ReportError> {
    match (profiles, opts.older_than_secs) {
        ([one], Some(secs)) => leak_age(one, secs, opts.n).map(LeaksReport::Age),
        (_, Some(_)) => Err(ReportError::Usage(
            "--older-than ranks one profile by age; pass one profile, or drop --older-than for \
             verdicts over a series"
                .to_string(),
        )),
        _ => leak_verdicts(profiles, opts).map(LeaksReport::Verdicts),
    }
}

impl fmt::Display for LeaksReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LeaksReport::Verdicts(t) => t.fmt(f),
            LeaksReport::Age(a) => a.fmt(f),
        }
    }
}

/// `about 4 more minutes`, `about 40 more seconds`.
fn wait_words(seconds: f64) -> String {
    if !seconds.is_finite() {
        return "a long while".to_string();
    }
    if seconds >= 90.0 {
        let minutes = (seconds / 60.0).ceil();
        if minutes >= 180.0 {
            return format!("about {:.0} more hours", (minutes / 60.0).ceil());
        }
        return format!("about {minutes:.0} more minutes");
    }
    format!("about {:.0} more seconds", seconds.ceil().max(1.0))
}

fn p_words(p: f64) -> String {
    if p < 0.001 {
        "p < 0.001".to_string()
    } else {
        format!("p = {p:.3}")
    }
}

fn percent(u: f64) -> String {
    format!("{:.0}%", (u * 100.0).clamp(0.0, 100.0))
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

impl VerdictReport {
    /// `1 stack`, `3 stacks`, or label values when grouped by label.
    fn groups(&self, n: u64) -> String {
        match self.group {
            Grouping::Stack => plural(n, "stack", "stacks"),
            Grouping::Label(_) => plural(n, "label value", "label values"),
        }
    }

    fn write_row(&self, f: &mut fmt::Formatter<'_>, i: usize, row: &VerdictRow) -> fmt::Result {
        let unit = &self.sample.unit;
        let v = &row.verdict;
        let samples = plural(v.samples, "live sample", "live samples");
        match v.class {
            LeakClass::SteadyGrowth => {
                writeln!(
                    f,
                    "{:>4}. rate {} (90%: {} to {}), {} in use; confidence {} ({})",
                    i + 1,
                    format::rate(row.rate, unit),
                    format::rate(row.rate_interval.0, unit),
                    format::rate(row.rate_interval.1, unit),
                    format::value(row.inuse(), unit),
                    v.confidence(),
                    p_words(v.p_value)
                )?;
                write!(
                    f,
                    "      {samples}, none freed, allocated from {} to {} of the window ({} in \
                     its first half, {} in the second)",
                    percent(v.oldest),
                    percent(v.youngest),
                    v.early,
                    v.late
                )?;
                match v.wait_seconds {
                    Some(s) => writeln!(f, "; high confidence in {} at this rate", wait_words(s))?,
                    None => writeln!(f)?,
                }
            }
            LeakClass::Plateau => writeln!(
                f,
                "{:>4}. {} in use, {samples}, all allocated in the first {} of the window",
                i + 1,
                format::value(row.inuse(), unit),
                percent(v.youngest)
            )?,
            _ => writeln!(
                f,
                "{:>4}. {} in use, {samples} (~{}): not enough samples yet: {} at this rate",
                i + 1,
                format::value(row.inuse(), unit),
                format::rate(row.rate, unit),
                wait_words(v.wait_seconds.unwrap_or(f64::INFINITY))
            )?,
        }
        match (&row.label, &self.group) {
            (Some(value), Grouping::Label(key)) => writeln!(
                f,
                "      {}={}",
                format::one_line(key),
                value
                    .as_deref()
                    .map_or("(none)".to_string(), format::one_line)
            ),
            _ => format::write_stack(f, "      ", 6, &row.frames),
        }
    }
}

impl fmt::Display for VerdictReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let first = self.profiles.first().map(|p| p.0.as_str()).unwrap_or("");
        let last = self.profiles.last().map(|p| p.0.as_str()).unwrap_or("");
        if self.profiles.len() == 1 {
            writeln!(f, "{}: one profile", format::one_line(first))?;
        } else {
            writeln!(
                f,
                "{} profiles, the first to the last {:.1} s apart ({} … {})",
                self.profiles.len(),
                self.span_seconds,
                format::one_line(first),
                format::one_line(last),
            )?;
        }
        writeln!(
            f,
            "window: {:.1} s since profiling started; by {}; live samples counted{}; allocation \
             times from {}; leaf function first",
            self.window_seconds,
            format::one_line(&self.sample.name),
            if self.period > 1 {
                format!(" at sampling rate {}", self.period)
            } else {
                String::new()
            },
            if self.from_ages {
                "the `age` labels"
            } else {
                "the series (no `age` labels)"
            }
        )?;
        if self.activity_measured && self.quiet.is_empty() {
            writeln!(
                f,
                "activity: the program allocated between every two profiles (busy all \
                 through the window)"
            )?;
        }
        if !self.quiet.is_empty() {
            let quiet: Vec<String> = self
                .quiet
                .iter()
                .map(|(a, b)| format!("{a:.1}–{b:.1} s"))
                .collect();
            writeln!(
                f,
                "activity: busy (allocating) {:.1} s of the window, quiet {}; growth is judged \
                 against busy time (a leak grows while the program works), and \"of the \
                 window\" below means of the busy time",
                self.busy_seconds,
                quiet.join(", ")
            )?;
        }
        format::skipped_note(f, self.skipped_samples)?;
        for (class, rows, count) in [
            (LeakClass::SteadyGrowth, &self.steady, self.steady_count),
            (LeakClass::Plateau, &self.plateau, self.plateau_count),
            (
                LeakClass::NotEnoughSamples,
                &self.undecided,
                self.undecided_count,
            ),
        ] {
            if class == LeakClass::NotEnoughSamples && count == 0 {
                continue;
            }
            writeln!(f)?;
            writeln!(
                f,
                "{} ({}): {}:",
                class.label(),
                self.groups(count as u64),
                class.meaning()
            )?;
            if rows.is_empty() {
                writeln!(f, "  (none)")?;
            }
            for (i, row) in rows.iter().enumerate() {
                self.write_row(f, i, row)?;
            }
        }
        writeln!(f)?;
        writeln!(
            f,
            "churn ({}): {}; not listed.",
            self.groups(self.churn_count as u64),
            LeakClass::Churn.meaning()
        )
    }
}

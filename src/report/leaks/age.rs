//! `heapprof leaks FILE --older-than SECS`: stacks ranked by in-use memory
//! older than a threshold, read from the `age` sample labels.

use std::fmt;

use crate::report::format;
use crate::report::model::{Frame, Resolved, SampleKind, SampleType};
use crate::report::ReportError;

/// `--older-than`'s default, in seconds.
pub const DEFAULT_OLDER_THAN_SECS: u64 = 60;

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

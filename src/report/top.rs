//! `heapprof top`: the heaviest stacks of one profile.

use std::fmt;

use super::format;
use super::model::{Frame, Resolved, SampleKind, SampleType};
use super::ReportError;

/// One stack of a [`TopReport`].
#[derive(Clone, Debug)]
pub struct TopRow {
    /// Leaf first.
    pub frames: Vec<Frame>,
    /// The sum of the selected value over the stack's samples.
    pub value: i64,
    /// `value` as a fraction of the profile's total (0 when the total is
    /// not positive).
    pub share: f64,
}

/// The heaviest stacks of one profile for one sample type.
#[derive(Clone, Debug)]
pub struct TopReport {
    pub input: String,
    pub sample: SampleType,
    /// The sum over all samples.
    pub total: i64,
    /// Stacks with a nonzero value (what `rows` is the head of).
    pub stacks: usize,
    /// Heaviest first; ties in stack order of frame identity, so output is
    /// deterministic.
    pub rows: Vec<TopRow>,
    pub skipped_samples: usize,
}

/// The `n` heaviest stacks (all when `n == 0`) by the value `kind` selects.
/// Stacks with a zero value (all freed, for `inuse_*`) are left out.
pub fn top(r: &Resolved, kind: &SampleKind, n: usize) -> Result<TopReport, ReportError> {
    let index = r.sample_index(kind)?;
    let totals = r.stack_totals(index);
    let total = r.total(index);
    let mut ranked: Vec<(usize, i64)> = totals
        .iter()
        .enumerate()
        .filter(|(_, v)| **v != 0)
        .map(|(i, v)| (i, *v))
        .collect();
    let stacks = ranked.len();
    ranked.sort_by(|a, b| {
        b.1.cmp(&a.1)
            .then_with(|| r.stacks[a.0].key().cmp(r.stacks[b.0].key()))
    });
    if n > 0 {
        ranked.truncate(n);
    }
    let rows = ranked
        .into_iter()
        .map(|(i, value)| TopRow {
            frames: r.stacks[i].frames.clone(),
            value,
            share: format::fraction(value, total),
        })
        .collect();
    Ok(TopReport {
        input: r.input.clone(),
        sample: r.sample_type(index),
        total,
        stacks,
        rows,
        skipped_samples: r.skipped_samples,
    })
}

impl fmt::Display for TopReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = &self.sample.unit;
        writeln!(f, "{}", format::one_line(&self.input))?;
        writeln!(
            f,
            "{}: total {} in {} stacks; the {} heaviest, leaf function first:",
            format::one_line(&self.sample.name),
            format::value(self.total, unit),
            self.stacks,
            self.rows.len()
        )?;
        format::skipped_note(f, self.skipped_samples)?;
        writeln!(f)?;
        writeln!(f, "{:>4}  {:>10}  {:>6}  stack", "rank", "value", "share")?;
        if self.rows.is_empty() {
            writeln!(f, "  (no stack has a nonzero value)")?;
        }
        for (i, row) in self.rows.iter().enumerate() {
            let prefix = format!(
                "{:>4}  {:>10}  {:>6}  ",
                i + 1,
                format::value(row.value, unit),
                format::share(row.value, self.total)
            );
            format::write_stack(f, &prefix, 26, &row.frames)?;
        }
        Ok(())
    }
}

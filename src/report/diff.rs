//! `heapprof diff`: per stack, NEW minus BASE.
//!
//! Location ids mean nothing across files, so stacks are matched by their
//! frames' identity ([`super::model::FrameKey`]): function, file and line for
//! symbolized frames, the offset in the mapped file (or the bare address)
//! otherwise.

use std::collections::HashMap;
use std::fmt;

use super::format;
use super::model::{Frame, FrameKey, Resolved, SampleKind, SampleType, Stack};
use super::ReportError;

/// One stack of a [`DiffReport`].
#[derive(Clone, Debug)]
pub struct DiffRow {
    /// Leaf first.
    pub frames: Vec<Frame>,
    /// The stack's value in BASE (0 when absent there).
    pub base: i64,
    /// The stack's value in NEW (0 when absent there).
    pub new: i64,
    /// `new - base` (saturating).
    pub delta: i64,
}

/// The stacks whose value changed between two profiles.
#[derive(Clone, Debug)]
pub struct DiffReport {
    pub base_input: String,
    pub new_input: String,
    pub sample: SampleType,
    pub base_total: i64,
    pub new_total: i64,
    /// Stacks whose value changed (what `rows` is the head of).
    pub changed: usize,
    /// Largest growth first, shrinking stacks last.
    pub rows: Vec<DiffRow>,
    pub skipped_samples: usize,
}

/// The `n` stacks (all when `n == 0`) that grew most from `base` to `new`,
/// by the value `kind` selects. The sample type is chosen in `base` and
/// must exist under the same name in `new`.
pub fn diff(
    base: &Resolved,
    new: &Resolved,
    kind: &SampleKind,
    n: usize,
) -> Result<DiffReport, ReportError> {
    super::one_kind([base, new])?;
    let base_index = base.sample_index(kind)?;
    let sample = base.sample_type(base_index);
    // Select in `new` by the same rule first, so that profiles of one shape
    // compare column for column even when sample type names repeat.
    let new_index = match new.sample_index(kind) {
        Ok(i) if new.sample_type(i).name == sample.name => i,
        _ => new.sample_index(&SampleKind::Other(sample.name.clone()))?,
    };

    let base_totals = base.stack_totals(base_index);
    let new_totals = new.stack_totals(new_index);
    // Stack identity -> (stack as first seen, base value, new value).
    let mut merged: HashMap<&[FrameKey], (&Stack, i64, i64)> = HashMap::new();
    for (stack, v) in base.stacks.iter().zip(&base_totals) {
        let e = merged.entry(stack.key()).or_insert((stack, 0, 0));
        e.1 = e.1.saturating_add(*v);
    }
    for (stack, v) in new.stacks.iter().zip(&new_totals) {
        let e = merged.entry(stack.key()).or_insert((stack, 0, 0));
        e.2 = e.2.saturating_add(*v);
    }
    let mut changed: Vec<(&Stack, i64, i64, i64)> = merged
        .into_values()
        .map(|(stack, b, v)| (stack, b, v, v.saturating_sub(b)))
        .filter(|row| row.3 != 0)
        .collect();
    changed.sort_by(|a, b| b.3.cmp(&a.3).then_with(|| a.0.key().cmp(b.0.key())));
    let changed_count = changed.len();
    if n > 0 {
        changed.truncate(n);
    }
    let rows = changed
        .into_iter()
        .map(|(stack, base, new, delta)| DiffRow {
            frames: stack.frames.clone(),
            base,
            new,
            delta,
        })
        .collect();
    Ok(DiffReport {
        base_input: base.input.clone(),
        new_input: new.input.clone(),
        sample,
        base_total: base.total(base_index),
        new_total: new.total(new_index),
        changed: changed_count,
        rows,
        skipped_samples: base.skipped_samples + new.skipped_samples,
    })
}

impl fmt::Display for DiffReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = &self.sample.unit;
        writeln!(f, "base: {}", format::one_line(&self.base_input))?;
        writeln!(f, "new:  {}", format::one_line(&self.new_input))?;
        writeln!(
            f,
            "{}: total {} -> {} ({}); {} stacks changed; largest growth first, leaf function \
             first:",
            format::one_line(&self.sample.name),
            format::value(self.base_total, unit),
            format::value(self.new_total, unit),
            format::signed_value(self.new_total.saturating_sub(self.base_total), unit),
            self.changed,
        )?;
        format::skipped_note(f, self.skipped_samples)?;
        writeln!(f)?;
        writeln!(
            f,
            "{:>4}  {:>11}  {:>10}  {:>10}  stack",
            "rank", "delta", "base", "new"
        )?;
        if self.rows.is_empty() {
            writeln!(f, "  (no stack changed)")?;
        }
        for (i, row) in self.rows.iter().enumerate() {
            let prefix = format!(
                "{:>4}  {:>11}  {:>10}  {:>10}  ",
                i + 1,
                format::signed_value(row.delta, unit),
                format::value(row.base, unit),
                format::value(row.new, unit)
            );
            format::write_stack(f, &prefix, 43, &row.frames)?;
        }
        Ok(())
    }
}

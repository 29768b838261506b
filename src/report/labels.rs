//! Heap labels in the reports: `--focus KEY=VALUE` keeps only the samples
//! carrying that string label, `--by KEY` splits a report by the values of
//! one label (in-use bytes per route, say).
//!
//! Labels are pprof string labels on samples (heapprof writes those of
//! [`crate::with_labels`], [`crate::labeled`] and `HEAPPROF_LABELS`; Go
//! writes none on heap profiles). A sample without the `--by` label falls in
//! the group [`NONE_GROUP`]. Grouping happens before each report's own work:
//! every group is a profile of its own (same stacks, fewer samples) given to
//! the ordinary [`top`](super::top()), [`diff`](super::diff()) or
//! [`leaks`](super::leaks()); groups are ordered by the figure that report
//! ranks by (value, growth, old memory), heaviest first. With three or more
//! profiles, `leaks --by` also fits each label value's total in-use series
//! and ranks the values by growth ([`super::leaks()`]).

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use super::format;
use super::model::{LabelValue, Resolved, ResolvedSample, SampleKind, SampleType};
use super::{DiffReport, ReportError, TopReport};

/// The group of samples that lack the `--by` label.
pub const NONE_GROUP: &str = "(none)";

/// A `--focus KEY=VALUE` filter: samples whose string label `key` is `value`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Focus {
    pub key: String,
    pub value: String,
}

impl FromStr for Focus {
    type Err = ReportError;

    fn from_str(s: &str) -> Result<Focus, ReportError> {
        match s.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok(Focus {
                key: k.to_string(),
                value: v.to_string(),
            }),
            _ => Err(ReportError::Usage(format!(
                "--focus needs KEY=VALUE, such as route=/users; got {s:?}"
            ))),
        }
    }
}

/// The value of the string label `key` on a sample, if it has one.
pub fn str_label<'a>(s: &'a ResolvedSample, key: &str) -> Option<&'a str> {
    s.labels.iter().find_map(|l| match &l.value {
        LabelValue::Str(v) if l.key == key => Some(v.as_str()),
        _ => None,
    })
}

/// `r` with only the samples for which `keep` holds (stacks unchanged).
fn filtered(r: &Resolved, keep: impl Fn(&ResolvedSample) -> bool) -> Resolved {
    let mut out = r.clone();
    out.samples.retain(keep);
    out
}

/// `r` with only the samples matching every filter (all of `r` for none).
pub fn focus(r: &Resolved, filters: &[Focus]) -> Resolved {
    filtered(r, |s| {
        filters
            .iter()
            .all(|f| str_label(s, &f.key) == Some(f.value.as_str()))
    })
}

/// Refuses a `--focus` that would select nothing because no sample of
/// `profiles` carries its label, or that value of it: a report of "total
/// 0 B" would read as "nothing there" rather than "wrong label". Names the
/// labels, or the label's values, that are there.
pub fn check_focus(profiles: &[&Resolved], filters: &[Focus]) -> Result<(), ReportError> {
    let input = match profiles {
        [one] => one.input.clone(),
        _ => "these profiles".to_string(),
    };
    let samples = || profiles.iter().flat_map(|p| p.samples.iter());
    for f in filters {
        let values: BTreeSet<&str> = samples().filter_map(|s| str_label(s, &f.key)).collect();
        if values.contains(f.value.as_str()) {
            continue;
        }
        let detail = if values.is_empty() {
            let keys: BTreeSet<&str> = samples()
                .flat_map(|s| s.labels.iter())
                .filter(|l| matches!(l.value, LabelValue::Str(_)))
                .map(|l| l.key.as_str())
                .collect();
            format!(
                "has no `{}` label, so --focus {}={} selects nothing; {}",
                format::one_line(&f.key),
                format::one_line(&f.key),
                format::one_line(&f.value),
                if keys.is_empty() {
                    "it has no string labels at all".to_string()
                } else {
                    format!(
                        "its labels: {}",
                        keys.into_iter()
                            .map(format::one_line)
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }
            )
        } else {
            format!(
                "has no sample with {}={}; its {} values: {}",
                format::one_line(&f.key),
                format::one_line(&f.value),
                format::one_line(&f.key),
                values
                    .into_iter()
                    .map(format::one_line)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        return Err(ReportError::Unsuitable {
            input: input.clone(),
            detail,
        });
    }
    Ok(())
}

/// The distinct values of label `key` over `profiles`, sorted, with
/// [`NONE_GROUP`] last when some sample lacks it.
pub fn label_values(profiles: &[&Resolved], key: &str) -> Vec<String> {
    let mut values = BTreeSet::new();
    let mut none = false;
    for s in profiles.iter().flat_map(|p| &p.samples) {
        match str_label(s, key) {
            Some(v) => {
                values.insert(v.to_string());
            }
            None => none = true,
        }
    }
    let mut out: Vec<String> = values.into_iter().collect();
    if none {
        out.push(NONE_GROUP.to_string());
    }
    out
}

/// The samples of `r` in group `value` of label `key`.
pub fn group(r: &Resolved, key: &str, value: &str) -> Resolved {
    filtered(r, |s| match str_label(s, key) {
        Some(v) => v == value,
        None => value == NONE_GROUP,
    })
}

/// One label value's report.
#[derive(Clone, Debug)]
pub struct LabelGroup<R> {
    /// The label's value, or [`NONE_GROUP`].
    pub value: String,
    pub report: R,
}

/// `heapprof top --by KEY`: per label value, its total and its heaviest
/// stacks; values heaviest first.
#[derive(Clone, Debug)]
pub struct TopBy {
    pub key: String,
    pub input: String,
    pub sample: SampleType,
    /// The total over every group.
    pub total: i64,
    pub groups: Vec<LabelGroup<TopReport>>,
}

/// [`super::top()`] per value of label `key` (`n` stacks in each).
pub fn top_by(r: &Resolved, key: &str, kind: &SampleKind, n: usize) -> Result<TopBy, ReportError> {
    let whole = super::top(r, kind, 1)?;
    let mut groups = Vec::new();
    for value in label_values(&[r], key) {
        let report = super::top(&group(r, key, &value), kind, n)?;
        groups.push(LabelGroup { value, report });
    }
    groups.sort_by_key(|g| std::cmp::Reverse(g.report.total));
    Ok(TopBy {
        key: key.to_string(),
        input: r.input.clone(),
        sample: whole.sample,
        total: whole.total,
        groups,
    })
}

/// `heapprof diff --by KEY`: per label value, its change and the stacks that
/// changed most; values that grew most first.
#[derive(Clone, Debug)]
pub struct DiffBy {
    pub key: String,
    pub base_input: String,
    pub new_input: String,
    pub sample: SampleType,
    pub groups: Vec<LabelGroup<DiffReport>>,
}

/// [`super::diff()`] per value of label `key` (over both profiles).
pub fn diff_by(
    base: &Resolved,
    new: &Resolved,
    key: &str,
    kind: &SampleKind,
    n: usize,
) -> Result<DiffBy, ReportError> {
    let whole = super::diff(base, new, kind, 1)?;
    let mut groups = Vec::new();
    for value in label_values(&[base, new], key) {
        let report = super::diff(&group(base, key, &value), &group(new, key, &value), kind, n)?;
        groups.push(LabelGroup { value, report });
    }
    let delta = |r: &DiffReport| r.new_total.saturating_sub(r.base_total);
    groups.sort_by_key(|g| std::cmp::Reverse(delta(&g.report)));
    Ok(DiffBy {
        key: key.to_string(),
        base_input: base.input.clone(),
        new_input: new.input.clone(),
        sample: whole.sample,
        groups,
    })
}

/// Writes one group's heading and report, passing the frames-per-stack
/// precision on.
fn write_group(
    f: &mut fmt::Formatter<'_>,
    key: &str,
    value: &str,
    report: &impl fmt::Display,
) -> fmt::Result {
    writeln!(f)?;
    writeln!(
        f,
        "== {} = {} ==",
        format::one_line(key),
        format::one_line(value)
    )?;
    match f.precision() {
        Some(depth) => write!(f, "{report:.depth$}"),
        None => write!(f, "{report}"),
    }
}

impl fmt::Display for TopBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = &self.sample.unit;
        writeln!(f, "{}", format::one_line(&self.input))?;
        writeln!(
            f,
            "{} by label `{}`: total {} in {} values:",
            format::one_line(&self.sample.name),
            format::one_line(&self.key),
            format::value(self.total, unit),
            self.groups.len()
        )?;
        writeln!(f)?;
        writeln!(
            f,
            "{:>10}  {:>6}  {}",
            "value",
            "share",
            format::one_line(&self.key)
        )?;
        for g in &self.groups {
            writeln!(
                f,
                "{:>10}  {:>6}  {}",
                format::value(g.report.total, unit),
                format::share(g.report.total, self.total),
                format::one_line(&g.value)
            )?;
        }
        for g in &self.groups {
            write_group(f, &self.key, &g.value, &g.report)?;
        }
        Ok(())
    }
}

impl fmt::Display for DiffBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = &self.sample.unit;
        writeln!(f, "base: {}", format::one_line(&self.base_input))?;
        writeln!(f, "new:  {}", format::one_line(&self.new_input))?;
        writeln!(
            f,
            "{} by label `{}`, largest growth first:",
            format::one_line(&self.sample.name),
            format::one_line(&self.key)
        )?;
        writeln!(f)?;
        writeln!(
            f,
            "{:>11}  {:>10}  {:>10}  {}",
            "delta",
            "base",
            "new",
            format::one_line(&self.key)
        )?;
        for g in &self.groups {
            let r = &g.report;
            writeln!(
                f,
                "{:>11}  {:>10}  {:>10}  {}",
                format::signed_value(r.new_total.saturating_sub(r.base_total), unit),
                format::value(r.base_total, unit),
                format::value(r.new_total, unit),
                format::one_line(&g.value)
            )?;
        }
        for g in &self.groups {
            write_group(f, &self.key, &g.value, &g.report)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::proto::{Label, Location, Profile, Sample, ValueType};

    /// A profile with one stack and one sample per (route, in-use bytes).
    fn profile(time: i64, samples: &[(Option<&str>, i64)]) -> Resolved {
        let mut p = Profile {
            string_table: ["", "inuse_space", "bytes", "route"]
                .map(String::from)
                .to_vec(),
            time_nanos: time,
            ..Default::default()
        };
        p.sample_type.push(ValueType { r#type: 1, unit: 2 });
        p.location.push(Location {
            id: 1,
            address: 0x1000,
            ..Default::default()
        });
        for &(route, v) in samples {
            let mut label = Vec::new();
            if let Some(r) = route {
                p.string_table.push(r.to_string());
                label.push(Label {
                    key: 3,
                    str: p.string_table.len() as i64 - 1,
                    ..Default::default()
                });
            }
            p.sample.push(Sample {
                location_id: vec![1],
                value: vec![v],
                label,
            });
        }
        Resolved::from_profile(&format!("t{time}"), &p).unwrap()
    }

    #[test]
    fn focus_and_groups() {
        let r = profile(
            1,
            &[
                (Some("/a"), 10),
                (Some("/b"), 30),
                (None, 5),
                (Some("/a"), 1),
            ],
        );
        let a = focus(&r, &["route=/a".parse().unwrap()]);
        assert_eq!(a.total(0), 11);
        assert_eq!(label_values(&[&r], "route"), ["/a", "/b", NONE_GROUP]);
        let by = top_by(&r, "route", &SampleKind::Default, 0).unwrap();
        let got: Vec<(&str, i64)> = by
            .groups
            .iter()
            .map(|g| (g.value.as_str(), g.report.total))
            .collect();
        assert_eq!(got, [("/b", 30), ("/a", 11), (NONE_GROUP, 5)]);
        assert_eq!(by.total, 46);
        let text = by.to_string();
        assert!(text.contains("== route = /b =="), "{text}");
        assert!("route".parse::<Focus>().is_err());
    }

    #[test]
    fn diff_ranks_label_values_by_growth() {
        let base = profile(1, &[(Some("/a"), 10), (Some("/b"), 30)]);
        let new = profile(2, &[(Some("/a"), 50), (Some("/b"), 20)]);
        let d = diff_by(&base, &new, "route", &SampleKind::Default, 0).unwrap();
        let order: Vec<&str> = d.groups.iter().map(|g| g.value.as_str()).collect();
        assert_eq!(order, ["/a", "/b"]);
    }
}

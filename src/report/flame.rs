//! `heapprof flamegraph`: an SVG flame graph drawn by inferno from folded
//! stacks (`root;…;leaf value`).

use std::collections::BTreeMap;

#[cfg(feature = "cli")]
use inferno::flamegraph::{self, color, Options};

use super::model::{Frame, Resolved, SampleKind, SampleType};
use super::ReportError;

/// Folded stacks for the value `kind` selects: one line per distinct stack
/// of function names (file and line are dropped so one function is one box),
/// root first, sorted, with positive values only — a flame graph cannot draw
/// negative or zero widths.
pub fn folded(r: &Resolved, kind: &SampleKind) -> Result<(SampleType, Vec<String>), ReportError> {
    let (sample, stacks) = folded_stacks(r, kind)?;
    let lines = stacks
        .into_iter()
        .map(|(stack, v)| format!("{stack} {v}"))
        .collect();
    Ok((sample, lines))
}

/// [`folded`] as (stack, value) pairs, sorted by stack.
fn folded_stacks(
    r: &Resolved,
    kind: &SampleKind,
) -> Result<(SampleType, Vec<(String, i64)>), ReportError> {
    let index = r.sample_index(kind)?;
    let mut merged: BTreeMap<String, i64> = BTreeMap::new();
    for (stack, v) in r.stacks.iter().zip(r.stack_totals(index)) {
        if v <= 0 {
            continue;
        }
        let mut line = String::new();
        for (i, frame) in stack.frames.iter().rev().enumerate() {
            if i > 0 {
                line.push(';');
            }
            line.push_str(&folded_name(frame));
        }
        if line.is_empty() {
            line.push_str("[no frames]");
        }
        let e = merged.entry(line).or_insert(0);
        *e = e.saturating_add(v);
    }
    Ok((r.sample_type(index), merged.into_iter().collect()))
}

/// A frame name safe inside a folded line: `;` separates frames and line
/// breaks separate stacks, so neither may appear (Rust names such as
/// `<[u8; 4]>::fmt` contain `;`). inferno reads a number after the last space
/// before the count as a second count (a differential graph), so a name
/// ending in ` 2`, say, gets a no-break space there instead.
fn folded_name(frame: &Frame) -> String {
    let name: String = frame
        .name()
        .chars()
        .map(|c| match c {
            ';' => ':',
            c if c.is_control() => ' ',
            c => c,
        })
        .collect();
    let mut name = name.trim().to_string();
    if let Some(i) = name.rfind(' ') {
        let token = &name[i + 1..];
        if token.chars().all(|c| c.is_ascii_digit() || c == '.') {
            name.replace_range(i..=i, "\u{a0}");
        }
    }
    if name.is_empty() {
        "[unnamed]".to_string()
    } else {
        name
    }
}

/// inferno adds counts up in a `u64`; totals beyond this are scaled down
/// (and its `factor` scales the labels back), so hostile values cannot
/// overflow it.
#[cfg(feature = "cli")]
const MAX_FLAME_TOTAL: u128 = 1 << 62;

/// The SVG flame graph of `r` for the value `kind` selects, titled with the
/// input and the sample type. Colors are hashed from function names, so the
/// same profile always gives the same picture.
#[cfg(feature = "cli")]
pub fn flamegraph(r: &Resolved, kind: &SampleKind) -> Result<Vec<u8>, ReportError> {
    let (sample, lines) = folded_stacks(r, kind)?;
    if lines.is_empty() {
        return Err(ReportError::Unsuitable {
            input: r.input.clone(),
            detail: format!(
                "has no stacks with a positive {} value, so there is nothing to draw (try \
                 another --sample, e.g. alloc_space)",
                sample.name
            ),
        });
    }
    let total: u128 = lines.iter().map(|(_, v)| *v as u128).sum();
    let divisor = if total > MAX_FLAME_TOTAL {
        total / MAX_FLAME_TOTAL + 1
    } else {
        1
    };
    let lines: Vec<String> = lines
        .into_iter()
        .map(|(stack, v)| (stack, v as u128 / divisor))
        .filter(|(_, v)| *v > 0)
        .map(|(stack, v)| format!("{stack} {v}"))
        .collect();
    let mut options = Options::default();
    options.factor = divisor as f64;
    options.title = format!("{} — {}", r.input, sample.name);
    options.count_name = if sample.unit.is_empty() {
        "samples".to_string()
    } else {
        sample.unit.clone()
    };
    options.colors = color::Palette::Basic(color::BasicPalette::Mem);
    options.hash = true;
    let mut svg = Vec::new();
    flamegraph::from_lines(&mut options, lines.iter().map(String::as_str), &mut svg).map_err(
        |e| ReportError::Unsuitable {
            input: r.input.clone(),
            detail: format!("could not be drawn as a flame graph: {e}"),
        },
    )?;
    Ok(svg)
}

/// [`flamegraph()`], written to `path` (through a temporary file renamed into
/// place, so a failed run never leaves half an SVG).
#[cfg(feature = "cli")]
pub fn write_flamegraph(
    r: &Resolved,
    kind: &SampleKind,
    path: &std::path::Path,
) -> Result<(), ReportError> {
    let svg = flamegraph(r, kind)?;
    let shown = path.display().to_string();
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let result = std::fs::write(&tmp, &svg).and_then(|()| std::fs::rename(&tmp, path));
    if let Err(error) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(ReportError::Write { path: shown, error });
    }
    Ok(())
}

//! `heapprof flamegraph`: an SVG flame graph drawn by inferno from folded
//! stacks (`root;…;leaf value`).

use std::collections::BTreeMap;
use std::path::Path;

use inferno::flamegraph::{self, color, Options};

use super::model::{Frame, Resolved, SampleKind, SampleType};
use super::ReportError;

/// Folded stacks for the value `kind` selects: one line per distinct stack
/// of function names (file and line are dropped so one function is one box),
/// root first, sorted, with positive values only — a flame graph cannot draw
/// negative or zero widths.
pub fn folded(r: &Resolved, kind: &SampleKind) -> Result<(SampleType, Vec<String>), ReportError> {
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
        // inferno reads a trailing number after a space as a second count
        // (a differential graph): keep a leaf like `foo 2` from looking so.
        if line.rsplit(' ').next().is_some_and(|t| {
            line.contains(' ') && t.chars().all(|c| c.is_ascii_digit() || c == '.')
        }) {
            line.push('\u{a0}');
        }
        let e = merged.entry(line).or_insert(0);
        *e = e.saturating_add(v);
    }
    let lines = merged
        .into_iter()
        .map(|(stack, v)| format!("{stack} {v}"))
        .collect();
    Ok((r.sample_type(index), lines))
}

/// A frame name safe inside a folded line: `;` separates frames and line
/// breaks separate stacks, so neither may appear (Rust names such as
/// `<[u8; 4]>::fmt` contain `;`).
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
    let name = name.trim();
    if name.is_empty() {
        "[unnamed]".to_string()
    } else {
        name.to_string()
    }
}

/// The SVG flame graph of `r` for the value `kind` selects, titled with the
/// input and the sample type. Colors are hashed from function names, so the
/// same profile always gives the same picture.
pub fn flamegraph(r: &Resolved, kind: &SampleKind) -> Result<Vec<u8>, ReportError> {
    let (sample, lines) = folded(r, kind)?;
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
    let mut options = Options::default();
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

/// [`flamegraph`], written to `path` (through a temporary file renamed into
/// place, so a failed run never leaves half an SVG).
pub fn write_flamegraph(r: &Resolved, kind: &SampleKind, path: &Path) -> Result<(), ReportError> {
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

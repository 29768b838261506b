//! Shared text formatting for the reports: human-readable values, shares,
//! stacks.

use std::fmt::{self, Write as _};

use super::model::Frame;

/// Frames printed per stack unless the formatter's precision says otherwise
/// (`format!("{report:.8}")`; `.0` prints all): the leaf end is what tells
/// allocation sites apart.
pub const DEFAULT_DEPTH: usize = 24;

/// `1.5 MiB`, `512 B`, `-3.0 KiB`.
pub fn human_bytes(v: i64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let magnitude = v.unsigned_abs();
    if magnitude < 1024 {
        return format!("{v} B");
    }
    let sign = if v < 0 { "-" } else { "" };
    let mut x = magnitude as f64 / 1024.0;
    let mut unit = 0;
    while x >= 1024.0 && unit + 1 < UNITS.len() {
        x /= 1024.0;
        unit += 1;
    }
    format!("{sign}{x:.1} {}", UNITS[unit])
}

/// A value in its sample type's unit: sizes for bytes, plain numbers with
/// the unit otherwise (`count` is left out: it reads as "objects").
pub fn value(v: i64, unit: &str) -> String {
    match unit {
        "bytes" => human_bytes(v),
        "count" | "" => v.to_string(),
        other => format!("{v} {other}"),
    }
}

/// Like [`value`] with an explicit `+` on growth, for differences.
pub fn signed_value(v: i64, unit: &str) -> String {
    if v > 0 {
        format!("+{}", value(v, unit))
    } else {
        value(v, unit)
    }
}

/// A rate per second in the unit: `1.5 MiB/s`, `12.0 count/s`.
pub fn rate(per_second: f64, unit: &str) -> String {
    if !per_second.is_finite() {
        return "?".to_string();
    }
    if unit == "bytes" {
        // Sizes below 1 B/s still matter for slow leaks: show them exactly.
        if per_second.abs() < 1024.0 {
            return format!("{per_second:.1} B/s");
        }
        // Saturating conversion: f64 -> i64 `as` clamps, never panics.
        return format!("{}/s", human_bytes(per_second as i64));
    }
    let unit = if unit.is_empty() { "count" } else { unit };
    format!("{per_second:.2} {unit}/s")
}

/// `12.3%` of `total`; `-` when the total is not positive.
pub fn share(v: i64, total: i64) -> String {
    if total <= 0 {
        return "-".to_string();
    }
    format!("{:.1}%", v as f64 * 100.0 / total as f64)
}

/// The fraction `v / total` (0 when the total is not positive).
pub fn fraction(v: i64, total: i64) -> f64 {
    if total <= 0 {
        0.0
    } else {
        v as f64 / total as f64
    }
}

/// Writes a stack one frame per line, leaf first: the first line after
/// `first_prefix`, the rest after `indent` spaces. The formatter's precision,
/// when given, is the number of frames to print (0: all).
pub fn write_stack(
    f: &mut fmt::Formatter<'_>,
    first_prefix: &str,
    indent: usize,
    frames: &[Frame],
) -> fmt::Result {
    let depth = match f.precision() {
        None => DEFAULT_DEPTH,
        Some(0) => usize::MAX,
        Some(d) => d,
    };
    if frames.is_empty() {
        return writeln!(f, "{first_prefix}(no frames)");
    }
    for (i, frame) in frames.iter().take(depth).enumerate() {
        let line = frame_line(frame);
        if i == 0 {
            writeln!(f, "{first_prefix}{line}")?;
        } else {
            writeln!(f, "{:indent$}{line}", "")?;
        }
    }
    if frames.len() > depth {
        writeln!(f, "{:indent$}… {} more frames", "", frames.len() - depth)?;
    }
    Ok(())
}

/// A frame as reports print it: `name (file:line)` with the file shortened
/// by [`short_path`], on one line.
pub fn frame_line(frame: &Frame) -> String {
    let mut line = frame.name();
    let file = short_path(&frame.file);
    match (file.is_empty(), frame.line > 0) {
        (false, true) => {
            let _ = write!(line, " ({file}:{})", frame.line);
        }
        (false, false) => {
            let _ = write!(line, " ({file})");
        }
        _ => {}
    }
    one_line(&line)
}

/// Drops the parts of a source path that say nothing about the code: the
/// toolchain hash in Rust's standard library paths
/// (`/rustc/<hash>/library/alloc/src/vec/mod.rs` → `library/alloc/src/vec/mod.rs`)
/// and the registry directory of crates
/// (`~/.cargo/registry/src/index.crates.io-<hash>/serde-1.0.0/src/de.rs` →
/// `serde-1.0.0/src/de.rs`). Other paths are kept whole.
pub fn short_path(path: &str) -> &str {
    if let Some(i) = path.find("/rustc/") {
        let rest = &path[i + "/rustc/".len()..];
        if let Some((hash, tail)) = rest.split_once('/') {
            if hash.len() >= 7 && hash.chars().all(|c| c.is_ascii_hexdigit()) {
                return tail;
            }
        }
    }
    for marker in ["/.cargo/registry/src/", "/.cargo/git/checkouts/"] {
        if let Some(i) = path.find(marker) {
            if let Some((_, tail)) = path[i + marker.len()..].split_once('/') {
                return tail;
            }
        }
    }
    path
}

/// Control characters from a hostile profile's strings must not move the
/// terminal or forge lines of output.
pub fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// The note reports print when they skipped malformed samples.
pub fn skipped_note(f: &mut std::fmt::Formatter<'_>, skipped: usize) -> std::fmt::Result {
    if skipped > 0 {
        writeln!(
            f,
            "note: {skipped} malformed samples skipped (value count not matching the sample \
             types, or an undefined location)"
        )?;
    }
    Ok(())
}

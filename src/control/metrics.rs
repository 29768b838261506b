//! `/metrics`: heap estimates in the Prometheus text exposition format
//! (version 0.0.4), so the memory graph a team already watches can say
//! which route or tenant holds the memory.
//!
//! # Model
//! A scrape reads running totals, never a profile: the aggregator keeps,
//! per label set, the estimated in-use and allocated bytes and objects as
//! it applies records (`aggregate::Totals`). A scrape drains the
//! buffers (what a dump does first, without the snapshot, symbolization or
//! encoding) and sums the label sets per value of each label key. Label
//! sets are bounded by design (routes, tenants), so the series are too;
//! per-stack series are not exported.
//!
//! Each heap metric comes once without labels (the process's total) and
//! once per value of every heap label key, under a Prometheus label named
//! after the key (`route="/users"`; samples without the key under
//! `"(none)"`). Sum one key's series, never the unlabelled with the
//! labelled: `sum(heapprof_heap_inuse_bytes{route!=""})`. Process labels
//! (`HEAPPROF_LABELS`) are not repeated here: they are the scrape target's
//! labels in Prometheus's configuration.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::engine::aggregate::Totals;
use crate::profile::dump::{self, Trigger};

/// The `Content-Type` of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A label key as a Prometheus label name: `[a-zA-Z_][a-zA-Z0-9_]*`, and
/// not starting with `__` (reserved).
fn label_name(key: &str) -> String {
    let mut s: String = key
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if s.is_empty() || s.starts_with(|c: char| c.is_ascii_digit()) || s.starts_with("__") {
        s.insert_str(0, "label_");
    }
    s
}

/// A label value, escaped as the format wants (`\\`, `\"`, `\n`).
fn label_value(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Per label key, per value, the summed totals.
type ByLabel = BTreeMap<String, BTreeMap<String, Totals>>;

fn add(a: &mut Totals, b: &Totals) {
    a.inuse_bytes += b.inuse_bytes;
    a.inuse_objects += b.inuse_objects;
    a.alloc_bytes += b.alloc_bytes;
    a.alloc_objects += b.alloc_objects;
    a.samples += b.samples;
}

/// The totals per label set, summed in total and per (key, value).
fn group(sets: &[(u32, Totals)]) -> (Totals, ByLabel) {
    let mut total = Totals::default();
    let mut by: ByLabel = BTreeMap::new();
    for (_, t) in sets {
        add(&mut total, t);
    }
    let pairs: Vec<&crate::engine::labels::Pairs> = sets
        .iter()
        .map(|(id, _)| crate::engine::labels::pairs(*id))
        .collect();
    for p in &pairs {
        for (k, _) in p.iter() {
            by.entry(label_name(k)).or_default();
        }
    }
    for (key, values) in by.iter_mut() {
        for ((_, t), p) in sets.iter().zip(&pairs) {
            let v = p
                .iter()
                .find(|(k, _)| label_name(k) == *key)
                .map_or("(none)", |(_, v)| &**v);
            add(values.entry(v.to_string()).or_default(), t);
        }
    }
    (total, by)
}

/// Estimates are never negative, whatever rounding left.
fn gauge(v: f64) -> f64 {
    v.max(0.0).round()
}

/// (name, type, help, the value from a label set's totals).
type HeapMetric = (&'static str, &'static str, &'static str, fn(&Totals) -> f64);

/// The whole `/metrics` page.
pub fn render() -> String {
    let sets: Vec<(u32, Totals)> = crate::engine::aggregate::with(|a| a.totals().collect());
    let (total, by) = group(&sets);
    let mut out = String::with_capacity(4096);
    let heap: [HeapMetric; 4] = [
        (
            "heapprof_heap_inuse_bytes",
            "gauge",
            "Estimated heap bytes in use (sampled allocations not yet freed, scaled).",
            |t| gauge(t.inuse_bytes),
        ),
        (
            "heapprof_heap_inuse_objects",
            "gauge",
            "Estimated heap objects in use.",
            |t| gauge(t.inuse_objects),
        ),
        (
            "heapprof_heap_allocated_bytes_total",
            "counter",
            "Estimated heap bytes allocated since profiling started.",
            |t| gauge(t.alloc_bytes),
        ),
        (
            "heapprof_heap_allocated_objects_total",
            "counter",
            "Estimated heap objects allocated since profiling started.",
            |t| gauge(t.alloc_objects),
        ),
    ];
    for (name, kind, help, value) in heap {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        let _ = writeln!(out, "{name} {}", value(&total));
        for (key, values) in &by {
            for (v, t) in values {
                let _ = writeln!(out, "{name}{{{key}=\"{}\"}} {}", label_value(v), value(t));
            }
        }
    }
    let threads = if crate::profile::threads_pprof::tracking() {
        Some(crate::profile::threads_pprof::live_count() as u64)
    } else {
        crate::os::fds::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Threads:"))
                    .and_then(|n| n.trim().parse().ok())
            })
    };
    if let Some(n) = threads {
        let _ = writeln!(
            out,
            "# HELP heapprof_threads Live threads of the process.\n# TYPE heapprof_threads gauge\nheapprof_threads {n}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP heapprof_samples_total Allocations sampled since profiling started.\n# TYPE heapprof_samples_total counter\nheapprof_samples_total {}",
        total.samples
    );
    let _ = writeln!(
        out,
        "# HELP heapprof_dumps_total Profiles taken, by what took them.\n# TYPE heapprof_dumps_total counter"
    );
    for t in Trigger::ALL {
        let _ = writeln!(
            out,
            "heapprof_dumps_total{{trigger=\"{}\"}} {}",
            t.name(),
            dump::dumps(t)
        );
    }
    let _ = writeln!(
        out,
        "# HELP heapprof_dropped_records_total Sample records lost (buffers full, or no memory to apply them).\n# TYPE heapprof_dropped_records_total counter\nheapprof_dropped_records_total {}",
        crate::engine::buffer::dropped_records() + crate::engine::pressure::dropped_records()
    );
    let _ = writeln!(
        out,
        "# HELP heapprof_sampling_rate_bytes Mean bytes between samples (1: every allocation; 0: off).\n# TYPE heapprof_sampling_rate_bytes gauge\nheapprof_sampling_rate_bytes {}",
        crate::engine::rate()
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_names_and_values_are_valid() {
        assert_eq!(label_name("route"), "route");
        assert_eq!(label_name("thread-name.x"), "thread_name_x");
        assert_eq!(label_name("9lives"), "label_9lives");
        assert_eq!(label_name("__name__"), "label___name__");
        assert_eq!(label_value("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}

//! `heapprof report FILE... -o report.html`: one self-contained HTML page of
//! memory over time from a series of dumps of one process.
//!
//! # Model
//! The dumps are put in time order ([`Dump`]s, each a [`Resolved`] profile
//! with what its comments and file name say: program, pid, trigger, RSS).
//! Stacks are matched across dumps by their frames' identity (as `leaks`
//! and `diff` do) and written **once**, as lists of indices into one table
//! of function names; each dump contributes only numbers: its in-use total,
//! the value of each charted stack, of each label value, its RSS and its
//! cgroup's limit when the profile's comments carry `rss_anon=BYTES` and
//! `memory_limit=BYTES`, and what took it (`trigger=NAME`). A peak profile
//! among the inputs (`PREFIX.PID.peak.pb.gz`, comment `heapprof peak:`) is
//! no point of the series: its samples make a third flame graph, *at the
//! peak*. The last dump's samples
//! go in whole (stack, value, allocation time from the `age` label, label
//! values), which is everything both flame graphs need: *in use at the end*
//! sums them all; *growth over a window* sums those allocated inside the
//! window picked on the chart — what was allocated then and is still live.
//!
//! The charted stacks are the heaviest at the end, the fastest growing
//! (last minus first), and every leak suspect of
//! [`leak_verdicts`], whose table links each row to
//! its series.
//!
//! # The page
//! Data is one JSON object in a `<script type=application/json>` element;
//! the drawing is hand-written SVG in one inline script (`html/report.js`):
//! a stacked-area chart with a brush, a legend, the verdict table and
//! icicle-style flame graphs with zoom and search. Hand-written rather than
//! a vendored chart library because the page needs brushing, highlight
//! linking and flame graphs together, which no one small library gives
//! (uPlot has no flame graph, inferno's SVG is per file and has no time
//! axis), and a few hundred lines of script keep the file small and the
//! page free of anything fetched. Nothing on the page reaches the network.
//!
//! The script writes `<div id=status>ok N points</div>` when it has drawn
//! (N: points on the chart, one per dump) and any error into `#errors`, so a
//! headless browser's DOM dump says whether the page worked. `#window=A,B`
//! (seconds from the first dump) selects the growth window on load.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::Path;

use super::leaks::{leak_verdicts, Grouping, LeakOptions};
use super::model::{FrameKey, LabelValue, Resolved, SampleKind};
use super::ReportError;

/// The page's script and style, inline in every report.
const SCRIPT: &str = include_str!("html/report.js");
const STYLE: &str = include_str!("html/report.css");

/// Stacks charted: the heaviest at the end and the fastest growing, each.
const TOP_STACKS: usize = 8;
/// Leak suspects charted (and rows in the verdict table per class).
const MAX_SUSPECTS: usize = 10;
const MAX_VERDICT_ROWS: usize = 40;
/// Values per label key charted; the rest are summed as `(other)`.
const MAX_LABEL_VALUES: usize = 12;

/// One dump with what the report shows about it beyond its samples.
#[derive(Clone, Debug)]
pub struct Dump {
    pub profile: Resolved,
    /// The program (the first mapping's file), when the profile says.
    pub program: Option<String>,
    pub pid: Option<u32>,
    /// What made it (`interval`, `signal`, `http`…), when recorded.
    pub trigger: Option<String>,
    /// The process's anonymous resident memory, when recorded.
    pub rss: Option<i64>,
    /// Its cgroup's memory limit, when recorded.
    pub limit: Option<i64>,
    /// A peak profile (`PREFIX.PID.peak.pb.gz`): the live heap at the
    /// highest estimated in-use heap, drawn as a flame graph of its own.
    pub peak: bool,
}

/// Reads, decodes and resolves the dump at `path` (see [`parse_dump`]).
pub fn load_dump(path: impl AsRef<Path>) -> Result<Dump, ReportError> {
    let path = path.as_ref();
    let shown = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|error| ReportError::Read {
        path: shown.clone(),
        error,
    })?;
    parse_dump(&shown, &bytes)
}

/// Decodes a dump from its bytes; besides the profile, reads `key=value`
/// words of its comments (`trigger`, `rss_anon`, `pid`, each optional) and
/// the pid from a `PREFIX.PID.SEQ.pb.gz` name.
pub fn parse_dump(input: &str, bytes: &[u8]) -> Result<Dump, ReportError> {
    let p = super::decode_any(input, bytes)?;
    let string = |i: i64| {
        usize::try_from(i)
            .ok()
            .and_then(|i| p.string_table.get(i))
            .cloned()
            .unwrap_or_default()
    };
    let comments: Vec<String> = p.comment.iter().map(|&c| string(c)).collect();
    let word = |key: &str| {
        comments.iter().find_map(|c| {
            c.split_whitespace()
                .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
                .map(str::to_string)
        })
    };
    let program = p
        .mapping
        .first()
        .map(|m| string(m.filename))
        .filter(|f| !f.is_empty());
    let pid = word("pid")
        .and_then(|v| v.parse().ok())
        .or_else(|| pid_from_name(input));
    let dump = Dump {
        trigger: word("trigger"),
        rss: word("rss_anon").and_then(|v| v.parse().ok()),
        limit: word("memory_limit").and_then(|v| v.parse().ok()),
        peak: comments
            .iter()
            .any(|c| c.starts_with(crate::profile::pprof::PEAK_COMMENT)),
        pid,
        program,
        profile: Resolved::from_profile(input, &p)?,
    };
    Ok(dump)
}

/// A placeholder while a dump's profile is lent out.
fn empty_profile() -> Resolved {
    Resolved {
        input: String::new(),
        sample_types: Vec::new(),
        default_sample_type: None,
        period_type: None,
        period: 0,
        time_nanos: 0,
        duration_nanos: 0,
        stacks: Vec::new(),
        samples: Vec::new(),
        skipped_samples: 0,
        rss_anon: None,
        main_file: None,
        peak: false,
        at_exit: false,
    }
}

/// The PID of a `PREFIX.PID.SEQ.pb.gz` (or `PREFIX.PID.SEQ.KIND.pb.gz`)
/// file name.
fn pid_from_name(name: &str) -> Option<u32> {
    let base = name.rsplit('/').next()?;
    let stem = base.strip_suffix(".pb.gz")?;
    let parts: Vec<&str> = stem.split('.').collect();
    let numeric = |s: &&str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    // The last two all-digit words in a row are PID and SEQ.
    (1..parts.len())
        .rev()
        .find(|&i| numeric(&parts[i]) && numeric(&parts[i - 1]))
        .and_then(|i| parts[i - 1].parse().ok())
}

/// The report page for `dumps` (any order; sorted by time), titled `title`.
pub fn html(mut dumps: Vec<Dump>, title: &str) -> Result<String, ReportError> {
    if dumps.is_empty() {
        return Err(ReportError::Usage(
            "report needs one profile or several of one process".to_string(),
        ));
    }
    dumps.sort_by_key(|d| d.profile.time_nanos);
    // The newest peak profile has a flame graph of its own; the rest are
    // the series (unless all are peaks).
    let mut peak = None;
    if dumps.iter().any(|d| !d.peak) {
        let (peaks, series): (Vec<Dump>, Vec<Dump>) = dumps.into_iter().partition(|d| d.peak);
        peak = peaks.into_iter().last();
        dumps = series;
    }
    // The verdicts over the whole series (or the one profile's ages); the
    // profiles are moved out for it and back, never copied.
    let (profiles, metas): (Vec<Resolved>, Vec<Dump>) = dumps
        .into_iter()
        .map(|mut d| {
            let p = std::mem::replace(&mut d.profile, empty_profile());
            (p, d)
        })
        .unzip();
    // Judged without a dump at exit taken after the heap was torn down
    // (still drawn: the fall is real).
    let judged = super::leaks::shutdown_dump(&profiles).map_or(profiles.len(), |(i, _)| i);
    let verdicts = leak_verdicts(
        &profiles[..judged],
        &LeakOptions {
            sample: SampleKind::Default,
            group: Grouping::Stack,
            n: MAX_VERDICT_ROWS,
            older_than_secs: None,
        },
    );
    let dumps: Vec<Dump> = profiles
        .into_iter()
        .zip(metas)
        .map(|(profile, d)| Dump { profile, ..d })
        .collect();
    let data = Data::build(&dumps, peak.as_ref(), verdicts)?;
    let mut out = String::with_capacity(data.json.len() + SCRIPT.len() + STYLE.len() + 4096);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; \
         script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:\">\
         <title>{}</title><style>{STYLE}</style></head><body>\
         <div id=errors></div><div id=app></div>\
         <script type=\"application/json\" id=data>{}</script>\
         <script>{SCRIPT}</script></body></html>\n",
        escape_html(title),
        // `</` cannot end the data element early.
        data.json.replace("</", "<\\/")
    );
    Ok(out)
}

/// Writes [`html`] to `path`.
pub fn write_html(dumps: Vec<Dump>, title: &str, path: &Path) -> Result<(), ReportError> {
    let page = html(dumps, title)?;
    std::fs::write(path, page).map_err(|error| ReportError::Write {
        path: path.display().to_string(),
        error,
    })
}

fn escape_html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A minimal JSON writer: the page's data is numbers, strings and arrays.
struct Json(String);

impl Json {
    fn str(&mut self, s: &str) {
        self.0.push('"');
        for c in s.chars() {
            match c {
                '"' => self.0.push_str("\\\""),
                '\\' => self.0.push_str("\\\\"),
                '\n' => self.0.push_str("\\n"),
                c if (c as u32) < 0x20 || c == '\u{2028}' || c == '\u{2029}' => {
                    let _ = write!(self.0, "\\u{:04x}", c as u32);
                }
                c => self.0.push(c),
            }
        }
        self.0.push('"');
    }
    fn key(&mut self, k: &str) {
        if !self.0.ends_with('{') {
            self.0.push(',');
        }
        self.str(k);
        self.0.push(':');
    }
    fn num(&mut self, v: f64) {
        if v.is_finite() {
            if v == v.trunc() && v.abs() < 1e15 {
                let _ = write!(self.0, "{}", v as i64);
            } else {
                let _ = write!(self.0, "{v:.4}");
            }
        } else {
            self.0.push_str("null");
        }
    }
    fn ints(&mut self, v: impl IntoIterator<Item = i64>) {
        self.0.push('[');
        for (i, x) in v.into_iter().enumerate() {
            if i > 0 {
                self.0.push(',');
            }
            let _ = write!(self.0, "{x}");
        }
        self.0.push(']');
    }
    fn strs<'a>(&mut self, v: impl IntoIterator<Item = &'a str>) {
        self.0.push('[');
        for (i, x) in v.into_iter().enumerate() {
            if i > 0 {
                self.0.push(',');
            }
            self.str(x);
        }
        self.0.push(']');
    }
    /// Flame-graph entries: `[stack, value, born, label value index...]`.
    fn entries(&mut self, e: &FlameEntries) {
        self.0.push('[');
        for (i, ((id, born, lv), v)) in e.iter().enumerate() {
            if i > 0 {
                self.0.push(',');
            }
            self.ints(
                [*id as i64, *v, *born]
                    .into_iter()
                    .chain(lv.iter().copied()),
            );
        }
        self.0.push(']');
    }

    fn opt_ints(&mut self, v: &[Option<i64>]) {
        if v.iter().all(Option::is_none) {
            self.0.push_str("null");
            return;
        }
        self.0.push('[');
        for (i, x) in v.iter().enumerate() {
            if i > 0 {
                self.0.push(',');
            }
            match x {
                Some(x) => {
                    let _ = write!(self.0, "{x}");
                }
                None => self.0.push_str("null"),
            }
        }
        self.0.push(']');
    }
}

/// Interned function names and stacks (root first, as flame graphs draw).
#[derive(Default)]
struct Tables {
    funcs: Vec<String>,
    func_ids: HashMap<String, usize>,
    stacks: Vec<Vec<usize>>,
    stack_ids: HashMap<Vec<FrameKey>, usize>,
    /// Per stack, the name the legend shows.
    names: Vec<String>,
}

impl Tables {
    fn stack(&mut self, s: &super::model::Stack) -> usize {
        if let Some(&id) = self.stack_ids.get(s.key()) {
            return id;
        }
        let mut ids = Vec::with_capacity(s.frames.len());
        for f in s.frames.iter().rev() {
            let name = f.name();
            let next = self.funcs.len();
            let id = *self.func_ids.entry(name.clone()).or_insert(next);
            if id == next {
                self.funcs.push(name);
            }
            ids.push(id);
        }
        let id = self.stacks.len();
        self.stacks.push(ids);
        self.names.push(legend_name(&s.frames));
        self.stack_ids.insert(s.key().to_vec(), id);
        id
    }
}

/// The frame that names a stack in the legend: the innermost one not in a
/// language runtime's allocation path (`alloc::`, `core::`, `std::`,
/// `operator new`, `malloc`…), with its caller when there is one.
fn legend_name(frames: &[super::model::Frame]) -> String {
    let runtime = |n: &str| {
        let n = n.trim_start_matches('<');
        [
            "alloc::",
            "core::",
            "std::",
            "hashbrown::",
            "operator new",
            "malloc",
            "calloc",
            "realloc",
            "__rust_",
            "__rdl_",
            "heapprof::",
        ]
        .iter()
        .any(|p| n.starts_with(p))
    };
    let i = frames.iter().position(|f| !runtime(&f.name())).unwrap_or(0);
    match (frames.get(i), frames.get(i + 1)) {
        (Some(a), Some(b)) => format!("{} ← {}", short(&a.name()), short(&b.name())),
        (Some(a), None) => short(&a.name()),
        _ => "[no frames]".to_string(),
    }
}

fn short(name: &str) -> String {
    super::frames::short_name(name).into_owned()
}

/// The sample's string value for the label `key`, `(none)` without one.
fn label_of<'a>(s: &'a super::model::ResolvedSample, key: &str) -> &'a str {
    s.labels
        .iter()
        .find_map(|l| match &l.value {
            LabelValue::Str(v) if l.key == key => Some(v.as_str()),
            _ => None,
        })
        .unwrap_or("(none)")
}

/// (stack, allocation time, label value indices) -> value.
type FlameEntries = BTreeMap<(usize, i64, Vec<i64>), i64>;

/// A dump's samples for the flame graphs, taken `at` seconds after the
/// first dump: each stack's value by allocation time (seconds from the
/// first dump, from the `age` label, on a grid of `step`; -1e9 unknown) and
/// label values; and whether any sample had an age.
fn flame_entries(
    d: &Dump,
    index: usize,
    at: f64,
    step: f64,
    label_keys: &[String],
    label_values: &[Vec<String>],
    t: &mut Tables,
) -> (FlameEntries, bool) {
    let ids: Vec<usize> = d.profile.stacks.iter().map(|s| t.stack(s)).collect();
    let mut out = FlameEntries::new();
    let mut has_ages = false;
    for s in &d.profile.samples {
        let v = s.values.get(index).copied().unwrap_or(0);
        if v <= 0 {
            continue;
        }
        let age = s
            .num_label("age")
            .and_then(|(a, unit)| Some(a as f64 * super::leaks::evidence::seconds_per(unit)?));
        has_ages |= age.is_some();
        // On a grid of a 500th of the span: finer than a window can be
        // dragged, and a stack's samples of one step merge.
        let born = age.map_or(-1_000_000_000, |a| {
            ((at - a) / step).floor() as i64 * step as i64
        });
        let lv: Vec<i64> = label_keys
            .iter()
            .enumerate()
            .map(|(ki, key)| {
                let v = label_of(s, key);
                label_values[ki]
                    .iter()
                    .position(|x| x == v)
                    .map_or(-1, |p| p as i64)
            })
            .collect();
        let id = ids.get(s.stack).copied().unwrap_or(0);
        *out.entry((id, born, lv)).or_default() += v;
    }
    (out, has_ages)
}

/// What the page's script reads.
struct Data {
    json: String,
}

/// Live samples a (count, bytes) pair of a heapprof or Go profile stands
/// for at `period`: its scaling inverted.
fn raw_samples(objects: i64, bytes: i64, period: i64) -> f64 {
    if objects <= 0 || bytes <= 0 || period <= 1 {
        return objects.max(0) as f64;
    }
    let avg = bytes as f64 / objects as f64;
    objects as f64 * (1.0 - (-avg / period as f64).exp())
}

impl Data {
    fn build(
        dumps: &[Dump],
        peak: Option<&Dump>,
        verdicts: Result<super::leaks::VerdictReport, ReportError>,
    ) -> Result<Data, ReportError> {
        let n = dumps.len();
        let last = &dumps[n - 1];
        let first = &dumps[0];
        let index: Vec<usize> = dumps
            .iter()
            .map(|d| d.profile.sample_index(&SampleKind::Default))
            .collect::<Result<_, _>>()?;
        let sample = last.profile.sample_type(index[n - 1]);
        let mut t = Tables::default();
        // Per dump: per stack id its value; totals.
        let mut per_dump: Vec<HashMap<usize, i64>> = Vec::with_capacity(n);
        let mut totals = Vec::with_capacity(n);
        // Label key -> value -> per-dump series.
        let mut label_series: BTreeMap<String, BTreeMap<String, Vec<i64>>> = BTreeMap::new();
        for d in dumps {
            for s in &d.profile.samples {
                for l in &s.labels {
                    if let LabelValue::Str(_) = l.value {
                        label_series.entry(l.key.clone()).or_default();
                    }
                }
            }
        }
        for (di, d) in dumps.iter().enumerate() {
            let mut values: HashMap<usize, i64> = HashMap::new();
            let ids: Vec<usize> = d.profile.stacks.iter().map(|s| t.stack(s)).collect();
            let mut total = 0i64;
            for s in &d.profile.samples {
                let v = s.values.get(index[di]).copied().unwrap_or(0);
                total = total.saturating_add(v);
                if let Some(&id) = ids.get(s.stack) {
                    *values.entry(id).or_default() += v;
                }
                for (key, by_value) in label_series.iter_mut() {
                    let value = label_of(s, key);
                    let series = match by_value.get_mut(value) {
                        Some(s) => s,
                        None => by_value.entry(value.to_string()).or_insert(vec![0; n]),
                    };
                    series[di] = series[di].saturating_add(v);
                }
            }
            totals.push(total);
            per_dump.push(values);
        }

        // Which stacks to chart.
        let end = &per_dump[n - 1];
        let start = &per_dump[0];
        let mut by_end: Vec<(usize, i64)> = end.iter().map(|(&k, &v)| (k, v)).collect();
        by_end.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let mut by_growth: Vec<(usize, i64)> = end
            .iter()
            .map(|(&k, &v)| (k, v - start.get(&k).copied().unwrap_or(0)))
            .filter(|&(_, g)| g > 0)
            .collect();
        by_growth.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let stack_of_row = |frames: &[super::model::Frame], t: &mut Tables| {
            t.stack(&super::model::Stack::new(frames.to_vec()))
        };
        let mut charted: Vec<(usize, &'static str)> = Vec::new();
        let add = |id: usize, why: &'static str, charted: &mut Vec<(usize, &'static str)>| {
            if !charted.iter().any(|&(c, _)| c == id) {
                charted.push((id, why));
            }
        };
        let mut verdict_rows = Vec::new();
        let mut verdict_note = String::new();
        match &verdicts {
            Ok(r) => {
                for row in r.steady.iter().take(MAX_SUSPECTS) {
                    let id = stack_of_row(&row.frames, &mut t);
                    add(id, "leak", &mut charted);
                }
                for (class, rows) in [
                    ("steady growth", &r.steady),
                    ("plateau", &r.plateau),
                    ("not enough samples yet", &r.undecided),
                ] {
                    for row in rows.iter() {
                        let id = stack_of_row(&row.frames, &mut t);
                        verdict_rows.push((id, class, row.clone()));
                    }
                }
                let _ = write!(
                    verdict_note,
                    "{} steady growth, {} plateau, {} not enough samples yet, {} churn; \
                     allocation times from {}; window {:.0} s",
                    r.steady_count,
                    r.plateau_count,
                    r.undecided_count,
                    r.churn_count,
                    if r.from_ages {
                        "the age labels"
                    } else {
                        "the series"
                    },
                    r.window_seconds
                );
            }
            Err(e) => verdict_note = format!("no verdicts: {e}"),
        }
        for &(id, _) in by_end.iter().take(TOP_STACKS) {
            add(id, "end", &mut charted);
        }
        for &(id, _) in by_growth.iter().take(TOP_STACKS) {
            add(id, "growth", &mut charted);
        }

        // The last dump's samples, for the flame graphs.
        let label_keys: Vec<String> = label_series.keys().cloned().collect();
        let mut label_values: Vec<Vec<String>> = Vec::new();
        for key in &label_keys {
            let by_value = &label_series[key];
            let mut vals: Vec<(&String, i64)> = by_value
                .iter()
                .map(|(v, s)| (v, s.iter().copied().max().unwrap_or(0)))
                .collect();
            vals.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
            label_values.push(vals.into_iter().map(|(v, _)| v.clone()).collect());
        }
        let window = (i128::from(last.profile.time_nanos) - i128::from(first.profile.time_nanos))
            as f64
            / 1e9;
        let step = (window / 500.0).max(1.0).floor();
        let (end_samples, has_ages) = flame_entries(
            last,
            index[n - 1],
            window,
            step,
            &label_keys,
            &label_values,
            &mut t,
        );
        // The peak's samples, allocation times counted from the first dump.
        let peak_samples = peak.map(|p| {
            let at = (i128::from(p.profile.time_nanos) - i128::from(first.profile.time_nanos))
                as f64
                / 1e9;
            let index = p.profile.sample_index(&SampleKind::Default).unwrap_or(0);
            flame_entries(p, index, at, step, &label_keys, &label_values, &mut t).0
        });
        let obj_index = last.profile.sample_index(&SampleKind::InuseObjects).ok();
        let mut live_samples = 0f64;
        for s in &last.profile.samples {
            let v = s.values.get(index[n - 1]).copied().unwrap_or(0);
            if let Some(oi) = obj_index {
                let objects = s.values.get(oi).copied().unwrap_or(0);
                live_samples += raw_samples(objects, v, last.profile.period);
            }
        }
        if obj_index.is_none() {
            live_samples = last.profile.samples.len() as f64;
        }

        // Write it.
        let mut j = Json(String::from("{"));
        j.key("title");
        j.str(&last.profile.input);
        j.key("program");
        j.str(
            dumps
                .iter()
                .rev()
                .find_map(|d| d.program.as_deref())
                .unwrap_or(""),
        );
        j.key("pid");
        match dumps.iter().rev().find_map(|d| d.pid) {
            Some(p) => j.num(f64::from(p)),
            None => j.0.push_str("null"),
        }
        j.key("rate");
        j.num(last.profile.period as f64);
        j.key("sample");
        j.str(&sample.name);
        j.key("unit");
        j.str(&sample.unit);
        j.key("samples");
        j.num(live_samples.round());
        j.key("start");
        j.num((first.profile.time_nanos / 1_000_000) as f64);
        j.key("times");
        j.ints(dumps.iter().map(|d| {
            ((i128::from(d.profile.time_nanos) - i128::from(first.profile.time_nanos)) / 1_000_000)
                as i64
        }));
        j.key("total");
        j.ints(totals.iter().copied());
        j.key("rss");
        j.opt_ints(&dumps.iter().map(|d| d.rss).collect::<Vec<_>>());
        j.key("limit");
        j.opt_ints(&dumps.iter().map(|d| d.limit).collect::<Vec<_>>());
        j.key("triggers");
        let triggers: Vec<&str> = dumps
            .iter()
            .map(|d| d.trigger.as_deref().unwrap_or(""))
            .collect();
        if triggers.iter().all(|t| t.is_empty()) {
            j.0.push_str("null");
        } else {
            j.strs(triggers);
        }
        j.key("files");
        j.strs(
            dumps
                .iter()
                .map(|d| d.profile.input.rsplit('/').next().unwrap_or("")),
        );
        j.key("funcs");
        j.strs(t.funcs.iter().map(String::as_str));
        j.key("stacks");
        j.0.push('[');
        for (i, s) in t.stacks.iter().enumerate() {
            if i > 0 {
                j.0.push(',');
            }
            j.ints(s.iter().map(|&x| x as i64));
        }
        j.0.push(']');
        j.key("names");
        j.strs(t.names.iter().map(String::as_str));
        j.key("series");
        j.0.push('[');
        for (i, &(id, why)) in charted.iter().enumerate() {
            if i > 0 {
                j.0.push(',');
            }
            j.0.push('{');
            j.key("s");
            j.num(id as f64);
            j.key("why");
            j.str(why);
            j.key("v");
            j.ints(per_dump.iter().map(|m| m.get(&id).copied().unwrap_or(0)));
            j.0.push('}');
        }
        j.0.push(']');
        j.key("verdicts");
        j.0.push('[');
        for (i, (id, class, row)) in verdict_rows.iter().enumerate() {
            if i > 0 {
                j.0.push(',');
            }
            j.0.push('{');
            j.key("s");
            j.num(*id as f64);
            j.key("class");
            j.str(class);
            j.key("confidence");
            j.str(row.verdict.confidence());
            j.key("p");
            j.num(row.verdict.p_value);
            j.key("rate");
            j.num(row.rate);
            j.key("lo");
            j.num(row.rate_interval.0);
            j.key("hi");
            j.num(row.rate_interval.1);
            j.key("samples");
            j.num(row.verdict.samples as f64);
            j.key("inuse");
            j.num(row.inuse() as f64);
            j.key("wait");
            match row.verdict.wait_seconds {
                Some(w) => j.num(w),
                None => j.0.push_str("null"),
            }
            j.0.push('}');
        }
        j.0.push(']');
        j.key("verdict_note");
        j.str(&verdict_note);
        j.key("label_keys");
        j.strs(label_keys.iter().map(String::as_str));
        j.key("label_values");
        j.0.push('[');
        for (ki, vals) in label_values.iter().enumerate() {
            if ki > 0 {
                j.0.push(',');
            }
            j.strs(vals.iter().map(String::as_str));
        }
        j.0.push(']');
        j.key("label_series");
        j.0.push('[');
        for (ki, key) in label_keys.iter().enumerate() {
            if ki > 0 {
                j.0.push(',');
            }
            let by_value = &label_series[key];
            j.0.push('[');
            let mut other: Option<Vec<i64>> = None;
            let mut written = 0;
            for (vi, v) in label_values[ki].iter().enumerate() {
                let series = &by_value[v];
                if vi >= MAX_LABEL_VALUES {
                    let o = other.get_or_insert_with(|| vec![0; n]);
                    for (a, b) in o.iter_mut().zip(series) {
                        *a += b;
                    }
                    continue;
                }
                if written > 0 {
                    j.0.push(',');
                }
                written += 1;
                j.0.push('{');
                j.key("name");
                j.str(v);
                j.key("v");
                j.ints(series.iter().copied());
                j.0.push('}');
            }
            if let Some(o) = other {
                if written > 0 {
                    j.0.push(',');
                }
                j.0.push('{');
                j.key("name");
                j.str("(other)");
                j.key("v");
                j.ints(o);
                j.0.push('}');
            }
            j.0.push(']');
        }
        j.0.push(']');
        j.key("born_step");
        j.num(step);
        j.key("has_ages");
        j.0.push_str(if has_ages { "true" } else { "false" });
        j.key("end");
        j.entries(&end_samples);
        j.key("peak");
        match &peak_samples {
            Some(e) => j.entries(e),
            None => j.0.push_str("null"),
        }
        j.0.push('}');
        Ok(Data { json: j.0 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_from_dump_names() {
        assert_eq!(pid_from_name("/tmp/x/heap.1234.7.pb.gz"), Some(1234));
        assert_eq!(pid_from_name("heap.v2.1234.7.threads.pb.gz"), Some(1234));
        assert_eq!(pid_from_name("profile.pb.gz"), None);
    }

    #[test]
    fn json_strings_are_escaped() {
        let mut j = Json(String::new());
        j.str("a\"b\\c\n\u{1}</script>");
        assert_eq!(j.0, "\"a\\\"b\\\\c\\n\\u0001</script>\"");
    }

    /// A profile of one 1000-byte sample of stack `f`, at `secs`, with
    /// `comment`.
    fn profile(secs: i64, comment: &str, route: &str) -> Vec<u8> {
        use crate::profile::proto::*;
        let strings = [
            "",
            "inuse_space",
            "bytes",
            "f",
            comment,
            "/bin/prog",
            "route",
            route,
        ];
        let p = Profile {
            sample_type: vec![ValueType { r#type: 1, unit: 2 }],
            sample: vec![Sample {
                location_id: vec![1],
                value: vec![1000],
                label: vec![Label {
                    key: 6,
                    str: 7,
                    ..Default::default()
                }],
            }],
            mapping: vec![Mapping {
                id: 1,
                filename: 5,
                ..Default::default()
            }],
            location: vec![Location {
                id: 1,
                line: vec![Line {
                    function_id: 1,
                    line: 1,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            function: vec![Function {
                id: 1,
                name: 3,
                ..Default::default()
            }],
            string_table: strings.iter().map(|s| s.to_string()).collect(),
            time_nanos: secs * 1_000_000_000,
            comment: vec![4],
            ..Default::default()
        };
        crate::profile::output::encode_gz(&p)
    }

    #[test]
    fn comments_give_trigger_and_rss_and_their_absence_is_fine() {
        let d = parse_dump(
            "/x/heap.77.3.pb.gz",
            &profile(
                10,
                "heapprof 0.1.0: rate=1 trigger=interval rss_anon=123456 memory_limit=999999",
                "/a",
            ),
        )
        .unwrap();
        assert_eq!(d.trigger.as_deref(), Some("interval"));
        assert_eq!(d.rss, Some(123456));
        assert_eq!(d.limit, Some(999999));
        assert!(!d.peak);
        assert_eq!(d.pid, Some(77));
        assert_eq!(d.program.as_deref(), Some("/bin/prog"));
        let e = parse_dump("other.pb.gz", &profile(20, "heapprof 0.1.0: rate=1", "/b")).unwrap();
        assert_eq!((e.trigger.as_deref(), e.rss, e.pid), (None, None, None));

        let page = html(vec![e, d], "t").unwrap();
        // In time order; RSS where recorded, null elsewhere; the route
        // label's values, each with its series.
        assert!(page.contains("\"rss\":[123456,null]"), "{page}");
        assert!(page.contains("\"limit\":[999999,null]"), "{page}");
        assert!(page.contains("\"peak\":null"), "{page}");
        assert!(page.contains("\"triggers\":[\"interval\",\"\"]"), "{page}");
        assert!(page.contains("\"label_keys\":[\"route\"]"), "{page}");
        assert!(page.contains("{\"name\":\"/a\",\"v\":[1000,0]}"), "{page}");
        assert!(page.contains("{\"name\":\"/b\",\"v\":[0,1000]}"), "{page}");
    }

    #[test]
    fn raw_samples_invert_the_scaling() {
        let (objects, bytes) = crate::profile::scale::scale_heap_sample(10, 10 * 1000, 524288);
        let n = raw_samples(objects as i64, bytes as i64, 524288);
        assert!((n - 10.0).abs() < 0.1, "{n}");
    }
}

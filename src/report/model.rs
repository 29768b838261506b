//! The resolved view of a profile: every string index, location id and
//! function id looked up once, samples grouped under interned stacks of
//! frames that carry names, files and lines.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use super::ReportError;
use crate::profile::proto::{Location, Profile};

/// A sample type (or the period type): `inuse_space` / `bytes`, say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SampleType {
    pub name: String,
    pub unit: String,
}

/// Which of a profile's values a report reads.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum SampleKind {
    /// `inuse_space` when the profile has it, else the profile's
    /// `default_sample_type`, else its last sample type (pprof's rule).
    #[default]
    Default,
    InuseSpace,
    InuseObjects,
    AllocSpace,
    AllocObjects,
    /// Any other sample type, by name.
    Other(String),
}

impl SampleKind {
    /// The sample type name, or `None` for [`SampleKind::Default`].
    pub fn name(&self) -> Option<&str> {
        match self {
            SampleKind::Default => None,
            SampleKind::InuseSpace => Some("inuse_space"),
            SampleKind::InuseObjects => Some("inuse_objects"),
            SampleKind::AllocSpace => Some("alloc_space"),
            SampleKind::AllocObjects => Some("alloc_objects"),
            SampleKind::Other(name) => Some(name),
        }
    }
}

impl FromStr for SampleKind {
    type Err = ReportError;

    /// The four heap sample types by name; any other non-empty name selects
    /// that sample type, which the profile is then checked for.
    fn from_str(s: &str) -> Result<Self, ReportError> {
        Ok(match s {
            "inuse_space" => SampleKind::InuseSpace,
            "inuse_objects" => SampleKind::InuseObjects,
            "alloc_space" => SampleKind::AllocSpace,
            "alloc_objects" => SampleKind::AllocObjects,
            "" => {
                return Err(ReportError::Usage(
                    "--sample needs a sample type: inuse_space, inuse_objects, alloc_space or \
                     alloc_objects"
                        .to_string(),
                ))
            }
            other => SampleKind::Other(other.to_string()),
        })
    }
}

/// One frame of a stack: a function at a source line, or a bare address
/// when the profile carries no symbol for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Function name (demangled for Rust); empty when unsymbolized.
    pub function: String,
    /// Source file; empty when unknown.
    pub file: String,
    /// Source line; 0 when unknown.
    pub line: i64,
    /// The location's address (a return address − 1 for callers).
    pub address: u64,
    /// File name of the mapping the address falls in; empty when unknown.
    pub module: String,
    /// The address as an offset into `module`'s file, when the mapping says.
    pub module_offset: Option<u64>,
}

/// What makes two frames "the same" across profiles; see the module docs.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FrameKey {
    /// A symbolized frame: function, file and line.
    Symbol {
        function: String,
        file: String,
        line: i64,
    },
    /// An unsymbolized frame in a known file: stable across runs despite ASLR.
    Module { module: String, offset: u64 },
    /// An unsymbolized frame with nothing better than its address.
    Address(u64),
}

impl Frame {
    /// Whether the profile named the function.
    pub fn is_symbolized(&self) -> bool {
        !self.function.is_empty()
    }

    /// The identity used to match this frame across profiles.
    pub fn key(&self) -> FrameKey {
        if self.is_symbolized() {
            FrameKey::Symbol {
                function: self.function.clone(),
                file: self.file.clone(),
                line: self.line,
            }
        } else {
            match self.module_offset {
                Some(offset) if !self.module.is_empty() => FrameKey::Module {
                    module: self.module.clone(),
                    offset,
                },
                _ => FrameKey::Address(self.address),
            }
        }
    }

    /// The function name, or `libfoo.so+0x1a2b` / `0x55d0c1a2b3c4` when
    /// unsymbolized.
    pub fn name(&self) -> String {
        if self.is_symbolized() {
            return self.function.clone();
        }
        match self.module_offset {
            Some(offset) if !self.module.is_empty() => {
                let base = self.module.rsplit('/').next().unwrap_or(&self.module);
                format!("{base}+{offset:#x}")
            }
            _ => format!("{:#x}", self.address),
        }
    }
}

impl fmt::Display for Frame {
    /// `name (file:line)`, leaving out what is unknown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())?;
        match (self.file.is_empty(), self.line > 0) {
            (false, true) => write!(f, " ({}:{})", self.file, self.line),
            (false, false) => write!(f, " ({})", self.file),
            _ => Ok(()),
        }
    }
}

/// A call stack, leaf (the allocating function) first.
#[derive(Clone, Debug)]
pub struct Stack {
    pub frames: Vec<Frame>,
    key: Vec<FrameKey>,
}

impl Stack {
    /// Builds a stack from frames, leaf first.
    pub fn new(frames: Vec<Frame>) -> Stack {
        let key = frames.iter().map(Frame::key).collect();
        Stack { frames, key }
    }

    /// The identity used to match this stack across profiles.
    pub fn key(&self) -> &[FrameKey] {
        &self.key
    }
}

/// A sample label's value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LabelValue {
    Str(String),
    Num { value: i64, unit: String },
}

/// A sample label, strings resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SampleLabel {
    pub key: String,
    pub value: LabelValue,
}

/// One sample: its stack (an index into [`Resolved::stacks`]), one value
/// per sample type, and its labels.
#[derive(Clone, Debug)]
pub struct ResolvedSample {
    pub stack: usize,
    pub values: Vec<i64>,
    pub labels: Vec<SampleLabel>,
}

impl ResolvedSample {
    /// The first numeric label named `key`, with its unit.
    pub fn num_label(&self, key: &str) -> Option<(i64, &str)> {
        self.labels.iter().find_map(|l| match &l.value {
            LabelValue::Num { value, unit } if l.key == key => Some((*value, unit.as_str())),
            _ => None,
        })
    }
}

/// A decoded, resolved profile.
#[derive(Clone, Debug)]
pub struct Resolved {
    /// What the profile was read from (a path), for titles and messages.
    pub input: String,
    pub sample_types: Vec<SampleType>,
    /// The profile's `default_sample_type`, when it names one.
    pub default_sample_type: Option<String>,
    pub period_type: Option<SampleType>,
    pub period: i64,
    pub time_nanos: i64,
    pub duration_nanos: i64,
    /// Distinct stacks, in order of first appearance. Samples whose
    /// locations resolve to the same frames share one stack.
    pub stacks: Vec<Stack>,
    pub samples: Vec<ResolvedSample>,
    /// Samples left out because they were inconsistent with the rest of the
    /// profile: a value count differing from the sample types, or a location
    /// id the profile does not define.
    pub skipped_samples: usize,
    /// The process's resident anonymous memory when the profile was taken,
    /// when the profile records it (heapprof's `rss_anon=BYTES` comment).
    pub rss_anon: Option<u64>,
    /// The file of the profile's first mapping: the main executable, for
    /// heapprof's and Go's profiles.
    pub main_file: Option<String>,
    /// A peak profile (heapprof's `heapprof peak:` comment): the heap at its
    /// highest, not a moment of a series.
    pub peak: bool,
    /// Taken at the program's exit (heapprof's `trigger=exit` comment word).
    pub at_exit: bool,
}

/// Looks up string-table entries, naming the referrer when out of range.
struct Strings<'a> {
    input: &'a str,
    table: &'a [String],
}

impl Strings<'_> {
    fn get(&self, index: i64, what: impl FnOnce() -> String) -> Result<String, ReportError> {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.table.get(i))
            .cloned()
            .ok_or_else(|| ReportError::Malformed {
                input: self.input.to_string(),
                detail: format!(
                    "{} names string {index}, but the string table has {} entries",
                    what(),
                    self.table.len()
                ),
            })
    }
}

impl Resolved {
    /// Resolves a decoded profile. String indices out of range are errors
    /// (as in `go tool pprof`); samples that cannot be placed are skipped and
    /// counted in [`Resolved::skipped_samples`]; a location line naming an
    /// unknown function becomes an unsymbolized frame.
    pub fn from_profile(input: &str, p: &Profile) -> Result<Resolved, ReportError> {
        let strings = Strings {
            input,
            table: &p.string_table,
        };
        let mut sample_types = Vec::with_capacity(p.sample_type.len());
        for (i, vt) in p.sample_type.iter().enumerate() {
            sample_types.push(SampleType {
                name: strings.get(vt.r#type, || format!("sample_type {i}"))?,
                unit: strings.get(vt.unit, || format!("the unit of sample_type {i}"))?,
            });
        }
        let default_sample_type = match p.default_sample_type {
            0 => None,
            i => Some(strings.get(i, || "default_sample_type".to_string())?),
        };
        let period_type = match &p.period_type {
            None => None,
            Some(vt) => Some(SampleType {
                name: strings.get(vt.r#type, || "period_type".to_string())?,
                unit: strings.get(vt.unit, || "the unit of period_type".to_string())?,
            }),
        };

        // Function id -> (name, file).
        let mut functions: HashMap<u64, (String, String)> = HashMap::new();
        for f in &p.function {
            let mut name = strings.get(f.name, || format!("function {}", f.id))?;
            let system_name = strings.get(f.system_name, || format!("function {}", f.id))?;
            if name.is_empty() {
                name = system_name;
            }
            let file = strings.get(f.filename, || format!("function {}", f.id))?;
            functions.insert(f.id, (name, file));
        }
        // Mapping id -> (file name, start, limit, offset).
        let mut mappings: HashMap<u64, (String, u64, u64, u64)> = HashMap::new();
        for m in &p.mapping {
            let file = strings.get(m.filename, || format!("mapping {}", m.id))?;
            strings.get(m.build_id, || format!("mapping {}", m.id))?;
            mappings.insert(m.id, (file, m.memory_start, m.memory_limit, m.file_offset));
        }
        let mut locations: HashMap<u64, Vec<Frame>> = HashMap::new();
        for loc in &p.location {
            locations.insert(loc.id, location_frames(loc, &functions, &mappings));
        }

        let mut stacks: Vec<Stack> = Vec::new();
        // Two levels of interning: the cheap one by location ids, and by
        // frame identity for distinct locations that resolve alike.
        let mut by_ids: HashMap<Vec<u64>, usize> = HashMap::new();
        let mut by_key: HashMap<Vec<FrameKey>, usize> = HashMap::new();
        let mut samples = Vec::with_capacity(p.sample.len());
        let mut skipped_samples = 0;
        'samples: for (si, s) in p.sample.iter().enumerate() {
            let mut labels = Vec::with_capacity(s.label.len());
            for l in &s.label {
                let what = || format!("a label of sample {si}");
                let key = strings.get(l.key, what)?;
                let value = if l.str != 0 {
                    LabelValue::Str(strings.get(l.str, what)?)
                } else {
                    LabelValue::Num {
                        value: l.num,
                        unit: strings.get(l.num_unit, what)?,
                    }
                };
                labels.push(SampleLabel { key, value });
            }
            if s.value.len() != sample_types.len() {
                skipped_samples += 1;
                continue;
            }
            let stack = match by_ids.get(&s.location_id) {
                Some(&stack) => stack,
                None => {
                    let mut frames = Vec::new();
                    for id in &s.location_id {
                        match locations.get(id) {
                            Some(f) => frames.extend_from_slice(f),
                            None => {
                                skipped_samples += 1;
                                continue 'samples;
                            }
                        }
                    }
                    let new = Stack::new(frames);
                    let stack = match by_key.get(new.key()) {
                        Some(&stack) => stack,
                        None => {
                            by_key.insert(new.key().to_vec(), stacks.len());
                            stacks.push(new);
                            stacks.len() - 1
                        }
                    };
                    by_ids.insert(s.location_id.clone(), stack);
                    stack
                }
            };
            samples.push(ResolvedSample {
                stack,
                values: s.value.clone(),
                labels,
            });
        }

        let mut rss_anon = None;
        let (mut peak, mut at_exit) = (false, false);
        for &c in &p.comment {
            let text = strings.get(c, || "a comment".to_string())?;
            if let Some(v) = text.strip_prefix(crate::profile::pprof::RSS_ANON_KEY) {
                rss_anon = v.trim().parse().ok();
            }
            peak |= text.starts_with(crate::profile::pprof::PEAK_COMMENT);
            at_exit |= text.split_whitespace().any(|w| w == "trigger=exit");
        }
        let main_file = p
            .mapping
            .first()
            .and_then(|m| mappings.get(&m.id))
            .map(|m| m.0.clone())
            .filter(|f| !f.is_empty());
        Ok(Resolved {
            rss_anon,
            main_file,
            peak,
            at_exit,
            input: input.to_string(),
            sample_types,
            default_sample_type,
            period_type,
            period: p.period,
            time_nanos: p.time_nanos,
            duration_nanos: p.duration_nanos,
            stacks,
            samples,
            skipped_samples,
        })
    }

    /// The index into each sample's values that `kind` selects.
    pub fn sample_index(&self, kind: &SampleKind) -> Result<usize, ReportError> {
        let find = |name: &str| self.sample_types.iter().position(|t| t.name == name);
        let found = match kind.name() {
            Some(name) => find(name),
            None => find("inuse_space")
                .or_else(|| self.default_sample_type.as_deref().and_then(find))
                .or_else(|| self.sample_types.len().checked_sub(1)),
        };
        found.ok_or_else(|| ReportError::MissingSampleType {
            input: self.input.clone(),
            wanted: kind.name().unwrap_or("inuse_space").to_string(),
            available: self.sample_types.iter().map(|t| t.name.clone()).collect(),
        })
    }

    /// The sample type at `index` (as returned by [`Resolved::sample_index`]).
    pub fn sample_type(&self, index: usize) -> SampleType {
        self.sample_types.get(index).cloned().unwrap_or(SampleType {
            name: String::new(),
            unit: String::new(),
        })
    }

    /// Per stack, the sum of value `index` over its samples (saturating).
    pub fn stack_totals(&self, index: usize) -> Vec<i64> {
        let mut totals = vec![0i64; self.stacks.len()];
        for s in &self.samples {
            if let (Some(t), Some(v)) = (totals.get_mut(s.stack), s.values.get(index)) {
                *t = t.saturating_add(*v);
            }
        }
        totals
    }

    /// The sum of value `index` over all samples (saturating).
    pub fn total(&self, index: usize) -> i64 {
        self.samples
            .iter()
            .filter_map(|s| s.values.get(index))
            .fold(0i64, |a, v| a.saturating_add(*v))
    }
}

/// The frames one location stands for: its lines, inlined callee first, or
/// one unsymbolized frame when it has none.
fn location_frames(
    loc: &Location,
    functions: &HashMap<u64, (String, String)>,
    mappings: &HashMap<u64, (String, u64, u64, u64)>,
) -> Vec<Frame> {
    let (module, module_offset) = match mappings.get(&loc.mapping_id) {
        Some((file, start, limit, offset))
            if loc.address >= *start && (*limit == 0 || loc.address < *limit) =>
        {
            (
                file.clone(),
                Some((loc.address - start).wrapping_add(*offset)),
            )
        }
        Some((file, ..)) => (file.clone(), None),
        None => (String::new(), None),
    };
    let bare = |function: String, file: String, line: i64| Frame {
        function,
        file,
        line,
        address: loc.address,
        module: module.clone(),
        module_offset,
    };
    if loc.line.is_empty() {
        return vec![bare(String::new(), String::new(), 0)];
    }
    loc.line
        .iter()
        .map(|l| match functions.get(&l.function_id) {
            Some((name, file)) => bare(name.clone(), file.clone(), l.line),
            None => bare(String::new(), String::new(), 0),
        })
        .collect()
}

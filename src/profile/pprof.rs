//! Writes a [`Snapshot`] as a pprof heap profile, the way Go writes them.
//!
//! - Sample types `alloc_objects/count`, `alloc_space/bytes`,
//!   `inuse_objects/count`, `inuse_space/bytes`; period type `space/bytes`;
//!   period = the sampling rate; default sample type `inuse_space`.
//! - Each bucket (stack, size) becomes samples carrying a numeric label
//!   `bytes` (unit `bytes`) with the requested object size. Its live objects
//!   are split by age: one sample per age bucket, with a numeric label `age`
//!   (unit `seconds`) whose value is the bucket's lower bound
//!   ([`crate::profile::snapshot::age_bucket`]: whole seconds below 32 s, then 16
//!   buckets per doubling, never wider than 1/16 of the age), holding those
//!   objects in both the alloc and the inuse values. Objects already freed
//!   form one more sample without `age`, with alloc values only. Summing a
//!   stack's samples gives its four totals; `-tagfocus age=60:` selects
//!   memory at least a minute old. `duration_nanos` is the time since
//!   profiling started (the process's start, for both ways in), so it bounds
//!   every age: `heapprof leaks` compares the ages with it.
//! - Heap labels: every sample of a bucket also carries string labels
//!   (`Label.key`/`Label.str`): the process-wide `HEAPPROF_LABELS` and the
//!   label set of the allocation ([`crate::engine::labels`]), the latter
//!   winning for a key in both, sorted by key. `-tagfocus=route=/users`,
//!   `-tagignore` and `-tags` read them.
//! - Values are scaled per bucket ([`crate::profile::scale`]).
//! - Locations: address = return address − 1, inlined frames as several
//!   lines (callee first), mapping from `/proc/self/maps` with GNU build IDs;
//!   functions carry the demangled `name` and mangled `system_name`, and
//!   mappings set `has_functions` etc. so readers do not re-symbolize.
//! - Allocator frames at the leaf are trimmed ([`crate::profile::symbolize`]).
//! - Comments: heapprof's counters, and `rss_anon=BYTES`, the process's
//!   resident anonymous memory at the snapshot, which readers compare with
//!   the heap (memory a program's own allocator serves is not in the heap).
//! - Raw mode (no symbolizer): locations carry only addresses and mappings
//!   (with build IDs, `has_functions` unset), so `go tool pprof` symbolizes
//!   from the binaries; `drop_frames` names the allocator entry points and
//!   heapprof's own functions, which pprof then prunes from each stack's
//!   leaf end. It prunes from the first match counting from the root, so the
//!   pattern names only functions that never call back into user code.

use hashbrown::HashMap;

use crate::engine::stack_table::StackId;
use crate::profile::mappings::Mapping;
use crate::profile::proto;
use crate::profile::scale::scale_heap_sample;
use crate::profile::snapshot::Snapshot;
use crate::profile::symbolize::{trim_point, Frame, Symbolizer};

/// The comment recording the process's `RssAnon` in bytes:
/// `rss_anon=BYTES`, a comment of its own.
pub const RSS_ANON_KEY: &str = "rss_anon=";
/// The comment recording the memory limit of the process's cgroup:
/// `memory_limit=BYTES`, a comment of its own.
pub const MEMORY_LIMIT_KEY: &str = "memory_limit=";
/// How a peak profile's comment starts (`crate::control::peak`).
pub const PEAK_COMMENT: &str = "heapprof peak:";
/// The comment saying what took a numbered dump: `trigger=NAME`.
pub const TRIGGER_KEY: &str = "trigger=";

/// What the process held when the snapshot was taken, beside the heap.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcessFacts {
    /// Resident anonymous memory (`RssAnon`).
    pub rss_anon: Option<u64>,
    /// The tightest memory limit of its cgroup and their ancestors.
    pub memory_limit: Option<u64>,
}

#[derive(Default)]
pub(crate) struct Strings {
    table: Vec<String>,
    index: HashMap<String, i64>,
}

impl Strings {
    pub(crate) fn new() -> Strings {
        let mut s = Strings::default();
        s.get("");
        s
    }
    pub(crate) fn get(&mut self, v: &str) -> i64 {
        if let Some(&i) = self.index.get(v) {
            return i;
        }
        let i = self.table.len() as i64;
        self.table.push(v.to_owned());
        self.index.insert(v.to_owned(), i);
        i
    }
}

/// A profile under construction: strings, mappings, locations and
/// functions interned, stacks symbolized and trimmed. Also used for the
/// threads profile ([`crate::profile::threads_pprof`]).
pub(crate) struct Builder<'a> {
    pub(crate) p: proto::Profile,
    pub(crate) s: Strings,
    sym: Option<&'a mut Symbolizer>,
    maps: &'a [Mapping],
    functions: HashMap<(String, String, String), u64>,
    /// (return address, innermost lines trimmed) -> location id.
    locations: HashMap<(u64, usize), u64>,
    stacks: HashMap<StackId, Vec<u64>>,
    /// Frames also trimmed from the leaf end, after the allocator's (the
    /// threads profile leaves out std's thread-spawning plumbing).
    pub(crate) also_trim: Option<fn(&Frame) -> bool>,
}

/// Functions pprof prunes from the leaf end of raw profiles (RE2, fully
/// matched against demangled names): only those that never call user code.
const RAW_DROP_FRAMES: &str = concat!(
    r"(<?heapprof(_preload)?::.*|backtrace::.*|_Unwind_.*|__rust_(alloc|alloc_zeroed|realloc|dealloc)|",
    r"__r[dg]l?_.*|<?alloc::(alloc|raw_vec)::.*|<?std::alloc::.*|",
    r"malloc|calloc|realloc|reallocarray|free|posix_memalign|aligned_alloc|memalign|valloc|pvalloc|",
    r"operator new.*)"
);

/// Builds the profile; symbolized with `sym`, raw without. `maps` are the
/// process's executable mappings; `facts` (resident anonymous memory,
/// cgroup limit) go in comments of their own (`rss_anon=BYTES`,
/// `memory_limit=BYTES`) for readers to compare with the heap.
pub fn build(
    snap: &Snapshot,
    mut sym: Option<&mut Symbolizer>,
    maps: &[Mapping],
    facts: &ProcessFacts,
) -> proto::Profile {
    let symbolized = sym.is_some();
    if let Some(sym) = sym.as_deref_mut() {
        sym.prepare(snap.stacks.values().flat_map(|s| s.iter().copied()));
    }
    let mut b = Builder::new(sym, maps);
    for (t, u) in [
        ("alloc_objects", "count"),
        ("alloc_space", "bytes"),
        ("inuse_objects", "count"),
        ("inuse_space", "bytes"),
    ] {
        let vt = b.value_type(t, u);
        b.p.sample_type.push(vt);
    }
    b.p.period_type = Some(b.value_type("space", "bytes"));
    b.p.period = snap.rate as i64;
    b.p.time_nanos = snap.time_unix_ns as i64;
    b.p.duration_nanos = snap.duration_ns as i64;
    b.p.default_sample_type = b.s.get("inuse_space");
    let walks = crate::engine::stack::walk_counts();
    let comment = b.s.get(&format!(
        "heapprof {}: rate={} dropped_records={} unsampled_fallbacks={} large_to_inner={} retained_bytes={} purges={} purged_bytes={} unwinder={} libgcc_captures={} symbolize_copy_failures={} dump_fallbacks={} walk_fallbacks={} walk_checks={} walk_mismatches={} rules_forgotten={}",
        env!("CARGO_PKG_VERSION"),
        snap.rate,
        crate::engine::buffer::dropped_records() + crate::engine::pressure::dropped_records(),
        crate::engine::sample_heap::fallbacks(),
        crate::engine::sample_heap::large_to_inner(),
        crate::engine::sample_heap::retained_bytes(),
        crate::engine::sample_heap::purges().0,
        crate::engine::sample_heap::purges().1,
        if crate::engine::stack::fast_unwinder_loaded() {
            "libunwind"
        } else {
            "libgcc"
        },
        crate::engine::stack::libgcc_captures(),
        crate::profile::symbolize::copy_failures(),
        crate::engine::pressure::dump_fallbacks(),
        walks[0],
        walks[1],
        walks[2],
        crate::engine::unwind::rules_forgotten(),
    ));
    b.p.comment.push(comment);
    for (key, value) in [
        (RSS_ANON_KEY, facts.rss_anon),
        (MEMORY_LIMIT_KEY, facts.memory_limit),
    ] {
        if let Some(v) = value {
            let fact = b.s.get(&format!("{key}{v}"));
            b.p.comment.push(fact);
        }
    }
    b.add_mappings(symbolized);
    let (k_bytes, k_age) = (b.s.get("bytes"), b.s.get("age"));
    let u_seconds = b.s.get("seconds");
    let mut tags: HashMap<u32, Vec<proto::Label>> = HashMap::new();
    for e in &snap.entries {
        let Some(frames) = snap.stacks.get(&e.key.stack) else {
            continue;
        };
        let locs = b.stack(e.key.stack, frames);
        let size = e.key.size;
        let size_label = proto::Label {
            key: k_bytes,
            num: size as i64,
            num_unit: k_bytes,
            ..Default::default()
        };
        let tags = tags
            .entry(e.key.labels)
            .or_insert_with(|| b.string_labels(snap, e.key.labels));
        let scaled = |n: u64| scale_heap_sample(n, n * size, e.key.rate);
        for &(age, n) in &e.live_by_age {
            let (objs, bytes) = scaled(n);
            let age_label = proto::Label {
                key: k_age,
                num: age as i64,
                num_unit: u_seconds,
                ..Default::default()
            };
            b.p.sample.push(proto::Sample {
                location_id: locs.clone(),
                value: vec![objs as i64, bytes as i64, objs as i64, bytes as i64],
                label: [vec![size_label.clone(), age_label], tags.clone()].concat(),
            });
        }
        let freed = e.allocs.saturating_sub(e.live);
        if freed > 0 {
            let (objs, bytes) = scaled(freed);
            b.p.sample.push(proto::Sample {
                location_id: locs,
                value: vec![objs as i64, bytes as i64, 0, 0],
                label: [vec![size_label], tags.clone()].concat(),
            });
        }
    }
    // A file that was gone or rebuilt left its addresses unnamed: let
    // readers try those mappings themselves.
    if let Some(sym) = b.sym.as_deref() {
        for (m, mm) in b.p.mapping.iter_mut().zip(maps) {
            if sym.problems().iter().any(|p| p.path() == mm.path) {
                m.has_functions = false;
                m.has_filenames = false;
                m.has_line_numbers = false;
                m.has_inline_frames = false;
            }
        }
    }
    b.p.string_table = std::mem::take(&mut b.s.table);
    b.p
}

impl<'a> Builder<'a> {
    /// An empty profile over `maps`, symbolized with `sym` or raw.
    pub(crate) fn new(sym: Option<&'a mut Symbolizer>, maps: &'a [Mapping]) -> Builder<'a> {
        Builder {
            p: proto::Profile::default(),
            s: Strings::new(),
            sym,
            maps,
            functions: HashMap::new(),
            locations: HashMap::new(),
            stacks: HashMap::new(),
            also_trim: None,
        }
    }

    /// The mappings (and, raw, the frames pprof is to drop).
    pub(crate) fn add_mappings(&mut self, symbolized: bool) {
        if !symbolized {
            self.p.drop_frames = self.s.get(RAW_DROP_FRAMES);
        }
        for (i, m) in self.maps.iter().enumerate() {
            let mapping = proto::Mapping {
                id: i as u64 + 1,
                memory_start: m.start,
                memory_limit: m.end,
                file_offset: m.offset,
                filename: self.s.get(&m.path),
                build_id: self.s.get(&m.build_id),
                has_functions: symbolized,
                has_filenames: symbolized,
                has_line_numbers: symbolized,
                has_inline_frames: symbolized,
            };
            self.p.mapping.push(mapping);
        }
    }

    /// The finished profile.
    pub(crate) fn finish(mut self) -> proto::Profile {
        self.p.string_table = std::mem::take(&mut self.s.table);
        self.p
    }
}

impl Builder<'_> {
    /// String labels of label set `id` over the process-wide ones.
    fn string_labels(&mut self, snap: &Snapshot, id: u32) -> Vec<proto::Label> {
        let set = snap.label_sets.get(&id).copied().unwrap_or(&[]);
        let mut all: Vec<(&str, &str)> = snap
            .process_labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .filter(|(k, _)| !set.iter().any(|(sk, _)| **sk == **k))
            .chain(set.iter().map(|(k, v)| (&**k, &**v)))
            .collect();
        all.sort_by(|a, b| a.0.cmp(b.0));
        all.into_iter()
            .map(|(k, v)| proto::Label {
                key: self.s.get(k),
                str: self.s.get(v),
                ..Default::default()
            })
            .collect()
    }

    pub(crate) fn value_type(&mut self, t: &str, u: &str) -> proto::ValueType {
        proto::ValueType {
            r#type: self.s.get(t),
            unit: self.s.get(u),
        }
    }

    /// Location ids of a stack, leaf first, allocator frames trimmed.
    pub(crate) fn stack(&mut self, id: StackId, frames: &[u64]) -> Vec<u64> {
        if let Some(l) = self.stacks.get(&id) {
            return l.clone();
        }
        let Some(sym) = self.sym.as_deref_mut() else {
            let locs: Vec<u64> = frames.iter().map(|&ip| self.location(ip, &[], 0)).collect();
            self.stacks.insert(id, locs.clone());
            return locs;
        };
        let resolved: Vec<_> = frames.iter().map(|&ip| sym.frames(ip)).collect();
        let (mut first, mut skip) = trim_point(&resolved);
        if let Some(more) = self.also_trim {
            let trim = |f: &Frame| more(f) || crate::profile::symbolize::is_allocator_frame(f);
            while first + 1 < resolved.len()
                && !resolved[first][skip..].is_empty()
                && resolved[first][skip..].iter().all(trim)
            {
                first += 1;
                skip = 0;
            }
            let lines = &resolved[first];
            skip += lines[skip..]
                .iter()
                .take_while(|f| trim(f))
                .count()
                .min(lines.len().saturating_sub(skip + 1));
        }
        let mut locs = Vec::with_capacity(resolved.len() - first);
        for (i, lines) in resolved.iter().enumerate().skip(first) {
            let skip = if i == first { skip } else { 0 };
            locs.push(self.location(frames[i], &lines[skip..], skip));
        }
        self.stacks.insert(id, locs.clone());
        locs
    }

    fn location(&mut self, ret: u64, lines: &[Frame], skip: usize) -> u64 {
        if let Some(&id) = self.locations.get(&(ret, skip)) {
            return id;
        }
        let id = self.p.location.len() as u64 + 1;
        let address = ret.saturating_sub(1);
        let mapping_id = self
            .maps
            .iter()
            .position(|m| address >= m.start && address < m.end)
            .map_or(0, |i| i as u64 + 1);
        let line = lines
            .iter()
            .map(|f| proto::Line {
                function_id: self.function(f),
                line: i64::from(f.line),
                column: 0,
            })
            .collect();
        self.p.location.push(proto::Location {
            id,
            mapping_id,
            address,
            line,
            is_folded: false,
        });
        self.locations.insert((ret, skip), id);
        id
    }

    fn function(&mut self, f: &Frame) -> u64 {
        let key = (f.name.clone(), f.system_name.clone(), f.file.clone());
        if let Some(&id) = self.functions.get(&key) {
            return id;
        }
        let id = self.p.function.len() as u64 + 1;
        let function = proto::Function {
            id,
            name: self.s.get(&f.name),
            system_name: self.s.get(&f.system_name),
            filename: self.s.get(&f.file),
            start_line: 0,
        };
        self.p.function.push(function);
        self.functions.insert(key, id);
        id
    }
}

//! Reading the tallies in-process: per call stack, the four estimates.

use hashbrown::HashMap;

use crate::profile::proto;

/// One source frame of a stack.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StackFrame {
    /// Demangled function name (`??` when unknown).
    pub function: String,
    /// Source file, or empty.
    pub file: String,
    /// Source line, or 0.
    pub line: u32,
}

/// The tallies of one call stack (leaf frame first), scaled estimates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StackTally {
    pub frames: Vec<StackFrame>,
    pub alloc_objects: u64,
    pub alloc_space: u64,
    pub inuse_objects: u64,
    pub inuse_space: u64,
}

impl StackTally {
    /// Whether any frame's function name contains `needle`.
    pub fn mentions(&self, needle: &str) -> bool {
        self.frames.iter().any(|f| f.function.contains(needle))
    }
}

/// Per-stack tallies of a profile written by heapprof, heaviest in-use first.
pub fn from_profile(p: &proto::Profile) -> Vec<StackTally> {
    let s = |i: i64| p.string_table.get(i as usize).cloned().unwrap_or_default();
    let functions: HashMap<u64, &proto::Function> = p.function.iter().map(|f| (f.id, f)).collect();
    let locations: HashMap<u64, &proto::Location> = p.location.iter().map(|l| (l.id, l)).collect();
    let mut by_stack: HashMap<Vec<u64>, [u64; 4]> = HashMap::new();
    for sample in &p.sample {
        let v = by_stack.entry(sample.location_id.clone()).or_default();
        for (acc, x) in v.iter_mut().zip(&sample.value) {
            *acc += (*x).max(0) as u64;
        }
    }
    let mut out: Vec<StackTally> = by_stack
        .into_iter()
        .map(|(locs, v)| StackTally {
            frames: locs
                .iter()
                .filter_map(|id| locations.get(id))
                .flat_map(|l| l.line.iter())
                .map(|line| {
                    let f = functions.get(&line.function_id);
                    StackFrame {
                        function: f.map(|f| s(f.name)).unwrap_or_else(|| "??".into()),
                        file: f.map(|f| s(f.filename)).unwrap_or_default(),
                        line: line.line.max(0) as u32,
                    }
                })
                .collect(),
            alloc_objects: v[0],
            alloc_space: v[1],
            inuse_objects: v[2],
            inuse_space: v[3],
        })
        .collect();
    out.sort_by_key(|t| std::cmp::Reverse((t.inuse_space, t.alloc_space)));
    out
}

//! Differences of profiles: Go's `?seconds=N` delta and godeltaprof's
//! `delta_heap`, computed over built pprof messages.
//!
//! # Model
//! As Go's `net/http/pprof` does (`p0.Scale(-1)` then `profile.Merge`), a
//! [`Merger`] adds profiles into one, each value multiplied by a per-value
//! factor, matching samples by identity rather than by id: location ids are
//! private to each message, so locations match on (mapping, address, lines
//! by function name, system name, file and line), and samples on (those
//! locations, their labels). Working on messages, not on engine snapshots,
//! keeps this independent of how a profile was made: any profile heapprof
//! serves (a future threads profile too) gets deltas for free.
//!
//! Heap samples carry an `age` label whose bucket an object leaves as it
//! grows older; between two profiles the same objects would then sit under
//! different keys and the delta would show one positive and one negative
//! sample per move. Deltas therefore drop `age` ([`AGE`]) before matching, so
//! each (stack, size) nets to one sample, and samples that net to zero in
//! every value are left out. Values may be negative: memory freed during the
//! window shows as negative `inuse_*`, as in Go.

use hashbrown::HashMap;

use crate::profile::proto::{Function, Label, Line, Location, Mapping, Profile, Sample, ValueType};

/// The heap profile's age label, dropped by deltas (see the module docs).
pub const AGE: &str = "age";

type LocKey = (u64, u64, Vec<(u64, i64)>);
type SampleKey = (Vec<u64>, Vec<(i64, i64, i64, i64)>);

/// Adds profiles sample by sample; see the module docs.
pub struct Merger {
    out: Profile,
    strings: HashMap<String, i64>,
    functions: HashMap<(i64, i64, i64, i64), u64>,
    mappings: HashMap<(u64, u64, u64, i64, i64), u64>,
    locations: HashMap<LocKey, u64>,
    samples: HashMap<SampleKey, usize>,
    drop_labels: Vec<String>,
}

impl Merger {
    /// An empty merger that ignores the labels named in `drop_labels`.
    pub fn new(drop_labels: &[&str]) -> Merger {
        let mut m = Merger {
            out: Profile::default(),
            strings: HashMap::new(),
            functions: HashMap::new(),
            mappings: HashMap::new(),
            locations: HashMap::new(),
            samples: HashMap::new(),
            drop_labels: drop_labels.iter().map(|s| s.to_string()).collect(),
        };
        m.intern("");
        m
    }

    fn intern(&mut self, s: &str) -> i64 {
        if let Some(&i) = self.strings.get(s) {
            return i;
        }
        let i = self.out.string_table.len() as i64;
        self.out.string_table.push(s.to_owned());
        self.strings.insert(s.to_owned(), i);
        i
    }

    /// Adds `p`, value `i` of every sample multiplied by `factors[i]` (1
    /// past the end of `factors`). The header (sample types, period, times,
    /// comments) becomes `p`'s, so add the newest profile last. Fails when
    /// `p`'s sample types differ from those already added.
    pub fn add(&mut self, p: &Profile, factors: &[i64]) -> Result<(), String> {
        let st = |i: i64| p.string_table.get(i as usize).map_or("", String::as_str);
        let types: Vec<(String, String)> = p
            .sample_type
            .iter()
            .map(|t| (st(t.r#type).to_owned(), st(t.unit).to_owned()))
            .collect();
        if !self.out.sample_type.is_empty() {
            let have: Vec<(String, String)> = self
                .out
                .sample_type
                .iter()
                .map(|t| {
                    let s = |i: i64| self.out.string_table[i as usize].clone();
                    (s(t.r#type), s(t.unit))
                })
                .collect();
            if have != types {
                return Err(format!(
                    "profiles have different sample types: {have:?} and {types:?}"
                ));
            }
        }
        self.header(p, &types);

        let mut mapping_ids: HashMap<u64, u64> = HashMap::new();
        for m in &p.mapping {
            let (file, build) = (self.intern(st(m.filename)), self.intern(st(m.build_id)));
            let key = (m.memory_start, m.memory_limit, m.file_offset, file, build);
            let next = self.out.mapping.len() as u64 + 1;
            let id = *self.mappings.entry(key).or_insert(next);
            if id == next {
                self.out.mapping.push(Mapping {
                    id,
                    filename: file,
                    build_id: build,
                    ..m.clone()
                });
            }
            mapping_ids.insert(m.id, id);
        }
        let mut function_ids: HashMap<u64, u64> = HashMap::new();
        for f in &p.function {
            let (name, sys, file) = (
                self.intern(st(f.name)),
                self.intern(st(f.system_name)),
                self.intern(st(f.filename)),
            );
            let next = self.out.function.len() as u64 + 1;
            let id = *self
                .functions
                .entry((name, sys, file, f.start_line))
                .or_insert(next);
            if id == next {
                self.out.function.push(Function {
                    id,
                    name,
                    system_name: sys,
                    filename: file,
                    start_line: f.start_line,
                });
            }
            function_ids.insert(f.id, id);
        }
        let mut location_ids: HashMap<u64, u64> = HashMap::new();
        for l in &p.location {
            let mapping_id = mapping_ids.get(&l.mapping_id).copied().unwrap_or(0);
            let line: Vec<Line> = l
                .line
                .iter()
                .map(|ln| Line {
                    function_id: function_ids.get(&ln.function_id).copied().unwrap_or(0),
                    ..ln.clone()
                })
                .collect();
            let key = (
                mapping_id,
                l.address,
                line.iter().map(|ln| (ln.function_id, ln.line)).collect(),
            );
            let next = self.out.location.len() as u64 + 1;
            let id = *self.locations.entry(key).or_insert(next);
            if id == next {
                self.out.location.push(Location {
                    id,
                    mapping_id,
                    address: l.address,
                    line,
                    is_folded: l.is_folded,
                });
            }
            location_ids.insert(l.id, id);
        }

        let width = self.out.sample_type.len();
        for s in &p.sample {
            let Some(locs) = s
                .location_id
                .iter()
                .map(|id| location_ids.get(id).copied())
                .collect::<Option<Vec<u64>>>()
            else {
                continue; // names a location the profile lacks: as readers do, skip it
            };
            let mut labels: Vec<(i64, i64, i64, i64)> = Vec::with_capacity(s.label.len());
            for l in &s.label {
                let key = st(l.key);
                if self.drop_labels.iter().any(|d| d == key) {
                    continue;
                }
                labels.push((
                    self.intern(key),
                    self.intern(st(l.str)),
                    l.num,
                    self.intern(st(l.num_unit)),
                ));
            }
            labels.sort_unstable();
            let next = self.out.sample.len();
            let index = *self
                .samples
                .entry((locs.clone(), labels.clone()))
                .or_insert(next);
            if index == next {
                self.out.sample.push(Sample {
                    location_id: locs,
                    value: vec![0; width],
                    label: labels
                        .iter()
                        .map(|&(key, str, num, num_unit)| Label {
                            key,
                            str,
                            num,
                            num_unit,
                        })
                        .collect(),
                });
            }
            let values = &mut self.out.sample[index].value;
            for (i, v) in s.value.iter().take(width).enumerate() {
                let f = factors.get(i).copied().unwrap_or(1);
                values[i] = values[i].saturating_add(v.saturating_mul(f));
            }
        }
        Ok(())
    }

    fn header(&mut self, p: &Profile, types: &[(String, String)]) {
        let st = |i: i64| p.string_table.get(i as usize).map_or("", String::as_str);
        let vt = |m: &mut Merger, t: &str, u: &str| ValueType {
            r#type: m.intern(t),
            unit: m.intern(u),
        };
        self.out.sample_type = types.iter().map(|(t, u)| vt(self, t, u)).collect();
        self.out.period_type = p
            .period_type
            .as_ref()
            .map(|t| vt(self, st(t.r#type), st(t.unit)));
        self.out.period = p.period;
        self.out.time_nanos = p.time_nanos;
        self.out.duration_nanos = p.duration_nanos;
        self.out.default_sample_type = self.intern(st(p.default_sample_type));
        self.out.drop_frames = self.intern(st(p.drop_frames));
        self.out.keep_frames = self.intern(st(p.keep_frames));
        self.out.comment = p.comment.iter().map(|&c| self.intern(st(c))).collect();
    }

    /// The merged profile, without samples that are zero in every value.
    pub fn finish(mut self) -> Profile {
        self.out.sample.retain(|s| s.value.iter().any(|&v| v != 0));
        self.out
    }
}

/// `new − old` in every value (Go's `?seconds=N` delta), timed as `new` with
/// the duration between the two.
pub fn delta(old: &Profile, new: &Profile) -> Result<Profile, String> {
    let mut m = Merger::new(&[AGE]);
    m.add(old, &vec![-1; old.sample_type.len()])?;
    m.add(new, &[])?;
    let mut p = m.finish();
    p.duration_nanos = new.time_nanos.saturating_sub(old.time_nanos);
    Ok(p)
}

/// godeltaprof's heap delta: `alloc_*` values of `new` minus those of
/// `prev` (all of them with no `prev`), every other value (`inuse_*`) as in
/// `new`.
pub fn alloc_delta(prev: Option<&Profile>, new: &Profile) -> Result<Profile, String> {
    let mut m = Merger::new(&[AGE]);
    if let Some(prev) = prev {
        let st = |i: i64| prev.string_table.get(i as usize).map_or("", String::as_str);
        let factors: Vec<i64> = prev
            .sample_type
            .iter()
            .map(|t| {
                if st(t.r#type).starts_with("alloc_") {
                    -1
                } else {
                    0
                }
            })
            .collect();
        m.add(prev, &factors)?;
    }
    m.add(new, &[])?;
    let mut p = m.finish();
    if let Some(prev) = prev {
        p.duration_nanos = new.time_nanos.saturating_sub(prev.time_nanos);
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A heap-like profile: one location per function name, samples as
    /// (function, bytes label, age label, four values).
    fn profile(time: i64, samples: &[(&str, i64, Option<i64>, [i64; 4])]) -> Profile {
        let mut p = Profile {
            string_table: vec![String::new()],
            time_nanos: time,
            ..Default::default()
        };
        let mut s = |v: &str| {
            if let Some(i) = p.string_table.iter().position(|x| x == v) {
                return i as i64;
            }
            p.string_table.push(v.to_owned());
            p.string_table.len() as i64 - 1
        };
        let types = [
            ("alloc_objects", "count"),
            ("alloc_space", "bytes"),
            ("inuse_objects", "count"),
            ("inuse_space", "bytes"),
        ]
        .map(|(t, u)| ValueType {
            r#type: s(t),
            unit: s(u),
        });
        let (k_bytes, k_age, secs) = (s("bytes"), s("age"), s("seconds"));
        let mut names: Vec<(&str, i64)> = Vec::new();
        for (f, ..) in samples {
            if !names.iter().any(|(n, _)| n == f) {
                names.push((f, s(f)));
            }
        }
        let mut out = Vec::new();
        for &(f, size, age, value) in samples {
            // Ids in reverse order of the other profile's, so matching by
            // id would be wrong.
            let id = (names.len() - names.iter().position(|(n, _)| *n == f).unwrap()) as u64;
            let mut label = vec![Label {
                key: k_bytes,
                num: size,
                num_unit: k_bytes,
                ..Default::default()
            }];
            if let Some(a) = age {
                label.push(Label {
                    key: k_age,
                    num: a,
                    num_unit: secs,
                    ..Default::default()
                });
            }
            out.push(Sample {
                location_id: vec![id],
                value: value.to_vec(),
                label,
            });
        }
        p.sample_type = types.to_vec();
        for (i, (_, name)) in names.iter().rev().enumerate() {
            let id = i as u64 + 1;
            p.function.push(Function {
                id,
                name: *name,
                system_name: *name,
                ..Default::default()
            });
            p.location.push(Location {
                id,
                line: vec![Line {
                    function_id: id,
                    line: 1,
                    column: 0,
                }],
                ..Default::default()
            });
        }
        // Addresses must match across profiles for the same function.
        for l in &mut p.location {
            let f = &p.function[l.line[0].function_id as usize - 1];
            l.address = p.string_table[f.name as usize].bytes().map(u64::from).sum();
        }
        p.sample = out;
        p
    }

    fn by_function(p: &Profile) -> Vec<(String, [i64; 4])> {
        let mut v: Vec<(String, [i64; 4])> = p
            .sample
            .iter()
            .map(|s| {
                let loc = &p.location[s.location_id[0] as usize - 1];
                let f = &p.function[loc.line[0].function_id as usize - 1];
                let mut a = [0; 4];
                a.copy_from_slice(&s.value);
                (p.string_table[f.name as usize].clone(), a)
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn delta_nets_every_value_across_ages_and_ids() {
        let old = profile(
            1_000,
            &[
                ("grow", 10, Some(0), [5, 50, 5, 50]),
                ("shrink", 8, Some(0), [4, 32, 4, 32]),
                ("steady", 2, None, [3, 6, 0, 0]),
            ],
        );
        let new = profile(
            5_000,
            &[
                ("steady", 2, None, [3, 6, 0, 0]),
                ("grow", 10, Some(1), [5, 50, 5, 50]),
                ("grow", 10, Some(0), [2, 20, 2, 20]),
                ("shrink", 8, Some(1), [1, 8, 1, 8]),
                ("shrink", 8, None, [3, 24, 0, 0]),
                ("fresh", 1, Some(0), [1, 1, 1, 1]),
            ],
        );
        let d = delta(&old, &new).unwrap();
        assert_eq!(
            by_function(&d),
            vec![
                ("fresh".into(), [1, 1, 1, 1]),
                ("grow".into(), [2, 20, 2, 20]),
                ("shrink".into(), [0, 0, -3, -24]),
            ]
        );
        assert_eq!((d.time_nanos, d.duration_nanos), (5_000, 4_000));
        assert!(d.sample.iter().all(|s| s.label.len() == 1), "age dropped");
    }

    #[test]
    fn alloc_delta_keeps_inuse_absolute() {
        let prev = profile(1_000, &[("leak", 4, Some(0), [2, 8, 2, 8])]);
        let new = profile(
            3_000,
            &[
                ("leak", 4, Some(1), [2, 8, 2, 8]),
                ("leak", 4, Some(0), [3, 12, 3, 12]),
            ],
        );
        let d = alloc_delta(Some(&prev), &new).unwrap();
        assert_eq!(by_function(&d), vec![("leak".into(), [3, 12, 5, 20])]);
        assert_eq!(d.duration_nanos, 2_000);
        let first = alloc_delta(None, &new).unwrap();
        assert_eq!(by_function(&first), vec![("leak".into(), [5, 20, 5, 20])]);
    }

    #[test]
    fn different_sample_types_are_refused() {
        let a = profile(0, &[]);
        let mut b = profile(0, &[]);
        b.sample_type.pop();
        assert!(delta(&a, &b).is_err());
    }
}

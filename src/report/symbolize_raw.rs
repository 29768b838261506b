//! Symbolizing raw profiles (`HEAPPROF_SYMBOLIZE=0`, or any pprof profile
//! whose mappings lack `has_functions`) from the files on this machine, so
//! every report — and `heapprof symbolize` for other readers — names them.
//!
//! # Model
//! A raw location has an address and a mapping (file, load range, file
//! offset, GNU build ID). Each mapping's file is found by its path and
//! checked by its build ID before use; debug info comes from the file itself
//! or from a debug file found by build ID or debug link under
//! `/usr/lib/debug` (`.build-id/xx/yyyy.debug`). DWARF is read for every
//! object ([`Policy::Everything`]): names, file:line and inlined frames, the
//! callee first, as the in-process symbolizer writes them. A file that is
//! gone or whose build ID differs leaves its addresses as they are, and is
//! reported once ([`symbolize`] returns the notes).
//!
//! Then the allocator frames at each stack's leaf are trimmed exactly as a
//! symbolized dump trims them ([`crate::profile::symbolize::trim_point`]), the
//! profile's `drop_frames` (which did that job for `go tool pprof`) is
//! cleared, and the mappings that could be read are marked `has_functions`,
//! `has_filenames`, `has_line_numbers` and `has_inline_frames`, so no reader
//! symbolizes them again.

use hashbrown::HashMap;

use super::ReportError;
use crate::profile::mappings::Mapping;
use crate::profile::proto::{self, Profile};
use crate::profile::symbolize::{trim_point, Frame, Frames, Policy, Symbolizer};

/// Whether `p` has locations that [`symbolize`] would name: addresses
/// without lines in mappings not marked `has_functions`.
pub fn needs_symbolizing(p: &Profile) -> bool {
    p.location.iter().any(|l| {
        l.line.is_empty() && mapping_index(p, l).is_some_and(|i| !p.mapping[i].has_functions)
    })
}

fn mapping_index(p: &Profile, l: &proto::Location) -> Option<usize> {
    if l.mapping_id != 0 {
        return p.mapping.iter().position(|m| m.id == l.mapping_id);
    }
    p.mapping
        .iter()
        .position(|m| l.address >= m.memory_start && l.address < m.memory_limit)
}

/// Names the raw locations of `p` in place. Returns one note per file that
/// could not be used (gone, or a different build), for the caller to show.
pub fn symbolize(p: &mut Profile) -> Vec<String> {
    if !needs_symbolizing(p) {
        return Vec::new();
    }
    let s = |i: i64| p.string_table.get(i as usize).cloned().unwrap_or_default();
    let maps: Vec<Mapping> = p
        .mapping
        .iter()
        .map(|m| Mapping {
            start: m.memory_start,
            end: m.memory_limit,
            offset: m.file_offset,
            path: s(m.filename),
            build_id: s(m.build_id),
        })
        .collect();
    let wanted: Vec<bool> = p
        .mapping
        .iter()
        .zip(&maps)
        .map(|(m, mm)| !m.has_functions && mm.path.starts_with('/'))
        .collect();
    let mut sym = Symbolizer::new(maps, Policy::Everything);
    let mut strings: HashMap<String, i64> = p
        .string_table
        .iter()
        .enumerate()
        .map(|(i, s)| (s.clone(), i as i64))
        .collect();
    let mut functions: HashMap<(String, String, String), u64> = HashMap::new();
    let mut next_function = p.function.iter().map(|f| f.id).max().unwrap_or(0) + 1;
    let mut resolved_maps = vec![false; p.mapping.len()];
    // Frames per location id (empty: unknown), for trimming below.
    let mut frames_of: HashMap<u64, Frames> = HashMap::new();
    let mut any = false;
    for li in 0..p.location.len() {
        let l = &p.location[li];
        if !l.line.is_empty() {
            continue;
        }
        let Some(mi) = mapping_index(p, l).filter(|&i| wanted[i]) else {
            continue;
        };
        // The symbolizer takes return addresses (it looks up `ret - 1`);
        // a profile's location address is already `ret - 1`.
        let frames = sym.frames(l.address.wrapping_add(1));
        if frames.iter().all(|f| f.name == "??" && f.file.is_empty()) {
            continue;
        }
        let mut lines = Vec::with_capacity(frames.len());
        for f in frames.iter() {
            let key = (f.name.clone(), f.system_name.clone(), f.file.clone());
            let id = match functions.get(&key) {
                Some(&id) => id,
                None => {
                    let id = next_function;
                    next_function += 1;
                    let function = proto::Function {
                        id,
                        name: intern(&mut strings, &mut p.string_table, &f.name),
                        system_name: intern(&mut strings, &mut p.string_table, &f.system_name),
                        filename: intern(&mut strings, &mut p.string_table, &f.file),
                        start_line: 0,
                    };
                    p.function.push(function);
                    functions.insert(key, id);
                    id
                }
            };
            lines.push(proto::Line {
                function_id: id,
                line: i64::from(f.line),
                column: 0,
            });
        }
        let l = &mut p.location[li];
        l.line = lines;
        frames_of.insert(l.id, frames);
        resolved_maps[mi] = true;
        any = true;
    }
    if any {
        trim_samples(p, &frames_of);
        p.drop_frames = 0;
        for (m, done) in p.mapping.iter_mut().zip(resolved_maps) {
            if done {
                m.has_functions = true;
                m.has_filenames = true;
                m.has_line_numbers = true;
                m.has_inline_frames = true;
            }
        }
    }
    sym.problems()
        .iter()
        .map(|problem| format!("cannot name addresses in {problem}; they are shown as addresses"))
        .collect()
}

/// `heapprof symbolize IN -o OUT`: writes a symbolized copy of the profile
/// at `input` to `output` (gzipped, atomically). Returns the notes of
/// [`symbolize`].
pub fn symbolize_file(input: &str, output: &std::path::Path) -> Result<Vec<String>, ReportError> {
    let bytes = std::fs::read(input).map_err(|error| ReportError::Read {
        path: input.to_string(),
        error,
    })?;
    let mut p = super::read::decode(input, &bytes)?;
    let notes = symbolize(&mut p);
    crate::profile::output::write_atomic(output, &crate::profile::output::encode_gz(&p)).map_err(
        |error| ReportError::Write {
            path: output.display().to_string(),
            error,
        },
    )?;
    Ok(notes)
}

/// Shows each note on stderr once per process (a diff of two profiles of
/// one program names a missing file once).
pub fn say_once(notes: &[String]) {
    use std::io::Write;
    static SAID: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut said = SAID.lock().unwrap_or_else(|e| e.into_inner());
    for n in notes {
        if !said.contains(n) {
            let _ = writeln!(std::io::stderr(), "heapprof: {n}");
            said.push(n.clone());
        }
    }
}

fn intern(index: &mut HashMap<String, i64>, table: &mut Vec<String>, s: &str) -> i64 {
    if let Some(&i) = index.get(s) {
        return i;
    }
    let i = table.len() as i64;
    table.push(s.to_owned());
    index.insert(s.to_owned(), i);
    i
}

/// Drops the allocator frames at each sample's leaf, as a symbolized dump
/// does; a location trimmed part-way becomes a new location.
fn trim_samples(p: &mut Profile, frames_of: &HashMap<u64, Frames>) {
    let empty: Frames = Vec::<Frame>::new().into();
    let mut next_id = p.location.iter().map(|l| l.id).max().unwrap_or(0) + 1;
    let mut partial: HashMap<(u64, usize), u64> = HashMap::new();
    let by_id: HashMap<u64, usize> = p
        .location
        .iter()
        .enumerate()
        .map(|(i, l)| (l.id, i))
        .collect();
    let mut new_locations = Vec::new();
    for sample in &mut p.sample {
        let resolved: Vec<Frames> = sample
            .location_id
            .iter()
            .map(|id| frames_of.get(id).cloned().unwrap_or_else(|| empty.clone()))
            .collect();
        let (first, skip) = trim_point(&resolved);
        if first == 0 && skip == 0 {
            continue;
        }
        let mut ids = sample.location_id.split_off(first);
        if skip > 0 {
            let id = ids[0];
            let new = *partial.entry((id, skip)).or_insert_with(|| {
                let mut l = p.location[by_id[&id]].clone();
                l.id = next_id;
                next_id += 1;
                l.line.drain(..skip);
                new_locations.push(l);
                next_id - 1
            });
            ids[0] = new;
        }
        sample.location_id = ids;
    }
    p.location.extend(new_locations);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_file_is_reported_and_its_address_kept() {
        let mut p = Profile {
            string_table: vec!["".into(), "/nonexistent/heapprof-test-bin".into()],
            mapping: vec![proto::Mapping {
                id: 1,
                memory_start: 0x1000,
                memory_limit: 0x2000,
                filename: 1,
                ..Default::default()
            }],
            location: vec![proto::Location {
                id: 1,
                mapping_id: 1,
                address: 0x1234,
                ..Default::default()
            }],
            ..Default::default()
        };
        let notes = symbolize(&mut p);
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(
            notes[0].contains("/nonexistent/heapprof-test-bin"),
            "{notes:?}"
        );
        assert!(p.location[0].line.is_empty());
        assert!(!p.mapping[0].has_functions);
    }
}

//! The profile's structure, as Go writes heap profiles and as readers need
//! it: sample types, period, string table, ids, mappings with build IDs,
//! functions with demangled and mangled names, `bytes` and `age` labels.

mod common;

use std::alloc::System;
use std::time::Duration;

use heapprof::profile::proto::Profile;

#[global_allocator]
static GLOBAL: heapprof::Profiler<System> = heapprof::Profiler::new(System);

#[inline(never)]
fn old_memory() -> &'static mut [u8] {
    Box::leak(vec![1u8; 3000].into_boxed_slice())
}

#[inline(never)]
fn young_memory() -> &'static mut [u8] {
    Box::leak(vec![1u8; 5000].into_boxed_slice())
}

fn s(p: &Profile, i: i64) -> &str {
    &p.string_table[i as usize]
}

fn label_num(
    p: &Profile,
    sample: &heapprof::profile::proto::Sample,
    key: &str,
) -> Option<(i64, String)> {
    sample
        .label
        .iter()
        .find(|l| s(p, l.key) == key)
        .map(|l| (l.num, s(p, l.num_unit).to_owned()))
}

#[test]
fn structure_labels_and_ages() {
    heapprof::set_rate(1);
    old_memory();
    std::thread::sleep(Duration::from_millis(1100));
    young_memory();
    let mut gz = Vec::new();
    heapprof::write_profile(&mut gz).unwrap();
    let p = heapprof::decode_profile(&gz).unwrap();

    // Types, period, defaults.
    let types: Vec<(&str, &str)> = p
        .sample_type
        .iter()
        .map(|t| (s(&p, t.r#type), s(&p, t.unit)))
        .collect();
    assert_eq!(
        types,
        [
            ("alloc_objects", "count"),
            ("alloc_space", "bytes"),
            ("inuse_objects", "count"),
            ("inuse_space", "bytes")
        ]
    );
    let pt = p.period_type.as_ref().unwrap();
    assert_eq!((s(&p, pt.r#type), s(&p, pt.unit)), ("space", "bytes"));
    assert_eq!(p.period, 1);
    assert_eq!(p.string_table[0], "");
    assert_eq!(s(&p, p.default_sample_type), "inuse_space");
    assert!(p.time_nanos > 1_700_000_000_000_000_000);

    // Ids are nonzero and references resolve.
    assert!(p.mapping.iter().all(|m| m.id != 0));
    assert!(p.location.iter().all(|l| l.id != 0));
    assert!(p.function.iter().all(|f| f.id != 0));
    let fids: std::collections::HashSet<u64> = p.function.iter().map(|f| f.id).collect();
    let lids: std::collections::HashSet<u64> = p.location.iter().map(|l| l.id).collect();
    assert!(p
        .sample
        .iter()
        .all(|x| x.location_id.iter().all(|l| lids.contains(l))));
    assert!(p
        .location
        .iter()
        .all(|l| l.line.iter().all(|ln| fids.contains(&ln.function_id))));

    // The test executable's mapping has a build ID and says it is symbolized.
    let exe = std::fs::read_link("/proc/self/exe").unwrap();
    let m = p
        .mapping
        .iter()
        .find(|m| s(&p, m.filename) == exe.to_str().unwrap())
        .expect("mapping of the executable");
    assert!(s(&p, m.build_id).len() >= 16);
    assert!(m.has_functions && m.has_filenames && m.has_line_numbers);

    // Functions: demangled name, mangled system name, file.
    let f = p
        .function
        .iter()
        .find(|f| s(&p, f.name) == "profile_format::old_memory")
        .expect("function old_memory");
    assert!(s(&p, f.system_name).starts_with("_R") || s(&p, f.system_name).starts_with("_ZN"));
    assert!(s(&p, f.filename).ends_with("tests/profile_format.rs"));

    // Location addresses are return address - 1: inside a mapping.
    for l in &p.location {
        if l.mapping_id != 0 {
            let m = &p.mapping[l.mapping_id as usize - 1];
            assert!(l.address >= m.memory_start && l.address < m.memory_limit);
        }
    }

    // Size and age labels: the old object is at least a second old.
    let leaf_of = |x: &heapprof::profile::proto::Sample| {
        let loc = p
            .location
            .iter()
            .find(|l| l.id == x.location_id[0])
            .unwrap();
        let fid = loc.line.last().unwrap().function_id;
        s(&p, p.function.iter().find(|f| f.id == fid).unwrap().name).to_owned()
    };
    let find = |name: &str| {
        p.sample
            .iter()
            .find(|x| leaf_of(x).ends_with(name) && x.value[3] > 0)
            .unwrap_or_else(|| panic!("live sample of {name}"))
    };
    let old = find("old_memory");
    assert_eq!(old.value, [1, 3000, 1, 3000]);
    assert_eq!(label_num(&p, old, "bytes"), Some((3000, "bytes".into())));
    assert_eq!(label_num(&p, old, "age"), Some((1, "seconds".into())));
    let young = find("young_memory");
    assert_eq!(label_num(&p, young, "age"), Some((0, "seconds".into())));
}

#[test]
fn heapprof_never_profiles_itself() {
    heapprof::set_rate(1);
    // Dumps allocate plenty (symbolizer, maps, encoder): none of it may be
    // sampled, or it would show up as stacks through heapprof's own code.
    for _ in 0..3 {
        let _ = heapprof::profile_gz();
        let _ = heapprof::leaks_during(|| drop(vec![0u8; 10]));
    }
    let p = heapprof::profile();
    for t in heapprof::tallies_of(&p) {
        // Allocated by heapprof: a heapprof frame nearer the leaf than any
        // of this test's own code (the user's closure run by `leaks_during`
        // is the test's code, and legitimately profiled).
        let first = |prefix: &str| t.frames.iter().position(|f| f.function.starts_with(prefix));
        let own = first("heapprof::");
        let user = first("profile_format::");
        assert!(
            own.is_none() || user.is_some_and(|u| u < own.unwrap()),
            "heapprof's own allocation was profiled: {:?}",
            t.frames.iter().map(|f| &f.function).collect::<Vec<_>>()
        );
    }
}

//! End-to-end tests of the `heapprof` tool (the built binary) and of the
//! `heapprof::report` library behind it, on synthetic profiles built here
//! with the pprof types, on a real Go heap profile (tests/data/goheap.pb.gz,
//! made by tests/data/goheap.go), and on malformed and random input.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use heapprof::profile::proto::{
    Function, Label, Line, Location, Mapping, Profile, Sample, ValueType,
};
use heapprof::report::{self, ReportError, Resolved, SampleKind};
use prost::Message;

const KIB: i64 = 1024;

// ---------------------------------------------------------------------------
// Building profiles

/// Builds a heap profile the way heapprof and Go write them: four sample
/// types, `space/bytes` period, one mapping, functions with file names.
struct Builder {
    p: Profile,
    strings: HashMap<String, i64>,
    functions: HashMap<(String, String), u64>,
    salt: u64,
    next: u64,
}

/// One source line of a location: function, file, line.
type Src<'a> = (&'a str, &'a str, i64);

impl Builder {
    /// `salt` shifts location ids, function ids and addresses, so profiles
    /// built with different salts share no ids, as files of different runs.
    fn new(salt: u64) -> Builder {
        let mut b = Builder {
            p: Profile::default(),
            strings: HashMap::new(),
            functions: HashMap::new(),
            salt,
            next: 0,
        };
        b.s("");
        for (t, u) in [
            ("alloc_objects", "count"),
            ("alloc_space", "bytes"),
            ("inuse_objects", "count"),
            ("inuse_space", "bytes"),
        ] {
            let vt = ValueType {
                r#type: b.s(t),
                unit: b.s(u),
            };
            b.p.sample_type.push(vt);
        }
        b.p.period_type = Some(ValueType {
            r#type: b.s("space"),
            unit: b.s("bytes"),
        });
        b.p.period = 1;
        let filename = b.s("/usr/bin/app");
        b.p.mapping.push(Mapping {
            id: 1,
            memory_start: b.base(),
            memory_limit: b.base() + 0x10_0000,
            filename,
            has_functions: true,
            has_filenames: true,
            has_line_numbers: true,
            has_inline_frames: true,
            ..Default::default()
        });
        b
    }

    fn base(&self) -> u64 {
        0x5555_0000_0000 + self.salt * 0x100_0000
    }

    fn s(&mut self, v: &str) -> i64 {
        if let Some(&i) = self.strings.get(v) {
            return i;
        }
        let i = self.p.string_table.len() as i64;
        self.p.string_table.push(v.to_string());
        self.strings.insert(v.to_string(), i);
        i
    }

    fn func(&mut self, name: &str, file: &str) -> u64 {
        let key = (name.to_string(), file.to_string());
        if let Some(&id) = self.functions.get(&key) {
            return id;
        }
        let id = 500 + self.salt * 1000 + self.functions.len() as u64;
        let f = Function {
            id,
            name: self.s(name),
            system_name: self.s(&format!("_ZN{}", name.len())),
            filename: self.s(file),
            start_line: 1,
        };
        self.p.function.push(f);
        self.functions.insert(key, id);
        id
    }

    /// A new location standing for `lines`, inlined callee first.
    fn loc(&mut self, lines: &[Src]) -> u64 {
        self.next += 1;
        let id = self.salt * 1000 + self.next;
        let mut line = Vec::new();
        for (f, file, l) in lines {
            line.push(Line {
                function_id: self.func(f, file),
                line: *l,
                column: 0,
            });
        }
        let address = self.base() + 0x1000 + self.next * 0x10;
        self.p.location.push(Location {
            id,
            mapping_id: 1,
            address,
            line,
            is_folded: false,
        });
        id
    }

    /// A stack of one location per entry, leaf first.
    fn stack(&mut self, frames: &[&[Src]]) -> Vec<u64> {
        frames.iter().map(|lines| self.loc(lines)).collect()
    }

    /// A sample of `[alloc_objects, alloc_space, inuse_objects, inuse_space]`
    /// with numeric labels `(key, value, unit)`.
    fn sample(&mut self, stack: &[u64], values: [i64; 4], labels: &[(&str, i64, &str)]) {
        let label = labels
            .iter()
            .map(|(k, v, u)| Label {
                key: self.s(k),
                str: 0,
                num: *v,
                num_unit: self.s(u),
            })
            .collect();
        self.p.sample.push(Sample {
            location_id: stack.to_vec(),
            value: values.to_vec(),
            label,
        });
    }

    fn finish(mut self, time_nanos: i64) -> Profile {
        self.p.time_nanos = time_nanos;
        self.p
    }
}

/// In-use KiB of the churning stack, profile by profile: up and down, no trend.
const CHURN_KIB: [i64; 10] = [300, 50, 400, 120, 350, 80, 420, 10, 380, 100];
const SERIES: usize = CHURN_KIB.len();
const T0: i64 = 1_700_000_000_000_000_000;
/// Ten seconds between profiles.
const STEP_NANOS: i64 = 10_000_000_000;

const WITH_CAPACITY: Src = ("alloc::vec::Vec<T>::with_capacity", "alloc/src/vec.rs", 480);
const LEAK: Src = ("main.leak", "src/main.rs", 10);
const SLOW_LEAK: Src = ("main.slow_leak", "src/main.rs", 20);
const CACHE: Src = ("app::cache::fill", "src/cache.rs", 5);
const CHURN_FMT: Src = ("<[u8; 4] as core::fmt::Debug>::fmt", "core/src/fmt.rs", 7);
const CHURN: Src = ("app::churn::work", "src/churn.rs", 9);
const FREED: Src = ("app::freed::scratch", "src/freed.rs", 3);

fn main_at(line: i64) -> Src<'static> {
    ("main.main", "src/main.rs", line)
}

/// Inuse bytes of one stack `v` as a sample: objects of `size` bytes,
/// everything allocated twice (half of it already freed).
fn vals(v: i64, size: i64) -> [i64; 4] {
    [2 * v / size, 2 * v, v / size, v]
}

/// Profile `i` of a process written every 10 s:
/// - `main.leak` (inlined `Vec::with_capacity` as leaf) grows 100 KiB per
///   profile, as two samples of different sizes at different locations of
///   the same line; the 4 KiB part is 120 s old, the 1 KiB part new;
/// - `main.slow_leak` grows 12 KiB per profile, without an `age` label;
/// - `app::cache::fill` fills 200 KiB per profile for three profiles, then
///   stays at 600 KiB, an hour old;
/// - `app::churn::work` goes up and down (`CHURN_KIB`), 30 s old;
/// - `app::freed::scratch` allocated 50 KiB, all freed.
fn series_profile(i: usize) -> Profile {
    let k = i as i64 + 1;
    // Vary the salt so ids differ from file to file.
    let mut b = Builder::new(i as u64 + 1);
    let leak_a = b.stack(&[&[WITH_CAPACITY, LEAK], &[main_at(30)]]);
    let leak_b = b.stack(&[&[WITH_CAPACITY, LEAK], &[main_at(30)]]);
    let slow = b.stack(&[&[SLOW_LEAK], &[main_at(31)]]);
    let cache = b.stack(&[&[CACHE], &[main_at(32)]]);
    let churn = b.stack(&[&[CHURN_FMT], &[CHURN], &[main_at(33)]]);
    let freed = b.stack(&[&[FREED], &[main_at(34)]]);
    b.sample(
        &leak_a,
        vals(36 * KIB * k, 1024),
        &[("bytes", 1024, "bytes"), ("age", 0, "seconds")],
    );
    b.sample(
        &leak_b,
        vals(64 * KIB * k, 4096),
        &[("bytes", 4096, "bytes"), ("age", 120, "seconds")],
    );
    b.sample(&slow, vals(12 * KIB * k, 512), &[("bytes", 512, "bytes")]);
    b.sample(
        &cache,
        vals(200 * KIB * k.min(3), 2048),
        &[("bytes", 2048, "bytes"), ("age", 3600, "seconds")],
    );
    b.sample(
        &churn,
        vals(CHURN_KIB[i] * KIB, 256),
        &[("bytes", 256, "bytes"), ("age", 30, "seconds")],
    );
    b.sample(&freed, [50, 50 * KIB, 0, 0], &[("bytes", 1024, "bytes")]);
    b.finish(T0 + i as i64 * STEP_NANOS)
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).expect("gzip to memory");
    e.finish().expect("gzip to memory")
}

/// A fresh directory for one test's files.
fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("heapprof-cli-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// Writes the series into `dir`: even profiles gzipped, odd ones raw, to
/// cover both encodings. Returns the paths in time order.
fn write_series(dir: &Path) -> Vec<PathBuf> {
    (0..SERIES)
        .map(|i| {
            let raw = series_profile(i).encode_to_vec();
            let (name, bytes) = if i % 2 == 0 {
                (format!("heap.{i}.pb.gz"), gzip(&raw))
            } else {
                (format!("heap.{i}.pb"), raw)
            };
            let path = dir.join(name);
            std::fs::write(&path, bytes).expect("write profile");
            path
        })
        .collect()
}

fn heapprof(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_heapprof"))
        .args(args)
        .output()
        .expect("run heapprof")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_ok(out: &Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}\nstdout: {}",
        stderr(out),
        stdout(out)
    );
    assert!(out.stderr.is_empty(), "stderr: {}", stderr(out));
    stdout(out)
}

/// Exit status 2, nothing on stdout, exactly one `heapprof: ` line on stderr
/// containing every one of `needles`.
fn assert_error(out: &Output, needles: &[&str]) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(2), "stderr: {err}");
    assert!(out.stdout.is_empty(), "stdout: {}", stdout(out));
    assert!(err.starts_with("heapprof: "), "stderr: {err}");
    assert!(err.ends_with('\n'), "stderr: {err:?}");
    assert_eq!(err.lines().count(), 1, "stderr: {err}");
    for n in needles {
        assert!(err.contains(n), "{n:?} not in stderr: {err}");
    }
    assert!(!err.contains("panicked"), "stderr: {err}");
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

fn functions(frames: &[report::Frame]) -> Vec<&str> {
    frames.iter().map(|f| f.function.as_str()).collect()
}

fn resolved(i: usize) -> Resolved {
    report::parse(&format!("heap.{i}"), &series_profile(i).encode_to_vec()).expect("parse")
}

// ---------------------------------------------------------------------------
// top

#[test]
fn top_library_numbers_are_exact() {
    let r = resolved(9);
    assert_eq!(r.skipped_samples, 0);
    // The two leak samples at distinct locations of one line share a stack.
    assert_eq!(r.stacks.len(), 5);
    let t = report::top(&r, &SampleKind::Default, 0).expect("top");
    assert_eq!(t.sample.name, "inuse_space");
    assert_eq!(t.total, 1_863_680);
    // The fully freed stack has no in-use value and is left out.
    assert_eq!(t.stacks, 4);
    let got: Vec<(i64, &str)> = t
        .rows
        .iter()
        .map(|r| (r.value, r.frames[0].function.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (1_024_000, "alloc::vec::Vec<T>::with_capacity"),
            (614_400, "app::cache::fill"),
            (122_880, "main.slow_leak"),
            (102_400, "<[u8; 4] as core::fmt::Debug>::fmt"),
        ]
    );
    let leak = &t.rows[0];
    assert!((leak.share - 1_024_000.0 / 1_863_680.0).abs() < 1e-12);
    // Inlined callee first, then its caller, then main.
    assert_eq!(
        functions(&leak.frames),
        [
            "alloc::vec::Vec<T>::with_capacity",
            "main.leak",
            "main.main"
        ]
    );
    assert_eq!(leak.frames[1].file, "src/main.rs");
    assert_eq!(leak.frames[1].line, 10);
    assert_eq!(leak.frames[2].line, 30);

    let t = report::top(&r, &SampleKind::AllocObjects, 2).expect("top");
    assert_eq!(t.total, 2970);
    let objs: Vec<i64> = t.rows.iter().map(|r| r.value).collect();
    // leak: 2*(360 + 160); cache: 2*300; slow: 2*240; churn: 2*400; freed: 50.
    assert_eq!(objs, [1040, 800]);
    assert_eq!(t.stacks, 5);
}

#[test]
fn top_cli_prints_values_shares_and_lines() {
    let dir = scratch("top");
    let files = write_series(&dir);
    let out = assert_ok(&heapprof(&["top", s(&files[9]), "-n", "3"]));
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        out.contains("inuse_space: total 1.8 MiB in 4 stacks"),
        "{out}"
    );
    let first = lines
        .iter()
        .position(|l| l.trim_start().starts_with("1 "))
        .expect("row 1");
    let row = lines[first];
    assert!(row.contains("1000.0 KiB"), "{row}");
    assert!(row.contains("54.9%"), "{row}");
    assert!(
        row.ends_with("alloc::vec::Vec<T>::with_capacity (alloc/src/vec.rs:480)"),
        "{row}"
    );
    assert!(lines[first + 1].ends_with("main.leak (src/main.rs:10)"));
    assert!(lines[first + 2].ends_with("main.main (src/main.rs:30)"));
    assert!(out.contains("600.0 KiB"), "{out}");
    assert!(out.contains("120.0 KiB"), "{out}");
    // -n 3 leaves out the fourth stack.
    assert!(!out.contains("app::churn::work"), "{out}");

    // --depth limits the frames printed per stack.
    let out = assert_ok(&heapprof(&["top", s(&files[9]), "-n", "1", "--depth", "1"]));
    assert!(
        out.contains("with_capacity (alloc/src/vec.rs:480)\n"),
        "{out}"
    );
    assert!(out.contains("… 2 more frames"), "{out}");
    assert!(!out.contains("main.leak"), "{out}");

    let out = assert_ok(&heapprof(&[
        "top",
        "--sample=alloc_space",
        s(&files[9]),
        "-n",
        "0",
    ]));
    assert!(
        out.contains("alloc_space: total 3.6 MiB in 5 stacks"),
        "{out}"
    );
    assert!(out.contains("app::freed::scratch"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn paths_are_shortened_for_display_only() {
    use heapprof::report::format::short_path;
    assert_eq!(
        short_path("/rustc/59807616e1fa2540724bfbac14d7976d7e4a3860/library/alloc/src/alloc.rs"),
        "library/alloc/src/alloc.rs"
    );
    assert_eq!(
        short_path(
            "/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/backtrace-0.3.77/src/lib.rs"
        ),
        "backtrace-0.3.77/src/lib.rs"
    );
    assert_eq!(short_path("/work/src/main.rs"), "/work/src/main.rs");
    assert_eq!(short_path("/rustc/notahash/x.rs"), "/rustc/notahash/x.rs");
    assert_eq!(short_path(""), "");
}

// ---------------------------------------------------------------------------
// diff

#[test]
fn diff_puts_the_leak_first_matching_stacks_across_files() {
    let (base, new) = (resolved(0), resolved(9));
    let d = report::diff(&base, &new, &SampleKind::Default, 0).expect("diff");
    let got: Vec<(&str, i64, i64, i64)> = d
        .rows
        .iter()
        .map(|r| (r.frames[0].function.as_str(), r.base, r.new, r.delta))
        .collect();
    assert_eq!(
        got,
        [
            (
                "alloc::vec::Vec<T>::with_capacity",
                102_400,
                1_024_000,
                921_600
            ),
            ("app::cache::fill", 204_800, 614_400, 409_600),
            ("main.slow_leak", 12_288, 122_880, 110_592),
            (
                "<[u8; 4] as core::fmt::Debug>::fmt",
                307_200,
                102_400,
                -204_800
            ),
        ]
    );
    assert_eq!(d.changed, 4);
    assert_eq!(d.base_total, 626_688);
    assert_eq!(d.new_total, 1_863_680);

    let dir = scratch("diff");
    let files = write_series(&dir);
    let out = assert_ok(&heapprof(&["diff", s(&files[0]), s(&files[9]), "-n", "2"]));
    let row = out
        .lines()
        .find(|l| l.trim_start().starts_with("1 "))
        .expect("row 1");
    assert!(row.contains("+900.0 KiB"), "{out}");
    assert!(row.contains("alloc::vec::Vec<T>::with_capacity"), "{out}");
    assert!(out.contains("main.leak (src/main.rs:10)"), "{out}");
    assert!(out.contains("+400.0 KiB"), "{out}");
    assert!(!out.contains("main.slow_leak"), "-n 2: {out}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn diff_matches_unsymbolized_frames_by_module_offset() {
    // Same binary loaded at different addresses (ASLR), no symbols.
    let raw = |start: u64, inuse: i64| {
        let mut b = Builder::new(0);
        b.p.mapping[0].memory_start = start;
        b.p.mapping[0].memory_limit = start + 0x10000;
        b.p.mapping[0].has_functions = false;
        for (id, off) in [(1u64, 0x1234u64), (2, 0x5678)] {
            b.p.location.push(Location {
                id: id + start,
                mapping_id: 1,
                address: start + off,
                ..Default::default()
            });
        }
        b.sample(&[1 + start, 2 + start], [1, inuse, 1, inuse], &[]);
        b.finish(1).encode_to_vec()
    };
    let base = report::parse("base", &raw(0x10_0000, 100)).expect("base");
    let new = report::parse("new", &raw(0x70_0000, 300)).expect("new");
    let d = report::diff(&base, &new, &SampleKind::InuseSpace, 0).expect("diff");
    assert_eq!(d.rows.len(), 1, "{d}");
    assert_eq!(d.rows[0].delta, 200);
    assert_eq!(d.rows[0].frames[0].name(), "app+0x1234");
}

// ---------------------------------------------------------------------------
// leaks

/// The default sampling rate, as the sampled fixtures are written.
const RATE: i64 = 524_288;

/// A heapprof-like sampled profile at `RATE`, `t` seconds after profiling
/// started: for each (stack, object size, birth times of its live samples)
/// one sample per age bucket holding those samples' scaled values, with
/// `bytes` and `age` labels, as `src/profile/pprof.rs` writes them.
fn sampled_profile(t: f64, stacks: &[(&[Src], i64, Vec<f64>)]) -> Profile {
    let mut b = Builder::new(7);
    b.p.period = RATE;
    for (frames, size, births) in stacks {
        let lines: Vec<&[Src]> = frames.iter().map(std::slice::from_ref).collect();
        let stack = b.stack(&lines);
        let mut by_age: std::collections::BTreeMap<i64, u64> = Default::default();
        for &born in births.iter().filter(|&&born| born <= t) {
            // heapprof's buckets: whole seconds below 32 s (enough here).
            let age = (t - born).floor() as i64;
            assert!(age < 32, "fixture ages stay in the exact range");
            *by_age.entry(age).or_default() += 1;
        }
        for (age, n) in by_age {
            let (objs, bytes) =
                heapprof::profile::scale::scale_heap_sample(n, n * *size as u64, RATE as u64);
            let (objs, bytes) = (objs as i64, bytes as i64);
            b.sample(
                &stack,
                [objs, bytes, objs, bytes],
                &[("bytes", *size, "bytes"), ("age", age, "seconds")],
            );
        }
    }
    // The churn's freed samples, ten a second, as a real profile's
    // `alloc_space` counts them: the program is busy all through.
    let churn = b.stack(&[&[CHURN], &[main_at(33)]]);
    let freed = (10.0 * t) as u64;
    let (objs, bytes) =
        heapprof::profile::scale::scale_heap_sample(freed, freed * 32 * 1024, RATE as u64);
    b.sample(
        &churn,
        [objs as i64, bytes as i64, 0, 0],
        &[("bytes", 32 * KIB, "bytes")],
    );
    let mut p = b.finish(T0 + (t * 1e9) as i64);
    p.duration_nanos = (t * 1e9) as i64;
    p
}

const SLOW_ONE: Src = ("app::rare::leak", "src/rare.rs", 4);

/// Profile `k` (0..10) of a 30 s window, a profile every 3 s:
/// - `main.leak` leaks 1 KiB objects: 8 samples, born every 3.5 s;
/// - `app::cache::fill` filled 8 samples of 64 KiB in the first 5 s;
/// - `app::churn::work` has 3 fresh samples of 32 KiB in every profile;
/// - `app::rare::leak` has one sample, born at 13 s.
fn sampled_series(k: usize) -> Profile {
    let t = 3.0 * (k + 1) as f64;
    let leak: Vec<f64> = (0..8).map(|i| 1.5 + 3.5 * i as f64).collect();
    let cache: Vec<f64> = (0..8).map(|i| 0.5 * (i + 1) as f64).collect();
    let churn = vec![t - 0.2, t - 0.1, t];
    sampled_profile(
        t,
        &[
            (&[LEAK, main_at(30)], 1024, leak),
            (&[CACHE, main_at(32)], 64 * 1024, cache),
            (&[CHURN, main_at(33)], 32 * 1024, churn),
            (&[SLOW_ONE, main_at(34)], 2048, vec![13.0]),
        ],
    )
}

fn verdicts(profiles: &[Resolved]) -> report::VerdictReport {
    report::leak_verdicts(profiles, &report::LeakOptions::default()).expect("verdicts")
}

#[test]
fn leaks_verdicts_from_sampled_counts_and_ages() {
    // Out of time order on purpose: leaks sorts by time_nanos.
    let mut profiles: Vec<Resolved> = (0..10)
        .map(|k| report::parse(&format!("s.{k}"), &sampled_series(k).encode_to_vec()).unwrap())
        .collect();
    profiles.swap(2, 7);
    let last = std::slice::from_ref(&profiles[9]);
    for v in [verdicts(&profiles), verdicts(last)] {
        let leaf = |r: &report::VerdictRow| r.frames[0].function.clone();
        assert_eq!(v.steady.len(), 1, "{v}");
        let leak = &v.steady[0];
        assert_eq!(leaf(leak), "main.leak");
        // Raw counts: the scaled values inverted.
        assert_eq!(leak.verdict.samples, 8, "{v}");
        assert_eq!(leak.verdict.fell, 0);
        assert_eq!((leak.verdict.early, leak.verdict.late), (4, 4), "{v}");
        // 8 samples in 30 s, each standing for ~512 KiB of 1 KiB objects.
        let per_sample = 1024.0 / (1.0 - (-1024.0f64 / RATE as f64).exp());
        assert!(
            (leak.rate - 8.0 / 30.0 * per_sample).abs() < 1.0,
            "{}",
            leak.rate
        );
        assert!(leak.rate_interval.0 < leak.rate && leak.rate < leak.rate_interval.1);
        assert_eq!(v.plateau.len(), 1, "{v}");
        assert_eq!(leaf(&v.plateau[0]), "app::cache::fill");
        assert_eq!(v.plateau[0].verdict.samples, 8);
        assert_eq!(v.undecided.len(), 1, "{v}");
        assert_eq!(leaf(&v.undecided[0]), "app::rare::leak");
        // One sample in 30 s: six are expected after 180 s.
        assert_eq!(v.undecided[0].verdict.wait_seconds, Some(150.0));
        assert_eq!(v.churn_count, 1);
        assert!(v.from_ages);
        assert!((v.window_seconds - 30.0).abs() < 1e-9);
    }
    let v = verdicts(&profiles);
    assert_eq!(v.profiles[0].0, "s.0");
    assert_eq!(v.steady[0].counts, [1, 2, 3, 4, 4, 5, 6, 7, 8, 8]);
    // p = P(Bin(8, 1/5) >= 4): the even split cannot exclude slowed growth.
    assert!((v.steady[0].verdict.p_value - 0.056).abs() < 0.001, "{v}");

    let dir = scratch("leaks");
    let files: Vec<PathBuf> = (0..10)
        .map(|k| {
            let path = dir.join(format!("s.{k}.pb.gz"));
            std::fs::write(&path, gzip(&sampled_series(k).encode_to_vec())).unwrap();
            path
        })
        .collect();
    let mut args = vec!["leaks"];
    args.extend(files.iter().rev().map(|p| s(p)));
    let out = assert_ok(&heapprof(&args));
    assert!(
        out.contains("10 profiles, the first to the last 27.0 s apart"),
        "{out}"
    );
    assert!(
        out.contains("window: 30.0 s since profiling started"),
        "{out}"
    );
    assert!(out.contains("steady growth (1 stack)"), "{out}");
    assert!(out.contains("8 live samples, none freed"), "{out}");
    assert!(out.contains("confidence medium (p = 0.056)"), "{out}");
    assert!(out.contains("plateau (1 stack)"), "{out}");
    assert!(out.contains("not enough samples yet (1 stack)"), "{out}");
    assert!(
        out.contains("not enough samples yet: about 3 more minutes at this rate"),
        "{out}"
    );
    assert!(out.contains("churn (1 stack)"), "{out}");
    let leak = out.find("main.leak (").expect("leak listed");
    let cache = out.find("app::cache::fill").expect("plateau listed");
    let rare = out.find("app::rare::leak").expect("undecided listed");
    assert!(leak < cache && cache < rare, "{out}");
    assert!(!out.contains("app::churn::work"), "churn listed: {out}");
    // One profile works too; so do two.
    let out = assert_ok(&heapprof(&["leaks", s(&files[9])]));
    assert!(
        out.contains("one profile") && out.contains("main.leak"),
        "{out}"
    );
    let out = assert_ok(&heapprof(&["leaks", s(&files[4]), s(&files[9])]));
    assert!(out.contains("2 profiles"), "{out}");
    // alloc_* only ever grows: refused.
    assert_error(
        &heapprof(&["leaks", s(&files[9]), "--sample", "alloc_space"]),
        &["alloc_space", "inuse"],
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Profile at `t` s of a service under load for the first 90 s, then idle,
/// sampled at [`RATE`], ages in heapprof's buckets:
/// - `main.leak` leaks 1 KiB objects while the service works: a sample
///   every 0.5 s of the load (180 samples);
/// - `app::cache::fill` filled 10 samples of 64 KiB in the first 15 s, then
///   the load went on;
/// - `app::churn::work` allocates and frees (its samples all freed): 20
///   samples a second under load, one in five seconds idle; only
///   `alloc_space` sees it.
fn busy_then_idle(t: f64) -> Profile {
    let mut b = Builder::new(11);
    b.p.period = RATE;
    let leak: Vec<f64> = (0..180).map(|i| 0.25 + 0.5 * i as f64).collect();
    let cache: Vec<f64> = (0..10).map(|i| 0.5 + 1.5 * i as f64).collect();
    for (frames, size, births) in [
        ([LEAK, main_at(30)], 1024u64, leak),
        ([CACHE, main_at(32)], 64 * 1024, cache),
    ] {
        let lines: Vec<&[Src]> = frames.iter().map(std::slice::from_ref).collect();
        let stack = b.stack(&lines);
        let mut by_age: std::collections::BTreeMap<u64, u64> = Default::default();
        for &born in births.iter().filter(|&&born| born <= t) {
            let age = report::leaks::evidence::age_bucket(((t - born) * 1e9) as u64);
            *by_age.entry(age).or_default() += 1;
        }
        for (age, n) in by_age {
            let (objs, bytes) =
                heapprof::profile::scale::scale_heap_sample(n, n * size, RATE as u64);
            let (objs, bytes) = (objs as i64, bytes as i64);
            b.sample(
                &stack,
                [objs, bytes, objs, bytes],
                &[
                    ("bytes", size as i64, "bytes"),
                    ("age", age as i64, "seconds"),
                ],
            );
        }
    }
    let churn = b.stack(&[&[CHURN], &[main_at(33)]]);
    let freed = (20.0 * t.min(90.0) + 0.2 * (t - 90.0).max(0.0)) as u64;
    let (objs, bytes) =
        heapprof::profile::scale::scale_heap_sample(freed, freed * 4096, RATE as u64);
    b.sample(
        &churn,
        [objs as i64, bytes as i64, 0, 0],
        &[("bytes", 4096, "bytes")],
    );
    let mut p = b.finish(T0 + (t * 1e9) as i64);
    p.duration_nanos = (t * 1e9) as i64;
    p
}

#[test]
fn a_leak_that_grew_under_load_then_sat_idle_is_still_a_leak() {
    // A dump every 5 s for 115 s: 90 s of load, 25 s idle.
    let profiles: Vec<Resolved> = (1..=23)
        .map(|k| {
            let bytes = busy_then_idle(5.0 * k as f64).encode_to_vec();
            report::parse(&format!("b.{k}"), &bytes).unwrap()
        })
        .collect();
    let load: Vec<Resolved> = profiles[..18].to_vec();
    for (series, what) in [(&profiles, "load and idle"), (&load, "load only")] {
        let v = verdicts(series);
        let leaves = |rows: &[report::VerdictRow]| -> Vec<String> {
            rows.iter().map(|r| r.frames[0].function.clone()).collect()
        };
        assert_eq!(leaves(&v.steady), ["main.leak"], "{what}: {v}");
        assert_eq!(leaves(&v.plateau), ["app::cache::fill"], "{what}: {v}");
        // The leak rate while the service works: 2 samples/s of ~512 KiB.
        let per_sample = 1024.0 / (1.0 - (-1024.0f64 / RATE as f64).exp());
        let want = 2.0 * per_sample;
        let rate = v.steady[0].rate;
        assert!(
            (rate - want).abs() < 0.1 * want,
            "{what}: {rate} vs {want}: {v}"
        );
    }
    let v = verdicts(&profiles);
    assert_eq!(v.quiet, [(90.0, 115.0)], "{v}");
    assert!((v.busy_seconds - 90.0).abs() < 1e-9, "{v}");
    let text = v.to_string();
    assert!(
        text.contains("busy (allocating) 90.0 s of the window, quiet 90.0–115.0 s"),
        "{text}"
    );
    // Under load throughout: no quiet time, nothing said about it.
    let v = verdicts(&load);
    assert!(v.quiet.is_empty(), "{v}");
    assert!(
        v.to_string()
            .contains("activity: the program allocated between every two profiles"),
        "{v}"
    );
    assert!(!v.to_string().contains("quiet"), "{v}");
}

/// A profile whose only sample type counts live threads, by creation
/// stack, without ages: `main.spawn_per_request` never joins (one more
/// thread every 3 s), `app::pool::start` started 4 at once.
fn threads_profile(k: usize) -> Profile {
    let mut b = Builder::new(3);
    b.p.sample_type.clear();
    let vt = ValueType {
        r#type: b.s("threads"),
        unit: b.s("count"),
    };
    b.p.sample_type.push(vt);
    b.p.period_type = None;
    b.p.period = 0;
    let leak = b.stack(&[
        &[("main.spawn_per_request", "src/main.rs", 7)],
        &[main_at(40)],
    ]);
    let pool = b.stack(&[&[("app::pool::start", "src/pool.rs", 2)], &[main_at(41)]]);
    let n = k as i64 + 1;
    b.p.sample.push(Sample {
        location_id: leak,
        value: vec![n],
        label: vec![],
    });
    b.p.sample.push(Sample {
        location_id: pool,
        value: vec![4],
        label: vec![],
    });
    b.finish(T0 + k as i64 * 3_000_000_000)
}

#[test]
fn leaks_judges_counts_of_live_things() {
    let profiles: Vec<Resolved> = (0..10)
        .map(|k| report::parse(&format!("t.{k}"), &threads_profile(k).encode_to_vec()).unwrap())
        .collect();
    let v = verdicts(&profiles);
    assert_eq!(v.sample.name, "threads");
    assert!(!v.from_ages);
    assert_eq!(v.steady.len(), 1, "{v}");
    assert_eq!(v.steady[0].frames[0].function, "main.spawn_per_request");
    assert_eq!(v.steady[0].verdict.samples, 10);
    assert_eq!(v.plateau.len(), 1, "{v}");
    assert_eq!(v.plateau[0].frames[0].function, "app::pool::start");
    let text = v.to_string();
    assert!(text.contains("by threads"), "{text}");
    // 10 threads over 27 s.
    assert!(text.contains("rate 0.37 count/s"), "{text}");

    let dir = scratch("leaks-threads");
    let files: Vec<PathBuf> = (0..10)
        .map(|k| {
            let path = dir.join(format!("t.{k}.pb"));
            std::fs::write(&path, threads_profile(k).encode_to_vec()).unwrap();
            path
        })
        .collect();
    let mut args = vec!["leaks", "--sample", "threads"];
    args.extend(files.iter().map(|p| s(p)));
    let out = assert_ok(&heapprof(&args));
    assert!(out.contains("main.spawn_per_request"), "{out}");
    // One profile without ages or duration cannot be judged.
    assert_error(&heapprof(&["leaks", s(&files[9])]), &["t.9.pb", "age"]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn leaks_groups_by_label_value() {
    // Two request kinds on one stack: "upload" leaks, "query" churns (three
    // in flight in every other profile).
    let profile = |k: usize| {
        let t = 3.0 * (k + 1) as f64;
        let mut b = Builder::new(5);
        b.p.period = 1;
        let stack = b.stack(&[&[("app::handle", "src/h.rs", 3)], &[main_at(50)]]);
        let key = b.s("request");
        for (kind, births) in [
            (
                "upload",
                (0..=k).map(|i| 3.0 * i as f64 + 1.0).collect::<Vec<_>>(),
            ),
            ("query", if k % 2 == 0 { vec![t - 0.5; 3] } else { vec![] }),
        ] {
            let value = b.s(kind);
            for born in births.into_iter().filter(|&x| x <= t) {
                let age = (t - born).floor() as i64;
                b.sample(&stack, [1, 100, 1, 100], &[("age", age, "seconds")]);
                b.p.sample.last_mut().unwrap().label.push(Label {
                    key,
                    str: value,
                    num: 0,
                    num_unit: 0,
                });
            }
        }
        let mut p = b.finish(T0 + (t * 1e9) as i64);
        p.duration_nanos = (t * 1e9) as i64;
        report::parse("l", &p.encode_to_vec()).unwrap()
    };
    let profiles: Vec<Resolved> = (0..10).map(profile).collect();
    let by_stack = verdicts(&profiles);
    // Together they fall and rise: the one stack is churn.
    assert!(by_stack.steady.is_empty(), "{by_stack}");
    let opts = report::LeakOptions {
        group: report::Grouping::Label("request".to_string()),
        ..Default::default()
    };
    let v = report::leak_verdicts(&profiles, &opts).unwrap();
    assert_eq!(v.steady.len(), 1, "{v}");
    assert_eq!(v.steady[0].label, Some(Some("upload".to_string())));
    assert_eq!(v.churn_count, 1);
    assert!(v.to_string().contains("request=upload"), "{v}");
}

#[test]
fn leaks_single_profile_uses_age_labels() {
    let r = resolved(9);
    let a = report::leak_age(&r, 60, 0).expect("age");
    let got: Vec<(&str, i64, i64)> = a
        .rows
        .iter()
        .map(|r| (r.frames[1].function.as_str(), r.old, r.inuse))
        .collect();
    // The leak's 4 KiB part is 120 s old, its 1 KiB part new; the cache is an
    // hour old; the churn 30 s; the slow leak has no age label.
    assert_eq!(
        got,
        [
            ("main.leak", 655_360, 1_024_000),
            ("main.main", 614_400, 614_400)
        ]
    );
    assert_eq!(a.rows[1].frames[0].function, "app::cache::fill");
    assert_eq!(a.old_total, 1_269_760);
    assert_eq!(a.unknown_age_total, 122_880);
    assert_eq!(a.inuse_total, 1_863_680);

    let a = report::leak_age(&r, 3600, 0).expect("age");
    assert_eq!(a.rows.len(), 1);
    assert_eq!(a.rows[0].frames[0].function, "app::cache::fill");
    // Age 0 is "at least 0 s old": everything labelled counts.
    let a = report::leak_age(&r, 0, 0).expect("age");
    assert_eq!(a.old_total, 1_863_680 - 122_880);

    let dir = scratch("leaks-age");
    let files = write_series(&dir);
    let out = assert_ok(&heapprof(&["leaks", "--older-than", "60", s(&files[9])]));
    assert!(out.contains("older than 60 s"), "{out}");
    assert!(out.contains("old: 1.2 MiB of 1.8 MiB in use"), "{out}");
    assert!(out.contains("120.0 KiB of unknown age"), "{out}");
    assert!(out.find("main.leak").expect("leak") < out.find("app::cache").expect("cache"));
    assert!(!out.contains("app::churn::work"), "{out}");
    let out = assert_ok(&heapprof(&["leaks", "--older-than", "3600", s(&files[9])]));
    assert!(!out.contains("main.leak"), "{out}");
    assert!(out.contains("app::cache::fill"), "{out}");

    // --older-than ranks one profile.
    assert_error(
        &heapprof(&["leaks", "--older-than", "60", s(&files[0]), s(&files[1])]),
        &["--older-than", "one profile"],
    );
    // A Go profile has no age labels.
    assert_error(
        &heapprof(&["leaks", "tests/data/goheap.pb.gz"]),
        &["goheap.pb.gz", "age"],
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn leaks_rejects_series_without_distinct_times() {
    let mut same = series_profile(1);
    same.time_nanos = T0;
    let profiles = vec![
        resolved(0),
        report::parse("same", &same.encode_to_vec()).expect("parse"),
        resolved(2),
    ];
    match report::leak_verdicts(&profiles, &report::LeakOptions::default()) {
        Err(ReportError::Unsuitable { detail, .. }) => assert!(detail.contains("time_nanos")),
        other => panic!("expected an error, got {other:?}"),
    }
    let mut untimed = series_profile(1);
    untimed.time_nanos = 0;
    let profiles = vec![
        resolved(0),
        report::parse("untimed", &untimed.encode_to_vec()).expect("parse"),
        resolved(2),
    ];
    assert!(report::leak_verdicts(&profiles, &report::LeakOptions::default()).is_err());
}

// ---------------------------------------------------------------------------
// flamegraph

#[test]
fn flamegraph_writes_well_formed_svg() {
    let dir = scratch("flame");
    let files = write_series(&dir);
    let svg_path = dir.join("out.svg");
    let out = heapprof(&["flamegraph", s(&files[9]), "-o", s(&svg_path)]);
    assert_eq!(assert_ok(&out), "");
    let svg = std::fs::read_to_string(&svg_path).expect("svg written");
    assert!(
        svg.starts_with("<?xml") || svg.starts_with("<svg"),
        "{svg:.200}"
    );
    assert!(svg.trim_end().ends_with("</svg>"));
    assert!(svg.contains("main.leak"));
    assert!(svg.contains("inuse_space"));
    assert!(svg.contains("heap.9.pb"));
    // The `;` inside a Rust type name does not split the frame.
    assert!(svg.contains("&lt;[u8: 4] as core::fmt::Debug&gt;::fmt"));
    assert!(!dir.join("out.svg.tmp").exists());

    // Deterministic: the same input draws the same picture.
    let again = heapprof(&["flamegraph", s(&files[9]), "-o", "-"]);
    assert_eq!(String::from_utf8_lossy(&again.stdout), svg);

    let r = resolved(9);
    let (sample, folded) = report::folded(&r, &SampleKind::AllocSpace).expect("folded");
    assert_eq!(sample.name, "alloc_space");
    assert!(folded
        .contains(&"main.main;main.leak;alloc::vec::Vec<T>::with_capacity 2048000".to_string()));
    assert!(folded.contains(&"main.main;app::freed::scratch 51200".to_string()));

    // A leaf ending in a number is not read as a differential second count.
    let mut b = Builder::new(0);
    let st = b.stack(&[&[("closure 2", "src/x.rs", 1)], &[main_at(1)]]);
    b.sample(&st, [1, 10, 1, 10], &[]);
    let r = report::parse("numbered", &b.finish(1).encode_to_vec()).expect("parse");
    let (_, folded) = report::folded(&r, &SampleKind::Default).expect("folded");
    assert_eq!(folded, ["main.main;closure\u{a0}2 10"]);
    report::flamegraph(&r, &SampleKind::Default).expect("draws");

    // Nothing in use to draw: one-line error, no file.
    let mut empty = Builder::new(0);
    let st = empty.stack(&[&[FREED]]);
    empty.sample(&st, [1, 10, 0, 0], &[]);
    let empty_path = dir.join("empty.pb");
    std::fs::write(&empty_path, empty.finish(1).encode_to_vec()).expect("write");
    let none = dir.join("none.svg");
    assert_error(
        &heapprof(&["flamegraph", s(&empty_path), "-o", s(&none)]),
        &["nothing to draw", "alloc_space"],
    );
    assert!(!none.exists());
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------
// A real Go heap profile

#[test]
fn reads_go_heap_profile() {
    let r = report::load("tests/data/goheap.pb.gz").expect("Go profile");
    assert_eq!(
        r.sample_types
            .iter()
            .map(|t| format!("{}/{}", t.name, t.unit))
            .collect::<Vec<_>>(),
        [
            "alloc_objects/count",
            "alloc_space/bytes",
            "inuse_objects/count",
            "inuse_space/bytes"
        ]
    );
    let t = report::top(&r, &SampleKind::Default, 1).expect("top");
    let leaf = &t.rows[0].frames[0];
    assert_eq!(leaf.function, "main.retainBlocks");
    assert!(leaf.file.ends_with("goheap.go"));
    assert_eq!(t.rows[0].value, 64 * 4096);
    let t = report::top(&r, &SampleKind::InuseObjects, 1).expect("top");
    assert_eq!(t.rows[0].value, 64);
    let t = report::top(&r, &SampleKind::AllocSpace, 0).expect("top");
    let churn = t
        .rows
        .iter()
        .find(|row| row.frames[0].function == "main.churnBlocks")
        .expect("churnBlocks allocated");
    assert_eq!(churn.value, 32 * 1024);

    let out = assert_ok(&heapprof(&["top", "tests/data/goheap.pb.gz"]));
    let row = out
        .lines()
        .find(|l| l.trim_start().starts_with("1 "))
        .expect("row 1");
    assert!(row.contains("256.0 KiB"), "{out}");
    assert!(row.contains("main.retainBlocks (./goheap.go:"), "{out}");
    let svg = heapprof(&["flamegraph", "tests/data/goheap.pb.gz", "-o", "-"]);
    assert!(String::from_utf8_lossy(&svg.stdout).contains("main.retainBlocks"));
}

// ---------------------------------------------------------------------------
// Errors

#[test]
fn bad_inputs_fail_with_one_line_and_status_2() {
    let dir = scratch("errors");
    let files = write_series(&dir);
    let mut rng = Rng(0x1234_5678);
    let random = dir.join("random.bin");
    std::fs::write(
        &random,
        (0..4096).map(|_| rng.next() as u8).collect::<Vec<_>>(),
    )
    .expect("write");
    assert_error(
        &heapprof(&["top", s(&random)]),
        &["random.bin", "not a pprof profile"],
    );

    let gz = std::fs::read(&files[0]).expect("read");
    let truncated = dir.join("truncated.pb.gz");
    std::fs::write(&truncated, &gz[..gz.len() / 2]).expect("write");
    assert_error(
        &heapprof(&["top", s(&truncated)]),
        &["truncated.pb.gz", "gzip", "truncated"],
    );
    // Cut inside the gzip trailer: all data present, checksum missing.
    std::fs::write(&truncated, &gz[..gz.len() - 3]).expect("write");
    assert_error(&heapprof(&["top", s(&truncated)]), &["gzip"]);

    let text = dir.join("notes.txt");
    std::fs::write(&text, "this is a text file\nwith two lines\n").expect("write");
    assert_error(&heapprof(&["top", s(&text)]), &["notes.txt", "text file"]);
    let empty = dir.join("empty.pb");
    std::fs::write(&empty, "").expect("write");
    assert_error(&heapprof(&["diff", s(&files[0]), s(&empty)]), &["empty"]);

    // A profile with only inuse_space.
    let mut b = Builder::new(0);
    b.p.sample_type.truncate(0);
    let (t, u) = (b.s("inuse_space"), b.s("bytes"));
    b.p.sample_type.push(ValueType { r#type: t, unit: u });
    let st = b.stack(&[&[LEAK]]);
    b.p.sample.push(Sample {
        location_id: st,
        value: vec![10],
        label: vec![],
    });
    let only = dir.join("only-inuse.pb");
    std::fs::write(&only, b.finish(1).encode_to_vec()).expect("write");
    assert_ok(&heapprof(&["top", s(&only)]));
    assert_error(
        &heapprof(&["top", s(&only), "--sample", "alloc_objects"]),
        &["no alloc_objects samples", "inuse_space"],
    );
    assert_error(
        &heapprof(&["diff", s(&files[0]), s(&only), "--sample", "alloc_space"]),
        &["only-inuse.pb", "alloc_space"],
    );
    assert_error(
        &heapprof(&["flamegraph", s(&only), "--sample", "cpu", "-o", "x.svg"]),
        &["no cpu samples"],
    );

    let missing = dir.join("missing.pb.gz");
    assert_error(
        &heapprof(&["top", s(&missing)]),
        &["missing.pb.gz", "no such file"],
    );
    assert_error(
        &heapprof(&["leaks", s(&files[0]), s(&missing)]),
        &["missing.pb.gz"],
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_arguments_fail_with_one_line_and_usage_on_request() {
    let go = "tests/data/goheap.pb.gz";
    assert_error(&heapprof(&["frobnicate"]), &["unknown command", "top"]);
    assert_error(&heapprof(&["--bogus"]), &["command"]);
    assert_error(&heapprof(&["top"]), &["top needs FILE"]);
    assert_error(&heapprof(&["top", go, go]), &["top takes FILE"]);
    assert_error(&heapprof(&["top", go, "-n"]), &["-n needs"]);
    assert_error(
        &heapprof(&["top", go, "-n", "ten"]),
        &["-n needs a number", "ten"],
    );
    assert_error(&heapprof(&["top", go, "--frobnicate"]), &["unknown option"]);
    assert_error(
        &heapprof(&["top", go, "--older-than", "5"]),
        &["top does not take"],
    );
    assert_error(&heapprof(&["diff", go]), &["diff needs BASE NEW"]);
    assert_error(&heapprof(&["leaks"]), &["leaks needs"]);
    assert_error(
        &heapprof(&["leaks", go, "--older-than", "-1"]),
        &["--older-than"],
    );
    assert_error(&heapprof(&["flamegraph", go]), &["-o OUT.svg"]);
    assert_error(&heapprof(&["top", go, "--depth", "x"]), &["--depth needs"]);
    assert_error(
        &heapprof(&["flamegraph", go, "-o", "x.svg", "--depth", "3"]),
        &["flamegraph does not take --depth"],
    );
    assert_error(&heapprof(&["top", go, "--sample", ""]), &["--sample needs"]);

    for args in [&["--help"][..], &["help"], &["-h"]] {
        let out = assert_ok(&heapprof(args));
        assert!(out.contains("usage:") && out.contains("flamegraph FILE -o OUT.svg"));
        assert!(out.contains("HEAPPROF_RATE") && out.contains("HEAPPROF_PRELOAD"));
    }
    // A command's --help is that command's usage.
    for (cmd, own, other) in [
        ("top", "heapprof top FILE", "heapprof diff"),
        ("leaks", "heapprof leaks FILE --older-than", "heapprof top"),
        ("flamegraph", "-o OUT.svg", "heapprof leaks"),
        ("run", "heapprof run [--rate BYTES]", "--focus"),
        (
            "report",
            "heapprof report FILE... -o OUT.html",
            "heapprof top",
        ),
        (
            "recover",
            "heapprof recover BLACKBOX -o OUT.pb.gz",
            "heapprof top",
        ),
    ] {
        let out = assert_ok(&heapprof(&[cmd, "--help"]));
        assert!(out.contains(own) && !out.contains(other), "{cmd}: {out}");
        assert!(out.contains("heapprof --help"), "{cmd}: {out}");
    }
    let out = heapprof(&[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stdout(&out).contains("usage:"));
    assert!(out.stderr.is_empty());
}

#[test]
fn nonsense_indices_are_errors_or_skipped_never_panics() {
    let good = series_profile(3);
    let parse = |p: &Profile| report::parse("nonsense", &p.encode_to_vec());

    // String indices past the table (or negative) are errors naming the referrer.
    let mut p = good.clone();
    p.function[0].name = 10_000;
    match parse(&p) {
        Err(ReportError::Malformed { detail, .. }) => {
            assert!(
                detail.contains("function") && detail.contains("10000"),
                "{detail}"
            )
        }
        other => panic!("expected Malformed, got {other:?}"),
    }
    for mutate in [
        (|p: &mut Profile| p.function[1].filename = -1) as fn(&mut Profile),
        |p| p.sample_type[2].r#type = 999,
        |p| p.sample_type[0].unit = i64::MIN,
        |p| p.default_sample_type = 4242,
        |p| p.sample[0].label[0].key = 77_777,
        |p| p.sample[0].label[0].num_unit = -5,
        |p| p.mapping[0].filename = 31_337,
        |p| {
            if let Some(pt) = &mut p.period_type {
                pt.unit = 1 << 40
            }
        },
    ] {
        let mut p = good.clone();
        mutate(&mut p);
        assert!(matches!(parse(&p), Err(ReportError::Malformed { .. })));
    }

    // Samples that cannot be placed are skipped and counted.
    let mut p = good.clone();
    p.sample[0].location_id.push(987_654); // undefined location
    p.sample[1].value.truncate(2); // fewer values than sample types
    p.sample[2].value.push(1); // more
    let r = parse(&p).expect("skips bad samples");
    assert_eq!(r.skipped_samples, 3);
    let t = report::top(&r, &SampleKind::Default, 0).expect("top");
    assert!(t.to_string().contains("3 malformed samples skipped"));
    // Unknown function or mapping ids give unsymbolized frames, not errors.
    let mut p = good.clone();
    p.location[0].line[0].function_id = 0;
    p.location[1].mapping_id = 99;
    p.location[2].line.clear();
    let r = parse(&p).expect("unknown ids");
    assert!(r
        .stacks
        .iter()
        .any(|s| s.frames.iter().any(|f| !f.is_symbolized())));
    exercise(&r);

    // Values at the limits saturate instead of overflowing.
    let mut p = good.clone();
    for s in &mut p.sample {
        s.value = vec![i64::MAX, i64::MIN, i64::MAX, i64::MAX];
    }
    let r = parse(&p).expect("huge values");
    let t = report::top(&r, &SampleKind::Default, 0).expect("top");
    assert_eq!(t.total, i64::MAX);
    exercise(&r);
    // inferno adds counts in a u64: the sum of several i64::MAX must not
    // overflow it.
    let svg = report::flamegraph(&r, &SampleKind::Default).expect("huge flame graph");
    assert!(String::from_utf8_lossy(&svg).contains("main.leak"));
    let d = report::diff(&resolved(0), &r, &SampleKind::AllocSpace, 0).expect("diff");
    let _ = d.to_string();

    // No sample types, or no string table: not a profile.
    let mut p = good.clone();
    p.sample_type.clear();
    assert!(matches!(parse(&p), Err(ReportError::NotAProfile { .. })));
    let mut p = good;
    p.string_table[0] = "x".to_string();
    assert!(matches!(parse(&p), Err(ReportError::NotAProfile { .. })));
}

// ---------------------------------------------------------------------------
// Fuzz

/// xorshift64: deterministic, dependency-free pseudo-randomness.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }

    /// String indices: in range, now and then wild (one bad index fails
    /// the whole profile, so a high rate would never reach the reports).
    fn index(&mut self, n: usize) -> i64 {
        match self.below(200) {
            0 => -(self.below(5) as i64) - 1,
            1 => self.next() as i64,
            2 => n as i64,
            _ => self.below(n) as i64,
        }
    }
}

/// Runs every report on `r`, formatting each; errors are fine, panics not.
fn exercise(r: &Resolved) {
    let kinds = [
        SampleKind::Default,
        SampleKind::InuseSpace,
        SampleKind::InuseObjects,
        SampleKind::AllocSpace,
        SampleKind::AllocObjects,
        SampleKind::Other("space".to_string()),
    ];
    for kind in &kinds {
        if let Ok(t) = report::top(r, kind, 3) {
            let _ = t.to_string();
        }
        if let Ok(d) = report::diff(r, r, kind, 3) {
            assert_eq!(d.changed, 0);
            let _ = d.to_string();
        }
        let _ = report::folded(r, kind);
    }
    let opts = report::LeakOptions {
        n: 3,
        ..Default::default()
    };
    let aged = report::LeakOptions {
        older_than_secs: Some(60),
        ..opts.clone()
    };
    for o in [&opts, &aged] {
        if let Ok(a) = report::leaks(std::slice::from_ref(r), o) {
            let _ = a.to_string();
        }
    }
    let mut later = r.clone();
    later.time_nanos = r.time_nanos.wrapping_add(1);
    let mut latest = r.clone();
    latest.time_nanos = r.time_nanos.wrapping_add(2);
    if let Ok(t) = report::leaks(&[r.clone(), later, latest], &opts) {
        let _ = t.to_string();
    }
}

#[test]
fn fuzz_mutated_and_random_inputs_never_panic() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let raw = series_profile(4).encode_to_vec();
    let gz = gzip(&raw);
    let other = resolved(5);
    let mut parsed = 0;
    let mut drawn = 0;
    for round in 0..10_000 {
        let base = if round % 7 == 0 { &gz } else { &raw };
        let mut bytes = base.clone();
        match round % 6 {
            0 | 1 => {
                for _ in 0..1 + rng.below(3) {
                    let i = rng.below(bytes.len());
                    bytes[i] ^= 1 << rng.below(8);
                }
            }
            2 => {
                bytes.truncate(rng.below(bytes.len()));
            }
            3 => {
                let i = rng.below(bytes.len());
                let j = rng.below(bytes.len());
                bytes[i] = rng.next() as u8;
                bytes.insert(j, rng.next() as u8);
            }
            4 => {
                let len = rng.below(300);
                bytes = (0..len).map(|_| rng.next() as u8).collect();
            }
            _ => {
                // Splice two pieces of the profile together.
                let a = rng.below(bytes.len());
                let b = rng.below(bytes.len());
                let tail = bytes[b..].to_vec();
                bytes.truncate(a);
                bytes.extend(tail);
            }
        }
        match report::parse("fuzz", &bytes) {
            Ok(r) => {
                parsed += 1;
                exercise(&r);
                if let Ok(d) = report::diff(&other, &r, &SampleKind::Default, 3) {
                    let _ = d.to_string();
                }
                if round % 10 == 0 && report::flamegraph(&r, &SampleKind::Default).is_ok() {
                    drawn += 1;
                }
            }
            Err(e) => {
                let text = e.to_string();
                assert!(!text.contains('\n'), "{text}");
            }
        }
    }
    // The mutations must reach the resolver and reports, not just the decoder.
    assert!(parsed > 1000, "only {parsed} mutated profiles decoded");
    assert!(drawn > 80, "only {drawn} flame graphs drawn");
}

#[test]
fn fuzz_structurally_random_profiles_never_panic() {
    let mut rng = Rng(0xDEAD_BEEF_CAFE_F00D);
    let mut resolved_ok = 0;
    for _ in 0..5000 {
        let strings = 1 + rng.below(12);
        let mut p = Profile {
            string_table: (0..strings)
                .map(|i| {
                    if i == 0 {
                        String::new()
                    } else {
                        [
                            "inuse_space",
                            "bytes",
                            "age",
                            "seconds",
                            "f",
                            "x;y",
                            "alloc_space",
                        ][rng.below(7)]
                        .to_string()
                    }
                })
                .collect(),
            time_nanos: rng.next() as i64,
            default_sample_type: rng.index(strings),
            ..Default::default()
        };
        if rng.below(4) == 0 {
            p.string_table[0] = "nonempty".to_string();
        }
        let types = rng.below(5);
        for _ in 0..types {
            p.sample_type.push(ValueType {
                r#type: rng.index(strings),
                unit: rng.index(strings),
            });
        }
        for id in 0..rng.below(4) as u64 {
            p.mapping.push(Mapping {
                id: id + rng.below(2) as u64,
                memory_start: rng.next() >> rng.below(64),
                memory_limit: rng.next() >> rng.below(64),
                file_offset: rng.next(),
                filename: rng.index(strings),
                ..Default::default()
            });
        }
        let functions = rng.below(6);
        for id in 0..functions as u64 {
            p.function.push(Function {
                id: id + rng.below(2) as u64,
                name: rng.index(strings),
                system_name: rng.index(strings),
                filename: rng.index(strings),
                start_line: rng.next() as i64,
            });
        }
        let locations = rng.below(8);
        for id in 0..locations as u64 {
            p.location.push(Location {
                id: id + rng.below(2) as u64,
                mapping_id: rng.below(5) as u64,
                address: rng.next(),
                line: (0..rng.below(3))
                    .map(|_| Line {
                        function_id: rng.below(functions + 2) as u64,
                        line: rng.next() as i64 >> rng.below(64),
                        column: 0,
                    })
                    .collect(),
                is_folded: false,
            });
        }
        for _ in 0..rng.below(10) {
            p.sample.push(Sample {
                location_id: (0..rng.below(6))
                    .map(|_| rng.below(locations + 2) as u64)
                    .collect(),
                value: (0..types + rng.below(3))
                    .take(types + rng.below(2))
                    .map(|_| (rng.next() as i64) >> rng.below(64))
                    .collect(),
                label: (0..rng.below(3))
                    .map(|_| Label {
                        key: rng.index(strings),
                        str: if rng.below(3) == 0 {
                            rng.index(strings)
                        } else {
                            0
                        },
                        num: (rng.next() as i64) >> rng.below(64),
                        num_unit: rng.index(strings),
                    })
                    .collect(),
            });
        }
        if let Ok(r) = report::parse("random", &p.encode_to_vec()) {
            resolved_ok += 1;
            exercise(&r);
            let _ = report::flamegraph(&r, &SampleKind::Default);
        }
    }
    assert!(
        resolved_ok > 1500,
        "only {resolved_ok} random profiles resolved"
    );
}

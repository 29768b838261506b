//! Large samples cost what they cost without heapprof, and heapprof takes
//! no address-space headroom: programs of large-buffer requests
//! (`scripts/bench-programs/large_requests.c` under the preload library,
//! `examples/large_requests.rs` under `Profiler<System>`) reuse the memory
//! of freed samples without page faults, give it back after the decay
//! period, never run the sample heap out through churn, and run under
//! `ulimit -v` limits exactly as they do bare.

mod common;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

fn library() -> &'static Path {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| {
        let exe = std::env::current_exe().unwrap();
        let profile_dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
        let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.args(["build", "--quiet", "-p", "heapprof-preload"])
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if profile_dir.file_name() == Some(OsStr::new("release")) {
            cmd.arg("--release");
        }
        assert!(cmd.status().unwrap().success());
        profile_dir.join("libheapprof_preload.so")
    })
}

/// Compiles the C program `src` (relative to the crate) as `name`.
fn compile(name: &str, src: &str) -> PathBuf {
    let prog = common::temp_dir(&format!("large-samples-{name}")).join(name);
    let status = Command::new("gcc")
        .args(["-O2", "-g", "-o"])
        .arg(&prog)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join(src))
        .status()
        .unwrap();
    assert!(status.success());
    prog
}

/// The C program, compiled once.
fn program() -> &'static Path {
    static PROG: OnceLock<PathBuf> = OnceLock::new();
    PROG.get_or_init(|| compile("large_requests", "scripts/bench-programs/large_requests.c"))
}

/// tests/c/largeblocks.c, compiled once.
fn largeblocks() -> &'static Path {
    static PROG: OnceLock<PathBuf> = OnceLock::new();
    PROG.get_or_init(|| compile("largeblocks", "tests/c/largeblocks.c"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `key value` pairs of a line the program printed.
fn field(line: &str, key: &str) -> i64 {
    let w: Vec<&str> = line.split_whitespace().collect();
    let i = w
        .iter()
        .position(|&k| k == key)
        .unwrap_or_else(|| panic!("{key} in {line}"));
    w[i + 1].parse().unwrap()
}

/// The comment of the one profile in `dir`.
fn comment(dir: &Path) -> String {
    let dumps = common::dumps(dir);
    assert_eq!(dumps.len(), 1, "{dumps:?}");
    let p = common::read_profile(&dumps[0].2);
    p.string_table[p.comment[0] as usize].clone()
}

fn counter(comment: &str, key: &str) -> u64 {
    comment
        .split(' ')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{key} in {comment}"))
}

#[test]
fn unsampled_large_blocks_in_c_live_in_the_sample_heap_and_keep_their_contents() {
    // Bare, glibc serves hardly any of them as page-aligned runs (what
    // tells heapprof's blocks apart here).
    let out = common::clean_command(largeblocks())
        .arg("check")
        .output()
        .unwrap();
    let so = text(&out.stdout);
    assert!(out.status.success(), "{so}");
    assert!(field(&so, "page_blocks") * 4 < field(&so, "of"), "{so}");
    // Profiled, off and at the default rate, every one of them (malloc,
    // calloc of dirty memory, the aligned functions, a small block grown
    // large) is the sample heap's, sampled or not, and keeps its contents
    // through realloc growing and shrinking it.
    for rate in ["0", "524288"] {
        let out = common::clean_command(largeblocks())
            .arg("check")
            .env("LD_PRELOAD", library())
            .env("HEAPPROF_RATE", rate)
            .env("HEAPPROF_AT_EXIT", "0")
            .output()
            .unwrap();
        let (so, se) = (text(&out.stdout), text(&out.stderr));
        assert!(out.status.success(), "rate {rate}: {so}{se}");
        assert_eq!(se, "", "rate {rate}: nothing on stderr");
        assert!(so.ends_with(" ok\n"), "rate {rate}: {so}");
        if rate == "0" {
            // Past 32 MiB a block not sampled stays with glibc.
            assert_eq!(field(&so, "huge_page_block"), 0, "{so}");
        }
        assert_eq!(
            field(&so, "page_blocks"),
            field(&so, "of"),
            "rate {rate}: {so}"
        );
    }
}

#[test]
fn large_blocks_in_c_count_exactly_at_rate_1() {
    let dir = common::temp_dir("large-exact-c");
    let out = common::clean_command(largeblocks())
        .arg("exact")
        .env("LD_PRELOAD", library())
        .env("HEAPPROF_RATE", "1")
        .env("HEAPPROF_OUT", dir.join("p"))
        .output()
        .unwrap();
    let (so, se) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{so}{se}");
    let dumps = common::dumps(&dir);
    assert_eq!(dumps.len(), 1, "{dumps:?}");
    let p = common::read_profile(&dumps[0].2);
    // Three blocks of 300 KiB, each grown to 600 KiB (a free and an
    // allocation), kept.
    assert_eq!(
        common::leaf_totals(&p, "leak_large"),
        [6, 3 * (900 << 10), 3, 3 * (600 << 10)]
    );
    assert_eq!(
        common::leaf_totals(&p, "grow_from_small"),
        [2, 1000 + (400 << 10), 1, 400 << 10]
    );
}

#[test]
fn a_burst_of_large_samples_is_reused_then_given_back_after_the_decay() {
    let dir = common::temp_dir("large-burst");
    let out = common::clean_command(program())
        .args(["burst", "5000"])
        .env("LD_PRELOAD", library())
        .env("HEAPPROF_RATE", "1")
        .env("HEAPPROF_DECAY_MS", "300")
        .env("HEAPPROF_OUT", dir.join("p"))
        .output()
        .unwrap();
    let (so, se) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{so}{se}");
    assert_eq!(se, "", "nothing on stderr");
    // Every buffer is a sample: the second round runs in the memory the
    // first one freed, without faulting its pages in again.
    let (faults2, pages) = (field(&so, "faults2"), field(&so, "pages"));
    assert!(pages > 10_000, "{so}");
    assert!(faults2 * 10 < pages, "second round faulted: {so}");
    // Then, idle, the memory goes back to the system after the decay period
    // (300 ms here; the program waits up to 5 s for it).
    let (base, idle) = (field(&so, "base_kb"), field(&so, "idle_kb"));
    assert!(idle <= base + 4096, "RssAnon kept after the decay: {so}");
    assert!(field(&so, "waited_ms") <= 2000, "{so}");
    let c = comment(&dir);
    assert!(counter(&c, "purges") > 0, "{so}{c}");
}

#[test]
fn a_long_large_buffer_churn_in_c_never_runs_the_sample_heap_out() {
    let dir = common::temp_dir("large-churn-c");
    let out = common::clean_command(program())
        .args(["loop", "30000"])
        .env("LD_PRELOAD", library())
        .env("HEAPPROF_OUT", dir.join("p"))
        .output()
        .unwrap();
    let (so, se) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{so}{se}");
    assert_eq!(se, "", "nothing on stderr");
    assert!(so.contains("failed 0"), "{so}");
    let c = comment(&dir);
    assert_eq!(counter(&c, "unsampled_fallbacks"), 0, "{c}");
}

#[test]
fn a_long_large_buffer_churn_in_rust_never_runs_the_sample_heap_out() {
    let dir = common::temp_dir("large-churn-rust");
    let out = common::clean_command(common::example("large_requests"))
        .arg("30000")
        .env("HEAPPROF_AT_EXIT", "1")
        .env("HEAPPROF_OUT", dir.join("p"))
        .output()
        .unwrap();
    let (so, se) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{so}{se}");
    assert_eq!(se, "", "nothing on stderr");
    let c = comment(&dir);
    assert_eq!(counter(&c, "unsampled_fallbacks"), 0, "{c}");
}

/// `large_requests limits` under `ulimit -v KB`, preloaded if `lib`.
fn limited(kb: u32, lib: Option<&Path>, rate: &str) -> Output {
    let mut cmd = common::clean_command("sh");
    cmd.arg("-c")
        .arg(format!(
            "ulimit -v {kb}; [ -z \"$LIMITED_PRELOAD\" ] || export LD_PRELOAD=\"$LIMITED_PRELOAD\"; exec \"$0\" limits"
        ))
        .arg(program())
        .env("HEAPPROF_RATE", rate)
        .env("HEAPPROF_AT_EXIT", "0");
    if let Some(lib) = lib {
        cmd.env("LIMITED_PRELOAD", lib);
    }
    cmd.output().unwrap()
}

#[test]
fn a_program_under_address_space_limits_runs_as_it_does_bare() {
    // The program's live set is about 25 MB (VmPeak about 30 MB).
    for kb in [40_000, 45_000, 60_000, 100_000, 400_000] {
        let bare = limited(kb, None, "0");
        let bare_out = text(&bare.stdout);
        assert_eq!(bare.status.code(), Some(0), "bare under {kb}: {bare:?}");
        assert!(bare_out.contains("failed 0"), "bare under {kb}: {bare_out}");
        for rate in ["524288", "1"] {
            let run = limited(kb, Some(library()), rate);
            let err = text(&run.stderr);
            assert_eq!(
                (run.status.code(), text(&run.stdout)),
                (bare.status.code(), bare_out.clone()),
                "ulimit -v {kb}, rate {rate}: {err}"
            );
            // heapprof may only say that it saves memory.
            for line in err.lines() {
                assert!(line.starts_with("heapprof: low on memory;"), "{err}");
            }
        }
    }
}

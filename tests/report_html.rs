//! `heapprof report`: the HTML page opened in headless Chromium (Debian's
//! `chromium`, installed by scripts/install-report-deps.sh), on dumps of
//! real programs: the page draws with no error, one chart point per dump,
//! the leak named in the verdict table and the legend, the growth flame
//! graph of a window after the leak started holding the leak's function,
//! a label split, and a screenshot that is not blank.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs `example` with interval dumps into `dir`; returns the dumps in order.
/// Held while a workload runs and while chromium renders: the tests run in
/// parallel, and a workload starved of CPU by a browser in its first
/// seconds leaks at a slower rate there than later, which the leak verdict
/// rightly reads as turnover (seen once in CI: "churn" for a steady leak).
static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn heavy() -> std::sync::MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}

fn dumps_of(example: &str, dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Vec<PathBuf> {
    let mut cmd = common::clean_command(common::example(example));
    cmd.args(args)
        .env("HEAPPROF_OUT", dir.join("heap"))
        .env("HEAPPROF_AT_EXIT", "0");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = {
        let _alone = heavy();
        cmd.output().unwrap()
    };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    common::dumps(dir).into_iter().map(|(_, _, p)| p).collect()
}

fn report(dumps: &[PathBuf], out: &Path) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_heapprof"))
        .arg("report")
        .args(dumps)
        .arg("-o")
        .arg(out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::read_to_string(out).unwrap()
}

fn chromium(dir: &Path, url: &str, extra: &[&str]) -> String {
    common::ensure_report_deps();
    let profile = common::fresh_dir(dir.join("chromium-profile"));
    let _alone = heavy();
    let o = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-first-run",
            "--hide-scrollbars",
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url)
        .env("HOME", dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn dom(dir: &Path, html: &Path, hash: &str) -> String {
    chromium(
        dir,
        &format!("file://{}{hash}", html.display()),
        &["--dump-dom"],
    )
}

/// The part of a DOM dump from the element with `id` to the element with
/// id `until` (the page's sections follow each other in a known order).
fn section<'a>(dom: &'a str, id: &str, until: &str) -> &'a str {
    let start = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} in the page:\n{dom}"));
    let rest = &dom[start..];
    let end = rest.find(&format!("id=\"{until}\"")).unwrap_or(rest.len());
    &rest[..end]
}

fn assert_drew(dom: &str, points: usize) {
    let errors = section(dom, "errors", "app");
    assert!(
        !errors.contains("class=\"error\""),
        "the page reported an error: {errors}"
    );
    assert!(
        dom.contains(&format!("<div id=\"status\">ok {points} points</div>")),
        "no status line for {points} points:\n{}",
        &dom[dom.find("id=\"status\"").unwrap_or(0)..]
    );
}

/// Nothing on the page can fetch: a Content-Security-Policy of
/// `default-src 'none'`, no element loading a URL, no script API that
/// requests.
fn assert_self_contained(html: &str) {
    assert!(html.contains("default-src 'none'"));
    for needle in [
        " src=",
        " href=",
        "fetch(",
        "XMLHttpRequest",
        "WebSocket",
        "@import",
        "url(",
    ] {
        assert!(!html.contains(needle), "the page contains {needle:?}");
    }
}

/// Distinct RGB colours of a PNG (8-bit RGB or RGBA, non-interlaced, as
/// Chromium writes screenshots).
fn png_colours(path: &Path) -> usize {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    let (mut i, mut idat) = (8, Vec::new());
    let (mut width, mut height, mut channels) = (0usize, 0usize, 0usize);
    while i + 8 <= bytes.len() {
        let len = u32::from_be_bytes(bytes[i..i + 4].try_into().unwrap()) as usize;
        let kind = &bytes[i + 4..i + 8];
        let data = &bytes[i + 8..i + 8 + len];
        match kind {
            b"IHDR" => {
                width = u32::from_be_bytes(data[0..4].try_into().unwrap()) as usize;
                height = u32::from_be_bytes(data[4..8].try_into().unwrap()) as usize;
                assert_eq!(data[8], 8, "bit depth");
                channels = match data[9] {
                    2 => 3,
                    6 => 4,
                    t => panic!("colour type {t}"),
                };
                assert_eq!(data[12], 0, "interlaced");
            }
            b"IDAT" => idat.extend_from_slice(data),
            _ => {}
        }
        i += 12 + len;
    }
    let mut raw = Vec::new();
    flate2::read::ZlibDecoder::new(&idat[..])
        .read_to_end(&mut raw)
        .unwrap();
    let stride = width * channels;
    let mut prev = vec![0u8; stride];
    let mut colours = std::collections::HashSet::new();
    for row in 0..height {
        let line = &raw[row * (stride + 1)..(row + 1) * (stride + 1)];
        let (filter, data) = (line[0], &line[1..]);
        let mut cur = vec![0u8; stride];
        for x in 0..stride {
            let a = if x >= channels { cur[x - channels] } else { 0 } as i32;
            let b = prev[x] as i32;
            let c = if x >= channels { prev[x - channels] } else { 0 } as i32;
            let predicted = match filter {
                0 => 0,
                1 => a,
                2 => b,
                3 => (a + b) / 2,
                4 => {
                    let p = a + b - c;
                    let (pa, pb, pc) = ((p - a).abs(), (p - b).abs(), (p - c).abs());
                    if pa <= pb && pa <= pc {
                        a
                    } else if pb <= pc {
                        b
                    } else {
                        c
                    }
                }
                f => panic!("filter {f}"),
            };
            cur[x] = data[x].wrapping_add(predicted as u8);
        }
        for px in cur.chunks(channels) {
            colours.insert((px[0], px[1], px[2]));
        }
        prev = cur;
    }
    colours.len()
}

#[test]
fn a_leaking_programs_report_draws_the_leak() {
    let dir = common::temp_dir("report-leak");
    let dumps = dumps_of(
        "leak_server",
        &dir,
        &[("HEAPPROF_INTERVAL", "0.25"), ("HEAPPROF_RATE", "65536")],
        &["--seconds", "6"],
    );
    assert!(dumps.len() >= 15, "{} dumps", dumps.len());
    let html_path = dir.join("report.html");
    let html = report(&dumps, &html_path);
    assert_self_contained(&html);

    // A window from the middle of the run to its end: the leak started at
    // the beginning, so what it allocated then is still live.
    let page = dom(&dir, &html_path, "#window=3,6");
    assert_drew(&page, dumps.len());
    let verdicts = section(&page, "verdicts", "flame-end");
    assert!(
        verdicts.contains("leak_at_known_rate") && verdicts.contains("steady growth"),
        "{verdicts}"
    );
    let legend = section(&page, "legend", "verdict-note");
    assert!(
        legend.contains("leak suspect: leak_server::leak_at_known_rate"),
        "{legend}"
    );
    let growth = section(&page, "flame-growth", "status");
    assert!(growth.contains("leak_at_known_rate"), "{growth}");

    // A window before the first dump holds nothing: the check above can fail.
    let before = dom(&dir, &html_path, "#window=-10,-5");
    let growth = section(&before, "flame-growth", "status");
    assert!(!growth.contains("leak_at_known_rate"), "{growth}");

    // One dump: one point, its verdicts from the ages alone, and the growth
    // graph holding everything live.
    let one_path = dir.join("one.html");
    report(&dumps[dumps.len() - 1..], &one_path);
    let one = dom(&dir, &one_path, "");
    assert_drew(&one, 1);
    let growth = section(&one, "flame-growth", "status");
    assert!(growth.contains("leak_at_known_rate"), "{growth}");

    let png = dir.join("report.png");
    chromium(
        &dir,
        &format!("file://{}", html_path.display()),
        &[
            &format!("--screenshot={}", png.display()),
            "--window-size=1280,900",
        ],
    );
    let colours = png_colours(&png);
    assert!(colours > 30, "{colours} colours: the screenshot is blank");
}

/// A program that grows to 200 MiB, frees it and keeps 8 MiB: with its
/// peak profile the report has a flame graph of the peak holding the
/// growth, which the end's lacks; the header counts the dumps' triggers.
#[test]
fn the_report_draws_the_peak_and_says_what_took_each_dump() {
    let dir = common::temp_dir("report-peak");
    let out = common::clean_command(common::example("oom_leak"))
        .arg("peak")
        .env("HEAPPROF_OUT", dir.join("heap"))
        .env("HEAPPROF_AT_EXIT", "1")
        .env("HEAPPROF_INTERVAL", "0.5")
        .env("PEAK_OUT", dir.join("from-code.pb"))
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let mut files: Vec<PathBuf> = common::dumps(&dir).into_iter().map(|(_, _, p)| p).collect();
    let n = files.len();
    assert!(n >= 3, "{n} dumps");
    let pid = common::dumps(&dir)[0].0;
    files.push(dir.join(format!("heap.{pid}.peak.pb.gz")));
    // The first dump as if taken in a cgroup limited to 400 MiB (a real
    // one records it: tests/blackbox.rs): the page draws the limit.
    let mut first = common::read_profile(&files[0]);
    first.comment.push(first.string_table.len() as i64);
    first
        .string_table
        .push(format!("memory_limit={}", 400u64 << 20));
    std::fs::write(&files[0], prost::Message::encode_to_vec(&first)).unwrap();
    // `heapprof leaks` over the glob of the dumps, which also selects the
    // peak: left out of the series, and said so.
    let leaks = Command::new(env!("CARGO_BIN_EXE_heapprof"))
        .arg("leaks")
        .args(&files)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&leaks.stderr);
    let out = String::from_utf8_lossy(&leaks.stdout);
    assert!(leaks.status.success(), "{err}");
    assert!(
        err.contains(
            "peak.pb.gz: a peak profile (the heap at its highest), not a moment of the series"
        ),
        "{err}"
    );
    assert!(out.starts_with(&format!("{n} profiles")), "{out}");
    let html_path = dir.join("report.html");
    report(&files, &html_path);
    let page = dom(&dir, &html_path, "");
    // The peak is not a point of the series.
    assert_drew(&page, n);
    let peak = section(&page, "flame-peak", "status");
    assert!(peak.contains("grow_peak"), "{peak}");
    let end = section(&page, "flame-end", "flame-growth");
    assert!(
        !end.contains("grow_peak") && end.contains("leak_known"),
        "{end}"
    );
    assert!(page.contains("id=\"limit-line\""), "no limit line");
    let limit = section(&page, "limit-legend", "verdict-note");
    assert!(limit.contains("cgroup memory limit 400.0 MiB"), "{limit}");
    assert!(
        page.contains(&format!("interval ×{}", n - 1)) && page.contains("exit ×1"),
        "{}",
        section(&page, "app", "chart")
    );
    // And each dump's mark on the chart says which took it, in time order.
    let marks: Vec<&str> = page
        .split("class=\"dump\"")
        .skip(1)
        .filter_map(|m| m.split("data-trigger=\"").nth(1)?.split('"').next())
        .collect();
    assert_eq!(marks.len(), n, "{marks:?}");
    assert!(marks[..n - 1].iter().all(|&t| t == "interval"), "{marks:?}");
    assert_eq!(marks[n - 1], "exit", "{marks:?}");
}

#[test]
fn a_labelled_programs_report_splits_by_label() {
    let dir = common::temp_dir("report-labels");
    let dumps = dumps_of(
        "label_service",
        &dir,
        &[("HEAPPROF_INTERVAL", "0.5"), ("HEAPPROF_RATE", "16384")],
        &["--seconds", "4"],
    );
    assert!(dumps.len() >= 6, "{} dumps", dumps.len());
    // The last interval dump can fall after `main` returned and dropped
    // everything (an empty profile): the split is read while it runs.
    let dumps = &dumps[..dumps.len() - 1];
    let html_path = dir.join("report.html");
    let html = report(dumps, &html_path);
    assert_self_contained(&html);

    let page = dom(&dir, &html_path, "#split=route&value=/users");
    assert_drew(&page, dumps.len());
    let legend = section(&page, "legend", "verdict-note");
    assert!(
        legend.contains("route=/users") && legend.contains("route=/orders"),
        "{legend}"
    );
    let end = section(&page, "flame-end", "flame-growth");
    assert!(end.contains("remember_user"), "{end}");
    assert!(!end.contains("replace_order"), "{end}");

    let page = dom(&dir, &html_path, "#split=route&value=/orders");
    let end = section(&page, "flame-end", "flame-growth");
    assert!(end.contains("replace_order"), "{end}");
    assert!(!end.contains("remember_user"), "{end}");
}

/// A running program with `HEAPPROF_HTTP=127.0.0.1:0`: its port, from the
/// server's one line on stderr.
struct Served {
    child: std::process::Child,
    port: u16,
}

impl Served {
    fn start(example: &str, dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Served {
        use std::io::BufRead;
        let mut cmd = common::clean_command(common::example(example));
        cmd.args(args)
            .env("HEAPPROF_HTTP", "127.0.0.1:0")
            .env("HEAPPROF_OUT", dir.join("heap"))
            .env("HEAPPROF_AT_EXIT", "0")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let err = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("http://127.0.0.1:").nth(1) {
                    let port: String = rest.chars().take_while(char::is_ascii_digit).collect();
                    let _ = tx.send(port.parse::<u16>().unwrap());
                }
            }
        });
        let port = rx
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("the server's line on stderr");
        Served { child, port }
    }

    /// GET `path`: (status, body).
    fn get(&self, path: &str) -> (u16, Vec<u8>) {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut bytes = Vec::new();
        s.read_to_end(&mut bytes).unwrap();
        let split = bytes.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let head = String::from_utf8_lossy(&bytes[..split]).into_owned();
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        (status, bytes[split + 4..].to_vec())
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_http_server_serves_the_report_of_the_process() {
    let dir = common::temp_dir("report-http");
    let served = Served::start(
        "label_service",
        &dir,
        &[("HEAPPROF_INTERVAL", "0.5"), ("HEAPPROF_RATE", "16384")],
        &["--seconds", "30"],
    );
    std::thread::sleep(std::time::Duration::from_secs(3));
    // One profile taken over HTTP joins the history.
    let (status, _) = served.get("/debug/pprof/heap");
    assert_eq!(status, 200);
    let on_disk = common::dumps(&dir).len();
    let (status, body) = served.get("/debug/pprof/report");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let html_path = dir.join("live.html");
    std::fs::write(&html_path, &body).unwrap();
    assert_self_contained(&String::from_utf8(body).unwrap());
    let page = dom(&dir, &html_path, "");
    // The dumps on disk then, the /heap profile and the report's own, and
    // perhaps an interval dump written meanwhile.
    let points: usize = page
        .split("<div id=\"status\">ok ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no status line:\n{page}"));
    assert!(
        (on_disk + 2..=on_disk + 4).contains(&points),
        "{points} points for {on_disk} dumps on disk"
    );
    assert_drew(&page, points);
    let verdicts = section(&page, "verdicts", "flame-end");
    assert!(verdicts.contains("remember_user"), "{verdicts}");
}

#[test]
fn heapprof_run_writes_a_report_of_the_run() {
    build_preload_library();
    let dir = common::temp_dir("report-run");
    let out = dir.join("out");
    let o = common::clean_command(env!("CARGO_BIN_EXE_heapprof"))
        .args(["run", "--interval", "0.3", "--out"])
        .arg(&out)
        .arg("--")
        .arg(common::example("leak_server"))
        .args(["--seconds", "2"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    let path = stderr
        .lines()
        .find_map(|l| {
            l.strip_prefix(
                "heapprof: report of the run (memory over time, leak verdicts, flame graphs): ",
            )
        })
        .unwrap_or_else(|| panic!("no report line:\n{stderr}"));
    let html_path = PathBuf::from(path);
    assert!(html_path.starts_with(&out), "{path}");
    let dumps = common::dumps(&out).len();
    let page = dom(&dir, &html_path, "");
    assert_drew(&page, dumps);
    assert!(page.contains("leak_at_known_rate"));
}

/// Builds the preload library in this test run's profile, where `heapprof
/// run` looks for it (next to the `heapprof` binary).
fn build_preload_library() {
    let profile_dir = Path::new(env!("CARGO_BIN_EXE_heapprof")).parent().unwrap();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "-p", "heapprof-preload"])
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    if profile_dir.file_name() == Some(std::ffi::OsStr::new("release")) {
        cmd.arg("--release");
    }
    assert!(
        cmd.status().unwrap().success(),
        "cargo build -p heapprof-preload failed"
    );
    assert!(profile_dir.join("libheapprof_preload.so").exists());
}

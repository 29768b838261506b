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
use std::sync::Once;

fn ensure_report_deps() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/install-report-deps.sh");
        let status = Command::new("bash")
            .arg(script)
            .status()
            .expect("run install-report-deps.sh");
        assert!(status.success(), "scripts/install-report-deps.sh failed");
    });
}

/// Runs `example` with interval dumps into `dir`; returns the dumps in order.
fn dumps_of(example: &str, dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Vec<PathBuf> {
    let mut cmd = common::clean_command(common::example(example));
    cmd.args(args)
        .env("HEAPPROF_OUT", dir.join("heap"))
        .env("HEAPPROF_AT_EXIT", "0");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
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
    ensure_report_deps();
    let profile = common::fresh_dir(dir.join("chromium-profile"));
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

/// The text of the element with `id` in a DOM dump (up to its first
/// closing tag of the same kind is not needed: the rest of the page after
/// its start, cut at the next element with an id of the page's sections).
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
    let dom = dom(&dir, &html_path, "#window=3,6");
    assert_drew(&dom, dumps.len());
    let verdicts = section(&dom, "verdicts", "flame-end");
    assert!(
        verdicts.contains("leak_at_known_rate") && verdicts.contains("steady growth"),
        "{verdicts}"
    );
    let legend = section(&dom, "legend", "verdict-note");
    assert!(
        legend.contains("leak suspect: leak_server::leak_at_known_rate"),
        "{legend}"
    );
    let growth = section(&dom, "flame-growth", "status");
    assert!(growth.contains("leak_at_known_rate"), "{growth}");

    // A window before the first dump holds nothing: the check above can fail.
    let before = dom_window(&dir, &html_path, "#window=-10,-5");
    let growth = section(&before, "flame-growth", "status");
    assert!(!growth.contains("leak_at_known_rate"), "{growth}");

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

fn dom_window(dir: &Path, html: &Path, hash: &str) -> String {
    dom(dir, html, hash)
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
    assert!(dumps.len() >= 5, "{} dumps", dumps.len());
    let html_path = dir.join("report.html");
    let html = report(&dumps, &html_path);
    assert_self_contained(&html);

    let dom = dom(&dir, &html_path, "#split=route&value=/users");
    assert_drew(&dom, dumps.len());
    let legend = section(&dom, "legend", "verdict-note");
    assert!(
        legend.contains("route=/users") && legend.contains("route=/orders"),
        "{legend}"
    );
    let end = section(&dom, "flame-end", "flame-growth");
    assert!(end.contains("remember_user"), "{end}");
    assert!(!end.contains("replace_order"), "{end}");

    let dom = dom_of_value(&dir, &html_path, "/orders");
    let end = section(&dom, "flame-end", "flame-growth");
    assert!(end.contains("replace_order"), "{end}");
    assert!(!end.contains("remember_user"), "{end}");
}

fn dom_of_value(dir: &Path, html: &Path, value: &str) -> String {
    dom(dir, html, &format!("#split=route&value={value}"))
}

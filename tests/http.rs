//! The `/debug/pprof/` endpoint (`HEAPPROF_HTTP`) from the outside: a Rust
//! program (the `leak_server` example) and a C program under the preload
//! library, read with `go tool pprof` over HTTP and with plain sockets.
//!
//! Oracles: at `HEAPPROF_RATE=1` every allocation is sampled, so the leak of
//! 10000 bytes every 10 ms (paced by absolute deadlines) gives exactly 100
//! leaks per second of a profile's window, up to a tick at each end.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use heapprof::profile::proto::Profile;

const LEAK: &str = "leak_at_known_rate";
const LEAK_BYTES: u64 = 10_000;
const LEAKS_PER_SEC: f64 = 100.0;

struct Proc {
    child: Child,
    stdout: BufReader<ChildStdout>,
    pid: u32,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    fn spawn(mut cmd: Command) -> Proc {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let lines = stderr.clone();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        });
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let pid = line
            .trim()
            .strip_prefix("pid ")
            .unwrap_or_else(|| panic!("first line {line:?}"))
            .parse()
            .unwrap();
        Proc {
            child,
            stdout,
            pid,
            stderr,
        }
    }

    /// The port of the one `http://HOST:PORT/debug/pprof/` line on stderr.
    fn port(&self) -> u16 {
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            let lines = self.stderr.lock().unwrap().clone();
            if let Some(l) = lines.iter().find(|l| l.contains("/debug/pprof/")) {
                let url = l
                    .split_whitespace()
                    .find(|w| w.starts_with("http://"))
                    .unwrap();
                let hostport = url.trim_start_matches("http://").split('/').next().unwrap();
                return hostport.rsplit(':').next().unwrap().parse().unwrap();
            }
            assert!(Instant::now() < end, "no server line on stderr: {lines:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stderr_lines(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for a normal exit; returns (exit code, stdout after the pid line).
    fn finish(mut self) -> (i32, String) {
        let mut out = String::new();
        self.stdout.read_to_string(&mut out).unwrap();
        let status = self.child.wait().unwrap();
        // Let the stderr reader take the last lines.
        std::thread::sleep(Duration::from_millis(100));
        (status.code().unwrap_or(-1), out)
    }
}

fn rust_program(env: &[(&str, &str)], args: &[&str]) -> Proc {
    let mut cmd = Command::new(common::example("leak_server"));
    cmd.args(args).env("HEAPPROF_RATE", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    Proc::spawn(cmd)
}

struct Reply {
    status: u16,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map_or("", String::as_str)
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    fn profile(&self) -> Profile {
        assert_eq!(self.status, 200, "{}", self.text());
        heapprof::decode_profile(&self.body).expect("a pprof profile")
    }
}

/// Sends `raw` as the whole request and reads the whole reply.
fn send(port: u16, raw: &[u8]) -> Reply {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(raw).unwrap();
    let mut bytes = Vec::new();
    s.read_to_end(&mut bytes).unwrap();
    let split = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no head in {:?}", String::from_utf8_lossy(&bytes)));
    let head = String::from_utf8_lossy(&bytes[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Reply {
        status,
        headers,
        body: bytes[split + 4..].to_vec(),
    }
}

fn get(port: u16, target: &str) -> Reply {
    send(
        port,
        format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").as_bytes(),
    )
}

fn url(port: u16, path: &str) -> String {
    format!("http://127.0.0.1:{port}/debug/pprof/{path}")
}

fn string(p: &Profile, i: i64) -> &str {
    &p.string_table[i as usize]
}

/// The four values, signed (deltas go negative), summed over samples whose
/// leaf function contains `f`.
fn leaf_values(p: &Profile, f: &str) -> [i64; 4] {
    let mut t = [0; 4];
    for s in &p.sample {
        let leaf = s
            .location_id
            .first()
            .and_then(|id| p.location.iter().find(|l| l.id == *id))
            .and_then(|l| l.line.first())
            .and_then(|line| p.function.iter().find(|x| x.id == line.function_id))
            .map_or("", |x| string(p, x.name));
        if leaf.contains(f) {
            for (acc, v) in t.iter_mut().zip(&s.value) {
                *acc += v;
            }
        }
    }
    t
}

/// Leaks of `LEAK` a profile's in-use (index 3) or alloc (1) bytes stand for.
fn leaks(p: &Profile, index: usize) -> f64 {
    leaf_values(p, LEAK)[index] as f64 / LEAK_BYTES as f64
}

/// Within a tick at each end, plus 5% for a loaded machine.
fn assert_rate(count: f64, seconds: f64, what: &str) {
    let want = seconds * LEAKS_PER_SEC;
    assert!(
        (count - want).abs() <= want * 0.05 + 3.0,
        "{what}: {count} leaks in {seconds:.3} s, want {want:.0} (100 per second)"
    );
}

#[test]
fn a_running_rust_program_over_http() {
    let p = rust_program(&[("HEAPPROF_HTTP", "127.0.0.1:0")], &["--seconds", "60"]);
    let port = p.port();
    std::thread::sleep(Duration::from_millis(500));

    // The reference reader, straight from the URL.
    let (top, err) = common::go_pprof(&["-top", "-unit=B", &url(port, "heap")]);
    assert!(top.contains("Type: inuse_space"), "{top}");
    assert!(top.contains(LEAK), "{top}\n{err}");
    assert!(
        !top.contains("scratch_churn"),
        "freed memory in use:\n{top}"
    );
    for bad in ["symboliz", "unrecognized", "failed"] {
        assert!(!err.contains(bad), "pprof complained: {err}");
    }

    let heap = get(port, "/debug/pprof/heap");
    assert_eq!(heap.header("Content-Type"), "application/octet-stream");
    assert_eq!(
        heap.header("Content-Disposition"),
        "attachment; filename=\"heap\""
    );
    let hp = heap.profile();
    assert_eq!(string(&hp, hp.default_sample_type), "inuse_space");
    assert!(leaks(&hp, 3) > 10.0);

    // ?seconds=2: only what the window added, at the known rate.
    let delta = get(port, "/debug/pprof/heap?seconds=2");
    assert_eq!(
        delta.header("Content-Disposition"),
        "attachment; filename=\"heap-delta\""
    );
    let d = delta.profile();
    let secs = d.duration_nanos as f64 / 1e9;
    assert!((2.0..3.0).contains(&secs), "delta window {secs} s");
    assert_rate(leaks(&d, 3), secs, "seconds=2 inuse_space");
    assert_rate(leaks(&d, 1), secs, "seconds=2 alloc_space");
    let churn = leaf_values(&d, "scratch_churn");
    assert!(churn[1] > 0, "churn allocated during the window");
    assert!(
        churn[3].abs() <= 4096,
        "churn's in-use bytes do not grow: {churn:?}"
    );

    // go tool pprof -seconds asks for the same delta.
    let (top, _) = common::go_pprof(&["-top", "-seconds=1", &url(port, "heap")]);
    assert!(top.contains(LEAK), "{top}");

    // /allocs: the same data, alloc_space first.
    let allocs = get(port, "/debug/pprof/allocs");
    assert_eq!(
        allocs.header("Content-Disposition"),
        "attachment; filename=\"allocs\""
    );
    let ap = allocs.profile();
    assert_eq!(string(&ap, ap.default_sample_type), "alloc_space");
    let (top, _) = common::go_pprof(&["-top", &url(port, "allocs")]);
    assert!(top.contains("Type: alloc_space"), "{top}");
    assert!(top.contains("scratch_churn") && top.contains(LEAK), "{top}");

    // ?debug=1: text for a human.
    let text = get(port, "/debug/pprof/heap?debug=1&gc=1");
    assert_eq!(text.status, 200);
    assert_eq!(text.header("Content-Type"), "text/plain; charset=utf-8");
    let t = text.text();
    assert!(t.contains("inuse_space") && t.contains(LEAK), "{t}");
    assert!(!t.contains("scratch_churn"), "{t}");
    // Stacks trimmed as `heapprof top` trims them.
    for root in ["__libc_start_main", "lang_start", "_start "] {
        assert!(!t.contains(root), "{root} in {t}");
    }

    // Threads are not tracked without the `threads` feature: said, not "0".
    let threads = get(port, "/debug/pprof/threads");
    assert_eq!(threads.status, 404);
    assert!(
        threads.text().contains("threads are not tracked"),
        "{}",
        threads.text()
    );

    // The index: links, settings, counts.
    let index = get(port, "/debug/pprof/");
    assert_eq!(index.status, 200);
    assert_eq!(index.header("Content-Type"), "text/html; charset=utf-8");
    let html = index.text();
    for want in [
        "href='heap'",
        "href='allocs'",
        "href='delta_heap'",
        "heap?debug=1",
        "HEAPPROF_RATE): 1 ",
        "HEAPPROF_OUT",
        "threads are not tracked",
    ] {
        assert!(html.contains(want), "index lacks {want}:\n{html}");
    }
    assert!(
        html.lines()
            .any(|l| l.starts_with("<tr><td>") && !l.starts_with("<tr><td></td>")),
        "counts:\n{html}"
    );

    // /delta_heap: alloc_* since the previous request, inuse_* absolute.
    let first = get(port, "/debug/pprof/delta_heap").profile();
    assert!(leaks(&first, 1) > 200.0, "the first covers all since start");
    std::thread::sleep(Duration::from_millis(1000));
    let second = get(port, "/debug/pprof/delta_heap").profile();
    let secs = second.duration_nanos as f64 / 1e9;
    assert!((1.0..2.0).contains(&secs), "between the requests: {secs} s");
    assert_rate(leaks(&second, 1), secs, "delta_heap alloc_space");
    assert!(
        leaks(&second, 3) >= leaks(&first, 3) + leaks(&second, 1) - 1.0,
        "in-use stays absolute: {} then {}",
        leaks(&first, 3),
        leaks(&second, 3)
    );
    let (top, _) = common::go_pprof(&[
        "-top",
        "-sample_index=alloc_space",
        &url(port, "delta_heap"),
    ]);
    assert!(top.contains(LEAK), "{top}");
    // delta_heap?debug=1 is text too; ?seconds is refused, not ignored.
    let d = get(port, "/debug/pprof/delta_heap?debug=1");
    assert_eq!(d.status, 200);
    assert_eq!(d.header("Content-Type"), "text/plain; charset=utf-8");
    assert!(
        d.text().contains("delta_heap") && d.text().contains(LEAK),
        "{}",
        d.text()
    );
    let d = get(port, "/debug/pprof/delta_heap?seconds=5");
    assert_eq!(d.status, 400);
    assert!(d.text().contains("seconds"), "{}", d.text());

    // After all these requests, at rate 1: nothing the server allocated
    // was sampled (its threads are marked busy).
    let all = get(port, "/debug/pprof/allocs").profile();
    let tallies = heapprof::tallies_of(&all);
    assert!(tallies.iter().any(|t| t.mentions(LEAK)));
    for t in &tallies {
        assert!(
            !t.mentions("heapprof::control") && !t.mentions("httparse"),
            "the server's own allocation was sampled: {:?}",
            t.frames
        );
    }

    assert_eq!(
        p.stderr_lines()
            .iter()
            .filter(|l| l.contains("heapprof"))
            .count(),
        1,
        "{:?}",
        p.stderr_lines()
    );
    p.kill();
}

#[test]
fn status_codes_and_methods() {
    let p = rust_program(&[("HEAPPROF_HTTP", "0")], &["--seconds", "60"]);
    let port = p.port();
    let cases: &[(&str, &str, u16)] = &[
        ("GET", "/", 404),
        ("GET", "/debug/pprof/nope", 404),
        ("GET", "/debug/pprof", 301),
        ("GET", "/debug/pprof/heap?seconds=abc", 400),
        ("GET", "/debug/pprof/heap?seconds=0", 400),
        ("GET", "/debug/pprof/heap?seconds=-1", 400),
        ("GET", "/debug/pprof/heap?seconds=99999", 400),
        ("GET", "/debug/pprof/heap?seconds=1&debug=1", 400),
        ("GET", "/debug/pprof/heap?debug=x", 400),
        ("GET", "/debug/pprof/heap?gc=1", 200),
        ("GET", "/debug/pprof/heap?debug=1", 200),
        ("GET", "/debug/pprof/allocs?debug=1", 200),
        ("POST", "/debug/pprof/heap", 405),
        ("DELETE", "/debug/pprof/", 405),
    ];
    for &(method, target, want) in cases {
        let r = send(
            port,
            format!("{method} {target} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
                .as_bytes(),
        );
        assert_eq!(r.status, want, "{method} {target}: {}", r.text());
        assert_eq!(r.header("Connection"), "close");
        assert_eq!(r.header("Content-Length"), r.body.len().to_string());
        if want >= 400 {
            assert_eq!(r.header("Content-Type"), "text/plain; charset=utf-8");
            assert_eq!(r.header("X-Go-Pprof"), "1");
        }
        if want == 405 {
            assert_eq!(r.header("Allow"), "GET, HEAD");
        }
        if want == 301 {
            assert_eq!(r.header("Location"), "/debug/pprof/");
        }
    }
    let head = send(port, b"HEAD /debug/pprof/heap HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert!(head.header("Content-Length").parse::<u64>().unwrap() > 0);
    // HTTP/1.0 without Host works too.
    assert_eq!(
        send(port, b"GET /debug/pprof/heap HTTP/1.0\r\n\r\n").status,
        200
    );
    // Ten at once: profiles are computed one at a time, the others wait
    // their turn (or, past the wait, are told 503); none hangs or fails.
    let at_once: Vec<_> = (0..10)
        .map(|_| std::thread::spawn(move || get(port, "/debug/pprof/heap").status))
        .collect();
    let statuses: Vec<u16> = at_once.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 503) && statuses.contains(&200),
        "{statuses:?}"
    );
    p.kill();
}

/// A small seeded generator (xorshift64*), for reproducible garbage.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

#[test]
fn idle_connections_and_garbage_do_not_stop_it() {
    let p = rust_program(&[("HEAPPROF_HTTP", "127.0.0.1:0")], &["--seconds", "60"]);
    let port = p.port();

    // One client trickles its head a byte at a time, slower than the
    // head timeout allows.
    let trickle = std::thread::spawn(move || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let start = Instant::now();
        let mut reply = Vec::new();
        for b in b"GET /debug/pprof/heap HTTP/1.1\r\nX-Slow: "
            .iter()
            .chain([b'a'; 100].iter())
        {
            if s.write_all(&[*b]).is_err() {
                break;
            }
            let mut buf = [0u8; 512];
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => reply.extend_from_slice(&buf[..n]),
                Err(_) => {}
            }
            if !reply.is_empty() {
                break;
            }
        }
        (start.elapsed(), reply)
    });
    // 20 connections that send nothing, 5 that stop mid-head.
    let mut idle: Vec<TcpStream> = (0..25)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    for s in &mut idle[20..] {
        s.write_all(b"GET /debug/pprof/heap HTTP/1.1\r\nHost: x")
            .unwrap();
    }
    let t = Instant::now();
    let r = get(port, "/debug/pprof/heap");
    assert_eq!(r.status, 200);
    let waited = t.elapsed();
    assert!(
        waited < Duration::from_secs(3),
        "idle connections delayed a request by {waited:?}"
    );

    // 100 requests of random bytes (some past the head limit).
    let mut rng = Rng(0x5eed_1234_abcd);
    for i in 0..100 {
        let len = if i % 10 == 0 {
            9000 + (rng.next() % 4000)
        } else {
            1 + rng.next() % 600
        };
        let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = s.write_all(&bytes);
        let _ = s.shutdown(Shutdown::Write);
        let mut reply = Vec::new();
        let _ = s.read_to_end(&mut reply);
        assert!(
            reply.is_empty() || reply.starts_with(b"HTTP/1.1 4"),
            "garbage got {:?}",
            String::from_utf8_lossy(&reply[..reply.len().min(80)])
        );
    }
    // Heads too long, too many headers, a bad request line.
    let long = format!(
        "GET /debug/pprof/heap HTTP/1.1\r\nX: {}\r\n\r\n",
        "a".repeat(9000)
    );
    let many = format!(
        "GET /debug/pprof/heap HTTP/1.1\r\n{}\r\n",
        (0..100).map(|i| format!("H{i}: v\r\n")).collect::<String>()
    );
    for (raw, want) in [
        (long.as_bytes(), 431),
        (many.as_bytes(), 431),
        (&b"\x00\x01 / HTTP/9\r\n\r\n"[..], 400),
    ] {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = s.write_all(raw);
        let mut reply = Vec::new();
        let _ = s.read_to_end(&mut reply);
        let want = format!("HTTP/1.1 {want} ");
        assert!(
            reply.starts_with(want.as_bytes()),
            "{:?}",
            String::from_utf8_lossy(&reply)
        );
    }

    // Still serving, and the idle connections were answered 408 and closed.
    let r = get(port, "/debug/pprof/heap");
    assert_eq!(r.status, 200);
    assert!(r.profile().sample.len() > 1);
    let mut s = idle.pop().unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut reply = Vec::new();
    let _ = s.read_to_end(&mut reply);
    assert!(
        reply.starts_with(b"HTTP/1.1 408 "),
        "{:?}",
        String::from_utf8_lossy(&reply)
    );
    drop(idle);
    let (took, reply) = trickle.join().unwrap();
    assert!(
        reply.starts_with(b"HTTP/1.1 408 ") && took < Duration::from_secs(9),
        "a trickling client got {:?} after {took:?}",
        String::from_utf8_lossy(&reply)
    );
    assert!(p.child_alive());
    p.kill();
}

impl Proc {
    fn child_alive(&self) -> bool {
        // SAFETY: signal 0 only checks that our child exists.
        unsafe { libc::kill(self.pid as i32, 0) == 0 }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Local addresses (hex, as the kernel writes them) listening on `port`.
fn listening(port: u16) -> Vec<String> {
    let mut out = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state)) = (f.get(1), f.get(3)) else {
                continue;
            };
            let Some((ip, p)) = local.rsplit_once(':') else {
                continue;
            };
            if *state == "0A" && u16::from_str_radix(p, 16) == Ok(port) {
                out.push(ip.to_owned());
            }
        }
    }
    out
}

#[test]
fn a_bare_port_listens_on_loopback_only() {
    let port = free_port();
    let p = rust_program(
        &[("HEAPPROF_HTTP", &port.to_string())],
        &["--seconds", "60"],
    );
    assert_eq!(p.port(), port);
    let line = p
        .stderr_lines()
        .into_iter()
        .find(|l| l.contains("/debug/pprof/"))
        .unwrap();
    assert!(
        line.contains(&format!("http://127.0.0.1:{port}/debug/pprof/")),
        "{line}"
    );
    assert_eq!(get(port, "/debug/pprof/heap").status, 200);
    assert_eq!(listening(port), vec!["0100007F".to_owned()]);
    p.kill();
}

#[test]
fn bad_settings_say_one_line_and_the_program_runs_on() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    for (value, says) in [
        (format!("127.0.0.1:{port}"), "in use"),
        (
            "not-an-address".to_owned(),
            "not valid: use PORT (on 127.0.0.1) or HOST:PORT such as 6060 or 0.0.0.0:6060 (port 0 picks a free one), or off; not serving",
        ),
        ("192.0.2.1:6060".to_owned(), "address"),
    ] {
        let p = rust_program(&[("HEAPPROF_HTTP", &value)], &["--seconds", "0.7"]);
        let (code, out) = p_finish(p, &value, says);
        assert_eq!(code, 0, "HEAPPROF_HTTP={value}");
        assert!(out.contains("done"), "{out}");
    }
    drop(taken);
}

fn p_finish(p: Proc, value: &str, says: &str) -> (i32, String) {
    let stderr = p.stderr.clone();
    let result = p.finish();
    let lines: Vec<String> = stderr.lock().unwrap().clone();
    let ours: Vec<&String> = lines.iter().filter(|l| l.contains("heapprof")).collect();
    assert_eq!(ours.len(), 1, "HEAPPROF_HTTP={value}: {lines:?}");
    assert!(
        ours[0].contains("HEAPPROF_HTTP") && ours[0].contains(says),
        "HEAPPROF_HTTP={value}: {}",
        ours[0]
    );
    result
}

#[test]
fn a_server_configured_from_code() {
    let p = rust_program(&[], &["--seconds", "60", "--http", "127.0.0.1:0"]);
    let port = p.port();
    let hp = get(port, "/debug/pprof/heap").profile();
    assert!(leaks(&hp, 3) >= 1.0);
    p.kill();
}

/// The sockets open in any of the process's descriptor tables (heapprof's
/// watcher has one of its own, not listed under `/proc/PID/fd`).
fn sockets(pid: u32) -> usize {
    let mut seen = std::collections::HashSet::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        seen.extend(sockets_in(&task.path().join("fd")));
    }
    seen.len()
}

fn sockets_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .map(|l| l.to_string_lossy().into_owned())
        .filter(|l| l.starts_with("socket:"))
        .collect()
}

#[test]
fn a_forked_child_serves_nothing() {
    let mut p = rust_program(
        &[("HEAPPROF_HTTP", "127.0.0.1:0")],
        &["--seconds", "4", "--fork"],
    );
    let port = p.port();
    // An idle connection open across the fork: the child must not keep it.
    let mut idle = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut line = String::new();
    p.stdout.read_line(&mut line).unwrap();
    let child: u32 = line
        .trim()
        .strip_prefix("child pid ")
        .unwrap_or_else(|| panic!("{line:?}"))
        .parse()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(sockets(child), 0, "the child holds no server socket");
    assert!(sockets(p.pid) >= 1, "the parent still listens");
    let r = get(port, "/debug/pprof/heap");
    assert_eq!(r.status, 200, "the parent still serves");
    idle.write_all(b"GET /debug/pprof/ HTTP/1.0\r\n\r\n")
        .unwrap();
    let mut reply = Vec::new();
    idle.read_to_end(&mut reply).unwrap();
    assert!(reply.starts_with(b"HTTP/1.1 200 "));
    let stderr = p.stderr.clone();
    let (code, out) = p.finish();
    assert_eq!(code, 0);
    assert!(out.contains("done"), "{out}");
    let serving = stderr
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("/debug/pprof/"))
        .count();
    assert_eq!(serving, 1, "only the parent serves");
}

/// The preload library, built in this test run's profile.
fn library() -> &'static Path {
    common::preload_library()
}

#[test]
fn a_c_program_under_the_preload_library() {
    common::ensure_deps();
    let dir = common::temp_dir("http-c");
    let exe = common::c_program(&dir, "http_leak", &[]);
    let mut cmd = Command::new(&exe);
    cmd.arg("60")
        .env("LD_PRELOAD", library())
        .env("HEAPPROF_RATE", "1")
        .env("HEAPPROF_HTTP", "127.0.0.1:0")
        .env("HEAPPROF_OUT", dir.join("heap"));
    let p = Proc::spawn(cmd);
    let port = p.port();
    std::thread::sleep(Duration::from_millis(500));
    let (top, _) = common::go_pprof(&["-top", "-unit=B", &url(port, "heap")]);
    assert!(top.contains("leaky_c_function"), "{top}");
    let d = get(port, "/debug/pprof/heap?seconds=1").profile();
    let leaked = leaf_values(&d, "leaky_c_function")[3] as f64 / LEAK_BYTES as f64;
    let secs = d.duration_nanos as f64 / 1e9;
    // nanosleep ticks drift a little: each lasts at least 10 ms.
    assert!(
        leaked <= secs * LEAKS_PER_SEC + 3.0 && leaked >= secs * LEAKS_PER_SEC * 0.5,
        "{leaked} leaks in {secs} s"
    );
    p.kill();
}

#[test]
fn a_misspelled_variable_is_named_in_one_line() {
    let p = rust_program(&[("HEAPPROF_RAT", "1")], &["--seconds", "0.3"]);
    let (code, out) = p_finish(
        p,
        "HEAPPROF_RAT=1",
        "HEAPPROF_RAT is not a heapprof setting",
    );
    assert_eq!(code, 0);
    assert!(out.contains("done"), "{out}");
    let p = rust_program(&[("HEAPPROF_RAT", "1")], &["--seconds", "0.3"]);
    p_finish(p, "HEAPPROF_RAT=1", "did you mean HEAPPROF_RATE?");
}

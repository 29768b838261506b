//! The paths of the `/debug/pprof/` server and their responses, with the
//! meanings, headers and status codes of Go's `net/http/pprof`.
//!
//! Every profile is one row of [`ROUTES`]. A [`Serve::Profile`] row only says
//! how to build its profile and which sample type is its default; the
//! common parts come with it: gzipped pprof with Go's `Content-Type` and
//! `Content-Disposition`, `?seconds=N` (a delta of two profiles N seconds
//! apart, `profile::delta::delta`), `?debug=1` (the heaviest stacks
//! as text, as `heapprof top` prints them), `?gc=1` (accepted; there is no
//! collector to run), a line on the index page with its count. A
//! [`Serve::Custom`] row answers the whole request itself (`delta_heap`,
//! whose answer depends on the previous request). Adding a profile is one
//! row, as `threads` is.

use std::fmt::Write as _;

use super::Server;
use crate::profile::delta;
use crate::profile::proto::Profile;
use crate::report::{self, SampleKind};

/// One path under `/debug/pprof/`.
pub struct Route {
    /// The path after `/debug/pprof/`.
    pub name: &'static str,
    /// One line for the index page.
    pub desc: &'static str,
    pub serve: Serve,
    /// What the index page shows in its Count column.
    pub count: Option<fn() -> u64>,
}

/// How a [`Route`] answers.
pub enum Serve {
    /// A profile built on demand (delta, text and index support included).
    Profile {
        build: fn() -> Profile,
        /// Its `default_sample_type` (what readers show first).
        default_type: &'static str,
    },
    /// The whole answer.
    Custom(fn(&Request, &Query, &Server) -> Response),
}

/// The profiles served, in index order.
pub const ROUTES: &[Route] = &[
    Route {
        name: "heap",
        desc: "Sampled memory in use (and allocated) by stack, as a heap dump writes it. ?seconds=N: what changed over the next N seconds; ?debug=1: the top in-use stacks as text; ?peak=1: the heap at its highest estimated in-use so far.",
        serve: Serve::Profile {
            build: crate::profile::dump::profile,
            default_type: "inuse_space",
        },
        count: Some(inuse_stacks),
    },
    Route {
        name: "allocs",
        desc: "The same data with alloc_space (everything allocated since start) as the default sample type.",
        serve: Serve::Profile {
            build: crate::profile::dump::profile,
            default_type: "alloc_space",
        },
        count: Some(all_stacks),
    },
    Route {
        name: "delta_heap",
        desc: "As godeltaprof serves it: alloc_* counted since the previous request to this path, inuse_* absolute (Grafana Alloy's profile.godeltaprof_memory).",
        serve: Serve::Custom(delta_heap),
        count: None,
    },
    Route {
        name: "report",
        desc: "An HTML page of memory over time from this process's recent profiles (the last interval dumps on disk, the profiles this server took, one a minute when nothing else took one), with leak verdicts and flame graphs, as heapprof report writes it.",
        serve: Serve::Custom(report_page),
        count: None,
    },
    Route {
        name: "threads",
        desc: "Live threads by the stack that created them (Go's goroutine view for native threads), with each thread's stack reservation; labels thread_name and age.",
        serve: Serve::Profile {
            build: crate::profile::threads_pprof::profile,
            default_type: "threads",
        },
        count: Some(live_threads),
    },
];

/// The live thread count, when threads are tracked (preload, or the Rust
/// `threads` feature); 0 otherwise.
fn live_threads() -> u64 {
    crate::profile::threads_pprof::live_count() as u64
}

/// What `/debug/pprof/threads` says when threads are not tracked (a Rust
/// program built without the `threads` feature), rather than "0".
const THREADS_NOT_TRACKED: &str = "threads are not tracked in this program: build heapprof with \
     the `threads` feature (the preload library always tracks them)";

/// The longest `?seconds=N` window accepted.
pub const MAX_SECONDS: i64 = 3600;

/// The parts of a request the routes look at.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    /// The request target: path and query.
    pub target: String,
}

/// A complete answer.
#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Response {
    fn new(status: u16, content_type: &str, body: Vec<u8>) -> Response {
        Response {
            status,
            headers: vec![("Content-Type", content_type.to_owned())],
            body,
        }
    }

    /// A plain-text error, as Go's `serveError` writes it.
    pub fn error(status: u16, text: &str) -> Response {
        let mut r = Response::new(status, TEXT, format!("{text}\n").into_bytes());
        r.headers.push(("X-Go-Pprof", "1".into()));
        r
    }

    fn profile(p: &Profile, filename: &str) -> Response {
        let mut r = Response::new(
            200,
            "application/octet-stream",
            crate::profile::output::encode_gz(p),
        );
        r.headers.push((
            "Content-Disposition",
            format!("attachment; filename=\"{filename}\""),
        ));
        r
    }

    /// The bytes on the wire; `head_only` for HEAD (same headers, no body).
    pub fn to_bytes(&self, head_only: bool) -> Vec<u8> {
        let mut head = format!("HTTP/1.1 {} {}\r\n", self.status, reason(self.status));
        for (k, v) in &self.headers {
            let _ = write!(head, "{k}: {v}\r\n");
        }
        let _ = write!(
            head,
            "X-Content-Type-Options: nosniff\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.body.len()
        );
        let mut bytes = head.into_bytes();
        if !head_only {
            bytes.extend_from_slice(&self.body);
        }
        bytes
    }
}

const TEXT: &str = "text/plain; charset=utf-8";

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        301 => "Moved Permanently",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "",
    }
}

/// A parsed query string.
pub struct Query(Vec<(String, String)>);

impl Query {
    fn parse(q: &str) -> Query {
        Query(
            q.split('&')
                .filter(|kv| !kv.is_empty())
                .map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                    (unescape(k), unescape(v))
                })
                .collect(),
        )
    }

    /// The first value of `key`, as Go's `FormValue`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// `key` as an integer: `Ok(None)` when absent, `Err` (a 400) when not
    /// an integer.
    pub fn int(&self, key: &str) -> Result<Option<i64>, Response> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.trim().parse().map(Some).map_err(|_| {
                Response::error(
                    400,
                    &format!("invalid value for {key:?} - must be an integer"),
                )
            }),
        }
    }
}

fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = b
                    .get(i + 1..i + 3)
                    .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                    .and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok());
                match hex {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The answer to one request.
pub fn respond(req: &Request, server: &Server) -> Response {
    if req.method != "GET" && req.method != "HEAD" {
        let mut r = Response::error(405, "method not allowed: use GET or HEAD");
        r.headers.push(("Allow", "GET, HEAD".into()));
        return r;
    }
    // Absolute form (`GET http://host:port/debug/pprof/heap`, as sent to
    // proxies) names the same path.
    let target = match req.target.strip_prefix("http://") {
        Some(rest) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => &req.target,
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let query = Query::parse(query);
    if path == "/metrics" {
        let body = crate::control::metrics::render();
        return Response::new(
            200,
            crate::control::metrics::CONTENT_TYPE,
            body.into_bytes(),
        );
    }
    if path == "/debug/pprof" {
        let mut r = Response::error(301, "moved to /debug/pprof/");
        r.headers.push(("Location", "/debug/pprof/".into()));
        return r;
    }
    let Some(name) = path.strip_prefix("/debug/pprof/") else {
        return Response::error(404, "404 page not found");
    };
    if name.is_empty() {
        return index(server);
    }
    let Some(route) = ROUTES.iter().find(|r| r.name == name) else {
        return Response::error(404, "Unknown profile");
    };
    if route.name == "threads" && !crate::profile::threads_pprof::tracking() {
        return Response::error(404, THREADS_NOT_TRACKED);
    }
    match &route.serve {
        Serve::Custom(f) => f(req, &query, server),
        Serve::Profile {
            build,
            default_type,
        } => serve_profile(route.name, *build, default_type, &query, server),
    }
}

fn serve_profile(
    name: &str,
    build: fn() -> Profile,
    default_type: &str,
    query: &Query,
    server: &Server,
) -> Response {
    let (seconds, debug) = match (query.int("seconds"), query.int("debug"), query.int("gc")) {
        (Ok(s), Ok(d), Ok(_)) => (s, d.unwrap_or(0)),
        (Err(r), ..) | (_, Err(r), _) | (.., Err(r)) => return r,
    };
    // `?peak=1`: the heap at its highest so far (crate::control::peak).
    let build = match query.int("peak") {
        Ok(Some(p)) if p != 0 && name == "heap" => {
            if seconds.is_some() {
                return Response::error(400, "seconds and peak params are incompatible");
            }
            peak_or_now
        }
        Ok(_) => build,
        Err(r) => return r,
    };
    let Some(seconds) = seconds else {
        let Some(mut p) = server.computing(build) else {
            return busy();
        };
        if name == "heap" || name == "allocs" {
            crate::profile::dump::count_dump(crate::profile::dump::Trigger::Http);
            crate::control::history::record(&p, "http");
        }
        set_default_type(&mut p, default_type);
        return if debug != 0 {
            text(server, name, &p, default_type)
        } else {
            Response::profile(&p, name)
        };
    };
    if !(1..=MAX_SECONDS).contains(&seconds) {
        return Response::error(
            400,
            &format!(
                "invalid value for \"seconds\" - must be a positive integer up to {MAX_SECONDS}"
            ),
        );
    }
    if debug != 0 {
        return Response::error(400, "seconds and debug params are incompatible");
    }
    let Some(_slot) = server.delta_slot() else {
        return busy();
    };
    let Some(p0) = server.computing(build) else {
        return busy();
    };
    std::thread::sleep(std::time::Duration::from_secs(seconds as u64));
    let Some(p1) = server.computing(build) else {
        return busy();
    };
    match delta::delta(&p0, &p1) {
        Ok(mut d) => {
            set_default_type(&mut d, default_type);
            Response::profile(&d, &format!("{name}-delta"))
        }
        Err(e) => Response::error(500, &format!("failed to compute delta: {e}")),
    }
}

/// The peak profile, or the current one while no growth has been seen (the
/// heap is then at its highest now).
fn peak_or_now() -> Profile {
    crate::control::peak::peak_profile().unwrap_or_else(crate::profile::dump::profile)
}

fn busy() -> Response {
    Response::error(
        503,
        "busy: another profile is being computed; retry shortly",
    )
}

fn set_default_type(p: &mut Profile, t: &str) {
    let i = match p.string_table.iter().position(|s| s == t) {
        Some(i) => i,
        None => {
            p.string_table.push(t.to_owned());
            p.string_table.len() - 1
        }
    };
    p.default_sample_type = i as i64;
}

/// `?debug=1`: the heaviest stacks by the route's default type, as
/// `heapprof top` prints them.
fn text(server: &Server, name: &str, p: &Profile, default_type: &str) -> Response {
    let input = format!("http://{}/debug/pprof/{name}", server.addr);
    let kind = match default_type {
        "inuse_space" => SampleKind::InuseSpace,
        "alloc_space" => SampleKind::AllocSpace,
        other => SampleKind::Other(other.to_owned()),
    };
    let body = report::Resolved::from_profile(&input, p).and_then(|r| {
        // As `heapprof top` shows stacks: without the runtime's root frames.
        let unseen = report::unseen_memory(&r, Some(std::path::Path::new("/proc/self/exe")));
        let t = report::top(&report::program_only(r), &kind, 20)?;
        let mut text = format!(
            "heapprof {name} profile of pid {} (sampling rate {} bytes)\n{t}",
            std::process::id(),
            crate::engine::rate()
        );
        if let Some(note) = unseen {
            text.push_str(&format!("\n{note}\n"));
        }
        Ok(text)
    });
    match body {
        Ok(b) => Response::new(200, TEXT, b.into_bytes()),
        Err(e) => Response::error(500, &e.to_string()),
    }
}

/// `/debug/pprof/delta_heap`, see [`ROUTES`].
fn delta_heap(_req: &Request, query: &Query, server: &Server) -> Response {
    let debug =
        match (query.int("gc"), query.int("debug"), query.int("seconds")) {
            (Err(r), ..) | (_, Err(r), _) | (.., Err(r)) => return r,
            (_, _, Ok(Some(_))) => return Response::error(
                400,
                "delta_heap does not take seconds: its alloc_* count since the previous request \
                 to this path, so request it twice N seconds apart (or heap?seconds=N)",
            ),
            (_, Ok(debug), _) => debug.unwrap_or(0),
        };
    let answer = server.computing(|| {
        let now = crate::profile::dump::profile();
        let mut last = server.last_delta_heap();
        let d = delta::alloc_delta(last.as_ref(), &now);
        if d.is_ok() {
            *last = Some(now);
        }
        d
    });
    match answer {
        None => busy(),
        Some(Ok(mut p)) => {
            set_default_type(&mut p, "inuse_space");
            if debug != 0 {
                return text(server, "delta_heap", &p, "inuse_space");
            }
            Response::profile(&p, "delta_heap")
        }
        Some(Err(e)) => Response::error(500, &format!("failed to compute delta: {e}")),
    }
}

/// `/debug/pprof/report`: a profile taken now, added to the history, and
/// the page drawn from the whole history ([`crate::control::history`]).
fn report_page(_req: &Request, query: &Query, server: &Server) -> Response {
    if let Err(r) = query.int("gc") {
        return r;
    }
    let Some(now) = server.computing(crate::profile::dump::profile) else {
        return busy();
    };
    if now.time_nanos != 0 {
        crate::profile::dump::count_dump(crate::profile::dump::Trigger::Report);
        crate::control::history::record(&now, "report");
    }
    drop(now);
    let pid = std::process::id();
    let mut dumps = Vec::new();
    for (name, trigger, gz) in crate::control::history::recent() {
        // A profile that does not decode is left out, not the whole page.
        if let Ok(mut d) = report::html::parse_dump(&name, &gz) {
            d.trigger.get_or_insert_with(|| trigger.to_string());
            d.pid.get_or_insert(pid);
            d.profile = report::program_only(d.profile);
            dumps.push(d);
        }
    }
    match report::html::html(dumps, &format!("heapprof report of pid {pid}")) {
        Ok(page) => Response::new(200, "text/html; charset=utf-8", page.into_bytes()),
        Err(e) => Response::error(500, &format!("no report: {e}")),
    }
}

/// Stacks with memory in use now.
fn inuse_stacks() -> u64 {
    crate::profile::snapshot::take()
        .entries
        .iter()
        .filter(|e| e.live > 0)
        .count() as u64
}

/// Stacks that allocated since start.
fn all_stacks() -> u64 {
    crate::profile::snapshot::take().entries.len() as u64
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `/debug/pprof/`: links, settings and counts.
fn index(server: &Server) -> Response {
    let counts: Option<Vec<Option<u64>>> = server.computing(|| {
        ROUTES
            .iter()
            .map(|r| r.count.map(|f| f()))
            .collect::<Vec<_>>()
    });
    let counts = counts.unwrap_or_else(|| vec![None; ROUTES.len()]);
    let rate = crate::engine::rate();
    let mut b = String::new();
    let _ = write!(
        b,
        "<html>\n<head>\n<title>/debug/pprof/</title>\n</head>\n<body>\n/debug/pprof/ (heapprof {ver}, pid {pid})\n<br>\n\
<p>Set debug=1 as a query parameter for the top stacks as text; seconds=N for what changed over the next N seconds.</p>\n\
Types of profiles available:\n<table>\n<thead><td>Count</td><td>Profile</td></thead>\n",
        ver = env!("CARGO_PKG_VERSION"),
        pid = std::process::id()
    );
    for (r, c) in ROUTES.iter().zip(&counts) {
        if r.name == "threads" && !crate::profile::threads_pprof::tracking() {
            let _ = writeln!(
                b,
                "<tr><td></td><td>threads: {}</td></tr>",
                escape(THREADS_NOT_TRACKED)
            );
            continue;
        }
        let c = c.map_or(String::new(), |c| c.to_string());
        let text_link = match r.serve {
            Serve::Profile { .. } => format!(" (<a href='{0}?debug=1'>text</a>)", r.name),
            Serve::Custom(_) => String::new(),
        };
        let _ = writeln!(
            b,
            "<tr><td>{c}</td><td><a href='{0}'>{0}</a>{text_link}</td></tr>",
            escape(r.name)
        );
    }
    let _ = write!(b, "</table>\n<p>\nProfile Descriptions:\n<ul>\n");
    for r in ROUTES {
        let _ = writeln!(b, "<li><b>{}</b>: {}</li>", escape(r.name), escape(r.desc));
    }
    let prefix = crate::control::triggers::out_prefix();
    let sampling = match rate {
        0 => "off".to_owned(),
        1 => "every allocation (exact)".to_owned(),
        r => format!("one sample per {r} bytes on average"),
    };
    let _ = write!(
        b,
        "</ul>\n</p>\n<p>Settings:\n<ul>\n<li>sampling rate (HEAPPROF_RATE): {rate} ({})</li>\n\
<li>dump prefix (HEAPPROF_OUT): {}</li>\n<li>symbolized in-process (HEAPPROF_SYMBOLIZE): {}</li>\n\
<li>records dropped (buffers full): {}</li>\n</ul>\n</p>\n\
<p>Read it with <code>go tool pprof http://{addr}/debug/pprof/heap</code>.</p>\n</body>\n</html>\n",
        escape(&sampling),
        escape(&prefix.display().to_string()),
        crate::profile::settings::symbolize_enabled(),
        crate::engine::buffer::dropped_records(),
        addr = server.addr,
    );
    Response::new(200, "text/html; charset=utf-8", b.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_decode_and_validate() {
        let q = Query::parse("seconds=5&debug=x&a%20b=c+d%2&gc=");
        assert_eq!(q.int("seconds").unwrap(), Some(5));
        assert_eq!(q.int("debug").unwrap_err().status, 400);
        assert_eq!(q.get("a b"), Some("c d%2"));
        assert_eq!(q.int("missing").unwrap(), None);
        assert_eq!(q.int("gc").unwrap_err().status, 400);
        assert_eq!(unescape("%"), "%");
        assert_eq!(unescape("%4"), "%4");
        assert_eq!(unescape("%41"), "A");
        assert_eq!(unescape("%zz"), "%zz");
    }

    #[test]
    fn responses_close_and_measure_their_body() {
        let r = Response::error(404, "Unknown profile");
        let wire = String::from_utf8(r.to_bytes(false)).unwrap();
        assert!(wire.starts_with("HTTP/1.1 404 Not Found\r\n"), "{wire}");
        assert!(wire.contains("Content-Length: 16\r\n"), "{wire}");
        assert!(wire.contains("Connection: close\r\n"), "{wire}");
        assert!(wire.ends_with("\r\n\r\nUnknown profile\n"), "{wire}");
        let head = String::from_utf8(r.to_bytes(true)).unwrap();
        assert!(head.ends_with("\r\n\r\n") && head.contains("Content-Length: 16"));
    }
}

//! `/metrics` scraped by a real Prometheus (Debian's `prometheus`, installed
//! by scripts/install-report-deps.sh, started here on a loopback port with
//! a 1 s scrape interval and its own storage): the query API sees the
//! leaking route's in-use bytes rise and the churning route's stay flat;
//! and `promtool check metrics` accepts the page.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A process killed when the test ends, pass or fail.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GET `path` from 127.0.0.1:`port`: (status, body); `None` if nothing
/// listens yet.
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut bytes = Vec::new();
    s.read_to_end(&mut bytes).ok()?;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    // Prometheus may answer chunked; the API's JSON is small and the tests
    // below only look for numbers inside it, so chunk sizes do no harm.
    Some((status, body.to_string()))
}

/// The label service with `/metrics` on a port of its own choosing.
fn start_service(dir: &Path) -> (Killed, u16) {
    use std::io::BufRead;
    let mut cmd = common::clean_command(common::example("label_service"));
    cmd.args(["--seconds", "120"])
        .env("HEAPPROF_HTTP", "127.0.0.1:0")
        .env("HEAPPROF_RATE", "4096")
        .env("HEAPPROF_AT_EXIT", "0")
        .env("HEAPPROF_OUT", dir.join("heap"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
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
    let child = Killed(child);
    let port = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the server's line on stderr");
    (child, port)
}

/// The `[time, "value"]` pairs of the first series in a Prometheus API
/// answer for a range-vector query.
fn values(json: &str) -> Vec<f64> {
    let Some(start) = json.find("\"values\":[") else {
        return Vec::new();
    };
    let rest = &json[start + "\"values\":[".len()..];
    let end = rest.find("]]").map_or(rest.len(), |e| e + 1);
    rest[..end]
        .split("],[")
        .filter_map(|pair| {
            let v = pair.split(',').nth(1)?;
            v.trim_matches(|c| c == '"' || c == ']' || c == '[')
                .parse()
                .ok()
        })
        .collect()
}

#[test]
fn prometheus_sees_the_leaking_route_rise_and_the_churning_route_stay_flat() {
    common::ensure_report_deps();
    let dir = common::temp_dir("metrics-prometheus");
    let (service, port) = start_service(&dir);

    // The page itself, as promtool reads it, once both routes have live
    // samples.
    let deadline = Instant::now() + Duration::from_secs(20);
    let page = loop {
        let (status, page) = get(port, "/metrics").unwrap();
        assert_eq!(status, 200);
        if page.contains("route=\"/users\"") && page.contains("route=\"/orders\"") {
            break page;
        }
        assert!(Instant::now() < deadline, "{page}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check
        .stdin
        .take()
        .unwrap()
        .write_all(page.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool: {}{}\n{page}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for name in [
        "heapprof_heap_inuse_bytes{route=\"/users\"}",
        "heapprof_heap_inuse_objects{tenant=\"acme\"}",
        "heapprof_heap_allocated_bytes_total{route=\"/orders\"}",
        "heapprof_threads ",
        "heapprof_samples_total ",
        "heapprof_dumps_total{trigger=\"http\"} 0",
        "heapprof_dropped_records_total ",
        "heapprof_sampling_rate_bytes 4096",
    ] {
        assert!(page.contains(name), "no {name} in\n{page}");
    }

    let prom_port = free_port();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
             scrape_configs:\n  - job_name: heapprof\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
        ),
    )
    .unwrap();
    let prometheus = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
        .spawn()
        .unwrap();
    let _prometheus = Killed(prometheus);

    // Eight scrapes or more of each route's in-use bytes.
    let query = |route: &str| {
        let q = format!("heapprof_heap_inuse_bytes%7Broute%3D%22{route}%22%7D%5B60s%5D");
        get(prom_port, &format!("/api/v1/query?query={q}"))
            .map(|(_, body)| values(&body))
            .unwrap_or_default()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let (users, orders) = loop {
        let (users, orders) = (query("/users"), query("/orders"));
        if users.len() >= 8 && orders.len() >= 8 {
            break (users, orders);
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus has {} and {} samples after a minute; its log:\n{}",
            users.len(),
            orders.len(),
            std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    eprintln!("/users: {users:?}\n/orders: {orders:?}");
    // The leak: about 400 kB/s kept; its estimate never falls and ends well
    // above where it started.
    let (first, last) = (users[0], users[users.len() - 1]);
    assert!(last > first + 1_000_000.0, "/users did not rise: {users:?}");
    assert!(
        users.windows(2).all(|w| w[1] >= w[0]),
        "/users fell: {users:?}"
    );
    // The churn: a working set of 64 orders of 8 kB, about 55 live samples
    // at this rate: flat within its sampling noise, no trend.
    let mean = orders.iter().sum::<f64>() / orders.len() as f64;
    assert!(
        (200_000.0..1_200_000.0).contains(&mean),
        "/orders: {orders:?}"
    );
    let (lo, hi) = orders
        .iter()
        .fold((f64::MAX, f64::MIN), |(l, h), v| (l.min(*v), h.max(*v)));
    assert!(hi - lo < mean, "/orders is not flat: {orders:?}");
    let half = orders.len() / 2;
    let early = orders[..half].iter().sum::<f64>() / half as f64;
    let late = orders[half..].iter().sum::<f64>() / (orders.len() - half) as f64;
    assert!(
        (late - early).abs() < 0.35 * mean,
        "/orders trends: {orders:?}"
    );

    // The server took one profile for /debug/pprof/report's history (none
    // was taken or written before), then none while the last is recent;
    // one served over HTTP is counted as such.
    let (_, page) = get(port, "/metrics").unwrap();
    assert!(
        page.contains("heapprof_dumps_total{trigger=\"history\"} 1"),
        "{page}"
    );
    assert_eq!(get(port, "/debug/pprof/heap").unwrap().0, 200);
    let (_, page) = get(port, "/metrics").unwrap();
    assert!(
        page.contains("heapprof_dumps_total{trigger=\"http\"} 1")
            && page.contains("heapprof_dumps_total{trigger=\"history\"} 1"),
        "{page}"
    );
    // A dump on the signal is counted as one, and says so in its file.
    // SAFETY: kill(2) on the service's pid, a child still alive (Killed).
    let sent = unsafe { libc::kill(service.0.id() as i32, libc::SIGUSR2) };
    assert_eq!(sent, 0);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, page) = get(port, "/metrics").unwrap();
        if page.contains("heapprof_dumps_total{trigger=\"signal\"} 1") {
            assert!(
                page.contains("heapprof_dumps_total{trigger=\"interval\"} 0"),
                "{page}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "{page}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let dumps = common::dumps(&dir);
    assert_eq!(dumps.len(), 1, "{dumps:?}");
    let p = common::read_profile(&dumps[0].2);
    assert!(
        p.comment
            .iter()
            .any(|&c| p.string_table[c as usize] == "trigger=signal"),
        "{:?}",
        p.string_table
    );
}

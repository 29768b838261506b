// The body of `http_service` and `http_service_bare` (included): a small
// HTTP/1.1 service on std's blocking sockets, a thread per connection, as
// many internal services are.
//
// Routes: `/` answers a small JSON document built from a few small
// allocations (a request's usual churn); `/report` renders a report into a
// temporary buffer of 256 KiB to 1.5 MiB (grown as pushes grow it), as
// report rendering, serialization or compression does, and answers its
// length and a checksum. Keep-alive; `Connection: close` honoured.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};

static REQUESTS: AtomicU64 = AtomicU64::new(0);

fn small(n: u64) -> String {
    let mut fields: Vec<(String, String)> = (0..8)
        .map(|i| (format!("field{i}"), format!("value-{}", n.wrapping_mul(31) + i)))
        .collect();
    fields.sort();
    let mut out = String::from("{");
    for (k, v) in &fields {
        out.push_str(&format!("\"{k}\":\"{v}\","));
    }
    out.pop();
    out.push('}');
    out
}

fn report(n: u64) -> String {
    let mut x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    let size = (256 << 10) + (x as usize) % ((1536 << 10) - (256 << 10));
    let mut buf: Vec<u8> = Vec::new();
    let mut line = 0u64;
    while buf.len() < size {
        line += 1;
        buf.extend_from_slice(format!("row {line:>10} value {:>20}\n", line ^ x).as_bytes());
    }
    let sum = buf.iter().step_by(97).fold(0u64, |a, &b| a.wrapping_add(b as u64));
    format!("{{\"bytes\":{},\"sum\":{sum}}}", buf.len())
}

fn serve(stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut out = match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    };
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
        let mut close = false;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            if h == "\r\n" || h == "\n" {
                break;
            }
            if h.to_ascii_lowercase().starts_with("connection: close") {
                close = true;
            }
        }
        let n = REQUESTS.fetch_add(1, Ordering::Relaxed);
        let (status, body) = match path.as_str() {
            "/" => ("200 OK", small(n)),
            "/report" => ("200 OK", report(n)),
            _ => ("404 Not Found", String::from("{}")),
        };
        let head = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        if out.write_all(head.as_bytes()).is_err() || out.write_all(body.as_bytes()).is_err() {
            return;
        }
        if close {
            return;
        }
    }
}

fn main() {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:0".into());
    let listener = TcpListener::bind(&addr).expect("bind");
    println!("listening {}", listener.local_addr().expect("address"));
    let _ = std::io::stdout().flush();
    for stream in listener.incoming().flatten() {
        std::thread::spawn(move || serve(stream));
    }
}

//! A Go-compatible `/debug/pprof/` HTTP endpoint, on heapprof's own threads.
//!
//! `HEAPPROF_HTTP=ADDR` (or [`crate::Config::http`]) serves the paths of
//! [`routes::ROUTES`] with `net/http/pprof`'s meanings, so `go tool pprof
//! http://HOST:PORT/debug/pprof/heap`, Parca and Grafana Alloy read a Rust
//! binary or any process under the preload library as they read a Go one.
//!
//! # Model
//! The dumper thread owns a [`Control`] and calls [`Control::ensure`] with
//! the configured address on every wake-up: it binds, starts the server and
//! prints one line with the URL (or one line saying why it cannot, naming
//! `HEAPPROF_HTTP`, after which it does not retry that address), and stops
//! and rebinds when the configuration changes. Nothing here runs on an
//! allocation hook or in a signal handler, and every server thread is marked
//! busy for good (like the dumper), so its allocations are never sampled.
//!
//! One **poll thread** accepts connections and reads request heads from all
//! of them at once (non-blocking sockets under `poll(2)`), so an idle or
//! slow client costs a slot, never a thread: a head must be complete within
//! [`MAX_HEAD`] bytes (else 431) and [`HEAD_TIMEOUT`] (else 408); garbage is
//! answered 400 by `httparse` (zero-copy, no allocation, no runtime); beyond
//! [`MAX_PENDING`] connections the oldest is dropped. A complete request goes
//! through a bounded queue (full: 503) to one of [`WORKERS`] **worker
//! threads**, which compute the response under a panic guard (a panic is a
//! 500, never the program's) and write it with a write timeout and an overall
//! deadline. Each response closes its connection (`Connection: close`).
//! Profiles are computed one at a time ([`Server::computing`]); a request
//! that cannot get its turn within [`COMPUTE_WAIT`] gets 503, and at most
//! [`MAX_DELTAS`] `?seconds=N` requests wait out their window at once, so
//! one worker is always free for plain requests.
//!
//! # fork
//! A forked child does not serve. Its copy of the listening socket would
//! keep the port bound with nobody accepting (clients would hang once the
//! parent exits), and it cannot listen on the parent's port itself. So the
//! `pthread_atfork` child handler closes every socket of the server
//! ([`after_fork_child`]; they are kept in a fixed table of descriptors for
//! that, allocation-free), and the child's new dumper thread leaves the
//! inherited address alone: a child serves only if it configures a new
//! address from code ([`crate::Config::http`]).
//!
//! # Exposure
//! Profiles carry stack traces, function names and file paths. A bare port
//! listens on 127.0.0.1; other interfaces only when the user names them.

pub mod routes;

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicI64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::control::triggers::say;
use crate::engine::thread_state;
use crate::profile::proto::Profile;

pub use routes::{Request, Response, Route, Serve, ROUTES};

/// Longest request head (request line and headers) read.
pub const MAX_HEAD: usize = 8 * 1024;
/// Most headers a request may have.
const MAX_HEADERS: usize = 64;
/// Connections still sending their head, at most.
pub const MAX_PENDING: usize = 64;
/// Threads computing and writing responses.
pub const WORKERS: usize = 4;
/// Complete requests waiting for a worker, at most.
const QUEUE: usize = 8;
/// Time a client has to send its whole request head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a single write may block, and the whole response may take.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
const WRITE_DEADLINE: Duration = Duration::from_secs(30);
/// Longest a request waits for another's profile computation.
pub const COMPUTE_WAIT: Duration = Duration::from_secs(5);
/// `?seconds=N` requests waiting out their window at once, at most.
pub const MAX_DELTAS: usize = 2;
/// How often the poll thread looks whether it should stop.
const POLL_MS: i32 = 200;

/// The dumper thread's handle on the server.
#[derive(Default)]
pub struct Control {
    /// The address last asked for (outer `None`: never asked yet).
    seen: Option<Option<SocketAddr>>,
    running: Option<Running>,
}

struct Running {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// Set in a forked child: its first address is the parent's, not its own.
static FORKED_CHILD: AtomicBool = AtomicBool::new(false);

impl Control {
    /// A handle with no server.
    pub fn new() -> Control {
        Control::default()
    }

    /// Serves on `want` (stops serving on `None`). Cheap when unchanged; an
    /// address that failed is not retried until the setting changes.
    pub fn ensure(&mut self, want: Option<SocketAddr>) {
        if self.seen == Some(want) {
            return;
        }
        let first = self.seen.is_none();
        self.seen = Some(want);
        if first && FORKED_CHILD.load(Ordering::Acquire) {
            // See the module docs: a child leaves its parent's address.
            return;
        }
        self.stop();
        if let Some(addr) = want {
            match start(addr) {
                Ok((running, bound)) => {
                    self.running = Some(running);
                    say(&format!(
                        "heapprof: serving profiles at http://{bound}/debug/pprof/ (HEAPPROF_HTTP; whoever can connect sees stack traces and file paths)"
                    ));
                }
                Err(e) => say(&format!(
                    "heapprof: cannot serve /debug/pprof/ on {addr} (HEAPPROF_HTTP): {e}; set HEAPPROF_HTTP to a free port of this machine (0 picks one) or off; the program runs on without it"
                )),
            }
        }
    }

    /// The address being served (port 0 resolved), if any.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.running.as_ref().map(|r| r.addr)
    }

    /// Stops serving: the poll thread has ended when this returns; the
    /// workers end once their answers are sent.
    pub fn stop(&mut self) {
        if let Some(mut r) = self.running.take() {
            r.stop.store(true, Ordering::Release);
            // The poll thread notices within POLL_MS and closes the
            // listener, so the same port can be bound again at once.
            if let Some(t) = r.thread.take() {
                let _ = t.join();
            }
        }
    }
}

/// The state one running server shares between its threads.
pub struct Server {
    /// The address actually bound (port 0 resolved).
    pub addr: SocketAddr,
    /// Held while a profile is computed.
    computing: Mutex<()>,
    /// `?seconds=N` requests waiting out their window.
    deltas: AtomicUsize,
    /// The profile the previous `/debug/pprof/delta_heap` answer was taken
    /// from (its alloc values are what the next answer subtracts).
    pub(crate) last_delta_heap: Mutex<Option<Profile>>,
}

impl Server {
    /// Runs `f` as the only profile computation under way, or returns
    /// `None` if the turn does not come within [`COMPUTE_WAIT`].
    pub fn computing<R>(&self, f: impl FnOnce() -> R) -> Option<R> {
        let end = Instant::now() + COMPUTE_WAIT;
        loop {
            match self.computing.try_lock() {
                Ok(_g) => return Some(f()),
                Err(std::sync::TryLockError::Poisoned(e)) => {
                    let _g = e.into_inner();
                    return Some(f());
                }
                Err(std::sync::TryLockError::WouldBlock) if Instant::now() < end => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(std::sync::TryLockError::WouldBlock) => return None,
            }
        }
    }

    /// A slot for one `?seconds=N` wait, freed when the guard drops.
    pub fn delta_slot(&self) -> Option<DeltaSlot<'_>> {
        let n = self.deltas.fetch_add(1, Ordering::AcqRel);
        if n >= MAX_DELTAS {
            self.deltas.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(DeltaSlot(&self.deltas))
    }

    pub(crate) fn last_delta_heap(&self) -> MutexGuard<'_, Option<Profile>> {
        self.last_delta_heap
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }
}

/// See [`Server::delta_slot`].
pub struct DeltaSlot<'a>(&'a AtomicUsize);

impl Drop for DeltaSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Counts an HTTP thread as heapprof's; in the dumper's private table
/// (the server started from code after the dumper took one), takes it off
/// glibc's count too: glibc must never end the process on a thread whose
/// table is not the program's.
fn own_thread() -> crate::control::lifetime::OwnThread {
    let mut own = crate::control::lifetime::OwnThread::enter(false);
    if crate::os::own_table::in_private_table() {
        own.uncount_self();
    }
    own
}

fn start(addr: SocketAddr) -> io::Result<(Running, SocketAddr)> {
    PRIVATE_TABLE.store(crate::os::own_table::in_private_table(), Ordering::Release);
    // High and close-on-exec, as every descriptor of heapprof's.
    let listener = crate::os::fds::high(TcpListener::bind(addr)?);
    listener.set_nonblocking(true)?;
    let bound = listener.local_addr()?;
    let listener = Tracked::new(listener).ok_or_else(|| io::Error::other("too many sockets"))?;
    let stop = Arc::new(AtomicBool::new(false));
    let server = Arc::new(Server {
        addr: bound,
        computing: Mutex::new(()),
        deltas: AtomicUsize::new(0),
        last_delta_heap: Mutex::new(None),
    });
    let (tx, rx) = sync_channel::<Job>(QUEUE);
    let rx = Arc::new(Mutex::new(rx));
    for i in 0..WORKERS {
        let (rx, server) = (rx.clone(), server.clone());
        std::thread::Builder::new()
            .name(format!("heapprof-http{i}"))
            .spawn(move || worker(rx, server))?;
    }
    let stop2 = stop.clone();
    let thread = std::thread::Builder::new()
        .name("heapprof-http".into())
        .spawn(move || poll_loop(listener, tx, stop2))?;
    Ok((
        Running {
            addr: bound,
            stop,
            thread: Some(thread),
        },
        bound,
    ))
}

// ---- Sockets the fork child must close -------------------------------------

const SLOTS: usize = 128;
static FDS: [AtomicI32; SLOTS] = [const { AtomicI32::new(-1) }; SLOTS];

/// A socket whose descriptor is listed in [`FDS`] while it is open.
struct Tracked<T: AsRawFd> {
    slot: usize,
    inner: T,
}

impl<T: AsRawFd> Tracked<T> {
    /// `None` (and `inner` closed) if the table is full.
    fn new(inner: T) -> Option<Tracked<T>> {
        let fd = inner.as_raw_fd();
        let slot = FDS.iter().position(|s| {
            s.compare_exchange(-1, fd, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        })?;
        Some(Tracked { slot, inner })
    }
}

impl<T: AsRawFd> Drop for Tracked<T> {
    fn drop(&mut self) {
        // Unlisted before `inner` closes: a child forked in between leaks a
        // descriptor rather than closing one the program reused.
        FDS[self.slot].store(-1, Ordering::Release);
    }
}

/// The server's sockets are in the dumper's own descriptor table
/// ([`crate::os::own_table`]), not the one a fork's child gets.
static PRIVATE_TABLE: AtomicBool = AtomicBool::new(false);

/// The `pthread_atfork` child handler's part: closes the server's sockets
/// (their threads do not exist here) and makes the child's dumper leave the
/// inherited address alone. Allocation-free and lock-free. Sockets of a
/// private table were never in the child's: their numbers are the
/// program's there, left alone.
pub fn after_fork_child() {
    FORKED_CHILD.store(true, Ordering::Release);
    let inherited = !PRIVATE_TABLE.swap(false, Ordering::AcqRel);
    for s in &FDS {
        let fd = s.swap(-1, Ordering::AcqRel);
        if fd >= 0 && inherited {
            // SAFETY: a descriptor of a socket the server owned in the
            // parent; in the child nothing else refers to it.
            unsafe { libc::close(fd) };
        }
    }
}

// ---- The poll thread ------------------------------------------------------

struct Pending {
    conn: Tracked<TcpStream>,
    head: Vec<u8>,
    since: Instant,
}

/// A complete request head, handed to a worker.
struct Job {
    conn: Tracked<TcpStream>,
    request: Request,
}

fn poll_loop(listener: Tracked<TcpListener>, tx: SyncSender<Job>, stop: Arc<AtomicBool>) {
    let _own = own_thread();
    thread_state::current().enter_forever();
    let own = crate::os::fds::id(listener.inner.as_raw_fd());
    let mut pending: Vec<Pending> = Vec::new();
    let mut fds: Vec<libc::pollfd> = Vec::new();
    while !stop.load(Ordering::Acquire) {
        fds.clear();
        fds.push(libc::pollfd {
            fd: listener.inner.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        });
        fds.extend(pending.iter().map(|p| libc::pollfd {
            fd: p.conn.inner.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }));
        let now = Instant::now();
        let next_expiry = pending
            .iter()
            .map(|p| (p.since + HEAD_TIMEOUT).saturating_duration_since(now))
            .min()
            .map_or(POLL_MS, |d| (d.as_millis() as i32 + 1).min(POLL_MS));
        // SAFETY: `fds` is a valid array of `fds.len()` pollfds.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, next_expiry) };
        if n < 0 {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        // Heads first: `fds[i + 1]` is `pending[i]` until the accept below
        // adds and evicts connections. Walking down keeps the pairing
        // (swap_remove only moves an element already visited).
        let mut i = pending.len();
        while i > 0 {
            i -= 1;
            let revents = fds[i + 1].revents;
            if revents & libc::POLLNVAL != 0 {
                // Closed by the program under us: as for the listener below.
                let p = pending.swap_remove(i);
                FDS[p.conn.slot].store(-1, Ordering::Release);
                std::mem::forget(p.conn);
                continue;
            }
            if revents == 0 {
                if pending[i].since.elapsed() >= HEAD_TIMEOUT {
                    let p = pending.swap_remove(i);
                    reject(p.conn, 408, "request head not received in time");
                }
                continue;
            }
            match read_head(&mut pending[i]) {
                // A client trickling bytes is timed out like an idle one.
                HeadState::More if pending[i].since.elapsed() >= HEAD_TIMEOUT => {
                    let p = pending.swap_remove(i);
                    reject(p.conn, 408, "request head not received in time");
                }
                HeadState::More => {}
                HeadState::Closed => {
                    pending.swap_remove(i);
                }
                HeadState::Bad(status, why) => {
                    let p = pending.swap_remove(i);
                    reject(p.conn, status, why);
                }
                HeadState::Done(request) => {
                    let p = pending.swap_remove(i);
                    match tx.try_send(Job {
                        conn: p.conn,
                        request,
                    }) {
                        Ok(()) => {}
                        Err(TrySendError::Full(job) | TrySendError::Disconnected(job)) => {
                            reject(job.conn, 503, "busy: too many requests; retry shortly")
                        }
                    }
                }
            }
        }
        if fds[0].revents & libc::POLLNVAL != 0
            || crate::os::fds::id(listener.inner.as_raw_fd()) != own
        {
            // The program closed our descriptor (daemons close them all):
            // the number may be the program's own by now, so never touch
            // or close it again.
            FDS[listener.slot].store(-1, Ordering::Release);
            std::mem::forget(listener);
            say("heapprof: the program closed the /debug/pprof/ listening socket (HEAPPROF_HTTP); serving stopped");
            return;
        }
        if fds[0].revents != 0 {
            accept_all(&listener.inner, &mut pending);
        }
    }
    // Dropping `tx` ends the workers once the queue is empty; dropping the
    // listener frees the port.
}

fn accept_all(listener: &TcpListener, pending: &mut Vec<Pending>) {
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                let stream = crate::os::fds::high(stream);
                if stream.set_nonblocking(true).is_err() {
                    continue;
                }
                let _ = stream.set_nodelay(true);
                if pending.len() >= MAX_PENDING {
                    // The oldest pending head is the likeliest to be idle.
                    let oldest = (0..pending.len()).min_by_key(|&i| pending[i].since);
                    if let Some(i) = oldest {
                        pending.remove(i);
                    }
                }
                if let Some(conn) = Tracked::new(stream) {
                    pending.push(Pending {
                        conn,
                        head: Vec::new(),
                        since: Instant::now(),
                    });
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            // Out of descriptors (EMFILE) or a connection gone before it
            // was accepted: the listener stays readable, so pause rather
            // than spin, then try again.
            Err(_) => {
                std::thread::sleep(Duration::from_millis(50));
                return;
            }
        }
    }
}

enum HeadState {
    More,
    Closed,
    Bad(u16, &'static str),
    Done(Request),
}

fn read_head(p: &mut Pending) -> HeadState {
    let mut buf = [0u8; 4096];
    loop {
        let room = MAX_HEAD - p.head.len();
        let want = room.min(buf.len());
        match (&p.conn.inner).read(&mut buf[..want]) {
            Ok(0) => return HeadState::Closed,
            Ok(n) => p.head.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return HeadState::Closed,
        }
        if p.head.len() >= MAX_HEAD {
            break;
        }
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(&p.head) {
        Ok(httparse::Status::Complete(_)) => HeadState::Done(Request {
            method: req.method.unwrap_or("").to_owned(),
            target: req.path.unwrap_or("").to_owned(),
        }),
        Ok(httparse::Status::Partial) if p.head.len() >= MAX_HEAD => {
            HeadState::Bad(431, "request head too large")
        }
        Ok(httparse::Status::Partial) => HeadState::More,
        Err(httparse::Error::TooManyHeaders) => HeadState::Bad(431, "too many headers"),
        Err(_) => HeadState::Bad(400, "malformed request"),
    }
}

/// Answers `status` without waiting for a slow reader, then closes.
fn reject(conn: Tracked<TcpStream>, status: u16, why: &str) {
    let bytes = Response::error(status, why).to_bytes(false);
    let _ = (&conn.inner).write(&bytes);
    let _ = conn.inner.shutdown(Shutdown::Write);
}

// ---- Workers ----------------------------------------------------------------

fn worker(rx: Arc<Mutex<Receiver<Job>>>, server: Arc<Server>) {
    let _own = own_thread();
    thread_state::current().enter_forever();
    loop {
        let job = {
            let rx = rx.lock().unwrap_or_else(|e| e.into_inner());
            rx.recv_timeout(crate::control::history::PERIOD / 4)
        };
        let job = match job {
            Ok(job) => job,
            Err(RecvTimeoutError::Timeout) => {
                periodic_profile(&server);
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => return,
        };
        // Under a steady stream of requests (a scraper) no wait times out.
        periodic_profile(&server);
        let response = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            routes::respond(&job.request, &server)
        }))
        .unwrap_or_else(|_| Response::error(500, "internal error while computing the profile"));
        send(&job.conn.inner, &response, job.request.method == "HEAD");
    }
}

/// An idle worker's turn: a profile for `/debug/pprof/report`'s history
/// when none was taken or written for
/// [`crate::control::history::PERIOD`]. Never waits for another
/// computation.
fn periodic_profile(server: &Server) {
    use crate::control::history;
    // Looked at a few times per period, not per request.
    static NEXT_LOOK: AtomicI64 = AtomicI64::new(0);
    let now = history::now_nanos();
    let next = NEXT_LOOK.load(Ordering::Relaxed);
    let step = (history::PERIOD / 4).as_nanos() as i64;
    if now < next
        || NEXT_LOOK
            .compare_exchange(next, now + step, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        || !history::due(now, history::PERIOD)
    {
        return;
    }
    let Ok(_turn) = server.computing.try_lock() else {
        return;
    };
    let p = crate::profile::dump::profile();
    if p.time_nanos != 0 {
        crate::profile::dump::count_dump(crate::profile::dump::Trigger::History);
        history::record(&p, "history");
    }
}

fn send(stream: &TcpStream, response: &Response, head_only: bool) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let bytes = response.to_bytes(head_only);
    let deadline = Instant::now() + WRITE_DEADLINE;
    let mut w = stream;
    for chunk in bytes.chunks(64 * 1024) {
        if Instant::now() > deadline || w.write_all(chunk).is_err() {
            return;
        }
    }
    let _ = stream.shutdown(Shutdown::Write);
    // Read what the client may still send until it closes, briefly, so
    // closing with unread bytes does not reset the connection before the
    // client has read the answer.
    let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
    let mut sink = [0u8; 1024];
    let mut r = stream;
    for _ in 0..64 {
        match r.read(&mut sink) {
            Ok(n) if n > 0 => continue,
            _ => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(addr: SocketAddr, target: &str) -> io::Result<String> {
        let mut s = TcpStream::connect(addr)?;
        s.set_read_timeout(Some(Duration::from_secs(20)))?;
        s.write_all(format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())?;
        let mut reply = Vec::new();
        s.read_to_end(&mut reply)?;
        let line = String::from_utf8_lossy(&reply)
            .lines()
            .next()
            .unwrap_or("")
            .to_owned();
        Ok(line)
    }

    #[test]
    fn starts_stops_and_rebinds_the_same_port() {
        let mut c = Control::new();
        c.ensure(Some("127.0.0.1:0".parse().unwrap()));
        let addr = c.local_addr().expect("serving");
        assert_eq!(
            status(addr, "/debug/pprof/heap").unwrap(),
            "HTTP/1.1 200 OK"
        );
        // Unchanged: nothing happens.
        c.ensure(Some("127.0.0.1:0".parse().unwrap()));
        assert_eq!(c.local_addr(), Some(addr));
        c.ensure(None);
        assert_eq!(c.local_addr(), None);
        assert!(status(addr, "/debug/pprof/heap").is_err(), "stopped");
        // The port is free again at once.
        c.ensure(Some(addr));
        assert_eq!(c.local_addr(), Some(addr));
        assert_eq!(status(addr, "/nope").unwrap(), "HTTP/1.1 404 Not Found");
        // A port in use: no server, and the failure is not retried.
        let mut other = Control::new();
        other.ensure(Some(addr));
        assert_eq!(other.local_addr(), None);
        c.ensure(None);
    }

    #[test]
    fn a_listener_closed_by_the_program_is_left_alone() {
        let mut c = Control::new();
        c.ensure(Some("127.0.0.1:0".parse().unwrap()));
        let addr = c.local_addr().unwrap();
        let fd = FDS
            .iter()
            .map(|s| s.load(Ordering::Acquire))
            .find(|&fd| {
                fd >= 0 && {
                    // SAFETY: borrowing a listed descriptor only to read its
                    // address; ManuallyDrop keeps it open.
                    let l = std::mem::ManuallyDrop::new(unsafe {
                        <TcpListener as std::os::fd::FromRawFd>::from_raw_fd(fd)
                    });
                    l.local_addr().ok() == Some(addr)
                }
            })
            .expect("the listener is listed");
        // The program closes it, as a daemon closing every descriptor does,
        // and the number is reused for a file of its own.
        // SAFETY: closing the server's listener behind its back on purpose.
        unsafe { libc::close(fd) };
        let file = std::fs::File::open("/proc/self/status").unwrap();
        std::thread::sleep(Duration::from_millis(3 * POLL_MS as u64));
        assert!(TcpStream::connect(addr).is_err(), "no longer listening");
        let mut text = String::new();
        (&file).read_to_string(&mut text).unwrap();
        assert!(
            text.contains("Pid:"),
            "the program's file stays open and intact"
        );
    }
}

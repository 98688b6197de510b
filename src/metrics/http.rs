//! The metrics listener: `/metrics`, `/health/live`, `/health/ready`, the dashboard (`/`) and its
//! data (`/history`), over plain HTTP/1.1 on threads of its own, off the shards.
//!
//! Requests are parsed by `httparse` (hyper's parser); each connection carries one request and is
//! closed. Each connection gets a thread, up to `CONNECTIONS_MAX` at once, with a deadline for its
//! whole request head and one for its whole response; one connection more is answered by the accept
//! thread itself after a short read: `/health/live` still 200, anything else 503. So clients that
//! connect and send nothing, or trickle, hold a bounded number of threads for a bounded time, and a
//! liveness probe is answered whatever they do. Scrapes within `SCRAPE_REUSE` of one another share
//! one gather: clients scraping in a loop cost the shards one job each per `SCRAPE_REUSE`.

use super::exposition::{self, Format};
use super::history::{History, TICK};
use super::snapshot::Scrape;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Connections served at once.
const CONNECTIONS_MAX: usize = 16;
/// A request's whole head must arrive within this; a whole response must be taken within the next.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the accept thread waits for the head of a connection over `CONNECTIONS_MAX`.
const OVERFLOW_READ: Duration = Duration::from_millis(100);
const SCRAPE_REUSE: Duration = Duration::from_secs(1);
/// The dashboard's points are gathered for this long after it last asked for them.
const WATCHED_FOR: Duration = Duration::from_secs(60);
/// A request's head (request line and headers) may not be longer.
const HEAD_BYTES_MAX: usize = 8 << 10;
const HEADERS_MAX: usize = 32;

/// Where the figures come from: the broker's shards.
pub trait Source: Send + Sync + 'static {
    /// Everything now; with `detail`, partitions and groups one by one too.
    fn gather(&self, detail: bool) -> Scrape;
    /// `Ok` when every shard has recovered and serves clients; else why not.
    fn ready(&self) -> Result<(), String>;
}

/// The bound listener, not serving yet: binding first lets a taken port fail start-up at once.
pub struct Listener(TcpListener);

impl Listener {
    pub fn bind(addr: &str) -> std::io::Result<Listener> {
        TcpListener::bind(addr).map(Listener)
    }

    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.0.local_addr()
    }

    /// Serves from threads of its own until the process ends.
    pub fn serve(self, source: Arc<dyn Source>) -> std::io::Result<()> {
        let history = Arc::new(Mutex::new(History::default()));
        let watched = Arc::new(AtomicU64::new(0));
        {
            let (source, history, watched) = (source.clone(), history.clone(), watched.clone());
            std::thread::Builder::new().name("weir-metrics-tick".into()).spawn(move || loop {
                std::thread::sleep(TICK);
                // Points only while a dashboard asked for them lately: no gather when nobody looks.
                if (unix_ms() as u64).saturating_sub(watched.load(Ordering::Relaxed)) > WATCHED_FOR.as_millis() as u64 {
                    continue;
                }
                let scrape = source.gather(false);
                lock(&history).update(&scrape, unix_ms());
            })?;
        }
        let listener = self.0;
        let open = Arc::new(AtomicUsize::new(0));
        let scrapes: Arc<Shared> = Arc::default();
        std::thread::Builder::new().name("weir-metrics".into()).spawn(move || {
            for stream in listener.incoming() {
                let stream = match stream {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "metrics listener: accept failed");
                        std::thread::sleep(Duration::from_millis(100));
                        continue;
                    }
                };
                if open.fetch_add(1, Ordering::SeqCst) >= CONNECTIONS_MAX {
                    open.fetch_sub(1, Ordering::SeqCst);
                    answer_overflow(stream);
                    continue;
                }
                let (source, history, scrapes, watched, done) =
                    (source.clone(), history.clone(), scrapes.clone(), watched.clone(), open.clone());
                let spawned = std::thread::Builder::new().name("weir-metrics-conn".into()).spawn(move || {
                    if let Err(e) = serve_one(stream, &*source, &history, &scrapes, &watched) {
                        tracing::debug!(error = %e, "metrics request failed");
                    }
                    done.fetch_sub(1, Ordering::SeqCst);
                });
                if let Err(e) = spawned {
                    open.fetch_sub(1, Ordering::SeqCst);
                    tracing::warn!(error = %e, "metrics listener: cannot start a thread");
                }
            }
        })?;
        Ok(())
    }
}

fn lock(history: &Mutex<History>) -> std::sync::MutexGuard<'_, History> {
    history.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis() as i64
}

struct Response {
    status: &'static str,
    content_type: &'static str,
    body: String,
}

fn text(status: &'static str, body: impl Into<String>) -> Response {
    Response { status, content_type: "text/plain; charset=utf-8", body: body.into() }
}

/// A connection over the limit: answered from the accept thread after one short read, so that a
/// liveness probe gets its 200 while the connection threads are all taken.
fn answer_overflow(mut stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(OVERFLOW_READ));
    let _ = stream.set_write_timeout(Some(OVERFLOW_READ));
    let mut buf = [0u8; 1024];
    let n = stream.read(&mut buf).unwrap_or(0);
    let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
    let mut req = httparse::Request::new(&mut headers);
    let live = req.parse(&buf[..n]).is_ok() && req.path.is_some_and(|p| p.split('?').next() == Some("/health/live"));
    let response = if live { text("200 OK", "live\n") } else { text("503 Service Unavailable", "too many connections\n") };
    let _ = respond(&mut stream, response, false, Instant::now() + OVERFLOW_READ);
}

/// What is left of `deadline`, or a timeout error.
fn left(deadline: Instant) -> std::io::Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "metrics connection deadline"));
    }
    Ok(left)
}

/// The last gather, and when it was made.
type Shared = Mutex<Option<(Instant, Arc<Scrape>)>>;

/// A gather shared by the scrapes within `SCRAPE_REUSE` of it (the lock held while gathering, so
/// that concurrent scrapes wait for one gather instead of making their own).
fn gathered(source: &dyn Source, scrapes: &Shared) -> Arc<Scrape> {
    let mut cached = scrapes.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some((at, scrape)) = &*cached {
        if at.elapsed() < SCRAPE_REUSE {
            return scrape.clone();
        }
    }
    let scrape = Arc::new(source.gather(true));
    *cached = Some((Instant::now(), scrape.clone()));
    scrape
}

fn serve_one(
    mut stream: TcpStream,
    source: &dyn Source,
    history: &Mutex<History>,
    scrapes: &Shared,
    watched: &AtomicU64,
) -> std::io::Result<()> {
    let head_by = Instant::now() + READ_TIMEOUT;
    let mut buf = vec![0u8; HEAD_BYTES_MAX];
    let mut filled = 0;
    let (method, path, accept) = loop {
        stream.set_read_timeout(Some(left(head_by)?))?;
        let n = stream.read(&mut buf[filled..])?;
        if n == 0 {
            return Ok(());
        }
        filled += n;
        let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf[..filled]) {
            Ok(httparse::Status::Complete(_)) => {
                let accept = req
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("accept"))
                    .map(|h| String::from_utf8_lossy(h.value).into_owned());
                break (req.method.unwrap_or("").to_string(), req.path.unwrap_or("/").to_string(), accept);
            }
            Ok(httparse::Status::Partial) if filled < buf.len() => continue,
            Ok(httparse::Status::Partial) => {
                return respond(&mut stream, text("431 Request Header Fields Too Large", "request head too large\n"), false, write_by());
            }
            Err(_) => return respond(&mut stream, text("400 Bad Request", "bad request\n"), false, write_by()),
        }
    };
    let head_only = method == "HEAD";
    if method != "GET" && !head_only {
        return respond(&mut stream, text("405 Method Not Allowed", "GET or HEAD only\n"), false, write_by());
    }
    let route = path.split('?').next().unwrap_or("");
    let response = match route {
        "/metrics" => {
            let format = Format::from_accept(accept.as_deref());
            let scrape = gathered(source, scrapes);
            let recorded = scrape.recorded();
            let window = lock(history).window(&recorded);
            Response { status: "200 OK", content_type: format.content_type(), body: exposition::encode(scrape, recorded, window, format) }
        }
        "/health/live" => text("200 OK", "live\n"),
        "/health/ready" => match source.ready() {
            Ok(()) => text("200 OK", "ready\n"),
            Err(why) => text("503 Service Unavailable", format!("not ready: {why}\n")),
        },
        "/" | "/dashboard" => {
            watched.store(unix_ms() as u64, Ordering::Relaxed);
            Response { status: "200 OK", content_type: "text/html; charset=utf-8", body: super::DASHBOARD.to_string() }
        }
        "/history" => {
            watched.store(unix_ms() as u64, Ordering::Relaxed);
            Response { status: "200 OK", content_type: "application/json", body: lock(history).points_json() }
        }
        _ => text("404 Not Found", "not found: try /metrics, /health/live, /health/ready or /\n"),
    };
    respond(&mut stream, response, head_only, write_by())
}

fn write_by() -> Instant {
    Instant::now() + WRITE_TIMEOUT
}

/// Writes `r`, all of it by `deadline`.
fn respond(stream: &mut TcpStream, r: Response, head_only: bool, deadline: Instant) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        r.status,
        r.content_type,
        r.body.len()
    );
    let body = if head_only { &[][..] } else { r.body.as_bytes() };
    for chunk in head.as_bytes().chunks(64 << 10).chain(body.chunks(64 << 10)) {
        stream.set_write_timeout(Some(left(deadline)?))?;
        stream.write_all(chunk)?;
    }
    stream.flush()
}

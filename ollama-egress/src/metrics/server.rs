//! A deliberately small HTTP/1.x server for `/metrics`.
//!
//! One request per connection, answered with `Connection: close`. The request head is read with
//! a size limit ([`HEAD_LIMIT`]) and a deadline ([`IO_TIMEOUT`]); the body of a request, if
//! any, is ignored; a connection lives at most [`CONNECTION_TIMEOUT`]. At most
//! [`MAX_CONNECTIONS`] connections are open at once: a new one closes the oldest that has
//! nothing in flight (see [`serve`]), so idle clients cannot starve scrapes. `GET /metrics` (and `HEAD`) answer with the registry,
//! `GET /` with a pointer to `/metrics`, anything else with 404 (or 405 for other methods).

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    sync::{Notify, watch},
    task::AbortHandle,
};
use tracing::{debug, warn};

use super::{CONTENT_TYPE, Metrics, MetricsError};

/// The default metrics address (`run --metrics-addr`).
pub use crate::defaults::METRICS_ADDR as DEFAULT_ADDR;

/// Largest request head read; a longer one is answered with 431.
pub const HEAD_LIMIT: usize = 8 * 1024;

/// Deadline for reading the request head and for writing the response, from the accept.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest a connection is kept open at all, whatever it does (the scrape included).
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(15);

/// How long a connection is kept after the response to let the client close first.
const LINGER: Duration = Duration::from_secs(1);

/// Most bytes read and thrown away while lingering.
const LINGER_BYTES: usize = 64 * 1024;

/// Connections served at the same time.
pub const MAX_CONNECTIONS: usize = 16;

/// Checks that `addr` is a loopback address, unless `allow_remote` (`--metrics-allow-remote`).
///
/// The endpoint tells whoever reads it which countries Ollama talks to and what is blocked:
/// by default it is not exposed beyond the machine. IPv4-mapped loopback (`::ffff:127.0.0.1`)
/// counts as loopback; the unspecified addresses (`0.0.0.0`, `::`) do not.
pub fn check_bind_address(addr: SocketAddr, allow_remote: bool) -> Result<(), MetricsError> {
    if allow_remote || addr.ip().to_canonical().is_loopback() {
        Ok(())
    } else {
        Err(MetricsError::NotLoopback { addr })
    }
}

/// Checks `addr` with [`check_bind_address`] and binds a listener there.
pub async fn bind(addr: SocketAddr, allow_remote: bool) -> Result<TcpListener, MetricsError> {
    check_bind_address(addr, allow_remote)?;
    TcpListener::bind(addr)
        .await
        .map_err(|source| MetricsError::Bind { addr, source })
}

/// The connections being served, oldest first, shared between the accept loop and the
/// connection tasks.
#[derive(Default)]
struct Connections {
    next_id: u64,
    by_age: BTreeMap<u64, Conn>,
}

struct Conn {
    /// True while the request head is being read and after the response was sent: the
    /// connection has nothing in flight and may be closed to make room.
    evictable: Arc<AtomicBool>,
    task: AbortHandle,
}

type Shared = Arc<Mutex<Connections>>;

fn lock(conns: &Shared) -> MutexGuard<'_, Connections> {
    // The map stays consistent under a panic (single insert/remove calls).
    conns.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Removes a connection from [`Connections`] when its task ends or is aborted.
struct Registration {
    conns: Shared,
    id: u64,
    freed: Arc<Notify>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        lock(&self.conns).by_age.remove(&self.id);
        self.freed.notify_one();
    }
}

/// Makes room for one more connection: `true` when there is a free slot (after closing the
/// oldest connection that has nothing in flight, if all slots were taken).
fn make_room(conns: &Shared) -> bool {
    let mut c = lock(conns);
    if c.by_age.len() < MAX_CONNECTIONS {
        return true;
    }
    let victim = c
        .by_age
        .iter()
        .find(|(_, conn)| conn.evictable.load(Ordering::Acquire))
        .map(|(id, _)| *id);
    let Some(id) = victim else {
        return false;
    };
    let conn = c.by_age.remove(&id);
    drop(c);
    if let Some(conn) = conn {
        conn.task.abort();
        debug!("closed the oldest idle metrics connection to serve a new one");
    }
    true
}

/// Serves `metrics` on `listener` until `shutdown` turns `true` (or its sender is dropped).
///
/// `refresh` runs before each scrape, on a blocking thread: use it to read a fresh kernel
/// snapshot into [`Metrics::set_kernel`]. Errors of single connections are logged at debug
/// level and never end the server; the result is an error only if accepting fails for good.
///
/// Connections are always accepted. When [`MAX_CONNECTIONS`] are open, the oldest one that
/// has nothing in flight (still waiting for its request head, or lingering after its
/// response) is closed to make room, so idle or slow clients cannot starve scrapes; only
/// when every slot is rendering or writing a response does a new connection wait for one.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    refresh: impl Fn() + Send + Sync + 'static,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let refresh: Arc<dyn Fn() + Send + Sync> = Arc::new(refresh);
    let conns: Shared = Arc::default();
    let freed = Arc::new(Notify::new());
    loop {
        if *shutdown.borrow_and_update() {
            return Ok(());
        }
        let accepted = tokio::select! {
            a = listener.accept() => a,
            r = shutdown.changed() => {
                if r.is_err() { return Ok(()); }
                continue;
            }
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) if transient(&e) => {
                // Out of file descriptors or an aborted handshake: back off, keep serving.
                warn!(error = %e, "accepting a metrics connection failed; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        while !make_room(&conns) {
            // Every slot has a response in flight; each is bounded by IO_TIMEOUT.
            tokio::select! {
                () = freed.notified() => {}
                r = shutdown.changed() => {
                    if r.is_err() || *shutdown.borrow() { return Ok(()); }
                }
            }
        }
        let evictable = Arc::new(AtomicBool::new(true));
        let mut c = lock(&conns);
        let id = c.next_id;
        c.next_id += 1;
        let registration = Registration {
            conns: Arc::clone(&conns),
            id,
            freed: Arc::clone(&freed),
        };
        let metrics = Arc::clone(&metrics);
        let refresh = Arc::clone(&refresh);
        let flag = Arc::clone(&evictable);
        // The task cannot unregister before it is registered: its `Registration` takes the
        // lock held here.
        let task = tokio::spawn(async move {
            let _registration = registration;
            match tokio::time::timeout(CONNECTION_TIMEOUT, handle(stream, metrics, refresh, flag))
                .await
            {
                Ok(Ok(())) => {}
                Ok(Err(e)) => debug!(%peer, error = %e, "metrics connection failed"),
                Err(_) => debug!(%peer, "metrics connection closed after {CONNECTION_TIMEOUT:?}"),
            }
        });
        c.by_age.insert(
            id,
            Conn {
                evictable,
                task: task.abort_handle(),
            },
        );
    }
}

/// Accept errors after which the listener still works.
fn transient(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | Interrupted | WouldBlock | TimedOut
    ) || matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM | libc::EPROTO)
    )
}

/// What a request head asked for.
#[derive(Debug, PartialEq, Eq)]
enum Request {
    /// `GET` or `HEAD` (`head` = true) of a path (query string removed).
    Get { path: String, head: bool },
    /// Another method.
    Method,
    /// Not an HTTP/1.x request line.
    Bad,
}

fn parse_request_line(head: &[u8]) -> Request {
    let line_end = head
        .windows(2)
        .position(|w| w == b"\r\n")
        .unwrap_or(head.len());
    let Ok(line) = std::str::from_utf8(&head[..line_end]) else {
        return Request::Bad;
    };
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Request::Bad;
    };
    if !version.starts_with("HTTP/1.") || !target.starts_with('/') {
        return Request::Bad;
    }
    let path = target.split(['?', '#']).next().unwrap_or("/").to_owned();
    match method {
        "GET" => Request::Get { path, head: false },
        "HEAD" => Request::Get { path, head: true },
        _ => Request::Method,
    }
}

/// Reads up to the end of the request head. `Ok(None)` means the head was too large.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let scan_from = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk[..n]);
        if buf[scan_from..].windows(4).any(|w| w == b"\r\n\r\n")
            || buf[scan_from..].windows(2).any(|w| w == b"\n\n")
        {
            return Ok(Some(buf));
        }
        if buf.len() > HEAD_LIMIT {
            return Ok(None);
        }
    }
}

async fn handle(
    mut stream: TcpStream,
    metrics: Arc<Metrics>,
    refresh: Arc<dyn Fn() + Send + Sync>,
    evictable: Arc<AtomicBool>,
) -> std::io::Result<()> {
    let deadline = Instant::now() + IO_TIMEOUT;
    let head = tokio::time::timeout_at(deadline.into(), read_head(&mut stream))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    evictable.store(false, Ordering::Release);
    let (status, content_type, body, head_only) = match head.as_deref().map(parse_request_line) {
        None => (
            "431 Request Header Fields Too Large",
            "text/plain",
            "request head too large\n".to_owned(),
            false,
        ),
        Some(Request::Bad) => (
            "400 Bad Request",
            "text/plain",
            "bad request\n".to_owned(),
            false,
        ),
        Some(Request::Method) => (
            "405 Method Not Allowed",
            "text/plain",
            "only GET and HEAD\n".to_owned(),
            false,
        ),
        Some(Request::Get { path, head }) => match path.as_str() {
            "/metrics" => match scrape(metrics, refresh).await {
                Ok(text) => ("200 OK", CONTENT_TYPE, text, head),
                Err(e) => {
                    warn!(error = %e, "rendering metrics failed");
                    (
                        "500 Internal Server Error",
                        "text/plain",
                        format!("{e}\n"),
                        head,
                    )
                }
            },
            "/" => (
                "200 OK",
                "text/plain; charset=utf-8",
                "ollama-egress: Prometheus metrics are at /metrics\n".to_owned(),
                head,
            ),
            _ => (
                "404 Not Found",
                "text/plain",
                "not found\n".to_owned(),
                head,
            ),
        },
    };
    let mut response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if status.starts_with("405") {
        response.push_str("Allow: GET, HEAD\r\n");
    }
    response.push_str("\r\n");
    if !head_only {
        response.push_str(&body);
    }
    tokio::time::timeout_at(deadline.into(), async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await
    })
    .await
    .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    evictable.store(true, Ordering::Release);
    linger(&mut stream).await;
    Ok(())
}

/// After our FIN, reads what the client still sends (the rest of an oversized head, a body)
/// until it closes, for at most [`LINGER`] and [`LINGER_BYTES`]: closing a socket with unread
/// data makes the kernel send RST, which can destroy the response before the client reads it.
async fn linger(stream: &mut TcpStream) {
    let mut sink = [0u8; 4096];
    let mut left = LINGER_BYTES;
    let _ = tokio::time::timeout(LINGER, async {
        while left > 0 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    })
    .await;
}

/// Runs `refresh` and renders, off the async threads (reading kernel maps is a syscall per
/// entry and CPU).
async fn scrape(
    metrics: Arc<Metrics>,
    refresh: Arc<dyn Fn() + Send + Sync>,
) -> Result<String, String> {
    tokio::task::spawn_blocking(move || {
        refresh();
        metrics.render().map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| format!("the metrics refresh failed: {e}"))?
}

#[cfg(test)]
mod tests;

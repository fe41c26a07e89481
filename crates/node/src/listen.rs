//! The HTTP listener of every server: the README runs `picloud serve` with no proxy in front, so
//! the limits that protect it from a greedy or hostile client live here, not only in Caddy.
//!
//! - **Connections**: at most [`ListenConfig::max_connections`] open, and at most
//!   [`ListenConfig::max_connections_per_client`] from one client address (an IPv6 client by its
//!   /64). A connection past either is answered `503` with `Retry-After` and closed at once.
//! - **Time**: a request's head must arrive within the header-read timeout of its first byte; a
//!   connection with nothing to do (no request in progress, no byte arriving) is closed after the
//!   idle timeout, and so is one whose answer the client stops reading for that long; a body must
//!   arrive whole within the body-read timeout of its head (past it: `408`).
//! - **Memory**: the bodies being received at once are bounded in bytes (their declared length,
//!   or the largest body for a chunked one); past the budget a request is answered `503` with
//!   `Retry-After` before a byte of its body is read. Heads are bounded by hyper's read buffer.
//!
//! Every limit has a flag ([`ListenArgs`]); docs/operations.md lists them with what a client
//! sees.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, Request, Response, header};
use axum::response::IntoResponse;
use clap::Args;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use picloud_edge::{ApiError, BodyTimedOut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tower::ServiceExt;

/// Largest request head (request line and headers) a connection may send; past it hyper answers
/// `431`. Bounded so that a flood of slow heads holds little memory per connection.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// What the listener allows each client; see the module's documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenConfig {
    /// Default 10 s.
    pub header_read_timeout: Duration,
    /// Default 30 s.
    pub body_read_timeout: Duration,
    /// Default 60 s.
    pub idle_timeout: Duration,
    /// Default 1,024 (and never more than half the process's descriptor limit).
    pub max_connections: usize,
    /// Default 256: room for a proxy's pool in front, a cap on one direct client.
    pub max_connections_per_client: usize,
    /// Default 64 MiB.
    pub max_bodies_in_flight: u64,
    /// What a chunked body (no declared length) reserves of the budget: the largest body any
    /// route accepts. Default 1 MiB.
    pub chunked_body_reserve: u64,
}

impl Default for ListenConfig {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 1024,
            max_connections_per_client: 256,
            max_bodies_in_flight: 64 << 20,
            chunked_body_reserve: 1 << 20,
        }
    }
}

/// The listener's limits as flags (each also a `PICLOUD_*` variable).
#[derive(Debug, Clone, Args)]
pub struct ListenArgs {
    /// Seconds a client has to send a request's head from its first byte (then the connection
    /// is closed).
    #[arg(long, env = "PICLOUD_HEADER_READ_TIMEOUT", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub header_read_timeout: u64,
    /// Seconds a client has to send a request's whole body from the end of its head (then
    /// `408`).
    #[arg(long, env = "PICLOUD_BODY_READ_TIMEOUT", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub body_read_timeout: u64,
    /// Seconds a connection may sit with no request in progress, or with its answer unread,
    /// before it is closed.
    #[arg(long, env = "PICLOUD_IDLE_TIMEOUT", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_timeout: u64,
    /// Connections open at once (more: `503`, closed). At most half the descriptor limit.
    #[arg(long, env = "PICLOUD_MAX_CONNECTIONS", default_value_t = 1024,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: u64,
    /// Connections open at once from one client address, an IPv6 one by its /64 (more: `503`,
    /// closed). Behind a proxy the proxy is one client: raise it to the proxy's pool.
    #[arg(long, env = "PICLOUD_MAX_CONNECTIONS_PER_CLIENT", default_value_t = 256,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections_per_client: u64,
    /// Bytes of request bodies being received at once, by their declared length (a chunked
    /// body counts as the largest allowed); past it `503` with `Retry-After`.
    #[arg(long, env = "PICLOUD_MAX_BODIES_IN_FLIGHT", default_value_t = 64 << 20,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_bodies_in_flight: u64,
}

impl ListenArgs {
    /// The configuration; a chunked body reserves `largest_body` bytes of the budget.
    pub fn config(&self, largest_body: usize) -> ListenConfig {
        ListenConfig {
            header_read_timeout: Duration::from_secs(self.header_read_timeout),
            body_read_timeout: Duration::from_secs(self.body_read_timeout),
            idle_timeout: Duration::from_secs(self.idle_timeout),
            max_connections: usize::try_from(self.max_connections).unwrap_or(usize::MAX),
            max_connections_per_client: usize::try_from(self.max_connections_per_client)
                .unwrap_or(usize::MAX),
            max_bodies_in_flight: self.max_bodies_in_flight,
            chunked_body_reserve: largest_body as u64,
        }
    }
}

/// Raises the soft descriptor limit to the hard one (a server holds one per connection) and
/// answers how many connections it leaves room for: half of it, the rest for the database, the
/// executor's workers and files.
fn connection_room() -> usize {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) => {
            let limit = if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
                hard
            } else {
                soft
            };
            usize::try_from(limit / 2).unwrap_or(usize::MAX).max(16)
        }
        Err(_) => usize::MAX,
    }
}

/// Serves `app` on `listener` until `stop` ([`picloud_daemon::shutdown_signal`]), then lets the requests in progress finish
/// for up to `grace`. Answers whether they all finished.
pub async fn serve_until_signal(
    listener: TcpListener,
    app: Router,
    grace: Duration,
    config: &ListenConfig,
    stop: impl std::future::Future<Output = ()>,
) -> io::Result<bool> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let listener = Listener::new(listener, app, config);
    let open = Arc::clone(&listener.open);
    let serving = tokio::spawn(listener.run(stop_rx.clone()));
    stop.await;
    let _ = stop_tx.send(true);
    serving.abort();
    let drained = tokio::time::timeout(grace, open.drained()).await.is_ok();
    if !drained {
        tracing::warn!("the grace period ended with requests still running");
    }
    Ok(drained)
}

/// A bound listener with its limits; [`Listener::run`] accepts until told to stop.
pub struct Listener {
    tcp: TcpListener,
    app: Router,
    config: ListenConfig,
    open: Arc<Open>,
    bodies: Arc<Semaphore>,
    lingering: Arc<AtomicUsize>,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Listener {
    pub fn new(tcp: TcpListener, app: Router, config: &ListenConfig) -> Self {
        let mut config = config.clone();
        config.max_connections = config.max_connections.min(connection_room());
        let budget = usize::try_from(config.max_bodies_in_flight)
            .unwrap_or(usize::MAX)
            .min(Semaphore::MAX_PERMITS);
        Self {
            tcp,
            app,
            open: Arc::new(Open::default()),
            bodies: Arc::new(Semaphore::new(budget)),
            lingering: Arc::new(AtomicUsize::new(0)),
            config,
        }
    }

    /// Accepts connections until `stop` turns true; each then finishes its request in
    /// progress and closes.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let this = Arc::new(self);
        loop {
            let accepted = tokio::select! {
                accepted = this.tcp.accept() => accepted,
                _ = stop.wait_for(|stopped| *stopped) => return,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors (or a connection reset before it was accepted): wait
                    // a little rather than spin; the idle and header timeouts free descriptors.
                    if !matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
                    ) {
                        tracing::warn!(error = %e, "cannot accept a connection");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    continue;
                }
            };
            let Some(place) = this.open.enter(client_of(peer), &this.config) else {
                refuse_connection(stream, &this.lingering);
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(Arc::clone(&this).connection(stream, place, stop.clone()));
        }
    }

    async fn connection(
        self: Arc<Self>,
        stream: TcpStream,
        _place: Place,
        mut stop: watch::Receiver<bool>,
    ) {
        let clock = Arc::new(Clock::new());
        let io = TokioIo::new(Watched {
            inner: Some(stream),
            clock: Arc::clone(&clock),
            lingering: Arc::clone(&self.lingering),
        });
        let this = Arc::clone(&self);
        let service_clock = Arc::clone(&clock);
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            let this = Arc::clone(&this);
            let clock = Arc::clone(&service_clock);
            async move { Ok::<_, std::convert::Infallible>(this.answer(request, clock).await) }
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            // The clock below times heads, idleness and stalled writes.
            .header_read_timeout(None)
            .max_buf_size(MAX_HEAD_BYTES);
        let conn = builder.serve_connection(io, service);
        tokio::pin!(conn);
        let mut stopping = false;
        // The watchdog wakes at the connection's deadline, and at least every `step`: nothing a
        // request does moves a deadline earlier than that (a head starts at most `step` after
        // the watchdog last slept; a blocked write's deadline is `idle_timeout` away), so no
        // request has to wake it.
        let step = self
            .config
            .header_read_timeout
            .min(self.config.idle_timeout);
        loop {
            let now = Instant::now();
            let wake = clock
                .deadline(&self.config)
                .map_or(now + step, |d| d.min(now + step));
            tokio::select! {
                _ = conn.as_mut() => return,
                () = sleep_until(Some(wake)) => {
                    if clock.deadline(&self.config).is_some_and(|d| d <= Instant::now()) {
                        // Dropping the connection closes it.
                        return;
                    }
                }
                _ = stop.wait_for(|stopped| *stopped), if !stopping => {
                    stopping = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }

    /// One request: its body's budget and deadline, then the app.
    async fn answer(&self, request: Request<Incoming>, clock: Arc<Clock>) -> Response<Body> {
        let busy = Busy::new(Arc::clone(&clock));
        let reserve = body_reserve(&request, self.config.chunked_body_reserve);
        let permit = if reserve == 0 {
            None
        } else {
            let wanted =
                u32::try_from(reserve.min(self.config.max_bodies_in_flight)).unwrap_or(u32::MAX);
            match Arc::clone(&self.bodies).try_acquire_many_owned(wanted) {
                Ok(permit) => Some(permit),
                Err(_) => return overloaded("too many request bodies are being received"),
            }
        };
        let deadline = tokio::time::Instant::now() + self.config.body_read_timeout;
        let request = request.map(|body| {
            if body.is_end_stream() {
                // No body (a GET): nothing to time.
                Body::new(body)
            } else {
                Body::new(DeadlineBody::new(
                    body,
                    deadline,
                    self.config.body_read_timeout,
                ))
            }
        });
        let response = match self.app.clone().oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
        response.map(|body| {
            Body::new(Guarded {
                inner: body,
                _busy: busy,
                _permit: permit,
            })
        })
    }
}

/// Sleeps until `deadline`, or for ever.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}

/// What a body will hold of the budget: its declared length, or `chunked` for one without.
fn body_reserve(request: &Request<Incoming>, chunked: u64) -> u64 {
    match request.headers().get(header::CONTENT_LENGTH) {
        Some(length) => length
            .to_str()
            .ok()
            .and_then(|l| l.trim().parse::<u64>().ok())
            // An unreadable length is hyper's to refuse; reserve the most meanwhile.
            .unwrap_or(chunked),
        None if request.headers().contains_key(header::TRANSFER_ENCODING) => chunked,
        None => 0,
    }
}

/// `503` with `Retry-After`, in the API's error shape; the connection closes after it.
fn overloaded(why: &str) -> Response<Body> {
    let mut response = ApiError::Overloaded {
        message: format!("{why}; retry in a second"),
        retry_after: 1,
    }
    .into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Answers a connection past a cap without reading it, and closes it gently ([`linger`]).
fn refuse_connection(stream: TcpStream, lingering: &Arc<AtomicUsize>) {
    // The socket's buffer is empty: this never blocks, and a short write is not retried.
    let _ = stream.try_write(REFUSAL);
    linger(stream, lingering);
}

/// Closes a connection gently: its write side first, then what the client still sends is read
/// and dropped (at most [`MAX_LINGER_BYTES`]), so that an answer written before
/// the client finished sending (a 413, a 401 to a body never read) is not destroyed by the
/// reset a close with unread bytes sends. At most [`MAX_LINGERING`] at once, each for at most
/// [`LINGER`]; past that, closed.
fn linger(stream: TcpStream, lingering: &Arc<AtomicUsize>) {
    if lingering.fetch_add(1, Ordering::AcqRel) >= MAX_LINGERING {
        lingering.fetch_sub(1, Ordering::AcqRel);
        return;
    }
    let lingering = Arc::clone(lingering);
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = stream;
        let _ = stream.shutdown().await;
        let mut sink = [0u8; 8192];
        let mut left = MAX_LINGER_BYTES;
        let _ = tokio::time::timeout(LINGER, async {
            while let Ok(n) = stream.read(&mut sink).await {
                if n == 0 || n >= left {
                    break;
                }
                left -= n;
            }
        })
        .await;
        lingering.fetch_sub(1, Ordering::AcqRel);
    });
}

/// Connections being closed gently at once; past this they are closed at once.
const MAX_LINGERING: usize = 64;
/// What a connection being closed gently may still send, read and dropped.
const MAX_LINGER_BYTES: usize = 4 << 20;
/// How long it may take to send it (a loaded machine's client uploading a refused body).
const LINGER: Duration = Duration::from_secs(5);

/// What a connection past a cap is answered.
const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nretry-after: 1\r\n\
content-type: application/json\r\nconnection: close\r\ncontent-length: 83\r\n\r\n\
{\"error\":{\"kind\":\"overloaded\",\"message\":\"too many connections; retry in a second\"}}";

/// A client as the caps count it: its address, an IPv6 one by its /64 (one host has many).
fn client_of(peer: SocketAddr) -> IpAddr {
    match peer.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut segments = v6.segments();
                segments[4..].fill(0);
                IpAddr::V6(segments.into())
            }
        },
        v4 => v4,
    }
}

/// The connections open, in all and per client.
#[derive(Debug, Default)]
struct Open {
    per_client: Mutex<HashMap<IpAddr, usize>>,
    total: AtomicUsize,
    closed: Notify,
}

impl Open {
    fn enter(self: &Arc<Self>, client: IpAddr, config: &ListenConfig) -> Option<Place> {
        let mut per_client = self.per_client.lock().ok()?;
        if self.total.load(Ordering::Acquire) >= config.max_connections {
            return None;
        }
        let count = per_client.entry(client).or_insert(0);
        if *count >= config.max_connections_per_client {
            return None;
        }
        *count += 1;
        self.total.fetch_add(1, Ordering::AcqRel);
        Some(Place {
            open: Arc::clone(self),
            client,
        })
    }

    async fn drained(&self) {
        loop {
            let closed = self.closed.notified();
            if self.total.load(Ordering::Acquire) == 0 {
                return;
            }
            closed.await;
        }
    }
}

/// A connection's place in [`Open`], given back when it closes.
#[derive(Debug)]
struct Place {
    open: Arc<Open>,
    client: IpAddr,
}

impl Drop for Place {
    fn drop(&mut self) {
        if let Ok(mut per_client) = self.open.per_client.lock()
            && let Some(count) = per_client.get_mut(&self.client)
        {
            *count -= 1;
            if *count == 0 {
                per_client.remove(&self.client);
            }
        }
        self.open.total.fetch_sub(1, Ordering::AcqRel);
        self.open.closed.notify_waiters();
    }
}

/// When a connection last made progress, in milliseconds since it opened plus one (0: not
/// set), and whether a request is in the app: what its deadline is reckoned from.
#[derive(Debug)]
struct Clock {
    opened: Instant,
    /// Since when it has had nothing to do.
    idle_since: AtomicU64,
    /// When the first byte of the request head being read arrived.
    head_since: AtomicU64,
    /// Since when a write of the answer has been waiting for the client to read.
    write_blocked_since: AtomicU64,
    /// Requests in the app, or whose answer is being written.
    busy: AtomicUsize,
}

impl Clock {
    fn new() -> Self {
        Self {
            opened: Instant::now(),
            // A new connection's first head is due within the header timeout.
            idle_since: AtomicU64::new(0),
            head_since: AtomicU64::new(1),
            write_blocked_since: AtomicU64::new(0),
            busy: AtomicUsize::new(0),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1
    }

    fn at(&self, stamp: u64) -> Instant {
        self.opened + Duration::from_millis(stamp - 1)
    }

    /// When the connection is closed unless something happens first: a write blocked for the
    /// idle timeout; a head still incomplete after the header timeout; nothing to do for the
    /// idle timeout. A request in the app has no deadline here (its body has its own, and the
    /// function its timeout).
    fn deadline(&self, config: &ListenConfig) -> Option<Instant> {
        let blocked = self.write_blocked_since.load(Ordering::Acquire);
        if blocked != 0 {
            return Some(self.at(blocked) + config.idle_timeout);
        }
        if self.busy.load(Ordering::Acquire) > 0 {
            return None;
        }
        let head = self.head_since.load(Ordering::Acquire);
        if head != 0 {
            return Some(self.at(head) + config.header_read_timeout);
        }
        let idle = self.idle_since.load(Ordering::Acquire);
        (idle != 0).then(|| self.at(idle) + config.idle_timeout)
    }

    fn read(&self, bytes: usize) {
        if bytes > 0 && self.busy.load(Ordering::Acquire) == 0 {
            let _ = self.head_since.compare_exchange(
                0,
                self.now(),
                Ordering::AcqRel,
                Ordering::Acquire,
            );
        }
    }

    fn wrote(&self, blocked: bool) {
        let was = self.write_blocked_since.load(Ordering::Acquire);
        if blocked && was == 0 {
            self.write_blocked_since
                .store(self.now(), Ordering::Release);
        } else if !blocked && was != 0 {
            self.write_blocked_since.store(0, Ordering::Release);
        }
    }
}

/// A request in the app: the connection has no head nor idle deadline until it is dropped,
/// with the answer's body (or the request, if the connection went away first).
#[derive(Debug)]
struct Busy(Arc<Clock>);

impl Busy {
    fn new(clock: Arc<Clock>) -> Self {
        clock.busy.fetch_add(1, Ordering::AcqRel);
        clock.head_since.store(0, Ordering::Release);
        clock.idle_since.store(0, Ordering::Release);
        Self(clock)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        if self.0.busy.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle_since.store(self.0.now(), Ordering::Release);
        }
    }
}

/// The connection's socket, telling its [`Clock`] of each read and blocked write. Closed
/// gently ([`linger`]) unless the client closed it first.
struct Watched {
    inner: Option<TcpStream>,
    clock: Arc<Clock>,
    lingering: Arc<AtomicUsize>,
}

impl Watched {
    fn stream(&mut self) -> io::Result<&mut TcpStream> {
        self.inner
            .as_mut()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        let Some(stream) = self.inner.take() else {
            return;
        };
        // Asked of the socket itself: tokio's `try_read` answers from its cached readiness,
        // which says nothing of bytes hyper never polled for.
        let mut probe = [0u8; 1];
        // SAFETY: a non-blocking peek into a one-byte buffer this function owns, on a socket it
        // owns.
        let unread = unsafe {
            libc::recv(
                std::os::fd::AsRawFd::as_raw_fd(&stream),
                probe.as_mut_ptr().cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        // 0: the client closed its side, nothing more will come. Otherwise it sent bytes
        // nobody read, or may still be sending a body nobody will read.
        if unread != 0 {
            linger(stream, &self.lingering);
        }
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(self.stream()?).poll_read(cx, buf);
        if polled.is_ready() {
            self.clock.read(buf.filled().len() - before);
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(self.stream()?).poll_write(cx, buf);
        self.clock.wrote(polled.is_pending());
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(self.stream()?).poll_write_vectored(cx, bufs);
        self.clock.wrote(polled.is_pending());
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner
            .as_ref()
            .is_some_and(TcpStream::is_write_vectored)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.stream()?).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.stream()?).poll_shutdown(cx)
    }
}

/// A request body that must arrive whole by a deadline; past it, reading it fails with
/// [`BodyTimedOut`] (the endpoints answer `408`).
struct DeadlineBody {
    inner: Incoming,
    deadline: tokio::time::Instant,
    /// Made the first time the body is not there yet: a body that arrives at once arms no
    /// timer.
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    timeout: Duration,
    done: bool,
}

impl DeadlineBody {
    fn new(inner: Incoming, deadline: tokio::time::Instant, timeout: Duration) -> Self {
        Self {
            done: inner.is_end_stream(),
            inner,
            deadline,
            sleep: None,
            timeout,
        }
    }
}

impl HttpBody for DeadlineBody {
    type Data = bytes::Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        if self.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                if frame.is_none() || self.inner.is_end_stream() {
                    self.done = true;
                }
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let deadline = self.deadline;
                let sleep = self
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if sleep.as_mut().poll(cx).is_ready() {
                    self.done = true;
                    return Poll::Ready(Some(Err(BodyTimedOut(self.timeout.as_secs()).into())));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// An answer's body holding what its request took: the connection's busy mark and the
/// bodies' budget, until it is written (or dropped).
struct Guarded {
    inner: Body,
    _busy: Busy,
    _permit: Option<OwnedSemaphorePermit>,
}

impl HttpBody for Guarded {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_states_its_length() {
        let text = std::str::from_utf8(REFUSAL).expect("ascii");
        let (head, body) = text.split_once("\r\n\r\n").expect("a head and a body");
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        let parsed: serde_json::Value = serde_json::from_str(body).expect("JSON");
        assert_eq!(parsed["error"]["kind"], "overloaded");
    }

    #[test]
    fn an_ipv6_client_counts_by_its_64() {
        let a: SocketAddr = "[2001:db8:1:2:3:4:5:6]:1".parse().expect("address");
        let b: SocketAddr = "[2001:db8:1:2:ffff::1]:2".parse().expect("address");
        let c: SocketAddr = "[2001:db8:1:3::1]:2".parse().expect("address");
        assert_eq!(client_of(a), client_of(b));
        assert_ne!(client_of(a), client_of(c));
        let mapped: SocketAddr = "[::ffff:10.0.0.1]:3".parse().expect("address");
        assert_eq!(client_of(mapped), "10.0.0.1".parse::<IpAddr>().expect("ip"));
    }

    #[test]
    fn caps_count_in_all_and_per_client() {
        let config = ListenConfig {
            max_connections: 3,
            max_connections_per_client: 2,
            ..ListenConfig::default()
        };
        let open = Arc::new(Open::default());
        let a: IpAddr = "10.0.0.1".parse().expect("ip");
        let b: IpAddr = "10.0.0.2".parse().expect("ip");
        let a1 = open.enter(a, &config).expect("first of a");
        let _a2 = open.enter(a, &config).expect("second of a");
        assert!(open.enter(a, &config).is_none(), "a third of a");
        let _b1 = open.enter(b, &config).expect("first of b");
        assert!(open.enter(b, &config).is_none(), "a fourth in all");
        drop(a1);
        assert!(open.enter(a, &config).is_some(), "a's place came back");
    }

    #[test]
    fn a_clock_reckons_from_what_the_connection_is_doing() {
        let config = ListenConfig::default();
        let clock = Arc::new(Clock::new());
        let first = clock
            .deadline(&config)
            .expect("a new connection's first head is due");
        let busy = Busy::new(Arc::clone(&clock));
        assert_eq!(clock.deadline(&config), None, "a request in the app");
        clock.wrote(true);
        assert!(clock.deadline(&config).is_some(), "an answer nobody reads");
        clock.wrote(false);
        drop(busy);
        let idle = clock.deadline(&config).expect("idle after the answer");
        assert!(
            idle > first + (config.idle_timeout - config.header_read_timeout) / 2,
            "an idle connection has the idle timeout, longer than a head's"
        );
        clock.read(1);
        let head = clock.deadline(&config).expect("reading a head");
        assert!(
            head < idle,
            "a head started has less time than an idle connection"
        );
    }
}

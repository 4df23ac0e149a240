//! The admin HTTP server of a node: `/metrics` (Prometheus text exposition), `/health`,
//! `/status` and `/ranges` (JSON documents that the node computes on request).
//!
//! [`AdminServer::start`] binds a TCP address and serves HTTP/1.1 until
//! [`AdminServer::shutdown`]. What the node shows comes from an [`AdminSource`]; the metrics
//! come from the process-wide recorder that [`install_recorder`] installs.
//!
//! The server guards itself against slow or hostile clients: a client has
//! [`HEADER_READ_TIMEOUT`] to send a request's head (and as long to send the next one on a
//! kept-alive connection), request heads are capped at [`MAX_HEAD_BYTES`], at most
//! [`MAX_CONNECTIONS`] connections are served at once (one beyond is closed at once), and a
//! connection is closed after [`MAX_CONNECTION_AGE`] once its request in flight is answered.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::{AbortHandle, JoinHandle, JoinSet};

/// How long `/status` and `/ranges` may take to compute; beyond, the answer is 504.
pub const DOCUMENT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a client may take to send a request's head, or to start the next request on a
/// kept-alive connection; beyond, the connection is closed.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once at most; one beyond is closed as soon as it is accepted.
pub const MAX_CONNECTIONS: usize = 256;
/// A connection older than this is closed once its request in flight is answered.
pub const MAX_CONNECTION_AGE: Duration = Duration::from_secs(300);
/// How long requests in flight may go on after a shutdown (or a connection's end of life).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);
/// The largest request head (request line and headers) read from a client, in bytes. A
/// larger one is answered 431.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// How often the recorder's upkeep runs (it drains histogram samples between scrapes).
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);
/// How long the accept loop pauses after a failed accept (for example, out of descriptors).
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// The content type of the Prometheus text exposition format.
const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4";
const TEXT_CONTENT_TYPE: &str = "text/plain; charset=utf-8";
const JSON_CONTENT_TYPE: &str = "application/json";
/// The methods every endpoint accepts.
const ALLOWED_METHODS: &str = "GET, HEAD";

/// The body of `/`.
const INDEX: &str = "Tessera admin endpoints:\n\
    \x20 /metrics  metrics in the Prometheus text format\n\
    \x20 /health   200 \"ok\" when the node serves, else 503 with the reason\n\
    \x20 /status   the node's status (JSON)\n\
    \x20 /ranges   the node's ranges (JSON)\n";

/// A JSON document for one admin endpoint, computed on request.
pub type JsonFuture = Pin<Box<dyn Future<Output = Result<serde_json::Value, String>> + Send>>;

/// What a node shows on its admin endpoints.
pub trait AdminSource: Send + Sync + 'static {
    /// The document of `/status`.
    fn status(&self) -> JsonFuture;
    /// The document of `/ranges`.
    fn ranges(&self) -> JsonFuture;
    /// `Ok(())` when the node serves (`/health` answers 200 `ok`), else the reason (503 with
    /// the reason as the body).
    fn health(&self) -> Result<(), String>;
}

/// Installs the process-wide Prometheus recorder and returns a handle that renders the text
/// exposition.
///
/// Only the first call installs; later calls return the handle of the first (or its error).
/// The first call also starts a thread that runs the recorder's upkeep every few seconds, so
/// that histogram samples do not pile up between scrapes.
///
/// # Errors
///
/// Another recorder was installed in this process before the first call.
pub fn install_recorder() -> anyhow::Result<PrometheusHandle> {
    static RECORDER: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();
    RECORDER
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .install_recorder()
                .map_err(|error| format!("cannot install the Prometheus recorder: {error}"))?;
            spawn_upkeep(handle.clone());
            Ok(handle)
        })
        .clone()
        .map_err(anyhow::Error::msg)
}

/// Runs the recorder's upkeep every [`UPKEEP_INTERVAL`] for the life of the process.
fn spawn_upkeep(handle: PrometheusHandle) {
    let spawned = std::thread::Builder::new().name("metrics-upkeep".to_owned()).spawn(move || {
        loop {
            std::thread::sleep(UPKEEP_INTERVAL);
            handle.run_upkeep();
        }
    });
    if let Err(error) = spawned {
        tracing::warn!(%error, "cannot start the metrics upkeep thread; histograms are drained at scrapes only");
    }
}

/// The admin HTTP server of one node.
///
/// Dropping it without [`shutdown`](Self::shutdown) also stops it, without waiting.
#[derive(Debug)]
pub struct AdminServer {
    local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    accept_loop: JoinHandle<()>,
}

impl AdminServer {
    /// Binds `addr` (TCP; port 0 picks a free port) and serves until `shutdown`.
    ///
    /// # Errors
    ///
    /// The address cannot be bound; the message names it.
    pub async fn start(
        addr: SocketAddr,
        metrics: PrometheusHandle,
        source: Arc<dyn AdminSource>,
    ) -> anyhow::Result<AdminServer> {
        Self::start_with(addr, metrics, source, Limits::default()).await
    }

    async fn start_with(
        addr: SocketAddr,
        metrics: PrometheusHandle,
        source: Arc<dyn AdminSource>,
        limits: Limits,
    ) -> anyhow::Result<AdminServer> {
        let listener = TcpListener::bind(addr).await.map_err(|error| bind_error(addr, &error))?;
        let local_addr = listener
            .local_addr()
            .with_context(|| format!("cannot read the bound admin HTTP address {addr}"))?;
        let (stop, stopped) = watch::channel(false);
        let state = Arc::new(State { metrics, source, limits });
        let accept_loop = tokio::spawn(accept_loop(listener, state, stopped));
        tracing::info!(%local_addr, "admin HTTP server listening");
        Ok(AdminServer { local_addr, stop, accept_loop })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, lets requests in flight finish (at most [`SHUTDOWN_GRACE`]), returns.
    pub async fn shutdown(self) {
        self.stop.send_replace(true);
        if let Err(error) = self.accept_loop.await {
            tracing::error!(%error, "the admin HTTP server ended abnormally");
        }
        tracing::info!(local_addr = %self.local_addr, "admin HTTP server stopped");
    }
}

/// The error of a failed bind, naming the address.
fn bind_error(addr: SocketAddr, error: &io::Error) -> anyhow::Error {
    if error.kind() == io::ErrorKind::AddrInUse {
        anyhow!("admin HTTP address {addr} is in use")
    } else {
        anyhow!("cannot bind admin HTTP address {addr}: {error}")
    }
}

/// The server's limits; tests shorten them.
#[derive(Debug, Clone, Copy)]
struct Limits {
    document_timeout: Duration,
    header_read_timeout: Duration,
    max_connections: usize,
    max_connection_age: Duration,
    grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            document_timeout: DOCUMENT_TIMEOUT,
            header_read_timeout: HEADER_READ_TIMEOUT,
            max_connections: MAX_CONNECTIONS,
            max_connection_age: MAX_CONNECTION_AGE,
            grace: SHUTDOWN_GRACE,
        }
    }
}

/// What every connection of one server shares.
struct State {
    metrics: PrometheusHandle,
    source: Arc<dyn AdminSource>,
    limits: Limits,
}

/// Accepts connections until `stopped` turns true (or its sender is dropped), then gives the
/// connections [`Limits::grace`] to answer their requests in flight and aborts the rest.
async fn accept_loop(listener: TcpListener, state: Arc<State>, mut stopped: watch::Receiver<bool>) {
    let permits = Arc::new(Semaphore::new(state.limits.max_connections));
    let for_connections = stopped.clone();
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            () = stop_requested(&mut stopped) => break,
            Some(joined) = connections.join_next(), if !connections.is_empty() => {
                if let Err(error) = joined
                    && error.is_panic()
                {
                    tracing::error!(%error, "an admin HTTP connection panicked");
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
                        tracing::debug!(%peer, "admin HTTP: too many connections, closing this one");
                        drop(stream);
                        continue;
                    };
                    connections.spawn(serve_connection(
                        stream,
                        Arc::clone(&state),
                        for_connections.clone(),
                        permit,
                    ));
                }
                Err(error) => {
                    tracing::warn!(%error, "admin HTTP: accept failed");
                    tokio::time::sleep(ACCEPT_RETRY).await;
                }
            },
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(state.limits.grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::debug!(
            open = connections.len(),
            "admin HTTP: closing the connections still open after the grace period"
        );
        connections.shutdown().await;
    }
}

/// Returns when `stopped` turns true or its sender (the [`AdminServer`]) is dropped.
async fn stop_requested(stopped: &mut watch::Receiver<bool>) {
    // An error means the sender is gone: stop as well.
    let _ = stopped.wait_for(|stop| *stop).await;
}

/// Serves one connection until the client closes it, it fails, the server stops or it
/// reaches [`Limits::max_connection_age`]; the last two close it gracefully (the request in
/// flight is answered within [`Limits::grace`]).
async fn serve_connection(
    stream: TcpStream,
    state: Arc<State>,
    mut stopped: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
) {
    let limits = state.limits;
    let service = service_fn(move |request| {
        let state = Arc::clone(&state);
        async move { Ok::<_, Infallible>(respond(&state, request).await) }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(MAX_HEAD_BYTES);
    let mut connection = pin!(builder.serve_connection(TokioIo::new(stream), service));
    let ended = tokio::select! {
        result = connection.as_mut() => Some(result),
        () = stop_requested(&mut stopped) => None,
        () = tokio::time::sleep(limits.max_connection_age) => None,
    };
    let result = match ended {
        Some(result) => result,
        None => {
            connection.as_mut().graceful_shutdown();
            match tokio::time::timeout(limits.grace, connection.as_mut()).await {
                Ok(result) => result,
                Err(_) => return,
            }
        }
    };
    if let Err(error) = result {
        tracing::debug!(%error, "admin HTTP connection ended with an error");
    }
}

/// The admin endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Index,
    Metrics,
    Health,
    Status,
    Ranges,
}

impl Route {
    fn of(path: &str) -> Option<Route> {
        match path {
            "/" => Some(Route::Index),
            "/metrics" => Some(Route::Metrics),
            "/health" => Some(Route::Health),
            "/status" => Some(Route::Status),
            "/ranges" => Some(Route::Ranges),
            _ => None,
        }
    }

    /// The `path` label of `tessera_admin_requests_total`: one of a few, whatever the client
    /// sends.
    fn label(route: Option<Route>) -> &'static str {
        match route {
            Some(Route::Index) => "/",
            Some(Route::Metrics) => "/metrics",
            Some(Route::Health) => "/health",
            Some(Route::Status) => "/status",
            Some(Route::Ranges) => "/ranges",
            None => "other",
        }
    }
}

/// The answer to one request.
async fn respond(state: &State, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let route = Route::of(request.uri().path());
    metrics::counter!("tessera_admin_requests_total", "path" => Route::label(route)).increment(1);
    let Some(route) = route else {
        return text(StatusCode::NOT_FOUND, "not found; see /\n".to_owned());
    };
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        let mut response =
            text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed; use GET\n".to_owned());
        response.headers_mut().insert(header::ALLOW, HeaderValue::from_static(ALLOWED_METHODS));
        return response;
    }
    match route {
        Route::Index => text(StatusCode::OK, INDEX.to_owned()),
        Route::Metrics => metrics(&state.metrics).await,
        Route::Health => match state.source.health() {
            Ok(()) => text(StatusCode::OK, "ok\n".to_owned()),
            Err(reason) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")),
        },
        Route::Status => document(state.source.status(), state.limits.document_timeout).await,
        Route::Ranges => document(state.source.ranges(), state.limits.document_timeout).await,
    }
}

/// `/metrics`: rendered off the runtime's threads, since a node may have many series.
async fn metrics(handle: &PrometheusHandle) -> Response<Full<Bytes>> {
    let handle = handle.clone();
    match tokio::task::spawn_blocking(move || handle.render()).await {
        Ok(body) => response(StatusCode::OK, METRICS_CONTENT_TYPE, body),
        Err(error) => {
            tracing::error!(%error, "rendering the metrics failed");
            text(StatusCode::INTERNAL_SERVER_ERROR, "rendering the metrics failed\n".to_owned())
        }
    }
}

/// A JSON endpoint: the document, or a JSON error when it fails (503), panics (500) or takes
/// longer than `limit` (504).
async fn document(future: JsonFuture, limit: Duration) -> Response<Full<Bytes>> {
    // A task of its own, so that a panic in the source answers 500; aborted when this request
    // is dropped (the client went away) or times out.
    let task = tokio::spawn(future);
    let _abort = AbortOnDrop(task.abort_handle());
    match tokio::time::timeout(limit, task).await {
        Ok(Ok(Ok(value))) => response(StatusCode::OK, JSON_CONTENT_TYPE, format!("{value:#}\n")),
        Ok(Ok(Err(reason))) => json_error(StatusCode::SERVICE_UNAVAILABLE, &reason),
        Ok(Err(error)) => {
            tracing::error!(%error, "computing an admin document failed");
            json_error(StatusCode::INTERNAL_SERVER_ERROR, "computing the document failed")
        }
        Err(_) => json_error(
            StatusCode::GATEWAY_TIMEOUT,
            &format!("the document took longer than {} ms", limit.as_millis()),
        ),
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn json_error(status: StatusCode, reason: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({ "error": reason });
    response(status, JSON_CONTENT_TYPE, format!("{body:#}\n"))
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    response(status, TEXT_CONTENT_TYPE, body)
}

fn response(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::time::Instant;

    use serde_json::{Value, json};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A source whose answers the test sets.
    struct Fake {
        health: Result<(), String>,
        document: Result<Value, String>,
        delay: Duration,
    }

    impl Fake {
        fn healthy() -> Fake {
            Fake {
                health: Ok(()),
                document: Ok(json!({ "store_id": 7, "ranges": [1, 2, 3] })),
                delay: Duration::ZERO,
            }
        }

        fn answer(&self, endpoint: &str) -> JsonFuture {
            let document = self
                .document
                .clone()
                .map(|document| json!({ "endpoint": endpoint, "document": document }));
            let delay = self.delay;
            Box::pin(async move {
                tokio::time::sleep(delay).await;
                document
            })
        }
    }

    impl AdminSource for Fake {
        fn status(&self) -> JsonFuture {
            self.answer("status")
        }

        fn ranges(&self) -> JsonFuture {
            self.answer("ranges")
        }

        fn health(&self) -> Result<(), String> {
            self.health.clone()
        }
    }

    /// A parsed HTTP/1.1 response.
    #[derive(Debug)]
    struct Reply {
        status: u16,
        /// The header lines, lowercased.
        headers: String,
        body: String,
    }

    fn localhost() -> SocketAddr {
        "127.0.0.1:0".parse().unwrap()
    }

    async fn start(source: Fake) -> AdminServer {
        start_with(source, Limits::default()).await
    }

    async fn start_with(source: Fake, limits: Limits) -> AdminServer {
        let metrics = install_recorder().unwrap();
        AdminServer::start_with(localhost(), metrics, Arc::new(source), limits).await.unwrap()
    }

    /// Sends `raw` on a new connection and reads until the server closes it.
    async fn exchange(addr: SocketAddr, raw: &[u8]) -> io::Result<Vec<u8>> {
        let mut stream = TcpStream::connect(addr).await?;
        stream.write_all(raw).await?;
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no end of response"))??;
        Ok(out)
    }

    fn parse(bytes: &[u8]) -> Reply {
        let text = String::from_utf8(bytes.to_vec()).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let (status_line, headers) = head.split_once("\r\n").unwrap_or((head, ""));
        let mut parts = status_line.splitn(3, ' ');
        assert_eq!(parts.next(), Some("HTTP/1.1"));
        let status = parts.next().unwrap().parse().unwrap();
        Reply { status, headers: headers.to_ascii_lowercase(), body: body.to_owned() }
    }

    async fn request(addr: SocketAddr, method: &str, path: &str) -> Reply {
        let raw = format!("{method} {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
        parse(&exchange(addr, raw.as_bytes()).await.unwrap())
    }

    async fn get(addr: SocketAddr, path: &str) -> Reply {
        request(addr, "GET", path).await
    }

    #[tokio::test]
    async fn metrics_renders_the_recorded_counters() {
        let first = install_recorder().unwrap();
        metrics::counter!("tessera_admin_test_metrics_total", "kind" => "test").increment(3);
        // A second install returns the first's handle.
        let second = install_recorder().unwrap();
        assert!(first.render().contains("tessera_admin_test_metrics_total"));
        assert!(second.render().contains("tessera_admin_test_metrics_total"));

        let server = start(Fake::healthy()).await;
        let reply = get(server.local_addr(), "/metrics").await;
        assert_eq!(reply.status, 200);
        assert!(reply.headers.contains("content-type: text/plain; version=0.0.4"), "{reply:?}");
        assert!(
            reply.body.contains("tessera_admin_test_metrics_total{kind=\"test\"} 3"),
            "{reply:?}"
        );
        // The request above was counted.
        let reply = get(server.local_addr(), "/metrics").await;
        assert!(
            reply.body.contains("tessera_admin_requests_total{path=\"/metrics\"}"),
            "{reply:?}"
        );
        server.shutdown().await;
    }

    #[tokio::test]
    async fn health_answers_ok_or_the_reason() {
        let server = start(Fake::healthy()).await;
        let reply = get(server.local_addr(), "/health").await;
        assert_eq!((reply.status, reply.body.as_str()), (200, "ok\n"));
        server.shutdown().await;

        let server = start(Fake {
            health: Err("store 7 is still recovering its ranges".to_owned()),
            ..Fake::healthy()
        })
        .await;
        let reply = get(server.local_addr(), "/health").await;
        assert_eq!(reply.status, 503);
        assert_eq!(reply.body, "store 7 is still recovering its ranges\n");
        server.shutdown().await;
    }

    #[tokio::test]
    async fn status_and_ranges_return_the_documents() {
        let server = start(Fake::healthy()).await;
        for endpoint in ["status", "ranges"] {
            let reply = get(server.local_addr(), &format!("/{endpoint}")).await;
            assert_eq!(reply.status, 200, "{reply:?}");
            assert!(reply.headers.contains("content-type: application/json"));
            let document: Value = serde_json::from_str(&reply.body).unwrap();
            assert_eq!(
                document,
                json!({ "endpoint": endpoint, "document": { "store_id": 7, "ranges": [1, 2, 3] } })
            );
        }
        // The query string does not change the route.
        assert_eq!(get(server.local_addr(), "/status?verbose=1").await.status, 200);
        server.shutdown().await;
    }

    #[tokio::test]
    async fn a_failing_document_is_503_with_the_reason() {
        let server =
            start(Fake { document: Err("no leader for range 4".to_owned()), ..Fake::healthy() })
                .await;
        let reply = get(server.local_addr(), "/ranges").await;
        assert_eq!(reply.status, 503);
        let error: Value = serde_json::from_str(&reply.body).unwrap();
        assert_eq!(error, json!({ "error": "no leader for range 4" }));
        server.shutdown().await;
    }

    #[tokio::test]
    async fn a_slow_document_is_504() {
        let limits = Limits { document_timeout: Duration::from_millis(100), ..Limits::default() };
        let server =
            start_with(Fake { delay: Duration::from_secs(30), ..Fake::healthy() }, limits).await;
        let reply = get(server.local_addr(), "/status").await;
        assert_eq!(reply.status, 504);
        let error: Value = serde_json::from_str(&reply.body).unwrap();
        assert!(error["error"].as_str().unwrap().contains("100 ms"));
        server.shutdown().await;
    }

    #[tokio::test]
    async fn index_unknown_paths_and_methods() {
        let server = start(Fake::healthy()).await;
        let addr = server.local_addr();

        let reply = get(addr, "/").await;
        assert_eq!(reply.status, 200);
        for path in ["/metrics", "/health", "/status", "/ranges"] {
            assert!(reply.body.contains(path), "{reply:?}");
        }

        assert_eq!(get(addr, "/nope").await.status, 404);
        assert_eq!(get(addr, "/metrics/").await.status, 404);

        for method in ["POST", "PUT", "DELETE"] {
            let reply = request(addr, method, "/status").await;
            assert_eq!(reply.status, 405);
            assert!(reply.headers.contains("allow: get"), "{reply:?}");
        }

        // HEAD answers the headers without the body.
        let reply = request(addr, "HEAD", "/health").await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.body, "");
        server.shutdown().await;
    }

    #[tokio::test]
    async fn garbage_is_rejected_and_the_server_goes_on() {
        let server = start(Fake::healthy()).await;
        let addr = server.local_addr();
        let inputs: [&[u8]; 4] = [
            b"\x00\x01 not http\r\n\r\n",
            b"GET /health HTTP/9.9\r\n\r\n",
            b"GET /health HTTP/1.1\r\nHost: a\r\nContent-Length: nope\r\n\r\n",
            &[0xff; 64 * 1024],
        ];
        for input in inputs {
            // Either a 4xx answer, or the connection closed (possibly reset).
            if let Ok(bytes) = exchange(addr, input).await
                && !bytes.is_empty()
            {
                let reply = parse(&bytes);
                assert!((400..500).contains(&reply.status), "{reply:?}");
            }
            assert_eq!(get(addr, "/health").await.status, 200);
        }
        // An oversized head is refused.
        let huge =
            format!("GET /health HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n", "a".repeat(64 * 1024));
        if let Ok(bytes) = exchange(addr, huge.as_bytes()).await
            && !bytes.is_empty()
        {
            assert_eq!(parse(&bytes).status, 431);
        }
        assert_eq!(get(addr, "/health").await.status, 200);
        server.shutdown().await;
    }

    #[tokio::test]
    async fn a_silent_client_is_closed_after_the_header_timeout() {
        let limits =
            Limits { header_read_timeout: Duration::from_millis(200), ..Limits::default() };
        let server = start_with(Fake::healthy(), limits).await;
        let started = Instant::now();
        // A request line and no end of the head.
        let _ = exchange(server.local_addr(), b"GET /health HTTP/1.1\r\n").await;
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(get(server.local_addr(), "/health").await.status, 200);
        server.shutdown().await;
    }

    #[tokio::test]
    async fn connections_beyond_the_cap_are_closed() {
        let limits = Limits { max_connections: 1, ..Limits::default() };
        let server = start_with(Fake::healthy(), limits).await;
        let addr = server.local_addr();
        let idle = TcpStream::connect(addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        // The cap is reached: this one is closed without an answer.
        let raw = b"GET /health HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
        if let Ok(bytes) = exchange(addr, raw).await {
            assert!(bytes.is_empty(), "{:?}", String::from_utf8_lossy(&bytes));
        }
        // Once the idle one goes, a new connection is served.
        drop(idle);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Ok(bytes) = exchange(addr, raw).await
                && !bytes.is_empty()
            {
                assert_eq!(parse(&bytes).status, 200);
                break;
            }
            assert!(Instant::now() < deadline, "the connection slot was not freed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        server.shutdown().await;
    }

    #[tokio::test]
    async fn binding_an_address_in_use_names_it() {
        let server = start(Fake::healthy()).await;
        let addr = server.local_addr();
        let error =
            AdminServer::start(addr, install_recorder().unwrap(), Arc::new(Fake::healthy()))
                .await
                .unwrap_err();
        let message = error.to_string();
        assert!(message.contains(&addr.to_string()), "{message}");
        assert!(message.contains("in use"), "{message}");
        server.shutdown().await;
    }

    #[tokio::test]
    async fn shutdown_finishes_requests_in_flight_and_stops_accepting() {
        let server = start(Fake { delay: Duration::from_millis(300), ..Fake::healthy() }).await;
        let addr = server.local_addr();
        let in_flight = tokio::spawn(async move { get(addr, "/status").await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        // A kept-alive connection with no request is closed too.
        let mut idle = TcpStream::connect(addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;

        let started = Instant::now();
        tokio::time::timeout(Duration::from_secs(5), server.shutdown())
            .await
            .expect("shutdown returns");
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(in_flight.await.unwrap().status, 200);
        let mut rest = Vec::new();
        let closed =
            tokio::time::timeout(Duration::from_secs(2), idle.read_to_end(&mut rest)).await;
        assert!(closed.is_ok(), "the idle connection was not closed");
        assert!(TcpStream::connect(addr).await.is_err());
    }

    #[tokio::test]
    async fn dropping_the_server_stops_it() {
        let server = start(Fake::healthy()).await;
        let addr = server.local_addr();
        drop(server);
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(addr).await.is_ok() {
            assert!(Instant::now() < deadline, "still accepting");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

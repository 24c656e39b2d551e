//! The API's HTTP/1 connections, with the limits a box on a store network
//! needs against slow or hostile clients: at most `max_connections` at
//! once (beyond that a short 503 and close, so descriptors never run out
//! and `/healthz` answers), request headers within `header_timeout` (which
//! also closes a keep-alive connection idle that long), each request —
//! body included — within `request_timeout` (408), and at shutdown idle
//! connections closed at once and the rest given `shutdown_grace` before
//! they are dropped.
//!
//! hyper's HTTP/1 server (the one axum uses) does the protocol; this module
//! only accepts, limits and stops. Knows no route and no store.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tower::ServiceExt as _;

/// The most connections `[api] max_connections` may allow: a quarter of the
/// unit's `LimitNOFILE=4096`, leaving the rest to SQLite, providers and
/// sources.
pub const MAX_CONNECTIONS: usize = 1024;

/// The API's limits on its clients (`[api]` in `nearcast.toml`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApiLimits {
    /// Connections open at once; beyond, new ones get a 503 and are closed.
    pub max_connections: usize,
    /// Time a client has to send a request's headers (and how long a
    /// keep-alive connection may sit idle).
    pub header_timeout: Duration,
    /// Time a request may take, its body included; then 408.
    pub request_timeout: Duration,
    /// At shutdown, how long requests in flight may take before their
    /// connections are dropped.
    pub shutdown_grace: Duration,
    /// Wrong bearer tokens a client may send within a minute before it is
    /// refused for five.
    pub max_failed_tokens: u32,
}

impl Default for ApiLimits {
    fn default() -> ApiLimits {
        ApiLimits {
            max_connections: 256,
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(5),
            max_failed_tokens: 10,
        }
    }
}

/// Serves `router` on `listener` under `limits` until `shutdown`
/// completes; returns once every connection is closed, at most
/// `shutdown_grace` later.
///
/// # Errors
/// None yet: accept errors (out of descriptors) are logged once and waited
/// out.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ApiLimits,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut full = false;
    let mut accept_failing = false;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => {
                        if accept_failing {
                            accept_failing = false;
                            tracing::info!("local API accepts connections again");
                        }
                        a
                    }
                    Err(e) => {
                        // EMFILE and the like: say so once, let connections
                        // close, try again.
                        if !accept_failing {
                            accept_failing = true;
                            tracing::error!(error = %e, "local API cannot accept connections");
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                match slots.clone().try_acquire_owned() {
                    Ok(permit) => {
                        if full && slots.available_permits() >= limits.max_connections / 2 {
                            full = false;
                            tracing::info!("local API below its connection limit again");
                        }
                        connections.spawn(connection(
                            stream,
                            peer,
                            router.clone(),
                            limits,
                            stop_rx.clone(),
                            permit,
                        ));
                    }
                    Err(_) => {
                        if !full {
                            full = true;
                            tracing::warn!(
                                limit = limits.max_connections,
                                "local API connection limit reached; refusing new connections (503) until some close"
                            );
                        }
                        refuse(&stream);
                    }
                }
            }
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(limits.shutdown_grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            open = connections.len(),
            "local API connections still open after the shutdown grace; dropped"
        );
        connections.shutdown().await;
    }
    Ok(())
}

/// Over the limit: a short answer if the socket takes it at once, then
/// close. Never waits on the client.
fn refuse(stream: &TcpStream) {
    let _ = stream.try_write(
        b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\nretry-after: 1\r\n\r\n",
    );
}

/// One connection: hyper's HTTP/1 with the header timeout; at shutdown no
/// further requests (an idle connection closes at once).
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    limits: ApiLimits,
    mut stop: watch::Receiver<bool>,
    _slot: OwnedSemaphorePermit,
) {
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        let router = router.clone();
        async move {
            Ok::<_, Infallible>(
                router
                    .oneshot(req.map(Body::new))
                    .await
                    .unwrap_or_else(|e| match e {}),
            )
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(client = %peer, error = %e, "API connection ended");
            }
            return;
        }
        _ = stop.wait_for(|s| *s) => conn.as_mut().graceful_shutdown(),
    }
    // The caller drops what is left after the grace period.
    if let Err(e) = conn.await {
        tracing::debug!(client = %peer, error = %e, "API connection ended");
    }
}

//! The local HTTP API (axum, HTTP/1, no TLS: it listens on loopback and is
//! reached through the retailer's tunnel or proxy):
//!
//! - `GET /healthz`, `GET /metrics`: sources, database, providers, counters.
//! - `/v1/…`: enrolment, opt-out, erasure and conversions for the
//!   retailer's backend, behind `Authorization: Bearer <token>`.
//! - `/webhooks/{whatsapp,twilio,vonage}`: provider status and replies,
//!   each verified by the provider's signature on the raw body.
//!
//! Owns no SQL (every change goes through `store`, on the API's own
//! connection) and builds no provider request; reads time only from the
//! `Clock` it is given; secrets are loaded by reference per request and
//! never logged.

// Handlers return early with a ready response; it is built once per
// request, so its size on the stack does not matter.
#![allow(clippy::result_large_err)]

pub mod replies;
mod server;
pub mod signature;
pub mod throttle;
mod v1;
pub mod webhooks;

pub use server::{ApiLimits, MAX_CONNECTIONS};

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::channel::ChannelSettings;
use crate::clock::Clock;
use crate::core::identity::Hasher;
use crate::credentials::{Env, Secret, SecretRef, load_secret};
use crate::metrics::Metrics;
use crate::source::health::{Health, State};
use crate::store::Store;

/// Where the API listens unless `bind` says otherwise: loopback only.
pub const DEFAULT_BIND: &str = "127.0.0.1:8787";

/// The local HTTP API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiSettings {
    /// Address to listen on (`127.0.0.1:8787` by default).
    pub bind: SocketAddr,
    /// Bearer token for the mutating `/v1` calls; without one they are refused.
    pub token: Option<SecretRef>,
    /// The URL the providers call this box at (behind a tunnel or proxy),
    /// without the `/webhooks/…` path: Twilio signs the full URL.
    pub public_url: Option<String>,
    /// Meta's WhatsApp Cloud API webhook.
    pub whatsapp: Option<MetaWebhook>,
    /// Twilio's auth token for `X-Twilio-Signature` (defaults to the first
    /// twilio channel's token).
    pub twilio: Option<SecretRef>,
    /// Vonage's signature secret for the JWT on its webhooks.
    pub vonage: Option<SecretRef>,
    /// Limits on slow, many or guessing clients.
    pub limits: ApiLimits,
}

/// Meta's webhook secrets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetaWebhook {
    /// The app secret that keys `X-Hub-Signature-256`.
    pub app_secret: SecretRef,
    /// The token Meta echoes in its verification handshake.
    pub verify_token: SecretRef,
}

/// Everything the handlers share.
pub struct Api {
    /// The API's own database connection (one request at a time; SQLite
    /// serialises writers anyway).
    store: Mutex<Store>,
    hasher: Hasher,
    config: ApiSettings,
    channels: Vec<ChannelSettings>,
    env: Arc<dyn Env>,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    sources: Vec<Arc<Health>>,
    /// Wrong bearer tokens per client.
    throttle: Mutex<throttle::Throttle>,
}

/// How long wrong bearer tokens are added up, and how long a client that
/// sent too many is refused.
const TOKEN_WINDOW: Duration = Duration::from_secs(60);
const TOKEN_BLOCK: Duration = Duration::from_secs(300);
/// Clients whose wrong tokens are remembered.
const TOKEN_CLIENTS: usize = 4096;

impl Api {
    /// The API over `store` (its own connection), hashing enrolled
    /// identities with `hasher`, looking secrets up in `env`.
    #[allow(clippy::too_many_arguments)]
    #[must_use]
    pub fn new(
        store: Store,
        hasher: Hasher,
        config: ApiSettings,
        channels: Vec<ChannelSettings>,
        env: Arc<dyn Env>,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
        sources: Vec<Arc<Health>>,
    ) -> Api {
        let throttle = throttle::Throttle::new(
            config.limits.max_failed_tokens,
            TOKEN_WINDOW,
            TOKEN_BLOCK,
            TOKEN_CLIENTS,
        );
        Api {
            store: Mutex::new(store),
            throttle: Mutex::new(throttle),
            hasher,
            config,
            channels,
            env,
            clock,
            metrics,
            sources,
        }
    }
}

/// The routes: `/v1` behind the bearer token (checked before a body is
/// read), every request within the request timeout.
pub fn router(api: Arc<Api>) -> Router {
    let v1 = Router::new()
        .route("/v1/customers", post(v1::enrol))
        .route("/v1/customers/{id}/opt-out", post(v1::opt_out))
        .route("/v1/customers/{id}", delete(v1::forget))
        .route("/v1/conversions", post(v1::conversion))
        .route_layer(axum::middleware::from_fn_with_state(
            api.clone(),
            require_bearer,
        ));
    let timeout = api.config.limits.request_timeout;
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .merge(v1)
        .route(
            "/webhooks/whatsapp",
            get(webhooks::meta_handshake).post(webhooks::meta),
        )
        .route("/webhooks/twilio", post(webhooks::twilio))
        .route("/webhooks/vonage", post(webhooks::vonage))
        .with_state(api)
        .layer(axum::middleware::from_fn_with_state(timeout, deadline))
}

/// A request (its body included) that takes longer than the request
/// timeout gets 408, and its connection is closed.
async fn deadline(
    axum::extract::State(limit): axum::extract::State<Duration>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(r) => r,
        Err(_) => (
            StatusCode::REQUEST_TIMEOUT,
            [(header::CONNECTION, "close")],
            axum::Json(json!({"error": "the request took too long"})),
        )
            .into_response(),
    }
}

/// The `/v1` gate: the bearer token, and no more guesses from a client
/// that sent too many wrong ones (429 until its block ends).
async fn require_bearer(
    axum::extract::State(api): axum::extract::State<Arc<Api>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let client = req
        .extensions()
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
        .map_or(std::net::IpAddr::from([0, 0, 0, 0]), |c| c.0.ip());
    let now = api.clock.monotonic();
    let blocked = api.throttle.lock().map_or(Ok(()), |t| t.check(client, now));
    if let Err(wait) = blocked {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, wait.as_secs().max(1).to_string())],
            axum::Json(
                json!({"error": "too many wrong bearer tokens from this address; try later"}),
            ),
        )
            .into_response();
    }
    match authorize(&api, req.headers()) {
        Ok(()) => {
            if let Ok(mut t) = api.throttle.lock() {
                t.succeeded(client);
            }
            next.run(req).await
        }
        Err(r) => {
            // A missing secret (503) is the box's fault, not the client's.
            if r.status() == StatusCode::UNAUTHORIZED
                && let Ok(mut t) = api.throttle.lock()
                && t.failed(client, now)
            {
                tracing::warn!(
                    client = %client,
                    "too many wrong bearer tokens; refusing this client for {} minutes",
                    TOKEN_BLOCK.as_secs() / 60
                );
            }
            r
        }
    }
}

/// Serves the API on `listener` until `shutdown` completes, then lets
/// requests in flight finish within the shutdown grace (see `ApiLimits`).
///
/// # Errors
/// The listener fails.
pub async fn serve(
    listener: tokio::net::TcpListener,
    api: Arc<Api>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = api.config.limits;
    server::serve(listener, router(api), limits, shutdown).await
}

/// What to say when `bind` is reachable from other machines: the API
/// speaks plain HTTP, so it belongs on loopback behind a TLS tunnel or
/// proxy.
#[must_use]
pub fn exposure_warning(bind: SocketAddr) -> Option<String> {
    (!bind.ip().is_loopback()).then(|| {
        format!(
            "[api] bind {bind} is not loopback: the API speaks plain HTTP, so tokens, webhooks and \
             customers' data cross the network unencrypted; bind 127.0.0.1 and put the TLS tunnel \
             or reverse proxy in front"
        )
    })
}

/// Binds `addr` (loopback by default).
///
/// # Errors
/// The address is taken or not allowed.
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

/// Compares two secrets in constant time, whatever their lengths (the
/// digests are compared, so not even the length leaks).
fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    let a = Sha256::digest(given);
    let b = Sha256::digest(expected);
    bool::from(a.as_slice().ct_eq(b.as_slice()))
}

/// Loads a secret for this request; a missing one is a 503 with the
/// reason in the log (naming the variable or file, never a value).
fn secret(api: &Api, r: &SecretRef) -> Result<Secret, Response> {
    load_secret(r, &*api.env).map_err(|e| {
        tracing::error!(error = %e, "API secret unavailable");
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"error": "a secret this endpoint needs is not available"})),
        )
            .into_response()
    })
}

/// Checks `Authorization: Bearer <token>` for a mutating call.
fn authorize(api: &Api, headers: &HeaderMap) -> Result<(), Response> {
    let refuse = || {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            axum::Json(json!({"error": "missing or wrong bearer token"})),
        )
            .into_response()
    };
    let Some(token_ref) = &api.config.token else {
        return Err(refuse());
    };
    let expected = secret(api, token_ref)?;
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .ok_or_else(refuse)?;
    if same_secret(given.trim().as_bytes(), expected.expose().as_bytes()) {
        Ok(())
    } else {
        Err(refuse())
    }
}

/// A 500 whose detail goes to the log only.
fn internal(e: &str) -> Response {
    tracing::error!(error = %e, "API request failed");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        axum::Json(json!({"error": "internal error; see the daemon's log"})),
    )
        .into_response()
}

/// Runs `f` on the API's connection off the async threads.
async fn with_store<T: Send + 'static>(
    api: &Arc<Api>,
    f: impl FnOnce(&mut Store) -> T + Send + 'static,
) -> Result<T, Response> {
    let a = api.clone();
    tokio::task::spawn_blocking(move || {
        let mut store = a
            .store
            .lock()
            .map_err(|_| "store lock poisoned".to_owned())?;
        Ok::<T, String>(f(&mut store))
    })
    .await
    .map_err(|e| internal(&e.to_string()))?
    .map_err(|e| internal(&e))
}

async fn healthz(axum::extract::State(api): axum::extract::State<Arc<Api>>) -> Response {
    let db = with_store(&api, |s| s.ping().map_err(|e| e.to_string())).await;
    let db_ok = matches!(db, Ok(Ok(())));
    if let Ok(Err(e)) = &db {
        tracing::warn!(error = %e, "health check: database not answering");
    }
    let sources: Vec<_> = api
        .sources
        .iter()
        .map(|h| {
            let state = h.state();
            json!({"name": h.name, "state": state, "ok": state != State::Recovering})
        })
        .collect();
    let sources_ok = api.sources.iter().all(|h| h.state() != State::Recovering);
    let channels = api.metrics.channel_health();
    let channels_ok = channels.iter().all(|c| c.ok);
    let channels: Vec<_> = channels
        .iter()
        .map(|c| {
            json!({
                "channel": c.channel,
                "ok": c.ok,
                "last_ok": c.last_ok.map(|t| t.to_string()),
                "last_error": c.last_error.map(|t| t.to_string()),
            })
        })
        .collect();
    // Nothing is decided or sent on an untrusted clock: unhealthy, and
    // the reason in words ("cannot read clock sync: …").
    let clock = api.metrics.clock();
    let clock_ok = clock.as_ref().is_none_or(|c| c.trusted);
    let healthy = db_ok && sources_ok && channels_ok && clock_ok;
    let body = json!({
        "status": if healthy { "ok" } else { "unhealthy" },
        "database": {"ok": db_ok},
        "clock": clock.map(|c| json!({"ok": c.trusted, "state": c.state, "detail": c.detail})),
        "sources": sources,
        "channels": channels,
    });
    let code = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(body)).into_response()
}

async fn metrics(axum::extract::State(api): axum::extract::State<Arc<Api>>) -> Response {
    let depth = match with_store(&api, |s| s.outbox_depth().map_err(|e| e.to_string())).await {
        Ok(Ok(d)) => d,
        Ok(Err(e)) => return internal(&e),
        Err(r) => return r,
    };
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        api.metrics.render(&depth, &api.sources),
    )
        .into_response()
}

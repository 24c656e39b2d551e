//! HTTP plumbing shared by the provider adapters: the plain request value
//! their pure builders return, the response their pure classifiers read,
//! one shared client (reqwest on rustls, with timeouts), `Retry-After`,
//! and scrubbing of provider error texts. Secrets come from `credentials`.
//!
//! Owns no provider knowledge: what to send and what an answer means live
//! in `whatsapp`, `twilio`, `vonage` and `webhook`. Never logs a header
//! value or a body.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::SendResult;
use crate::core::types::Timestamp;
use crate::credentials::{Env, Secret, SecretRef, load_secret};

/// Sent as `User-Agent`; Meta's document constrains its form
/// (`name/1.2.3`).
pub const USER_AGENT: &str = concat!("nearcast/", env!("CARGO_PKG_VERSION"));

/// How long a connection may take to open.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Default time a whole request may take (configurable per channel).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Wait after a timeout, a refused connection or a 5xx without `Retry-After`.
pub const RETRY_TRANSIENT: Duration = Duration::from_secs(30);

/// Wait after a throttling answer without `Retry-After`.
pub const RETRY_THROTTLED: Duration = Duration::from_secs(60);

/// The longest `Retry-After` honoured; a message's TTL usually ends sooner.
pub const RETRY_MAX: Duration = Duration::from_secs(24 * 3600);

/// Response bodies are read up to this many bytes; the rest is ignored.
pub const MAX_BODY: usize = 64 * 1024;

/// A request as a provider receives it: built by a pure function, sent by
/// [`Client::execute`].
#[derive(Clone, PartialEq, Eq)]
pub struct HttpRequest {
    /// Always `POST` for the providers nearcast talks to.
    pub method: &'static str,
    /// Absolute URL.
    pub url: String,
    /// Header names and values, in order.
    pub headers: Vec<(String, String)>,
    /// The body, exactly as sent.
    pub body: Vec<u8>,
}

impl HttpRequest {
    /// A `POST` of `body` to `url` with `headers`.
    #[must_use]
    pub fn post(url: String, headers: Vec<(String, String)>, body: Vec<u8>) -> HttpRequest {
        HttpRequest {
            method: "POST",
            url,
            headers,
            body,
        }
    }

    /// The value of header `name` (case-insensitive).
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// The body as text (lossy), for tests and snapshots.
    #[must_use]
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Credentials and bodies stay out of debug output: it ends up in logs.
impl fmt::Debug for HttpRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("HttpRequest")
            .field("method", &self.method)
            .field("url", &self.url)
            .field("headers", &names)
            .field("body_bytes", &self.body.len())
            .finish()
    }
}

/// A provider's answer, as the classifiers read it.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Header names (lowercase) and values.
    pub headers: Vec<(String, String)>,
    /// Up to [`MAX_BODY`] bytes of the body.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// A response with `status` and `body` and no headers (for tests).
    #[must_use]
    pub fn new(status: u16, body: &str) -> HttpResponse {
        HttpResponse {
            status,
            headers: Vec::new(),
            body: body.as_bytes().to_vec(),
        }
    }

    /// Adds a header (for tests).
    #[must_use]
    pub fn with_header(mut self, name: &str, value: &str) -> HttpResponse {
        self.headers
            .push((name.to_ascii_lowercase(), value.to_owned()));
        self
    }

    /// The value of header `name` (case-insensitive).
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// The body parsed as JSON, if it is JSON.
    #[must_use]
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// How long the provider asks us to wait (`Retry-After`, seconds or an
    /// HTTP date relative to `now`), else `default`, at most [`RETRY_MAX`].
    #[must_use]
    pub fn retry_after(&self, now: Timestamp, default: Duration) -> Duration {
        self.header("retry-after")
            .and_then(|v| parse_retry_after(v, now))
            .unwrap_or(default)
            .min(RETRY_MAX)
    }

    /// `Retry` with the provider's `Retry-After` or `default`.
    #[must_use]
    pub fn retry(&self, now: Timestamp, default: Duration, error: String) -> SendResult {
        SendResult::Retry {
            after: self.retry_after(now, default),
            error,
        }
    }

    /// The generic reading of a status code no provider-specific code
    /// explained: 408/425/429 and 5xx retry, 401/403/404 mean the channel's
    /// settings are wrong, other 4xx are permanent.
    #[must_use]
    pub fn by_status(&self, now: Timestamp, what: &str) -> SendResult {
        let s = self.status;
        let error = format!("{what}: HTTP {s}");
        match s {
            429 => self.retry(now, RETRY_THROTTLED, error),
            408 | 425 | 500..=599 => self.retry(now, RETRY_TRANSIENT, error),
            401 | 403 | 404 | 405 => SendResult::Misconfigured { error },
            _ => SendResult::Failed { error },
        }
    }

    /// A provider error code the adapter does not know: [`Self::by_status`]
    /// decides what to do, `error` (the provider's code and text) says why.
    #[must_use]
    pub fn unknown_code(&self, now: Timestamp, what: &str, error: String) -> SendResult {
        match self.by_status(now, what) {
            SendResult::Retry { after, .. } => SendResult::Retry { after, error },
            SendResult::Misconfigured { .. } => SendResult::Misconfigured { error },
            _ => SendResult::Failed { error },
        }
    }
}

fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// `Retry-After: 120` or `Retry-After: Tue, 24 Nov 2026 09:00:00 GMT`.
#[must_use]
pub fn parse_retry_after(value: &str, now: Timestamp) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = jiff::fmt::rfc2822::parse(v)
        .ok()?
        .timestamp()
        .as_millisecond();
    let ms = u64::try_from(at.saturating_sub(now.0)).unwrap_or(0);
    Some(Duration::from_millis(ms))
}

/// A provider's free text made fit for the database and logs: runs of six
/// or more digits (phone numbers) are replaced and the length is bounded.
/// Provider messages like "The 'To' number +4915112345678 is not valid"
/// would otherwise put a phone number into the outbox's error column.
#[must_use]
pub fn scrub(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(200));
    let mut digits = String::new();
    let flush = |digits: &mut String, out: &mut String| {
        if digits.chars().filter(char::is_ascii_digit).count() >= 6 {
            out.push('…');
        } else {
            out.push_str(digits);
        }
        digits.clear();
    };
    for c in text.chars() {
        if c.is_ascii_digit() || (c == '+' && digits.is_empty()) {
            digits.push(c);
        } else {
            flush(&mut digits, &mut out);
            out.push(if c.is_control() { ' ' } else { c });
        }
    }
    flush(&mut digits, &mut out);
    if out.chars().count() > 200 {
        out = out.chars().take(199).collect();
        out.push('…');
    }
    out
}

/// `Authorization: Basic …` for `user:password`.
#[must_use]
pub fn basic_auth(user: &str, password: &Secret) -> String {
    use base64::Engine as _;
    let raw = format!("{user}:{}", password.expose());
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

/// Joins a configured base URL and a path, whatever slashes either has.
#[must_use]
pub fn join(base: &str, path: &str) -> String {
    format!(
        "{}/{}",
        base.trim_end_matches('/'),
        path.trim_start_matches('/')
    )
}

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// No answer in time.
    #[error("timed out")]
    Timeout,
    /// The connection could not be made or broke.
    #[error("connection failed: {0}")]
    Connect(String),
    /// The request could not be built (a bad URL in the configuration).
    #[error("invalid request: {0}")]
    Invalid(String),
}

impl TransportError {
    /// A timeout or a connection error is retried; a request that cannot be
    /// built means the channel's settings are wrong.
    #[must_use]
    pub fn into_result(self, what: &str) -> SendResult {
        match self {
            TransportError::Invalid(_) => SendResult::Misconfigured {
                error: format!("{what}: {self}"),
            },
            TransportError::Timeout | TransportError::Connect(_) => SendResult::Retry {
                after: RETRY_TRANSIENT,
                error: format!("{what}: {self}"),
            },
        }
    }
}

/// The HTTP client all adapters share (one connection pool, rustls).
#[derive(Clone, Debug)]
pub struct Client {
    inner: reqwest::Client,
}

impl Client {
    /// A client with the crate's connect timeout; per-request timeouts are
    /// given to [`Client::execute`].
    ///
    /// # Errors
    /// The TLS backend could not be initialised.
    pub fn new() -> Result<Client, reqwest::Error> {
        let inner = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(DEFAULT_TIMEOUT)
            // A provider never redirects a send; following one would replay
            // the credentials to another host.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Client { inner })
    }

    /// Sends `req` and reads the answer (at most [`MAX_BODY`] bytes of it).
    ///
    /// # Errors
    /// [`TransportError`] when no answer arrived.
    pub async fn execute(
        &self,
        req: &HttpRequest,
        timeout: Duration,
    ) -> Result<HttpResponse, TransportError> {
        let method = reqwest::Method::from_bytes(req.method.as_bytes())
            .map_err(|e| TransportError::Invalid(e.to_string()))?;
        let url =
            reqwest::Url::parse(&req.url).map_err(|e| TransportError::Invalid(e.to_string()))?;
        let mut b = self
            .inner
            .request(method, url)
            .timeout(timeout)
            .body(req.body.clone());
        for (n, v) in &req.headers {
            b = b.header(n.as_str(), v.as_str());
        }
        let mut resp = b.send().await.map_err(transport)?;
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .filter_map(|(n, v)| Some((n.as_str().to_owned(), v.to_str().ok()?.to_owned())))
            .collect();
        let mut body = Vec::new();
        while body.len() < MAX_BODY {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    let room = MAX_BODY - body.len();
                    body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                }
                // The status is what matters; a body cut short is read as is.
                Ok(None) | Err(_) => break,
            }
        }
        Ok(HttpResponse {
            status,
            headers,
            body,
        })
    }
}

/// What makes a provider's settings an adapter: where its secret is, how
/// long a request may take, its pure request builder and classifier.
pub trait Api: Send + Sync + 'static {
    /// The adapter's name in logs and errors (`twilio`).
    const NAME: &'static str;
    /// Whether the provider keeps one message per outbox key (see
    /// [`Deliver::dedupes`](super::Deliver::dedupes)).
    const DEDUPES: bool = false;

    /// The secret the requests are signed or authorised with.
    fn token(&self) -> &SecretRef;

    /// Time a request may take.
    fn timeout(&self) -> Duration;

    /// The request for `msg`, or the result to record instead.
    ///
    /// # Errors
    /// The [`SendResult`] to record when nothing is sent.
    fn build(&self, msg: &super::Outgoing<'_>, token: &Secret) -> Result<HttpRequest, SendResult>;

    /// What the provider's answer means.
    fn classify(resp: &HttpResponse, now: Timestamp) -> SendResult;
}

/// Implements [`Api`] for a provider's settings (with `token` and
/// `timeout` fields) from its module's pure `build_request` and `classify`.
macro_rules! provider_api {
    ($settings:ty, $name:literal, dedupes: $dedupes:literal) => {
        impl $crate::channel::http::Api for $settings {
            const NAME: &'static str = $name;
            const DEDUPES: bool = $dedupes;

            fn token(&self) -> &$crate::credentials::SecretRef {
                &self.token
            }

            fn timeout(&self) -> std::time::Duration {
                self.timeout
            }

            fn build(
                &self,
                msg: &$crate::channel::Outgoing<'_>,
                token: &$crate::credentials::Secret,
            ) -> Result<$crate::channel::http::HttpRequest, $crate::channel::SendResult> {
                build_request(msg, self, token)
            }

            fn classify(
                resp: &$crate::channel::http::HttpResponse,
                now: $crate::core::types::Timestamp,
            ) -> $crate::channel::SendResult {
                classify(resp, now)
            }
        }
    };
}
pub(crate) use provider_api;

/// A provider adapter: its settings, the shared client, and where its
/// secret is looked up. The one `Deliver` implementation every HTTP
/// provider shares.
pub struct Provider<S> {
    settings: S,
    client: Client,
    env: Arc<dyn Env>,
}

impl<S: Api> Provider<S> {
    /// An adapter sending with `client`, reading its secret through `env`.
    #[must_use]
    pub fn new(settings: S, client: Client, env: Arc<dyn Env>) -> Provider<S> {
        Provider {
            settings,
            client,
            env,
        }
    }
}

impl<S: Api> super::Deliver for Provider<S> {
    fn send<'a>(&'a self, msg: &'a super::Outgoing<'a>) -> super::SendFuture<'a> {
        Box::pin(send_with(
            &self.client,
            &*self.env,
            self.settings.token(),
            self.settings.timeout(),
            msg,
            S::NAME,
            |token| self.settings.build(msg, token),
            S::classify,
        ))
    }

    fn dedupes(&self) -> bool {
        S::DEDUPES
    }
}

/// Every provider adapter's `send`: loads the secret (a missing one is a
/// misconfigured channel), builds the request with it (or the result to
/// record instead), sends it and classifies the answer.
#[allow(clippy::too_many_arguments)]
pub async fn send_with(
    client: &Client,
    env: &dyn Env,
    secret: &SecretRef,
    timeout: Duration,
    msg: &super::Outgoing<'_>,
    what: &str,
    build: impl FnOnce(&Secret) -> Result<HttpRequest, SendResult>,
    classify: fn(&HttpResponse, Timestamp) -> SendResult,
) -> SendResult {
    let secret = match load_secret(secret, env) {
        Ok(s) => s,
        Err(error) => {
            return SendResult::Misconfigured {
                error: format!("{what}: {error}"),
            };
        }
    };
    match build(&secret) {
        Ok(req) => deliver(client, &req, timeout, msg, what, classify).await,
        Err(result) => result,
    }
}

/// Sends `req` and classifies the answer: the thin part every provider
/// adapter shares. Logs the outbox id and status at debug, nothing else.
pub async fn deliver(
    client: &Client,
    req: &HttpRequest,
    timeout: Duration,
    msg: &super::Outgoing<'_>,
    what: &str,
    classify: fn(&HttpResponse, Timestamp) -> SendResult,
) -> SendResult {
    match client.execute(req, timeout).await {
        Ok(resp) => {
            tracing::debug!(
                outbox = msg.item.id,
                channel = what,
                status = resp.status,
                "provider answered"
            );
            classify(&resp, msg.at)
        }
        Err(e) => {
            tracing::debug!(outbox = msg.item.id, channel = what, error = %e, "no answer from provider");
            e.into_result(what)
        }
    }
}

fn transport(e: reqwest::Error) -> TransportError {
    if e.is_timeout() {
        TransportError::Timeout
    } else if e.is_builder() {
        TransportError::Invalid(e.to_string())
    } else {
        // reqwest's message may carry the URL, which holds no secret (ids
        // only); the phone number and tokens are never in a URL.
        TransportError::Connect(e.to_string())
    }
}

/// Short names for the expected outcomes in the adapters' tables of
/// provider error codes.
#[cfg(test)]
pub(crate) mod expect {
    use std::time::Duration;

    use crate::channel::SendResult;

    pub(crate) fn retry(after: Duration, e: &str) -> SendResult {
        SendResult::Retry {
            after,
            error: e.into(),
        }
    }
    pub(crate) fn fall(e: &str) -> SendResult {
        SendResult::Fallback { error: e.into() }
    }
    pub(crate) fn fail(e: &str) -> SendResult {
        SendResult::Failed { error: e.into() }
    }
    pub(crate) fn conf(e: &str) -> SendResult {
        SendResult::Misconfigured { error: e.into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        let now = Timestamp::from_secs(1_795_510_800); // 2026-11-24T09:00:00Z
        assert_eq!(
            parse_retry_after(" 120 ", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Tue, 24 Nov 2026 09:01:30 GMT", now),
            Some(Duration::from_secs(90))
        );
        // A date in the past means "now".
        assert_eq!(
            parse_retry_after("Tue, 24 Nov 2026 08:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        let r = HttpResponse::new(429, "").with_header("Retry-After", "999999999");
        assert_eq!(r.retry_after(now, RETRY_THROTTLED), RETRY_MAX);
        let r = HttpResponse::new(429, "");
        assert_eq!(r.retry_after(now, RETRY_THROTTLED), RETRY_THROTTLED);
    }

    #[test]
    fn status_codes_without_a_provider_code() {
        let now = Timestamp(0);
        let by = |s| HttpResponse::new(s, "").by_status(now, "x");
        assert_eq!(
            by(503),
            SendResult::Retry {
                after: RETRY_TRANSIENT,
                error: "x: HTTP 503".into()
            }
        );
        assert_eq!(
            by(429),
            SendResult::Retry {
                after: RETRY_THROTTLED,
                error: "x: HTTP 429".into()
            }
        );
        assert_eq!(
            by(401),
            SendResult::Misconfigured {
                error: "x: HTTP 401".into()
            }
        );
        assert_eq!(
            by(400),
            SendResult::Failed {
                error: "x: HTTP 400".into()
            }
        );
    }

    #[test]
    fn scrub_removes_phone_numbers_and_bounds_length() {
        assert_eq!(
            scrub("The 'To' number +4915112345678 is not a valid phone number."),
            "The 'To' number … is not a valid phone number."
        );
        assert_eq!(scrub("error 21211 at line\n2"), "error 21211 at line 2");
        assert_eq!(scrub(&"x".repeat(300)).chars().count(), 200);
    }

    #[test]
    fn debug_output_hides_headers_and_body() {
        let r = HttpRequest::post(
            "https://x/y".into(),
            vec![("Authorization".into(), "Bearer s3cret".into())],
            b"{\"to\":\"+4915112345678\"}".to_vec(),
        );
        let d = format!("{r:?}");
        assert!(!d.contains("s3cret") && !d.contains("+49"), "{d}");
        assert_eq!(basic_auth("AC1", &Secret::new("tok")), "Basic QUMxOnRvaw==");
        assert_eq!(
            join("http://h:1/", "/v1/messages"),
            "http://h:1/v1/messages"
        );
    }
}

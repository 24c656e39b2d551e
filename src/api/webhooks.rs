//! Provider webhooks: Meta (WhatsApp Cloud API), Twilio and Vonage report
//! delivery status and inbound replies here. Each request's signature is
//! checked on the raw body before anything is parsed; a missing signature
//! is 401, a wrong or stale one 403, and nothing changes either way.
//!
//! Parsing is pure (`parse_meta`, `parse_twilio`, `parse_vonage` → a
//! [`Report`]); applying a report is the store's business. An unknown
//! sender leaves nothing behind and is logged at debug level without its
//! number.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::replies::{Intent, intent, normalise_phone};
use super::signature::{self, Reject};
use super::{Api, internal, secret};
use crate::channel::http::scrub;
use crate::channel::{AdapterSettings, ChannelSettings, VonageChannel};
use crate::core::types::Timestamp;
use crate::metrics::Metrics;
use crate::store::{DeliveryStatus, StatusOutcome, Store};

/// Which provider called.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provider {
    /// Meta's WhatsApp Cloud API.
    WhatsApp,
    /// Twilio.
    Twilio,
    /// Vonage.
    Vonage,
}

impl Provider {
    fn index(self) -> usize {
        match self {
            Provider::WhatsApp => 0,
            Provider::Twilio => 1,
            Provider::Vonage => 2,
        }
    }
}

/// An inbound message from a customer's phone.
#[derive(Clone, PartialEq, Eq)]
pub struct Inbound {
    /// The sender as the provider wrote it.
    pub from: String,
    /// The text, or a button's title.
    pub text: String,
    /// The nearcast channel it came by.
    pub channel: String,
}

impl std::fmt::Debug for Inbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A sender's number and text are personal data: never in a log.
        f.debug_struct("Inbound")
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

/// What one webhook request reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Delivery status by provider message id.
    pub statuses: Vec<(String, DeliveryStatus)>,
    /// Inbound messages.
    pub inbound: Vec<Inbound>,
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_str()
}

/// The nearcast channel a provider's traffic belongs to: the first
/// configured channel on that adapter (and provider channel), else the
/// conventional name.
fn channel_for(channels: &[ChannelSettings], provider: Provider, sub: &str) -> String {
    channels
        .iter()
        .find(|c| match (&c.adapter, provider) {
            (AdapterSettings::WhatsApp(_), Provider::WhatsApp) => true,
            (AdapterSettings::Twilio(t), Provider::Twilio) => t.whatsapp == (sub == "whatsapp"),
            (AdapterSettings::Vonage(v), Provider::Vonage) => {
                v.channel.wire_name() == sub
                    || (v.channel == VonageChannel::Viber && sub == "viber")
            }
            _ => false,
        })
        .map_or_else(
            || match sub {
                "viber_service" => "viber".to_owned(),
                other => other.to_owned(),
            },
            |c| c.name.clone(),
        )
}

/// Meta: `entry[].changes[].value.statuses[]` and `.messages[]`.
#[must_use]
pub fn parse_meta(body: &Value, channels: &[ChannelSettings]) -> Report {
    let mut r = Report::default();
    let channel = channel_for(channels, Provider::WhatsApp, "whatsapp");
    let list = |v: &Value, k: &str| {
        v.get(k)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    for entry in list(body, "entry") {
        for change in list(&entry, "changes") {
            let Some(value) = change.get("value") else {
                continue;
            };
            for s in list(value, "statuses") {
                let Some(id) = str_at(&s, &["id"]) else {
                    continue;
                };
                let status = match str_at(&s, &["status"]).unwrap_or("") {
                    "delivered" => DeliveryStatus::Delivered,
                    "read" => DeliveryStatus::Read,
                    "failed" => {
                        let e = s.get("errors").and_then(|e| e.get(0));
                        let code = e.and_then(|e| e.get("code")).map(ToString::to_string);
                        let title = e.and_then(|e| str_at(e, &["title"]));
                        DeliveryStatus::Failed {
                            error: failure("whatsapp", code.as_deref(), title),
                        }
                    }
                    _ => DeliveryStatus::Sent,
                };
                r.statuses.push((id.to_owned(), status));
            }
            for m in list(value, "messages") {
                let Some(from) = str_at(&m, &["from"]) else {
                    continue;
                };
                let text = str_at(&m, &["text", "body"])
                    .or_else(|| str_at(&m, &["button", "text"]))
                    .or_else(|| str_at(&m, &["button", "payload"]))
                    .or_else(|| str_at(&m, &["interactive", "button_reply", "title"]))
                    .or_else(|| str_at(&m, &["interactive", "list_reply", "title"]))
                    .unwrap_or("");
                r.inbound.push(Inbound {
                    from: from.to_owned(),
                    text: text.to_owned(),
                    channel: channel.clone(),
                });
            }
        }
    }
    r
}

/// Twilio: a status callback (`MessageSid`, `MessageStatus`, `ErrorCode`)
/// or an incoming message (`From`, `Body`, `ButtonText`).
#[must_use]
pub fn parse_twilio(params: &[(String, String)], channels: &[ChannelSettings]) -> Report {
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let mut r = Report::default();
    match (
        get("MessageStatus").or_else(|| get("SmsStatus")),
        get("MessageSid").or_else(|| get("SmsSid")),
    ) {
        (Some(status), Some(sid)) if status != "received" => {
            let status = match status {
                "delivered" => DeliveryStatus::Delivered,
                "read" => DeliveryStatus::Read,
                "undelivered" | "failed" => DeliveryStatus::Failed {
                    error: failure("twilio", get("ErrorCode"), get("ErrorMessage")),
                },
                _ => DeliveryStatus::Sent,
            };
            r.statuses.push((sid.to_owned(), status));
        }
        _ => {
            if let Some(from) = get("From") {
                let sub = if from.starts_with("whatsapp:") {
                    "whatsapp"
                } else {
                    "sms"
                };
                let text = get("ButtonText")
                    .filter(|t| !t.is_empty())
                    .or_else(|| get("Body"))
                    .unwrap_or("");
                r.inbound.push(Inbound {
                    from: from.to_owned(),
                    text: text.to_owned(),
                    channel: channel_for(channels, Provider::Twilio, sub),
                });
            }
        }
    }
    r
}

/// Vonage Messages v1: a status (`message_uuid`, `status`, `error`) or an
/// inbound message (`from`, `text`, `reply`, `button`), with `channel`.
#[must_use]
pub fn parse_vonage(body: &Value, channels: &[ChannelSettings]) -> Report {
    let mut r = Report::default();
    let sub = str_at(body, &["channel"]).unwrap_or("sms");
    if let (Some(id), Some(status)) = (str_at(body, &["message_uuid"]), str_at(body, &["status"])) {
        let status = match status {
            "delivered" => DeliveryStatus::Delivered,
            "read" => DeliveryStatus::Read,
            "rejected" | "undeliverable" => {
                let code = body
                    .get("error")
                    .and_then(|e| e.get("title").or_else(|| e.get("type")))
                    .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned));
                let detail = str_at(body, &["error", "detail"]);
                DeliveryStatus::Failed {
                    error: failure("vonage", code.as_deref(), detail.or(Some(status))),
                }
            }
            _ => DeliveryStatus::Sent,
        };
        r.statuses.push((id.to_owned(), status));
    } else if let Some(from) = str_at(body, &["from"]) {
        let text = str_at(body, &["text"])
            .or_else(|| str_at(body, &["reply", "title"]))
            .or_else(|| str_at(body, &["button", "text"]))
            .or_else(|| str_at(body, &["button", "payload"]))
            .unwrap_or("");
        r.inbound.push(Inbound {
            from: from.to_owned(),
            text: text.to_owned(),
            channel: channel_for(channels, Provider::Vonage, sub),
        });
    }
    r
}

/// `provider code: title` for `outbox.error`: the code kept as a short
/// token (a scrubber would take a six-digit code for a number), the title
/// scrubbed of phone numbers.
fn failure(provider: &str, code: Option<&str>, title: Option<&str>) -> String {
    let code: Option<String> = code.map(|c| {
        c.chars()
            .filter(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '.' | '-' | '_'))
            .take(16)
            .collect()
    });
    let title = title.map(scrub);
    match (code.filter(|c| !c.is_empty()), title) {
        (Some(c), Some(t)) => format!("{provider} {c}: {t}"),
        (Some(c), None) => format!("{provider} {c}"),
        (None, Some(t)) => format!("{provider}: {t}"),
        (None, None) => format!("{provider}: not delivered"),
    }
}

/// What applying a report did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Applied {
    /// Status reports that moved a message forward.
    pub applied: u64,
    /// Status reports that changed nothing (known id).
    pub unchanged: u64,
    /// Status reports for unknown provider ids.
    pub unknown: u64,
    /// Inbound messages from customers.
    pub inbound: u64,
    /// Inbound messages from unknown numbers (dropped).
    pub ignored: u64,
}

/// Applies a verified report to the store at `now`.
///
/// # Errors
/// Database failures (the provider retries on a 5xx).
pub fn apply(
    store: &mut Store,
    report: &Report,
    now: Timestamp,
    metrics: &Metrics,
) -> Result<Applied, crate::store::Error> {
    let w = &metrics.webhooks;
    let mut done = Applied::default();
    for (id, status) in &report.statuses {
        match store.apply_delivery_status(id, status, now)? {
            StatusOutcome::Applied => {
                done.applied += 1;
                Metrics::bump(&w.status_applied);
            }
            StatusOutcome::Unchanged => {
                done.unchanged += 1;
                Metrics::bump(&w.status_unchanged);
            }
            StatusOutcome::Unknown => {
                done.unknown += 1;
                Metrics::bump(&w.status_unknown);
            }
        }
    }
    for m in &report.inbound {
        let customer = match normalise_phone(&m.from) {
            Some(phone) => store.customer_by_phone(&phone)?,
            None => None,
        };
        let Some(c) = customer else {
            done.ignored += 1;
            Metrics::bump(&w.inbound_unknown);
            tracing::debug!(channel = %m.channel, "inbound message from a number that is no customer's; dropped");
            continue;
        };
        done.inbound += 1;
        Metrics::bump(&w.inbound_known);
        store.record_inbound(c.key, &m.channel, now)?;
        match intent(&m.text) {
            Intent::OptOut => {
                if !c.opted_out {
                    store.opt_out(&c.id, now)?;
                    Metrics::bump(&w.opt_outs);
                    tracing::info!(customer = %c.id, channel = %m.channel, "opted out by reply; every channel");
                }
            }
            Intent::Confirm => {
                let n = store.confirm_pending(c.key, &m.channel, now)?;
                if n > 0 {
                    Metrics::bump(&w.confirmations);
                    tracing::info!(customer = %c.id, channel = %m.channel, consents = n, "double opt-in confirmed by reply");
                }
            }
            Intent::Other => {}
        }
    }
    Ok(done)
}

fn rejected(api: &Api, provider: Provider, why: Reject) -> Response {
    Metrics::bump(&api.metrics.webhooks.rejected[provider.index()]);
    tracing::warn!(?provider, reason = %why, "webhook refused");
    let status = match why {
        Reject::Missing => StatusCode::UNAUTHORIZED,
        Reject::Invalid | Reject::Stale => StatusCode::FORBIDDEN,
    };
    (status, axum::Json(json!({"error": why.to_string()}))).into_response()
}

fn not_configured(provider: Provider) -> Response {
    tracing::debug!(
        ?provider,
        "webhook for a provider without configured secrets"
    );
    (
        StatusCode::NOT_FOUND,
        axum::Json(json!({"error": "this webhook is not configured"})),
    )
        .into_response()
}

async fn apply_report(api: Arc<Api>, report: Report) -> Response {
    let now = api.clock.now();
    let a = api.clone();
    let done = tokio::task::spawn_blocking(move || {
        let mut store = a
            .store
            .lock()
            .map_err(|_| "store lock poisoned".to_owned())?;
        apply(&mut store, &report, now, &a.metrics).map_err(|e| e.to_string())
    })
    .await;
    match done {
        Ok(Ok(done)) => (StatusCode::OK, axum::Json(done)).into_response(),
        Ok(Err(e)) => internal(&e),
        Err(e) => internal(&e.to_string()),
    }
}

/// Meta's verification handshake parameters.
#[derive(Deserialize)]
pub(super) struct Handshake {
    #[serde(rename = "hub.mode")]
    mode: Option<String>,
    #[serde(rename = "hub.verify_token")]
    verify_token: Option<String>,
    #[serde(rename = "hub.challenge")]
    challenge: Option<String>,
}

/// `GET /webhooks/whatsapp`: echo `hub.challenge` when the token matches.
pub(super) async fn meta_handshake(
    State(api): State<Arc<Api>>,
    Query(q): Query<Handshake>,
) -> Response {
    let Some(hook) = api.config.whatsapp.as_ref() else {
        return not_configured(Provider::WhatsApp);
    };
    let token = match secret(&api, &hook.verify_token) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let given = q.verify_token.unwrap_or_default();
    let ok = q.mode.as_deref() == Some("subscribe")
        && super::same_secret(given.as_bytes(), token.expose().as_bytes());
    match (ok, q.challenge) {
        (true, Some(challenge)) => (StatusCode::OK, challenge).into_response(),
        _ => {
            Metrics::bump(&api.metrics.webhooks.rejected[Provider::WhatsApp.index()]);
            (StatusCode::FORBIDDEN, "verification failed").into_response()
        }
    }
}

/// `POST /webhooks/whatsapp`.
pub(super) async fn meta(State(api): State<Arc<Api>>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(hook) = api.config.whatsapp.as_ref() else {
        return not_configured(Provider::WhatsApp);
    };
    let app_secret = match secret(&api, &hook.app_secret) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let header = headers
        .get("x-hub-signature-256")
        .and_then(|h| h.to_str().ok());
    if let Err(why) = signature::verify_meta(app_secret.expose().as_bytes(), &body, header) {
        return rejected(&api, Provider::WhatsApp, why);
    }
    let Ok(json) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "not JSON").into_response();
    };
    let report = parse_meta(&json, &api.channels);
    apply_report(api, report).await
}

/// `POST /webhooks/twilio` (form-encoded).
pub(super) async fn twilio(
    State(api): State<Arc<Api>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (Some(token_ref), Some(public)) =
        (api.config.twilio.as_ref(), api.config.public_url.as_ref())
    else {
        return not_configured(Provider::Twilio);
    };
    let token = match secret(&api, token_ref) {
        Ok(t) => t,
        Err(r) => return r,
    };
    // Twilio signs the URL it was told to call: the public address, this
    // path, and the query string if the callback URL had one.
    let mut url = format!("{public}{}", uri.path());
    if let Some(q) = uri.query() {
        url.push('?');
        url.push_str(q);
    }
    let params: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
    let header = headers
        .get("x-twilio-signature")
        .and_then(|h| h.to_str().ok());
    if let Err(why) = signature::verify_twilio(token.expose().as_bytes(), &url, &params, header) {
        return rejected(&api, Provider::Twilio, why);
    }
    let report = parse_twilio(&params, &api.channels);
    apply_report(api, report).await
}

/// `POST /webhooks/vonage` (JSON, signed JWT).
pub(super) async fn vonage(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(secret_ref) = api.config.vonage.as_ref() else {
        return not_configured(Provider::Vonage);
    };
    let key = match secret(&api, secret_ref) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let auth = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok());
    if let Err(why) =
        signature::verify_vonage(key.expose().as_bytes(), &body, auth, api.clock.now())
    {
        return rejected(&api, Provider::Vonage, why);
    }
    let Ok(json) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "not JSON").into_response();
    };
    let report = parse_vonage(&json, &api.channels);
    apply_report(api, report).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_payload_statuses_and_button_replies() {
        let body = json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "messages", "value": {
            "statuses": [
                {"id": "wamid.A", "status": "read", "timestamp": "1700000000", "recipient_id": "4915112345678"},
                {"id": "wamid.B", "status": "failed", "timestamp": "1700000000", "errors": [{"code": 131026, "title": "Message undeliverable"}]}
            ],
            "messages": [
                {"from": "4915112345678", "id": "wamid.C", "type": "button", "button": {"text": "JA", "payload": "confirm"}}
            ]
        }}]}]});
        let r = parse_meta(&body, &[]);
        assert_eq!(
            r.statuses,
            [
                ("wamid.A".to_owned(), DeliveryStatus::Read),
                (
                    "wamid.B".to_owned(),
                    DeliveryStatus::Failed {
                        error: "whatsapp 131026: Message undeliverable".into()
                    }
                )
            ]
        );
        assert_eq!(
            r.inbound,
            [Inbound {
                from: "4915112345678".into(),
                text: "JA".into(),
                channel: "whatsapp".into()
            }]
        );
    }

    #[test]
    fn twilio_status_and_inbound() {
        let p = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter().map(|(a, b)| ((*a).into(), (*b).into())).collect()
        };
        let r = parse_twilio(
            &p(&[
                ("MessageSid", "SM1"),
                ("MessageStatus", "undelivered"),
                ("ErrorCode", "30003"),
            ]),
            &[],
        );
        assert_eq!(
            r.statuses,
            [(
                "SM1".to_owned(),
                DeliveryStatus::Failed {
                    error: "twilio 30003".into()
                }
            )]
        );
        let r = parse_twilio(
            &p(&[
                ("MessageSid", "SM2"),
                ("SmsStatus", "received"),
                ("From", "whatsapp:+4915112345678"),
                ("Body", "Stop"),
            ]),
            &[],
        );
        assert_eq!(r.statuses, []);
        assert_eq!(r.inbound[0].channel, "whatsapp");
        assert_eq!(r.inbound[0].text, "Stop");
    }
}

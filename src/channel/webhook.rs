//! The `webhook` adapter: a JSON POST to the retailer's own system (a CRM,
//! a messaging hub nearcast has no adapter for), signed so the receiver
//! knows it came from this box and is not a replay.
//!
//! Headers: `Idempotency-Key` (the outbox key: the same message always
//! carries the same key, also after a retry or a restart),
//! `X-Nearcast-Timestamp` (Unix seconds of the send), and
//! `X-Nearcast-Signature: sha256=<hex>`, the HMAC-SHA256 with the shared
//! key of `<timestamp>.<body>`. A receiver recomputes it over the raw body,
//! compares in constant time, and refuses timestamps more than a few
//! minutes off ([`verify`] does exactly that).
//!
//! What the receiver's status means: 2xx sent (an optional JSON `id` is
//! kept as the provider id); 409 "already have this key", also sent;
//! 410 the customer is gone or unsubscribed (no other channel is tried);
//! 422 not reachable this way (the next channel is tried); 408, 425, 429,
//! 5xx retry, honouring `Retry-After`; 401, 403, 404, 405 the channel's
//! settings are wrong; any other 4xx fails the message.
//!
//! `build_request` and `classify` are pure; `Webhook` only sends.

use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use super::http::{self, HttpRequest, HttpResponse};
use super::{Outgoing, SendResult};
use crate::core::types::Timestamp;
use crate::credentials::{Secret, SecretRef};

/// JSON POST to the retailer's own system, signed with HMAC-SHA256.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookSettings {
    /// Where to post.
    pub url: String,
    /// The signing key.
    pub token: SecretRef,
    /// Time a request may take.
    pub timeout: Duration,
}

/// The header carrying the signature.
pub const SIGNATURE: &str = "X-Nearcast-Signature";
/// The header carrying the signed timestamp.
pub const TIMESTAMP: &str = "X-Nearcast-Timestamp";
/// The header carrying the outbox key.
pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";

/// The webhook adapter.
pub type Webhook = http::Provider<WebhookSettings>;

// The receiver gets the outbox key as `Idempotency-Key` and answers 409 to
// one it already has (see docs/webhook.md).
http::provider_api!(WebhookSettings, "webhook", dedupes: true);

fn rfc3339(t: Timestamp) -> Value {
    jiff::Timestamp::from_millisecond(t.0).map_or(Value::Null, |t| json!(t.to_string()))
}

/// The signed request for `msg`.
///
/// # Errors
/// None: a webhook takes every message (the `Result` is every provider's).
pub fn build_request(
    msg: &Outgoing<'_>,
    s: &WebhookSettings,
    key: &Secret,
) -> Result<HttpRequest, SendResult> {
    let i = msg.item;
    let r = msg.rendered;
    let template = r.template.as_ref().map_or(Value::Null, |t| {
        json!({ "name": t.name, "language": t.language, "params": t.params, "buttons": t.buttons })
    });
    let body = json!({
        "id": i.key,
        "customer": i.customer,
        "first_name": i.first_name,
        "phone": i.phone,
        "channel": i.channel.as_str(),
        "campaign": i.campaign,
        "message": i.message,
        "variant": r.variant.name(),
        "text": r.text,
        "image": r.image,
        "template": template,
        "points": i.points,
        "balance": i.balance,
        "attempt": i.attempts,
        "created_at": rfc3339(i.created_at),
        "expires_at": rfc3339(i.expires_at),
        "sent_at": rfc3339(msg.at),
    })
    .to_string()
    .into_bytes();
    let ts = msg.at.0.div_euclid(1000).to_string();
    Ok(HttpRequest::post(
        s.url.clone(),
        vec![
            ("Content-Type".into(), "application/json".into()),
            (IDEMPOTENCY_KEY.into(), i.key.clone()),
            (TIMESTAMP.into(), ts.clone()),
            (SIGNATURE.into(), sign(key.expose().as_bytes(), &ts, &body)),
        ],
        body,
    ))
}

fn mac(key: &[u8], timestamp: &str, body: &[u8]) -> Hmac<Sha256> {
    // HMAC takes keys of any length; this cannot fail.
    let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| <Hmac<Sha256> as KeyInit>::new(&Default::default()));
    m.update(timestamp.as_bytes());
    m.update(b".");
    m.update(body);
    m
}

/// `sha256=<hex HMAC-SHA256(key, "<timestamp>.<body>")>`.
#[must_use]
pub fn sign(key: &[u8], timestamp: &str, body: &[u8]) -> String {
    format!(
        "sha256={}",
        hex::encode(mac(key, timestamp, body).finalize().into_bytes())
    )
}

/// What a receiver does: checks the signature over the raw body in
/// constant time and refuses a timestamp further than `tolerance` from
/// `now` (a replayed or delayed request).
#[must_use]
pub fn verify(
    key: &[u8],
    timestamp: &str,
    body: &[u8],
    signature: &str,
    now: Timestamp,
    tolerance: Duration,
) -> bool {
    let Ok(ts) = timestamp.parse::<i64>() else {
        return false;
    };
    let skew = now.0.div_euclid(1000).abs_diff(ts);
    if skew > tolerance.as_secs() {
        return false;
    }
    let Some(sig) = signature
        .strip_prefix("sha256=")
        .and_then(|h| hex::decode(h).ok())
    else {
        return false;
    };
    mac(key, timestamp, body).verify_slice(&sig).is_ok()
}

/// What the receiver's answer means (see the module docs). `now` dates
/// `Retry-After`.
#[must_use]
pub fn classify(resp: &HttpResponse, now: Timestamp) -> SendResult {
    match resp.status {
        200..=299 => SendResult::Sent {
            provider_id: resp
                .json()
                .as_ref()
                .and_then(|j| j.get("id"))
                .and_then(Value::as_str)
                .map(str::to_owned),
        },
        409 => SendResult::Sent { provider_id: None },
        410 => SendResult::Failed {
            error: "webhook: HTTP 410: the receiver says the customer is gone or unsubscribed"
                .into(),
        },
        422 => SendResult::Fallback {
            error: "webhook: HTTP 422: the receiver cannot reach the customer this way".into(),
        },
        _ => resp.by_status(now, "webhook"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::http::{RETRY_THROTTLED, RETRY_TRANSIENT};
    use crate::core::message::{Rendered, TemplateCall, Variant};
    use crate::credentials::SecretRef;

    fn settings() -> WebhookSettings {
        WebhookSettings {
            url: "https://crm.example.com/nearcast".into(),
            token: SecretRef::Env("T".into()),
            timeout: Duration::from_secs(10),
        }
    }

    #[test]
    fn a_signed_json_post() {
        let item = crate::channel::whatsapp::tests::item();
        let r = Rendered {
            variant: Variant::Rich,
            text: "Hallo Anna!".into(),
            image: None,
            template: Some(TemplateCall {
                name: "welcome_back".into(),
                language: "de".into(),
                params: vec!["Anna".into()],
                buttons: vec!["Angebote".into()],
            }),
        };
        let at = Timestamp(1_795_510_803_250);
        let msg = Outgoing {
            item: &item,
            rendered: &r,
            at,
        };
        let req = build_request(&msg, &settings(), &Secret::new("k3y")).unwrap();
        assert_eq!(req.url, "https://crm.example.com/nearcast");
        let body = r#"{"attempt":1,"balance":110,"campaign":"welcome","channel":"whatsapp","created_at":"2026-11-24T09:00:00Z","customer":"anna","expires_at":"2026-11-24T09:10:00Z","first_name":"Anna","id":"3-welcome-1795510800000","image":null,"message":"welcome","phone":"+4915112345678","points":10,"sent_at":"2026-11-24T09:00:03.25Z","template":{"buttons":["Angebote"],"language":"de","name":"welcome_back","params":["Anna"]},"text":"Hallo Anna!","variant":"rich"}"#;
        assert_eq!(req.body_text(), body);
        assert_eq!(
            req.header("Idempotency-Key"),
            Some("3-welcome-1795510800000")
        );
        assert_eq!(req.header("X-Nearcast-Timestamp"), Some("1795510803"));
        let sig = req.header("X-Nearcast-Signature").unwrap();
        // Independently: HMAC-SHA256("k3y", "1795510803." + body).
        let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(b"k3y").unwrap();
        m.update(format!("1795510803.{body}").as_bytes());
        assert_eq!(
            sig,
            format!("sha256={}", hex::encode(m.finalize().into_bytes()))
        );

        let tol = Duration::from_secs(300);
        assert!(verify(b"k3y", "1795510803", body.as_bytes(), sig, at, tol));
        // Another key, a changed body, a moved timestamp, a replay an hour later.
        assert!(!verify(b"key", "1795510803", body.as_bytes(), sig, at, tol));
        assert!(!verify(
            b"k3y",
            "1795510803",
            body.replace("10,", "99,").as_bytes(),
            sig,
            at,
            tol
        ));
        assert!(!verify(b"k3y", "1795510804", body.as_bytes(), sig, at, tol));
        assert!(!verify(
            b"k3y",
            "1795510803",
            body.as_bytes(),
            sig,
            Timestamp(at.0 + 3_600_000),
            tol
        ));
        assert!(!verify(
            b"k3y",
            "1795510803",
            body.as_bytes(),
            "sha256=zz",
            at,
            tol
        ));
    }

    #[test]
    fn the_receivers_answers() {
        let now = Timestamp(0);
        let c = |s: u16, body: &str| classify(&HttpResponse::new(s, body), now);
        assert_eq!(
            c(200, r#"{"id":"crm-77"}"#),
            SendResult::Sent {
                provider_id: Some("crm-77".into())
            }
        );
        assert_eq!(c(204, ""), SendResult::Sent { provider_id: None });
        assert_eq!(c(409, ""), SendResult::Sent { provider_id: None });
        assert_eq!(
            c(410, ""),
            SendResult::Failed {
                error: "webhook: HTTP 410: the receiver says the customer is gone or unsubscribed"
                    .into()
            }
        );
        assert_eq!(
            c(422, ""),
            SendResult::Fallback {
                error: "webhook: HTTP 422: the receiver cannot reach the customer this way".into()
            }
        );
        assert_eq!(
            c(429, ""),
            SendResult::Retry {
                after: RETRY_THROTTLED,
                error: "webhook: HTTP 429".into()
            }
        );
        assert_eq!(
            classify(
                &HttpResponse::new(503, "").with_header("Retry-After", "12"),
                now
            ),
            SendResult::Retry {
                after: Duration::from_secs(12),
                error: "webhook: HTTP 503".into()
            }
        );
        assert_eq!(
            c(500, ""),
            SendResult::Retry {
                after: RETRY_TRANSIENT,
                error: "webhook: HTTP 500".into()
            }
        );
        assert_eq!(
            c(401, ""),
            SendResult::Misconfigured {
                error: "webhook: HTTP 401".into()
            }
        );
        assert_eq!(
            c(404, ""),
            SendResult::Misconfigured {
                error: "webhook: HTTP 404".into()
            }
        );
        assert_eq!(
            c(400, ""),
            SendResult::Failed {
                error: "webhook: HTTP 400".into()
            }
        );
    }
}

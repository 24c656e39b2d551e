//! The `twilio` adapter: Programmable Messaging,
//! `POST /2010-04-01/Accounts/{AccountSid}/Messages.json`, form-encoded,
//! HTTP basic auth (account SID or API key, and its secret).
//!
//! SMS: `Body`. MMS: `Body` and `MediaUrl` (Twilio's wire format repeats
//! the key for several media). WhatsApp (`provider_channel = "whatsapp"`):
//! a rich variant goes out as the Content template configured for its
//! message (`content_sids`, with the rendered parameters as
//! `ContentVariables` `{"1": …, "2": …}`; header image and buttons are part
//! of the Content template itself); other variants follow the same
//! 24-hour-window rule as the `whatsapp` adapter (`allow_text`). The sender
//! is `From`, or a Messaging Service's pool (`MessagingServiceSid`), which
//! also lets Twilio drop a message still queued when its TTL ends
//! (`ValidityPeriod`).
//!
//! Twilio takes no idempotency key: a send interrupted mid-flight is
//! reconciled by the worker, not here. `build_request` and `classify` are
//! pure; `Twilio` only sends.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use super::http::{self, HttpRequest, HttpResponse, RETRY_THROTTLED, RETRY_TRANSIENT};
use super::{Outgoing, SendResult};
use crate::core::message::Variant;
use crate::core::types::Timestamp;
use crate::credentials::{Secret, SecretRef};

/// Twilio Programmable Messaging.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TwilioSettings {
    /// `https://api.twilio.com` unless overridden.
    pub base_url: String,
    /// `AC…`: the account the messages are sent from.
    pub account_sid: String,
    /// `SK…`: an API key to authenticate with instead of the account SID.
    pub api_key: Option<String>,
    /// Auth token (or the API key's secret).
    pub token: SecretRef,
    /// Sender: E.164 number, alphanumeric sender id, or `whatsapp:+…`.
    pub from: Option<String>,
    /// `MG…`: a Messaging Service whose sender pool picks the sender.
    pub messaging_service_sid: Option<String>,
    /// WhatsApp through Twilio (`provider_channel = "whatsapp"`) rather than SMS/MMS.
    pub whatsapp: bool,
    /// Content template SIDs (`HX…`) by message id, for WhatsApp.
    pub content_sids: BTreeMap<String, String>,
    /// Free text on WhatsApp (see [`WhatsAppSettings::allow_text`]).
    pub allow_text: bool,
    /// Where Twilio posts delivery status.
    pub status_callback: Option<String>,
    /// Time a request may take.
    pub timeout: Duration,
}

/// Twilio's longest `ValidityPeriod`, in seconds.
const MAX_VALIDITY: i64 = 36_000;

/// The twilio adapter.
pub type Twilio = http::Provider<TwilioSettings>;

http::provider_api!(TwilioSettings, "twilio", dedupes: false);

/// The request for `msg`, or why none is sent.
///
/// # Errors
/// The [`SendResult`] to record instead of sending: no phone number; on
/// WhatsApp, no Content SID for the message, or free text not allowed.
pub fn build_request(
    msg: &Outgoing<'_>,
    s: &TwilioSettings,
    token: &Secret,
) -> Result<HttpRequest, SendResult> {
    let phone = msg.phone("twilio")?;
    let r = msg.rendered;
    let mut form: Vec<(&str, String)> = Vec::new();
    form.push((
        "To",
        if s.whatsapp {
            format!("whatsapp:{phone}")
        } else {
            phone.to_owned()
        },
    ));
    if let Some(from) = &s.from {
        form.push(("From", from.clone()));
    }
    if let Some(ms) = &s.messaging_service_sid {
        form.push(("MessagingServiceSid", ms.clone()));
    }
    match (&r.template, r.variant, s.whatsapp) {
        (Some(call), Variant::Rich, true) => {
            let Some(sid) = s.content_sids.get(&msg.item.message) else {
                return Err(SendResult::Fallback {
                    error: format!(
                        "twilio: no Content template for message `{}` (content_sids)",
                        msg.item.message
                    ),
                });
            };
            form.push(("ContentSid", sid.clone()));
            if !call.params.is_empty() {
                let vars: serde_json::Map<String, Value> = call
                    .params
                    .iter()
                    .enumerate()
                    .map(|(i, p)| ((i + 1).to_string(), Value::String(p.clone())))
                    .collect();
                form.push(("ContentVariables", Value::Object(vars).to_string()));
            }
        }
        (_, _, true) if !s.allow_text => {
            return Err(SendResult::Fallback {
                error: "twilio: no WhatsApp template for this message, and free text reaches a \
                        customer only inside a 24-hour window they opened (allow_text = false)"
                    .into(),
            });
        }
        _ => {
            form.push(("Body", r.text.clone()));
            if let Some(url) = &r.image {
                form.push(("MediaUrl", url.clone()));
            }
        }
    }
    if let Some(cb) = &s.status_callback {
        form.push(("StatusCallback", cb.clone()));
    }
    if s.messaging_service_sid.is_some() {
        let left = msg.item.expires_at.0.saturating_sub(msg.at.0) / 1000;
        form.push(("ValidityPeriod", left.clamp(1, MAX_VALIDITY).to_string()));
    }
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    let user = s.api_key.as_deref().unwrap_or(&s.account_sid);
    Ok(HttpRequest::post(
        http::join(
            &s.base_url,
            &format!("2010-04-01/Accounts/{}/Messages.json", s.account_sid),
        ),
        vec![
            ("Authorization".into(), http::basic_auth(user, token)),
            (
                "Content-Type".into(),
                "application/x-www-form-urlencoded".into(),
            ),
        ],
        body.into_bytes(),
    ))
}

/// What Twilio's answer means. `now` dates `Retry-After`.
#[must_use]
pub fn classify(resp: &HttpResponse, now: Timestamp) -> SendResult {
    let json = resp.json();
    if (200..300).contains(&resp.status) {
        let sid = json
            .as_ref()
            .and_then(|j| j.get("sid"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        return SendResult::Sent { provider_id: sid };
    }
    let Some(code) = json
        .as_ref()
        .and_then(|j| j.get("code"))
        .and_then(Value::as_i64)
    else {
        return resp.by_status(now, "twilio");
    };
    let detail = json
        .as_ref()
        .and_then(|j| j.get("message"))
        .and_then(Value::as_str)
        .map(http::scrub)
        .unwrap_or_default();
    let error = format!(
        "twilio {code}: {}",
        meaning(code).unwrap_or(detail.as_str())
    );
    match code {
        20429 | 63018 => resp.retry(now, RETRY_THROTTLED, error),
        20500 | 20503 => resp.retry(now, RETRY_TRANSIENT, error),
        // The customer replied STOP to this sender: suppress, on every
        // channel (a STOP is a wish, not a missing route).
        21610 => SendResult::Failed { error },
        // Not reachable this way: a landline, a region not enabled, no
        // route from this sender, outside WhatsApp's window, not on
        // WhatsApp, an unusable Content template.
        21408 | 21612 | 21614 | 21655 | 63003 | 63016 | 63024 => SendResult::Fallback { error },
        // This message or number cannot be sent at all.
        21211 | 21602 | 21617 | 21619 | 21620 | 21656 => SendResult::Failed { error },
        // The account, the credentials or the sender.
        20003 | 20404 | 21212 | 21606 | 21659 | 21703 | 21704 | 21705 | 63007 => {
            SendResult::Misconfigured { error }
        }
        _ => resp.unknown_code(now, "twilio", error),
    }
}

/// Twilio's error codes, in words of our own (Twilio's texts quote the
/// phone number).
fn meaning(code: i64) -> Option<&'static str> {
    Some(match code {
        20003 => "authentication failed",
        20404 => "account or resource not found",
        20429 => "too many requests",
        20500 => "internal error at Twilio",
        20503 => "service unavailable",
        21211 => "invalid 'To' number",
        21212 => "invalid 'From' number",
        21408 => "sending to this region is not enabled",
        21602 => "message body required",
        21606 => "'From' cannot send this message",
        21610 => "the customer unsubscribed (replied STOP)",
        21612 => "no route from this sender to this number",
        21614 => "'To' is not a mobile number",
        21617 => "message body too long",
        21619 => "a body or media is required",
        21620 => "invalid media URL",
        21655 => "invalid ContentSid",
        21656 => "invalid ContentVariables",
        21659 => "'From' is not a Twilio number",
        21703 => "Messaging Service has no senders",
        21704 => "Messaging Service has no senders for this number",
        21705 => "invalid Messaging Service",
        63003 => "channel could not find the 'To' address",
        63007 => "no WhatsApp sender for 'From'",
        63016 => "outside WhatsApp's 24-hour window: free text not allowed",
        63018 => "rate limit of the WhatsApp sender",
        63024 => "invalid WhatsApp recipient",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::message::{Rendered, TemplateCall};
    use crate::credentials::SecretRef;
    use std::collections::BTreeMap;
    use std::time::Duration;

    const AC: &str = "AC0123456789abcdef0123456789abcdef";
    const MG: &str = "MG0123456789abcdef0123456789abcdef";
    const HX: &str = "HX0123456789abcdef0123456789abcdef";

    fn settings() -> TwilioSettings {
        TwilioSettings {
            base_url: "https://api.twilio.com".into(),
            account_sid: AC.into(),
            api_key: None,
            token: SecretRef::Env("T".into()),
            from: Some("+14155552345".into()),
            messaging_service_sid: None,
            whatsapp: false,
            content_sids: BTreeMap::new(),
            allow_text: false,
            status_callback: None,
            timeout: Duration::from_secs(10),
        }
    }

    fn whatsapp() -> TwilioSettings {
        TwilioSettings {
            from: Some("whatsapp:+14155552345".into()),
            whatsapp: true,
            content_sids: [("welcome".to_owned(), HX.to_owned())].into(),
            ..settings()
        }
    }

    fn rendered(variant: Variant) -> Rendered {
        Rendered {
            variant,
            text: "Hallo Anna & Co, 100% frisch!".into(),
            image: (variant != Variant::Plain).then(|| "https://cdn.example.com/w.jpg?x=1".into()),
            template: (variant == Variant::Rich).then(|| TemplateCall {
                name: "welcome_back".into(),
                language: "de".into(),
                params: vec!["Anna".into(), "10".into()],
                buttons: vec!["Angebote".into()],
            }),
        }
    }

    fn build(r: &Rendered, s: &TwilioSettings) -> Result<HttpRequest, SendResult> {
        let item = crate::channel::whatsapp::tests::item();
        let msg = Outgoing {
            item: &item,
            rendered: r,
            at: Timestamp(1_795_510_803_000),
        };
        build_request(&msg, s, &Secret::new("authtoken"))
    }

    #[test]
    fn sms_and_mms() {
        let req = build(&rendered(Variant::Plain), &settings()).unwrap();
        assert_eq!(
            req.url,
            "https://api.twilio.com/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Messages.json"
        );
        assert_eq!(
            req.header("Authorization"),
            Some(http::basic_auth(AC, &Secret::new("authtoken")).as_str())
        );
        assert_eq!(
            req.header("Content-Type"),
            Some("application/x-www-form-urlencoded")
        );
        assert_eq!(
            req.body_text(),
            "To=%2B4915112345678&From=%2B14155552345&Body=Hallo+Anna+%26+Co%2C+100%25+frisch%21"
        );
        assert_eq!(
            build(&rendered(Variant::Medium), &settings())
                .unwrap()
                .body_text(),
            "To=%2B4915112345678&From=%2B14155552345&Body=Hallo+Anna+%26+Co%2C+100%25+frisch%21\
             &MediaUrl=https%3A%2F%2Fcdn.example.com%2Fw.jpg%3Fx%3D1"
        );
    }

    #[test]
    fn messaging_service_api_key_callback_and_validity() {
        let s = TwilioSettings {
            from: None,
            messaging_service_sid: Some(MG.into()),
            api_key: Some("SK0123456789abcdef0123456789abcdef".into()),
            status_callback: Some("https://box.example.com/hooks/twilio".into()),
            ..settings()
        };
        let req = build(&rendered(Variant::Plain), &s).unwrap();
        // 600 s TTL from the decision, 3 s of it gone.
        assert_eq!(
            req.body_text(),
            "To=%2B4915112345678&MessagingServiceSid=MG0123456789abcdef0123456789abcdef\
             &Body=Hallo+Anna+%26+Co%2C+100%25+frisch%21\
             &StatusCallback=https%3A%2F%2Fbox.example.com%2Fhooks%2Ftwilio&ValidityPeriod=597"
        );
        assert_eq!(
            req.header("Authorization"),
            Some(
                http::basic_auth(
                    "SK0123456789abcdef0123456789abcdef",
                    &Secret::new("authtoken")
                )
                .as_str()
            )
        );
    }

    #[test]
    fn whatsapp_content_templates() {
        assert_eq!(
            build(&rendered(Variant::Rich), &whatsapp())
                .unwrap()
                .body_text(),
            "To=whatsapp%3A%2B4915112345678&From=whatsapp%3A%2B14155552345\
             &ContentSid=HX0123456789abcdef0123456789abcdef\
             &ContentVariables=%7B%221%22%3A%22Anna%22%2C%222%22%3A%2210%22%7D"
        );
        let none = TwilioSettings {
            content_sids: BTreeMap::new(),
            ..whatsapp()
        };
        assert_eq!(
            build(&rendered(Variant::Rich), &none).unwrap_err(),
            SendResult::Fallback {
                error: "twilio: no Content template for message `welcome` (content_sids)".into()
            }
        );
        assert_eq!(
            build(&rendered(Variant::Plain), &whatsapp()).unwrap_err(),
            SendResult::Fallback {
                error: "twilio: no WhatsApp template for this message, and free text reaches a \
                        customer only inside a 24-hour window they opened (allow_text = false)"
                    .into()
            }
        );
        let text = TwilioSettings {
            allow_text: true,
            ..whatsapp()
        };
        assert_eq!(
            build(&rendered(Variant::Plain), &text).unwrap().body_text(),
            "To=whatsapp%3A%2B4915112345678&From=whatsapp%3A%2B14155552345\
             &Body=Hallo+Anna+%26+Co%2C+100%25+frisch%21"
        );
    }

    fn twilio_error(code: i64, status: u16) -> HttpResponse {
        HttpResponse::new(
            status,
            &serde_json::json!({
                "code": code,
                "message": "The 'To' number +4915112345678 is not valid.",
                "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
                "status": status,
            })
            .to_string(),
        )
    }

    #[test]
    fn every_documented_code() {
        let now = Timestamp(0);
        let c = |code, status| classify(&twilio_error(code, status), now);
        use crate::channel::http::expect::{conf, fail, fall, retry};
        let table = [
            (
                c(21610, 400),
                fail("twilio 21610: the customer unsubscribed (replied STOP)"),
            ),
            (c(21211, 400), fail("twilio 21211: invalid 'To' number")),
            (c(21617, 400), fail("twilio 21617: message body too long")),
            (c(21620, 400), fail("twilio 21620: invalid media URL")),
            (
                c(21614, 400),
                fall("twilio 21614: 'To' is not a mobile number"),
            ),
            (
                c(21612, 400),
                fall("twilio 21612: no route from this sender to this number"),
            ),
            (
                c(21408, 400),
                fall("twilio 21408: sending to this region is not enabled"),
            ),
            (
                c(63016, 400),
                fall("twilio 63016: outside WhatsApp's 24-hour window: free text not allowed"),
            ),
            (
                c(63024, 400),
                fall("twilio 63024: invalid WhatsApp recipient"),
            ),
            (c(21655, 400), fall("twilio 21655: invalid ContentSid")),
            (
                c(20429, 429),
                retry(RETRY_THROTTLED, "twilio 20429: too many requests"),
            ),
            (
                c(63018, 429),
                retry(
                    RETRY_THROTTLED,
                    "twilio 63018: rate limit of the WhatsApp sender",
                ),
            ),
            (
                c(20500, 500),
                retry(RETRY_TRANSIENT, "twilio 20500: internal error at Twilio"),
            ),
            (c(20003, 401), conf("twilio 20003: authentication failed")),
            (
                c(20404, 404),
                conf("twilio 20404: account or resource not found"),
            ),
            (
                c(21606, 400),
                conf("twilio 21606: 'From' cannot send this message"),
            ),
            (
                c(21659, 400),
                conf("twilio 21659: 'From' is not a Twilio number"),
            ),
            (
                c(63007, 400),
                conf("twilio 63007: no WhatsApp sender for 'From'"),
            ),
            (
                c(21705, 400),
                conf("twilio 21705: invalid Messaging Service"),
            ),
            // Unknown codes by status; Twilio's text without the number.
            (
                c(30000, 400),
                fail("twilio 30000: The 'To' number … is not valid."),
            ),
            (
                c(30001, 503),
                retry(
                    RETRY_TRANSIENT,
                    "twilio 30001: The 'To' number … is not valid.",
                ),
            ),
        ];
        for (i, (got, want)) in table.into_iter().enumerate() {
            assert_eq!(got, want, "row {i}");
        }
    }

    #[test]
    fn success_and_retry_after() {
        let ok = r#"{"sid":"SMaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","status":"queued"}"#;
        assert_eq!(
            classify(&HttpResponse::new(201, ok), Timestamp(0)),
            SendResult::Sent {
                provider_id: Some("SMaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".into())
            }
        );
        let r = twilio_error(20429, 429).with_header("Retry-After", "3");
        assert_eq!(
            classify(&r, Timestamp(0)),
            SendResult::Retry {
                after: Duration::from_secs(3),
                error: "twilio 20429: too many requests".into()
            }
        );
        assert_eq!(
            classify(&HttpResponse::new(503, "busy"), Timestamp(0)),
            SendResult::Retry {
                after: RETRY_TRANSIENT,
                error: "twilio: HTTP 503".into()
            }
        );
    }
}

//! The `whatsapp` adapter: WhatsApp Business Cloud API,
//! `POST /{version}/{phone-number-id}/messages` with a bearer token.
//!
//! A message nearcast sends is business-initiated: the customer walked in,
//! they did not write to the store. Meta delivers those only as approved
//! templates; free text reaches a customer only inside the 24-hour window
//! that opens when *they* write. nearcast does not track that window (the
//! inbound side would have to, and a window can close between check and
//! send), so the rule is: a rich variant goes out as its template; a
//! message without one falls over to the customer's next channel without a
//! request, unless the channel sets `allow_text = true`, in which case it
//! is tried as free text and Meta's "outside the window" answer (131047)
//! falls over instead.
//!
//! `build_request` and `classify` are pure; `WhatsApp` only sends.

use std::time::Duration;

use serde_json::{Value, json};

use super::http::{self, HttpRequest, HttpResponse, RETRY_THROTTLED, RETRY_TRANSIENT};
use super::{Outgoing, SendResult};
use crate::core::message::{Rendered, TemplateCall, Variant};
use crate::core::types::Timestamp;
use crate::credentials::{Secret, SecretRef};

/// WhatsApp Business Cloud API (Meta).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WhatsAppSettings {
    /// `https://graph.facebook.com` unless overridden (tests, demo stand-in).
    pub base_url: String,
    /// Graph API version, `v23.0`.
    pub api_version: String,
    /// The business phone number's id.
    pub phone_number_id: String,
    /// Access token (system user token).
    pub token: SecretRef,
    /// Send a message without a template as free text. Meta delivers free
    /// text only inside a customer-initiated 24-hour window, which nearcast
    /// does not track; outside it the answer (131047) falls over.
    pub allow_text: bool,
    /// Time a request may take.
    pub timeout: Duration,
}

/// The whatsapp adapter.
pub type WhatsApp = http::Provider<WhatsAppSettings>;

http::provider_api!(WhatsAppSettings, "whatsapp", dedupes: false);

/// The request for `msg`, or why none is sent (no phone number; no
/// template and free text not allowed).
///
/// # Errors
/// The [`SendResult`] to record instead of sending.
pub fn build_request(
    msg: &Outgoing<'_>,
    s: &WhatsAppSettings,
    token: &Secret,
) -> Result<HttpRequest, SendResult> {
    let to = msg.phone("whatsapp")?;
    let body = message_body(to, msg.rendered, &msg.item.key, s.allow_text)?;
    Ok(HttpRequest::post(
        http::join(
            &s.base_url,
            &format!("{}/{}/messages", s.api_version, s.phone_number_id),
        ),
        vec![
            ("Authorization".into(), format!("Bearer {}", token.expose())),
            ("Content-Type".into(), "application/json".into()),
        ],
        body.to_string().into_bytes(),
    ))
}

/// The JSON body: a template for a rich variant, free text (or an image
/// with a caption) otherwise when allowed.
fn message_body(to: &str, r: &Rendered, key: &str, allow_text: bool) -> Result<Value, SendResult> {
    let base = |kind: &str| {
        json!({
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": to,
            "type": kind,
        })
    };
    match (&r.template, r.variant) {
        (Some(call), Variant::Rich) => {
            let mut v = base("template");
            v["template"] = template(call, r.image.as_deref(), key);
            Ok(v)
        }
        _ if !allow_text => Err(SendResult::Fallback {
            error: "whatsapp: no approved template for this message, and free text reaches a \
                    customer only inside a 24-hour window they opened (allow_text = false)"
                .into(),
        }),
        _ => Ok(match &r.image {
            Some(link) => {
                let mut v = base("image");
                v["image"] = json!({ "link": link, "caption": r.text });
                v
            }
            None => {
                let mut v = base("text");
                v["text"] = json!({ "body": r.text, "preview_url": false });
                v
            }
        }),
    }
}

/// Meta's template object: header image, body parameters, and one
/// quick-reply payload per button (`<outbox key>#<index>`, so a tap can be
/// traced back to the message). Vonage's WhatsApp `custom` messages carry
/// the same object.
#[must_use]
pub fn template(call: &TemplateCall, image: Option<&str>, key: &str) -> Value {
    let mut components = Vec::new();
    if let Some(link) = image {
        components.push(json!({
            "type": "header",
            "parameters": [{ "type": "image", "image": { "link": link } }],
        }));
    }
    if !call.params.is_empty() {
        let params: Vec<Value> = call
            .params
            .iter()
            .map(|p| json!({ "type": "text", "text": p }))
            .collect();
        components.push(json!({ "type": "body", "parameters": params }));
    }
    for (i, _label) in call.buttons.iter().enumerate() {
        components.push(json!({
            "type": "button",
            "sub_type": "quick_reply",
            "index": i.to_string(),
            "parameters": [{ "type": "payload", "payload": format!("{key}#{i}") }],
        }));
    }
    let mut t = json!({
        "name": call.name,
        // Without `policy` Meta's document rejects the object; "deterministic"
        // is the only policy there is: exactly this language, no fallback.
        "language": { "policy": "deterministic", "code": call.language },
    });
    if !components.is_empty() {
        t["components"] = Value::Array(components);
    }
    t
}

/// What Meta's answer means. `now` dates `Retry-After`.
#[must_use]
pub fn classify(resp: &HttpResponse, now: Timestamp) -> SendResult {
    let json = resp.json();
    if (200..300).contains(&resp.status) {
        let id = json
            .as_ref()
            .and_then(|j| j.pointer("/messages/0/id"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        return SendResult::Sent { provider_id: id };
    }
    let err = json.as_ref().and_then(|j| j.get("error"));
    let Some(code) = err.and_then(|e| e.get("code")).and_then(Value::as_i64) else {
        return resp.by_status(now, "whatsapp");
    };
    let subcode = err
        .and_then(|e| e.get("error_subcode"))
        .and_then(Value::as_i64);
    let detail = err
        .and_then(|e| {
            e.pointer("/error_data/details")
                .or_else(|| e.get("message"))
        })
        .and_then(Value::as_str)
        .map(http::scrub)
        .unwrap_or_default();
    let error = format!(
        "whatsapp {code}: {}",
        meaning(code).unwrap_or(detail.as_str())
    );
    match code {
        // Throughput, app and account rate limits, pair rate limit: retry.
        4 | 80007 | 130429 | 131056 => resp.retry(now, RETRY_THROTTLED, error),
        // Spam rate limit: the number may send fewer messages for a while.
        131048 => resp.retry(now, RETRY_THROTTLED * 15, error),
        // Meta's side is unwell.
        1 | 2 | 131000 | 131016 => resp.retry(now, RETRY_TRANSIENT, error),
        // Not reachable on WhatsApp: not a user, outside the 24-hour window,
        // not on a test number's allow list, held back by Meta's per-user
        // marketing limit, or a template that cannot be used right now.
        131026 | 131047 | 131030 | 131049 | 132000 | 132001 | 132005 | 132007 | 132012 | 132015
        | 132016 => SendResult::Fallback { error },
        // The customer stopped marketing messages from this business: a
        // wish not to be messaged, not a missing route, so no other
        // channel is tried either.
        131050 => SendResult::Failed { error },
        // Our request was wrong for this message.
        131008 | 131009 | 131021 | 131051 | 131052 | 131053 | 135000 => {
            SendResult::Failed { error }
        }
        // The channel's credentials, number or account.
        0 | 3 | 10 | 190 | 200..=299 | 368 | 131005 | 131031 | 131042 | 131045 | 133010 => {
            SendResult::Misconfigured { error }
        }
        // "Object does not exist": the phone number id is wrong.
        100 if subcode == Some(33) => SendResult::Misconfigured { error },
        100 => SendResult::Failed { error },
        _ => resp.unknown_code(now, "whatsapp", error),
    }
}

/// Meta's error codes, in words of our own (Meta's texts may quote the
/// recipient's number).
fn meaning(code: i64) -> Option<&'static str> {
    Some(match code {
        0 => "authentication failed",
        1 => "unknown API error",
        2 => "service temporarily unavailable",
        3 => "the app lacks the capability",
        4 => "too many API calls by the app",
        10 => "permission denied",
        190 => "access token expired or invalid",
        200..=299 => "permission missing",
        368 => "account temporarily blocked for policy violations",
        80007 => "WhatsApp Business Account rate limit",
        130429 => "throughput limit reached",
        131000 => "something went wrong at Meta",
        131005 => "access denied",
        131008 => "required parameter missing",
        131009 => "parameter value invalid",
        131016 => "service unavailable",
        131021 => "recipient is the sender",
        131026 => "undeliverable: not a WhatsApp user or cannot receive this message",
        131030 => "recipient not on the test number's allow list",
        131031 => "business account locked",
        131042 => "business payment problem",
        131045 => "phone number not registered (certificate)",
        131047 => "outside the 24-hour customer service window",
        131048 => "spam rate limit reached",
        131049 => "held back by Meta to keep engagement healthy",
        131050 => "the customer stopped marketing messages",
        131051 => "unsupported message type",
        131056 => "too many messages to this customer (pair rate limit)",
        132000 => "template parameter count mismatch",
        132001 => "template does not exist in this language",
        132005 => "template text too long after parameters",
        132007 => "template violates a format policy",
        132012 => "template parameter format mismatch",
        132015 => "template paused for low quality",
        132016 => "template disabled",
        133010 => "phone number not registered",
        _ => return None,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::core::types::Purpose;
    use crate::store::OutboxItem;
    use std::time::Duration;

    fn settings(allow_text: bool) -> WhatsAppSettings {
        WhatsAppSettings {
            base_url: "https://graph.facebook.com".into(),
            api_version: "v23.0".into(),
            phone_number_id: "106540352242922".into(),
            token: SecretRef::Env("T".into()),
            allow_text,
            timeout: Duration::from_secs(10),
        }
    }

    pub(crate) fn item() -> OutboxItem {
        OutboxItem {
            id: 7,
            key: "3-welcome-1795510800000".into(),
            customer: "anna".into(),
            first_name: "Anna".into(),
            phone: Some("+4915112345678".into()),
            channels: vec!["whatsapp".into(), "sms".into()],
            purpose: Purpose::Welcome,
            consented: vec!["whatsapp".into(), "sms".into()],
            campaign: "welcome".into(),
            message: "welcome".into(),
            channel: "whatsapp".into(),
            variant: Variant::Rich,
            points: 10,
            balance: 110,
            created_at: Timestamp(1_795_510_800_000),
            expires_at: Timestamp(1_795_511_400_000),
            attempts: 1,
            interrupted: false,
        }
    }

    fn rich() -> Rendered {
        Rendered {
            variant: Variant::Rich,
            text: "Hallo Anna, willkommen zurück!".into(),
            image: Some("https://cdn.example.com/w.jpg".into()),
            template: Some(TemplateCall {
                name: "welcome_back".into(),
                language: "de".into(),
                params: vec!["Anna".into(), "10".into()],
                buttons: vec!["Angebote".into(), "Abmelden".into()],
            }),
        }
    }

    fn plain() -> Rendered {
        Rendered {
            variant: Variant::Plain,
            text: "Hallo Anna!".into(),
            image: None,
            template: None,
        }
    }

    fn build(r: &Rendered, allow_text: bool) -> Result<HttpRequest, SendResult> {
        let item = item();
        let msg = Outgoing {
            item: &item,
            rendered: r,
            at: Timestamp(1_795_510_803_000),
        };
        build_request(&msg, &settings(allow_text), &Secret::new("EAAtoken"))
    }

    #[test]
    fn a_rich_variant_is_its_template() {
        let req = build(&rich(), false).unwrap();
        assert_eq!(
            req.url,
            "https://graph.facebook.com/v23.0/106540352242922/messages"
        );
        assert_eq!(
            req.headers,
            [
                ("Authorization".to_owned(), "Bearer EAAtoken".to_owned()),
                ("Content-Type".to_owned(), "application/json".to_owned())
            ]
        );
        assert_eq!(
            req.body_text(),
            r##"{"messaging_product":"whatsapp","recipient_type":"individual","template":{"components":[{"parameters":[{"image":{"link":"https://cdn.example.com/w.jpg"},"type":"image"}],"type":"header"},{"parameters":[{"text":"Anna","type":"text"},{"text":"10","type":"text"}],"type":"body"},{"index":"0","parameters":[{"payload":"3-welcome-1795510800000#0","type":"payload"}],"sub_type":"quick_reply","type":"button"},{"index":"1","parameters":[{"payload":"3-welcome-1795510800000#1","type":"payload"}],"sub_type":"quick_reply","type":"button"}],"language":{"code":"de","policy":"deterministic"},"name":"welcome_back"},"to":"+4915112345678","type":"template"}"##
        );
    }

    #[test]
    fn a_template_without_parameters_has_no_components() {
        let mut r = rich();
        r.image = None;
        if let Some(t) = &mut r.template {
            t.params.clear();
            t.buttons.clear();
        }
        assert_eq!(
            build(&r, false).unwrap().body_text(),
            r#"{"messaging_product":"whatsapp","recipient_type":"individual","template":{"language":{"code":"de","policy":"deterministic"},"name":"welcome_back"},"to":"+4915112345678","type":"template"}"#
        );
    }

    #[test]
    fn free_text_only_when_allowed() {
        assert_eq!(
            build(&plain(), false).unwrap_err(),
            SendResult::Fallback {
                error: "whatsapp: no approved template for this message, and free text reaches a \
                        customer only inside a 24-hour window they opened (allow_text = false)"
                    .into()
            }
        );
        assert_eq!(
            build(&plain(), true).unwrap().body_text(),
            r#"{"messaging_product":"whatsapp","recipient_type":"individual","text":{"body":"Hallo Anna!","preview_url":false},"to":"+4915112345678","type":"text"}"#
        );
        let medium = Rendered {
            variant: Variant::Medium,
            image: Some("https://cdn.example.com/w.jpg".into()),
            ..plain()
        };
        assert_eq!(
            build(&medium, true).unwrap().body_text(),
            r#"{"image":{"caption":"Hallo Anna!","link":"https://cdn.example.com/w.jpg"},"messaging_product":"whatsapp","recipient_type":"individual","to":"+4915112345678","type":"image"}"#
        );
    }

    #[test]
    fn no_phone_falls_over() {
        let mut item = item();
        item.phone = None;
        let r = rich();
        let msg = Outgoing {
            item: &item,
            rendered: &r,
            at: Timestamp(0),
        };
        assert_eq!(
            build_request(&msg, &settings(false), &Secret::new("t")).unwrap_err(),
            SendResult::Fallback {
                error: "whatsapp: the customer has no phone number".into()
            }
        );
    }

    fn meta_error(code: i64, subcode: Option<i64>) -> String {
        let mut e = json!({ "message": "(#x) something +4915112345678", "type": "OAuthException", "code": code, "fbtrace_id": "A1" });
        if let Some(s) = subcode {
            e["error_subcode"] = json!(s);
        }
        json!({ "error": e }).to_string()
    }

    #[test]
    fn every_documented_code() {
        let now = Timestamp(1_795_510_800_000);
        let c =
            |status, code, sub| classify(&HttpResponse::new(status, &meta_error(code, sub)), now);
        use crate::channel::http::expect::{conf, fail, fall, retry};
        let table = [
            (
                c(400, 131047, None),
                fall("whatsapp 131047: outside the 24-hour customer service window"),
            ),
            (
                c(400, 131026, None),
                fall(
                    "whatsapp 131026: undeliverable: not a WhatsApp user or cannot receive this message",
                ),
            ),
            (
                c(400, 131030, None),
                fall("whatsapp 131030: recipient not on the test number's allow list"),
            ),
            (
                c(400, 131049, None),
                fall("whatsapp 131049: held back by Meta to keep engagement healthy"),
            ),
            (
                c(404, 132001, None),
                fall("whatsapp 132001: template does not exist in this language"),
            ),
            (
                c(400, 132000, None),
                fall("whatsapp 132000: template parameter count mismatch"),
            ),
            (
                c(400, 132015, None),
                fall("whatsapp 132015: template paused for low quality"),
            ),
            (
                c(400, 132016, None),
                fall("whatsapp 132016: template disabled"),
            ),
            (
                c(429, 130429, None),
                retry(RETRY_THROTTLED, "whatsapp 130429: throughput limit reached"),
            ),
            (
                c(400, 131056, None),
                retry(
                    RETRY_THROTTLED,
                    "whatsapp 131056: too many messages to this customer (pair rate limit)",
                ),
            ),
            (
                c(429, 80007, None),
                retry(
                    RETRY_THROTTLED,
                    "whatsapp 80007: WhatsApp Business Account rate limit",
                ),
            ),
            (
                c(400, 4, None),
                retry(RETRY_THROTTLED, "whatsapp 4: too many API calls by the app"),
            ),
            (
                c(400, 131048, None),
                retry(
                    RETRY_THROTTLED * 15,
                    "whatsapp 131048: spam rate limit reached",
                ),
            ),
            (
                c(500, 131000, None),
                retry(
                    RETRY_TRANSIENT,
                    "whatsapp 131000: something went wrong at Meta",
                ),
            ),
            (
                c(503, 131016, None),
                retry(RETRY_TRANSIENT, "whatsapp 131016: service unavailable"),
            ),
            (
                c(500, 2, None),
                retry(
                    RETRY_TRANSIENT,
                    "whatsapp 2: service temporarily unavailable",
                ),
            ),
            (
                c(400, 131050, None),
                fail("whatsapp 131050: the customer stopped marketing messages"),
            ),
            (
                c(400, 131009, None),
                fail("whatsapp 131009: parameter value invalid"),
            ),
            (
                c(400, 131008, None),
                fail("whatsapp 131008: required parameter missing"),
            ),
            (c(400, 100, None), fail("whatsapp 100: (#x) something …")),
            (
                c(400, 100, Some(33)),
                conf("whatsapp 100: (#x) something …"),
            ),
            (
                c(401, 190, None),
                conf("whatsapp 190: access token expired or invalid"),
            ),
            (c(401, 0, None), conf("whatsapp 0: authentication failed")),
            (c(403, 10, None), conf("whatsapp 10: permission denied")),
            (c(403, 200, None), conf("whatsapp 200: permission missing")),
            (
                c(400, 368, None),
                conf("whatsapp 368: account temporarily blocked for policy violations"),
            ),
            (
                c(400, 131031, None),
                conf("whatsapp 131031: business account locked"),
            ),
            (
                c(400, 133010, None),
                conf("whatsapp 133010: phone number not registered"),
            ),
            // Unknown codes go by the HTTP status, with Meta's words scrubbed.
            (
                c(503, 999_999, None),
                retry(RETRY_TRANSIENT, "whatsapp 999999: (#x) something …"),
            ),
            (
                c(400, 999_999, None),
                fail("whatsapp 999999: (#x) something …"),
            ),
        ];
        for (i, (got, want)) in table.into_iter().enumerate() {
            assert_eq!(got, want, "row {i}");
        }
        // error_data.details is preferred over the message.
        let body = r#"{"error":{"message":"(#131047) Re-engagement message","type":"OAuthException","code":999998,"error_data":{"messaging_product":"whatsapp","details":"More than 24 hours have passed"}}}"#;
        assert_eq!(
            classify(&HttpResponse::new(400, body), now),
            fail("whatsapp 999998: More than 24 hours have passed")
        );
    }

    #[test]
    fn success_retry_after_and_bodies_that_are_not_meta_errors() {
        let now = Timestamp(1_795_510_800_000);
        let ok = r#"{"messaging_product":"whatsapp","contacts":[{"input":"+4915112345678","wa_id":"4915112345678"}],"messages":[{"id":"wamid.HBgLMTY1"}]}"#;
        assert_eq!(
            classify(&HttpResponse::new(200, ok), now),
            SendResult::Sent {
                provider_id: Some("wamid.HBgLMTY1".into())
            }
        );
        let r = HttpResponse::new(429, &meta_error(130429, None)).with_header("Retry-After", "7");
        assert_eq!(
            classify(&r, now),
            SendResult::Retry {
                after: Duration::from_secs(7),
                error: "whatsapp 130429: throughput limit reached".into()
            }
        );
        assert_eq!(
            classify(&HttpResponse::new(502, "<html>Bad gateway</html>"), now),
            SendResult::Retry {
                after: RETRY_TRANSIENT,
                error: "whatsapp: HTTP 502".into()
            }
        );
        assert_eq!(
            classify(&HttpResponse::new(401, ""), now),
            SendResult::Misconfigured {
                error: "whatsapp: HTTP 401".into()
            }
        );
    }
}

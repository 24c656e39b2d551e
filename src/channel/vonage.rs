//! The `vonage` adapter: Messages API v1, `POST /v1/messages`, JSON, HTTP
//! basic auth (API key and secret).
//!
//! One flat body per message: `channel`, `message_type`, `to` (E.164
//! without the `+`, as Vonage wants it), `from`, and `client_ref` = the
//! outbox key, which Vonage echoes in every status webhook, so a status
//! can be matched to its row even for a send whose answer was lost.
//! SMS: `text`. MMS: `image` with the text as caption. WhatsApp: a rich
//! variant as a `custom` message carrying Meta's template object (with the
//! header image and buttons the `template` type cannot express); other
//! variants as for the `whatsapp` adapter (`allow_text`). Viber: `text`, or
//! `image` with a caption.
//!
//! `build_request` and `classify` are pure; `Vonage` only sends.

use std::time::Duration;

use serde_json::{Value, json};

use super::http::{self, HttpRequest, HttpResponse, RETRY_THROTTLED, RETRY_TRANSIENT};
use super::{Outgoing, SendResult};
use crate::core::message::Variant;
use crate::core::types::Timestamp;
use crate::credentials::{Secret, SecretRef};

/// Which of Vonage's channels a `vonage` channel uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VonageChannel {
    /// SMS.
    Sms,
    /// MMS (US and Canada).
    Mms,
    /// WhatsApp.
    WhatsApp,
    /// Viber Business Messages.
    Viber,
}

impl VonageChannel {
    /// The Messages API's `channel` value.
    #[must_use]
    pub fn wire_name(self) -> &'static str {
        match self {
            VonageChannel::Sms => "sms",
            VonageChannel::Mms => "mms",
            VonageChannel::WhatsApp => "whatsapp",
            VonageChannel::Viber => "viber_service",
        }
    }
}

/// Vonage Messages API v1.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VonageSettings {
    /// `https://api.nexmo.com` unless overridden.
    pub base_url: String,
    /// API key (an account id, not a secret).
    pub api_key: String,
    /// API secret.
    pub token: SecretRef,
    /// Sender: number (digits), alphanumeric id (SMS), or Viber service id.
    pub from: String,
    /// Vonage channel.
    pub channel: VonageChannel,
    /// Free text on WhatsApp (see [`WhatsAppSettings::allow_text`]).
    pub allow_text: bool,
    /// Time a request may take.
    pub timeout: Duration,
}

/// The vonage adapter.
pub type Vonage = http::Provider<VonageSettings>;

// The Messages API carries the outbox key as `client_ref`.
http::provider_api!(VonageSettings, "vonage", dedupes: true);

/// The request for `msg`, or why none is sent.
///
/// # Errors
/// The [`SendResult`] to record instead of sending: no phone number; on
/// WhatsApp, no template and free text not allowed.
pub fn build_request(
    msg: &Outgoing<'_>,
    s: &VonageSettings,
    token: &Secret,
) -> Result<HttpRequest, SendResult> {
    let phone = msg.phone("vonage")?;
    let r = msg.rendered;
    let mut body = json!({
        "channel": s.channel.wire_name(),
        "to": phone.trim_start_matches('+'),
        "from": s.from,
        "client_ref": msg.item.key,
    });
    let text = |body: &mut Value| {
        body["message_type"] = json!("text");
        body["text"] = json!(r.text);
    };
    let image = |body: &mut Value, url: &str| {
        body["message_type"] = json!("image");
        body["image"] = json!({ "url": url, "caption": r.text });
    };
    match s.channel {
        VonageChannel::Sms => text(&mut body),
        VonageChannel::Mms | VonageChannel::Viber => match &r.image {
            Some(url) => image(&mut body, url),
            None => text(&mut body),
        },
        VonageChannel::WhatsApp => match (&r.template, r.variant) {
            (Some(call), Variant::Rich) => {
                body["message_type"] = json!("custom");
                let mut custom = json!({ "type": "template" });
                custom["template"] =
                    super::whatsapp::template(call, r.image.as_deref(), &msg.item.key);
                body["custom"] = custom;
            }
            _ if !s.allow_text => {
                return Err(SendResult::Fallback {
                    error: "vonage: no WhatsApp template for this message, and free text reaches \
                            a customer only inside a 24-hour window they opened (allow_text = false)"
                        .into(),
                });
            }
            _ => match &r.image {
                Some(url) => image(&mut body, url),
                None => text(&mut body),
            },
        },
    }
    Ok(HttpRequest::post(
        http::join(&s.base_url, "v1/messages"),
        vec![
            ("Authorization".into(), http::basic_auth(&s.api_key, token)),
            ("Content-Type".into(), "application/json".into()),
            ("Accept".into(), "application/json".into()),
        ],
        body.to_string().into_bytes(),
    ))
}

/// What Vonage's answer means. Errors are RFC 7807 problem documents whose
/// `type` ends in the error code (`…/messages-olympus#1000`). `now` dates
/// `Retry-After`.
#[must_use]
pub fn classify(resp: &HttpResponse, now: Timestamp) -> SendResult {
    let json = resp.json();
    if (200..300).contains(&resp.status) {
        let id = json
            .as_ref()
            .and_then(|j| j.get("message_uuid"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        return SendResult::Sent { provider_id: id };
    }
    let code = json
        .as_ref()
        .and_then(|j| j.get("type"))
        .and_then(Value::as_str)
        .and_then(|t| t.rsplit_once('#'))
        .and_then(|(_, c)| c.parse::<u32>().ok());
    let title = json
        .as_ref()
        .and_then(|j| j.get("title"))
        .and_then(Value::as_str)
        .map(http::scrub);
    let Some(code) = code else {
        return match (resp.by_status(now, "vonage"), title) {
            (SendResult::Failed { error }, Some(t)) => SendResult::Failed {
                error: format!("{error} ({t})"),
            },
            (r, _) => r,
        };
    };
    let error = format!(
        "vonage {code}: {}",
        meaning(code).map_or_else(|| title.unwrap_or_default(), str::to_owned)
    );
    match code {
        1000 | 1241 => resp.retry(now, RETRY_THROTTLED, error),
        1030 | 1100 | 1180 | 1220 | 1230 => resp.retry(now, RETRY_TRANSIENT, error),
        // Not reachable on this channel.
        1160 | 1200 | 1250 | 1260 | 1280 | 1300 | 1340 => SendResult::Fallback { error },
        // The number is barred or opted out (STOP), or this message cannot
        // be sent at all.
        1010 | 1020 | 1021 | 1022 | 1040 | 1050 | 1090 | 1170 | 1190 | 1210 | 1240 | 1270 => {
            SendResult::Failed { error }
        }
        // The account or the sender.
        1060 | 1070 | 1080 | 1120 | 1140 => SendResult::Misconfigured { error },
        _ => resp.unknown_code(now, "vonage", error),
    }
}

/// Vonage's error codes (the Messages API error list), shortened.
fn meaning(code: u32) -> Option<&'static str> {
    Some(match code {
        1000 => "throttled",
        1010 => "missing parameters",
        1020 => "invalid parameters",
        1021 => "invalid tag",
        1022 => "invalid template or template parameters",
        1030 => "internal error at Vonage",
        1040 => "invalid message",
        1050 => "number barred",
        1060 => "account barred",
        1070 => "account out of credit",
        1080 => "account not enabled for this API",
        1090 => "message too long",
        1100 => "communication failed",
        1120 => "sender address not allowed",
        1140 => "facility not allowed on this account",
        1160 => "destination not on the account's allow list",
        1170 => "invalid or missing recipient number",
        1180 => "recipient temporarily absent",
        1190 => "recipient permanently absent",
        1200 => "portability error",
        1210 => "rejected as spam",
        1220 => "handset busy",
        1230 => "network error",
        1240 => "the customer opted out (STOP)",
        1241 => "too many send requests",
        1250 => "unroutable",
        1260 => "destination unreachable",
        1270 => "age restriction",
        1280 => "blocked by the carrier",
        1300 => "not on this provider network (e.g. not a WhatsApp user)",
        1340 => "outside the 24-hour window",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::message::{Rendered, TemplateCall};
    use crate::credentials::SecretRef;
    use std::time::Duration;

    fn settings(channel: VonageChannel) -> VonageSettings {
        VonageSettings {
            base_url: "https://api.nexmo.com".into(),
            api_key: "abcd1234".into(),
            token: SecretRef::Env("T".into()),
            from: "447700900001".into(),
            channel,
            allow_text: false,
            timeout: Duration::from_secs(10),
        }
    }

    fn rendered(variant: Variant) -> Rendered {
        Rendered {
            variant,
            text: "Hallo Anna!".into(),
            image: (variant != Variant::Plain).then(|| "https://cdn.example.com/w.jpg".into()),
            template: (variant == Variant::Rich).then(|| TemplateCall {
                name: "welcome_back".into(),
                language: "de".into(),
                params: vec!["Anna".into()],
                buttons: vec![],
            }),
        }
    }

    fn build(v: Variant, s: &VonageSettings) -> Result<HttpRequest, SendResult> {
        let item = crate::channel::whatsapp::tests::item();
        let r = rendered(v);
        let msg = Outgoing {
            item: &item,
            rendered: &r,
            at: Timestamp(1_795_510_803_000),
        };
        build_request(&msg, s, &Secret::new("secret"))
    }

    #[test]
    fn one_flat_body_per_channel() {
        let req = build(Variant::Plain, &settings(VonageChannel::Sms)).unwrap();
        assert_eq!(req.url, "https://api.nexmo.com/v1/messages");
        assert_eq!(
            req.header("Authorization"),
            Some(http::basic_auth("abcd1234", &Secret::new("secret")).as_str())
        );
        assert_eq!(
            req.body_text(),
            r#"{"channel":"sms","client_ref":"3-welcome-1795510800000","from":"447700900001","message_type":"text","text":"Hallo Anna!","to":"4915112345678"}"#
        );
        assert_eq!(
            build(Variant::Medium, &settings(VonageChannel::Mms))
                .unwrap()
                .body_text(),
            r#"{"channel":"mms","client_ref":"3-welcome-1795510800000","from":"447700900001","image":{"caption":"Hallo Anna!","url":"https://cdn.example.com/w.jpg"},"message_type":"image","to":"4915112345678"}"#
        );
        assert_eq!(
            build(Variant::Rich, &settings(VonageChannel::WhatsApp))
                .unwrap()
                .body_text(),
            r#"{"channel":"whatsapp","client_ref":"3-welcome-1795510800000","custom":{"template":{"components":[{"parameters":[{"image":{"link":"https://cdn.example.com/w.jpg"},"type":"image"}],"type":"header"},{"parameters":[{"text":"Anna","type":"text"}],"type":"body"}],"language":{"code":"de","policy":"deterministic"},"name":"welcome_back"},"type":"template"},"from":"447700900001","message_type":"custom","to":"4915112345678"}"#
        );
        assert_eq!(
            build(Variant::Plain, &settings(VonageChannel::Viber))
                .unwrap()
                .body_text(),
            r#"{"channel":"viber_service","client_ref":"3-welcome-1795510800000","from":"447700900001","message_type":"text","text":"Hallo Anna!","to":"4915112345678"}"#
        );
    }

    #[test]
    fn whatsapp_free_text_only_when_allowed() {
        assert!(matches!(
            build(Variant::Plain, &settings(VonageChannel::WhatsApp)),
            Err(SendResult::Fallback { .. })
        ));
        let s = VonageSettings {
            allow_text: true,
            ..settings(VonageChannel::WhatsApp)
        };
        assert_eq!(
            build(Variant::Plain, &s).unwrap().body_text(),
            r#"{"channel":"whatsapp","client_ref":"3-welcome-1795510800000","from":"447700900001","message_type":"text","text":"Hallo Anna!","to":"4915112345678"}"#
        );
    }

    fn problem(code: u32, status: u16) -> HttpResponse {
        HttpResponse::new(
            status,
            &json!({
                "type": format!("https://developer.nexmo.com/api-errors/messages-olympus#{code}"),
                "title": "Something about +4915112345678",
                "detail": "details",
                "instance": "bf0ca0bf927b3b52e3cb03217e1a1ddf",
            })
            .to_string(),
        )
    }

    #[test]
    fn every_documented_code() {
        let now = Timestamp(0);
        let c = |code, status| classify(&problem(code, status), now);
        use crate::channel::http::expect::{conf, fail, fall, retry};
        let table = [
            (
                c(1000, 429),
                retry(RETRY_THROTTLED, "vonage 1000: throttled"),
            ),
            (
                c(1241, 429),
                retry(RETRY_THROTTLED, "vonage 1241: too many send requests"),
            ),
            (
                c(1030, 500),
                retry(RETRY_TRANSIENT, "vonage 1030: internal error at Vonage"),
            ),
            (
                c(1180, 422),
                retry(RETRY_TRANSIENT, "vonage 1180: recipient temporarily absent"),
            ),
            (
                c(1240, 422),
                fail("vonage 1240: the customer opted out (STOP)"),
            ),
            (c(1050, 422), fail("vonage 1050: number barred")),
            (
                c(1170, 422),
                fail("vonage 1170: invalid or missing recipient number"),
            ),
            (c(1020, 422), fail("vonage 1020: invalid parameters")),
            (
                c(1300, 422),
                fall("vonage 1300: not on this provider network (e.g. not a WhatsApp user)"),
            ),
            (
                c(1340, 422),
                fall("vonage 1340: outside the 24-hour window"),
            ),
            (c(1260, 422), fall("vonage 1260: destination unreachable")),
            (c(1250, 422), fall("vonage 1250: unroutable")),
            (c(1070, 402), conf("vonage 1070: account out of credit")),
            (
                c(1120, 422),
                conf("vonage 1120: sender address not allowed"),
            ),
            (c(1060, 403), conf("vonage 1060: account barred")),
            (
                c(1999, 503),
                retry(RETRY_TRANSIENT, "vonage 1999: Something about …"),
            ),
        ];
        for (i, (got, want)) in table.into_iter().enumerate() {
            assert_eq!(got, want, "row {i}");
        }
        // v1's own problem types for authentication and credit carry no code.
        let auth = r#"{"type":"https://developer.vonage.com/api-errors#unauthorized","title":"Unauthorized","detail":"You did not provide correct credentials."}"#;
        assert_eq!(
            classify(&HttpResponse::new(401, auth), now),
            SendResult::Misconfigured {
                error: "vonage: HTTP 401".into()
            }
        );
        let invalid = r#"{"type":"https://developer.vonage.com/api-errors/messages#1150","title":"Invalid params"}"#;
        assert_eq!(
            classify(&HttpResponse::new(422, invalid), now),
            SendResult::Failed {
                error: "vonage 1150: Invalid params".into()
            }
        );
    }

    #[test]
    fn success() {
        let ok = r#"{"message_uuid":"aaaaaaaa-bbbb-cccc-dddd-0123456789ab"}"#;
        assert_eq!(
            classify(&HttpResponse::new(202, ok), Timestamp(0)),
            SendResult::Sent {
                provider_id: Some("aaaaaaaa-bbbb-cccc-dddd-0123456789ab".into())
            }
        );
    }
}

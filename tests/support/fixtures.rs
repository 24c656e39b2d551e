//! Fixtures shared by the provider tests: customers whose phone number
//! picks the stand-in's answer, rendered variants, the expected results,
//! and the providers' success and error answers as their APIs send them.

use std::time::Duration;

use nearcast::channel::SendResult;
use nearcast::channel::{TwilioSettings, WhatsAppSettings};
use nearcast::core::message::{Rendered, TemplateCall, Variant};
use nearcast::core::types::{Purpose, Timestamp};
use nearcast::credentials::SecretRef;
use nearcast::store::OutboxItem;

use super::{Recorded, Reply};

pub const NOW: Timestamp = Timestamp(1_795_510_803_000);

/// A customer whose number selects the stand-in's answer: `+49151` and
/// eight digits, the provider's error code (0 for success).
pub fn phone(code: u32) -> String {
    format!("+49151{code:08}")
}

/// The scenario a request is for: the digits after `49151` in its body
/// (JSON `"+49151…"` or form `%2B49151…` alike).
pub fn scenario(r: &Recorded) -> u32 {
    let body = r.body_text();
    let i = body.find("49151").expect("a scenario phone number") + 5;
    body[i..i + 8].parse().unwrap()
}

pub fn item(code: u32) -> OutboxItem {
    OutboxItem {
        id: 1,
        key: format!("7-welcome-{code}"),
        customer: "anna".into(),
        first_name: "Anna".into(),
        phone: Some(phone(code)),
        channels: vec!["whatsapp".into(), "sms".into()],
        purpose: Purpose::Welcome,
        consented: vec!["whatsapp".into(), "sms".into()],
        campaign: "welcome".into(),
        message: "welcome".into(),
        channel: "whatsapp".into(),
        variant: Variant::Rich,
        points: 10,
        balance: 110,
        created_at: Timestamp(NOW.0 - 3000),
        expires_at: Timestamp(NOW.0 + 597_000),
        attempts: 1,
        interrupted: false,
    }
}

pub fn rich() -> Rendered {
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

pub fn plain() -> Rendered {
    Rendered {
        variant: Variant::Plain,
        text: "Hallo Anna, +10 Punkte!".into(),
        image: None,
        template: None,
    }
}

pub fn medium() -> Rendered {
    Rendered {
        variant: Variant::Medium,
        text: "Hallo Anna!".into(),
        image: Some("https://cdn.example.com/w.jpg".into()),
        template: None,
    }
}

pub fn retry(after: Duration, e: &str) -> SendResult {
    SendResult::Retry {
        after,
        error: e.into(),
    }
}
pub fn fall(e: &str) -> SendResult {
    SendResult::Fallback { error: e.into() }
}
pub fn fail(e: &str) -> SendResult {
    SendResult::Failed { error: e.into() }
}
pub fn conf(e: &str) -> SendResult {
    SendResult::Misconfigured { error: e.into() }
}
pub fn sent(id: &str) -> SendResult {
    SendResult::Sent {
        provider_id: Some(id.into()),
    }
}

pub fn meta_error(code: u32) -> String {
    format!(
        r#"{{"error":{{"message":"(#{code}) error for +4915112345678","type":"OAuthException","code":{code},"error_data":{{"messaging_product":"whatsapp","details":"details"}},"fbtrace_id":"AbC"}}}}"#
    )
}

/// Meta's answers by error code.
pub fn meta(r: &Recorded) -> Reply {
    match scenario(r) {
        0 => Reply::json(
            200,
            r#"{"messaging_product":"whatsapp","contacts":[{"input":"+4915100000000","wa_id":"4915100000000"}],"messages":[{"id":"wamid.OK"}]}"#,
        ),
        c @ (131_047 | 131_026 | 131_056 | 131_050 | 132_001) => Reply::json(400, &meta_error(c)),
        c @ 130_429 => Reply::json(429, &meta_error(c)).with_header("Retry-After", "17"),
        c @ 190 => Reply::json(401, &meta_error(c)),
        c @ 131_000 => Reply::json(500, &meta_error(c)),
        503 => Reply::json(503, "{}"),
        _ => Reply::Hang,
    }
}

pub fn wa_settings(base_url: String) -> WhatsAppSettings {
    WhatsAppSettings {
        base_url,
        api_version: "v23.0".into(),
        phone_number_id: "106540352242922".into(),
        token: SecretRef::Env("WA_TOKEN".into()),
        allow_text: false,
        timeout: Duration::from_secs(5),
    }
}

pub const AC: &str = "AC0123456789abcdef0123456789abcdef";
pub const HX: &str = "HX0123456789abcdef0123456789abcdef";

pub fn twilio_error(code: u32, status: u16) -> String {
    format!(
        r#"{{"code":{code},"message":"The 'To' number +4915112345678 is not valid.","more_info":"https://www.twilio.com/docs/errors/{code}","status":{status}}}"#
    )
}

/// Twilio's answers by error code.
pub fn twilio_api(r: &Recorded) -> Reply {
    match scenario(r) {
        0 => Reply::json(
            201,
            r#"{"sid":"SM00000000000000000000000000000001","status":"queued"}"#,
        ),
        c @ (21_610 | 21_211 | 21_614 | 63_016) => Reply::json(400, &twilio_error(c, 400)),
        c @ 20_429 => Reply::json(429, &twilio_error(c, 429))
            .with_header("Retry-After", "Tue, 24 Nov 2026 09:00:48 GMT"),
        c @ 20_003 => Reply::json(401, &twilio_error(c, 401)),
        _ => Reply::json(500, &twilio_error(20_500, 500)),
    }
}

pub fn twilio_settings(base_url: String, whatsapp: bool) -> TwilioSettings {
    TwilioSettings {
        base_url,
        account_sid: AC.into(),
        api_key: None,
        token: SecretRef::Env("TW_TOKEN".into()),
        from: Some(if whatsapp {
            "whatsapp:+14155552345".into()
        } else {
            "+14155552345".into()
        }),
        messaging_service_sid: None,
        whatsapp,
        content_sids: [("welcome".to_owned(), HX.to_owned())].into(),
        allow_text: false,
        status_callback: None,
        timeout: Duration::from_secs(5),
    }
}

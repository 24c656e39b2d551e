//! Each adapter's real requests validated against the provider's official
//! OpenAPI document: Stoplight Prism in proxy mode with `--errors` stands
//! between the adapter and a loopback stand-in, so a request the document
//! does not allow never reaches the stand-in, and the stand-in's answers
//! (success and the error classes) are checked against the document too.
//!
//! The documents are extracts of `../shared/specs/` (`tests/specs/*.extract.json`)
//! with the known defects patched by `tests/specs/*.overlay.json`, each
//! operation saying why. Prism is installed from `tests/package-lock.json`
//! with `npm ci` into the target directory on first use; when it cannot be
//! installed or started the tests fail, they never pass unchecked.
//! Vonage's Messages API v1 has no public OpenAPI document (only the v0.1
//! beta, a different request shape), so it is not validated here.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::time::Duration;

use nearcast::channel::SendResult;
use nearcast::channel::http::{
    Client, HttpRequest, HttpResponse, RETRY_THROTTLED, RETRY_TRANSIENT,
};
use nearcast::channel::{Outgoing, TwilioSettings, WhatsAppSettings, twilio, whatsapp};
use nearcast::core::message::Rendered;
use nearcast::credentials::Secret;
use support::fixtures::*;
use support::{Prism, StandIn};

/// Sends `req` through Prism and returns the answer, after checking that
/// Prism accepted the request (the stand-in got it) and found nothing wrong
/// with the stand-in's answer.
async fn through(
    prism: &Prism,
    upstream: &StandIn,
    req: &HttpRequest,
    label: &str,
) -> HttpResponse {
    let resp = Client::new()
        .unwrap()
        .execute(req, Duration::from_secs(20))
        .await
        .unwrap();
    let got = upstream.take();
    assert_eq!(
        got.len(),
        1,
        "{label}: Prism did not forward the request: HTTP {} {}\n{}",
        resp.status,
        String::from_utf8_lossy(&resp.body),
        prism.log_text()
    );
    assert_eq!(
        resp.header("sl-violations"),
        None,
        "{label}: Prism reported violations"
    );
    resp
}

/// A request the document forbids must be refused, or the validation is
/// not really on.
async fn refused(upstream: &StandIn, req: &HttpRequest, label: &str, why: &str) {
    let resp = Client::new()
        .unwrap()
        .execute(req, Duration::from_secs(20))
        .await
        .unwrap();
    assert!(upstream.take().is_empty(), "{label}: Prism let it through");
    assert_eq!(resp.status, 422, "{label}");
    let body = String::from_utf8_lossy(&resp.body);
    assert!(body.contains(why), "{label}: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whatsapp_requests_validate_against_metas_document() {
    let bin = support::prism();
    let upstream = StandIn::start(meta).await;
    let url = upstream.url();
    let prism = tokio::task::spawn_blocking(move || Prism::proxy(&bin, "whatsapp", &url))
        .await
        .unwrap();
    let settings = |allow_text| WhatsAppSettings {
        allow_text,
        ..wa_settings(prism.url.clone())
    };
    let token = Secret::new("EAAtoken");
    let build = |code: u32, r: &Rendered, allow_text: bool| {
        let item = item(code);
        whatsapp::build_request(
            &Outgoing {
                item: &item,
                rendered: r,
                at: NOW,
            },
            &settings(allow_text),
            &token,
        )
        .unwrap()
    };
    let cases: Vec<(&str, HttpRequest, SendResult)> = vec![
        (
            "template with header, body, two buttons",
            build(0, &rich(), false),
            sent("wamid.OK"),
        ),
        ("free text", build(0, &plain(), true), sent("wamid.OK")),
        (
            "image with caption",
            build(0, &medium(), true),
            sent("wamid.OK"),
        ),
        (
            "131047",
            build(131_047, &rich(), false),
            fall("whatsapp 131047: outside the 24-hour customer service window"),
        ),
        (
            "131026",
            build(131_026, &rich(), false),
            fall(
                "whatsapp 131026: undeliverable: not a WhatsApp user or cannot receive this message",
            ),
        ),
        (
            "130429",
            build(130_429, &rich(), false),
            retry(
                Duration::from_secs(17),
                "whatsapp 130429: throughput limit reached",
            ),
        ),
        (
            "131056",
            build(131_056, &rich(), false),
            retry(
                RETRY_THROTTLED,
                "whatsapp 131056: too many messages to this customer (pair rate limit)",
            ),
        ),
        (
            "190",
            build(190, &rich(), false),
            conf("whatsapp 190: access token expired or invalid"),
        ),
        (
            "131000",
            build(131_000, &rich(), false),
            retry(
                RETRY_TRANSIENT,
                "whatsapp 131000: something went wrong at Meta",
            ),
        ),
    ];
    for (label, req, want) in cases {
        let resp = through(&prism, &upstream, &req, label).await;
        assert_eq!(whatsapp::classify(&resp, NOW), want, "{label}");
    }
    // Controls: without `policy` Meta's document refuses the language.
    let mut bad = build(0, &rich(), false);
    bad.body = bad
        .body_text()
        .replace(r#""policy":"deterministic""#, r#""x":"y""#)
        .into_bytes();
    refused(&upstream, &bad, "no policy", "policy").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twilio_requests_validate_against_twilios_document() {
    let bin = support::prism();
    let upstream = StandIn::start(twilio_api).await;
    let url = upstream.url();
    let prism = tokio::task::spawn_blocking(move || Prism::proxy(&bin, "twilio", &url))
        .await
        .unwrap();
    let token = Secret::new("authtoken");
    let build = |code: u32, r: &Rendered, s: &TwilioSettings| {
        let item = item(code);
        twilio::build_request(
            &Outgoing {
                item: &item,
                rendered: r,
                at: NOW,
            },
            s,
            &token,
        )
        .unwrap()
    };
    let sms = twilio_settings(prism.url.clone(), false);
    let wa = twilio_settings(prism.url.clone(), true);
    let service = TwilioSettings {
        from: None,
        messaging_service_sid: Some("MG0123456789abcdef0123456789abcdef".into()),
        api_key: Some("SK0123456789abcdef0123456789abcdef".into()),
        status_callback: Some("https://box.example.com/hooks/twilio".into()),
        ..sms.clone()
    };
    let ok = sent("SM00000000000000000000000000000001");
    let cases: Vec<(&str, HttpRequest, SendResult)> = vec![
        ("SMS", build(0, &plain(), &sms), ok.clone()),
        ("MMS with MediaUrl", build(0, &medium(), &sms), ok.clone()),
        (
            "WhatsApp Content template",
            build(0, &rich(), &wa),
            ok.clone(),
        ),
        (
            "Messaging Service, ValidityPeriod, StatusCallback",
            build(0, &plain(), &service),
            ok,
        ),
        (
            "21610",
            build(21_610, &plain(), &sms),
            fail("twilio 21610: the customer unsubscribed (replied STOP)"),
        ),
        (
            "21211",
            build(21_211, &plain(), &sms),
            fail("twilio 21211: invalid 'To' number"),
        ),
        (
            "21614",
            build(21_614, &plain(), &sms),
            fall("twilio 21614: 'To' is not a mobile number"),
        ),
        (
            "20429",
            build(20_429, &plain(), &sms),
            retry(Duration::from_secs(45), "twilio 20429: too many requests"),
        ),
        (
            "63016",
            build(63_016, &rich(), &wa),
            fall("twilio 63016: outside WhatsApp's 24-hour window: free text not allowed"),
        ),
        (
            "20003",
            build(20_003, &plain(), &sms),
            conf("twilio 20003: authentication failed"),
        ),
    ];
    for (label, req, want) in cases {
        let resp = through(&prism, &upstream, &req, label).await;
        assert_eq!(twilio::classify(&resp, NOW), want, "{label}");
    }
    // Control: a malformed Messaging Service SID is refused.
    let mut bad = build(0, &plain(), &service);
    bad.body = bad
        .body_text()
        .replace("MG0123456789abcdef0123456789abcdef", "MG42")
        .into_bytes();
    refused(
        &upstream,
        &bad,
        "bad MessagingServiceSid",
        "MessagingServiceSid",
    )
    .await;
}

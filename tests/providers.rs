//! Each provider adapter against a local stand-in speaking the provider's
//! API on loopback: the request it receives (method, path, auth, body) and
//! the exact `SendResult` for success and every error class; then the whole
//! daemon path: config → worker → WhatsApp refused → SMS through Twilio.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nearcast::channel::SendResult;
use nearcast::channel::http::{Client, RETRY_THROTTLED, RETRY_TRANSIENT};
use nearcast::channel::{
    Deliver, Outgoing, VonageChannel, VonageSettings, WebhookSettings, WhatsAppSettings, twilio,
    vonage, webhook, whatsapp,
};
use nearcast::core::message::{Rendered, Variant};
use nearcast::core::types::Timestamp;
use nearcast::credentials::{Secret, SecretRef};
use nearcast::store::OutboxItem;
use support::fixtures::*;
use support::{Recorded, Reply, StandIn};

async fn send(adapter: &dyn Deliver, item: &OutboxItem, rendered: &Rendered) -> SendResult {
    adapter
        .send(&Outgoing {
            item,
            rendered,
            at: NOW,
        })
        .await
}

#[tokio::test]
async fn whatsapp_every_answer_class() {
    let server = StandIn::start(meta).await;
    let wa = whatsapp::WhatsApp::new(
        wa_settings(server.url()),
        Client::new().unwrap(),
        Arc::new([("WA_TOKEN", "EAAtoken")]),
    );
    let cases = [
        (0, sent("wamid.OK")),
        (
            131_047,
            fall("whatsapp 131047: outside the 24-hour customer service window"),
        ),
        (
            131_026,
            fall(
                "whatsapp 131026: undeliverable: not a WhatsApp user or cannot receive this message",
            ),
        ),
        (
            132_001,
            fall("whatsapp 132001: template does not exist in this language"),
        ),
        (
            130_429,
            retry(
                Duration::from_secs(17),
                "whatsapp 130429: throughput limit reached",
            ),
        ),
        (
            131_056,
            retry(
                RETRY_THROTTLED,
                "whatsapp 131056: too many messages to this customer (pair rate limit)",
            ),
        ),
        (
            131_050,
            fail("whatsapp 131050: the customer stopped marketing messages"),
        ),
        (190, conf("whatsapp 190: access token expired or invalid")),
        (
            131_000,
            retry(
                RETRY_TRANSIENT,
                "whatsapp 131000: something went wrong at Meta",
            ),
        ),
        (503, retry(RETRY_TRANSIENT, "whatsapp: HTTP 503")),
    ];
    for (code, want) in cases {
        let item = item(code);
        assert_eq!(send(&wa, &item, &rich()).await, want, "scenario {code}");
        let got = server.take();
        assert_eq!(got.len(), 1, "scenario {code}");
        let r = &got[0];
        assert_eq!(
            (r.method.as_str(), r.path.as_str()),
            ("POST", "/v23.0/106540352242922/messages")
        );
        assert_eq!(r.header("authorization"), Some("Bearer EAAtoken"));
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(
            r.header("user-agent"),
            Some(nearcast::channel::http::USER_AGENT)
        );
        let expected = whatsapp::build_request(
            &Outgoing {
                item: &item,
                rendered: &rich(),
                at: NOW,
            },
            &wa_settings(server.url()),
            &Secret::new("EAAtoken"),
        )
        .unwrap();
        assert_eq!(r.body, expected.body, "scenario {code}");
    }
    // Stored errors never quote the number Meta's text contained.
    let e = send(&wa, &item(131_047), &rich()).await;
    assert!(!format!("{e:?}").contains("4915112345678"));
    server.take();

    // No template and no free text: nothing is sent.
    assert!(matches!(
        send(&wa, &item(0), &plain()).await,
        SendResult::Fallback { .. }
    ));
    assert!(server.take().is_empty());

    // A missing token: the channel is misconfigured, nothing is sent.
    let no_token = whatsapp::WhatsApp::new(
        wa_settings(server.url()),
        Client::new().unwrap(),
        Arc::new([("OTHER", "x")]),
    );
    assert_eq!(
        send(&no_token, &item(0), &rich()).await,
        conf("whatsapp: environment variable WA_TOKEN (token_env) is not set")
    );
    assert!(server.take().is_empty());
}

#[tokio::test]
async fn timeouts_and_refused_connections_are_retried() {
    let server = StandIn::start(|_| Reply::Hang).await;
    let wa = whatsapp::WhatsApp::new(
        WhatsAppSettings {
            timeout: Duration::from_millis(300),
            ..wa_settings(server.url())
        },
        Client::new().unwrap(),
        Arc::new([("WA_TOKEN", "t")]),
    );
    assert_eq!(
        send(&wa, &item(999), &rich()).await,
        retry(RETRY_TRANSIENT, "whatsapp: timed out")
    );
    assert_eq!(server.take().len(), 1);

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let wa = whatsapp::WhatsApp::new(
        wa_settings(url),
        Client::new().unwrap(),
        Arc::new([("WA_TOKEN", "t")]),
    );
    match send(&wa, &item(0), &rich()).await {
        SendResult::Retry { after, error } => {
            assert_eq!(after, RETRY_TRANSIENT);
            assert!(error.starts_with("whatsapp: connection failed"), "{error}");
        }
        other => panic!("expected a retry, got {other:?}"),
    }
}

#[tokio::test]
async fn twilio_every_answer_class() {
    let server = StandIn::start(twilio_api).await;
    let env = Arc::new([("TW_TOKEN", "authtoken")]);
    let sms = twilio::Twilio::new(
        twilio_settings(server.url(), false),
        Client::new().unwrap(),
        env.clone(),
    );
    let wa = twilio::Twilio::new(
        twilio_settings(server.url(), true),
        Client::new().unwrap(),
        env,
    );
    let cases: [(&twilio::Twilio, Rendered, u32, SendResult); 9] = [
        (&sms, plain(), 0, sent("SM00000000000000000000000000000001")),
        (
            &sms,
            medium(),
            0,
            sent("SM00000000000000000000000000000001"),
        ),
        (&wa, rich(), 0, sent("SM00000000000000000000000000000001")),
        (
            &sms,
            plain(),
            21_610,
            fail("twilio 21610: the customer unsubscribed (replied STOP)"),
        ),
        (
            &sms,
            plain(),
            21_211,
            fail("twilio 21211: invalid 'To' number"),
        ),
        (
            &sms,
            plain(),
            21_614,
            fall("twilio 21614: 'To' is not a mobile number"),
        ),
        (
            &sms,
            plain(),
            20_429,
            retry(Duration::from_secs(45), "twilio 20429: too many requests"),
        ),
        (
            &wa,
            rich(),
            63_016,
            fall("twilio 63016: outside WhatsApp's 24-hour window: free text not allowed"),
        ),
        (
            &sms,
            plain(),
            20_003,
            conf("twilio 20003: authentication failed"),
        ),
    ];
    for (adapter, rendered, code, want) in cases {
        let item = item(code);
        assert_eq!(
            send(adapter, &item, &rendered).await,
            want,
            "scenario {code}"
        );
        let got = server.take();
        assert_eq!(got.len(), 1);
        let r = &got[0];
        assert_eq!(
            r.path,
            "/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Messages.json"
        );
        assert_eq!(
            r.header("authorization"),
            Some(nearcast::channel::http::basic_auth(AC, &Secret::new("authtoken")).as_str())
        );
        assert_eq!(
            r.header("content-type"),
            Some("application/x-www-form-urlencoded")
        );
        let form: Vec<(String, String)> = form_urlencoded::parse(&r.body).into_owned().collect();
        let get = |k: &str| {
            form.iter()
                .filter(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
                .collect::<Vec<_>>()
        };
        if rendered.variant == Variant::Rich {
            assert_eq!(get("To"), [format!("whatsapp:{}", phone(code))]);
            assert_eq!(get("ContentSid"), [HX]);
            assert_eq!(get("ContentVariables"), [r#"{"1":"Anna","2":"10"}"#]);
            assert!(get("Body").is_empty());
        } else {
            assert_eq!(get("To"), [phone(code)]);
            assert_eq!(get("From"), ["+14155552345"]);
            assert_eq!(get("Body"), [rendered.text.as_str()]);
            assert_eq!(
                get("MediaUrl"),
                rendered.image.as_deref().into_iter().collect::<Vec<_>>()
            );
        }
    }
}

fn problem(code: u32) -> String {
    format!(
        r#"{{"type":"https://developer.nexmo.com/api-errors/messages-olympus#{code}","title":"Error {code}","detail":"details","instance":"bf0ca0bf"}}"#
    )
}

/// Vonage's answers by error code.
fn vonage_api(r: &Recorded) -> Reply {
    match scenario(r) {
        0 => Reply::json(
            202,
            r#"{"message_uuid":"aaaaaaaa-bbbb-cccc-dddd-0123456789ab"}"#,
        ),
        c @ 1000 => Reply::json(429, &problem(c)).with_header("Retry-After", "5"),
        c @ (1300 | 1240) => Reply::json(422, &problem(c)),
        401 => Reply::json(
            401,
            r#"{"type":"https://developer.vonage.com/api-errors#unauthorized","title":"Unauthorized"}"#,
        ),
        _ => Reply::json(500, &problem(1030)),
    }
}

#[tokio::test]
async fn vonage_every_answer_class() {
    let server = StandIn::start(vonage_api).await;
    let settings = |channel| VonageSettings {
        base_url: server.url(),
        api_key: "abcd1234".into(),
        token: SecretRef::Env("VG_SECRET".into()),
        from: "447700900001".into(),
        channel,
        allow_text: false,
        timeout: Duration::from_secs(5),
    };
    let env = Arc::new([("VG_SECRET", "s3cret")]);
    let sms = vonage::Vonage::new(
        settings(VonageChannel::Sms),
        Client::new().unwrap(),
        env.clone(),
    );
    let wa = vonage::Vonage::new(
        settings(VonageChannel::WhatsApp),
        Client::new().unwrap(),
        env,
    );
    let cases: [(&vonage::Vonage, Rendered, u32, SendResult); 6] = [
        (
            &sms,
            plain(),
            0,
            sent("aaaaaaaa-bbbb-cccc-dddd-0123456789ab"),
        ),
        (&wa, rich(), 0, sent("aaaaaaaa-bbbb-cccc-dddd-0123456789ab")),
        (
            &sms,
            plain(),
            1000,
            retry(Duration::from_secs(5), "vonage 1000: throttled"),
        ),
        (
            &wa,
            rich(),
            1300,
            fall("vonage 1300: not on this provider network (e.g. not a WhatsApp user)"),
        ),
        (
            &sms,
            plain(),
            1240,
            fail("vonage 1240: the customer opted out (STOP)"),
        ),
        (&sms, plain(), 401, conf("vonage: HTTP 401")),
    ];
    for (adapter, rendered, code, want) in cases {
        let item = item(code);
        assert_eq!(
            send(adapter, &item, &rendered).await,
            want,
            "scenario {code}"
        );
        let got = server.take();
        assert_eq!(got.len(), 1);
        let r = &got[0];
        assert_eq!(
            (r.method.as_str(), r.path.as_str()),
            ("POST", "/v1/messages")
        );
        assert_eq!(
            r.header("authorization"),
            Some(nearcast::channel::http::basic_auth("abcd1234", &Secret::new("s3cret")).as_str())
        );
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["client_ref"], item.key.as_str());
        assert_eq!(body["to"], phone(code).trim_start_matches('+'));
        assert_eq!(
            body["channel"],
            if rendered.variant == Variant::Rich {
                "whatsapp"
            } else {
                "sms"
            }
        );
    }
    // The same message sent again carries the same client_ref.
    send(&sms, &item(0), &plain()).await;
    send(&sms, &item(0), &plain()).await;
    let refs: Vec<String> = server
        .take()
        .iter()
        .map(|r| {
            serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["client_ref"].to_string()
        })
        .collect();
    assert_eq!(refs, [r#""7-welcome-0""#, r#""7-welcome-0""#]);
}

#[tokio::test]
async fn webhook_every_answer_class_and_a_verifiable_signature() {
    let server = StandIn::start(|r| match scenario(r) {
        0 => Reply::json(200, r#"{"id":"crm-1"}"#),
        409 => Reply::json(409, "{}"),
        410 => Reply::json(410, "{}"),
        422 => Reply::json(422, "{}"),
        401 => Reply::json(401, "{}"),
        _ => Reply::json(503, "{}").with_header("Retry-After", "9"),
    })
    .await;
    let hook = webhook::Webhook::new(
        WebhookSettings {
            url: format!("{}/hooks/nearcast", server.url()),
            token: SecretRef::Env("HOOK_KEY".into()),
            timeout: Duration::from_secs(5),
        },
        Client::new().unwrap(),
        Arc::new([("HOOK_KEY", "k3y")]),
    );
    let cases = [
        (0, sent("crm-1")),
        (409, SendResult::Sent { provider_id: None }),
        (
            410,
            fail("webhook: HTTP 410: the receiver says the customer is gone or unsubscribed"),
        ),
        (
            422,
            fall("webhook: HTTP 422: the receiver cannot reach the customer this way"),
        ),
        (401, conf("webhook: HTTP 401")),
        (503, retry(Duration::from_secs(9), "webhook: HTTP 503")),
    ];
    for (code, want) in cases {
        let item = item(code);
        assert_eq!(send(&hook, &item, &rich()).await, want, "scenario {code}");
        let got = server.take();
        let r = &got[0];
        assert_eq!(r.path, "/hooks/nearcast");
        assert_eq!(r.header("idempotency-key"), Some(item.key.as_str()));
        let ts = r.header("x-nearcast-timestamp").unwrap();
        assert_eq!(ts, "1795510803");
        assert!(webhook::verify(
            b"k3y",
            ts,
            &r.body,
            r.header("x-nearcast-signature").unwrap(),
            NOW,
            Duration::from_secs(300)
        ));
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["id"], item.key.as_str());
        assert_eq!(body["template"]["name"], "welcome_back");
    }
}

/// The daemon's own path: `nearcast.toml` names a WhatsApp channel and an
/// SMS channel through Twilio, both at local stand-ins, tokens in files.
#[test]
fn the_worker_falls_over_from_whatsapp_to_twilio_sms() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let meta = rt.block_on(StandIn::start(|_| Reply::json(400, &meta_error(131_026))));
    let tw = rt.block_on(StandIn::start(|_| {
        Reply::json(
            201,
            r#"{"sid":"SM00000000000000000000000000000002","status":"queued"}"#,
        )
    }));
    std::fs::write(dir.path().join("wa-token"), "EAAfile\n").unwrap();
    std::fs::write(dir.path().join("tw-token"), "twfile\n").unwrap();
    let daemon = format!(
        r#"
[database]
path = "nearcast.db"

[channels.whatsapp]
adapter = "whatsapp"
base_url = "{}"
phone_number_id = "106540352242922"
token_file = "{}"

[channels.sms]
adapter = "twilio"
base_url = "{}"
account_sid = "{AC}"
from = "+14155552345"
token_file = "{}"
"#,
        meta.url(),
        dir.path().join("wa-token").display(),
        tw.url(),
        dir.path().join("tw-token").display(),
    );
    std::fs::write(dir.path().join("nearcast.toml"), daemon).unwrap();
    std::fs::write(dir.path().join("zones.toml"), support::ZONES).unwrap();
    std::fs::write(dir.path().join("campaigns.toml"), support::CAMPAIGNS).unwrap();
    let config = nearcast::config::load(dir.path()).unwrap();
    support::store_with_customers(&config);

    // Anna (whatsapp, then sms) arrives.
    let t = support::at(10, 0, 0);
    let mut p = support::pipeline(&config);
    let obs = support::every_second(t, Timestamp(t.0 + 3000), |t| {
        support::ibeacon(t, 0, 1, 8.0, [0x5A, 1, 2, 3, 4, 5])
    });
    support::run(&mut p, &obs, Timestamp(t.0 + 3000));

    let console: Arc<Mutex<dyn Write + Send>> = Arc::new(Mutex::new(Vec::new()));
    let mut w = nearcast::app::worker(&config, &config.daemon.database, console).unwrap();
    let r = rt.block_on(w.run_once(support::at(10, 0, 3))).unwrap();
    assert_eq!((r.sent, r.fell_over, r.failed), (1, 1, 0));

    let wa = meta.take();
    assert_eq!(wa.len(), 1);
    assert_eq!(wa[0].header("authorization"), Some("Bearer EAAfile"));
    let body: serde_json::Value = serde_json::from_slice(&wa[0].body).unwrap();
    assert_eq!(body["template"]["name"], "welcome");
    assert_eq!(body["to"], "+4915112345678");

    let sms = tw.take();
    assert_eq!(sms.len(), 1);
    assert_eq!(
        sms[0].body_text(),
        "To=%2B4915112345678&From=%2B14155552345\
         &Body=Hi+Anna%2C+welcome+to+Teststore%21+%2B10+points%2C+balance+10."
    );
    let rows = w.store().outbox_rows(None, 10).unwrap();
    assert_eq!(
        (rows[0].channel.as_str(), rows[0].state.name()),
        ("sms", "sent")
    );
    // Neither token reached the database.
    let bytes = support::database_bytes(&config);
    assert!(!support::contains(&bytes, b"EAAfile") && !support::contains(&bytes, b"twfile"));
}

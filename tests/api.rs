//! The local HTTP API over real HTTP on loopback and a real SQLite file:
//! the bearer token, enrolment, opt-out, erasure, conversions, the three
//! providers' signed webhooks (status and replies), `/metrics` and
//! `/healthz`. Time comes from a manual clock; nothing sleeps.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use nearcast::api::signature::{sign_hs256, sign_meta, sign_twilio};
use nearcast::api::{self, Api};
use nearcast::api::{ApiSettings, MetaWebhook};
use nearcast::clock::Clock;
use nearcast::config::Config;
use nearcast::core::identity::{Hasher, Identity};
use nearcast::core::types::Timestamp;
use nearcast::credentials::SecretRef;
use nearcast::metrics::Metrics;
use nearcast::source::health::Health;
use nearcast::store::Store;
use serde_json::{Value, json};
use sha2::Digest;
use support::TestClock;

const API_TOKEN: &str = "t0ken-for-the-backend";
const META_SECRET: &str = "meta-app-secret";
const META_VERIFY: &str = "verify-me";
const TWILIO_TOKEN: &str = "twilio-auth-token";
const VONAGE_SECRET: &str = "vonage-signature-secret";
const PUBLIC: &str = "https://box-17.example.com";

const ENV: [(&str, &str); 5] = [
    ("API_TOKEN", API_TOKEN),
    ("META_SECRET", META_SECRET),
    ("META_VERIFY", META_VERIFY),
    ("TWILIO_TOKEN", TWILIO_TOKEN),
    ("VONAGE_SECRET", VONAGE_SECRET),
];

struct Harness {
    _dir: tempfile::TempDir,
    config: Config,
    base: String,
    http: reqwest::Client,
    metrics: Arc<Metrics>,
    clock: Arc<TestClock>,
    health: Arc<Health>,
    db: PathBuf,
    _stop: tokio::sync::oneshot::Sender<()>,
}

const NOW: Timestamp = Timestamp::from_secs(1_795_000_000);

async fn start() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let config = support::config_dir(dir.path(), support::CAMPAIGNS);
    let (store, hasher) = support::store_with_customers(&config);
    drop(store);
    let db = config.daemon.database.clone();
    let settings = ApiSettings {
        bind: "127.0.0.1:0".parse().unwrap(),
        token: Some(SecretRef::Env("API_TOKEN".into())),
        public_url: Some(PUBLIC.into()),
        whatsapp: Some(MetaWebhook {
            app_secret: SecretRef::Env("META_SECRET".into()),
            verify_token: SecretRef::Env("META_VERIFY".into()),
        }),
        twilio: Some(SecretRef::Env("TWILIO_TOKEN".into())),
        vonage: Some(SecretRef::Env("VONAGE_SECRET".into())),
        // Wrong tokens are tried here by the dozen; the per-client limit
        // on them is tests/slow_clients.rs's.
        limits: api::ApiLimits {
            max_failed_tokens: 1000,
            ..api::ApiLimits::default()
        },
    };
    let clock = Arc::new(TestClock::fixed(NOW));
    let metrics = Arc::new(Metrics::default());
    let health = Arc::new(Health::new("ble:hci0"));
    health.running();
    let api = Arc::new(Api::new(
        Store::open(&db).unwrap(),
        hasher,
        settings.clone(),
        config.daemon.channels.clone(),
        Arc::new(ENV),
        clock.clone(),
        metrics.clone(),
        vec![health.clone()],
    ));
    let listener = api::bind(settings.bind).await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(api::serve(listener, api, async {
        let _ = stopped.await;
    }));
    Harness {
        _dir: dir,
        config,
        base,
        http: reqwest::Client::new(),
        metrics,
        clock,
        health,
        db,
        _stop: stop,
    }
}

impl Harness {
    fn db(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(&self.db).unwrap()
    }

    fn one<T: rusqlite::types::FromSql>(&self, sql: &str) -> T {
        self.db().query_row(sql, [], |r| r.get(0)).unwrap()
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> (u16, String) {
        let r = req.send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    async fn post_json(&self, path: &str, token: Option<&str>, body: &Value) -> (u16, String) {
        let mut req = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        self.send(req).await
    }

    async fn meta(&self, body: &Value, signature: Option<String>) -> (u16, String) {
        let mut req = self
            .http
            .post(format!("{}/webhooks/whatsapp", self.base))
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(s) = signature {
            req = req.header("x-hub-signature-256", s);
        }
        self.send(req).await
    }

    async fn meta_signed(&self, body: &Value) -> (u16, String) {
        let sig = sign_meta(META_SECRET.as_bytes(), body.to_string().as_bytes());
        self.meta(body, Some(sig)).await
    }

    async fn twilio(&self, params: &[(&str, &str)], token: Option<&str>) -> (u16, String) {
        let owned: Vec<(String, String)> = params
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let body: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(&owned)
            .finish();
        let mut req = self
            .http
            .post(format!("{}/webhooks/twilio", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        if let Some(t) = token {
            let sig = sign_twilio(t.as_bytes(), &format!("{PUBLIC}/webhooks/twilio"), &owned);
            req = req.header("x-twilio-signature", sig);
        }
        self.send(req).await
    }

    async fn vonage_raw(&self, body: &str, auth: Option<String>) -> (u16, String) {
        let mut req = self
            .http
            .post(format!("{}/webhooks/vonage", self.base))
            .header("content-type", "application/json")
            .body(body.to_owned());
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        self.send(req).await
    }

    fn vonage_jwt(&self, secret: &str, body: &str, iat: i64) -> String {
        let hash = hex::encode(sha2::Sha256::digest(body.as_bytes()));
        format!(
            "Bearer {}",
            sign_hs256(
                secret.as_bytes(),
                &json!({"iat": iat, "jti": "a1", "payload_hash": hash})
            )
        )
    }

    async fn vonage(&self, body: &Value) -> (u16, String) {
        let text = body.to_string();
        let auth = self.vonage_jwt(VONAGE_SECRET, &text, NOW.0 / 1000 - 10);
        self.vonage_raw(&text, Some(auth)).await
    }

    fn customer_key(&self, id: &str) -> i64 {
        self.db()
            .query_row("SELECT key FROM customers WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .unwrap()
    }

    /// An outbox row the provider accepted as `provider_id`.
    fn sent_row(&self, customer: &str, channel: &str, provider_id: &str) -> i64 {
        let key = self.customer_key(customer);
        let c = self.db();
        c.execute(
            "INSERT INTO outbox (key, customer, campaign, message, channel, variant, points, balance,
                                 created_at, due_at, expires_at, state, sent_at, provider_id, attempts)
             VALUES (?1, ?2, 'welcome', 'welcome', ?3, 'plain', 0, 0, ?4, ?4, ?5, 'sent', ?4, ?6, 1)",
            rusqlite::params![
                format!("k-{provider_id}"),
                key,
                channel,
                NOW.0 - 60_000,
                NOW.0 + 240_000,
                provider_id
            ],
        )
        .unwrap();
        c.last_insert_rowid()
    }

    fn row(
        &self,
        id: i64,
    ) -> (
        String,
        Option<i64>,
        Option<i64>,
        Option<i64>,
        Option<String>,
    ) {
        self.db()
            .query_row(
                "SELECT state, delivered_at, read_at, fallback_at, error FROM outbox WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .unwrap()
    }

    fn set_now(&self, t: Timestamp) {
        self.clock.set_start(t);
    }

    /// (channel, withdrawn_at) of every consent of `customer`.
    fn consents(&self, customer: &str) -> Vec<(String, String, Option<i64>, Option<i64>)> {
        let c = self.db();
        let mut st = c
            .prepare(
                "SELECT channel, purpose, confirmed_at, withdrawn_at FROM consents
                 WHERE customer = (SELECT key FROM customers WHERE id = ?1) ORDER BY channel, purpose",
            )
            .unwrap();
        st.query_map([customer], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
    }
}

fn meta_status(id: &str, status: &str) -> Value {
    let mut s = json!({"id": id, "status": status, "timestamp": "1795000000", "recipient_id": "4915112345678"});
    if status == "failed" {
        s["errors"] = json!([{"code": 131026, "title": "Message undeliverable"}]);
    }
    json!({"object": "whatsapp_business_account", "entry": [{"id": "102290129340398", "changes": [
        {"field": "messages", "value": {"messaging_product": "whatsapp", "statuses": [s]}}]}]})
}

fn meta_message(from: &str, text: &str) -> Value {
    json!({"object": "whatsapp_business_account", "entry": [{"id": "102290129340398", "changes": [
        {"field": "messages", "value": {"messaging_product": "whatsapp",
         "contacts": [{"wa_id": from, "profile": {"name": "x"}}],
         "messages": [{"from": from, "id": "wamid.in", "timestamp": "1795000000", "type": "text", "text": {"body": text}}]}}]}]})
}

fn dora(confirmed_at: Option<Value>) -> Value {
    let mut v = json!({
        "id": "dora", "first_name": "Dora", "phone": "+49 151 1111 2222",
        "channels": ["whatsapp", "sms"], "consent_at": "2026-11-01T10:00:00Z", "consent_source": "app",
        "identities": ["mac:C4:7C:8D:6A:11:99"], "segments": ["gold"],
        "purposes": ["welcome", "offers"], "consent_text": "v3",
    });
    if let Some(c) = confirmed_at {
        v["confirmed_at"] = c;
    }
    v
}

#[tokio::test]
async fn mutating_calls_need_the_bearer_token() {
    let h = start().await;
    for token in [None, Some("wrong"), Some("t0ken-for-the-backendX")] {
        assert_eq!(
            h.post_json("/v1/customers", token, &dora(None)).await.0,
            401
        );
        assert_eq!(
            h.post_json("/v1/customers/anna/opt-out", token, &json!({}))
                .await
                .0,
            401
        );
        let mut del = h.http.delete(format!("{}/v1/customers/anna", h.base));
        if let Some(t) = token {
            del = del.header("authorization", format!("Bearer {t}"));
        }
        assert_eq!(h.send(del).await.0, 401);
        let conv = json!({"customer": "anna", "time": "2026-11-18T10:00:00Z", "amount": "9.90", "currency": "EUR", "reference": "r1"});
        assert_eq!(h.post_json("/v1/conversions", token, &conv).await.0, 401);
    }
    // Nothing changed.
    assert_eq!(h.one::<i64>("SELECT count(*) FROM customers"), 3);
    assert_eq!(
        h.one::<i64>("SELECT count(*) FROM customers WHERE opted_out_at IS NOT NULL"),
        0
    );
    assert_eq!(
        h.one::<i64>("SELECT count(*) FROM consents WHERE withdrawn_at IS NOT NULL"),
        0
    );
    assert_eq!(h.one::<i64>("SELECT count(*) FROM conversions"), 0);
}

#[tokio::test]
async fn enrol_opt_out_and_erase_a_customer() {
    let h = start().await;
    let (code, body) = h
        .post_json("/v1/customers", Some(API_TOKEN), &dora(None))
        .await;
    assert_eq!(
        (code, body.as_str()),
        (201, r#"{"added":true,"customer":"dora","identities":1}"#)
    );
    // Hashed exactly as `customers import` does.
    let hasher = Hasher::new(&support::secret(&h.config));
    let want = hasher.hash(&Identity::parse("mac:c4:7c:8d:6a:11:99").unwrap());
    let stored: Vec<u8> = h.one("SELECT hash FROM identities WHERE kind = 'mac' AND customer = (SELECT key FROM customers WHERE id = 'dora')");
    assert_eq!(stored, want.0.to_vec());
    assert_eq!(
        h.one::<String>(
            "SELECT phone || ' ' || channels || ' ' || segments FROM customers WHERE id = 'dora'"
        ),
        "+4915111112222 whatsapp|sms gold"
    );
    let consent_at = Timestamp::from_secs(1_793_527_200).0;
    assert_eq!(
        h.consents("dora"),
        [
            ("sms".into(), "offers".into(), Some(consent_at), None),
            ("sms".into(), "welcome".into(), Some(consent_at), None),
            ("whatsapp".into(), "offers".into(), Some(consent_at), None),
            ("whatsapp".into(), "welcome".into(), Some(consent_at), None),
        ]
    );
    // Again: an update, not a second customer.
    let (code, _) = h
        .post_json("/v1/customers", Some(API_TOKEN), &dora(None))
        .await;
    assert_eq!(code, 200);
    assert_eq!(
        h.one::<i64>("SELECT count(*) FROM customers WHERE id = 'dora'"),
        1
    );
    // The import's checks, word for word.
    let mut bad = dora(None);
    bad["phone"] = json!("0151 234");
    let (code, body) = h.post_json("/v1/customers", Some(API_TOKEN), &bad).await;
    assert_eq!(
        (code, body.as_str()),
        (
            422,
            r#"{"errors":["`phone` must be in international form, e.g. +4915112345678"]}"#
        )
    );

    let (code, _) = h
        .post_json("/v1/customers/dora/opt-out", Some(API_TOKEN), &json!({}))
        .await;
    assert_eq!(code, 200);
    assert_eq!(
        h.one::<Option<i64>>("SELECT opted_out_at FROM customers WHERE id = 'dora'"),
        Some(NOW.0)
    );
    assert!(h.consents("dora").iter().all(|c| c.3 == Some(NOW.0)));
    // A consent time in the future is refused: it would outrank the
    // opt-out and re-enrol her.
    let mut later = dora(None);
    later["consent_at"] = json!("2099-11-01T10:00:00Z");
    let (code, body) = h.post_json("/v1/customers", Some(API_TOKEN), &later).await;
    assert_eq!(code, 422, "{body}");
    assert!(
        body.contains("`consent_at` 2099-11-01T10:00:00Z is in the future: give when the customer consented (did you mean "),
        "{body}"
    );
    assert_eq!(
        h.one::<Option<i64>>("SELECT opted_out_at FROM customers WHERE id = 'dora'"),
        Some(NOW.0)
    );
    assert_eq!(h.one::<i64>("SELECT count(*) FROM identities WHERE customer = (SELECT key FROM customers WHERE id = 'dora')"), 0);
    let (code, _) = h
        .post_json("/v1/customers/nobody/opt-out", Some(API_TOKEN), &json!({}))
        .await;
    assert_eq!(code, 404);

    let del = |id: &str| {
        h.http
            .delete(format!("{}/v1/customers/{id}", h.base))
            .header("authorization", format!("Bearer {API_TOKEN}"))
    };
    assert_eq!(h.send(del("dora")).await.0, 204);
    assert_eq!(
        h.one::<i64>("SELECT count(*) FROM customers WHERE id = 'dora'"),
        0
    );
    assert_eq!(
        h.one::<i64>(
            "SELECT count(*) FROM consents WHERE customer NOT IN (SELECT key FROM customers)"
        ),
        0
    );
    assert_eq!(h.send(del("dora")).await.0, 404);
}

#[tokio::test]
async fn conversions_are_recorded_once_per_reference() {
    let h = start().await;
    let conv = json!({"customer": "anna", "time": "2026-11-18T10:15:00+01:00", "amount": "12.5", "currency": "eur", "reference": "POS-0001"});
    let (code, body) = h.post_json("/v1/conversions", Some(API_TOKEN), &conv).await;
    assert_eq!(
        (code, body.as_str()),
        (201, r#"{"duplicate":false,"reference":"POS-0001"}"#)
    );
    let (code, body) = h.post_json("/v1/conversions", Some(API_TOKEN), &conv).await;
    assert_eq!(
        (code, body.as_str()),
        (200, r#"{"duplicate":true,"reference":"POS-0001"}"#)
    );
    let mut other = conv.clone();
    other["amount"] = json!("99.00");
    assert_eq!(
        h.post_json("/v1/conversions", Some(API_TOKEN), &other)
            .await
            .0,
        409
    );
    assert_eq!(h.one::<i64>("SELECT count(*) FROM conversions"), 1);
    assert_eq!(
        h.one::<String>("SELECT at || ' ' || amount_cents || ' ' || currency || ' ' || received_at FROM conversions"),
        format!("1794993300000 1250 EUR {}", NOW.0)
    );
    let cents = json!({"customer": "ben", "time": "2026-11-18T11:00:00Z", "amount_cents": 399, "currency": "EUR", "reference": "POS-0002"});
    assert_eq!(
        h.post_json("/v1/conversions", Some(API_TOKEN), &cents)
            .await
            .0,
        201
    );
    let mut nobody = cents.clone();
    nobody["customer"] = json!("nobody");
    nobody["reference"] = json!("POS-0003");
    assert_eq!(
        h.post_json("/v1/conversions", Some(API_TOKEN), &nobody)
            .await
            .0,
        404
    );
    let mut both = cents.clone();
    both["amount"] = json!("3.99");
    both["reference"] = json!("POS-0004");
    assert_eq!(
        h.post_json("/v1/conversions", Some(API_TOKEN), &both)
            .await
            .0,
        422
    );
    assert_eq!(h.one::<i64>("SELECT count(*) FROM conversions"), 2);
}

#[tokio::test]
async fn meta_verification_handshake() {
    let h = start().await;
    let get = |q: &str| h.http.get(format!("{}/webhooks/whatsapp?{q}", h.base));
    assert_eq!(
        h.send(get(
            "hub.mode=subscribe&hub.verify_token=verify-me&hub.challenge=1158201444"
        ))
        .await,
        (200, "1158201444".to_owned())
    );
    assert_eq!(
        h.send(get(
            "hub.mode=subscribe&hub.verify_token=verify-you&hub.challenge=1158201444"
        ))
        .await
        .0,
        403
    );
    assert_eq!(
        h.send(get(
            "hub.mode=unsubscribe&hub.verify_token=verify-me&hub.challenge=1"
        ))
        .await
        .0,
        403
    );
}

#[tokio::test]
async fn meta_status_webhooks_move_the_exact_row_forward() {
    let h = start().await;
    let a = h.sent_row("anna", "whatsapp", "wamid.AAA");
    let b = h.sent_row("anna", "whatsapp", "wamid.BBB");
    let untouched = h.sent_row("ben", "sms", "wamid.CCC");

    assert_eq!(
        h.meta_signed(&meta_status("wamid.AAA", "delivered"))
            .await
            .0,
        200
    );
    assert_eq!(
        h.row(a),
        ("delivered".into(), Some(NOW.0), None, None, None)
    );
    h.set_now(Timestamp(NOW.0 + 5_000));
    assert_eq!(
        h.meta_signed(&meta_status("wamid.AAA", "read")).await.0,
        200
    );
    // A late "delivered" does not take it back from read.
    assert_eq!(
        h.meta_signed(&meta_status("wamid.AAA", "delivered"))
            .await
            .0,
        200
    );
    assert_eq!(
        h.row(a),
        ("read".into(), Some(NOW.0), Some(NOW.0 + 5_000), None, None)
    );

    // Tampered body, wrong secret, no signature: refused, nothing changes.
    let good = meta_status("wamid.BBB", "read");
    let sig = sign_meta(META_SECRET.as_bytes(), good.to_string().as_bytes());
    assert_eq!(
        h.meta(&meta_status("wamid.BBB", "failed"), Some(sig))
            .await
            .0,
        403
    );
    assert_eq!(
        h.meta(
            &good,
            Some(sign_meta(b"not-the-secret", good.to_string().as_bytes()))
        )
        .await
        .0,
        403
    );
    assert_eq!(h.meta(&good, None).await.0, 401);
    assert_eq!(h.row(b), ("sent".into(), None, None, None, None));

    let (code, body) = h.meta_signed(&meta_status("wamid.BBB", "failed")).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        h.row(b),
        (
            "failed".into(),
            None,
            None,
            Some(NOW.0 + 5_000),
            Some("whatsapp 131026: Message undeliverable".into())
        )
    );
    // Unknown ids are fine and counted.
    let (code, body) = h.meta_signed(&meta_status("wamid.ZZZ", "read")).await;
    assert_eq!(
        (code, body.as_str()),
        (
            200,
            r#"{"applied":0,"unchanged":0,"unknown":1,"inbound":0,"ignored":0}"#
        )
    );
    assert_eq!(h.row(untouched), ("sent".into(), None, None, None, None));
}

#[tokio::test]
async fn twilio_status_webhooks_are_verified_against_the_public_url() {
    let h = start().await;
    let a = h.sent_row("ben", "sms", "SM0001");
    let b = h.sent_row("ben", "sms", "SM0002");
    let delivered = [
        ("MessageSid", "SM0001"),
        ("MessageStatus", "delivered"),
        ("AccountSid", "AC1"),
    ];
    assert_eq!(h.twilio(&delivered, Some(TWILIO_TOKEN)).await.0, 200);
    assert_eq!(
        h.twilio(
            &[("MessageSid", "SM0001"), ("MessageStatus", "read")],
            Some(TWILIO_TOKEN)
        )
        .await
        .0,
        200
    );
    assert_eq!(
        h.row(a),
        ("read".into(), Some(NOW.0), Some(NOW.0), None, None)
    );

    let failed = [
        ("MessageSid", "SM0002"),
        ("MessageStatus", "undelivered"),
        ("ErrorCode", "30003"),
    ];
    assert_eq!(h.twilio(&failed, Some("wrong-token")).await.0, 403);
    assert_eq!(h.twilio(&failed, None).await.0, 401);
    // Tampered: signed for "delivered", sent as "undelivered".
    let owned: Vec<(String, String)> = [
        ("MessageSid", "SM0002"),
        ("MessageStatus", "delivered"),
        ("ErrorCode", "30003"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    let sig = sign_twilio(
        TWILIO_TOKEN.as_bytes(),
        &format!("{PUBLIC}/webhooks/twilio"),
        &owned,
    );
    let body = "MessageSid=SM0002&MessageStatus=undelivered&ErrorCode=30003";
    let req = h
        .http
        .post(format!("{}/webhooks/twilio", h.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-twilio-signature", sig)
        .body(body);
    assert_eq!(h.send(req).await.0, 403);
    assert_eq!(h.row(b), ("sent".into(), None, None, None, None));

    assert_eq!(h.twilio(&failed, Some(TWILIO_TOKEN)).await.0, 200);
    assert_eq!(
        h.row(b),
        (
            "failed".into(),
            None,
            None,
            Some(NOW.0),
            Some("twilio 30003".into())
        )
    );
}

#[tokio::test]
async fn vonage_status_webhooks_need_a_fresh_signed_token() {
    let h = start().await;
    let a = h.sent_row("cleo", "sms", "aaaaaaaa-bbbb-4ccc-8ddd-000000000001");
    let b = h.sent_row("cleo", "sms", "aaaaaaaa-bbbb-4ccc-8ddd-000000000002");
    let status = |id: &str, s: &str| json!({"message_uuid": id, "to": "4915112345670", "from": "Teststore", "timestamp": "2026-11-18T09:00:00Z", "status": s, "channel": "sms"});
    assert_eq!(
        h.vonage(&status("aaaaaaaa-bbbb-4ccc-8ddd-000000000001", "delivered"))
            .await
            .0,
        200
    );
    assert_eq!(
        h.row(a),
        ("delivered".into(), Some(NOW.0), None, None, None)
    );

    let mut rejected = status("aaaaaaaa-bbbb-4ccc-8ddd-000000000002", "rejected");
    rejected["error"] = json!({"type": "https://developer.vonage.com/api-errors/messages#1320", "title": "1320", "detail": "Message failed because the number is not reachable"});
    let text = rejected.to_string();
    // Stale token, wrong secret, tampered body, no token: refused.
    let stale = h.vonage_jwt(VONAGE_SECRET, &text, NOW.0 / 1000 - 301);
    assert_eq!(h.vonage_raw(&text, Some(stale)).await.0, 403);
    let wrong = h.vonage_jwt("another-secret", &text, NOW.0 / 1000);
    assert_eq!(h.vonage_raw(&text, Some(wrong)).await.0, 403);
    let for_other_body = h.vonage_jwt(
        VONAGE_SECRET,
        &status("aaaaaaaa-bbbb-4ccc-8ddd-000000000002", "delivered").to_string(),
        NOW.0 / 1000,
    );
    assert_eq!(h.vonage_raw(&text, Some(for_other_body)).await.0, 403);
    assert_eq!(h.vonage_raw(&text, None).await.0, 401);
    assert_eq!(h.row(b), ("sent".into(), None, None, None, None));

    assert_eq!(h.vonage(&rejected).await.0, 200);
    assert_eq!(
        h.row(b),
        (
            "failed".into(),
            None,
            None,
            Some(NOW.0),
            Some("vonage 1320: Message failed because the number is not reachable".into())
        )
    );
}

#[tokio::test]
async fn stop_words_opt_out_on_every_channel() {
    let h = start().await;
    // anna (whatsapp|sms) by WhatsApp, ben by Twilio SMS, cleo by Vonage.
    assert_eq!(
        h.meta_signed(&meta_message("4915112345678", "STOP"))
            .await
            .0,
        200
    );
    assert_eq!(
        h.twilio(
            &[
                ("MessageSid", "SM9"),
                ("SmsStatus", "received"),
                ("From", "+4915112345679"),
                ("Body", " stopp ")
            ],
            Some(TWILIO_TOKEN)
        )
        .await
        .0,
        200
    );
    let inbound = json!({"channel": "sms", "message_uuid": "u-1", "to": "Teststore", "from": "4915112345670", "timestamp": "2026-11-18T09:00:00Z", "text": "Abmelden.", "message_type": "text"});
    assert_eq!(h.vonage(&inbound).await.0, 200);
    for who in ["anna", "ben", "cleo"] {
        assert_eq!(
            h.one::<Option<i64>>(&format!(
                "SELECT opted_out_at FROM customers WHERE id = '{who}'"
            )),
            Some(NOW.0),
            "{who}"
        );
        let consents = h.consents(who);
        assert!(!consents.is_empty());
        assert!(
            consents.iter().all(|c| c.3 == Some(NOW.0)),
            "{who}: {consents:?}"
        );
    }
    // Anna consented on both of her channels; both are withdrawn.
    let channels: std::collections::BTreeSet<String> =
        h.consents("anna").into_iter().map(|c| c.0).collect();
    assert_eq!(
        channels.into_iter().collect::<Vec<_>>(),
        ["sms", "whatsapp"]
    );
    assert_eq!(
        h.one::<String>("SELECT group_concat(c.id || ':' || i.channel || ':' || i.last_at, ' ') FROM inbound i JOIN customers c ON c.key = i.customer ORDER BY c.id"),
        format!("anna:whatsapp:{n} ben:sms:{n} cleo:sms:{n}", n = NOW.0)
    );
}

#[tokio::test]
async fn ja_confirms_pending_consents_on_that_channel() {
    let h = start().await;
    let (code, _) = h
        .post_json("/v1/customers", Some(API_TOKEN), &dora(Some(Value::Null)))
        .await;
    assert_eq!(code, 201);
    assert!(h.consents("dora").iter().all(|c| c.2.is_none()));
    assert_eq!(
        h.meta_signed(&meta_message("4915111112222", "Ja!")).await.0,
        200
    );
    assert_eq!(
        h.consents("dora"),
        [
            ("sms".into(), "offers".into(), None, None),
            ("sms".into(), "welcome".into(), None, None),
            ("whatsapp".into(), "offers".into(), Some(NOW.0), None),
            ("whatsapp".into(), "welcome".into(), Some(NOW.0), None),
        ]
    );
    assert_eq!(
        h.one::<Option<i64>>("SELECT opted_out_at FROM customers WHERE id = 'dora'"),
        None
    );
}

#[tokio::test]
async fn an_unknown_sender_leaves_nothing() {
    let h = start().await;
    let (code, body) = h.meta_signed(&meta_message("4917099887766", "STOP")).await;
    assert_eq!(
        (code, body.as_str()),
        (
            200,
            r#"{"applied":0,"unchanged":0,"unknown":0,"inbound":0,"ignored":1}"#
        )
    );
    assert_eq!(h.one::<i64>("SELECT count(*) FROM inbound"), 0);
    assert_eq!(
        h.one::<i64>("SELECT count(*) FROM customers WHERE opted_out_at IS NOT NULL"),
        0
    );
    let store = Store::open(&h.db).unwrap();
    store.checkpoint().unwrap();
    let bytes = support::database_bytes(&h.config);
    assert!(!support::contains(&bytes, b"4917099887766"));
}

#[tokio::test]
async fn metrics_expose_exact_counters() {
    let h = start().await;
    h.metrics.set_pipeline(&nearcast::app::Counters {
        sightings: 120,
        wifi: 4,
        events: [3, 2, 1, 0, 1],
        acted: 2,
        messages: 2,
        ..Default::default()
    });
    h.metrics
        .note_send("sms", true, Duration::from_millis(80), NOW);
    h.sent_row("anna", "whatsapp", "wamid.M");
    assert_eq!(
        h.meta_signed(&meta_status("wamid.M", "delivered")).await.0,
        200
    );
    assert_eq!(
        h.meta_signed(&meta_status("wamid.nope", "read")).await.0,
        200
    );
    assert_eq!(h.meta(&meta_status("wamid.M", "read"), None).await.0, 401);
    let (code, text) = h.send(h.http.get(format!("{}/metrics", h.base))).await;
    assert_eq!(code, 200);
    for line in [
        "nearcast_sightings_total 120",
        "nearcast_wifi_reports_total 4",
        "nearcast_zone_events_total{kind=\"arrived\"} 3",
        "nearcast_zone_events_total{kind=\"left\"} 1",
        "nearcast_decisions_total 2",
        "nearcast_suppressions_total{reason=\"cooldown\"} 0",
        "nearcast_outbox_messages{state=\"delivered\"} 1",
        "nearcast_outbox_messages{state=\"queued\"} 0",
        "nearcast_sends_total{channel=\"sms\",outcome=\"ok\"} 1",
        "nearcast_send_duration_seconds_bucket{channel=\"sms\",le=\"0.05\"} 0",
        "nearcast_send_duration_seconds_bucket{channel=\"sms\",le=\"0.1\"} 1",
        "nearcast_send_duration_seconds_count{channel=\"sms\"} 1",
        "nearcast_webhook_statuses_total{result=\"applied\"} 1",
        "nearcast_webhook_statuses_total{result=\"unknown\"} 1",
        "nearcast_webhook_rejected_total{provider=\"whatsapp\"} 1",
        "nearcast_source_up{source=\"ble:hci0\"} 1",
        "# TYPE nearcast_send_duration_seconds histogram",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
}

#[tokio::test]
async fn healthz_is_503_while_a_source_or_provider_is_down() {
    let h = start().await;
    let health = || h.send(h.http.get(format!("{}/healthz", h.base)));
    let (code, body) = health().await;
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "ok");
    assert_eq!(v["database"]["ok"], true);
    assert_eq!(v["sources"][0]["state"], "running");

    h.health.down("adapter powered off");
    let (code, body) = health().await;
    assert_eq!(code, 503);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["sources"][0]["state"],
        "recovering"
    );
    h.health.running();
    assert_eq!(health().await.0, 200);

    h.metrics
        .note_send("whatsapp", false, Duration::from_secs(10), NOW);
    let (code, body) = health().await;
    assert_eq!(code, 503);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["channels"][0],
        json!({"channel": "whatsapp", "ok": false, "last_ok": null, "last_error": "2026-11-18T11:06:40Z"})
    );
    h.metrics.note_send(
        "whatsapp",
        true,
        Duration::from_millis(100),
        Timestamp(NOW.0 + 1_000),
    );
    assert_eq!(health().await.0, 200);
}

#[test]
fn api_settings_are_read_by_reference_and_inline_secrets_refused() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = format!(
        "{}\n[api]\nbind = \"127.0.0.1:9911\"\ntoken_file = \"api-token\"\npublic_url = \"https://box-17.example.com/\"\n\n\
         [webhooks.whatsapp]\napp_secret_env = \"META_SECRET\"\nverify_token_file = \"/etc/credstore/verify\"\n\n\
         [webhooks.vonage]\nsignature_secret_env = \"VONAGE_SECRET\"\n",
        support::DAEMON
    );
    std::fs::write(dir.path().join("nearcast.toml"), &daemon).unwrap();
    std::fs::write(dir.path().join("zones.toml"), support::ZONES).unwrap();
    std::fs::write(dir.path().join("campaigns.toml"), support::CAMPAIGNS).unwrap();
    let c = nearcast::config::load(dir.path()).unwrap();
    let api = c.daemon.api.unwrap();
    assert_eq!(api.bind.to_string(), "127.0.0.1:9911");
    assert_eq!(api.token, Some(SecretRef::File("api-token".into())));
    assert_eq!(
        api.public_url.as_deref(),
        Some("https://box-17.example.com")
    );
    assert_eq!(
        api.whatsapp,
        Some(MetaWebhook {
            app_secret: SecretRef::Env("META_SECRET".into()),
            verify_token: SecretRef::File("/etc/credstore/verify".into()),
        })
    );
    assert_eq!(api.twilio, None);
    assert_eq!(api.vonage, Some(SecretRef::Env("VONAGE_SECRET".into())));

    let inline = daemon.replace("token_file = \"api-token\"", "token = \"hunter2\"");
    std::fs::write(dir.path().join("nearcast.toml"), &inline).unwrap();
    let err = nearcast::config::load(dir.path()).unwrap_err().to_string();
    let line = inline
        .lines()
        .position(|l| l.starts_with("token ="))
        .unwrap()
        + 1;
    assert!(
        err.contains(&format!(
            "nearcast.toml:{line}:9: `token` would put a secret into the config file"
        )),
        "{err}"
    );
    assert!(err.contains("hint: "), "{err}");
    assert!(!err.contains("hunter2"));
    let typo = daemon.replace("public_url", "publik_url");
    std::fs::write(dir.path().join("nearcast.toml"), &typo).unwrap();
    let err = nearcast::config::load(dir.path()).unwrap_err().to_string();
    assert!(err.contains("unknown field `publik_url`"), "{err}");
}

#[derive(Clone, Default)]
struct Sink(Arc<std::sync::Mutex<Vec<u8>>>);
impl std::io::Write for Sink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_serves_the_api_and_stops_it_with_itself() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let token_file = dir.path().join("api-token");
    std::fs::write(&token_file, format!("{API_TOKEN}\n")).unwrap();
    support::config_dir(dir.path(), support::CAMPAIGNS);
    let daemon = format!(
        "{}\n[api]\nbind = \"127.0.0.1:{port}\"\ntoken_file = \"{}\"\n",
        support::DAEMON,
        token_file.display()
    );
    std::fs::write(dir.path().join("nearcast.toml"), daemon).unwrap();
    let config = nearcast::config::load(dir.path()).unwrap();
    drop(support::store_with_customers(&config));
    let clock: Arc<dyn Clock> = Arc::new(TestClock::fixed(NOW));
    let console: Arc<std::sync::Mutex<dyn std::io::Write + Send>> =
        Arc::new(std::sync::Mutex::new(Sink::default()));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let client = async {
        // The daemon binds before its loop starts; poll until it answers.
        let started = std::time::Instant::now();
        let health = loop {
            match http.get(format!("{base}/healthz")).send().await {
                Ok(r) => break r,
                Err(e) => {
                    assert!(started.elapsed() < Duration::from_secs(30), "{e}");
                    tokio::task::yield_now().await;
                }
            }
        };
        assert_eq!(health.status().as_u16(), 200);
        let r = http
            .post(format!("{base}/v1/customers/anna/opt-out"))
            .header("authorization", format!("Bearer {API_TOKEN}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        stop.send(()).unwrap();
    };
    let run = nearcast::app::run::run(config.clone(), None, clock, console, async {
        let _ = stopped.await;
    });
    let (result, ()) = tokio::join!(run, client);
    result.unwrap();
    // Stopped with the daemon.
    assert!(http.get(format!("{base}/healthz")).send().await.is_err());
    let store = Store::open(&config.daemon.database).unwrap();
    assert_eq!(store.customer("anna").unwrap().opted_out_at, Some(NOW));
}

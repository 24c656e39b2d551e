//! The outbox worker on a real database: rendering per channel, the console
//! channel's output, TTL expiry, and lease recovery after a crash mid-send.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nearcast::core::types::Timestamp;
use nearcast::store::OutboxState;
use support::*;

const ANNA_PHONE: [u8; 6] = [0x5A, 0x01, 0x02, 0x03, 0x04, 0x05];
const BEN_PHONE: [u8; 6] = [0x5B, 0x01, 0x02, 0x03, 0x04, 0x05];

#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);
impl Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
impl Buf {
    fn take(&self) -> String {
        String::from_utf8(std::mem::take(&mut *self.0.lock().unwrap())).unwrap()
    }
}

fn arrive(config: &nearcast::config::Config, minor: u16, addr: [u8; 6], t: Timestamp) {
    let mut p = pipeline(config);
    let obs = every_second(t, Timestamp(t.0 + 3000), |t| {
        ibeacon(t, 0, minor, 8.0, addr)
    });
    let out = run(&mut p, &obs, Timestamp(t.0 + 3000));
    assert!(out.iter().any(|l| l.contains(" act welcome ")), "{out:?}");
}

fn worker(config: &nearcast::config::Config, buf: &Buf) -> nearcast::channel::Worker {
    let out: Arc<Mutex<dyn Write + Send>> = Arc::new(Mutex::new(buf.clone()));
    nearcast::app::worker(config, &config.daemon.database, out).unwrap()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn sends_the_richest_variant_each_channel_carries() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_dir(dir.path(), CAMPAIGNS);
    store_with_customers(&config);
    arrive(&config, 1, ANNA_PHONE, at(10, 0, 0)); // whatsapp first
    arrive(&config, 2, BEN_PHONE, at(10, 0, 0)); // sms only
    let buf = Buf::default();
    let mut w = worker(&config, &buf);
    let r = rt().block_on(w.run_once(at(10, 0, 3))).unwrap();
    assert_eq!((r.sent, r.failed, r.expired), (2, 0, 0));
    assert_eq!(
        buf.take(),
        "10:00:03  ✉ whatsapp/rich → Anna (anna) [welcome] Welcome Anna!  (template welcome/en)\n\
         10:00:03  ✉ sms/plain → Ben (ben) [welcome] Hi Ben, welcome to Teststore! +10 points, balance 10.\n"
    );
    let rows = w.store().outbox_rows(Some(OutboxState::Sent), 10).unwrap();
    assert_eq!(rows.len(), 2);
    assert!(
        rows.iter()
            .all(|r| r.attempts == 1 && r.sent_at == Some(at(10, 0, 3)))
    );
    // Nothing more to send.
    assert_eq!(rt().block_on(w.run_once(at(10, 0, 4))).unwrap().sent, 0);
    assert!(buf.take().is_empty());
}

#[test]
fn a_message_past_its_ttl_is_expired_never_sent() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_dir(dir.path(), CAMPAIGNS);
    store_with_customers(&config);
    arrive(&config, 2, BEN_PHONE, at(10, 0, 0));
    let buf = Buf::default();
    let mut w = worker(&config, &buf);
    // The welcome's TTL is 5 minutes: the WAN was down until 10:05:03.
    let r = rt().block_on(w.run_once(at(10, 5, 3))).unwrap();
    assert_eq!((r.sent, r.expired), (0, 1));
    assert!(buf.take().is_empty());
    assert_eq!(
        w.store()
            .outbox_rows(Some(OutboxState::Expired), 10)
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn a_send_interrupted_by_a_crash_is_retried_after_the_lease() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_dir(dir.path(), CAMPAIGNS);
    store_with_customers(&config);
    arrive(&config, 2, BEN_PHONE, at(10, 0, 0));
    // A worker claims the row and dies before recording the result.
    let (mut crashed, _) = nearcast::app::open_database(&config, None).unwrap();
    let claim = crashed
        .claim_outbox(at(10, 0, 3), Duration::from_secs(30), 10)
        .unwrap();
    assert_eq!(claim.items.len(), 1);
    drop(crashed);
    let buf = Buf::default();
    let mut w = worker(&config, &buf);
    assert_eq!(
        rt().block_on(w.run_once(at(10, 0, 20))).unwrap().sent,
        0,
        "claimed under a live lease"
    );
    let r = rt().block_on(w.run_once(at(10, 0, 33))).unwrap();
    assert_eq!(r.sent, 1);
    let rows = w.store().outbox_rows(None, 10).unwrap();
    assert_eq!((rows[0].state.name(), rows[0].attempts), ("sent", 2));
    assert_eq!(buf.take().lines().count(), 1);
}

#[test]
fn an_opt_out_cancels_queued_messages() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_dir(dir.path(), CAMPAIGNS);
    store_with_customers(&config);
    arrive(&config, 2, BEN_PHONE, at(10, 0, 0));
    let (mut admin, _) = nearcast::app::open_database(&config, None).unwrap();
    admin.opt_out("ben", at(10, 0, 3)).unwrap();
    let buf = Buf::default();
    let mut w = worker(&config, &buf);
    assert_eq!(rt().block_on(w.run_once(at(10, 0, 4))).unwrap().sent, 0);
    assert!(buf.take().is_empty());
    let rows = w.store().outbox_rows(None, 10).unwrap();
    assert_eq!(
        (rows[0].state.name(), rows[0].error.as_deref()),
        ("failed", Some("opted_out"))
    );
}

#[test]
fn forget_removes_every_row_that_mentions_the_customer() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_dir(dir.path(), CAMPAIGNS);
    store_with_customers(&config);
    arrive(&config, 2, BEN_PHONE, at(10, 0, 0));
    arrive(&config, 1, ANNA_PHONE, at(10, 0, 0));
    let buf = Buf::default();
    rt().block_on(worker(&config, &buf).run_once(at(10, 0, 3)))
        .unwrap();
    let (mut admin, _) = nearcast::app::open_database(&config, None).unwrap();
    let ben = admin.customer("ben").unwrap().key;
    admin.forget("ben").unwrap();
    let conn = rusqlite::Connection::open(&config.daemon.database).unwrap();
    for table in [
        "identities",
        "visits",
        "cooldowns",
        "ledger",
        "outbox",
        "decisions",
    ] {
        let n: i64 = conn
            .query_row(
                &format!("SELECT count(*) FROM {table} WHERE customer = ?1"),
                [ben],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(n, 0, "{table} still mentions ben");
        let others: i64 = conn
            .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .unwrap();
        assert!(others > 0, "{table}: anna's rows should remain");
    }
    let n: i64 = conn
        .query_row("SELECT count(*) FROM customers WHERE id = 'ben'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(n, 0);
    let bytes = database_bytes(&config);
    assert!(
        !contains(&bytes, b"+4915112345679"),
        "ben's phone number is still in the file"
    );
}

/// A provider that answers every message the same way.
struct Scripted(nearcast::channel::SendResult, Arc<Mutex<u32>>);
impl nearcast::channel::Deliver for Scripted {
    fn send<'a>(
        &'a self,
        _msg: &'a nearcast::channel::Outgoing<'a>,
    ) -> nearcast::channel::SendFuture<'a> {
        *self.1.lock().unwrap() += 1;
        Box::pin(std::future::ready(self.0.clone()))
    }
}

fn worker_with(
    config: &nearcast::config::Config,
    buf: &Buf,
    whatsapp: nearcast::channel::SendResult,
) -> (nearcast::channel::Worker, Arc<Mutex<u32>>) {
    let calls = Arc::new(Mutex::new(0));
    let out: Arc<Mutex<dyn Write + Send>> = Arc::new(Mutex::new(buf.clone()));
    let tz = config.engine.rules.tz.clone();
    let mut adapters: std::collections::HashMap<String, nearcast::channel::Adapter> =
        std::collections::HashMap::new();
    adapters.insert(
        "whatsapp".into(),
        Arc::new(Scripted(whatsapp, calls.clone())),
    );
    adapters.insert(
        "sms".into(),
        Arc::new(nearcast::channel::console::Console::new(out, tz)),
    );
    let store = nearcast::store::Store::open(&config.daemon.database).unwrap();
    let w = nearcast::channel::Worker::new(
        store,
        config.engine.clone(),
        "Teststore".into(),
        adapters,
        Duration::from_secs(30),
        32,
    );
    (w, calls)
}

#[test]
fn not_a_whatsapp_user_gets_the_plain_variant_by_sms_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_dir(dir.path(), CAMPAIGNS);
    store_with_customers(&config);
    arrive(&config, 1, ANNA_PHONE, at(10, 0, 0)); // whatsapp, then sms
    let buf = Buf::default();
    let (mut w, calls) = worker_with(
        &config,
        &buf,
        nearcast::channel::SendResult::Fallback {
            error: "131026 not a WhatsApp user".into(),
        },
    );
    let r = rt().block_on(w.run_once(at(10, 0, 3))).unwrap();
    assert_eq!((r.sent, r.fell_over, r.failed), (1, 1, 0));
    assert_eq!(*calls.lock().unwrap(), 1);
    assert_eq!(
        buf.take(),
        "10:00:03  ✉ sms/plain → Anna (anna) [welcome] Hi Anna, welcome to Teststore! +10 points, balance 10.\n"
    );
    let rows = w.store().outbox_rows(None, 10).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (
            rows[0].channel.as_str(),
            rows[0].variant.name(),
            rows[0].state.name()
        ),
        ("sms", "plain", "sent")
    );
    assert_eq!(rows[0].error, None);
    // Nothing is sent twice.
    assert_eq!(rt().block_on(w.run_once(at(10, 0, 10))).unwrap().sent, 0);
    assert!(buf.take().is_empty());
}

#[test]
fn a_permanent_failure_does_not_fall_over() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_dir(dir.path(), CAMPAIGNS);
    store_with_customers(&config);
    arrive(&config, 1, ANNA_PHONE, at(10, 0, 0));
    let buf = Buf::default();
    let (mut w, _) = worker_with(
        &config,
        &buf,
        nearcast::channel::SendResult::Failed {
            error: "recipient unsubscribed".into(),
        },
    );
    let r = rt().block_on(w.run_once(at(10, 0, 3))).unwrap();
    assert_eq!((r.sent, r.fell_over, r.failed), (0, 0, 1));
    assert!(buf.take().is_empty());
    let rows = w.store().outbox_rows(None, 10).unwrap();
    assert_eq!(
        (rows[0].state.name(), rows[0].error.as_deref()),
        ("failed", Some("recipient unsubscribed"))
    );
}

#[test]
fn consent_withdrawn_after_the_decision_is_respected_at_send_time() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_dir(dir.path(), CAMPAIGNS);
    store_with_customers(&config);
    arrive(&config, 1, ANNA_PHONE, at(10, 0, 0)); // queued for whatsapp
    let (mut admin, _) = nearcast::app::open_database(&config, None).unwrap();
    // Anna replies STOP on WhatsApp before the message goes out.
    assert_eq!(
        admin
            .withdraw_consent("anna", "whatsapp", at(10, 0, 1))
            .unwrap(),
        3
    );
    let buf = Buf::default();
    let (mut w, calls) = worker_with(
        &config,
        &buf,
        nearcast::channel::SendResult::Sent { provider_id: None },
    );
    let r = rt().block_on(w.run_once(at(10, 0, 3))).unwrap();
    assert_eq!((r.sent, r.fell_over), (1, 1));
    assert_eq!(*calls.lock().unwrap(), 0, "nothing went to WhatsApp");
    assert!(
        buf.take()
            .starts_with("10:00:03  ✉ sms/plain → Anna (anna) [welcome]")
    );
}

#[test]
fn failover_never_picks_a_channel_without_consent() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_dir(dir.path(), CAMPAIGNS);
    store_with_customers(&config);
    arrive(&config, 1, ANNA_PHONE, at(10, 0, 0));
    let (mut admin, _) = nearcast::app::open_database(&config, None).unwrap();
    admin.withdraw_consent("anna", "sms", at(10, 0, 1)).unwrap();
    let buf = Buf::default();
    let (mut w, _) = worker_with(
        &config,
        &buf,
        nearcast::channel::SendResult::Fallback {
            error: "131026".into(),
        },
    );
    let r = rt().block_on(w.run_once(at(10, 0, 3))).unwrap();
    assert_eq!((r.sent, r.fell_over, r.failed), (0, 0, 1));
    assert!(buf.take().is_empty(), "nothing went out by SMS");
}

#[test]
fn a_message_not_delivered_in_time_goes_out_once_more_as_plain_sms() {
    let dir = tempfile::tempdir().unwrap();
    let campaigns = CAMPAIGNS.replace(
        "points = 10\ncooldown = \"12h\"\npurpose = \"welcome\"",
        "points = 10\ncooldown = \"12h\"\npurpose = \"welcome\"\n\
         fallback = { after = \"10m\", unless = \"delivered\", channel = \"sms\" }",
    );
    assert_ne!(campaigns, CAMPAIGNS);
    let config = config_dir(dir.path(), &campaigns);
    store_with_customers(&config);
    arrive(&config, 1, ANNA_PHONE, at(10, 0, 0)); // whatsapp, then sms
    arrive(&config, 2, BEN_PHONE, at(10, 0, 0)); // sms only: nothing to fall back to
    let buf = Buf::default();
    let mut w = worker(&config, &buf);
    let r = rt().block_on(w.run_once(at(10, 0, 3))).unwrap();
    assert_eq!((r.sent, r.fallbacks), (2, 0));
    assert_eq!(buf.take().lines().count(), 2);
    // Not yet.
    let r = rt().block_on(w.run_once(at(10, 10, 2))).unwrap();
    assert_eq!((r.sent, r.fallbacks), (0, 0));
    // Ten minutes after the send, still not delivered: the plain variant
    // by SMS, once.
    let r = rt().block_on(w.run_once(at(10, 10, 3))).unwrap();
    assert_eq!((r.sent, r.fallbacks), (1, 1));
    assert_eq!(
        buf.take(),
        "10:10:03  ✉ sms/plain → Anna (anna) [welcome] Hi Anna, welcome to Teststore! +10 points, balance 10.\n"
    );
    for t in [at(10, 10, 4), at(10, 30, 0), at(12, 0, 0)] {
        let r = rt().block_on(w.run_once(t)).unwrap();
        assert_eq!((r.sent, r.fallbacks), (0, 0));
    }
    assert!(buf.take().is_empty());
    let rows = w.store().outbox_rows(None, 10).unwrap();
    let summary: Vec<_> = rows
        .iter()
        .map(|r| {
            (
                r.customer.as_str(),
                r.channel.as_str(),
                r.variant.name(),
                r.state.name(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("anna", "sms", "plain", "sent"),
            ("ben", "sms", "plain", "sent"),
            ("anna", "whatsapp", "rich", "sent"),
        ]
    );
}

fn status(
    config: &nearcast::config::Config,
    provider_id: &str,
    s: nearcast::store::DeliveryStatus,
    t: Timestamp,
) {
    let (mut admin, _) = nearcast::app::open_database(config, None).unwrap();
    assert_eq!(
        admin.apply_delivery_status(provider_id, &s, t).unwrap(),
        nearcast::store::StatusOutcome::Applied
    );
}

#[test]
fn a_delivered_message_needs_no_fallback_and_an_undeliverable_one_moves_on_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let campaigns = CAMPAIGNS.replace(
        "points = 10\ncooldown = \"12h\"\npurpose = \"welcome\"",
        "points = 10\ncooldown = \"12h\"\npurpose = \"welcome\"\n\
         fallback = { after = \"10m\", unless = \"delivered\", channel = \"sms\" }",
    );
    let config = config_dir(dir.path(), &campaigns);
    store_with_customers(&config);
    arrive(&config, 1, ANNA_PHONE, at(10, 0, 0));
    let buf = Buf::default();
    let mut w = worker(&config, &buf);
    assert_eq!(rt().block_on(w.run_once(at(10, 0, 3))).unwrap().sent, 1);
    buf.take();
    // Delivered after a minute: no SMS at ten minutes.
    status(
        &config,
        "console-1",
        nearcast::store::DeliveryStatus::Delivered,
        at(10, 1, 0),
    );
    let r = rt().block_on(w.run_once(at(10, 10, 5))).unwrap();
    assert_eq!((r.sent, r.fallbacks), (0, 0));
    assert!(buf.take().is_empty());

    // Next day: WhatsApp accepts, then reports the message undeliverable.
    arrive(
        &config,
        1,
        ANNA_PHONE,
        Timestamp(at(10, 0, 0).0 + 86_400_000),
    );
    let t = Timestamp(at(10, 0, 3).0 + 86_400_000);
    assert_eq!(rt().block_on(w.run_once(t)).unwrap().sent, 1);
    buf.take();
    status(
        &config,
        "console-2",
        nearcast::store::DeliveryStatus::Failed {
            error: "131026 message undeliverable".into(),
        },
        Timestamp(t.0 + 5000),
    );
    let r = rt().block_on(w.run_once(Timestamp(t.0 + 6000))).unwrap();
    assert_eq!((r.sent, r.fallbacks), (1, 1));
    assert_eq!(
        buf.take(),
        "10:00:09  ✉ sms/plain → Anna (anna) [welcome] Hi Anna, welcome to Teststore! +10 points, balance 20.\n"
    );
    let r = rt()
        .block_on(w.run_once(Timestamp(t.0 + 3_600_000)))
        .unwrap();
    assert_eq!((r.sent, r.fallbacks), (0, 0));
}

#[test]
fn a_read_message_without_a_purchase_gets_one_follow_up_a_day_later() {
    let dir = tempfile::tempdir().unwrap();
    let campaigns = CAMPAIGNS.replace(
        "points = 10\ncooldown = \"12h\"\npurpose = \"welcome\"",
        "points = 10\ncooldown = \"12h\"\npurpose = \"welcome\"\n\
         follow_up = { message = \"offer\", after = \"24h\" }",
    );
    let config = config_dir(dir.path(), &campaigns);
    store_with_customers(&config);
    arrive(&config, 1, ANNA_PHONE, at(10, 0, 0));
    arrive(&config, 2, BEN_PHONE, at(10, 0, 0));
    let buf = Buf::default();
    let mut w = worker(&config, &buf);
    assert_eq!(rt().block_on(w.run_once(at(10, 0, 3))).unwrap().sent, 2);
    buf.take();
    let rows = w.store().outbox_rows(None, 10).unwrap();
    let id_of = |c: &str| rows.iter().find(|r| r.customer == c).unwrap().id;
    // Both read it at 10:05; Ben bought something at noon.
    for c in ["anna", "ben"] {
        status(
            &config,
            &format!("console-{}", id_of(c)),
            nearcast::store::DeliveryStatus::Read,
            at(10, 5, 0),
        );
    }
    let (mut admin, _) = nearcast::app::open_database(&config, None).unwrap();
    admin
        .record_conversion(
            &nearcast::store::Conversion {
                customer: "ben".into(),
                at: at(12, 0, 0),
                amount_cents: 1290,
                currency: "EUR".into(),
                reference: "POS-1".into(),
            },
            at(12, 0, 1),
        )
        .unwrap();
    let day = 86_400_000;
    let r = rt()
        .block_on(w.run_once(Timestamp(at(10, 4, 59).0 + day)))
        .unwrap();
    assert_eq!((r.follow_ups, r.sent), (0, 0));
    let r = rt()
        .block_on(w.run_once(Timestamp(at(10, 5, 1).0 + day)))
        .unwrap();
    assert_eq!((r.follow_ups, r.sent), (1, 1));
    assert_eq!(
        buf.take(),
        "10:05:01  ✉ whatsapp/plain → Anna (anna) [welcome] Anna: 2 for 1 today.\n"
    );
    for t in [
        at(10, 6, 0).0 + day,
        at(18, 0, 0).0 + day,
        at(10, 0, 0).0 + 3 * day,
    ] {
        let r = rt().block_on(w.run_once(Timestamp(t))).unwrap();
        assert_eq!((r.follow_ups, r.sent), (0, 0));
    }
    assert!(buf.take().is_empty());
}

#[test]
fn a_follow_up_past_the_weekly_cap_is_suppressed_with_the_caps_reason() {
    let dir = tempfile::tempdir().unwrap();
    let campaigns = CAMPAIGNS
        .replace(
            "max_messages_per_day = 3",
            "max_messages_per_day = 3\nmax_messages_per_week = 1",
        )
        .replace(
            "points = 10\ncooldown = \"12h\"\npurpose = \"welcome\"",
            "points = 10\ncooldown = \"12h\"\npurpose = \"welcome\"\n\
             follow_up = { message = \"offer\", after = \"24h\" }",
        );
    let config = config_dir(dir.path(), &campaigns);
    store_with_customers(&config);
    arrive(&config, 1, ANNA_PHONE, at(10, 0, 0));
    let buf = Buf::default();
    let mut w = worker(&config, &buf);
    assert_eq!(rt().block_on(w.run_once(at(10, 0, 3))).unwrap().sent, 1);
    let id = w.store().outbox_rows(None, 10).unwrap()[0].id;
    status(
        &config,
        &format!("console-{id}"),
        nearcast::store::DeliveryStatus::Read,
        at(10, 5, 0),
    );
    // Thursday, the same week: Anna's one message this week was the welcome.
    let r = rt()
        .block_on(w.run_once(Timestamp(at(10, 5, 1).0 + 86_400_000)))
        .unwrap();
    assert_eq!((r.follow_ups, r.sent), (0, 0));
    let reasons: Vec<(String, Option<String>)> =
        rusqlite::Connection::open(&config.daemon.database)
            .unwrap()
            .prepare("SELECT outcome, reason FROM decisions WHERE event = 'follow_up'")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
    assert_eq!(reasons, [("suppressed".into(), Some("cap_week".into()))]);
}

#[test]
fn a_row_with_a_variant_this_build_does_not_know_fails_and_is_never_sent_as_another() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_dir(dir.path(), CAMPAIGNS);
    store_with_customers(&config);
    arrive(&config, 1, ANNA_PHONE, at(10, 0, 0));
    // As if a newer version had queued it.
    rusqlite::Connection::open(&config.daemon.database)
        .unwrap()
        .execute("UPDATE outbox SET variant = 'hologram'", [])
        .unwrap();
    let buf = Buf::default();
    let mut w = worker(&config, &buf);
    let r = rt().block_on(w.run_once(at(10, 0, 3))).unwrap();
    assert_eq!(r.sent, 0);
    assert!(buf.take().is_empty());
    let (state, error): (String, String) = rusqlite::Connection::open(&config.daemon.database)
        .unwrap()
        .query_row("SELECT state, error FROM outbox", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(
        (state.as_str(), error.as_str()),
        ("failed", "unreadable row: unknown variant \"hologram\"")
    );
}

/// A provider that takes `delay` to accept, and says it deduplicates (so a
/// second worker that claimed a row again would send it again): counts
/// every request per outbox key.
struct Slow {
    delay: Duration,
    sent: Arc<Mutex<Vec<String>>>,
}

impl nearcast::channel::Deliver for Slow {
    fn send<'a>(
        &'a self,
        msg: &'a nearcast::channel::Outgoing<'a>,
    ) -> nearcast::channel::SendFuture<'a> {
        Box::pin(async move {
            tokio::time::sleep(self.delay).await;
            self.sent.lock().unwrap().push(msg.item.key.clone());
            nearcast::channel::SendResult::Sent { provider_id: None }
        })
    }

    fn dedupes(&self) -> bool {
        true
    }
}

#[tokio::test(start_paused = true)]
async fn a_lease_runs_from_the_claim_not_from_the_start_of_the_round() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_dir(dir.path(), CAMPAIGNS);
    store_with_customers(&config);
    // Ben and Cleo: two welcomes on `sms`, which sends one at a time.
    arrive(&config, 2, BEN_PHONE, at(10, 0, 0));
    let mut p = pipeline(&config);
    let cleo = [0xC4, 0x7C, 0x8D, 0x6A, 0x11, 0x02];
    let out = run(
        &mut p,
        &[wifi(
            at(10, 0, 0),
            nearcast::core::types::WifiKind::Joined,
            cleo,
        )],
        at(10, 0, 3),
    );
    assert!(
        out.iter().any(|l| l.contains(" act welcome cleo")),
        "{out:?}"
    );
    drop(p);
    let sent = Arc::new(Mutex::new(Vec::new()));
    let lease = Duration::from_secs(10);
    let make = || {
        let slow: nearcast::channel::Adapter = Arc::new(Slow {
            delay: Duration::from_secs(8),
            sent: sent.clone(),
        });
        let adapters = [
            ("sms".to_owned(), slow.clone()),
            ("whatsapp".to_owned(), slow),
        ]
        .into_iter()
        .collect();
        let one_at_a_time = nearcast::channel::ChannelLimits {
            rate: 1000.0,
            burst: 100,
            concurrency: 1,
        };
        nearcast::channel::Worker::new(
            nearcast::store::Store::open(&config.daemon.database).unwrap(),
            config.engine.clone(),
            "Teststore".into(),
            adapters,
            lease,
            32,
        )
        .with_limits([("sms".to_owned(), one_at_a_time)].into_iter().collect())
    };
    let (mut first, mut second) = (make(), make());
    let t0 = at(10, 0, 5);
    // The first worker's round: Ben's welcome takes 8 s, then Cleo's is
    // claimed (at 10:00:13) and takes 8 s more.
    let round = tokio::spawn(async move {
        let r = first.run_once(t0).await.unwrap();
        (first, r)
    });
    // At 10:00:17 a second worker (a broadcast beside the daemon) looks:
    // Cleo's request is in flight and her lease must still be live.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let r2 = second.run_once(Timestamp(t0.0 + 12_000)).await.unwrap();
    let (first, r1) = round.await.unwrap();
    assert_eq!((r1.sent, r2.sent, r2.ambiguous), (2, 0, 0));
    let mut keys = sent.lock().unwrap().clone();
    keys.sort();
    keys.dedup();
    assert_eq!(
        (sent.lock().unwrap().len(), keys.len()),
        (2, 2),
        "each sent once"
    );
    let rows = first.store().outbox_rows(None, 10).unwrap();
    assert!(
        rows.iter()
            .all(|r| r.state == OutboxState::Sent && r.attempts == 1),
        "{rows:?}"
    );
}

/// A provider whose request is a TCP connection to `addr` (something
/// `strace` sees), accepted at once.
struct Connects {
    addr: std::net::SocketAddr,
}

impl nearcast::channel::Deliver for Connects {
    fn send<'a>(
        &'a self,
        _: &'a nearcast::channel::Outgoing<'a>,
    ) -> nearcast::channel::SendFuture<'a> {
        Box::pin(async move {
            drop(std::net::TcpStream::connect(self.addr));
            nearcast::channel::SendResult::Sent { provider_id: None }
        })
    }
}

/// The claim is synced to disk (the WAL fsynced) before the provider is
/// asked: a power cut after the request must not bring the row back as
/// never tried. Watched with `strace` attached to this process.
#[test]
fn the_claim_is_on_disk_before_the_request_goes_out() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let config = config_dir(dir.path(), CAMPAIGNS);
    // Held open, so the WAL stays (a daemon's connections keep it): the
    // claim appends to it rather than starting a new one, which SQLite
    // syncs whatever the setting.
    let _open = store_with_customers(&config);
    arrive(&config, 2, BEN_PHONE, at(10, 0, 0));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let provider: nearcast::channel::Adapter = Arc::new(Connects { addr });
    let mut w = nearcast::channel::Worker::new(
        nearcast::store::Store::open(&config.daemon.database).unwrap(),
        config.engine.clone(),
        "Teststore".into(),
        [("sms".to_owned(), provider)].into_iter().collect(),
        Duration::from_secs(30),
        32,
    );

    let trace = dir.path().join("trace");
    let mut strace = std::process::Command::new("strace")
        .args(["-f", "-y", "-e", "trace=fsync,fdatasync,connect", "-o"])
        .arg(&trace)
        .args(["-p", &std::process::id().to_string()])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("strace is needed (apt-get install strace) and root to attach it");
    let mut err = std::io::BufReader::new(strace.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    assert!(line.contains("attached"), "strace: {line}");
    let sent = rt().block_on(w.run_once(at(10, 0, 3))).unwrap().sent;
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &strace.id().to_string()])
        .status();
    strace.wait().unwrap();
    assert_eq!(sent, 1);

    let trace = std::fs::read_to_string(&trace).unwrap();
    let wal = format!("{}-wal>", config.daemon.database.display());
    let lines: Vec<&str> = trace.lines().collect();
    let request = lines
        .iter()
        .position(|l| l.contains("connect(") && l.contains(&format!("htons({})", addr.port())))
        .unwrap_or_else(|| panic!("no request in the trace:\n{trace}"));
    assert!(
        lines[..request]
            .iter()
            .any(|l| (l.contains("fdatasync(") || l.contains("fsync(")) && l.contains(&wal)),
        "the WAL was not synced before the request:\n{trace}"
    );
}

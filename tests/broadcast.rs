//! `nearcast broadcast`: one campaign to every consented customer, through
//! the same decision and store transaction as presence events, on a real
//! SQLite file, delivered through a recording `Deliver` behind the trait.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};

use nearcast::app::broadcast::{
    BroadcastOptions, BroadcastSummary, ProgressStyle, Sink, broadcast,
};
use nearcast::channel::SendResult;
use nearcast::channel::{Adapter, Deliver, Outgoing, SendFuture};
use nearcast::config::{self, Config};
use nearcast::core::campaign::{Ledger, Reason};
use nearcast::core::message::Variant;
use nearcast::core::presence::{EventKind, ZoneEvent};
use nearcast::core::types::Timestamp;
use nearcast::store::Store;
use support::TestClock;

const DAEMON: &str = r#"
[database]
path = "nearcast.db"

[channels.whatsapp]
adapter = "console"

[channels.mms]
adapter = "console"

[channels.sms]
adapter = "console"
"#;

const CAMPAIGNS: &str = r#"
[limits]
max_messages_per_day = 1
quiet_hours = ["19:00-09:00"]

[[campaign]]
id = "welcome"
trigger = "arrive"
message = "welcome"
cooldown = "12h"
purpose = "welcome"

[[campaign]]
id = "flash-sale"
trigger = "broadcast"
message = "flash"
cooldown = "7d"
purpose = "offers"
exclude_segments = ["staff"]

[[message]]
id = "welcome"
ttl = "5m"
plain = "Hi {first_name}!"

[[message]]
id = "flash"
ttl = "2h"
plain = "Flash sale at {store}: 30 % off until 14:00. STOP to opt out"

[message.medium]
text = "Flash sale: 30 % off until 14:00!"
image = "https://cdn.example.com/flash.jpg"

[message.rich]
template = "flash_sale"
language = "en"
preview = "Flash sale: 30 % off until 14:00!"
"#;

/// anna, ben, cleo: one per channel; dora opted out; emil consented to
/// welcome messages only; finn already had the flash sale (cooldown); gina
/// had today's one message (cap); hugo is staff (the campaign's segment).
const CUSTOMERS: &str = "id,first_name,phone,channels,consent_at,consent_source,identities,segments,purposes
anna,Anna,+4915100000001,whatsapp|sms,2026-01-01T10:00:00Z,app,mac:02:00:00:00:00:01,gold,welcome;loyalty;offers
ben,Ben,+4915100000002,sms,2026-01-01T10:00:00Z,app,mac:02:00:00:00:00:02,,welcome;loyalty;offers
cleo,Cleo,+4915100000003,mms|sms,2026-01-01T10:00:00Z,app,mac:02:00:00:00:00:03,gold,welcome;loyalty;offers
dora,Dora,+4915100000004,sms,2026-01-01T10:00:00Z,app,mac:02:00:00:00:00:04,gold,welcome;loyalty;offers
emil,Emil,+4915100000005,sms,2026-01-01T10:00:00Z,app,mac:02:00:00:00:00:05,,welcome
finn,Finn,+4915100000006,sms,2026-01-01T10:00:00Z,app,mac:02:00:00:00:00:06,early,welcome;loyalty;offers
gina,Gina,+4915100000007,sms,2026-01-01T10:00:00Z,app,mac:02:00:00:00:00:07,,welcome;loyalty;offers
hugo,Hugo,+4915100000008,whatsapp|sms,2026-01-01T10:00:00Z,app,mac:02:00:00:00:00:08,staff,welcome;loyalty;offers
";

/// Records (customer, channel, variant) of every send and says "sent".
#[derive(Default)]
struct Recorder(Mutex<Vec<(String, String, String)>>);

impl Deliver for Recorder {
    fn send<'a>(&'a self, msg: &'a Outgoing<'a>) -> SendFuture<'a> {
        self.0.lock().unwrap().push((
            msg.item.customer.clone(),
            msg.item.channel.to_string(),
            msg.rendered.variant.name().to_owned(),
        ));
        Box::pin(std::future::ready(SendResult::Sent {
            provider_id: Some(format!("mock-{}", msg.item.id)),
        }))
    }
}

fn setup(dir: &std::path::Path) -> Config {
    std::fs::write(dir.join(config::DAEMON_FILE), DAEMON).unwrap();
    std::fs::write(dir.join(config::ZONES_FILE), support::ZONES).unwrap();
    std::fs::write(dir.join(config::CAMPAIGNS_FILE), CAMPAIGNS).unwrap();
    let config = config::load(dir).unwrap();
    let (mut store, hasher) = nearcast::app::open_database(&config, None).unwrap();
    store
        .import_customers(
            CUSTOMERS.as_bytes(),
            &hasher,
            Timestamp::from_secs(1_767_261_600),
        )
        .unwrap();
    store.opt_out("dora", support::at(9, 0, 0)).unwrap();
    // Gina arrived this morning and was welcomed: today's one message.
    let dir_snapshot = store.directory().unwrap();
    let gina = dir_snapshot
        .customers()
        .filter_map(|k| dir_snapshot.customer(k))
        .find(|c| c.id.as_str() == "gina")
        .unwrap()
        .clone();
    let event = ZoneEvent {
        at: support::at(10, 0, 0),
        customer: gina.key,
        kind: EventKind::Arrived,
    };
    let local = config.engine.rules.local(event.at);
    let h = store.history(&gina, &local).unwrap();
    let d = config.engine.decide(&event, &gina, &h);
    let done = store
        .commit(&event, "store", &gina, &local, &config.engine, d)
        .unwrap();
    assert!(done[0].outbox_id.is_some());
    config
}

fn opts(segment: Option<&str>, dry_run: bool) -> BroadcastOptions {
    BroadcastOptions {
        campaign: "flash-sale".into(),
        segment: segment.map(Into::into),
        dry_run,
        db: None,
        progress: ProgressStyle::Lines,
    }
}

async fn run(
    config: &Config,
    o: &BroadcastOptions,
    at: Timestamp,
) -> (BroadcastSummary, Vec<(String, String, String)>, String) {
    let recorder = Arc::new(Recorder::default());
    let adapters: HashMap<String, Adapter> = ["whatsapp", "mms", "sms"]
        .into_iter()
        .map(|n| (n.to_owned(), recorder.clone() as Adapter))
        .collect();
    let progress = Arc::new(Mutex::new(Vec::<u8>::new()));
    let sink: Sink = progress.clone();
    let s = broadcast(config, o, &TestClock::fixed(at), adapters, sink)
        .await
        .unwrap();
    let mut sent = recorder.0.lock().unwrap().clone();
    sent.sort();
    let text = String::from_utf8(progress.lock().unwrap().clone()).unwrap();
    (s, sent, text)
}

fn triple(c: &str, ch: &str, v: &str) -> (String, String, String) {
    (c.into(), ch.into(), v.into())
}

#[tokio::test]
async fn a_broadcast_queues_for_the_consented_and_records_every_suppression() {
    let tmp = tempfile::tempdir().unwrap();
    let config = setup(tmp.path());

    // Finn's segment first: he has the flash sale (and its cooldown) already.
    let (early, sent, _) = run(&config, &opts(Some("early"), false), support::at(11, 0, 0)).await;
    assert_eq!(early.considered, 1);
    assert_eq!(early.outside_segment, 7);
    assert_eq!(early.queued, [("sms".into(), Variant::Plain, 1)]);
    assert_eq!(sent, [triple("finn", "sms", "plain")]);

    let (s, sent, progress) = run(&config, &opts(None, false), support::at(11, 30, 0)).await;
    assert_eq!(s.considered, 8);
    assert_eq!(s.outside_segment, 0);
    assert_eq!(
        s.queued,
        [
            ("mms".into(), Variant::Medium, 1),
            ("sms".into(), Variant::Plain, 1),
            ("whatsapp".into(), Variant::Rich, 1),
        ]
    );
    assert_eq!(
        s.suppressed,
        [
            (Reason::OptedOut, 1),
            (Reason::Segment, 1),
            (Reason::NoConsent, 1),
            (Reason::Cooldown, 1),
            (Reason::CapDay, 1),
        ]
    );
    assert_eq!(
        sent,
        [
            triple("anna", "whatsapp", "rich"),
            triple("ben", "sms", "plain"),
            triple("cleo", "mms", "medium"),
        ]
    );
    assert_eq!(
        (s.sent, s.failed, s.fell_over, s.expired, s.pending),
        (3, 0, 0, 0, 0)
    );
    // Plain progress lines (not a terminal), the last one complete.
    assert!(
        progress
            .lines()
            .last()
            .unwrap()
            .starts_with("3/3 (100%) sent 3, failed 0"),
        "{progress}"
    );
    let text = s.text();
    assert!(text.contains("customers considered  8\n"), "{text}");
    assert!(
        text.contains("queued                3 (mms/medium 1, sms/plain 1, whatsapp/rich 1)"),
        "{text}"
    );
    assert!(
        text.contains(
            "suppressed            5 (opted_out 1, segment 1, no_consent 1, cooldown 1, cap_day 1)"
        ),
        "{text}"
    );

    // The audit trail has every decision but the opted-out customer's.
    let store = Store::open(&tmp.path().join("nearcast.db")).unwrap();
    let stats = store.stats().unwrap();
    let suppressed: HashMap<_, _> = stats.suppressed.iter().cloned().collect();
    for reason in ["segment", "no_consent", "cooldown", "cap_day"] {
        assert_eq!(suppressed.get(reason), Some(&1), "{reason}: {suppressed:?}");
    }
    assert_eq!(suppressed.get("opted_out"), None);

    // Again inside the cooldown: nothing is queued, nobody gets a second one.
    let (again, sent, _) = run(&config, &opts(None, false), support::at(11, 45, 0)).await;
    assert_eq!(again.queued_total(), 0);
    assert!(sent.is_empty());
    assert_eq!(again.suppressed_for(Reason::Cooldown), 4);
    assert_eq!(again.suppressed_total(), 8);
}

fn snapshot(dir: &std::path::Path) -> (Vec<u8>, Vec<u8>, String) {
    let db = dir.join("nearcast.db");
    let store = Store::open_read_only(&db).unwrap();
    let stats = format!("{:?}", store.stats().unwrap());
    drop(store);
    (
        std::fs::read(&db).unwrap(),
        std::fs::read(dir.join("nearcast.db-wal")).unwrap_or_default(),
        stats,
    )
}

#[tokio::test]
async fn a_dry_run_reports_what_would_happen_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let config = setup(tmp.path());
    let before = snapshot(tmp.path());
    let (s, sent, progress) = run(&config, &opts(None, true), support::at(11, 0, 0)).await;
    assert!(s.dry_run);
    assert_eq!(s.considered, 8);
    assert_eq!(
        s.queued,
        [
            ("mms".into(), Variant::Medium, 1),
            ("sms".into(), Variant::Plain, 2),
            ("whatsapp".into(), Variant::Rich, 1),
        ]
    );
    assert_eq!(
        s.suppressed,
        [
            (Reason::OptedOut, 1),
            (Reason::Segment, 1),
            (Reason::NoConsent, 1),
            (Reason::CapDay, 1),
        ]
    );
    assert!(sent.is_empty() && progress.is_empty());
    assert!(
        s.text().contains("would queue           4 ("),
        "{}",
        s.text()
    );
    assert_eq!(
        snapshot(tmp.path()),
        before,
        "the dry run changed the database"
    );

    // --segment narrows the audience; the rest is not decided at all.
    let (gold, _, _) = run(&config, &opts(Some("gold"), true), support::at(11, 0, 0)).await;
    assert_eq!((gold.considered, gold.outside_segment), (3, 5));
    assert_eq!(gold.queued_total(), 2);
    assert_eq!(gold.suppressed, [(Reason::OptedOut, 1)]);
}

#[tokio::test]
async fn quiet_hours_and_closing_time_hold_a_broadcast_and_presence_campaigns_cannot_be_broadcast()
{
    let tmp = tempfile::tempdir().unwrap();
    let config = setup(tmp.path());
    let (late, sent, _) = run(&config, &opts(None, false), support::at(19, 30, 0)).await;
    assert_eq!(late.queued_total(), 0);
    assert!(sent.is_empty());
    assert_eq!(late.suppressed_for(Reason::QuietHours), 7);

    let mut o = opts(None, true);
    o.campaign = "welcome".into();
    let console: Sink = Arc::new(Mutex::new(std::io::sink()));
    let err = broadcast(
        &config,
        &o,
        &TestClock::fixed(support::at(11, 0, 0)),
        HashMap::new(),
        console,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("campaign `welcome` is sent on presence, not broadcast")
            && err.contains("broadcast campaigns: flash-sale"),
        "{err}"
    );
    let _ = std::io::stdout().flush();
}

/// Records when each message was handed to it and says "sent".
#[derive(Default)]
struct Stamps(Mutex<Vec<Timestamp>>);

impl Deliver for Stamps {
    fn send<'a>(&'a self, msg: &'a Outgoing<'a>) -> SendFuture<'a> {
        self.0.lock().unwrap().push(msg.at);
        Box::pin(std::future::ready(SendResult::Sent {
            provider_id: Some(format!("mock-{}", msg.item.id)),
        }))
    }
}

#[tokio::test(start_paused = true)]
async fn a_broadcast_keeps_to_the_channels_pace() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let daemon = r#"
[database]
path = "nearcast.db"

[channels.sms]
adapter = "console"
rate = 2.0
burst = 1
concurrency = 4
"#;
    std::fs::write(dir.join(config::DAEMON_FILE), daemon).unwrap();
    std::fs::write(dir.join(config::ZONES_FILE), support::ZONES).unwrap();
    std::fs::write(dir.join(config::CAMPAIGNS_FILE), CAMPAIGNS).unwrap();
    let config = config::load(dir).unwrap();
    let (mut store, hasher) = nearcast::app::open_database(&config, None).unwrap();
    let mut csv =
        "id,first_name,phone,channels,consent_at,consent_source,identities,segments\n".to_owned();
    for i in 0..6 {
        csv.push_str(&format!(
            "c{i},Kunde{i},+491510000000{i},sms,2026-01-01T10:00:00Z,app,mac:02:00:00:00:01:0{i},\n"
        ));
    }
    store
        .import_customers(csv.as_bytes(), &hasher, Timestamp::from_secs(1_767_261_600))
        .unwrap();
    drop(store);

    let stamps = Arc::new(Stamps::default());
    let adapters: HashMap<String, Adapter> =
        HashMap::from([("sms".to_owned(), stamps.clone() as Adapter)]);
    // Tokio's time, paused in a test, moves only when every task waits, so
    // pacing is checked without real waiting.
    let clock = TestClock::ticking(support::at(11, 0, 0));
    let sink: Sink = Arc::new(Mutex::new(std::io::sink()));
    let s = broadcast(&config, &opts(None, false), &clock, adapters, sink)
        .await
        .unwrap();
    assert_eq!((s.queued_total(), s.sent), (6, 6));
    // Two a second, one at a time: never two within half a second.
    let at = stamps.0.lock().unwrap().clone();
    assert_eq!(at.len(), 6);
    for pair in at.windows(2) {
        assert!(pair[1].0 - pair[0].0 >= 500, "{at:?}");
    }
}

#[tokio::test]
async fn a_dry_run_goes_ahead_on_an_unsynchronised_clock_and_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let config = setup(tmp.path());
    let before = snapshot(tmp.path());
    let clock = TestClock::fixed(support::at(11, 0, 0));
    clock.set_synchronized(false);
    let sink: Sink = Arc::new(Mutex::new(Vec::<u8>::new()));
    let dry = broadcast(
        &config,
        &opts(None, true),
        &clock,
        HashMap::new(),
        sink.clone(),
    )
    .await
    .unwrap();
    let why = "the system clock is not synchronised (NTP): nothing is decided or sent until it is; \
               check `timedatectl`";
    assert_eq!(dry.clock_warning.as_deref(), Some(why));
    assert_eq!(dry.queued_total(), 4, "decided as on a trusted clock");
    assert!(
        dry.text().contains(&format!(
            "clock                 NOT TRUSTED: {why}; a real broadcast would refuse to run\n"
        )),
        "{}",
        dry.text()
    );
    // A real broadcast still refuses, and nothing was written either way.
    let real = broadcast(&config, &opts(None, false), &clock, HashMap::new(), sink)
        .await
        .unwrap_err();
    assert_eq!(real.to_string(), why);
    assert_eq!(snapshot(tmp.path()), before);
}

#[tokio::test]
async fn a_segment_that_selects_nobody_is_refused_with_the_likely_one() {
    let tmp = tempfile::tempdir().unwrap();
    let config = setup(tmp.path());
    let before = snapshot(tmp.path());
    let sink: Sink = Arc::new(Mutex::new(Vec::<u8>::new()));
    let clock = TestClock::fixed(support::at(11, 0, 0));
    for dry_run in [true, false] {
        let err = broadcast(
            &config,
            &opts(Some("gld"), dry_run),
            &clock,
            HashMap::new(),
            sink.clone(),
        )
        .await
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "--segment gld selects nobody: no customer on file is in it (did you mean `gold`? known: early, gold, staff)"
        );
    }
    let err = broadcast(
        &config,
        &BroadcastOptions {
            campaign: "flash-sal".into(),
            ..opts(None, true)
        },
        &clock,
        HashMap::new(),
        sink,
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "no campaign `flash-sal` in campaigns.toml (did you mean `flash-sale`? broadcast campaigns: flash-sale)"
    );
    assert_eq!(snapshot(tmp.path()), before);
}

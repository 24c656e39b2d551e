//! Remote scanners through a real Mosquitto (its own process on a free
//! loopback port, configured from `config/mosquitto.conf` and
//! `config/mosquitto.acl`): ESPresense reports and nearcast satellites into
//! presence events, node health by last will, a broker restart, clocks,
//! floods, credentials, unknown nodes and strangers. The source stamps
//! sightings with a test clock set before each publish, and the tests wait
//! on the source's own signals (`Nodes::watch`, the sighting queue), never
//! on the wall clock.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use nearcast::config::Config;
use nearcast::core::types::{BdAddr, Observation, ScannerIdx, Timestamp};
use nearcast::source::health::Health;
use nearcast::source::mqtt::{self, Nodes};
use nearcast::source::{Feed, SourceSettings};
use rumqttc::{AsyncClient, LastWill, QoS};
use support::broker::{self, Broker};
use support::*;
use tokio::sync::mpsc;

/// How long a test waits for something the broker and the source must do
/// before it fails (a bound, not a pace: every wait ends on a signal).
const PATIENCE: Duration = Duration::from_secs(20);

const ANNA: &str = "iBeacon:e2c56db5-dffb-48d2-b060-d0f5a71096e0-1-1";
const CLEO_MAC: &str = "c47c8d6a1102";

/// The test store with `door` and `till` as ESPresense nodes and `aisle`
/// a nearcast satellite, through `broker` with `password`.
fn remote_config(dir: &std::path::Path, broker: &Broker, node_rate: u32) -> Config {
    let zones = ZONES
        .replace(
            "id = \"door\"\nposition = [0.0, 0.0]",
            "id = \"door\"\nposition = [0.0, 0.0]\nsource = \"espresense\"",
        )
        .replace(
            "id = \"till\"\nposition = [20.0, 0.0]",
            "id = \"till\"\nposition = [20.0, 0.0]\nsource = \"espresense\"\n\n[[scanner]]\nid = \"aisle\"\nposition = [10.0, 0.0]\nsource = \"nearcast\"",
        );
    let daemon = format!(
        "{DAEMON}\n[mqtt]\nurl = \"{}\"\nusername = \"nearcast\"\npassword_env = \"NEARCAST_MQTT_PASSWORD\"\nretry_min = \"100ms\"\nretry_max = \"500ms\"\nnode_rate = {node_rate}\nmax_clock_offset = \"10s\"\n",
        broker.url()
    );
    std::fs::write(dir.join("nearcast.toml"), daemon).unwrap();
    std::fs::write(dir.join("zones.toml"), zones).unwrap();
    std::fs::write(dir.join("campaigns.toml"), CAMPAIGNS).unwrap();
    nearcast::config::load(dir).unwrap()
}

/// The MQTT source of `config`, running.
struct Source {
    rx: mpsc::Receiver<Observation>,
    nodes: Arc<Nodes>,
    health: Arc<Health>,
    clock: Arc<TestClock>,
    task: tokio::task::JoinHandle<()>,
}

impl Source {
    async fn start(config: &Config, password: &'static str) -> Source {
        let m = config
            .daemon
            .sources
            .iter()
            .find_map(|s| match s {
                SourceSettings::Mqtt(m) => Some(m.clone()),
                _ => None,
            })
            .unwrap();
        let (tx, rx) = mpsc::channel(1 << 16);
        let health = Arc::new(Health::new("mqtt"));
        let nodes = Arc::new(Nodes::new(&m, &config.layout));
        let clock = Arc::new(TestClock::fixed(at(10, 0, 0)));
        let env: [(&'static str, &'static str); 1] = [("NEARCAST_MQTT_PASSWORD", password)];
        let task = tokio::spawn(mqtt::run(
            m,
            config.layout.radio.measured_power,
            clock.clone(),
            Feed::new(tx, health.clone()),
            nodes.clone(),
            Arc::new(env),
        ));
        Source {
            rx,
            nodes,
            health,
            clock,
            task,
        }
    }

    /// Started and subscribed.
    async fn connected(config: &Config) -> Source {
        let s = Source::start(config, broker::password("nearcast")).await;
        s.until("subscribed", |n| {
            !n.snapshot().iter().any(|n| n.state == "unreachable")
        })
        .await;
        s
    }

    /// Waits for the source's state to satisfy `cond`.
    async fn until(&self, what: &str, cond: impl Fn(&Nodes) -> bool) {
        let mut w = self.nodes.watch();
        tokio::time::timeout(PATIENCE, async {
            loop {
                if cond(&self.nodes) {
                    return;
                }
                w.changed().await.unwrap();
            }
        })
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}: {:#?}", self.nodes.snapshot()));
    }

    /// The next `n` sightings, sorted by scanner (several nodes' reports at
    /// one instant arrive in any order).
    async fn next(&mut self, n: usize) -> Vec<Observation> {
        let mut got = Vec::new();
        for _ in 0..n {
            let o = tokio::time::timeout(PATIENCE, self.rx.recv())
                .await
                .unwrap_or_else(|_| panic!("timed out after {} of {n} sightings", got.len()))
                .unwrap();
            got.push(o);
        }
        got.sort_by_key(|o| match o {
            Observation::Ble(s) => s.scanner,
            Observation::Wifi(_) => ScannerIdx(u16::MAX),
        });
        got
    }

    fn node(&self, scanner: &str) -> mqtt::NodeSnapshot {
        self.nodes
            .snapshot()
            .into_iter()
            .find(|n| n.scanner == scanner)
            .unwrap()
    }
}

/// A v4 report (`BleFingerprint::fill`'s fields) of `id` at `rssi`.
fn v4(id: &str, mac: &str, rssi: f64) -> String {
    format!(
        r#"{{"mac":"{mac}","id":"{id}","name":"Phone","rssi@1m":-59,"rssi":{rssi:.2},"rxAdj":0,"rssiVar":1.10,"distance":1.00,"var":0.05,"int":1010}}"#
    )
}

/// A v3 report (with `idType` and the raw distance) of `id` at `rssi`.
fn v3(id: &str, mac: &str, rssi: i32) -> String {
    format!(
        r#"{{"mac":"{mac}","id":"{id}","name":"Tag","idType":55,"rssi@1m":-59,"rssi":{rssi},"raw":1.02,"distance":1.00,"int":998}}"#
    )
}

fn device_topic(id: &str, node: &str) -> String {
    format!("espresense/devices/{id}/{node}")
}

/// Anna's iBeacon 1 m from `door` (v4) and Cleo's tag 1 m from `till`
/// (v3) once a second from 10:00:00 to `until_s`, each stamped as it
/// arrives.
async fn walk_in(
    src: &mut Source,
    door: &AsyncClient,
    till: &AsyncClient,
    until_s: i8,
) -> Vec<Observation> {
    let mut obs = Vec::new();
    for s in 0..=until_s {
        src.clock.set_start(at(10, 0, s));
        broker::publish(
            door,
            &device_topic(ANNA, "door"),
            v4(ANNA, "6f0000000001", -59.0),
        )
        .await;
        broker::publish(
            till,
            &device_topic(CLEO_MAC, "till"),
            v3(CLEO_MAC, CLEO_MAC, -59),
        )
        .await;
        obs.extend(src.next(2).await);
    }
    obs
}

#[tokio::test]
async fn espresense_v3_and_v4_reports_become_exact_presence_events() {
    let b = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let config = remote_config(dir.path(), &b, 1000);
    store_with_customers(&config);
    let mut src = Source::connected(&config).await;
    let (door, _d) = broker::client(&b, "door", None).await;
    let (till, _t) = broker::client(&b, "till", None).await;

    let obs = walk_in(&mut src, &door, &till, 10).await;
    // Each report is the sighting a local adapter at that node would give.
    let Observation::Ble(first) = &obs[0] else {
        panic!()
    };
    assert_eq!(
        (first.scanner, first.at, first.rssi.0),
        (ScannerIdx(0), at(10, 0, 0), -59)
    );
    let Observation::Ble(second) = &obs[1] else {
        panic!()
    };
    assert_eq!(second.scanner, ScannerIdx(1));

    let mut p = pipeline(&config);
    let lines = run(&mut p, &obs, at(10, 1, 0));
    assert_eq!(
        lines,
        [
            "10:00:03 arrived anna store",
            "10:00:03 act welcome anna whatsapp/rich",
            "10:00:03 arrived cleo store",
            "10:00:03 act welcome cleo sms/plain",
            "10:00:04 entered anna entrance",
            "10:00:04 act door-offer anna whatsapp/plain",
            // Last heard 10:00:10: out of range 10 s later, gone 5 s (15 s
            // for the store, 30 s) after that.
            "10:00:25 exited anna entrance",
            "10:00:50 left cleo store",
            "10:00:50 left anna store",
        ]
    );
    assert_eq!(src.node("door").sightings, 11);
    assert_eq!(src.node("till").sightings, 11);
    src.task.abort();
}

#[tokio::test]
async fn a_node_gone_by_its_last_will_is_stale_and_holds_its_zone() {
    let b = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let config = remote_config(dir.path(), &b, 1000);
    store_with_customers(&config);
    let mut src = Source::connected(&config).await;
    let will = LastWill::new(
        "espresense/rooms/door/status",
        "offline",
        QoS::AtLeastOnce,
        true,
    );
    let (door, door_task) = broker::client(&b, "door", Some(will)).await;
    door.publish(
        "espresense/rooms/door/status",
        QoS::AtLeastOnce,
        true,
        "online",
    )
    .await
    .unwrap();
    src.until("door online", |n| !n.is_down(0)).await;
    let (till, _t) = broker::client(&b, "till", None).await;
    let obs = walk_in(&mut src, &door, &till, 10).await;
    let mut p = pipeline(&config);
    let lines = run(&mut p, &obs, at(10, 0, 11));
    assert!(
        lines.contains(&"10:00:04 entered anna entrance".to_owned()),
        "{lines:?}"
    );

    // The node loses power: its connection drops without a goodbye, and
    // the broker publishes its last will.
    door_task.abort();
    drop(door);
    src.until("door offline", |n| n.is_down(0)).await;
    assert_eq!(src.node("door").state, "offline");
    assert!(!src.nodes.is_down(1), "till is still up");

    // What the daemon's tick does with it: the door is down, so the
    // entrance is unknown, never a guessed exit. With the door up she left
    // the entrance at 10:00:25 (the first test); now nothing moves her until
    // the store itself lets her go, heard by nobody, at 10:00:50.
    p.set_scanner_down(ScannerIdx(0), src.nodes.is_down(0), at(10, 0, 11));
    assert_eq!(run(&mut p, &[], at(10, 0, 30)), Vec::<String>::new());
    assert_eq!(p.counters().presence.unknown, 1);
    assert_eq!(p.silent_scanners(), ["door"]);
    assert_eq!(
        run(&mut p, &[], at(10, 1, 0)),
        [
            "10:00:50 exited anna entrance",
            "10:00:50 left anna store",
            "10:00:50 left cleo store"
        ]
    );
    src.task.abort();
}

#[tokio::test]
async fn a_broker_restart_mid_stream_is_survived_and_sightings_resume() {
    let mut b = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let config = remote_config(dir.path(), &b, 1000);
    let mut src = Source::connected(&config).await;
    let (door, _d) = broker::client(&b, "door", None).await;
    broker::publish(
        &door,
        &device_topic(ANNA, "door"),
        v4(ANNA, "6f0000000001", -60.0),
    )
    .await;
    assert_eq!(src.next(1).await.len(), 1);

    b.stop();
    src.until("broker gone", |n| {
        n.snapshot().iter().all(|n| n.state == "unreachable")
    })
    .await;
    assert!(
        (0..3).all(|i| src.nodes.is_down(i)),
        "every remote scanner is stale"
    );
    b.restart();
    src.until("broker back", |n| !n.is_down(0)).await;
    let (door, _d) = broker::client(&b, "door", None).await;
    src.clock.set_start(at(10, 5, 0));
    broker::publish(
        &door,
        &device_topic(ANNA, "door"),
        v4(ANNA, "6f0000000001", -61.0),
    )
    .await;
    let after = src.next(1).await;
    let Observation::Ble(s) = &after[0] else {
        panic!()
    };
    assert_eq!(
        (s.at, s.scanner, s.rssi.0),
        (at(10, 5, 0), ScannerIdx(0), -61)
    );
    let h = src.health.snapshot();
    assert_eq!(
        (h.outages, h.recoveries, h.state.to_string().as_str()),
        (1, 1, "running")
    );
    assert_eq!(
        h.last_outage.as_deref(),
        Some("connection to the broker lost")
    );
    assert!(!src.task.is_finished());
    src.task.abort();
}

#[tokio::test]
async fn a_satellites_clock_is_measured_corrected_and_refused_past_the_bound() {
    let b = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let config = remote_config(dir.path(), &b, 1000);
    let mut src = Source::connected(&config).await;

    // The satellite: `nearcast scanner`'s publisher, fed sightings stamped
    // by its own clock, 3 s ahead of the main box's.
    let (tx, rx) = mpsc::channel(64);
    let mut conn = mqtt::Connection::from_url(&b.url(), "nearcast-test-01-aisle").unwrap();
    conn.username = Some("aisle".into());
    conn.password = Some(nearcast::credentials::SecretRef::Env("AISLE_PW".into()));
    let env: [(&'static str, &'static str); 1] = [("AISLE_PW", broker::password("aisle"))];
    let sat_health = Arc::new(Health::new("satellite"));
    let satellite = tokio::spawn(mqtt::publish(
        conn,
        "test-01".into(),
        "aisle".into(),
        Duration::from_millis(100),
        rx,
        sat_health.clone(),
        Arc::new(env),
    ));
    src.until("satellite online", |n| n.snapshot()[2].state == "online")
        .await;
    let ahead = |s: i64| {
        let mut o = nearcast::core::types::Sighting::new(
            Timestamp(at(10, 0, 0).0 + s),
            ScannerIdx(0),
            BdAddr([0xC4, 0x7C, 0x8D, 0x6A, 0x11, 0x02]),
            nearcast::core::types::Rssi(-62),
        );
        o.tx_power = None;
        Observation::Ble(o)
    };
    // Two sightings 200 ms apart, sent in one batch: the box receives it at
    // its 10:00:00 (its clock stands still), the newest line says 10:00:03.
    tx.send(ahead(2_800)).await.unwrap();
    tx.send(ahead(3_000)).await.unwrap();
    let got = src.next(2).await;
    let times: Vec<Timestamp> = got.iter().map(Observation::at).collect();
    assert_eq!(times, [Timestamp(at(10, 0, 0).0 - 200), at(10, 0, 0)]);
    let Observation::Ble(s) = &got[0] else {
        panic!()
    };
    assert_eq!(
        s.scanner,
        ScannerIdx(2),
        "the satellite is the `aisle` scanner"
    );
    assert_eq!(src.node("aisle").clock_offset_ms, Some(-3_000));

    // Its clock jumps a minute ahead: past the 10 s bound, it is refused
    // and its scanner stale, and `stats` says why.
    tx.send(ahead(60_000)).await.unwrap();
    src.until("satellite refused", |n| n.snapshot()[2].state == "refused")
        .await;
    let n = src.node("aisle");
    assert_eq!(
        (n.clock_offset_ms, n.clock_refused, n.sightings),
        (Some(-60_000), 1, 2)
    );
    assert!(src.nodes.is_down(2));

    // Without sightings to send, the satellite leaves on purpose.
    drop(tx);
    satellite.await.unwrap();
    src.task.abort();
}

#[tokio::test]
async fn a_flooding_node_is_cut_to_its_rate_and_the_rest_of_the_store_is_served() {
    let b = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    // 100 sightings a second per node; the test clock stands still, so the
    // flooding node gets its burst of 100 and no more.
    let config = remote_config(dir.path(), &b, 100);
    let mut src = Source::connected(&config).await;
    let (flood, _f) = broker::client(&b, "till", None).await;
    let (door, _d) = broker::client(&b, "door", None).await;
    let topic = device_topic("c0ffee000000", "till");
    // Junk first: not JSON, a report without RSSI, 5 KiB of padding, an
    // id no customer can have.
    broker::publish(&flood, &topic, "{\"id\":").await;
    broker::publish(&flood, &topic, r#"{"id":"c0ffee000000"}"#).await;
    broker::publish(
        &flood,
        &topic,
        format!(
            r#"{{"id":"c0ffee000000","rssi":-60,"pad":"{}"}}"#,
            "x".repeat(5 * 1024)
        ),
    )
    .await;
    broker::publish(
        &flood,
        &topic,
        v4(
            "irk:00112233445566778899aabbccddeeff",
            "4a1122334455",
            -60.0,
        ),
    )
    .await;
    // Then 10,000 reports as fast as the client can send them, with Anna
    // walking past the door in the middle of it.
    for i in 0..10_000u32 {
        broker::publish(
            &flood,
            &topic,
            v4(&format!("c0ffee{i:06x}"), &format!("c0ffee{i:06x}"), -60.0),
        )
        .await;
        if i == 5_000 {
            broker::publish(
                &door,
                &device_topic(ANNA, "door"),
                v4(ANNA, "6f0000000001", -59.0),
            )
            .await;
        }
    }
    // The node's status after its flood: once it is seen, everything
    // before it from that node has been handled (one connection, in order).
    broker::publish(&flood, "espresense/rooms/till/status", "online").await;
    src.until("the flood handled", |n| n.snapshot()[1].state == "online")
        .await;

    let till = src.node("till");
    // The rate is spent before a report is read (reading is the work a
    // flood must not buy): three of the four junk reports took a token, so
    // 97 of the 10,000 went through.
    assert_eq!(
        (
            till.sightings,
            till.rate_limited,
            till.malformed,
            till.oversized,
            till.unusable
        ),
        (97, 9_903, 2, 1, 1),
        "{till:#?}"
    );
    assert_eq!(
        src.node("door").sightings,
        1,
        "the door is served in the middle of the flood"
    );
    let got = src.next(98).await;
    let doors = got
        .iter()
        .filter(|o| matches!(o, Observation::Ble(s) if s.scanner == ScannerIdx(0)))
        .count();
    assert_eq!(doors, 1);
    // Bounded: what reached the queue is what the rate let through.
    assert!(src.rx.is_empty());
    assert_eq!(src.health.snapshot().queue_full, 0);
    src.task.abort();
}

#[tokio::test]
async fn wrong_credentials_are_refused_retried_and_said_in_words() {
    let b = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let config = remote_config(dir.path(), &b, 1000);
    let src = Source::start(&config, "not-the-password").await;
    src.until("two refusals", |_| {
        src.health.snapshot().failed_attempts >= 2
    })
    .await;
    let h = src.health.snapshot();
    assert_eq!(
        h.last_outage.as_deref(),
        Some("broker refused the credentials")
    );
    assert_eq!((h.outages, h.recoveries, h.delivered), (1, 0, 0));
    assert!(
        src.nodes
            .snapshot()
            .iter()
            .all(|n| n.state == "unreachable")
    );
    assert!(!src.task.is_finished(), "it keeps trying");
    // A node with a wrong password gets nowhere either.
    let refused = broker::client_as(&b, "door", "guess", None).await;
    assert!(
        matches!(
            refused,
            Err(rumqttc::ConnectionError::ConnectionRefused(
                rumqttc::ConnectReturnCode::BadUserNamePassword
                    | rumqttc::ConnectReturnCode::NotAuthorized
            ))
        ),
        "{:?}",
        refused.err()
    );
    src.task.abort();
}

#[tokio::test]
async fn unknown_nodes_are_counted_and_ignored_and_a_node_cannot_speak_for_another() {
    let b = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let config = remote_config(dir.path(), &b, 1000);
    let mut src = Source::connected(&config).await;
    // An account the store has, but no scanner in zones.toml.
    let (intruder, _i) = broker::client(&b, "intruder", None).await;
    broker::publish(
        &intruder,
        &device_topic(ANNA, "intruder"),
        v4(ANNA, "6f0000000001", -50.0),
    )
    .await;
    src.until("the unknown node counted", |n| {
        n.unknown_node.load(std::sync::atomic::Ordering::Relaxed) == 1
    })
    .await;
    // The door's account publishing as the till: the broker's ACL drops it.
    let (door, _d) = broker::client(&b, "door", None).await;
    broker::publish(
        &door,
        &device_topic(ANNA, "till"),
        v4(ANNA, "6f0000000001", -50.0),
    )
    .await;
    broker::publish(&door, "espresense/rooms/till/status", "offline").await;
    broker::publish(
        &door,
        &device_topic(ANNA, "door"),
        v4(ANNA, "6f0000000001", -52.0),
    )
    .await;
    let got = src.next(1).await;
    let Observation::Ble(s) = &got[0] else {
        panic!()
    };
    assert_eq!((s.scanner, s.rssi.0), (ScannerIdx(0), -52));
    assert_eq!(src.node("till").sightings, 0);
    assert_ne!(src.node("till").state, "offline");
    assert!(src.rx.is_empty());
    src.task.abort();
}

/// Everything logged, at debug level and above.
#[derive(Clone, Default)]
struct Log(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Log {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The log of this whole test binary (every test's source logs into it),
/// at debug level and above. A process-wide subscriber: a thread's own
/// (`set_default`) can miss events while other tests' threads register the
/// same call sites.
fn global_log() -> Log {
    static LOG: std::sync::OnceLock<Log> = std::sync::OnceLock::new();
    LOG.get_or_init(|| {
        let log = Log::default();
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        log
    })
    .clone()
}

#[tokio::test]
async fn a_stream_full_of_strangers_leaves_no_trace_in_database_wal_or_log() {
    let log = global_log();
    let b = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let config = remote_config(dir.path(), &b, 100_000);
    let (_store, hasher) = store_with_customers(&config);
    let mut src = Source::connected(&config).await;
    let (door, _d) = broker::client(&b, "door", None).await;

    // 300 strangers a second for 12 s: bare public MACs, `known:` MACs,
    // other apps' iBeacons, Eddystone, an alias behind an address, and
    // IRK-resolved phones; Anna among them.
    let stranger = |i: u32| -> (String, String) {
        let mac = format!("5a{:010x}", 0x00ab_cd00_0000u64 + u64::from(i));
        let id = match i % 6 {
            0 => mac.clone(),
            1 => format!("known:{mac}"),
            2 => format!("iBeacon:f7826da6-4fa2-4e98-8024-bc5b71e0{i:04x}-7-{i}"),
            3 => format!("eddy:edd1ebeac04e5defa017-{:012x}", i),
            4 => format!("watch:someone-{i}"),
            _ => format!("irk:{:032x}", u128::from(i) * 7919),
        };
        (id, mac)
    };
    let mut obs = Vec::new();
    for s in 0..12 {
        src.clock.set_start(at(10, 0, s));
        for i in 0..300 {
            let (id, mac) = stranger(i);
            broker::publish(&door, &device_topic(&id, "door"), v4(&id, &mac, -65.0)).await;
        }
        broker::publish(
            &door,
            &device_topic(ANNA, "door"),
            v4(ANNA, "6f0000000001", -59.0),
        )
        .await;
        // The 50 IRK reports stop in the source; the rest are sightings.
        obs.extend(src.next(251).await);
    }
    assert_eq!(src.node("door").unusable, 12 * 50);
    let mut p = pipeline(&config);
    let lines = run(&mut p, &obs, at(10, 1, 0));
    assert_eq!(
        lines[..2],
        [
            "10:00:03 arrived anna store",
            "10:00:03 act welcome anna whatsapp/rich"
        ]
    );
    assert!(lines.iter().all(|l| l.contains("anna")), "{lines:?}");
    drop(p);

    let db = database_bytes(&config);
    let logged = log.0.lock().unwrap().clone();
    // The source said it connected ("connected", or "broker back" when a
    // first attempt on a loaded machine timed out): the log is captured.
    assert!(contains(&logged, b"MQTT: "), "the log was captured");
    for i in 0..300 {
        let (id, mac) = stranger(i);
        let bytes = hex::decode(&mac).unwrap();
        let addr = BdAddr(bytes.clone().try_into().unwrap());
        let hash = hasher.hash(&nearcast::core::identity::Identity::Mac(addr));
        for (what, needle) in [
            ("id", id.as_bytes().to_vec()),
            ("mac", mac.as_bytes().to_vec()),
            ("MAC", addr.to_string().into_bytes()),
            ("address bytes", bytes),
            ("hash", hash.0.to_vec()),
        ] {
            assert!(
                !contains(&db, &needle),
                "stranger {i}'s {what} is in the database or WAL"
            );
            assert!(
                !contains(&logged, &needle),
                "stranger {i}'s {what} is in the log"
            );
        }
    }
    src.task.abort();
}

/// One line of a mosquitto_sub capture (`-F %j`).
#[derive(serde::Deserialize)]
struct Captured {
    tst: String,
    topic: String,
    payload: serde_json::Value,
}

#[tokio::test]
async fn espresense_companions_capture_puts_the_watch_in_the_room_where_it_stood() {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/espresense-companion");
    let b = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let daemon = format!(
        "{DAEMON}\n[mqtt]\nurl = \"{}\"\nusername = \"nearcast\"\npassword_env = \"NEARCAST_MQTT_PASSWORD\"\n",
        b.url()
    );
    std::fs::write(dir.path().join("nearcast.toml"), daemon).unwrap();
    std::fs::copy(fixtures.join("zones.toml"), dir.path().join("zones.toml")).unwrap();
    std::fs::write(
        dir.path().join("campaigns.toml"),
        "[[campaign]]\nid = \"hello\"\ntrigger = \"arrive\"\nmessage = \"hello\"\ncooldown = \"1h\"\npurpose = \"welcome\"\n\n[[message]]\nid = \"hello\"\nttl = \"5m\"\nplain = \"Hi {first_name}\"\n",
    )
    .unwrap();
    let config = nearcast::config::load(dir.path()).unwrap();
    let (mut store, hasher) = nearcast::app::open_database(&config, None).unwrap();
    store
        .import_customers(
            "id,first_name,phone,channels,consent_at,consent_source,identities,segments\ndarrell,Darrell,+15555550100,sms,2023-01-01T10:00:00Z,app,mac:58:B1:29:44:94:D3,\n".as_bytes(),
            &hasher,
            // 2023-11-14, after the consent.
            Timestamp(1_700_000_000_000),
        )
        .unwrap();
    drop(store);
    let mut src = Source::connected(&config).await;

    let capture = std::fs::read_to_string(fixtures.join("stationary,7,14.75,1.25.jsonp")).unwrap();
    let mut clients = std::collections::HashMap::new();
    let mut obs = Vec::new();
    for line in capture.lines() {
        let c: Captured = serde_json::from_str(line).unwrap();
        let node = c.topic.rsplit('/').next().unwrap().to_owned();
        if !clients.contains_key(&node) {
            clients.insert(node.clone(), broker::client(&b, &node, None).await);
        }
        let t: jiff::Timestamp = c.tst.parse().unwrap();
        src.clock.set_start(Timestamp(t.as_millisecond()));
        broker::publish(&clients[&node].0, &c.topic, c.payload.to_string()).await;
        obs.extend(src.next(1).await);
    }
    assert_eq!(obs.len(), 1693);
    let (first, last) = (obs[0].at(), obs.last().unwrap().at());
    let mut p = pipeline(&config);
    let lines = run(&mut p, &obs, last);
    assert_eq!(
        lines[..3],
        [
            "01:48:02 arrived darrell store",
            "01:48:02 act hello darrell sms/plain",
            "01:48:10 entered darrell den"
        ]
    );
    // Time in each room from the events: the watch stood 0.75 m north of
    // the den's outline (within its 1 m exit margin), and that is where
    // nearcast keeps it; the rest of the time it puts it next door.
    let secs = |l: &str| {
        let t = &l[..8];
        let p: Vec<i64> = t.split(':').map(|x| x.parse().unwrap()).collect();
        p[0] * 3600 + p[1] * 60 + p[2]
    };
    let mut time_in: std::collections::BTreeMap<String, i64> = Default::default();
    let mut current: Option<(String, i64)> = None;
    for l in &lines {
        let words: Vec<&str> = l.split(' ').collect();
        match words[1] {
            "entered" => current = Some((words[3].to_owned(), secs(l))),
            "exited" => {
                let (room, since) = current.take().unwrap();
                *time_in.entry(room).or_default() += secs(l) - since;
            }
            _ => {}
        }
    }
    let end = secs(
        &jiff::Timestamp::from_millisecond(last.0)
            .unwrap()
            .to_zoned(jiff::tz::TimeZone::get("Europe/Berlin").unwrap())
            .strftime("%H:%M:%S")
            .to_string(),
    );
    let (room, since) = current.unwrap();
    assert_eq!(room, "den", "the watch ends in the den: {lines:#?}");
    *time_in.entry(room).or_default() += end - since;
    let total: i64 = time_in.values().sum();
    assert!(
        time_in["den"] * 100 >= 80 * total && time_in.keys().all(|r| r == "den" || r == "powder"),
        "{time_in:?} of {} s: {lines:#?}",
        last.since(first).as_secs()
    );
}

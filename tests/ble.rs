//! The BLE path end to end, with the real btleplug against a stand-in
//! BlueZ (python-dbusmock's `bluez5` template on a private `dbus-daemon`):
//! the daemon as a child process hears devices appear and move, decodes
//! iBeacon and Eddystone frames, and emits the expected zone events and
//! decisions; `record` captures the same run and `replay` of the capture
//! gives the same events; BlueZ restarting, the adapter being removed and
//! re-added and powered off are all recovered from without the daemon
//! exiting. Wi-Fi presence (a dnsmasq leases file) joins in, and a customer
//! seen by both is greeted once.
//!
//! Real D-Bus round trips need real time: each wait is bounded.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod bluez;

use std::path::Path;
use std::time::{Duration, Instant};

use bluez::{Nearcast, StandIn, presence};
use nearcast::core::types::Timestamp;

const ANNA_PHONE: &str = "C4:00:00:00:00:01";
const ANNA_WIFI: &str = "02:AA:00:00:00:01";
const DORA_TAG: &str = "C4:00:00:00:00:02";
const STRANGER: &str = "C4:00:00:00:00:09";
const DORA_NS: &str = "0102030405060708090a";
const DORA_INSTANCE: &str = "a0a1a2a3a4a5";

fn zones(store_exit_after: &str) -> String {
    format!(
        r#"
store = "Teststore"
store_id = "test-ble"
time_zone = "Europe/Berlin"

[hours]
mon = "00:00-24:00"
tue = "00:00-24:00"
wed = "00:00-24:00"
thu = "00:00-24:00"
fri = "00:00-24:00"
sat = "00:00-24:00"
sun = "00:00-24:00"

[radio]
measured_power = -59
path_loss_exponent = 2.0
window = 3
signal_timeout = "2s"

[[scanner]]
id = "door"
position = [0.0, 0.0]

[[zone]]
id = "store"
kind = "store"
min_dwell = "1s"
exit_after = "{store_exit_after}"

[[zone]]
id = "entrance"
kind = "near"
scanner = "door"
enter = 2.0
exit = 4.0
min_dwell = "1s"
exit_after = "2s"
"#
    )
}

const CAMPAIGNS: &str = r#"
[limits]
max_messages_per_day = 10

[[campaign]]
id = "welcome"
trigger = "arrive"
message = "welcome"
cooldown = "12h"

[[campaign]]
id = "door-offer"
trigger = "enter"
zone = "entrance"
message = "offer"
cooldown = "1h"

[[message]]
id = "welcome"
ttl = "5m"
plain = "Hi {first_name}, welcome!"

[[message]]
id = "offer"
ttl = "5m"
plain = "{first_name}: 2 for 1 today."
"#;

fn customers() -> String {
    format!(
        "id,first_name,phone,channels,consent_at,consent_source,identities,segments
anna,Anna,+4915112345678,sms,2026-01-01T10:00:00Z,app,ibeacon:E2C56DB5-DFFB-48D2-B060-D0F5A71096E0:1:1;mac:{ANNA_WIFI},
dora,Dora,+4915112345679,sms,2026-01-01T10:00:00Z,app,eddystone-uid:{DORA_NS}:{DORA_INSTANCE},
eve,Eve,+4915112345670,sms,2026-01-01T10:00:00Z,app,ibeacon:E2C56DB5-DFFB-48D2-B060-D0F5A71096E0:1:3,
"
    )
}

/// Writes the config into `dir` and imports the customers.
fn setup(dir: &Path, sources: &str, store_exit_after: &str) {
    setup_with(dir, sources, &zones(store_exit_after));
}

fn setup_with(dir: &Path, sources: &str, zones: &str) {
    std::fs::write(
        dir.join("nearcast.toml"),
        format!(
            r#"
[database]
path = "nearcast.db"

{sources}

[channels.sms]
adapter = "console"

[guard]
min_interval = "100ms"
identity_interval = "100ms"

# Test machines need not run NTP; the clock guard has tests of its own.
[clock]
require_sync = false
"#
        ),
    )
    .unwrap();
    std::fs::write(dir.join("zones.toml"), zones).unwrap();
    std::fs::write(dir.join("campaigns.toml"), CAMPAIGNS).unwrap();
    let config = nearcast::config::load(dir).unwrap_or_else(|e| panic!("{e}"));
    let (mut store, hasher) = nearcast::app::open_database(&config, None).unwrap();
    store
        .import_customers(
            customers().as_bytes(),
            &hasher,
            Timestamp::from_secs(1_767_261_600),
        )
        .unwrap();
}

const BLE_SOURCE: &str = r#"
[[source]]
kind = "ble"
adapter = "hci0"
scanner = "door"
silence = "30s"
retry_min = "200ms"
retry_max = "1s"
"#;

/// Advertises for `secs`: every 300 ms each `(device, rssi)` reports an
/// RSSI (alternating ±1 dBm, as a real signal wobbles).
fn advertise(bus: &mut StandIn, devices: &[(&str, i16)], secs: f64) {
    let start = Instant::now();
    let mut wobble = 1;
    while start.elapsed().as_secs_f64() < secs {
        for (dev, rssi) in devices {
            bus.rssi(dev, rssi + wobble);
        }
        wobble = -wobble;
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Waits until a scanner has turned discovery on (the adapter's
/// `Discovering`), so what is advertised next is heard.
fn wait_until_discovering(bus: &mut StandIn) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while bus.get_bool("/org/bluez/hci0", "org.bluez.Adapter1", "Discovering") != Some(true) {
        assert!(
            Instant::now() < deadline,
            "the scan never started discovering"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn count(log: &str, needles: &[&str]) -> usize {
    log.lines()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .count()
}

fn of(events: &[String], customer: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| e.starts_with(&format!("{customer} ")))
        .cloned()
        .collect()
}

#[test]
fn devices_appear_move_and_leave_and_a_recording_replays_to_the_same_events() {
    let mut bus = StandIn::start();
    let dir = bus.dir().to_owned();
    let leases = dir.join("dnsmasq.leases");
    std::fs::write(
        &leases,
        format!("0 {ANNA_WIFI} 192.168.1.23 anna-phone *\n"),
    )
    .unwrap();
    setup(
        &dir,
        &format!(
            "{BLE_SOURCE}
[[source]]
kind = \"wifi\"
backend = \"leases\"
file = \"dnsmasq.leases\"
poll = \"100ms\"
"
        ),
        "3s",
    );
    bus.add_adapter("hci0");
    // Anna's phone is known to BlueZ before nearcast starts scanning.
    let anna = bus.add_device("hci0", ANNA_PHONE);
    bus.ibeacon(&anna, 1, 1);
    bus.rssi(&anna, -59);

    let config = dir.join("").display().to_string();
    let mut run = Nearcast::spawn(&bus, &["run", "--config", &config], "run.log");
    let mut record = Nearcast::spawn(
        &bus,
        &[
            "record",
            "--config",
            &config,
            dir.join("capture.jsonl").to_str().unwrap(),
        ],
        "record.log",
    );
    run.wait_for(&["scanning", "adapter=hci0"], Duration::from_secs(20));
    record.wait_for(&["scanning", "adapter=hci0"], Duration::from_secs(20));

    // Dora's Eddystone tag and a stranger's iBeacon appear; Anna stands at
    // the door (about 1 m), Dora further in (about 6 m).
    let dora = bus.add_device("hci0", DORA_TAG);
    bus.eddystone_uid(&dora, DORA_NS, DORA_INSTANCE);
    let stranger = bus.add_device("hci0", STRANGER);
    bus.ibeacon(&stranger, 1, 99);
    advertise(
        &mut bus,
        &[(&anna, -59), (&dora, -75), (&stranger, -60)],
        4.0,
    );
    run.wait_for(
        &["customer=anna", "event=entered", "zone=entrance"],
        Duration::from_secs(5),
    );
    // Anna walks into the store (about 11 m).
    advertise(
        &mut bus,
        &[(&anna, -80), (&dora, -75), (&stranger, -60)],
        3.5,
    );
    run.wait_for(
        &["customer=anna", "event=exited", "zone=entrance"],
        Duration::from_secs(5),
    );
    // Everyone stops advertising; Anna's lease goes (rewritten in place).
    std::fs::write(&leases, "").unwrap();
    run.wait_for(&["customer=anna", "event=left"], Duration::from_secs(20));
    run.wait_for(&["customer=dora", "event=left"], Duration::from_secs(20));

    assert!(record.stop().success());
    assert!(run.stop().success());
    let log = run.log();
    let live = presence(&log);
    assert_eq!(
        of(&live, "anna"),
        [
            "anna arrived store",
            "anna entered entrance",
            "anna exited entrance",
            "anna left store"
        ],
        "{log}"
    );
    assert_eq!(
        of(&live, "dora"),
        ["dora arrived store", "dora left store"],
        "{log}"
    );
    assert_eq!(live.len(), 6, "nobody else: {live:?}");
    // Seen by BLE and Wi-Fi, greeted once.
    assert_eq!(
        count(&log, &["customer=anna", "campaign=welcome", " decision"]),
        1,
        "{log}"
    );
    assert_eq!(
        count(&log, &["customer=anna", "campaign=door-offer", " decision"]),
        1
    );
    assert_eq!(
        count(&log, &["customer=dora", "campaign=welcome", " decision"]),
        1
    );
    assert_eq!(count(&log, &["customer=dora", "campaign=door-offer"]), 0);
    for addr in [ANNA_PHONE, DORA_TAG, STRANGER, ANNA_WIFI] {
        assert!(!log.contains(addr), "an address in the log: {addr}");
    }

    // The capture holds the customers' sightings and Anna's Wi-Fi, never
    // the stranger.
    let capture = std::fs::read_to_string(dir.join("capture.jsonl")).unwrap();
    assert!(
        capture.contains(ANNA_PHONE) && capture.contains(DORA_TAG),
        "{capture}"
    );
    assert!(
        capture.contains(&format!("\"wifi\":\"joined\",\"mac\":\"{ANNA_WIFI}\"")),
        "{capture}"
    );
    assert!(
        !capture.contains(STRANGER),
        "a non-consented device was recorded"
    );
    assert!(
        capture.contains("0215e2c56db5dffb48d2b060d0f5a71096e000010001c5"),
        "iBeacon frame"
    );
    assert!(
        capture.contains(&format!(
            "\"0000feaa-0000-1000-8000-00805f9b34fb\":\"00ee{DORA_NS}{DORA_INSTANCE}0000\""
        )),
        "Eddystone frame: {capture}"
    );
    let record_log = record.log();
    assert!(record_log.contains("of enrolled customers"), "{record_log}");

    // Replaying the capture gives the live run's events.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_nearcast"))
        .args([
            "replay",
            "--config",
            &config,
            "--dry-run",
            "--fast",
            "--json",
        ])
        .arg(dir.join("capture.jsonl"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let replayed: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            let kind = v["type"].as_str()?;
            (kind != "decision" && kind != "suppressed").then(|| {
                format!(
                    "{} {kind} {}",
                    v["customer"].as_str().unwrap_or(""),
                    v["zone"].as_str().unwrap_or("")
                )
            })
        })
        .collect();
    assert_eq!(of(&replayed, "anna"), of(&live, "anna"));
    assert_eq!(of(&replayed, "dora"), of(&live, "dora"));
}

#[test]
fn bluez_restarting_and_the_adapter_replugged_or_powered_off_are_recovered() {
    let mut bus = StandIn::start();
    let dir = bus.dir().to_owned();
    // A long store exit: Anna stays in the store through every outage.
    setup(&dir, BLE_SOURCE, "120s");
    bus.add_adapter("hci0");
    let anna = bus.add_device("hci0", ANNA_PHONE);
    bus.ibeacon(&anna, 1, 1);
    let config = dir.display().to_string();
    let mut run = Nearcast::spawn(&bus, &["run", "--config", &config], "run.log");
    run.wait_for(&["scanning"], Duration::from_secs(20));
    advertise(&mut bus, &[(&anna, -70)], 2.0);
    run.wait_for(&["customer=anna", "event=arrived"], Duration::from_secs(5));
    let stats = || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_nearcast"))
            .args(["stats", "--json", "--config", &config])
            .output()
            .unwrap();
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };

    // BlueZ crashes and comes back (a new owner of org.bluez).
    let retries = run.count_of(&["bluetooth still unavailable"]);
    let restarts = run.count_of(&["scan restarted"]);
    bus.kill_bluez();
    run.wait_for(
        &["bluetooth lost", "reason=bluez gone"],
        Duration::from_secs(10),
    );
    // A few failed retries.
    run.wait_for_count(
        &["bluetooth still unavailable"],
        retries + 2,
        Duration::from_secs(10),
    );
    // Meanwhile `stats` names the scanner as silent, and Anna's zone as
    // unknown rather than guessed (the status file is written every 5 s).
    let deadline = Instant::now() + Duration::from_secs(12);
    let mut v = stats();
    while v["live"]["silent_scanners"] != serde_json::json!(["door"]) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        v = stats();
    }
    assert_eq!(
        v["live"]["silent_scanners"],
        serde_json::json!(["door"]),
        "{v}"
    );
    assert_eq!(v["live"]["presence"]["silent_scanners"], 1, "{v}");
    bus.start_bluez();
    bus.add_adapter("hci0");
    // Sightings flow again: Dora's tag arrives.
    let dora = bus.add_device("hci0", DORA_TAG);
    bus.eddystone_uid(&dora, DORA_NS, DORA_INSTANCE);
    // Once the daemon scans again, what is advertised is heard.
    run.wait_for_count(&["scan restarted"], restarts + 1, Duration::from_secs(10));
    advertise(&mut bus, &[(&dora, -70)], 2.0);
    run.wait_for(&["bluetooth back"], Duration::from_secs(10));
    run.wait_for(&["customer=dora", "event=arrived"], Duration::from_secs(5));

    // The adapter is unplugged, then plugged in again.
    let retries = run.count_of(&["bluetooth still unavailable"]);
    let restarts = run.count_of(&["scan restarted"]);
    bus.remove_adapter("hci0");
    run.wait_for(
        &["bluetooth lost", "reason=adapter removed"],
        Duration::from_secs(10),
    );
    run.wait_for_count(
        &["bluetooth still unavailable"],
        retries + 2,
        Duration::from_secs(10),
    );
    bus.add_adapter("hci0");
    let eve = bus.add_device("hci0", "C4:00:00:00:00:03");
    bus.ibeacon(&eve, 1, 3);
    run.wait_for_count(&["scan restarted"], restarts + 1, Duration::from_secs(10));
    advertise(&mut bus, &[(&eve, -70)], 2.0);
    let back = |log: &str| count(log, &["bluetooth back"]);
    assert_eq!(back(&run.log()), 2, "{}", run.log());
    run.wait_for(&["customer=eve", "event=arrived"], Duration::from_secs(5));

    // Someone powers the adapter off: scanning powers it on again.
    let restarts = run.count_of(&["scan restarted"]);
    bus.set("/org/bluez/hci0", "org.bluez.Adapter1", "Powered", false);
    run.wait_for(
        &["bluetooth lost", "reason=adapter powered off"],
        Duration::from_secs(10),
    );
    run.wait_for_count(&["scan restarted"], restarts + 1, Duration::from_secs(10));
    advertise(&mut bus, &[(&eve, -70)], 2.0);
    assert_eq!(back(&run.log()), 3, "{}", run.log());
    assert_eq!(
        bus.get_bool("/org/bluez/hci0", "org.bluez.Adapter1", "Powered"),
        Some(true)
    );
    assert_eq!(
        bus.get_bool("/org/bluez/hci0", "org.bluez.Adapter1", "Discovering"),
        Some(true)
    );

    // The status file (written every 5 s) shows it to `nearcast stats`,
    // once it has been written since the third recovery.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut v = stats();
    while v["live"]["sources"][0]["recoveries"].as_u64() != Some(3) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        v = stats();
    }
    let src = &v["live"]["sources"][0];
    assert_eq!(src["name"], "ble:hci0");
    assert_eq!(src["state"], "running");
    assert_eq!(
        (src["outages"].as_u64(), src["recoveries"].as_u64()),
        (Some(3), Some(3))
    );
    assert_eq!(src["last_outage"], "adapter powered off");
    assert!(v["live"]["guard"]["admitted"].as_u64().unwrap() > 0, "{v}");

    assert!(run.stop().success(), "the daemon stopped cleanly");
    let log = run.log();
    // Each outage logged once, however many retries it took.
    assert_eq!(count(&log, &["bluetooth lost"]), 3, "{log}");
    let events = presence(&log);
    assert_eq!(
        events,
        [
            "anna arrived store",
            "dora arrived store",
            "eve arrived store"
        ],
        "nobody left or arrived twice across the outages: {log}"
    );
}

#[test]
fn scan_shows_decoded_beacons_distances_and_who_they_are() {
    let mut bus = StandIn::start();
    let dir = bus.dir().to_owned();
    setup(&dir, BLE_SOURCE, "3s");
    bus.add_adapter("hci0");
    let anna = bus.add_device("hci0", ANNA_PHONE);
    bus.ibeacon(&anna, 1, 1);
    bus.set(&anna, "org.bluez.Device1", "TxPower", -8i16);
    let dora = bus.add_device("hci0", DORA_TAG);
    bus.eddystone_uid(&dora, DORA_NS, DORA_INSTANCE);
    let stranger = bus.add_device("hci0", STRANGER);
    bus.ibeacon(&stranger, 1, 99);

    let address = bus.address.clone();
    let scan = |json: bool| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_nearcast"));
        cmd.args(["scan", "--adapter", "hci0", "--seconds", "4", "--config"])
            .arg(&dir)
            .env("DBUS_SYSTEM_BUS_ADDRESS", &address)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        if json {
            cmd.arg("--json");
        }
        cmd.spawn().unwrap()
    };
    let child = scan(true);
    wait_until_discovering(&mut bus);
    // Anna at 1 m (-59), Dora at 10 m (-79), the stranger at 2 m (-65).
    advertise(
        &mut bus,
        &[(&anna, -59), (&dora, -79), (&stranger, -65)],
        2.0,
    );
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    // The last refresh: one line per device, strongest first.
    let rows: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let last_t = rows.last().unwrap()["t"].clone();
    let last: Vec<&serde_json::Value> = rows.iter().filter(|r| r["t"] == last_t).collect();
    let addrs: Vec<&str> = last.iter().map(|r| r["addr"].as_str().unwrap()).collect();
    assert_eq!(addrs, [ANNA_PHONE, STRANGER, DORA_TAG], "{text}");
    let anna_row = last[0];
    assert_eq!(
        anna_row["identity"],
        "ibeacon E2C56DB5-DFFB-48D2-B060-D0F5A71096E0:1:1"
    );
    assert_eq!(anna_row["customer"], "anna");
    assert_eq!(anna_row["tx_power"], -8);
    assert_eq!(anna_row["measured_power"], -59);
    let d = anna_row["distance_m"].as_f64().unwrap();
    assert!((0.8..1.3).contains(&d), "about 1 m: {d}");
    assert_eq!(
        last[1]["customer"],
        serde_json::Value::Null,
        "the stranger is nobody"
    );
    assert_eq!(
        last[2]["identity"],
        format!("eddystone-uid {DORA_NS}:{DORA_INSTANCE}")
    );
    assert_eq!(last[2]["customer"], "dora");
    let d = last[2]["distance_m"].as_f64().unwrap();
    assert!((8.0..12.5).contains(&d), "about 10 m: {d}");

    // In a plain (non-terminal) output, a table per refresh.
    // The first scan left the adapter discovering: the second's start is
    // seen when it turns discovery on again.
    bus.set(
        "/org/bluez/hci0",
        "org.bluez.Adapter1",
        "Discovering",
        false,
    );
    let child = scan(false);
    wait_until_discovering(&mut bus);
    advertise(&mut bus, &[(&anna, -59)], 1.0);
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        !text.contains('\x1b'),
        "no terminal escapes when not a terminal"
    );
    let table = text
        .split("\n\n")
        .filter(|t| !t.trim().is_empty())
        .last()
        .unwrap();
    let mut lines = table.lines();
    assert!(lines.next().unwrap().starts_with("address "), "{table}");
    let first = lines.next().unwrap();
    assert!(
        first.starts_with(ANNA_PHONE)
            && first.contains("ibeacon E2C56DB5")
            && first.ends_with("anna"),
        "{table}"
    );
}

#[test]
fn scan_of_an_adapter_bluez_does_not_have_fails_and_says_why() {
    let mut bus = StandIn::start();
    let dir = bus.dir().to_owned();
    setup(&dir, BLE_SOURCE, "3s");
    bus.add_adapter("hci0");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_nearcast"))
        .args([
            "scan",
            "--adapter",
            "hci7",
            "--seconds",
            "2",
            "--json",
            "--config",
        ])
        .arg(&dir)
        .env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "heard 0 advertisements from 0 devices\n\
         nearcast: scan: hci7 never started scanning (adapter missing): is bluetoothd running and \
         the adapter there (`bluetoothctl list`)?\n"
    );
}

#[test]
fn silence_restarts_the_scan_and_counts_as_one_outage() {
    let mut bus = StandIn::start();
    let dir = bus.dir().to_owned();
    setup(
        &dir,
        &BLE_SOURCE.replace("silence = \"30s\"", "silence = \"1s\""),
        "120s",
    );
    bus.add_adapter("hci0");
    let anna = bus.add_device("hci0", ANNA_PHONE);
    bus.ibeacon(&anna, 1, 1);
    let config = dir.display().to_string();
    let mut run = Nearcast::spawn(&bus, &["run", "--config", &config], "run.log");
    run.wait_for(&["scanning"], Duration::from_secs(20));
    advertise(&mut bus, &[(&anna, -70)], 1.5);
    run.wait_for(&["customer=anna", "event=arrived"], Duration::from_secs(5));
    // Nothing advertises for a while: the scan is restarted again and
    // again (discovery stopped and started), but that is one outage.
    let restarts = run.count_of(&["scan restarted"]);
    run.wait_for(
        &["bluetooth lost", "reason=no advertisements"],
        Duration::from_secs(5),
    );
    run.wait_for_count(&["scan restarted"], restarts + 2, Duration::from_secs(10));
    advertise(&mut bus, &[(&anna, -70)], 1.5);
    run.wait_for(&["bluetooth back"], Duration::from_secs(5));
    assert!(run.stop().success());
    let log = run.log();
    assert_eq!(count(&log, &["bluetooth lost"]), 1, "{log}");
    assert_eq!(count(&log, &["bluetooth back"]), 1, "{log}");
    assert_eq!(presence(&log), ["anna arrived store"], "{log}");
}

#[test]
fn two_adapters_are_two_scanners_feeding_an_area_zone() {
    let mut bus = StandIn::start();
    let dir = bus.dir().to_owned();
    let two = format!(
        "{BLE_SOURCE}\n{}",
        BLE_SOURCE
            .replace("hci0", "hci1")
            .replace("scanner = \"door\"", "scanner = \"till\"")
    );
    // The floor plan: the door at x = 0, the till 10 m away, a checkout
    // area around the till.
    let zones = zones("2s").replace(
        "[[zone]]\nid = \"entrance\"",
        "[[scanner]]\nid = \"till\"\nposition = [10.0, 0.0]\n\n\
         [[zone]]\nid = \"checkout\"\nkind = \"area\"\n\
         polygon = [[7.0, -3.0], [13.0, -3.0], [13.0, 3.0], [7.0, 3.0]]\n\
         exit_margin = 0.5\nmin_dwell = \"1s\"\nexit_after = \"2s\"\n\n\
         [[zone]]\nid = \"entrance\"",
    );
    setup_with(&dir, &two, &zones);
    let config = dir.display().to_string();
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_nearcast"))
        .args(["check-config", "--config", &config])
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    bus.add_adapter("hci0");
    bus.add_adapter("hci1");
    // Each adapter hears Anna's phone: BlueZ has a device per adapter.
    let at_door = bus.add_device("hci0", ANNA_PHONE);
    let at_till = bus.add_device("hci1", ANNA_PHONE);
    bus.ibeacon(&at_door, 1, 1);
    bus.ibeacon(&at_till, 1, 1);
    let mut run = Nearcast::spawn(&bus, &["run", "--config", &config], "run.log");
    let deadline = Instant::now() + Duration::from_secs(20);
    while count(&run.log(), &["scanning"]) < 2 {
        assert!(Instant::now() < deadline, "{}", run.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    // At the door (1 m from it, 10 m from the till), then at the till for
    // long enough to be placed there on the one-second beat.
    advertise(&mut bus, &[(&at_door, -59), (&at_till, -79)], 2.5);
    advertise(&mut bus, &[(&at_door, -79), (&at_till, -59)], 6.0);
    run.wait_for(
        &["customer=anna", "event=entered", "zone=checkout"],
        Duration::from_secs(5),
    );
    run.wait_for(&["customer=anna", "event=left"], Duration::from_secs(15));
    assert!(run.stop().success());
    let log = run.log();
    let mut events = presence(&log);
    // The entrance's exit delay (2 s) and the checkout's entry (two seconds
    // of the new pattern for the room filter, then its 1 s minimum dwell)
    // end within a tick of each other; which comes first depends on where
    // the one-second beat falls in the walk.
    if let Some(middle) = events.get_mut(2..4) {
        middle.sort();
    }
    assert_eq!(
        events,
        [
            "anna arrived store",
            "anna entered entrance",
            "anna entered checkout",
            "anna exited entrance",
            "anna exited checkout",
            "anna left store"
        ],
        "{log}"
    );
}

/// CPU seconds (user + system) a process has used, from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    let hz: f64 = String::from_utf8(
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .parse()
    .unwrap_or(100.0);
    ticks / hz
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// The figures in BENCHMARKS.md ("BLE source"). Run with
/// `cargo test --release --test ble -- --ignored --nocapture ble_source_benchmark`.
#[test]
#[ignore = "a benchmark: run by hand, figures go to BENCHMARKS.md"]
fn ble_source_benchmark() {
    const DEVICES: usize = 50;
    let changes: usize = std::env::var("NEARCAST_BENCH_CHANGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let mut bus = StandIn::start();
    let dir = bus.dir().to_owned();
    setup(&dir, BLE_SOURCE, "1s");
    bus.add_adapter("hci0");
    let devices: Vec<String> = (0..DEVICES)
        .map(|i| {
            let d = bus.add_device("hci0", &format!("C4:00:00:00:01:{i:02X}"));
            bus.ibeacon(&d, 1, u16::try_from(100 + i).unwrap());
            d
        })
        .collect();
    let config = dir.display().to_string();

    // 1. Throughput and CPU: `record --all` (the source and a JSON writer)
    //    and the daemon (source, guards, pipeline), each under a burst of
    //    RSSI changes sent as fast as the driver can.
    for what in ["record", "run"] {
        let capture = dir.join("bench.jsonl");
        let args: Vec<&str> = if what == "record" {
            vec![
                "record",
                "--all",
                "--config",
                &config,
                capture.to_str().unwrap(),
            ]
        } else {
            vec!["run", "--config", &config]
        };
        let mut nc = Nearcast::spawn(&bus, &args, &format!("{what}.log"));
        nc.wait_for(&["scanning"], Duration::from_secs(20));
        wait_until_discovering(&mut bus);
        let pid = nc.pid();
        let cpu0 = cpu_seconds(pid);
        let t0 = Instant::now();
        for i in 0..changes {
            let rssi = -50 - i16::try_from(i % 40).unwrap();
            bus.rssi(&devices[i % DEVICES], rssi);
        }
        let sent = t0.elapsed().as_secs_f64();
        // Until the process is idle again: everything queued is delivered.
        let mut last = cpu_seconds(pid);
        loop {
            std::thread::sleep(Duration::from_millis(1000));
            let now = cpu_seconds(pid);
            if now - last < 0.02 {
                break;
            }
            last = now;
        }
        std::thread::sleep(Duration::from_millis(1100)); // the recording's last flush
        let cpu = cpu_seconds(pid) - cpu0;
        assert!(nc.stop().success());
        if what == "record" {
            let text = std::fs::read_to_string(&capture).unwrap();
            let times: Vec<f64> = text
                .lines()
                .map(|l| {
                    serde_json::from_str::<serde_json::Value>(l).unwrap()["t"]
                        .as_f64()
                        .unwrap()
                })
                .collect();
            let n = times.len();
            let span = times[n - 1] - times[0];
            #[allow(clippy::cast_precision_loss)]
            let rate = n as f64 / span;
            #[allow(clippy::cast_precision_loss)]
            let per_k = cpu / n as f64 * 1000.0;
            println!(
                "record --all: {changes} RSSI changes sent in {sent:.2} s; {n} sightings recorded over {span:.2} s = {rate:.0} sightings/s; CPU {cpu:.2} s = {:.1} ms per 1,000 sightings",
                per_k * 1000.0
            );
        } else {
            let status: serde_json::Value =
                serde_json::from_slice(&std::fs::read(dir.join("nearcast.status.json")).unwrap())
                    .unwrap();
            let n = status["sightings"].as_f64().unwrap();
            println!(
                "run: {n} sightings through source, guards and pipeline (guards: {}); CPU {cpu:.2} s = {:.1} ms per 1,000 sightings",
                status["guard"],
                cpu / n * 1e6
            );
        }
    }

    // 2. Latency from a property change on the bus to the zone event: a
    //    device is heard (store: no minimum dwell), arrives, goes quiet,
    //    leaves; 30 times, timing each arrival against the change.
    std::fs::write(
        dir.join("zones.toml"),
        zones("1s")
            .replace(
                "min_dwell = \"1s\"\nexit_after = \"1s\"",
                "min_dwell = \"0s\"\nexit_after = \"1s\"",
            )
            .replace("signal_timeout = \"2s\"", "signal_timeout = \"1s\""),
    )
    .unwrap();
    let mut nc = Nearcast::spawn(&bus, &["run", "--config", &config], "latency.log");
    nc.wait_for(&["scanning"], Duration::from_secs(20));
    let dev = &devices[1]; // minor 101: nobody's; use a customer's beacon
    bus.ibeacon(dev, 1, 1);
    let mut lat = Vec::new();
    for round in 0..30 {
        std::thread::sleep(Duration::from_millis(300));
        let before = jiff::Timestamp::now();
        bus.rssi(dev, -60 - i16::try_from(round % 2).unwrap());
        let arrived = round + 1;
        let deadline = Instant::now() + Duration::from_secs(10);
        let line = loop {
            let log = nc.log();
            let lines: Vec<&str> = log
                .lines()
                .filter(|l| l.contains("customer=anna") && l.contains("event=arrived"))
                .collect();
            if lines.len() >= arrived {
                break lines[arrived - 1].to_owned();
            }
            assert!(Instant::now() < deadline, "{log}");
            std::thread::sleep(Duration::from_millis(2));
        };
        let at: jiff::Timestamp = line.split_whitespace().next().unwrap().parse().unwrap();
        lat.push((at - before).total(jiff::Unit::Millisecond).unwrap());
        let left = round + 1;
        let deadline = Instant::now() + Duration::from_secs(10);
        while nc
            .log()
            .lines()
            .filter(|l| l.contains("customer=anna") && l.contains("event=left"))
            .count()
            < left
        {
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    assert!(nc.stop().success());
    println!(
        "latency RSSI change -> arrived: p50 {:.1} ms, p90 {:.1} ms, max {:.1} ms over {} rounds",
        percentile(&mut lat, 0.5),
        percentile(&mut lat, 0.9),
        percentile(&mut lat, 1.0),
        lat.len()
    );
}

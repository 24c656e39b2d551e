//! Privacy on a real database: rotating identities (app tokens,
//! Eddystone-EID) resolved only inside their windows, consent per channel
//! and purpose, and the schema migration that introduced it.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use nearcast::core::advert::Frame;
use nearcast::core::rotating::{app_token, eid};
use nearcast::core::types::{BdAddr, Observation, ScannerIdx, Sighting, Timestamp};
use support::*;

const APP_KEY: [u8; 32] = [0x42; 32];
const EID_KEY: &str = "0102030405060708090A111213141516";
const EID_EPOCH: i64 = 1_763_000_000;

fn privacy_config(dir: &std::path::Path) -> nearcast::config::Config {
    config_dir(dir, CAMPAIGNS);
    let daemon = format!(
        "{DAEMON}\n[privacy]\napp_ibeacon_uuid = \"{APP_UUID}\"\napp_token_slot = \"15m\"\n"
    );
    std::fs::write(dir.join(nearcast::config::DAEMON_FILE), daemon).unwrap();
    nearcast::config::load(dir).unwrap()
}

fn import(config: &nearcast::config::Config, rows: &str) {
    let (mut s, h) = nearcast::app::open_database(config, None).unwrap();
    let header = "id,first_name,phone,channels,consent_at,consent_source,identities,segments,purposes,consent_text,confirmed_at\n";
    s.import_customers(
        format!("{header}{rows}").as_bytes(),
        &h,
        Timestamp::from_secs(1_767_261_600),
    )
    .unwrap();
}

fn pipeline_at(
    config: &nearcast::config::Config,
    now: Timestamp,
) -> nearcast::app::Pipeline<nearcast::store::Store> {
    let (s, h) = nearcast::app::open_database(config, None).unwrap();
    let registry = nearcast::app::load_registry(&s, config, now).unwrap();
    nearcast::app::pipeline(config, h, registry, s)
}

/// An iBeacon of the app UUID whose major/minor carry the token of the
/// slot containing `slot_time`.
fn token_beacon(t: Timestamp, slot_time: Timestamp, addr: [u8; 6]) -> Observation {
    let tok = app_token(&APP_KEY, slot_time.0.div_euclid(900_000));
    let mut s = Sighting::new(t, ScannerIdx(0), BdAddr(addr), rssi_at(8.0));
    app_ibeacon(
        u16::from_be_bytes([tok[0], tok[1]]),
        u16::from_be_bytes([tok[2], tok[3]]),
    )
    .add_to(&mut s);
    Observation::Ble(s)
}

fn eid_beacon(t: Timestamp, beacon_time: u32, addr: [u8; 6]) -> Observation {
    let mut key = [0u8; 16];
    hex::decode_to_slice(EID_KEY, &mut key).unwrap();
    let mut s = Sighting::new(t, ScannerIdx(0), BdAddr(addr), rssi_at(8.0));
    Frame::EddystoneEid {
        ranging: -21,
        eid: eid(&key, 10, beacon_time),
    }
    .encode()
    .unwrap()
    .add_to(&mut s);
    Observation::Ble(s)
}

#[test]
fn app_tokens_are_recognised_in_their_window_and_across_a_window_change() {
    let dir = tempfile::tempdir().unwrap();
    let config = privacy_config(dir.path());
    import(
        &config,
        &format!(
            "dora,Dora,+4915112345601,sms,2026-01-01T10:00:00Z,app,app:{},,,,\n",
            hex::encode(APP_KEY)
        ),
    );
    // 10:14:50 to 10:15:10: the slot changes at 10:15:00 and so does the
    // token the phone advertises (random addresses change too).
    let start = at(10, 14, 50);
    let mut p = pipeline_at(&config, start);
    let obs: Vec<Observation> = every_second(start, at(10, 15, 10), |t| {
        let addr = if t < at(10, 15, 0) {
            [0x41, 1, 1, 1, 1, 1]
        } else {
            [0x42, 2, 2, 2, 2, 2]
        };
        token_beacon(t, t, addr)
    });
    let out = run(&mut p, &obs, at(10, 20, 0));
    assert_eq!(
        out,
        [
            "10:14:53 arrived dora store",
            "10:14:53 act welcome dora sms/plain",
            "10:15:50 left dora store"
        ]
    );
}

#[test]
fn a_replayed_token_from_an_old_window_earns_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = privacy_config(dir.path());
    import(
        &config,
        &format!(
            "dora,Dora,+4915112345601,sms,2026-01-01T10:00:00Z,app,app:{},,,,\n",
            hex::encode(APP_KEY)
        ),
    );
    // Someone recorded Dora's token at 09:00 and rebroadcasts it at 10:00.
    let mut p = pipeline_at(&config, at(10, 0, 0));
    let obs = every_second(at(10, 0, 0), at(10, 5, 0), |t| {
        token_beacon(t, at(9, 0, 0), [0x43, 3, 3, 3, 3, 3])
    });
    assert!(run(&mut p, &obs, at(10, 10, 0)).is_empty());
    // One slot of clock skew either way is tolerated.
    let obs = every_second(at(10, 20, 0), at(10, 20, 5), |t| {
        token_beacon(t, at(10, 8, 0), [0x43, 3, 3, 3, 3, 3])
    });
    assert_eq!(
        run(&mut p, &obs, at(10, 20, 5))[0],
        "10:20:03 arrived dora store"
    );
}

#[test]
fn eddystone_eid_beacons_resolve_only_in_their_window() {
    let dir = tempfile::tempdir().unwrap();
    let config = privacy_config(dir.path());
    import(
        &config,
        &format!(
            "emil,Emil,+4915112345602,sms,2026-01-01T10:00:00Z,app,eddystone-eid:{EID_KEY}:10:{EID_EPOCH},,,,\n"
        ),
    );
    let counter = |t: Timestamp| u32::try_from(t.as_secs() - EID_EPOCH).unwrap();
    let mut p = pipeline_at(&config, at(10, 0, 0));
    // An EID from an hour ago (three 1024 s windows back) is refused.
    let old = every_second(at(10, 0, 0), at(10, 1, 0), |t| {
        eid_beacon(t, counter(at(9, 0, 0)), [0x44, 4, 4, 4, 4, 4])
    });
    assert!(run(&mut p, &old, at(10, 1, 0)).is_empty());
    let now = every_second(at(10, 2, 0), at(10, 2, 5), |t| {
        eid_beacon(t, counter(t), [0x44, 4, 4, 4, 4, 4])
    });
    assert_eq!(
        run(&mut p, &now, at(10, 2, 5)),
        [
            "10:02:03 arrived emil store",
            "10:02:03 act welcome emil sms/plain"
        ]
    );
}

#[test]
fn offers_need_a_confirmed_consent_for_offers() {
    let dir = tempfile::tempdir().unwrap();
    let config = privacy_config(dir.path());
    // Gold customers at the door get the offer, if they consented to offers.
    import(
        &config,
        "gina,Gina,+4915112345603,sms,2026-01-01T10:00:00Z,kiosk,mac:02:00:00:00:00:01,gold,welcome;offers,kiosk-v3,\n\
         hans,Hans,+4915112345604,sms,2026-01-01T10:00:00Z,kiosk,mac:02:00:00:00:00:02,gold,welcome;offers,kiosk-v3,2026-01-01T10:05:00Z\n\
         ines,Ines,+4915112345605,sms,2026-01-01T10:00:00Z,kiosk,mac:02:00:00:00:00:03,gold,welcome,kiosk-v3,2026-01-01T10:05:00Z\n",
    );
    let mut lines = Vec::new();
    for (i, who) in ["gina", "hans", "ines"].iter().enumerate() {
        let mut p = pipeline_at(&config, at(11, 0, 0));
        let addr = [0x02, 0, 0, 0, 0, u8::try_from(i + 1).unwrap()];
        let obs = every_second(at(11, 0, 0), at(11, 0, 6), |t| bare(t, 0, 1.0, addr));
        let out = run(&mut p, &obs, at(11, 0, 6));
        lines.extend(
            out.into_iter()
                .filter(|l| l.contains("door-offer"))
                .map(|l| l.replace(who, "X")),
        );
    }
    assert_eq!(
        lines,
        [
            "11:00:04 suppressed door-offer X no_consent", // gina: not confirmed
            "11:00:04 act door-offer X sms/plain",         // hans: confirmed
            "11:00:04 suppressed door-offer X no_consent", // ines: no consent to offers
        ]
    );
}

#[test]
fn customers_of_a_version_1_database_keep_their_consent() {
    let dir = tempfile::tempdir().unwrap();
    let config = privacy_config(dir.path());
    let db = &config.daemon.database;
    {
        let conn = rusqlite::Connection::open(db).unwrap();
        conn.execute_batch(include_str!("../src/store/migrations/0001_init.sql"))
            .unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        conn.execute(
            "INSERT INTO customers (id, first_name, phone, channels, segments, consent_at, consent_source, created_at, updated_at)
             VALUES ('old', 'Olga', '+4915112345606', 'whatsapp|sms', 'gold', 1000, 'import', 1000, 1000)",
            [],
        )
        .unwrap();
    }
    let (s, _) = nearcast::app::open_database(&config, None).unwrap();
    let dir = s.directory().unwrap();
    let olga = dir
        .customers()
        .next()
        .map(|k| dir.customer(k).unwrap().clone())
        .unwrap();
    let channels: Vec<(String, bool)> = olga
        .channels
        .iter()
        .map(|(c, p)| (c.to_string(), *p == nearcast::core::types::Purposes::ALL))
        .collect();
    assert_eq!(
        channels,
        [("whatsapp".to_owned(), true), ("sms".to_owned(), true)]
    );
}

#[test]
fn export_shows_everything_and_forget_leaves_no_byte_of_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = privacy_config(dir.path());
    let key_hex = "5a".repeat(32);
    import(
        &config,
        &format!(
            "zora,Zorabella,+4915199988877,sms,2026-01-01T10:00:00Z,kiosk,mac:02:00:00:00:00:09;app:{key_hex},gold,,kiosk-v7,\n\
             other,Otto,+4915112345699,sms,2026-01-01T10:00:00Z,kiosk,mac:02:00:00:00:00:0A,,,,\n"
        ),
    );
    for addr in [[2, 0, 0, 0, 0, 9], [2, 0, 0, 0, 0, 0x0A]] {
        let mut p = pipeline_at(&config, at(11, 0, 0));
        let obs = every_second(at(11, 0, 0), at(11, 0, 8), |t| bare(t, 0, 1.0, addr));
        run(&mut p, &obs, at(11, 5, 0));
    }
    let (mut s, hasher) = nearcast::app::open_database(&config, None).unwrap();
    let export = s.export("zora").unwrap();
    assert_eq!(export["customer"]["first_name"], "Zorabella");
    assert_eq!(export["customer"]["phone"], "+4915199988877");
    // sms for loyalty, offers, welcome: given at the kiosk with text v7, not yet confirmed.
    let consents = export["consents"].as_array().unwrap();
    assert_eq!(
        consents
            .iter()
            .map(|c| c["purpose"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["loyalty", "offers", "welcome"]
    );
    assert!(
        consents
            .iter()
            .all(|c| c["text_version"] == "kiosk-v7" && c["confirmed_at"].is_null())
    );
    assert_eq!(export["identities"][0]["kind"], "mac");
    assert_eq!(export["rotating_keys"][0]["kind"], "app");
    assert_eq!(export["visits"].as_array().unwrap().len(), 1);
    assert!(
        export["decisions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["campaign"] == "welcome" && d["outcome"] == "act")
    );
    assert_eq!(export["messages"][0]["campaign"], "welcome");
    assert_eq!(export["points"][0]["points"], 10);

    let mac_hash =
        hasher.hash(&nearcast::core::identity::Identity::parse("mac:02:00:00:00:00:09").unwrap());
    let key = hex::decode(&key_hex).unwrap();
    let values: [&[u8]; 5] = [b"zora", b"Zorabella", b"+4915199988877", &mac_hash.0, &key];
    let bytes = database_bytes(&config);
    for v in values {
        assert!(
            contains(&bytes, v),
            "{:?} should be stored before forget",
            String::from_utf8_lossy(v)
        );
    }
    s.forget("zora").unwrap();
    drop(s);
    let bytes = database_bytes(&config);
    for v in values {
        assert!(
            !contains(&bytes, v),
            "{:?} is still in the database file",
            String::from_utf8_lossy(v)
        );
    }
    assert!(contains(&bytes, b"Otto"), "other customers are kept");
}

//! The pipeline end to end on a real SQLite file: hand-made sightings in,
//! exact presence events and decisions out, and what the database holds.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::sync::Arc;

use nearcast::core::identity::{Hasher, Identity};
use nearcast::core::types::{Timestamp, WifiKind};
use support::*;

const ANNA_PHONE: [u8; 6] = [0x5A, 0x01, 0x02, 0x03, 0x04, 0x05];
const BEN_PHONE: [u8; 6] = [0x5B, 0x01, 0x02, 0x03, 0x04, 0x05];
const CLEO_MAC: [u8; 6] = [0xC4, 0x7C, 0x8D, 0x6A, 0x11, 0x02];

fn walk_in(
    minor: u16,
    addr: [u8; 6],
    from: Timestamp,
    secs: i64,
    d: f64,
) -> Vec<nearcast::core::types::Observation> {
    every_second(from, Timestamp(from.0 + secs * 1000), |t| {
        ibeacon(t, 0, minor, d, addr)
    })
}

#[test]
fn arrival_welcome_and_a_segment_offer_at_the_door() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_dir(dir.path(), CAMPAIGNS);
    let (store, _) = store_with_customers(&config);
    drop(store);
    let mut p = pipeline(&config);
    let out = run(
        &mut p,
        &walk_in(1, ANNA_PHONE, at(10, 0, 0), 20, 1.0),
        at(10, 5, 0),
    );
    // Presence runs on a one-second tick: heard from 10:00:00, counted from
    // the 10:00:01 tick, so the store's 2 s and the entrance's 3 s minimum
    // dwell complete at 10:00:03 and 10:00:04 (the entrance counts while
    // the arrival is pending, not after it).
    assert_eq!(
        out,
        [
            "10:00:03 arrived anna store",
            "10:00:03 act welcome anna whatsapp/rich",
            "10:00:04 entered anna entrance",
            "10:00:04 act door-offer anna whatsapp/plain",
            // Last heard 10:00:20; unheard for the 10 s signal timeout, then
            // the entrance's 5 s and the store's 30 s absence timeouts.
            "10:00:35 exited anna entrance",
            "10:01:00 left anna store",
        ]
    );
    let stats = p.ledger_mut().stats().unwrap();
    assert_eq!(stats.outbox, [("queued".to_owned(), 2)]);
    assert_eq!(stats.points_awarded, 10);
    assert_eq!(stats.visits, 1);
}

#[test]
fn a_customer_outside_the_segment_is_suppressed_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_dir(dir.path(), CAMPAIGNS);
    store_with_customers(&config);
    let mut p = pipeline(&config);
    let out = run(
        &mut p,
        &walk_in(2, BEN_PHONE, at(10, 0, 0), 10, 1.0),
        at(10, 0, 10),
    );
    assert_eq!(
        out,
        [
            "10:00:03 arrived ben store",
            "10:00:03 act welcome ben sms/plain",
            "10:00:04 entered ben entrance",
            "10:00:04 suppressed door-offer ben segment",
        ]
    );
}

#[test]
fn quiet_hours_suppress_the_message_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_dir(dir.path(), CAMPAIGNS);
    store_with_customers(&config);
    let mut p = pipeline(&config);
    let out = run(
        &mut p,
        &walk_in(2, BEN_PHONE, at(19, 30, 0), 3, 8.0),
        at(19, 30, 3),
    );
    assert_eq!(
        out,
        [
            "19:30:03 arrived ben store",
            "19:30:03 suppressed welcome ben quiet_hours"
        ]
    );
    let stats = p.ledger_mut().stats().unwrap();
    assert!(stats.outbox.is_empty());
    assert_eq!(stats.suppressed, [("quiet_hours".to_owned(), 1)]);
}

#[test]
fn a_cooldown_holds_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_dir(dir.path(), CAMPAIGNS);
    store_with_customers(&config);
    let visit = |p: &mut nearcast::app::Pipeline<nearcast::store::Store>, h, m| {
        run(
            p,
            &walk_in(2, BEN_PHONE, at(h, m, 0), 3, 8.0),
            at(h, m + 5, 0),
        )
    };
    let mut p = pipeline(&config);
    assert_eq!(
        visit(&mut p, 10, 0),
        [
            "10:00:03 arrived ben store",
            "10:00:03 act welcome ben sms/plain",
            "10:00:43 left ben store"
        ]
    );
    drop(p); // the daemon restarts
    let mut p = pipeline(&config);
    assert_eq!(
        visit(&mut p, 14, 0),
        [
            "14:00:03 arrived ben store",
            "14:00:03 suppressed welcome ben cooldown",
            "14:00:43 left ben store"
        ]
    );
    let stats = p.ledger_mut().stats().unwrap();
    assert_eq!(stats.visits, 2);
    assert_eq!(stats.outbox, [("queued".to_owned(), 1)]);
}

#[test]
fn an_opted_out_customer_gets_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_dir(dir.path(), CAMPAIGNS);
    store_with_customers(&config);
    // A pipeline whose snapshot predates the opt-out: consent is re-read
    // when deciding, so the decision is suppressed and nothing is recorded.
    let mut stale = pipeline(&config);
    let (mut admin, _) = nearcast::app::open_database(&config, None).unwrap();
    admin.opt_out("anna", at(9, 0, 0)).unwrap();
    let out = run(
        &mut stale,
        &walk_in(1, ANNA_PHONE, at(10, 0, 0), 3, 8.0),
        at(10, 0, 3),
    );
    assert_eq!(
        out,
        [
            "10:00:03 arrived anna store",
            "10:00:03 suppressed welcome anna opted_out"
        ]
    );
    // A fresh snapshot does not recognise her at all.
    let mut p = pipeline(&config);
    let out = run(
        &mut p,
        &walk_in(1, ANNA_PHONE, at(11, 0, 0), 20, 1.0),
        at(11, 5, 0),
    );
    assert!(out.is_empty(), "{out:?}");
    let stats = admin.stats().unwrap();
    assert_eq!((stats.visits, stats.decisions_act), (0, 0));
    assert!(stats.outbox.is_empty());
}

#[test]
fn a_snapshot_swap_stops_tracking_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_dir(dir.path(), CAMPAIGNS);
    store_with_customers(&config);
    let mut p = pipeline(&config);
    let out = run(
        &mut p,
        &walk_in(2, BEN_PHONE, at(10, 0, 0), 3, 8.0),
        at(10, 0, 3),
    );
    assert_eq!(out.len(), 2);
    let (mut admin, _) = nearcast::app::open_database(&config, None).unwrap();
    admin.forget("ben").unwrap();
    p.set_directory(Arc::new(admin.directory().unwrap()));
    // No `left` for an erased customer, and no new events.
    let out = run(
        &mut p,
        &walk_in(2, BEN_PHONE, at(10, 0, 4), 10, 8.0),
        at(10, 10, 0),
    );
    assert!(out.is_empty(), "{out:?}");
}

#[test]
fn a_non_consented_device_leaves_no_trace_in_the_database_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_dir(dir.path(), CAMPAIGNS);
    store_with_customers(&config);
    let stranger: [u8; 6] = [0xDE, 0xAD, 0xBE, 0xEF, 0x42, 0x17];
    let mut p = pipeline(&config);
    // An unenrolled app beacon (minor 77) and a bare phone address, for
    // ten minutes, at the door and the till, plus Wi-Fi.
    let mut obs = Vec::new();
    for o in every_second(at(10, 0, 0), at(10, 10, 0), |t| {
        ibeacon(t, 0, 77, 1.0, stranger)
    }) {
        obs.push(o);
    }
    obs.extend(every_second(at(10, 10, 1), at(10, 12, 0), |t| {
        bare(t, 1, 1.5, stranger)
    }));
    obs.push(wifi(at(10, 12, 1), WifiKind::Joined, stranger));
    // An enrolled customer at the same time, so the database is not idle.
    obs.extend(walk_in(2, BEN_PHONE, at(10, 12, 2), 5, 8.0));
    let out = run(&mut p, &obs, at(10, 30, 0));
    assert!(out.iter().all(|l| l.contains(" ben ")), "{out:?}");
    drop(p);

    let bytes = database_bytes(&config);
    let hasher = Hasher::new(&secret(&config));
    let beacon = Identity::parse(&format!("ibeacon:{APP_UUID}:1:77")).unwrap();
    let mac = Identity::parse("mac:DE:AD:BE:EF:42:17").unwrap();
    for needle in [
        &stranger[..],
        b"DE:AD:BE:EF:42:17",
        b"de:ad:be:ef:42:17",
        b"deadbeef4217",
        &hasher.hash(&beacon).0[..],
        &hasher.hash(&mac).0[..],
    ] {
        assert!(
            !contains(&bytes, needle),
            "found {needle:?} in the database"
        );
    }
    // The enrolled customer's own identity is there only as its hash.
    let ben = Identity::parse(&format!("ibeacon:{APP_UUID}:1:2")).unwrap();
    assert!(contains(&bytes, &hasher.hash(&ben).0));
    assert!(!contains(&bytes, APP_UUID.as_bytes()));
}

#[test]
fn wifi_and_ble_for_one_customer_make_one_visit_and_one_greeting() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_dir(dir.path(), CAMPAIGNS);
    store_with_customers(&config);
    let mut p = pipeline(&config);
    let mut obs = vec![wifi(at(10, 0, 0), WifiKind::Joined, CLEO_MAC)];
    obs.extend(every_second(at(10, 0, 1), at(10, 0, 20), |t| {
        bare(t, 1, 3.0, CLEO_MAC)
    }));
    obs.push(wifi(at(10, 0, 21), WifiKind::Seen, CLEO_MAC));
    obs.push(wifi(at(10, 20, 0), WifiKind::Left, CLEO_MAC));
    let out = run(&mut p, &obs, at(10, 30, 0));
    assert_eq!(
        out,
        [
            "10:00:03 arrived cleo store",
            "10:00:03 act welcome cleo sms/plain",
            "10:20:31 left cleo store"
        ]
    );
}

#[test]
fn two_deciders_on_one_database_send_once_per_cooldown_window() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_dir(dir.path(), CAMPAIGNS);
    store_with_customers(&config);
    // Two daemons (two connections, two threads) see the same shopper.
    let mut obs = walk_in(2, BEN_PHONE, at(10, 0, 0), 3, 8.0);
    obs.extend(walk_in(2, BEN_PHONE, at(23, 0, 0), 3, 8.0)); // outside opening hours
    let next_day = |t: Timestamp| Timestamp(t.0 + 86_400_000);
    obs.extend(walk_in(2, BEN_PHONE, next_day(at(10, 0, 0)), 3, 8.0));
    let results: Vec<Vec<String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let config = &config;
                let obs = &obs;
                s.spawn(move || {
                    let mut p = pipeline(config);
                    run(&mut p, obs, next_day(at(12, 0, 0)))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let acts: usize = results
        .iter()
        .map(|r| r.iter().filter(|l| l.contains(" act welcome ")).count())
        .sum();
    assert_eq!(acts, 2, "{results:?}");
    let cooldowns: usize = results
        .iter()
        .map(|r| {
            r.iter()
                .filter(|l| l.ends_with("welcome ben cooldown"))
                .count()
        })
        .sum();
    assert_eq!(cooldowns, 2, "{results:?}");
    let (admin, _) = nearcast::app::open_database(&config, None).unwrap();
    let stats = admin.stats().unwrap();
    assert_eq!(stats.outbox, [("queued".to_owned(), 2)]);
    assert_eq!(stats.points_awarded, 20);
}

/// The real store, refusing every write while `down` (as SQLite does on a
/// full disk).
struct Refusing {
    store: nearcast::store::Store,
    down: Arc<std::sync::atomic::AtomicBool>,
}

impl Refusing {
    fn check(&self) -> Result<(), nearcast::store::Error> {
        if self.down.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(nearcast::store::Error::File {
                path: "nearcast.db".into(),
                reason: "database or disk is full".into(),
            });
        }
        Ok(())
    }
}

impl nearcast::core::campaign::Ledger for Refusing {
    type Error = nearcast::store::Error;

    fn history(
        &mut self,
        customer: &nearcast::core::identity::CustomerInfo,
        local: &nearcast::core::campaign::Local,
    ) -> Result<nearcast::core::campaign::History, Self::Error> {
        self.store.history(customer, local)
    }

    fn commit(
        &mut self,
        event: &nearcast::core::presence::ZoneEvent,
        zone: &str,
        customer: &nearcast::core::identity::CustomerInfo,
        local: &nearcast::core::campaign::Local,
        engine: &nearcast::core::campaign::Engine,
        decisions: Vec<nearcast::core::campaign::Decision>,
    ) -> Result<Vec<nearcast::core::campaign::Committed>, Self::Error> {
        self.check()?;
        self.store
            .commit(event, zone, customer, local, engine, decisions)
    }
}

#[test]
fn decisions_the_database_refuses_are_held_in_order_and_committed_later() {
    use std::sync::atomic::Ordering;
    let dir = tempfile::tempdir().unwrap();
    let config = config_dir(dir.path(), CAMPAIGNS);
    let (store, hasher) = store_with_customers(&config);
    let directory = Arc::new(store.directory().unwrap());
    let down = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let ledger = Refusing {
        store,
        down: down.clone(),
    };
    let mut p = nearcast::app::Pipeline::new(
        config.layout.clone(),
        config.engine.clone(),
        hasher,
        directory,
        ledger,
    )
    .with_holding(3);
    // The disk is full: Cleo, Ben and Anna arrive a minute apart, and Ben
    // leaves. Three events fit in the queue; Cleo's arrival, the oldest,
    // makes room for Anna's.
    let mut obs = vec![wifi(at(10, 0, 0), WifiKind::Joined, CLEO_MAC)];
    obs.extend(walk_in(2, BEN_PHONE, at(10, 1, 0), 3, 8.0));
    obs.extend(walk_in(1, ANNA_PHONE, at(10, 2, 0), 3, 8.0));
    let out = run(&mut p, &obs, at(10, 2, 3));
    assert_eq!(
        out,
        [
            "10:00:03 arrived cleo store",
            "10:01:03 arrived ben store",
            "10:01:43 left ben store",
            "10:02:03 arrived anna store"
        ],
        "nothing decided while the database refuses"
    );
    let held = |p: &nearcast::app::Pipeline<Refusing>| {
        let h = p.counters().held;
        (h.waiting, h.held, h.committed, h.expired, h.dropped)
    };
    assert_eq!(held(&p), (3, 4, 0, 0, 1));
    assert!(p.retry_held(at(10, 3, 0), &mut |_| {}).is_err());
    assert_eq!(held(&p), (3, 4, 0, 0, 1));

    // Space again at 10:06:30: Ben's welcome (decided 10:01:03, five
    // minutes to live) is committed already expired; Anna's goes out.
    down.store(false, Ordering::Relaxed);
    let mut decided = Vec::new();
    let mut sink = |o: nearcast::app::Output<'_>| {
        if let nearcast::app::Output::Decision {
            customer,
            committed,
            ..
        } = o
        {
            decided.push((customer.id.to_string(), committed.decision.at));
        }
    };
    p.retry_held(at(10, 6, 30), &mut sink).unwrap();
    assert_eq!(
        decided,
        [
            ("ben".to_owned(), at(10, 1, 3)),
            ("anna".to_owned(), at(10, 2, 3))
        ],
        "each at its own time, in order"
    );
    assert_eq!(held(&p), (0, 4, 3, 1, 1));
    let buf: Arc<std::sync::Mutex<dyn std::io::Write + Send>> =
        Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut w = nearcast::app::worker(&config, &config.daemon.database, buf).unwrap();
    let r = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(w.run_once(at(10, 6, 30)))
        .unwrap();
    assert_eq!((r.sent, r.expired), (1, 1));
    let mut rows: Vec<(String, String)> = w
        .store()
        .outbox_rows(None, 10)
        .unwrap()
        .into_iter()
        .map(|r| (r.customer, r.state.to_string()))
        .collect();
    rows.sort();
    assert_eq!(
        rows,
        [
            ("anna".to_owned(), "sent".to_owned()),
            ("ben".to_owned(), "expired".to_owned())
        ]
    );
}

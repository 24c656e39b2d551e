//! The outbox worker against a provider on loopback (a stand-in speaking
//! Twilio's Messages API) in injected time: an outage of every kind
//! (connection refused, 503, 429 with `Retry-After`) followed by recovery,
//! and a WAN outage of an hour while customers keep arriving.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::fmt::Write as _;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use nearcast::core::types::Timestamp;
use nearcast::store::OutboxState;
use support::{APP_UUID, at, ibeacon};
use support::{Recorded, Reply, StandIn};

const AC: &str = "AC0123456789abcdef0123456789abcdef";

/// Customer `i`'s phone number.
fn phone(i: usize) -> String {
    format!("+49151000{i:05}")
}

fn customers(n: usize) -> String {
    let mut csv =
        "id,first_name,phone,channels,consent_at,consent_source,identities,segments\n".to_owned();
    for i in 0..n {
        writeln!(
            csv,
            "c{i:03},Kunde{i},{},sms,2026-01-01T10:00:00Z,app,ibeacon:{APP_UUID}:1:{},",
            phone(i),
            1000 + i
        )
        .unwrap();
    }
    csv
}

/// A store whose `sms` channel is Twilio at `addr`.
fn shop(
    dir: &std::path::Path,
    addr: SocketAddr,
    pace: &str,
    ttl: &str,
    n: usize,
) -> nearcast::config::Config {
    std::fs::write(dir.join("tw-token"), "secret-token").unwrap();
    let daemon = format!(
        r#"
[database]
path = "nearcast.db"

[channels.sms]
adapter = "twilio"
base_url = "http://{addr}"
account_sid = "{AC}"
from = "+14155552345"
token_file = "{}"
{pace}

[outbox]
backoff_min = "2s"
backoff_max = "60s"
"#,
        dir.join("tw-token").display()
    );
    let campaigns = format!(
        r#"
[limits]
max_messages_per_day = 5

[[campaign]]
id = "welcome"
trigger = "arrive"
message = "welcome"
cooldown = "12h"
purpose = "welcome"

[[message]]
id = "welcome"
ttl = "{ttl}"
plain = "Hi {{first_name}}, welcome to {{store}}!"
"#
    );
    std::fs::write(dir.join("nearcast.toml"), daemon).unwrap();
    std::fs::write(dir.join("zones.toml"), support::ZONES).unwrap();
    std::fs::write(dir.join("campaigns.toml"), campaigns).unwrap();
    let config = nearcast::config::load(dir).unwrap();
    let (mut store, hasher) = nearcast::app::open_database(&config, None).unwrap();
    store
        .import_customers(
            customers(n).as_bytes(),
            &hasher,
            Timestamp::from_secs(1_767_261_600),
        )
        .unwrap();
    config
}

/// Customers `ids` arrive at `t`: three seconds at the door, then gone.
/// Returns when their welcomes are queued (at `t` + 2 s).
fn arrive(
    p: &mut nearcast::app::Pipeline<nearcast::store::Store>,
    ids: std::ops::Range<usize>,
    t: Timestamp,
) {
    let mut obs = Vec::new();
    for sec in 0..=3 {
        let at = Timestamp(t.0 + sec * 1000);
        for i in ids.clone() {
            let minor = u16::try_from(1000 + i).unwrap();
            #[allow(clippy::cast_possible_truncation)]
            obs.push(ibeacon(
                at,
                0,
                minor,
                1.0,
                [0x5C, 0, 0, 0, (i >> 8) as u8, i as u8],
            ));
        }
    }
    let lines = support::run(p, &obs, Timestamp(t.0 + 3000));
    let acted = lines.iter().filter(|l| l.contains(" act welcome ")).count();
    assert_eq!(acted, ids.len(), "{lines:?}");
}

/// A port nothing listens on (yet).
fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// What the provider saw: injected time, recipient, answer.
#[derive(Clone, Debug)]
struct Seen {
    at: Timestamp,
    to: String,
    status: u16,
}

fn to_of(r: &Recorded) -> String {
    form_urlencoded::parse(&r.body)
        .find(|(k, _)| k == "To")
        .map(|(_, v)| v.into_owned())
        .unwrap()
}

fn worker(config: &nearcast::config::Config) -> nearcast::channel::Worker {
    let console: Arc<Mutex<dyn Write + Send>> = Arc::new(Mutex::new(Vec::new()));
    nearcast::app::worker(config, &config.daemon.database, console)
        .unwrap()
        .with_seed(7)
}

#[tokio::test]
async fn after_an_outage_every_unexpired_message_goes_out_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_port();
    let config = shop(dir.path(), addr, "concurrency = 1", "5m", 10);
    let mut p = support::pipeline(&config);
    let mut w = worker(&config);

    // The provider: down (connection refused) until 10:04, then 503 until
    // 10:08, then 429 asking for two minutes until 10:10, then fine.
    let now = Arc::new(Mutex::new(Timestamp(0)));
    let seen = Arc::new(Mutex::new(Vec::<Seen>::new()));
    let script = {
        let (now, seen) = (now.clone(), seen.clone());
        move |r: &Recorded| {
            let t = *now.lock().unwrap();
            let reply = if t < at(10, 8, 0) {
                Reply::json(
                    503,
                    r#"{"code":20500,"message":"unavailable","status":503}"#,
                )
            } else if t < at(10, 10, 0) {
                Reply::json(
                    429,
                    r#"{"code":20429,"message":"Too Many Requests","status":429}"#,
                )
                .with_header("Retry-After", "120")
            } else {
                Reply::json(
                    201,
                    r#"{"sid":"SM00000000000000000000000000000001","status":"queued"}"#,
                )
            };
            let Reply::Json(status, ..) = &reply else {
                unreachable!()
            };
            seen.lock().unwrap().push(Seen {
                at: t,
                to: to_of(r),
                status: *status,
            });
            reply
        }
    };

    // Five customers arrive as the outage begins, five more during it.
    arrive(&mut p, 0..5, at(10, 0, 0));
    let mut t = at(10, 0, 3);
    let mut provider: Option<StandIn> = None;
    let mut second_wave = false;
    let mut report = nearcast::channel::Report::default();
    let end = at(10, 30, 0);
    while t < end {
        *now.lock().unwrap() = t;
        if provider.is_none() && t >= at(10, 4, 0) {
            provider = Some(StandIn::start_at(addr, script.clone()).await);
        }
        if !second_wave && t >= at(10, 7, 3) {
            arrive(&mut p, 5..10, at(10, 7, 0));
            second_wave = true;
        }
        report += w.run_once(t).await.unwrap();
        let next = w.next_due(t).unwrap().unwrap_or(end);
        let boundaries = [at(10, 4, 0), at(10, 7, 3), end];
        let boundary = boundaries.into_iter().find(|b| *b > t).unwrap_or(end);
        t = next.min(boundary).max(Timestamp(t.0 + 1));
    }

    let seen = seen.lock().unwrap().clone();
    let delivered: Vec<&str> = seen
        .iter()
        .filter(|s| s.status == 201)
        .map(|s| s.to.as_str())
        .collect();
    // The second wave, each once, in the order they were decided.
    assert_eq!(delivered, (5..10).map(phone).collect::<Vec<_>>());
    // The first wave's time to live ran out during the outage.
    let rows = w.store().outbox_rows(None, 100).unwrap();
    let state = |i: usize| {
        rows.iter()
            .find(|r| r.customer == format!("c{i:03}"))
            .unwrap()
            .state
            .name()
    };
    assert_eq!((0..5).map(state).collect::<Vec<_>>(), ["expired"; 5]);
    assert_eq!((5..10).map(state).collect::<Vec<_>>(), ["sent"; 5]);
    assert_eq!(
        (report.sent, report.expired, report.dead, report.failed),
        (5, 5, 0, 0)
    );
    // The outage was probed, not stormed: one request at a time, backing
    // off (2 s doubling to 60 s) and never sooner than Retry-After.
    let failed: Vec<&Seen> = seen.iter().filter(|s| s.status != 201).collect();
    assert!(!failed.is_empty());
    assert!(failed.len() <= 12, "{} probes: {failed:?}", failed.len());
    let first_429 = seen.iter().position(|s| s.status == 429).unwrap();
    assert!(
        seen[first_429 + 1].at.0 - seen[first_429].at.0 >= 120_000,
        "{:?} then {:?}",
        seen[first_429],
        seen[first_429 + 1]
    );
    for pair in failed.windows(2) {
        assert!(pair[1].at.0 - pair[0].at.0 >= 1000, "{pair:?}");
    }
}

#[tokio::test]
async fn a_box_offline_for_an_hour_keeps_deciding_then_drains_in_order_at_its_pace() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_port();
    let config = shop(
        dir.path(),
        addr,
        "rate = 2.0\nburst = 1\nconcurrency = 4",
        "2h",
        60,
    );
    let mut p = support::pipeline(&config);
    let mut w = worker(&config);
    let now = Arc::new(Mutex::new(Timestamp(0)));
    let seen = Arc::new(Mutex::new(Vec::<Seen>::new()));
    let script = {
        let (now, seen) = (now.clone(), seen.clone());
        move |r: &Recorded| {
            seen.lock().unwrap().push(Seen {
                at: *now.lock().unwrap(),
                to: to_of(r),
                status: 201,
            });
            Reply::json(
                201,
                r#"{"sid":"SM00000000000000000000000000000001","status":"queued"}"#,
            )
        }
    };

    // The WAN is down from 10:00 to 11:00; a customer arrives every minute.
    let mut t = at(10, 0, 0);
    let mut next_customer = 0;
    let mut provider: Option<StandIn> = None;
    let end = at(11, 30, 0);
    while t < end {
        *now.lock().unwrap() = t;
        if provider.is_none() && t >= at(11, 0, 0) {
            provider = Some(StandIn::start_at(addr, script.clone()).await);
        }
        while next_customer < 60
            && t >= Timestamp(at(10, 0, 0).0 + 60_000 * next_customer as i64 + 3000)
        {
            arrive(
                &mut p,
                next_customer..next_customer + 1,
                Timestamp(at(10, 0, 0).0 + 60_000 * next_customer as i64),
            );
            next_customer += 1;
        }
        w.run_once(t).await.unwrap();
        let next = w.next_due(t).unwrap().unwrap_or(end);
        let arrival = Timestamp(at(10, 0, 0).0 + 60_000 * next_customer as i64 + 3000);
        let boundary = [arrival, at(11, 0, 0), end]
            .into_iter()
            .filter(|b| *b > t)
            .min()
            .unwrap_or(end);
        t = next.min(boundary).max(Timestamp(t.0 + 1));
    }

    let seen = seen.lock().unwrap().clone();
    // Every decision of the hour went out once, in order.
    assert_eq!(
        seen.iter().map(|s| s.to.clone()).collect::<Vec<_>>(),
        (0..60).map(phone).collect::<Vec<_>>()
    );
    // Never faster than two a second, even with a backlog of sixty and
    // four connections allowed.
    for pair in seen.windows(2) {
        assert!(pair[1].at.0 - pair[0].at.0 >= 500, "{pair:?}");
    }
    // And no slower than the pace and one backoff step allow.
    let last = seen.last().unwrap().at;
    assert!(last <= at(11, 1, 31), "drained by {last:?}");
    let rows = w.store().outbox_rows(Some(OutboxState::Sent), 100).unwrap();
    assert_eq!(rows.len(), 60);
    // The probes while offline did not use up the first message's attempts.
    assert!(rows.iter().all(|r| r.attempts <= 2), "{rows:?}");
}

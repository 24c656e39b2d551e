//! The daemon killed with SIGKILL at random points while it drains 1,000
//! messages to a provider on loopback, and restarted each time: nothing is
//! lost, nothing reaches a provider twice that it could not recognise as a
//! repeat, and the sends a kill left in doubt are counted and reported.
//!
//! Two providers: Vonage, which gets the outbox key as `client_ref` (the
//! stand-in deduplicates by it, as a provider with idempotency keys does),
//! and Twilio, which has no such key (the stand-in counts every request).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nearcast::core::types::Timestamp;
use nearcast::store::OutboxState;
use support::APP_UUID;
use support::{Recorded, Reply, StandIn};

const N: usize = 1000;
const KILLS: usize = 5;

fn customers() -> String {
    let mut csv =
        "id,first_name,phone,channels,consent_at,consent_source,identities,segments\n".to_owned();
    for i in 0..N {
        writeln!(
            csv,
            "c{i:04},Kunde{i},+4915100{i:05},sms,2026-01-01T10:00:00Z,app,ibeacon:{APP_UUID}:2:{i},"
        )
        .unwrap();
    }
    csv
}

/// A store open around the clock whose `sms` channel is `channel`, with
/// `N` welcomes queued just now.
fn shop(dir: &Path, channel: &str) -> nearcast::config::Config {
    std::fs::write(dir.join("token"), "secret-token").unwrap();
    let daemon = format!(
        r#"
[database]
path = "nearcast.db"

[channels.sms]
{channel}
token_file = "{}"
rate = 1000.0
burst = 50
concurrency = 8
timeout = "1s"

[outbox]
lease = "7s"
poll = "100ms"

[clock]
require_sync = false
"#,
        dir.join("token").display()
    );
    let mut zones = String::new();
    for line in support::ZONES.lines() {
        if let Some((day, _)) = line.split_once(" = \"") {
            if ["mon", "tue", "wed", "thu", "fri", "sat", "sun"].contains(&day) {
                writeln!(zones, "{day} = \"00:00-24:00\"").unwrap();
                continue;
            }
        }
        writeln!(zones, "{line}").unwrap();
    }
    let campaigns = r#"
[[campaign]]
id = "welcome"
trigger = "arrive"
message = "welcome"
cooldown = "12h"
purpose = "welcome"

[[message]]
id = "welcome"
ttl = "1h"
plain = "Hi {first_name}, welcome to {store}!"
"#;
    std::fs::write(dir.join("nearcast.toml"), daemon).unwrap();
    std::fs::write(dir.join("zones.toml"), zones).unwrap();
    std::fs::write(dir.join("campaigns.toml"), campaigns).unwrap();
    let config = nearcast::config::load(dir).unwrap();
    let (mut store, hasher) = nearcast::app::open_database(&config, None).unwrap();
    let now = Timestamp(jiff::Timestamp::now().as_millisecond());
    store
        .import_customers(customers().as_bytes(), &hasher, now)
        .unwrap();
    drop(store);
    // Everyone arrives now: the welcomes are decided and queued.
    let mut p = support::pipeline(&config);
    let mut obs = Vec::new();
    for sec in 0..=3 {
        let t = Timestamp(now.0 + sec * 1000);
        for i in 0..N {
            #[allow(clippy::cast_possible_truncation)]
            let addr = [0x5D, 0, 0, 0, (i >> 8) as u8, i as u8];
            obs.push(ibeacon2(t, u16::try_from(i).unwrap(), addr));
        }
    }
    let lines = support::run(&mut p, &obs, Timestamp(now.0 + 3000));
    let queued = lines.iter().filter(|l| l.contains(" act welcome ")).count();
    assert_eq!(queued, N);
    config
}

/// An iBeacon of the app UUID, major 2.
fn ibeacon2(t: Timestamp, minor: u16, addr: [u8; 6]) -> nearcast::core::types::Observation {
    use nearcast::core::types::{BdAddr, Observation, ScannerIdx, Sighting};
    let mut s = Sighting::new(t, ScannerIdx(0), BdAddr(addr), support::rssi_at(1.0));
    support::app_ibeacon(2, minor).add_to(&mut s);
    Observation::Ble(s)
}

fn start(dir: &Path, run: usize) -> Child {
    Command::new(env!("CARGO_BIN_EXE_nearcast"))
        .args(["run", "--config"])
        .arg(dir)
        .env("RUST_LOG", "warn")
        .stderr(std::fs::File::create(dir.join(format!("run{run}.log"))).unwrap())
        .spawn()
        .unwrap()
}

fn pending(config: &nearcast::config::Config) -> usize {
    let store = nearcast::store::Store::open(&config.daemon.database).unwrap();
    [OutboxState::Queued, OutboxState::Sending]
        .into_iter()
        .map(|s| store.outbox_rows(Some(s), 10_000).unwrap().len())
        .sum()
}

/// Runs the daemon (the provider counts its requests in `requests`),
/// killing it `KILLS` times after a random number of requests; returns the
/// rows by final state, the customers whose rows are ambiguous, and the
/// number of kills.
async fn experiment(
    dir: &Path,
    config: &nearcast::config::Config,
    requests: &Arc<AtomicUsize>,
    notify: &Arc<tokio::sync::Notify>,
) -> (HashMap<String, usize>, Vec<String>, usize) {
    let mut rng = fastrand::Rng::with_seed(0x5eed);
    let mut points: Vec<usize> = (0..KILLS).map(|_| rng.usize(0..N)).collect();
    points.sort_unstable();
    let mut kills = 0;
    for (run, point) in points.iter().enumerate() {
        let mut child = start(dir, run);
        // Wait for the provider to have seen `point` requests in all.
        while requests.load(Ordering::SeqCst) < *point {
            tokio::time::timeout(Duration::from_secs(60), notify.notified())
                .await
                .expect("the daemon stopped sending");
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        kills += 1;
    }
    // A last run without a kill drains the rest.
    let mut child = start(dir, KILLS);
    let deadline = Instant::now() + Duration::from_secs(120);
    while pending(config) > 0 {
        assert!(Instant::now() < deadline, "the queue did not drain");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0));
    let store = nearcast::store::Store::open(&config.daemon.database).unwrap();
    let rows = store.outbox_rows(None, 10_000).unwrap();
    let mut states = HashMap::new();
    let mut ambiguous = Vec::new();
    for r in &rows {
        *states.entry(r.state.name().to_owned()).or_insert(0) += 1;
        if r.ambiguous {
            ambiguous.push(r.customer.clone());
        }
    }
    (states, ambiguous, kills)
}

fn recipient(r: &Recorded) -> String {
    if r.header("content-type").is_some_and(|c| c.contains("json")) {
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        v["to"].as_str().unwrap().to_owned()
    } else {
        form_urlencoded::parse(&r.body)
            .find(|(k, _)| k == "To")
            .map(|(_, v)| v.trim_start_matches('+').to_owned())
            .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_drain_a_deduplicating_provider_gets_every_message_once() {
    let dir = tempfile::tempdir().unwrap();
    let requests = Arc::new(AtomicUsize::new(0));
    let notify = Arc::new(tokio::sync::Notify::new());
    // The provider keeps one message per client_ref, as idempotency keys do.
    let kept: Arc<Mutex<HashMap<String, (String, usize)>>> = Arc::default();
    let provider = {
        let (requests, notify, kept) = (requests.clone(), notify.clone(), kept.clone());
        StandIn::start(move |r: &Recorded| {
            let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            let key = v["client_ref"].as_str().unwrap().to_owned();
            let mut kept = kept.lock().unwrap();
            let n = kept.len();
            let entry = kept.entry(key).or_insert((recipient(r), 0));
            entry.1 += 1;
            let uuid = format!("aaaaaaaa-bbbb-cccc-dddd-{n:012}");
            requests.fetch_add(1, Ordering::SeqCst);
            notify.notify_one();
            Reply::json(202, &format!(r#"{{"message_uuid":"{uuid}"}}"#))
        })
        .await
    };
    let channel = format!(
        "adapter = \"vonage\"\nbase_url = \"{}\"\napi_key = \"abcd1234\"\nfrom = \"447700900001\"",
        provider.url()
    );
    let config = shop(dir.path(), &channel);
    let (states, ambiguous, kills) = experiment(dir.path(), &config, &requests, &notify).await;

    let kept = kept.lock().unwrap();
    let repeats: usize = kept.values().map(|(_, n)| n - 1).sum();
    eprintln!(
        "vonage: {kills} kills, {} requests, {} messages kept, {repeats} repeats recognised by client_ref, states {states:?}",
        requests.load(Ordering::SeqCst),
        kept.len()
    );
    // Nothing lost: every message reached the provider under its own key.
    assert_eq!(kept.len(), N);
    let mut to: Vec<&str> = kept.values().map(|(t, _)| t.as_str()).collect();
    to.sort_unstable();
    to.dedup();
    assert_eq!(to.len(), N, "one message per customer");
    assert_eq!(states.get("sent"), Some(&N), "{states:?}");
    assert!(ambiguous.is_empty(), "{ambiguous:?}");
    // A repeat only for a send a kill interrupted: at most the in-flight
    // ones (concurrency 8) per kill.
    assert!(repeats <= kills * 8, "{repeats} repeats");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_drain_a_provider_without_keys_never_gets_a_message_twice() {
    let dir = tempfile::tempdir().unwrap();
    let requests = Arc::new(AtomicUsize::new(0));
    let notify = Arc::new(tokio::sync::Notify::new());
    let received: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let provider = {
        let (requests, notify, received) = (requests.clone(), notify.clone(), received.clone());
        StandIn::start(move |r: &Recorded| {
            let n = {
                let mut received = received.lock().unwrap();
                *received.entry(recipient(r)).or_insert(0) += 1;
                received.len()
            };
            requests.fetch_add(1, Ordering::SeqCst);
            notify.notify_one();
            Reply::json(201, &format!(r#"{{"sid":"SM{n:032}","status":"queued"}}"#))
        })
        .await
    };
    let channel = format!(
        "adapter = \"twilio\"\nbase_url = \"{}\"\naccount_sid = \"AC0123456789abcdef0123456789abcdef\"\nfrom = \"+14155552345\"",
        provider.url()
    );
    let config = shop(dir.path(), &channel);
    let (states, ambiguous, kills) = experiment(dir.path(), &config, &requests, &notify).await;

    let received = received.lock().unwrap();
    let twice: Vec<_> = received.iter().filter(|(_, n)| **n > 1).collect();
    let reached_anyway = ambiguous
        .iter()
        .filter(|c| {
            let i: usize = c[1..].parse().unwrap();
            received.contains_key(&format!("4915100{i:05}"))
        })
        .count();
    eprintln!(
        "twilio: {kills} kills, {} requests, {} recipients reached, {} ambiguous ({reached_anyway} of them had reached the provider), states {states:?}",
        requests.load(Ordering::SeqCst),
        received.len(),
        ambiguous.len()
    );
    // Never twice.
    assert!(twice.is_empty(), "{twice:?}");
    // Every message was sent, except the ones a kill left in doubt, which
    // are recorded as such: at most those in flight (concurrency 8) per kill.
    assert_eq!(
        states.get("sent").copied().unwrap_or(0) + ambiguous.len(),
        N,
        "{states:?}"
    );
    assert!(
        ambiguous.len() <= kills * 8,
        "{} ambiguous",
        ambiguous.len()
    );
    // Whatever was not in doubt reached the provider.
    assert_eq!(received.len(), N - ambiguous.len() + reached_anyway);
}

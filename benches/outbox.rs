//! Criterion benchmark of outbox delivery: messages a second from a queue
//! of broadcast messages in a real SQLite file, drained by the real
//! `Worker` through the real Twilio adapter (reqwest) to a stand-in on
//! 127.0.0.1 that answers 201, at concurrency 1 and 8; once with an
//! immediate answer, once with 20 ms of provider latency per request; and,
//! as the floor, the same worker and SQL with an in-process adapter that
//! accepts at once (no HTTP).
//!
//! The queue is made once per size through the broadcast decision path
//! (`Engine::decide_broadcast`, `Store::commit_broadcast`), and each
//! iteration drains a fresh copy of that file: copying it and building the
//! worker are not timed, only `Worker::run_once` at an injected `now`
//! (repeated, at `next_due`, until nothing is queued). Each iteration checks
//! that every message was sent and that the stand-in saw each request once.
//!
//! `cargo bench --bench outbox` (`OUTBOX_N=…` sets the size of the
//! immediate provider's queue). Under `cargo test` (criterion's test mode)
//! the queues are small, so CI's one pass is quick.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use nearcast::channel::ChannelLimits;
use nearcast::channel::SendResult;
use nearcast::channel::{Adapter, Deliver, Outgoing, SendFuture, Worker};
use nearcast::config::Config;
use nearcast::core::campaign::{Ledger, Outcome};
use nearcast::core::types::Timestamp;
use nearcast::store::Store;
use support::{Reply, StandIn};

/// Messages per queue for an immediate provider.
const N: usize = 1_000;
/// Messages per queue for a provider taking [`LATENCY`] per request (at
/// concurrency 1 that is 20 ms a message).
const N_SLOW: usize = 200;
/// The slow provider's time per request.
const LATENCY: Duration = Duration::from_millis(20);
const AC: &str = "AC0123456789abcdef0123456789abcdef";

/// `cargo test --benches` and `cargo bench -- --test` run each benchmark
/// once (criterion's test mode); then small queues are enough.
fn test_mode() -> bool {
    let args: Vec<String> = std::env::args().collect();
    !args.iter().any(|a| a == "--bench") || args.iter().any(|a| a == "--test")
}

fn customers(n: usize) -> String {
    let mut csv =
        "id,first_name,phone,channels,consent_at,consent_source,identities,segments\n".to_owned();
    for i in 0..n {
        writeln!(
            csv,
            "c{i:05},Kunde{i},+4915100{i:06},sms,2026-01-01T10:00:00Z,app,mac:02:00:00:{:02X}:{:02X}:{:02X},",
            (i >> 16) & 0xff,
            (i >> 8) & 0xff,
            i & 0xff
        )
        .unwrap();
    }
    csv
}

/// A store whose `sms` channel is Twilio at `base_url`, with a broadcast
/// campaign (no quiet hours; the injected time is a Wednesday morning,
/// within opening hours).
fn config_dir(dir: &Path, base_url: &str) -> Config {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("tw-token"), "secret-token").unwrap();
    let daemon = format!(
        r#"
[database]
path = "nearcast.db"

[channels.sms]
adapter = "twilio"
base_url = "{base_url}"
account_sid = "{AC}"
from = "+14155552345"
token_file = "{}"
rate = 100000.0
burst = 256
concurrency = 1
"#,
        dir.join("tw-token").display()
    );
    let campaigns = r#"
[limits]
max_messages_per_day = 5

[[campaign]]
id = "flash-sale"
trigger = "broadcast"
message = "flash"
cooldown = "7d"
purpose = "offers"

[[message]]
id = "flash"
ttl = "2h"
plain = "{store}: 30 % off all bread until 14:00, {first_name}. STOP to opt out"
"#;
    std::fs::write(dir.join("nearcast.toml"), daemon).unwrap();
    std::fs::write(dir.join("zones.toml"), support::ZONES).unwrap();
    std::fs::write(dir.join("campaigns.toml"), campaigns).unwrap();
    nearcast::config::load(dir).unwrap()
}

/// When the broadcast is decided.
fn decided() -> Timestamp {
    support::at(10, 0, 0)
}

/// A database file with `n` customers and `n` queued `flash-sale` messages,
/// decided and committed as `nearcast broadcast` does. Closed when this
/// returns, so the file is whole without its WAL.
fn queued_db(config: &Config, n: usize) -> PathBuf {
    let (mut store, hasher) = nearcast::app::open_database(config, None).unwrap();
    store
        .import_customers(
            customers(n).as_bytes(),
            &hasher,
            Timestamp::from_secs(1_767_261_600),
        )
        .unwrap();
    let engine = config.engine.clone();
    let idx = engine.find_campaign("flash-sale").unwrap();
    let now = decided();
    let local = engine.rules.local(now);
    let directory = store.directory().unwrap();
    let mut keys: Vec<_> = directory.customers().collect();
    keys.sort_unstable();
    let audience: Vec<_> = keys.iter().filter_map(|k| directory.customer(*k)).collect();
    let mut queued = 0;
    for chunk in audience.chunks(256) {
        let mut batch = Vec::new();
        for c in chunk {
            let history = Ledger::history(&mut store, c, &local).unwrap();
            batch.push((&***c, engine.decide_broadcast(idx, c, &history, now)));
        }
        for c in store.commit_broadcast(batch, &local, &engine).unwrap() {
            queued += usize::from(matches!(c.decision.outcome, Outcome::Act(_)));
        }
    }
    assert_eq!(queued, n, "every customer's message is queued");
    drop(store);
    config.daemon.database.clone()
}

/// Accepts every message at once, in process: the worker and its SQL alone.
struct Accept;

impl Deliver for Accept {
    fn send<'a>(&'a self, msg: &'a Outgoing<'a>) -> SendFuture<'a> {
        Box::pin(std::future::ready(SendResult::Sent {
            provider_id: Some(format!("local-{}", msg.item.id)),
        }))
    }
}

/// Where a benchmark sends.
#[derive(Clone, Copy)]
enum Provider<'a> {
    /// Through HTTP to a stand-in configured in `config`.
    Http(&'a Config, &'a StandIn),
    /// The in-process [`Accept`].
    InProcess(&'a Config),
}

/// A fresh copy of `template` at `scratch`, and a worker on it.
fn fresh_worker(
    template: &Path,
    scratch: &Path,
    provider: Provider<'_>,
    concurrency: u32,
) -> Worker {
    for ext in ["", "-wal", "-shm"] {
        let mut p = scratch.as_os_str().to_owned();
        p.push(ext);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
    std::fs::copy(template, scratch).unwrap();
    let limits = HashMap::from([(
        "sms".to_owned(),
        ChannelLimits {
            rate: 100_000.0,
            burst: 256,
            concurrency,
        },
    )]);
    match provider {
        Provider::Http(config, _) => {
            let console: Arc<Mutex<dyn Write + Send>> = Arc::new(Mutex::new(Vec::new()));
            nearcast::app::worker(config, scratch, console)
                .unwrap()
                .with_limits(limits)
        }
        Provider::InProcess(config) => {
            let adapters: HashMap<String, Adapter> =
                HashMap::from([("sms".to_owned(), Arc::new(Accept) as Adapter)]);
            Worker::new(
                Store::open(scratch).unwrap(),
                config.engine.clone(),
                config.layout.store_name.clone(),
                adapters,
                config.daemon.outbox.lease,
                config.daemon.outbox.batch,
            )
            .with_limits(limits)
        }
    }
}

/// Drains the whole queue; returns messages sent.
async fn drain(worker: &mut Worker) -> u64 {
    let mut now = Timestamp(decided().0 + 1000);
    let mut sent = 0;
    loop {
        let report = worker.run_once(now).await.unwrap();
        assert_eq!(
            (report.retried, report.failed, report.dead),
            (0, 0, 0),
            "{report:?}"
        );
        sent += report.sent;
        match worker.next_due(now).unwrap() {
            None => return sent,
            Some(t) => now = now.max(t),
        }
    }
}

fn outbox(c: &mut Criterion) {
    let quick = test_mode();
    let (mut n, n_slow) = if quick { (50, 10) } else { (N, N_SLOW) };
    // `OUTBOX_N=10000` shows how a round's cost grows with the queue.
    if let Some(v) = std::env::var("OUTBOX_N").ok().and_then(|v| v.parse().ok()) {
        n = v;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let ok = || {
        Reply::json(
            201,
            r#"{"sid":"SM00000000000000000000000000000001","status":"queued"}"#,
        )
    };
    let any = "127.0.0.1:0".parse().unwrap();
    let fast = rt.block_on(StandIn::start_delayed(any, Duration::ZERO, move |_| ok()));
    let slow = rt.block_on(StandIn::start_delayed(any, LATENCY, move |_| ok()));

    let tmp = tempfile::tempdir().unwrap();
    let fast_cfg = config_dir(&tmp.path().join("fast"), &fast.url());
    let slow_cfg = config_dir(&tmp.path().join("slow"), &slow.url());
    let fast_db = queued_db(&fast_cfg, n);
    let slow_db = queued_db(&slow_cfg, n_slow);
    let scratch = tmp.path().join("run.db");

    let mut g = c.benchmark_group("outbox");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    let cases = [
        (
            format!("in-process adapter, {n} messages"),
            Provider::InProcess(&fast_cfg),
            &fast_db,
            n,
        ),
        (
            format!("twilio loopback 201, {n} messages"),
            Provider::Http(&fast_cfg, &fast),
            &fast_db,
            n,
        ),
        (
            format!(
                "twilio loopback 201 after {} ms, {n_slow} messages",
                LATENCY.as_millis()
            ),
            Provider::Http(&slow_cfg, &slow),
            &slow_db,
            n_slow,
        ),
    ];
    for (name, provider, template, n) in &cases {
        for concurrency in [1u32, 8] {
            g.throughput(Throughput::Elements(*n as u64));
            g.bench_function(format!("{name}, concurrency {concurrency}"), |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let mut worker = fresh_worker(template, &scratch, *provider, concurrency);
                        let started = Instant::now();
                        let sent = rt.block_on(drain(&mut worker));
                        total += started.elapsed();
                        assert_eq!(sent, *n as u64);
                        if let Provider::Http(_, stand_in) = provider {
                            assert_eq!(stand_in.take().len(), *n);
                        }
                    }
                    total
                });
            });
        }
    }
    g.finish();
}

criterion_group!(benches, outbox);
criterion_main!(benches);

//! The figures in BENCHMARKS.md ("Remote scanners (MQTT)"): the daemon
//! (`nearcast run`, a child process) fed by 20 ESPresense nodes through a
//! real Mosquitto. Run by hand:
//! `cargo test --release --test mqtt_bench -- --ignored --nocapture`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod bluez;
mod support;

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bluez::Nearcast;
use support::broker::{self, Broker};

const NODES: usize = 20;
const DEVICES: usize = 200;
/// Of the devices every node hears, the first this many are customers.
const CUSTOMERS: usize = 20;

fn node(i: usize) -> String {
    format!("bench{i:02}")
}

/// Device `d`'s address, `c40000000000` + d.
fn mac(d: usize) -> String {
    format!("c4000000{d:04x}")
}

fn report(d: usize, rssi: i32) -> String {
    let m = mac(d);
    format!(
        r#"{{"mac":"{m}","id":"{m}","name":"Phone","rssi@1m":-59,"rssi":{rssi},"rxAdj":0,"rssiVar":1.10,"distance":2.00,"var":0.05,"int":1010}}"#
    )
}

fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // utime + stime in clock ticks (100 a second on Linux).
    (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / 100.0
}

fn sightings(dir: &std::path::Path) -> (f64, serde_json::Value) {
    let status: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join("nearcast.status.json")).unwrap_or_default(),
    )
    .unwrap_or_default();
    (status["sightings"].as_f64().unwrap_or(0.0), status)
}

/// Waits until the status file's sightings count (written every 5 s)
/// stops growing for 6 s: the count, and when it was first seen.
fn settled(dir: &std::path::Path) -> (f64, Instant) {
    let mut last = -1.0;
    let mut since = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let (n, _) = sightings(dir);
        if (n - last).abs() > f64::EPSILON {
            last = n;
            since = Instant::now();
        } else if since.elapsed() > Duration::from_secs(6) {
            return (n, since);
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run by hand, figures go to BENCHMARKS.md"]
async fn mqtt_source_benchmark() {
    let rounds: usize = std::env::var("NEARCAST_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let mut b = Broker::start();
    let accounts: Vec<(String, String)> = (0..NODES).map(|i| (node(i), node(i))).collect();
    b.add_accounts(&accounts);

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("nearcast.toml"),
        format!(
            "[database]\npath = \"nearcast.db\"\n\n[channels.sms]\nadapter = \"console\"\n\n[mqtt]\nurl = \"{}\"\nusername = \"nearcast\"\npassword_env = \"NEARCAST_MQTT_PASSWORD\"\nnode_rate = 100000\n",
            b.url()
        ),
    )
    .unwrap();
    let mut zones = String::from(
        "store = \"Bench\"\nstore_id = \"bench\"\ntime_zone = \"UTC\"\n\n[hours]\nmon = \"00:00-23:59\"\ntue = \"00:00-23:59\"\nwed = \"00:00-23:59\"\nthu = \"00:00-23:59\"\nfri = \"00:00-23:59\"\nsat = \"00:00-23:59\"\nsun = \"00:00-23:59\"\n\n[radio]\nsignal_timeout = \"1s\"\n",
    );
    for i in 0..NODES {
        let _ = write!(
            zones,
            "\n[[scanner]]\nid = \"{}\"\nposition = [{}.0, {}.0]\nsource = \"espresense\"\n",
            node(i),
            (i % 5) * 5,
            (i / 5) * 5
        );
    }
    zones.push_str(
        "\n[[zone]]\nid = \"store\"\nkind = \"store\"\nmin_dwell = \"0s\"\nexit_after = \"1s\"\n",
    );
    std::fs::write(d.join("zones.toml"), zones).unwrap();
    std::fs::write(
        d.join("campaigns.toml"),
        "[[campaign]]\nid = \"hello\"\ntrigger = \"arrive\"\nmessage = \"hello\"\ncooldown = \"1h\"\npurpose = \"welcome\"\n\n[[message]]\nid = \"hello\"\nttl = \"5m\"\nplain = \"Hi {first_name}\"\n",
    )
    .unwrap();
    // The customers, and the probe (device DEVICES, heard only when probed).
    let mut csv = String::from(
        "id,first_name,phone,channels,consent_at,consent_source,identities,segments\n",
    );
    for c in (0..CUSTOMERS).chain([DEVICES]) {
        let m = mac(c);
        let colons: Vec<&str> = (0..6).map(|k| &m[2 * k..2 * k + 2]).collect();
        let _ = writeln!(
            csv,
            "c{c},C{c},+1555555{c:04},sms,2024-01-01T10:00:00Z,app,mac:{},",
            colons.join(":")
        );
    }
    std::fs::write(d.join("customers.csv"), csv).unwrap();
    let exe = env!("CARGO_BIN_EXE_nearcast");
    let out = std::process::Command::new(exe)
        .args(["customers", "import", "customers.csv", "--config", "."])
        .current_dir(d)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");

    let mut cmd = std::process::Command::new(exe);
    cmd.args(["run", "--config", "."])
        .current_dir(d)
        .env("NEARCAST_MQTT_PASSWORD", broker::password("nearcast"));
    let mut nc = Nearcast::start(cmd, d.join("run.log"));
    nc.wait_for(&["mqtt"], Duration::from_secs(20));
    let mut clients = Vec::new();
    for i in 0..NODES {
        let (c, _) = broker::client_as(&b, &node(i), &node(i), None)
            .await
            .unwrap();
        clients.push(c);
    }
    let topic = |d: usize, n: usize| format!("espresense/devices/{}/{}", mac(d), node(n));
    // Until the daemon is subscribed: a customer report gets through.
    let deadline = Instant::now() + Duration::from_secs(20);
    while sightings(d).0 < 1.0 {
        broker::publish(&clients[0], &topic(0, 0), report(0, -60)).await;
        assert!(Instant::now() < deadline, "{}", nc.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let pid = nc.pid();

    // 1. Throughput and CPU: every node publishes its 200 devices `rounds`
    //    times as fast as it can.
    let (base, _) = settled(d);
    let cpu0 = cpu_seconds(pid);
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for (n, c) in clients.iter().enumerate() {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            for r in 0..rounds {
                for dev in 0..DEVICES {
                    let rssi = -60 - i32::try_from((r + dev) % 20).unwrap();
                    broker::publish(&c, &topic(dev, n), report(dev, rssi)).await;
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let sent_in = t0.elapsed().as_secs_f64();
    let (total, done) = settled(d);
    let got = total - base;
    // An upper bound of the time taken: the status file is written every 5 s.
    let span = (done - t0).as_secs_f64();
    let cpu = cpu_seconds(pid) - cpu0;
    #[allow(clippy::cast_precision_loss)]
    let published = (NODES * DEVICES * rounds) as f64;
    println!(
        "throughput: {published} reports from {NODES} nodes x {DEVICES} devices x {rounds} rounds published in {sent_in:.2} s; \
         {got} sightings into the pipeline within {span:.2} s = {:.0} sightings/s; daemon CPU {cpu:.2} s = {:.1} ms per 1,000 sightings; guard {}",
        got / span,
        cpu / got * 1e6,
        sightings(d).1["guard"]
    );

    // 2. Latency, node publish -> presence event in the log, idle and with
    //    every node reporting its 200 devices once a second (4,000/s).
    for load in [false, true] {
        let stop = Arc::new(AtomicBool::new(false));
        let mut background = Vec::new();
        if load {
            for (n, c) in clients.iter().enumerate().skip(1) {
                let (c, stop) = (c.clone(), stop.clone());
                background.push(tokio::spawn(async move {
                    let mut tick = tokio::time::interval(Duration::from_secs(1));
                    while !stop.load(Ordering::Relaxed) {
                        tick.tick().await;
                        for dev in 0..DEVICES {
                            broker::publish(&c, &topic(dev, n), report(dev, -70)).await;
                        }
                    }
                }));
            }
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
        let cpu0 = cpu_seconds(pid);
        let s0 = sightings(d).0;
        let t0 = Instant::now();
        let arrived = |n: &Nearcast| n.count_of(&["customer=c200", "event=arrived"]);
        let left = |n: &Nearcast| n.count_of(&["customer=c200", "event=left"]);
        let mut lat = Vec::new();
        for _ in 0..20 {
            // Presence decides on a 1 s tick: probe at a random phase of it.
            tokio::time::sleep(Duration::from_millis(fastrand::u64(0..1000))).await;
            let before_n = arrived(&nc);
            let before = jiff::Timestamp::now();
            broker::publish(&clients[0], &topic(DEVICES, 0), report(DEVICES, -60)).await;
            nc.wait_for_count(
                &["customer=c200", "event=arrived"],
                before_n + 1,
                Duration::from_secs(10),
            );
            let log = nc.log();
            let line = log
                .lines()
                .filter(|l| l.contains("customer=c200") && l.contains("event=arrived"))
                .nth(before_n)
                .unwrap()
                .to_owned();
            let at: jiff::Timestamp = line.split_whitespace().next().unwrap().parse().unwrap();
            lat.push((at - before).total(jiff::Unit::Millisecond).unwrap());
            let before_left = left(&nc);
            nc.wait_for_count(
                &["customer=c200", "event=left"],
                before_left + 1,
                Duration::from_secs(10),
            );
        }
        let cpu = cpu_seconds(pid) - cpu0;
        let secs = t0.elapsed().as_secs_f64();
        let n = sightings(d).0 - s0;
        stop.store(true, Ordering::Relaxed);
        for t in background {
            t.await.unwrap();
        }
        lat.sort_by(f64::total_cmp);
        println!(
            "latency ({}): publish -> arrived over {} probes: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; {n} sightings in {secs:.1} s = {:.0}/s, daemon CPU {cpu:.2} s = {:.1} % of a core, {:.1} ms per 1,000 sightings",
            if load {
                "19 nodes x 200 devices at 1 Hz, the 20th probing"
            } else {
                "idle"
            },
            lat.len(),
            percentile(&lat, 0.5),
            percentile(&lat, 0.99),
            lat[lat.len() - 1],
            n / secs,
            cpu / secs * 100.0,
            cpu / n * 1e6
        );
        if load {
            let _ = settled(d);
        }
    }
    assert!(nc.stop().success());
}

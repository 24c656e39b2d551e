//! A full disk, for real: the database on a small tmpfs mounted in a
//! private mount namespace (`unshare -m`, root), filled with a file until
//! the kernel says ENOSPC, then emptied again.
//!
//! - `nearcast broadcast` stops at the batch the disk refuses, says how many
//!   customers it decided and that running it again finishes; the rerun
//!   does, and nobody gets the message twice. `customers forget` with room
//!   to erase but not to compact says exactly that; run again with room,
//!   it finishes, and not a byte of the customer is left.
//! - The daemon holds the decisions the disk refuses, backs off instead of
//!   looping, logs each trouble once, and when the space comes back commits
//!   what it held and sends it, each customer once.
//!
//! Waits are on real processes and the kernel, each bounded.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "bluez/mod.rs"]
mod bluez;
mod support;

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nearcast::core::types::Timestamp;
use support::{Recorded, Reply, StandIn};

/// Customers in the broadcast test.
const N: usize = 2000;

fn require_root() {
    let root = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"));
    assert!(
        root,
        "the disk tests mount a tmpfs in a private mount namespace: run them as root (scripts/test does)"
    );
}

const ZONES: &str = r#"
store = "Teststore"
store_id = "test-disk"
time_zone = "Europe/Berlin"

[hours]
mon = "00:00-24:00"
tue = "00:00-24:00"
wed = "00:00-24:00"
thu = "00:00-24:00"
fri = "00:00-24:00"
sat = "00:00-24:00"
sun = "00:00-24:00"

[[scanner]]
id = "door"
position = [0.0, 0.0]

[[zone]]
id = "store"
kind = "store"
min_dwell = "1s"
exit_after = "2s"
"#;

const CAMPAIGNS: &str = r#"
[limits]
max_messages_per_day = 10

[[campaign]]
id = "welcome"
trigger = "arrive"
message = "welcome"
cooldown = "12h"
purpose = "welcome"

[[campaign]]
id = "flash"
trigger = "broadcast"
message = "flash"
cooldown = "7d"
purpose = "loyalty"

[[message]]
id = "welcome"
ttl = "1h"
plain = "Hi {first_name}, welcome!"

[[message]]
id = "flash"
ttl = "2h"
plain = "Flash sale at {store}, {first_name}: 30 % off until 14:00."
"#;

fn customers(n: usize) -> String {
    let mut csv =
        "id,first_name,phone,channels,consent_at,consent_source,identities,segments,purposes\n"
            .to_owned();
    for i in 0..n {
        writeln!(
            csv,
            "c{i:04},Kunde{i:04},+4915100{i:05},sms,2026-01-01T10:00:00Z,app,mac:02:DD:00:00:{:02X}:{:02X},,welcome;loyalty",
            i >> 8,
            i & 0xFF
        )
        .unwrap();
    }
    csv
}

/// A configuration in `dir/config` whose database is `dir/mnt/nearcast.db`
/// (on the tmpfs, once mounted), with `daemon` appended to nearcast.toml,
/// and that database made, with `n` customers, in `dir/prep` to be copied
/// onto the tmpfs.
fn setup(dir: &Path, daemon: &str, n: usize) -> PathBuf {
    let cfg = dir.join("config");
    for d in ["config", "mnt", "prep", "out"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::write(
        cfg.join("nearcast.toml"),
        format!(
            "[database]\npath = \"{}\"\n\n[clock]\nrequire_sync = false\n\n{daemon}",
            dir.join("mnt/nearcast.db").display()
        ),
    )
    .unwrap();
    std::fs::write(cfg.join("zones.toml"), ZONES).unwrap();
    std::fs::write(cfg.join("campaigns.toml"), CAMPAIGNS).unwrap();
    let config = nearcast::config::load(&cfg).unwrap_or_else(|e| panic!("{e}"));
    let (mut store, hasher) =
        nearcast::app::open_database(&config, Some(&dir.join("prep/nearcast.db"))).unwrap();
    store
        // A day after the customers consented.
        .import_customers(
            customers(n).as_bytes(),
            &hasher,
            Timestamp(1_767_312_000_000),
        )
        .unwrap();
    drop(store);
    cfg
}

/// Runs `script` with `sh` in a new mount namespace where `$M` (the
/// directory `mnt`) is a tmpfs of `size`, holding a copy of the prepared
/// database; `$NC` is nearcast, `$CFG` the configuration, `$OUT` a
/// directory on the real disk for what the test reads afterwards.
/// `fill LEAVE_KIB` fills the tmpfs up to that much room.
fn in_namespace(dir: &Path, cfg: &Path, size: &str, script: &str) -> std::process::Output {
    let prelude = format!(
        r#"set -u
M={m}; NC={nc}; CFG={cfg}; OUT={out}
mount -t tmpfs -o size={size} nearcast-test "$M" || exit 90
cp {prep}/nearcast.db {prep}/secret.key "$M"/ || exit 91
fill() {{
    rm -f "$M/filler"
    dd if=/dev/zero of="$M/filler" bs=16k 2>/dev/null
    truncate -s -"$1"K "$M/filler" || exit 92
}}
run() {{ name=$1; shift; "$NC" "$@" --config "$CFG" >"$OUT/$name.out" 2>"$OUT/$name.err"; echo $? >"$OUT/$name.rc"; }}
"#,
        m = dir.join("mnt").display(),
        nc = env!("CARGO_BIN_EXE_nearcast"),
        cfg = cfg.display(),
        out = dir.join("out").display(),
        prep = dir.join("prep").display(),
    );
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c"])
        .arg(format!("{prelude}{script}"))
        .output()
        .expect("unshare (util-linux) is needed");
    assert!(
        out.status.success(),
        "{out:?}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join("out").join(name)).unwrap_or_default()
}

fn rc(dir: &Path, name: &str) -> i32 {
    read(dir, &format!("{name}.rc")).trim().parse().unwrap()
}

#[test]
fn a_broadcast_and_an_erasure_on_a_full_disk_say_how_far_they_got() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cfg = setup(d, "[channels.sms]\nadapter = \"console\"\n", N);
    in_namespace(
        d,
        &cfg,
        "16m",
        r#"
fill 400
run b1 broadcast --campaign flash
rm "$M/filler"
run b2 broadcast --campaign flash
fill 256
run f1 customers forget c0007
run show customers show c0007
rm "$M/filler"
run f2 customers forget c0007
cp "$M"/nearcast.db* "$OUT"/
"#,
    );

    // The first run stops at the batch the disk refused, and says so.
    let b1 = read(d, "b1.out");
    assert_eq!(rc(d, "b1"), 1, "{b1}{}", read(d, "b1.err"));
    let line = b1
        .lines()
        .find(|l| l.starts_with("STOPPED"))
        .unwrap_or_else(|| panic!("no STOPPED line: {b1}"));
    let decided: usize = line
        .split_whitespace()
        .nth(3)
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    assert!(
        line.ends_with("customers: database: database or disk is full"),
        "{line}"
    );
    assert!(line.contains(&format!("after deciding {decided} of {N} customers")));
    assert!(
        decided > 0 && decided < N && decided % 256 == 0,
        "whole batches: {decided}"
    );
    assert!(
        b1.contains(&format!("the other {} are not", N - decided))
            && b1.contains(
                "run the same command again to finish (within the campaign's cooldown of 7d"
            ),
        "{b1}"
    );
    assert!(
        b1.contains(&format!(
            "queued                {decided} (sms/plain {decided})"
        )),
        "{b1}"
    );
    // It sent nothing: the queue waits for the rerun (or the daemon).
    assert_eq!(b1.matches("[flash]").count(), 0, "{b1}");
    eprintln!("first run, 400 KiB free:\n{b1}");

    // The rerun decides the rest; the cooldown keeps the first ones from a
    // second message; it sends what the first run left queued too.
    let b2 = read(d, "b2.out");
    assert_eq!(rc(d, "b2"), 0, "{b2}{}", read(d, "b2.err"));
    assert!(
        b2.contains(&format!(
            "queued                {} (sms/plain {})",
            N - decided,
            N - decided
        )),
        "{b2}"
    );
    assert!(
        b2.contains(&format!(
            "suppressed            {decided} (cooldown {decided})"
        )),
        "{b2}"
    );
    assert!(
        b2.contains(&format!(
            "from an earlier run   {decided} of the {decided} it left queued settled now"
        )),
        "{b2}"
    );
    let mut who: Vec<&str> = b2
        .lines()
        .filter(|l| l.contains("[flash]"))
        .map(|l| l.split(['(', ')']).nth(1).unwrap())
        .collect();
    assert_eq!(who.len(), N, "one message each");
    who.sort_unstable();
    who.dedup();
    assert_eq!(who.len(), N, "nobody twice");
    eprintln!(
        "second run, room again:\n{}",
        b2.lines()
            .filter(|l| !l.contains("[flash]"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // Room to erase, not to compact: erased, and said so, with the way on.
    let f1 = read(d, "f1.out");
    let f1_err = read(d, "f1.err");
    assert_eq!(rc(d, "f1"), 1, "{f1}{f1_err}");
    assert_eq!(
        f1,
        "c0007 erased: customer, identities, visits, points, decisions and messages\n"
    );
    assert!(
        f1_err.starts_with(
            "but the database could not be compacted (database: database or disk is full)"
        ) && f1_err.contains("run `nearcast customers forget c0007` again to finish"),
        "{f1_err}"
    );
    assert_eq!(rc(d, "show"), 1);
    assert!(read(d, "show.err").contains("no customer with id \"c0007\""));
    // Run again with room: it finishes, and nothing of Kunde0007 is left.
    assert_eq!(rc(d, "f2"), 1);
    assert_eq!(
        read(d, "f2.err"),
        "no customer with id \"c0007\": nothing to erase\n\
         the database is compacted: nothing is left of an earlier erasure\n"
    );
    let mut bytes = std::fs::read(d.join("out/nearcast.db")).unwrap();
    if let Ok(wal) = std::fs::read(d.join("out/nearcast.db-wal")) {
        bytes.extend(wal);
    }
    for needle in ["Kunde0007", "+491510000007", "c0007"] {
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
            "{needle} is still in the database file"
        );
    }
    assert!(
        bytes.windows(9).any(|w| w == b"Kunde0008"),
        "the others are"
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The value of metric line `name` in the daemon's `/metrics`.
fn metric(port: u16, name: &str) -> Option<u64> {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
}

/// Waits until `/metrics` says `name` is at least `want`.
fn wait_metric(nc: &bluez::Nearcast, port: u16, name: &str, want: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(port, name).is_none_or(|v| v < want) {
        assert!(
            Instant::now() < deadline,
            "{name} never reached {want} (is {:?}):\n{}",
            metric(port, name),
            nc.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Fills the filesystem holding `dir` with a file until it is full.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 16 * 1024];
    while f.write_all(&chunk).is_ok() {}
    // What no whole chunk fitted in.
    while f.write_all(&[0]).is_ok() {}
    path
}

/// The provider: refuses with 503 (retry after a second) while `refuse`
/// holds, then accepts, recording whose message it took.
struct Provider {
    refuse: Arc<AtomicBool>,
    accepted: Arc<Mutex<Vec<String>>>,
    stand_in: StandIn,
    _rt: tokio::runtime::Runtime,
}

impl Provider {
    fn start() -> Provider {
        let refuse = Arc::new(AtomicBool::new(true));
        let accepted: Arc<Mutex<Vec<String>>> = Arc::default();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let stand_in = {
            let (refuse, accepted) = (refuse.clone(), accepted.clone());
            rt.block_on(StandIn::start(move |r: &Recorded| {
                if refuse.load(Ordering::SeqCst) {
                    return Reply::json(503, "{}").with_header("Retry-After", "1");
                }
                let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
                accepted
                    .lock()
                    .unwrap()
                    .push(body["customer"].as_str().unwrap_or("?").to_owned());
                Reply::json(200, "{}")
            }))
        };
        Provider {
            refuse,
            accepted,
            stand_in,
            _rt: rt,
        }
    }
}

/// The daemon with its database on a 4 MiB tmpfs of its own mount
/// namespace, three customers on file, Wi-Fi presence from `dir/leases`,
/// `sms` a webhook to `provider`, the API on `port`.
struct Daemon {
    nc: bluez::Nearcast,
    cfg: PathBuf,
    leases: PathBuf,
    /// The tmpfs, seen from outside the daemon's namespace.
    disk: PathBuf,
}

impl Daemon {
    fn start(d: &Path, provider: &Provider, port: u16) -> Daemon {
        std::fs::write(d.join("token"), "webhook-secret").unwrap();
        let leases = d.join("leases");
        std::fs::write(&leases, "").unwrap();
        let cfg = setup(
            d,
            &format!(
                r#"[[source]]
kind = "wifi"
backend = "leases"
file = "{leases}"
poll = "100ms"
seen_every = "1s"

[channels.sms]
adapter = "webhook"
url = "{url}/hook"
token_file = "{token}"
timeout = "1s"

[outbox]
lease = "7s"
poll = "200ms"
backoff_min = "1s"
backoff_max = "2s"

[api]
bind = "127.0.0.1:{port}"
"#,
                leases = leases.display(),
                url = provider.stand_in.url(),
                token = d.join("token").display(),
            ),
            3,
        );
        let mnt = d.join("mnt");
        let mut cmd = Command::new("unshare");
        cmd.args(["-m", "--propagation", "private", "sh", "-c"]).arg(format!(
            "mount -t tmpfs -o size=4m nearcast-test {m} && cp {p}/nearcast.db {p}/secret.key {m}/ && exec {nc} run --config {cfg}",
            m = mnt.display(),
            p = d.join("prep").display(),
            nc = env!("CARGO_BIN_EXE_nearcast"),
            cfg = cfg.display()
        ));
        let nc = bluez::Nearcast::start(cmd, d.join("run.log"));
        nc.wait_for(&["local API listening"], Duration::from_secs(20));
        nc.wait_for(&["wifi presence started"], Duration::from_secs(20));
        let disk = PathBuf::from(format!("/proc/{}/root{}", nc.pid(), mnt.display()));
        Daemon {
            nc,
            cfg,
            leases,
            disk,
        }
    }

    /// The first `n` customers are on the Wi-Fi.
    fn on_wifi(&self, n: usize) {
        let text: String = (0..n)
            .map(|i| format!("4000000000 02:dd:00:00:00:{i:02x} 10.0.0.{} * *\n", 10 + i))
            .collect();
        std::fs::write(&self.leases, text).unwrap();
    }

    /// The daemon's CPU time so far (user and system), from /proc.
    fn cpu(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.nc.pid())).unwrap();
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap()
            .split_whitespace()
            .collect();
        // utime and stime, fields 14 and 15 of the line (11 and 12 after the name).
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        Duration::from_millis(ticks * 10)
    }
}

#[test]
fn the_daemon_on_a_full_disk_holds_its_decisions_and_backs_off() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let provider = Provider::start();
    let port = free_port();
    let mut daemon = Daemon::start(d, &provider, port);
    let nc = &daemon.nc;

    // c0000 arrives; the provider is down, so the welcome waits in the
    // outbox for a retry.
    daemon.on_wifi(1);
    nc.wait_for(&["send failed; retrying later"], Duration::from_secs(20));

    // The disk fills up. c0001 and c0002 arrive: their decisions are held;
    // the worker's retry of c0000's welcome finds the database refusing.
    let filler = fill(&daemon.disk);
    let full_since = Instant::now();
    daemon.on_wifi(3);
    wait_metric(nc, port, "nearcast_decisions_held", 2);
    wait_metric(nc, port, "nearcast_storage_failures_total", 1);
    // A second look a little later: the worker is backing off, not looping
    // (the audit counted 780 failures a second).
    wait_metric(nc, port, "nearcast_storage_failures_total", 2);
    let failures = metric(port, "nearcast_storage_failures_total").unwrap();
    assert!(failures <= 4, "{failures} failed rounds: no backoff?");
    assert_eq!(
        nc.count_of(&["cannot record decisions; holding them in memory"]),
        1,
        "logged once:\n{}",
        nc.log()
    );
    assert_eq!(
        nc.count_of(&["outbox worker cannot use the database"]),
        1,
        "logged once:\n{}",
        nc.log()
    );
    assert!(provider.accepted.lock().unwrap().is_empty());

    // Space again, and the provider is back.
    std::fs::remove_file(&filler).unwrap();
    eprintln!(
        "disk full for {:.1} s: {failures} failed outbox rounds, {} decisions held",
        full_since.elapsed().as_secs_f64(),
        metric(port, "nearcast_decisions_held").unwrap_or(0)
    );
    provider.refuse.store(false, Ordering::SeqCst);
    nc.wait_for(
        &[
            "the database takes writes again: held decisions committed",
            "committed=2",
            "expired=0",
        ],
        Duration::from_secs(90),
    );
    nc.wait_for(
        &["outbox: the database takes writes again"],
        Duration::from_secs(90),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while provider.accepted.lock().unwrap().len() < 3 {
        assert!(Instant::now() < deadline, "not all sent:\n{}", nc.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut got = provider.accepted.lock().unwrap().clone();
    got.sort();
    assert_eq!(got, ["c0000", "c0001", "c0002"], "each once");
    assert_eq!(metric(port, "nearcast_decisions_held"), Some(0));
    assert_eq!(
        metric(port, "nearcast_decisions_held_total{result=\"committed\"}"),
        Some(2)
    );
    assert_eq!(
        metric(port, "nearcast_decisions_held_total{result=\"dropped\"}"),
        Some(0)
    );
    // `nearcast stats` reads the same from the status file (rewritten every
    // 5 s), through the daemon's namespace.
    let deadline = Instant::now() + Duration::from_secs(30);
    let held = loop {
        let out = Command::new("nsenter")
            .args([
                "-t",
                &nc.pid().to_string(),
                "-m",
                env!("CARGO_BIN_EXE_nearcast"),
                "stats",
                "--config",
            ])
            .arg(&daemon.cfg)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let line = text
            .lines()
            .find(|l| l.starts_with("held decisions"))
            .map(str::to_owned);
        if let Some(l) = line.filter(|l| l.contains("2 committed late")) {
            break l;
        }
        assert!(Instant::now() < deadline, "stats never showed it: {text}");
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(
        held,
        "held decisions   0 waiting for the database; 2 held since start: 2 committed late \
         (0 messages past their time to live, recorded expired), 0 dropped"
    );
    assert!(daemon.nc.stop().success());
}

/// The full-disk figures in BENCHMARKS.md ("Reliability"): the daemon
/// with a message to retry on a full disk for 60 s, its failed rounds,
/// error lines and CPU time. Run with
/// `cargo test --release --test disk -- --ignored --nocapture full_disk_benchmark`.
#[test]
#[ignore = "a benchmark: run by hand, figures go to BENCHMARKS.md"]
fn full_disk_benchmark() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let provider = Provider::start();
    let port = free_port();
    let mut daemon = Daemon::start(d, &provider, port);
    daemon.on_wifi(1);
    daemon
        .nc
        .wait_for(&["send failed; retrying later"], Duration::from_secs(20));
    let filler = fill(&daemon.disk);
    daemon.on_wifi(3);
    wait_metric(&daemon.nc, port, "nearcast_storage_failures_total", 1);
    let (cpu0, lines0, t0) = (
        daemon.cpu(),
        daemon.nc.log().lines().count(),
        Instant::now(),
    );
    std::thread::sleep(Duration::from_secs(60));
    let (cpu, lines, secs) = (
        daemon.cpu() - cpu0,
        daemon.nc.log().lines().count() - lines0,
        t0.elapsed().as_secs_f64(),
    );
    println!(
        "full disk for {secs:.0} s: {} failed outbox rounds in all, {lines} log lines, {} held, CPU {:.2} s ({:.2} % of a core)",
        metric(port, "nearcast_storage_failures_total").unwrap_or(0),
        metric(port, "nearcast_decisions_held").unwrap_or(0),
        cpu.as_secs_f64(),
        cpu.as_secs_f64() / secs * 100.0
    );
    std::fs::remove_file(&filler).unwrap();
    provider.refuse.store(false, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(120);
    while provider.accepted.lock().unwrap().len() < 3 {
        assert!(Instant::now() < deadline, "{}", daemon.nc.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(daemon.nc.stop().success());
}

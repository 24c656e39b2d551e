//! Wi-Fi presence end to end: the daemon as a child process with each
//! backend against a real counterpart — a local process speaking hostapd's
//! control protocol on a Unix socket, the kernel's neighbour table in a
//! network namespace with a veth pair, and a leases file rewritten the way
//! dnsmasq rewrites it — and customers arriving and leaving.
//!
//! Waits are on real time (processes, the kernel), each bounded.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "bluez/mod.rs"]
mod bluez;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bluez::{Nearcast, presence};
use nearcast::core::types::Timestamp;

const CLEO: &str = "02:CC:00:00:00:01";
const FRANK: &str = "02:CC:00:00:00:02";
const GINA: &str = "02:CC:00:00:00:03";
const STRANGER: &str = "02:CC:00:00:00:09";

const ZONES: &str = r#"
store = "Teststore"
store_id = "test-wifi"
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

[[message]]
id = "welcome"
ttl = "5m"
plain = "Hi {first_name}, welcome!"
"#;

fn setup(dir: &Path, source: &str) {
    std::fs::write(
        dir.join("nearcast.toml"),
        format!(
            "[database]\npath = \"nearcast.db\"\n\n[[source]]\nkind = \"wifi\"\nseen_every = \"1s\"\nretry_min = \"200ms\"\nretry_max = \"1s\"\n{source}\n\n[channels.sms]\nadapter = \"console\"\n\n[clock]\nrequire_sync = false\n"
        ),
    )
    .unwrap();
    std::fs::write(dir.join("zones.toml"), ZONES).unwrap();
    std::fs::write(dir.join("campaigns.toml"), CAMPAIGNS).unwrap();
    let csv = format!(
        "id,first_name,phone,channels,consent_at,consent_source,identities,segments
cleo,Cleo,+4915112345670,sms,2026-01-01T10:00:00Z,portal,mac:{CLEO},
frank,Frank,+4915112345671,sms,2026-01-01T10:00:00Z,portal,mac:{FRANK},
gina,Gina,+4915112345672,sms,2026-01-01T10:00:00Z,portal,mac:{GINA},
"
    );
    let config = nearcast::config::load(dir).unwrap_or_else(|e| panic!("{e}"));
    let (mut store, hasher) = nearcast::app::open_database(&config, None).unwrap();
    store
        .import_customers(csv.as_bytes(), &hasher, Timestamp::from_secs(1_767_261_600))
        .unwrap();
}

fn run(dir: &Path) -> Nearcast {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nearcast"));
    cmd.args(["run", "--config"]).arg(dir);
    Nearcast::start(cmd, dir.join("run.log"))
}

fn count(log: &str, needles: &[&str]) -> usize {
    log.lines()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .count()
}

/// The fake hostapd (`tests/fixtures/fake_hostapd.py`), driven on stdin.
struct FakeHostapd {
    child: Child,
    out: BufReader<std::process::ChildStdout>,
}

impl FakeHostapd {
    fn start(socket: &Path, stations: &[&str]) -> FakeHostapd {
        let python = if Path::new("/usr/bin/python3").exists() {
            "/usr/bin/python3"
        } else {
            "python3"
        };
        let mut child = Command::new(python)
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fake_hostapd.py"))
            .arg(socket)
            .args(stations)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 is needed for the hostapd stand-in");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready");
        FakeHostapd { child, out }
    }

    fn say(&mut self, cmd: &str) {
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{cmd}").unwrap();
        stdin.flush().unwrap();
        let mut line = String::new();
        self.out.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "done");
    }

    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for FakeHostapd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn hostapd_stations_arrive_and_leave_and_a_hostapd_restart_is_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let socket = d.join("wlan0");
    setup(
        d,
        "backend = \"hostapd\"\ncontrol = \"wlan0\"\nping = \"300ms\"",
    );
    // Cleo is associated before nearcast starts: listed on start.
    let mut ap = FakeHostapd::start(&socket, &[CLEO, STRANGER]);
    let mut nc = run(d);
    nc.wait_for(
        &["wifi presence started", "backend=hostapd"],
        Duration::from_secs(10),
    );
    nc.wait_for(&["customer=cleo", "event=arrived"], Duration::from_secs(10));
    ap.say(&format!("connect {FRANK}"));
    nc.wait_for(
        &["customer=frank", "event=arrived"],
        Duration::from_secs(10),
    );
    ap.say(&format!("disconnect {CLEO}"));
    nc.wait_for(&["customer=cleo", "event=left"], Duration::from_secs(10));

    // hostapd restarts; meanwhile Frank went and Gina came.
    let retries = nc.count_of(&["wifi presence still unavailable"]);
    ap.kill();
    nc.wait_for(
        &["wifi presence lost", "reason=hostapd not answering"],
        Duration::from_secs(10),
    );
    // hostapd stays away for a retry, then comes back.
    nc.wait_for_count(
        &["wifi presence still unavailable"],
        retries + 1,
        Duration::from_secs(10),
    );
    let ap = FakeHostapd::start(&socket, &[GINA]);
    nc.wait_for(&["wifi presence back"], Duration::from_secs(10));
    nc.wait_for(&["customer=gina", "event=arrived"], Duration::from_secs(10));
    nc.wait_for(&["customer=frank", "event=left"], Duration::from_secs(10));
    assert!(nc.stop().success());
    drop(ap);

    let log = nc.log();
    let mut events = presence(&log);
    events.sort();
    assert_eq!(
        events,
        [
            "cleo arrived store",
            "cleo left store",
            "frank arrived store",
            "frank left store",
            "gina arrived store"
        ],
        "{log}"
    );
    assert_eq!(
        count(&log, &["wifi presence lost"]),
        1,
        "logged once: {log}"
    );
    assert_eq!(count(&log, &["campaign=welcome", " decision"]), 3);
    assert!(
        !log.contains(STRANGER) && !log.contains(CLEO),
        "a MAC in the log"
    );
}

#[test]
fn a_leases_file_rewritten_like_dnsmasq_does_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let leases = d.join("dnsmasq.leases");
    let far = 4_000_000_000i64;
    std::fs::write(&leases, format!("{far} {STRANGER} 192.168.1.9 * *\n")).unwrap();
    setup(
        d,
        "backend = \"leases\"\nfile = \"dnsmasq.leases\"\npoll = \"100ms\"",
    );
    let mut nc = run(d);
    nc.wait_for(
        &["wifi presence started", "backend=leases"],
        Duration::from_secs(10),
    );

    // dnsmasq truncates and rewrites the same file (same inode).
    let inode = || std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&leases).unwrap());
    let before = inode();
    std::fs::write(
        &leases,
        format!("{far} {STRANGER} 192.168.1.9 * *\n{far} {CLEO} 192.168.1.10 cleo *\n0 {FRANK} 192.168.1.11 * *\n"),
    )
    .unwrap();
    assert_eq!(inode(), before);
    nc.wait_for(&["customer=cleo", "event=arrived"], Duration::from_secs(10));
    nc.wait_for(
        &["customer=frank", "event=arrived"],
        Duration::from_secs(10),
    );

    // Cleo's lease is released.
    std::fs::write(
        &leases,
        format!("{far} {STRANGER} 192.168.1.9 * *\n0 {FRANK} 192.168.1.11 * *\n"),
    )
    .unwrap();
    nc.wait_for(&["customer=cleo", "event=left"], Duration::from_secs(10));

    // Another server's way: a new file renamed over the old one; Frank's
    // lease expires a few seconds from now without any rewrite after that.
    let soon = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3;
    let tmp = d.join("dnsmasq.leases.new");
    std::fs::write(&tmp, format!("{soon} {FRANK} 192.168.1.11 * *\n")).unwrap();
    std::fs::rename(&tmp, &leases).unwrap();
    nc.wait_for(&["customer=frank", "event=left"], Duration::from_secs(15));
    assert!(nc.stop().success());
    let log = nc.log();
    let mut events = presence(&log);
    events.sort();
    assert_eq!(
        events,
        [
            "cleo arrived store",
            "cleo left store",
            "frank arrived store",
            "frank left store"
        ],
        "{log}"
    );
}

/// Runs a command, panicking with its output when it fails.
fn sh(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| {
        panic!("cannot run {}: {e} (the neighbours test needs iproute2: apt-get install -y iproute2)", args[0])
    });
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two network namespaces joined by a veth pair, removed on drop.
struct Namespaces {
    bx: String,
    phone: String,
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.bx]).status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.phone])
            .status();
    }
}

/// The box and a phone (MAC `CLEO`, 10.77.0.2) in two network namespaces
/// joined by a veth pair, IPv4 only, with quick neighbour timers so tests
/// are short. Returns the namespaces and the box's and the phone's ends.
fn box_and_phone() -> (Namespaces, String, String) {
    let root = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"));
    assert!(
        root,
        "the neighbours tests create network namespaces: run them as root (scripts/test does, in CI)"
    );
    // Several tests at once: each needs its own names.
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let id = format!(
        "{}{}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let ns = Namespaces {
        bx: format!("nc-box-{id}"),
        phone: format!("nc-phone-{id}"),
    };
    let (bx, phone) = (ns.bx.as_str(), ns.phone.as_str());
    let (vb, vp) = (format!("vb{id}"), format!("vp{id}"));
    sh(&["ip", "netns", "add", bx]);
    sh(&["ip", "netns", "add", phone]);
    sh(&[
        "ip", "link", "add", &vb, "netns", bx, "type", "veth", "peer", "name", &vp, "netns", phone,
    ]);
    sh(&["ip", "-n", phone, "link", "set", &vp, "address", CLEO]);
    for (ns, dev) in [(bx, vb.as_str()), (phone, vp.as_str())] {
        sh(&[
            "ip",
            "netns",
            "exec",
            ns,
            "sh",
            "-c",
            &format!("echo 1 > /proc/sys/net/ipv6/conf/{dev}/disable_ipv6"),
        ]);
    }
    for (knob, v) in [
        ("base_reachable_time_ms", "500"),
        ("delay_first_probe_time", "1"),
        ("retrans_time_ms", "200"),
        ("ucast_solicit", "2"),
    ] {
        sh(&[
            "ip",
            "netns",
            "exec",
            bx,
            "sh",
            "-c",
            &format!("echo {v} > /proc/sys/net/ipv4/neigh/{vb}/{knob}"),
        ]);
    }
    sh(&["ip", "-n", bx, "addr", "add", "10.77.0.1/24", "dev", &vb]);
    sh(&["ip", "-n", phone, "addr", "add", "10.77.0.2/24", "dev", &vp]);
    sh(&["ip", "-n", bx, "link", "set", &vb, "up"]);
    sh(&["ip", "-n", phone, "link", "set", &vp, "up"]);
    (ns, vb, vp)
}

/// The box sends to the phone: ARP resolves it, the entry is reachable.
fn poke(bx: &str) {
    let _ = Command::new("ip")
        .args([
            "netns",
            "exec",
            bx,
            "bash",
            "-c",
            "echo hi > /dev/udp/10.77.0.2/9",
        ])
        .stderr(Stdio::null())
        .status();
}

/// The box's neighbour entry for 10.77.0.2 as `ip -s neigh` shows it.
fn neighbour(bx: &str, dev: &str) -> String {
    let out = Command::new("ip")
        .args(["-s", "-n", bx, "neigh", "show", "10.77.0.2", "dev", dev])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// `nearcast run` in the box's namespace.
fn run_in(bx: &str, d: &Path) -> Nearcast {
    let mut cmd = Command::new("ip");
    cmd.args([
        "netns",
        "exec",
        bx,
        env!("CARGO_BIN_EXE_nearcast"),
        "run",
        "--config",
    ])
    .arg(d);
    Nearcast::start(cmd, d.join("run.log"))
}

#[test]
fn a_phone_on_the_lan_becomes_reachable_then_goes_away() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (ns, vb, vp) = box_and_phone();
    let (bx, phone) = (ns.bx.as_str(), ns.phone.as_str());

    setup(
        d,
        &format!("backend = \"neighbours\"\ninterface = \"{vb}\"\nstale_after = \"1h\""),
    );
    let mut nc = run_in(bx, d);
    nc.wait_for(
        &["wifi presence started", "backend=neighbours"],
        Duration::from_secs(10),
    );

    let poke = || poke(bx);
    poke();
    let deadline = Instant::now() + Duration::from_secs(15);
    while count(&nc.log(), &["customer=cleo", "event=arrived"]) == 0 {
        assert!(
            Instant::now() < deadline,
            "cleo never arrived: {}",
            nc.log()
        );
        poke();
        std::thread::sleep(Duration::from_millis(300));
    }

    // The phone leaves: nobody answers for its address any more. Traffic
    // to it makes the kernel probe, fail, and report the entry failed.
    sh(&["ip", "-n", phone, "addr", "flush", "dev", &vp]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while count(&nc.log(), &["customer=cleo", "event=left"]) == 0 {
        assert!(Instant::now() < deadline, "cleo never left: {}", nc.log());
        poke();
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(nc.stop().success());
    let log = nc.log();
    assert_eq!(
        presence(&log),
        ["cleo arrived store", "cleo left store"],
        "{log}"
    );
    assert_eq!(
        count(&log, &["customer=cleo", "campaign=welcome", " decision"]),
        1
    );
    drop(ns);
}

#[test]
fn a_phone_that_left_before_the_daemon_started_does_not_arrive() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (ns, vb, vp) = box_and_phone();
    let (bx, phone) = (ns.bx.as_str(), ns.phone.as_str());
    let stale_after = 3;

    // Cleo's phone left a while ago: the box's entry for it is stale (it
    // was not confirmed since) and the kernel keeps it, as it does in a
    // small table for hours. The entry is put there as the kernel would
    // have left it; traffic cannot make it, because traffic to a phone
    // that left makes the kernel probe it until it fails.
    sh(&["ip", "-n", phone, "addr", "flush", "dev", &vp]);
    sh(&[
        "ip",
        "-n",
        bx,
        "neigh",
        "replace",
        "10.77.0.2",
        "lladdr",
        CLEO,
        "dev",
        &vb,
        "nud",
        "stale",
    ]);
    // `used A/B/C`: C is the seconds since the entry's state last changed.
    let age = |entry: &str| {
        let word = entry
            .split_whitespace()
            .skip_while(|w| *w != "used")
            .nth(1)?;
        let last = word.split('/').nth(2)?;
        let digits: String = last.chars().take_while(char::is_ascii_digit).collect();
        digits.parse::<u64>().ok()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let entry = neighbour(bx, &vb);
        assert!(entry.contains("STALE"), "{entry}");
        if age(&entry).is_some_and(|u| u > stale_after) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never stale long enough: {entry}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Frank's phone went stale just now: it counts for stale_after from
    // here, so he arrives and leaves, and the test knows when to look.
    sh(&[
        "ip",
        "-n",
        bx,
        "neigh",
        "replace",
        "10.77.0.3",
        "lladdr",
        FRANK,
        "dev",
        &vb,
        "nud",
        "stale",
    ]);

    setup(
        d,
        &format!(
            "backend = \"neighbours\"\ninterface = \"{vb}\"\nstale_after = \"{stale_after}s\""
        ),
    );
    let mut nc = run_in(bx, d);
    nc.wait_for(&["customer=frank", "event=left"], Duration::from_secs(20));
    assert!(
        neighbour(bx, &vb).contains("STALE"),
        "the kernel still has Cleo's entry"
    );
    assert!(nc.stop().success());
    let log = nc.log();
    assert_eq!(
        presence(&log),
        ["frank arrived store", "frank left store"],
        "{log}"
    );
    assert_eq!(count(&log, &["customer=cleo"]), 0, "{log}");
    drop(ns);
}

#[test]
fn record_writes_enrolled_customers_only_unless_all_is_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("dnsmasq.leases"),
        format!("0 {STRANGER} 192.168.1.9 * *\n0 {CLEO} 192.168.1.10 cleo *\n"),
    )
    .unwrap();
    setup(
        d,
        "backend = \"leases\"\nfile = \"dnsmasq.leases\"\npoll = \"100ms\"",
    );
    let record = |all: bool| {
        let file = d.join(if all { "all.jsonl" } else { "enrolled.jsonl" });
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_nearcast"));
        cmd.args(["record", "--seconds", "2", "--config"])
            .arg(d)
            .arg(&file);
        if all {
            cmd.arg("--all");
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        (
            std::fs::read_to_string(file).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    let (text, stderr) = record(false);
    assert!(
        text.contains(&format!("\"wifi\":\"joined\",\"mac\":\"{CLEO}\"")),
        "{text}"
    );
    assert!(!text.contains(STRANGER), "{text}");
    assert!(stderr.contains("of other devices not written"), "{stderr}");
    assert!(!stderr.contains("PERSONAL DATA"));
    let (text, stderr) = record(true);
    assert!(text.contains(CLEO) && text.contains(STRANGER), "{text}");
    assert!(stderr.contains("PERSONAL DATA"), "{stderr}");
}

/// The Wi-Fi figure in BENCHMARKS.md. Run with
/// `cargo test --release --test wifi -- --ignored --nocapture hostapd_latency_benchmark`.
#[test]
#[ignore = "a benchmark: run by hand, figures go to BENCHMARKS.md"]
fn hostapd_latency_benchmark() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d, "backend = \"hostapd\"\ncontrol = \"wlan0\"");
    std::fs::write(
        d.join("zones.toml"),
        ZONES
            .replace("min_dwell = \"1s\"", "min_dwell = \"0s\"")
            .replace("exit_after = \"2s\"", "exit_after = \"0s\""),
    )
    .unwrap();
    let mut ap = FakeHostapd::start(&d.join("wlan0"), &[]);
    let mut nc = run(d);
    nc.wait_for(&["wifi presence started"], Duration::from_secs(10));
    let mut lat = Vec::new();
    for round in 1..=30 {
        let before = jiff::Timestamp::now();
        ap.say(&format!("connect {CLEO}"));
        let deadline = Instant::now() + Duration::from_secs(10);
        let line = loop {
            let log = nc.log();
            let lines: Vec<String> = log
                .lines()
                .filter(|l| l.contains("customer=cleo") && l.contains("event=arrived"))
                .map(str::to_owned)
                .collect();
            if lines.len() >= round {
                break lines[round - 1].clone();
            }
            assert!(Instant::now() < deadline, "{log}");
            std::thread::sleep(Duration::from_millis(1));
        };
        let at: jiff::Timestamp = line.split_whitespace().next().unwrap().parse().unwrap();
        lat.push((at - before).total(jiff::Unit::Millisecond).unwrap());
        ap.say(&format!("disconnect {CLEO}"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while count(&nc.log(), &["customer=cleo", "event=left"]) < round {
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    assert!(nc.stop().success());
    lat.sort_by(f64::total_cmp);
    println!(
        "hostapd AP-STA-CONNECTED -> arrived: p50 {:.1} ms, p90 {:.1} ms, max {:.1} ms over {} rounds",
        lat[lat.len() / 2],
        lat[lat.len() * 9 / 10],
        lat[lat.len() - 1],
        lat.len()
    );
}

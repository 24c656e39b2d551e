//! The clock guard inside the hardened unit. systemd's `ProtectClock=yes`
//! (and a `SystemCallFilter=` without `@clock`) answer EPERM even to the
//! read-only `adjtimex` the daemon uses to ask whether NTP has set the
//! clock. These tests read the unit's own filter settings, run the real
//! daemon under a seccomp filter that refuses what the unit would refuse
//! (`tests/helpers/seccomp_deny.c`, built here with the system's C
//! compiler) in a private mount namespace, and check what it decides and
//! what it says in its log, `stats` and `/healthz`.
//!
//! Root is needed for the mount namespace (scripts/test runs as root).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The helper, compiled once per test run. A machine without a C compiler
/// cannot run these tests: that is a failure, not a skip.
fn helper() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("seccomp_deny");
        let status = Command::new("cc")
            .args(["-O2", "-Wall", "-Werror", "-o"])
            .arg(&out)
            .arg(root().join("tests/helpers/seccomp_deny.c"))
            .status()
            .expect("no C compiler (cc): apt-get install gcc (scripts/test does this as root)");
        assert!(status.success(), "the seccomp helper does not compile");
        out
    })
}

/// What `systemd-analyze syscall-filter` says a group (or a single call)
/// stands for, nested groups expanded.
fn expand(name: &str) -> BTreeSet<String> {
    if !name.starts_with('@') {
        return BTreeSet::from([name.to_owned()]);
    }
    let out = Command::new("systemd-analyze")
        .args(["syscall-filter", "--no-pager", name])
        .output()
        .expect("systemd-analyze is missing: apt-get install systemd");
    assert!(out.status.success(), "unknown group {name}");
    let text = String::from_utf8(out.stdout).unwrap();
    let mut set = BTreeSet::new();
    for line in text.lines().skip(1) {
        let l = line.trim();
        if l.is_empty() {
            break;
        }
        if l.starts_with('#') {
            continue;
        }
        set.extend(expand(l));
    }
    set
}

/// Of `calls`, those the unit's `SystemCallFilter=` lines and
/// `ProtectClock=` refuse, by systemd.exec(5)'s rules: the first list
/// decides the default (an allow list denies everything else); later lists
/// add to or take from it; `ProtectClock=yes` is a filter of its own that
/// refuses `@clock`.
fn unit_denies(calls: &[&str]) -> Vec<String> {
    let unit = std::fs::read_to_string(root().join("systemd/nearcast.service")).unwrap();
    let mut allow_list: Option<bool> = None;
    let mut set = BTreeSet::new();
    let mut protect_clock = false;
    for line in unit.lines().map(str::trim) {
        if let Some(v) = line.strip_prefix("ProtectClock=") {
            protect_clock = matches!(v, "yes" | "true" | "1" | "on");
        }
        let Some(v) = line.strip_prefix("SystemCallFilter=") else {
            continue;
        };
        if v.is_empty() {
            allow_list = None;
            set.clear();
            continue;
        }
        let (deny, names) = v.strip_prefix('~').map_or((false, v), |n| (true, n));
        let names: BTreeSet<String> = names
            .split_whitespace()
            .flat_map(|n| expand(n.split(':').next().unwrap()))
            .collect();
        let allowing = *allow_list.get_or_insert(!deny);
        if allowing != deny {
            set.extend(names);
        } else {
            set.retain(|n| !names.contains(n));
        }
    }
    calls
        .iter()
        .filter(|c| {
            let by_list = match allow_list {
                None => false,
                Some(true) => !set.contains(**c),
                Some(false) => set.contains(**c),
            };
            by_list || (protect_clock && expand("@clock").contains(**c))
        })
        .map(|c| (*c).to_owned())
        .collect()
}

/// The clock calls a probe may make on this architecture (glibc's
/// `adjtimex()` is the `clock_adjtime` system call).
const PROBE_CALLS: &[&str] = &["adjtimex", "clock_adjtime"];

#[test]
fn the_hardened_unit_lets_the_clock_probe_ask_the_kernel() {
    assert_eq!(unit_denies(PROBE_CALLS), Vec::<String>::new());
    // The reading of the unit is right: it refuses what it should.
    let denied = unit_denies(&["settimeofday", "clock_settime", "reboot", "adjtimex"]);
    assert_eq!(denied, ["settimeofday", "clock_settime", "reboot"]);
}

/// A configuration directory with the example's store, `require_sync =
/// true` as shipped, one enrolled customer walking in over Wi-Fi (a
/// recording played from the start), and the API on `port`.
fn setup(dir: &Path, port: u16) -> PathBuf {
    let example = root().join("config");
    for name in ["zones.toml", "campaigns.toml", "customers.csv"] {
        std::fs::copy(example.join(name), dir.join(name)).unwrap();
    }
    let sim =
        "[[source]]\nkind = \"sim\"\nshoppers_per_hour = 120\nseed = 7\nopted_in_share = 0.35\n";
    let mut text = std::fs::read_to_string(example.join("nearcast.toml")).unwrap();
    assert!(text.contains(sim) && text.contains("require_sync = true"));
    text = text
        .replace(sim, "[[source]]\nkind = \"replay\"\nfile = \"walk-in.jsonl\"\n")
        .replace(
            "# The simulator's enrolled shoppers (identities in clear: demo data only).\ncustomers = \"customers.csv\"\n",
            "",
        )
        .replace(
            "/var/lib/nearcast/nearcast.db",
            &dir.join("nearcast.db").display().to_string(),
        );
    text.push_str(&format!("\n[api]\nbind = \"127.0.0.1:{port}\"\n"));
    std::fs::write(dir.join("nearcast.toml"), text).unwrap();
    // Clara (c-1003) joins the store's Wi-Fi and stays a minute.
    let mut rec = String::new();
    for i in 0..60 {
        let kind = if i == 0 { "joined" } else { "seen" };
        rec.push_str(&format!(
            "{{\"t\":{}.0,\"wifi\":\"{kind}\",\"mac\":\"C4:7C:8D:6A:00:02\",\"source\":\"hostapd\"}}\n",
            1_763_712_000 + i
        ));
    }
    std::fs::write(dir.join("walk-in.jsonl"), rec).unwrap();
    let out = nearcast(dir, &["customers", "import", "customers.csv"]);
    assert!(out.status.success(), "{out:?}");
    dir.to_owned()
}

fn nearcast(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_nearcast"))
        .args(args)
        .arg("--config")
        .arg(dir)
        .current_dir(dir)
        .output()
        .unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Daemon {
    child: Child,
    dir: PathBuf,
}

impl Daemon {
    /// `nearcast run` under the helper: `deny` refused with EPERM, and
    /// /run/systemd a fresh tmpfs (`run_systemd`: empty or synchronized).
    fn start(dir: &Path, deny: &[String], run_systemd: &str) -> Daemon {
        let deny = if deny.is_empty() {
            "none".to_owned()
        } else {
            deny.join(",")
        };
        let child = Command::new(helper())
            .arg(format!("--run-systemd={run_systemd}"))
            .arg(deny)
            .arg("--")
            .arg(env!("CARGO_BIN_EXE_nearcast"))
            .args(["run", "--config"])
            .arg(dir)
            .current_dir(dir)
            .stdout(std::fs::File::create(dir.join("stdout.log")).unwrap())
            .stderr(std::fs::File::create(dir.join("stderr.log")).unwrap())
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        Daemon {
            child,
            dir: dir.to_owned(),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default()
    }

    /// Polls the daemon's status file until `want` holds for it.
    fn wait_status(
        &mut self,
        what: &str,
        want: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let path = self.dir.join("nearcast.status.json");
            if let Some(v) = std::fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                && want(&v)
            {
                return v;
            }
            if let Some(s) = self.child.try_wait().unwrap() {
                panic!("the daemon exited ({s}) before {what}:\n{}", self.log());
            }
            assert!(Instant::now() < deadline, "no {what}:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http_get(port: u16, path: &str) -> (u16, serde_json::Value) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let code = text[9..12].parse().unwrap();
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    (code, serde_json::from_str(body).unwrap_or_default())
}

/// The decisions the database holds, by reason (`acted` for those that act).
fn decisions(dir: &Path) -> Vec<String> {
    let out = nearcast(dir, &["stats", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut reasons: Vec<String> = v["suppressed"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    if v["decisions_act"].as_i64().unwrap_or(0) > 0 {
        reasons.push("acted".into());
    }
    reasons
}

#[test]
fn a_probe_the_sandbox_refuses_is_said_to_be_unreadable_not_unsynchronised() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    setup(dir.path(), port);
    // What ProtectClock=yes refuses, and no timesyncd to ask instead.
    let deny: Vec<String> = PROBE_CALLS.iter().map(|c| (*c).to_owned()).collect();
    let mut d = Daemon::start(dir.path(), &deny, "empty");
    let v = d.wait_status("a clock state", |v| v["clock"]["state"].is_string());
    assert_eq!(v["clock"]["state"], "unreadable", "{v}");
    let detail = v["clock"]["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("cannot read clock sync: adjtimex: Operation not permitted"),
        "{detail}"
    );
    let log = d.log();
    assert!(
        log.contains("cannot read clock sync: adjtimex: Operation not permitted"),
        "{log}"
    );
    assert!(!log.contains("not synchronised (NTP)"), "{log}");

    let out = nearcast(dir.path(), &["stats"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines().any(|l| l.starts_with("clock ")
            && l.contains("unreadable: cannot read clock sync: adjtimex: Operation not permitted")),
        "{text}"
    );
    let (code, body) = http_get(port, "/healthz");
    assert_eq!(code, 503, "{body}");
    assert_eq!(body["clock"]["state"], "unreadable", "{body}");
    assert!(
        body["clock"]["detail"]
            .as_str()
            .unwrap()
            .starts_with("cannot read clock sync: "),
        "{body}"
    );
    // Nothing is decided on a clock nobody can vouch for.
    let reasons = decisions(dir.path());
    assert!(reasons.iter().all(|r| r == "clock_unsynced"), "{reasons:?}");
}

#[test]
fn under_protect_clock_the_daemon_decides_once_timesyncd_has_synchronised() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    setup(dir.path(), port);
    let deny: Vec<String> = PROBE_CALLS.iter().map(|c| (*c).to_owned()).collect();
    let mut d = Daemon::start(dir.path(), &deny, "synchronized");
    let v = d.wait_status("a clock state", |v| v["clock"]["state"].is_string());
    assert_eq!(v["clock"]["state"], "trusted", "{v}\n{}", d.log());
    let deadline = Instant::now() + Duration::from_secs(60);
    let reasons = loop {
        let r = decisions(dir.path());
        if r.iter().any(|r| r != "clock_unsynced") || Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    // Whatever the hour (the store may be closed): decided on its merits.
    assert!(
        reasons.iter().any(|r| r != "clock_unsynced"),
        "{reasons:?}\n{}",
        d.log()
    );
    assert!(
        !reasons.contains(&"clock_unsynced".to_owned()),
        "{reasons:?}"
    );
    let (code, body) = http_get(port, "/healthz");
    assert_eq!(body["clock"]["state"], "trusted", "{code} {body}");
}

#[test]
fn under_the_units_own_filter_the_daemon_reads_the_kernel() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    setup(dir.path(), port);
    let mut d = Daemon::start(dir.path(), &unit_denies(PROBE_CALLS), "empty");
    let v = d.wait_status("a clock state", |v| v["clock"]["state"].is_string());
    // What this process reads from the kernel, unfiltered, is what the
    // daemon must report: this machine's kernel may or may not be
    // synchronised, but the daemon can ask.
    let kernel = nearcast::clock::kernel_synchronized().unwrap();
    let want = if kernel { "trusted" } else { "unsynchronised" };
    assert_eq!(v["clock"]["state"], want, "{v}\n{}", d.log());
    if kernel {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !decisions(dir.path()).iter().any(|r| r != "clock_unsynced") {
            assert!(Instant::now() < deadline, "no decision:\n{}", d.log());
            std::thread::sleep(Duration::from_millis(500));
        }
    } else {
        assert!(
            d.log().contains("wall clock not synchronised (NTP)"),
            "{}",
            d.log()
        );
    }
}

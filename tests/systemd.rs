//! The systemd contract: the unit verifies and is hardened (exposure at most
//! 2.0), and the daemon speaks sd_notify: READY=1 once started, WATCHDOG=1
//! from its main loop, RELOADING=1/READY=1 around a SIGHUP reload, and
//! STOPPING=1 before a clean exit 0 on SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn unit() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/nearcast.service")
}

fn systemd_analyze() -> Command {
    // scripts/test installs systemd when it is missing; a machine without it
    // cannot check the unit, and that is a failure, not a skip.
    assert!(
        Path::new("/usr/bin/systemd-analyze").exists()
            || Path::new("/bin/systemd-analyze").exists(),
        "systemd-analyze is missing: apt-get install systemd (scripts/test does this as root)"
    );
    Command::new("systemd-analyze")
}

#[test]
fn the_unit_is_hardened_to_an_exposure_of_at_most_2() {
    let out = systemd_analyze()
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(unit())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("{text}"));
    let score: f64 = line
        .split("nearcast.service:")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(score <= 2.0, "{line}");
}

#[test]
fn the_unit_verifies() {
    let dir = tempfile::tempdir().unwrap();
    // Point the unit at the binary under test; everything else as shipped.
    let text = std::fs::read_to_string(unit())
        .unwrap()
        .replace("/usr/bin/nearcast", env!("CARGO_BIN_EXE_nearcast"));
    let copy = dir.path().join("nearcast.service");
    std::fs::write(&copy, text).unwrap();
    let out = systemd_analyze()
        .args(["verify", "--man=no"])
        .arg(&copy)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let complaints: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("nearcast.service"))
        .collect();
    assert!(complaints.is_empty(), "{complaints:?}");
}

/// Receives sd_notify datagrams until one contains `want` or time runs out.
fn expect(sock: &UnixDatagram, want: &str, seen: &mut Vec<String>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            let hit = msg.lines().any(|l| l == want);
            seen.push(msg);
            if hit {
                return;
            }
        }
    }
    panic!("no {want} from the daemon; got {seen:?}");
}

#[test]
fn the_daemon_speaks_sd_notify_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    for name in ["zones.toml", "campaigns.toml", "customers.csv"] {
        std::fs::copy(example.join(name), dir.path().join(name)).unwrap();
    }
    let daemon = std::fs::read_to_string(example.join("nearcast.toml"))
        .unwrap()
        .replace(
            "/var/lib/nearcast/nearcast.db",
            &dir.path().join("state/nearcast.db").display().to_string(),
        )
        .replace("require_sync = true", "require_sync = false");
    std::fs::write(dir.path().join("nearcast.toml"), daemon).unwrap();

    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_nearcast"))
        .args(["run", "--config"])
        .arg(dir.path())
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "2000000")
        .env("RUST_LOG", "warn")
        .stderr(std::fs::File::create(dir.path().join("stderr.log")).unwrap())
        .spawn()
        .unwrap();
    let pid = child.id().to_string();
    let mut seen = Vec::new();
    expect(&sock, "READY=1", &mut seen);
    expect(&sock, "WATCHDOG=1", &mut seen);
    // A reload with a broken file is refused, the daemon carries on.
    std::fs::write(dir.path().join("zones.toml"), "store = \n").unwrap();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    expect(&sock, "RELOADING=1", &mut seen);
    expect(&sock, "READY=1", &mut seen);
    expect(&sock, "WATCHDOG=1", &mut seen);
    assert!(
        child.try_wait().unwrap().is_none(),
        "the daemon died on a bad reload"
    );
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    expect(&sock, "STOPPING=1", &mut seen);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "no exit within the stop timeout");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0));
    let log = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap();
    assert!(
        log.contains("configuration refused; keeping the last good one"),
        "{log}"
    );
    assert!(log.contains("zones.toml:1:9: "), "{log}");
}

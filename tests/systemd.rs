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

/// `key=value` lines of the unit's `[Service]` section.
fn unit_settings(key: &str) -> Vec<String> {
    std::fs::read_to_string(unit())
        .unwrap()
        .lines()
        .filter_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
        .map(str::to_owned)
        .collect()
}

/// The credentials the unit loads: id → source.
fn unit_credentials() -> std::collections::BTreeMap<String, String> {
    unit_settings("LoadCredential")
        .iter()
        .map(|v| match v.split_once(':') {
            Some((id, src)) => (id.to_owned(), src.to_owned()),
            None => (v.clone(), v.clone()),
        })
        .collect()
}

/// Every secret file the example `nearcast.toml` names by a relative name
/// (a systemd credential), its commented examples included: those are what
/// a retailer uncomments.
fn example_credentials() -> std::collections::BTreeSet<String> {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/nearcast.toml"))
            .unwrap();
    text.lines()
        .filter_map(|l| {
            let l = l.trim_start_matches(['#', ' ']);
            let (key, value) = l.split_once('=')?;
            let key = key.trim();
            if !key.ends_with("_file") {
                return None;
            }
            let value = value.trim().strip_prefix('"')?.split('"').next()?;
            (!value.starts_with('/')).then(|| value.to_owned())
        })
        .collect()
}

#[test]
fn every_secret_the_example_names_is_a_credential_the_unit_loads() {
    let loaded = unit_credentials();
    let named = example_credentials();
    // The reading of the example is right: these are in it.
    for id in [
        "whatsapp-token",
        "api-token",
        "whatsapp-app-secret",
        "vonage-signature-secret",
    ] {
        assert!(named.contains(id), "{named:?}");
    }
    let missing: Vec<_> = named.iter().filter(|n| !loaded.contains_key(*n)).collect();
    assert!(
        missing.is_empty(),
        "named in config/nearcast.toml, not loaded by the unit: {missing:?}"
    );
    let unused: Vec<_> = loaded.keys().filter(|k| !named.contains(*k)).collect();
    assert!(
        unused.is_empty(),
        "loaded by the unit, named nowhere in the example: {unused:?}"
    );
}

#[test]
fn a_missing_credential_file_does_not_fail_the_unit() {
    // systemd fails the unit when an absolute LoadCredential= source is
    // missing, and skips a credential store name (/etc/credstore/…) that
    // is: a box that uses one provider must not need the others' files.
    for (id, src) in unit_credentials() {
        assert!(!src.starts_with('/'), "{id}: {src} is an absolute path");
        assert_eq!(
            src,
            format!("nearcast.{id}"),
            "credstore names carry the nearcast. prefix"
        );
    }
}

#[test]
fn the_log_filter_is_the_configs_and_descriptors_suffice() {
    let env = unit_settings("Environment");
    assert!(
        env.iter().all(|e| !e.contains("RUST_LOG")),
        "RUST_LOG in the unit overrides [log] filter: {env:?}"
    );
    let nofile: Vec<u64> = unit_settings("LimitNOFILE")
        .iter()
        .map(|v| v.parse().unwrap())
        .collect();
    assert_eq!(nofile.len(), 1, "the unit sets LimitNOFILE once");
    // The API alone may hold MAX_CONNECTIONS; SQLite, providers and
    // sources need the rest.
    assert!(
        nofile[0] >= 4 * nearcast::api::MAX_CONNECTIONS as u64,
        "{nofile:?}"
    );
}

#[test]
fn check_config_names_a_missing_credential_without_refusing() {
    let dir = tempfile::tempdir().unwrap();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    for name in ["zones.toml", "campaigns.toml", "customers.csv"] {
        std::fs::copy(example.join(name), dir.path().join(name)).unwrap();
    }
    let text = std::fs::read_to_string(example.join("nearcast.toml"))
        .unwrap()
        .replace(
            "[channels.whatsapp]\nadapter = \"console\"\n",
            "[channels.whatsapp]\nadapter = \"whatsapp\"\nphone_number_id = \"106540352242922\"\ntoken_file = \"whatsapp-token\"\n",
        );
    assert!(text.contains("token_file = \"whatsapp-token\"\n"));
    std::fs::write(dir.path().join("nearcast.toml"), text).unwrap();
    let creds = dir.path().join("credentials");
    std::fs::create_dir(&creds).unwrap();
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_nearcast"))
            .args(["check-config", "--config"])
            .arg(dir.path())
            .env("CREDENTIALS_DIRECTORY", &creds)
            .output()
            .unwrap()
    };
    let out = run();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("warning: channel whatsapp: token_file ")
            && err.contains("whatsapp-token: No such file or directory")
            && err.contains("put it in /etc/credstore/nearcast.whatsapp-token"),
        "{err}"
    );
    std::fs::write(creds.join("whatsapp-token"), "t0ken\n").unwrap();
    let out = run();
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
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

//! A stand-in BlueZ for tests: a private `dbus-daemon` acting as the system
//! bus and python-dbusmock's `bluez5` template owning `org.bluez` on it
//! (see `shared/testing/bluez-dbus.md`). The test drives the mock through
//! its own D-Bus connection; nearcast runs as a child process pointed at
//! the bus with `DBUS_SYSTEM_BUS_ADDRESS`, so the real btleplug/BlueZ code
//! path runs, and each test has its own bus.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dbus::arg::{Append, Arg, Variant};
use dbus::blocking::Connection;
use nearcast::core::advert::{Frame, Section};

pub const IBEACON_UUID: &str = "E2C56DB5DFFB48D2B060D0F5A71096E0";
pub const EDDYSTONE: &str = "0000feaa-0000-1000-8000-00805f9b34fb";

/// The packages these tests need, said once, precisely.
fn missing(what: &str) -> ! {
    panic!(
        "{what} is missing: the BLE tests need Debian's `dbus-daemon` and `python3-dbusmock` \
         (apt-get install -y --no-install-recommends dbus-daemon python3-dbusmock); \
         scripts/test installs them when run as root"
    )
}

/// The private bus and the mock BlueZ on it; both killed on drop.
pub struct StandIn {
    dir: tempfile::TempDir,
    pub address: String,
    daemon: Child,
    mock: Option<Child>,
    conn: Option<Connection>,
}

impl StandIn {
    /// Starts the bus and BlueZ with no adapter.
    pub fn start() -> StandIn {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("system_bus_socket");
        let conf = dir.path().join("bus.conf");
        std::fs::write(
            &conf,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
  <limit name="max_incoming_bytes">1000000000</limit>
  <limit name="max_outgoing_bytes">1000000000</limit>
  <limit name="max_message_size">100000000</limit>
  <limit name="max_replies_per_connection">100000</limit>
  <limit name="max_match_rules_per_connection">100000</limit>
</busconfig>
"#,
                socket.display()
            ),
        )
        .unwrap();
        let daemon = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", conf.display()))
            .arg("--nofork")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|_| missing("dbus-daemon"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            assert!(Instant::now() < deadline, "dbus-daemon did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut s = StandIn {
            address: format!("unix:path={}", socket.display()),
            dir,
            daemon,
            mock: None,
            conn: None,
        };
        s.start_bluez();
        s
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn conn(&mut self) -> &Connection {
        if self.conn.is_none() {
            let mut ch = dbus::channel::Channel::open_private(&self.address).unwrap();
            ch.register().unwrap();
            self.conn = Some(Connection::from(ch));
        }
        self.conn.as_ref().unwrap()
    }

    /// The unique name owning `org.bluez`, if any.
    pub fn bluez_owner(&mut self) -> Option<String> {
        let p = self.conn().with_proxy(
            "org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            Duration::from_secs(2),
        );
        p.method_call("org.freedesktop.DBus", "GetNameOwner", ("org.bluez",))
            .ok()
            .map(|(o,): (String,)| o)
    }

    /// Starts the mock BlueZ and waits until it owns `org.bluez`.
    pub fn start_bluez(&mut self) {
        let python = if Path::new("/usr/bin/python3").exists() {
            PathBuf::from("/usr/bin/python3")
        } else {
            PathBuf::from("python3")
        };
        let log = std::fs::File::create(self.dir.path().join("dbusmock.log")).unwrap();
        let mock = Command::new(python)
            .args(["-m", "dbusmock", "--system", "--template", "bluez5"])
            .env("DBUS_SYSTEM_BUS_ADDRESS", &self.address)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|_| missing("python3"));
        self.mock = Some(mock);
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.bluez_owner().is_none() {
            if let Some(m) = self.mock.as_mut()
                && let Ok(Some(_)) = m.try_wait()
            {
                let log = std::fs::read_to_string(self.dir.path().join("dbusmock.log"))
                    .unwrap_or_default();
                if log.contains("No module named") {
                    missing("python3-dbusmock");
                }
                panic!("the mock BlueZ exited: {log}");
            }
            assert!(Instant::now() < deadline, "the mock BlueZ did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the mock BlueZ (as a crash would) and waits until its name is gone.
    pub fn kill_bluez(&mut self) {
        if let Some(mut m) = self.mock.take() {
            let _ = m.kill();
            let _ = m.wait();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.bluez_owner().is_some() {
            assert!(Instant::now() < deadline, "org.bluez still owned");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn mock_call<A: dbus::arg::AppendAll, R: dbus::arg::ReadAll>(
        &mut self,
        method: &str,
        args: A,
    ) -> R {
        let p = self
            .conn()
            .with_proxy("org.bluez", "/", Duration::from_secs(5));
        p.method_call("org.bluez.Mock", method, args)
            .unwrap_or_else(|e| panic!("org.bluez.Mock.{method}: {e}"))
    }

    pub fn add_adapter(&mut self, name: &str) {
        let _: (String,) = self.mock_call("AddAdapter", (name, "nearcast-test"));
    }

    pub fn remove_adapter(&mut self, name: &str) {
        let (): () = self.mock_call("RemoveAdapter", (name,));
    }

    /// Adds a device; returns its object path.
    pub fn add_device(&mut self, adapter: &str, addr: &str) -> String {
        let (path,): (String,) = self.mock_call("AddDevice", (adapter, addr, "phone"));
        path
    }

    /// Sets a property through `org.freedesktop.DBus.Properties.Set`: the
    /// mock stores it and emits `PropertiesChanged`, as BlueZ does.
    pub fn set<T: Arg + Append>(&mut self, path: &str, iface: &str, prop: &str, value: T) {
        let p = self
            .conn()
            .with_proxy("org.bluez", path.to_owned(), Duration::from_secs(5));
        let (): () = p
            .method_call(
                "org.freedesktop.DBus.Properties",
                "Set",
                (iface, prop, Variant(value)),
            )
            .unwrap_or_else(|e| panic!("Set {iface}.{prop} on {path}: {e}"));
    }

    pub fn get_bool(&mut self, path: &str, iface: &str, prop: &str) -> Option<bool> {
        use dbus::blocking::stdintf::org_freedesktop_dbus::Properties;
        let p = self
            .conn()
            .with_proxy("org.bluez", path.to_owned(), Duration::from_secs(5));
        p.get(iface, prop).ok()
    }

    pub fn rssi(&mut self, dev: &str, rssi: i16) {
        self.set(dev, "org.bluez.Device1", "RSSI", rssi);
    }

    /// Advertises an iBeacon frame (company 0x004C).
    pub fn ibeacon(&mut self, dev: &str, major: u16, minor: u16) {
        let mut uuid = [0u8; 16];
        hex::decode_to_slice(IBEACON_UUID, &mut uuid).unwrap();
        let frame = Frame::IBeacon {
            uuid,
            major,
            minor,
            measured_power: -59,
        };
        let Some(Section::Manufacturer(m)) = frame.encode() else {
            panic!("an iBeacon is manufacturer data")
        };
        let map: HashMap<u16, Variant<Vec<u8>>> =
            HashMap::from([(m.company, Variant(m.data.to_vec()))]);
        self.set(dev, "org.bluez.Device1", "ManufacturerData", map);
    }

    /// Advertises an Eddystone-UID frame.
    pub fn eddystone_uid(&mut self, dev: &str, namespace: &str, instance: &str) {
        let (mut ns, mut inst) = ([0u8; 10], [0u8; 6]);
        hex::decode_to_slice(namespace, &mut ns).unwrap();
        hex::decode_to_slice(instance, &mut inst).unwrap();
        // Ranging data -18 dBm at 0 m, i.e. -59 at 1 m.
        let frame = Frame::EddystoneUid {
            ranging: -18,
            namespace: ns,
            instance: inst,
        };
        let Some(Section::Service(d)) = frame.encode() else {
            panic!("an Eddystone frame is service data")
        };
        let data = d.data.to_vec();
        let map: HashMap<String, Variant<Vec<u8>>> =
            HashMap::from([(EDDYSTONE.to_owned(), Variant(data))]);
        self.set(dev, "org.bluez.Device1", "ServiceData", map);
        self.set(
            dev,
            "org.bluez.Device1",
            "UUIDs",
            vec![EDDYSTONE.to_owned()],
        );
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        if let Some(mut m) = self.mock.take() {
            let _ = m.kill();
            let _ = m.wait();
        }
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}

/// A running `nearcast` child process, killed on drop; its stderr (the
/// log) collected in a file.
pub struct Nearcast {
    child: Option<Child>,
    pub log: PathBuf,
}

impl Nearcast {
    pub fn spawn(bus: &StandIn, args: &[&str], log_name: &str) -> Nearcast {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_nearcast"));
        cmd.args(args).env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address);
        Nearcast::start(cmd, bus.dir().join(log_name))
    }

    /// Runs `cmd` (nearcast, or a wrapper such as `ip netns exec`) logging
    /// to `log`.
    pub fn start(mut cmd: Command, log: PathBuf) -> Nearcast {
        let child = cmd
            // The live sources' retries (and BLE's scan restarts) at debug:
            // tests wait for them instead of sleeping.
            .env(
                "RUST_LOG",
                "warn,nearcast=info,nearcast::source::ble=debug,nearcast::source::wifi=debug",
            )
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Nearcast {
            child: Some(child),
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The log so far, without colours or quotes (`reason="bluez gone"`
    /// reads `reason=bluez gone`).
    pub fn log(&self) -> String {
        strip_ansi(&std::fs::read_to_string(&self.log).unwrap_or_default()).replace('"', "")
    }

    /// How many log lines contain every one of `needles`.
    pub fn count_of(&self, needles: &[&str]) -> usize {
        self.log()
            .lines()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .count()
    }

    /// Waits until the log has a line containing every one of `needles`.
    pub fn wait_for(&self, needles: &[&str], timeout: Duration) {
        self.wait_for_count(needles, 1, timeout);
    }

    /// Waits until the log has `n` lines containing every one of `needles`.
    pub fn wait_for_count(&self, needles: &[&str], n: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if self.count_of(needles) >= n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "not {n} log lines with {needles:?} within {timeout:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops it with SIGTERM (as systemd does) and waits; its exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "nearcast did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Nearcast {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `customer=… zone=… event=…` of every presence log line, in order.
pub fn presence(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains(" presence"))
        .filter_map(|l| {
            let field = |k: &str| {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix(k))
                    .map(str::to_owned)
            };
            Some(format!(
                "{} {} {}",
                field("customer=")?,
                field("event=")?,
                field("zone=")?
            ))
        })
        .collect()
}

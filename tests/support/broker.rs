//! A real Mosquitto for the MQTT tests: its own process on a free loopback
//! port, with a generated configuration as `config/mosquitto.conf` asks for
//! (no anonymous access, passwords through `mosquitto_passwd`, an ACL that
//! lets each node publish only its own topics). A test without Mosquitto
//! fails: `scripts/test` installs it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, LastWill, MqttOptions, Packet, QoS};

/// The box's account and every node's: (user, password). A node's user
/// name is its node id, as the ACL's `%u` patterns expect.
pub const ACCOUNTS: &[(&str, &str)] = &[
    ("nearcast", "box-secret-1"),
    ("door", "door-pw"),
    ("till", "till-pw"),
    ("kitchen", "kitchen-pw"),
    ("flood", "flood-pw"),
    ("aisle", "aisle-pw"),
    ("garage", "garage-pw"),
    ("basement", "basement-pw"),
    ("laundry", "laundry-pw"),
    ("upstairs_hallway", "upstairs_hallway-pw"),
    ("bathroom", "bathroom-pw"),
    ("office", "office-pw"),
    ("office_alt", "office_alt-pw"),
    ("master", "master-pw"),
    ("dining", "dining-pw"),
    ("family", "family-pw"),
    ("intruder", "intruder-pw"),
];

/// The password of `user` in [`ACCOUNTS`].
pub fn password(user: &str) -> &'static str {
    ACCOUNTS
        .iter()
        .find(|(u, _)| *u == user)
        .map(|(_, p)| *p)
        .unwrap_or_else(|| panic!("no test account {user}"))
}

/// A running Mosquitto.
pub struct Broker {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Broker {
    /// Starts a broker on a free loopback port.
    pub fn start() -> Broker {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let passwd = dir.path().join("passwd");
        for (i, (user, pw)) in ACCOUNTS.iter().enumerate() {
            let mut c = Command::new("mosquitto_passwd");
            c.arg("-b");
            if i == 0 {
                c.arg("-c");
            }
            let out = c
                .arg(&passwd)
                .arg(user)
                .arg(pw)
                .output()
                .expect("mosquitto_passwd is missing: scripts/test installs mosquitto");
            assert!(out.status.success(), "{out:?}");
        }
        // The shipped ACL, with the test's user for the box.
        let acl = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/mosquitto.acl"),
        )
        .unwrap();
        std::fs::write(dir.path().join("acl"), acl).unwrap();
        let mut b = Broker {
            port,
            dir,
            child: None,
        };
        b.restart();
        b
    }

    /// Adds accounts (user, password) beyond [`ACCOUNTS`] and restarts the
    /// broker so it reads them.
    pub fn add_accounts(&mut self, accounts: &[(String, String)]) {
        let passwd = self.dir.path().join("passwd");
        for (user, pw) in accounts {
            let out = Command::new("mosquitto_passwd")
                .arg("-b")
                .arg(&passwd)
                .arg(user)
                .arg(pw)
                .output()
                .expect("mosquitto_passwd is missing: scripts/test installs mosquitto");
            assert!(out.status.success(), "{out:?}");
        }
        self.restart();
    }

    /// The URL nearcast connects to.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    fn conf(&self) -> PathBuf {
        let conf = self.dir.path().join("mosquitto.conf");
        let shipped = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/mosquitto.conf"),
        )
        .unwrap();
        // The shipped file, on this test's port and files.
        let mut text = String::new();
        for line in shipped.lines() {
            let line = match line.split_whitespace().next() {
                Some("listener") => format!("listener {} 127.0.0.1", self.port),
                Some("password_file") => {
                    format!("password_file {}", self.dir.path().join("passwd").display())
                }
                Some("acl_file") => format!("acl_file {}", self.dir.path().join("acl").display()),
                Some(
                    "cafile"
                    | "certfile"
                    | "keyfile"
                    | "persistence_location"
                    | "log_dest"
                    | "pid_file"
                    | "persistence"
                    | "user",
                ) => continue,
                _ => line.to_owned(),
            };
            text.push_str(&line);
            text.push('\n');
        }
        text.push_str("persistence false\nlog_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\nlog_type information\n");
        std::fs::write(&conf, text).unwrap();
        conf
    }

    /// (Re)starts the broker on the same port, returning once it listens
    /// (it says so on its log).
    pub fn restart(&mut self) {
        self.stop();
        // Debian puts it in /usr/sbin, which a user's PATH may lack.
        let exe = if std::path::Path::new("/usr/sbin/mosquitto").exists() {
            "/usr/sbin/mosquitto"
        } else {
            "mosquitto"
        };
        let mut child = Command::new(exe)
            .arg("-c")
            .arg(self.conf())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("mosquitto is missing: scripts/test installs it (apt-get install mosquitto)");
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let mut seen = Vec::new();
        loop {
            match lines.next() {
                Some(Ok(l)) => {
                    let running = l.contains("running");
                    seen.push(l);
                    if running {
                        break;
                    }
                }
                _ => panic!("mosquitto did not start: {seen:#?}"),
            }
        }
        // Keep draining its log so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        self.child = Some(child);
    }

    /// Stops the broker (SIGKILL: the broker "going away").
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A test's MQTT client (an ESPresense node or a satellite stand-in) as
/// `user`, its event loop driven on a task of its own; resolves once the
/// broker accepted it.
pub async fn client(
    broker: &Broker,
    user: &str,
    will: Option<LastWill>,
) -> (AsyncClient, tokio::task::JoinHandle<()>) {
    client_as(broker, user, password(user), will).await.unwrap()
}

/// As [`client`] with any password: `Err` with the broker's refusal.
pub async fn client_as(
    broker: &Broker,
    user: &str,
    pw: &str,
    will: Option<LastWill>,
) -> Result<(AsyncClient, tokio::task::JoinHandle<()>), rumqttc::ConnectionError> {
    let mut o = MqttOptions::new(
        format!("test-{user}-{}", fastrand::u32(..)),
        "127.0.0.1",
        broker.port,
    );
    o.set_credentials(user, pw);
    o.set_keep_alive(Duration::from_secs(30));
    o.set_max_packet_size(4 << 20, 4 << 20);
    if let Some(w) = will {
        o.set_last_will(w);
    }
    let (c, mut ev): (AsyncClient, EventLoop) = AsyncClient::new(o, 20_000);
    loop {
        match ev.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => break,
            Ok(_) => {}
            Err(e) => return Err(e),
        }
    }
    let task = tokio::spawn(async move { while ev.poll().await.is_ok() {} });
    Ok((c, task))
}

/// Publishes and waits until the client has written it to the broker
/// (QoS 1 so the broker acknowledges; order per client is kept).
pub async fn publish(c: &AsyncClient, topic: &str, payload: impl Into<Vec<u8>>) {
    c.publish(topic, QoS::AtMostOnce, false, payload)
        .await
        .unwrap();
}

//! Remote scanners through the store's MQTT broker: ESPresense nodes
//! ([`espresense`]) and other boxes running `nearcast scanner`
//! ([`satellite`]). The main box subscribes and turns what they report into
//! the same `Sighting`s a local adapter gives, placed at the scanner
//! `zones.toml` says the node is; a satellite publishes its adapter's
//! sightings ([`publish`]).
//!
//! Owns the connection ([`Connection`]: broker, TLS, credentials by
//! reference, reconnection with backoff), each node's health ([`Nodes`]:
//! online, offline by its last will, refused for its clock, and what was
//! dropped why), and the per-message work ([`Dispatch`]): bounded payloads,
//! a rate per node, unknown nodes counted and ignored. Decides nothing about
//! devices: a report whose id can belong to no customer is dropped here,
//! everything else goes to identity lookup like a local sighting. Never
//! logs a device id or address; node names (staff-given) may be logged.

pub mod espresense;
pub mod satellite;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, LastWill, MqttOptions,
    Packet, QoS, TlsConfiguration, Transport,
};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::Feed;
use super::health::{Backoff, Health};
use crate::clock::Clock;
use crate::core::types::{Observation, ScannerIdx, Timestamp, millis};
use crate::core::zones::Layout;
use crate::credentials::{Env, SecretRef, load_secret};

/// Largest ESPresense report read, bytes (a real one is about 250).
pub const MAX_REPORT: usize = 4 * 1024;
/// Largest satellite batch read, bytes (a satellite sends at most
/// [`satellite::Batch::MAX_BYTES`]).
pub const MAX_BATCH: usize = 256 * 1024;
/// Largest MQTT packet the client accepts at all. Anything between the
/// limits above and this is counted and dropped; beyond it the client
/// must drop the connection (the broker's `max_packet_size` should stop
/// such packets first: see `config/mosquitto.conf`).
pub const MAX_PACKET: usize = 1024 * 1024;

/// How to reach the broker and who to be there.
#[derive(Clone, Debug, PartialEq)]
pub struct Connection {
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// TLS (`mqtts://`), with the CA to trust.
    pub tls: Option<Tls>,
    /// MQTT client id, one per box.
    pub client_id: String,
    /// User name, if the broker wants one.
    pub username: Option<String>,
    /// Password by reference (`password_env`, `password_file`), read at
    /// every connection attempt.
    pub password: Option<SecretRef>,
    /// MQTT keep-alive: a broker that stays silent this long (and a half)
    /// is taken as gone.
    pub keep_alive: Duration,
    /// Shortest wait before reconnecting.
    pub retry_min: Duration,
    /// Longest wait before reconnecting.
    pub retry_max: Duration,
}

/// TLS to the broker (rustls).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tls {
    /// PEM file with the CA certificate(s) to trust; the public web's roots
    /// when absent.
    pub ca_file: Option<PathBuf>,
}

impl Connection {
    /// A plain connection to `host:port` with defaults.
    #[must_use]
    pub fn new(host: &str, port: u16, client_id: &str) -> Connection {
        Connection {
            host: host.to_owned(),
            port,
            tls: None,
            client_id: client_id.to_owned(),
            username: None,
            password: None,
            keep_alive: Duration::from_secs(30),
            retry_min: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
        }
    }

    /// Parses `mqtt://host[:port]` or `mqtts://host[:port]` (ports 1883 and
    /// 8883 by default).
    ///
    /// # Errors
    /// What is wrong with the URL, in words for a config error.
    pub fn from_url(url: &str, client_id: &str) -> Result<Connection, String> {
        let u = url::Url::parse(url).map_err(|e| format!("not a URL ({e})"))?;
        let (tls, default_port) = match u.scheme() {
            "mqtt" | "tcp" => (None, 1883),
            "mqtts" | "ssl" => (Some(Tls { ca_file: None }), 8883),
            other => return Err(format!("scheme `{other}` is not mqtt:// or mqtts://")),
        };
        let host = match u.host() {
            Some(url::Host::Ipv6(a)) => a.to_string(),
            Some(h) => h.to_string(),
            None => return Err("the URL has no host".into()),
        };
        if !u.username().is_empty() || u.password().is_some() {
            return Err("credentials do not belong in the URL".into());
        }
        if !matches!(u.path(), "" | "/") || u.query().is_some() {
            return Err("the URL has a path or query; give only host and port".into());
        }
        let mut c = Connection::new(&host, u.port().unwrap_or(default_port), client_id);
        c.tls = tls;
        Ok(c)
    }

    /// The client's options for one connection attempt: credentials loaded
    /// now (a rotated password is picked up at the next attempt), the CA
    /// read now.
    ///
    /// # Errors
    /// A credential or the CA file that cannot be read, in words (never a
    /// value).
    pub fn options(&self, env: &dyn Env) -> Result<MqttOptions, String> {
        let mut o = MqttOptions::new(self.client_id.clone(), self.host.clone(), self.port);
        o.set_keep_alive(self.keep_alive.max(Duration::from_secs(5)));
        o.set_clean_session(true);
        o.set_max_packet_size(MAX_PACKET, MAX_PACKET);
        if let Some(user) = &self.username {
            let password = match &self.password {
                Some(r) => load_secret(r, env)?.expose().to_owned(),
                None => String::new(),
            };
            o.set_credentials(user.clone(), password);
        }
        if let Some(tls) = &self.tls {
            o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
                Arc::new(client_config(tls)?),
            )));
        }
        Ok(o)
    }
}

/// A rustls client configuration (ring, TLS 1.2 and 1.3) trusting `tls`'s CA.
///
/// # Errors
/// The CA file cannot be read or holds no certificate.
pub fn client_config(tls: &Tls) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    match &tls.ca_file {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("ca_file {}: {e}", path.display()))?;
            for cert in certs {
                let cert = cert.map_err(|e| format!("ca_file {}: {e}", path.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("ca_file {}: {e}", path.display()))?;
            }
            if roots.is_empty() {
                return Err(format!(
                    "ca_file {} holds no PEM certificate",
                    path.display()
                ));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())
        .map(|b| b.with_root_certificates(roots).with_no_client_auth())
}

/// What kind of remote scanner a `zones.toml` scanner is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeKind {
    /// An ESPresense node (`source = "espresense"`).
    Espresense,
    /// A box running `nearcast scanner` (`source = "nearcast"`).
    Nearcast,
}

impl NodeKind {
    /// The name `zones.toml` uses.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            NodeKind::Espresense => "espresense",
            NodeKind::Nearcast => "nearcast",
        }
    }
}

/// A scanner of the floor plan that is a remote node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteScanner {
    /// ESPresense or satellite.
    pub kind: NodeKind,
    /// The node's id in its topics (ESPresense's room id, a satellite's
    /// `--id`).
    pub node: String,
    /// The scanner it is.
    pub scanner: ScannerIdx,
}

/// The main box's MQTT source (`[mqtt]` in `nearcast.toml`, with the
/// remote scanners of `zones.toml`).
#[derive(Clone, Debug, PartialEq)]
pub struct MqttSettings {
    /// The broker and credentials.
    pub connection: Connection,
    /// The store's id: satellites publish under `nearcast/<store_id>/`.
    pub store_id: String,
    /// The remote scanners.
    pub nodes: Vec<RemoteScanner>,
    /// Sightings per second one node may deliver (a burst of as many is
    /// allowed); beyond that they are dropped and counted.
    pub node_rate: u32,
    /// A satellite whose clock is off by more than this is refused.
    pub max_clock_offset: Duration,
}

impl MqttSettings {
    /// Default [`MqttSettings::node_rate`].
    pub const NODE_RATE: u32 = 1000;
    /// Default [`MqttSettings::max_clock_offset`].
    pub const MAX_CLOCK_OFFSET: Duration = Duration::from_secs(10);
}

/// What a node said of itself last.
const UNKNOWN: u8 = 0;
const ONLINE: u8 = 1;
const OFFLINE: u8 = 2;

/// One remote scanner's health and counts (counts only, never a device).
#[derive(Debug)]
pub struct NodeHealth {
    /// Which node.
    pub remote: RemoteScanner,
    /// Its scanner's name in `zones.toml`.
    pub scanner_name: String,
    said: AtomicU8,
    refused: AtomicBool,
    clock_offset_ms: AtomicI64,
    /// Sightings delivered.
    pub sightings: AtomicU64,
    /// Messages or lines that could not be read.
    pub malformed: AtomicU64,
    /// Payloads over the size limit.
    pub oversized: AtomicU64,
    /// Sightings over the node's rate.
    pub rate_limited: AtomicU64,
    /// Reports whose id can belong to no customer (`irk:`, aliases without
    /// an address).
    pub unusable: AtomicU64,
    /// Sightings dropped because the satellite's clock is off too far.
    pub clock_refused: AtomicU64,
}

/// A copy of a node's health for the status file and `nearcast stats`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSnapshot {
    /// Scanner name in `zones.toml`.
    pub scanner: String,
    /// ESPresense or satellite.
    pub kind: NodeKind,
    /// Node id in its topics.
    pub node: String,
    /// `online`, `offline` (its last will), `refused` (its clock),
    /// `unreachable` (the broker is), or `unknown` (has said nothing yet).
    pub state: String,
    /// Sightings delivered.
    pub sightings: u64,
    /// Unreadable messages or lines.
    pub malformed: u64,
    /// Oversized payloads.
    pub oversized: u64,
    /// Sightings over the node's rate.
    pub rate_limited: u64,
    /// Reports no customer can have.
    pub unusable: u64,
    /// Sightings refused for the satellite's clock.
    pub clock_refused: u64,
    /// A satellite's measured clock offset, ms to add to its times.
    pub clock_offset_ms: Option<i64>,
}

/// Every remote scanner's health, shared by the source (which writes it)
/// and the daemon (which marks scanners down and writes the status file).
#[derive(Debug)]
pub struct Nodes {
    /// One per remote scanner, in settings order.
    pub nodes: Vec<NodeHealth>,
    broker_down: AtomicBool,
    /// Messages from nodes `zones.toml` does not have.
    pub unknown_node: AtomicU64,
    /// Bumped whenever a node's state or the connection changes (and at
    /// every failed connection attempt, and each message of an unknown node): the daemon's tick reads the state
    /// anyway; tests wait on this instead of the clock.
    changes: tokio::sync::watch::Sender<u64>,
}

impl Nodes {
    /// Health records for `settings`' nodes, named after `layout`.
    #[must_use]
    pub fn new(settings: &MqttSettings, layout: &Layout) -> Nodes {
        Nodes {
            nodes: settings
                .nodes
                .iter()
                .map(|r| NodeHealth {
                    remote: r.clone(),
                    scanner_name: layout
                        .scanners
                        .get(usize::from(r.scanner.0))
                        .map_or_else(|| r.node.clone(), |s| s.id.to_string()),
                    said: AtomicU8::new(UNKNOWN),
                    refused: AtomicBool::new(false),
                    clock_offset_ms: AtomicI64::new(i64::MIN),
                    sightings: AtomicU64::new(0),
                    malformed: AtomicU64::new(0),
                    oversized: AtomicU64::new(0),
                    rate_limited: AtomicU64::new(0),
                    unusable: AtomicU64::new(0),
                    clock_refused: AtomicU64::new(0),
                })
                .collect(),
            broker_down: AtomicBool::new(true),
            unknown_node: AtomicU64::new(0),
            changes: tokio::sync::watch::Sender::new(0),
        }
    }

    /// A receiver that sees every change of state (see [`Nodes::is_down`]).
    #[must_use]
    pub fn watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn changed(&self) {
        self.changes.send_modify(|g| *g = g.wrapping_add(1));
    }

    /// True when the scanner of node `i` hears nothing nearcast can use:
    /// the broker is unreachable, the node's last will said `offline`, or
    /// its clock is refused. Presence then holds what depends on it.
    #[must_use]
    pub fn is_down(&self, i: usize) -> bool {
        let Some(n) = self.nodes.get(i) else {
            return true;
        };
        self.broker_down.load(Ordering::Relaxed)
            || n.said.load(Ordering::Relaxed) == OFFLINE
            || n.refused.load(Ordering::Relaxed)
    }

    /// Copies for printing.
    #[must_use]
    pub fn snapshot(&self) -> Vec<NodeSnapshot> {
        let broker_down = self.broker_down.load(Ordering::Relaxed);
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        self.nodes
            .iter()
            .map(|n| {
                let state = if broker_down {
                    "unreachable"
                } else if n.refused.load(Ordering::Relaxed) {
                    "refused"
                } else {
                    match n.said.load(Ordering::Relaxed) {
                        ONLINE => "online",
                        OFFLINE => "offline",
                        _ => "unknown",
                    }
                };
                let offset = n.clock_offset_ms.load(Ordering::Relaxed);
                NodeSnapshot {
                    scanner: n.scanner_name.clone(),
                    kind: n.remote.kind,
                    node: n.remote.node.clone(),
                    state: state.to_owned(),
                    sightings: get(&n.sightings),
                    malformed: get(&n.malformed),
                    oversized: get(&n.oversized),
                    rate_limited: get(&n.rate_limited),
                    unusable: get(&n.unusable),
                    clock_refused: get(&n.clock_refused),
                    clock_offset_ms: (offset != i64::MIN).then_some(offset),
                }
            })
            .collect()
    }

    fn set_broker_down(&self, down: bool) {
        self.broker_down.store(down, Ordering::Relaxed);
        self.changed();
    }
}

/// A token bucket: `rate` per second, a burst of `rate`.
#[derive(Clone, Debug)]
struct Bucket {
    tokens: f64,
    last: Duration,
}

impl Bucket {
    fn take(&mut self, rate: u32, now: Duration) -> bool {
        let rate = f64::from(rate.max(1));
        let elapsed = now.saturating_sub(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * rate).min(rate);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// What becomes of each message: the main box's per-message work, with
/// the time passed in (wall time to stamp sightings, monotonic time for
/// the rates).
pub struct Dispatch {
    store_id: String,
    index: HashMap<(NodeKind, String), usize>,
    nodes: Arc<Nodes>,
    buckets: Vec<Bucket>,
    offsets: Vec<satellite::ClockOffset>,
    node_rate: u32,
    max_clock_offset: Duration,
    measured_power: i8,
    satellite_layout: Layout,
    unknown_named: HashSet<String>,
}

impl Dispatch {
    /// Unknown node names logged at most, each once.
    const LOG_UNKNOWN: usize = 16;

    /// Dispatch for `settings`, counting into `nodes`; `measured_power` is
    /// `[radio]`'s (ESPresense's `rssi@1m` is folded in against it).
    #[must_use]
    pub fn new(settings: &MqttSettings, nodes: Arc<Nodes>, measured_power: i8) -> Dispatch {
        let n = settings.nodes.len();
        Dispatch {
            store_id: settings.store_id.clone(),
            index: settings
                .nodes
                .iter()
                .enumerate()
                .map(|(i, r)| ((r.kind, r.node.clone()), i))
                .collect(),
            nodes,
            buckets: vec![
                Bucket {
                    tokens: f64::from(settings.node_rate),
                    last: Duration::ZERO,
                };
                n
            ],
            offsets: vec![satellite::ClockOffset::new(Duration::from_secs(60)); n],
            node_rate: settings.node_rate,
            max_clock_offset: settings.max_clock_offset,
            measured_power,
            satellite_layout: Layout::single("", "satellite"),
            unknown_named: HashSet::new(),
        }
    }

    /// The topics to subscribe to, with their QoS.
    #[must_use]
    pub fn subscriptions(&self) -> Vec<(String, QoS)> {
        let kinds: HashSet<NodeKind> = self.index.keys().map(|(k, _)| *k).collect();
        let mut subs = Vec::new();
        if kinds.contains(&NodeKind::Espresense) {
            subs.extend(
                espresense::SUBSCRIPTIONS
                    .iter()
                    .map(|t| ((*t).to_owned(), QoS::AtMostOnce)),
            );
        }
        if kinds.contains(&NodeKind::Nearcast) {
            let [sightings, status] = satellite::subscriptions(&self.store_id);
            subs.push((sightings, QoS::AtMostOnce));
            subs.push((status, QoS::AtLeastOnce));
        }
        subs
    }

    /// The node of `kind` called `node`, counting (and logging once, by
    /// name) one `zones.toml` does not have.
    fn node(&mut self, kind: NodeKind, node: &str) -> Option<usize> {
        // A lookup without allocating a key per message.
        let found = self
            .index
            .iter()
            .find(|((k, n), _)| *k == kind && n == node)
            .map(|(_, i)| *i);
        if found.is_none() {
            Health::bump(&self.nodes.unknown_node);
            self.nodes.changed();
            if self.unknown_named.len() < Self::LOG_UNKNOWN
                && self.unknown_named.insert(node.to_owned())
            {
                tracing::warn!(
                    kind = kind.name(),
                    node,
                    "a node zones.toml does not have is publishing; ignored (add it as a [[scanner]] with source and node)"
                );
            }
        }
        found
    }

    /// Handles one message received at `now` (wall) / `mono` (monotonic):
    /// sightings go to `out` (false from it stops the source).
    pub fn handle(
        &mut self,
        topic: &str,
        payload: &[u8],
        now: Timestamp,
        mono: Duration,
        out: &mut impl FnMut(Observation) -> bool,
    ) -> bool {
        if let Some(t) = espresense::Topic::parse(topic) {
            return self.espresense(t, payload, now, mono, out);
        }
        if let Some(t) = satellite::Topic::parse(&self.store_id, topic) {
            return self.satellite(t, payload, now, mono, out);
        }
        true
    }

    fn espresense(
        &mut self,
        t: espresense::Topic<'_>,
        payload: &[u8],
        now: Timestamp,
        mono: Duration,
        out: &mut impl FnMut(Observation) -> bool,
    ) -> bool {
        use espresense::{Refused, Topic};
        let node = match t {
            Topic::Device { node } | Topic::Status { node } | Topic::Telemetry { node } => node,
        };
        let Some(i) = self.node(NodeKind::Espresense, node) else {
            return true;
        };
        let n = &self.nodes.nodes[i];
        match t {
            Topic::Status { .. } => {
                match espresense::parse_status(payload) {
                    Some(online) => self.set_said(i, online),
                    None => Health::bump(&n.malformed),
                }
                true
            }
            Topic::Telemetry { .. } => {
                // Telemetry only comes from a running node.
                self.set_said(i, true);
                true
            }
            Topic::Device { .. } => {
                if payload.len() > MAX_REPORT {
                    Health::bump(&n.oversized);
                    return true;
                }
                if !self.buckets[i].take(self.node_rate, mono) {
                    Health::bump(&n.rate_limited);
                    return true;
                }
                match espresense::parse_report(payload) {
                    Ok(heard) => {
                        Health::bump(&n.sightings);
                        let s = heard.to_sighting(now, n.remote.scanner, self.measured_power);
                        out(Observation::Ble(s))
                    }
                    Err(Refused::Unusable) => {
                        Health::bump(&n.unusable);
                        true
                    }
                    Err(Refused::Malformed | Refused::NoRssi) => {
                        Health::bump(&n.malformed);
                        true
                    }
                }
            }
        }
    }

    fn satellite(
        &mut self,
        t: satellite::Topic<'_>,
        payload: &[u8],
        now: Timestamp,
        mono: Duration,
        out: &mut impl FnMut(Observation) -> bool,
    ) -> bool {
        let node = match t {
            satellite::Topic::Sightings { node } | satellite::Topic::Status { node } => node,
        };
        let Some(i) = self.node(NodeKind::Nearcast, node) else {
            return true;
        };
        let nodes = self.nodes.clone();
        let n = &nodes.nodes[i];
        if let satellite::Topic::Status { .. } = t {
            match espresense::parse_status(payload) {
                Some(online) => self.set_said(i, online),
                None => Health::bump(&n.malformed),
            }
            return true;
        }
        if payload.len() > MAX_BATCH {
            Health::bump(&n.oversized);
            return true;
        }
        let mut sightings = Vec::new();
        for line in satellite::parse_batch(payload, &self.satellite_layout) {
            match line {
                Ok(s) => sightings.push(s),
                Err(_) => Health::bump(&n.malformed),
            }
        }
        let Some(newest) = sightings.iter().map(|s| s.at).max() else {
            return true;
        };
        let offsets = &mut self.offsets[i];
        offsets.observe(now, newest);
        let offset = offsets.offset_ms().unwrap_or(0);
        n.clock_offset_ms.store(offset, Ordering::Relaxed);
        let refused = offsets.beyond(self.max_clock_offset);
        if refused != n.refused.swap(refused, Ordering::Relaxed) {
            nodes.changed();
            if refused {
                tracing::warn!(
                    node,
                    offset_ms = offset,
                    bound_ms = millis(self.max_clock_offset),
                    "satellite's clock is off too far; its sightings are refused until it is right"
                );
            } else {
                tracing::info!(
                    node,
                    offset_ms = offset,
                    "satellite's clock is back within bounds"
                );
            }
        }
        if refused {
            n.clock_refused
                .fetch_add(sightings.len() as u64, Ordering::Relaxed);
            return true;
        }
        for mut s in sightings {
            if !self.buckets[i].take(self.node_rate, mono) {
                Health::bump(&n.rate_limited);
                continue;
            }
            // Onto this box's clock; never ahead of it.
            s.at = Timestamp(s.at.0.saturating_add(offset)).min(now);
            s.scanner = n.remote.scanner;
            Health::bump(&n.sightings);
            if !out(Observation::Ble(s)) {
                return false;
            }
        }
        true
    }

    fn set_said(&self, i: usize, online: bool) {
        let n = &self.nodes.nodes[i];
        let was = n
            .said
            .swap(if online { ONLINE } else { OFFLINE }, Ordering::Relaxed);
        let name = n.scanner_name.as_str();
        if was != if online { ONLINE } else { OFFLINE } {
            self.nodes.changed();
        }
        if online && was != ONLINE {
            tracing::info!(scanner = name, node = %n.remote.node, "remote scanner online");
        } else if !online && was != OFFLINE {
            tracing::warn!(scanner = name, node = %n.remote.node, "remote scanner offline; presence holds what depends on it");
        }
    }
}

/// Why a connection ended, in words for `stats` (never a credential).
fn classify(e: &ConnectionError) -> &'static str {
    match e {
        ConnectionError::ConnectionRefused(
            ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized,
        ) => "broker refused the credentials",
        ConnectionError::ConnectionRefused(_) => "broker refused the connection",
        ConnectionError::Tls(_) => "TLS handshake with the broker failed",
        ConnectionError::NetworkTimeout => "broker did not answer in time",
        ConnectionError::Io(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            "broker not listening"
        }
        ConnectionError::MqttState(_) => "connection to the broker lost",
        _ => "broker unreachable",
    }
}

/// The main box's source: connects, subscribes, and dispatches until the
/// pipeline is gone. Never ends on a broker problem: each outage is logged
/// once, every remote scanner is marked down, and it reconnects with
/// backoff.
pub async fn run(
    settings: MqttSettings,
    measured_power: i8,
    clock: Arc<dyn Clock>,
    feed: Feed,
    nodes: Arc<Nodes>,
    env: Arc<dyn Env>,
) {
    let health = feed.health.clone();
    let mut dispatch = Dispatch::new(&settings, nodes.clone(), measured_power);
    let mut backoff = Backoff::new(settings.connection.retry_min, settings.connection.retry_max);
    let conn = &settings.connection;
    loop {
        let why =
            match conn.options(&*env) {
                Err(e) => {
                    if health.down("credentials or CA file unreadable") {
                        tracing::error!(broker = %conn.host, "MQTT: {e}");
                    }
                    None
                }
                Ok(options) => {
                    let (client, events) = AsyncClient::new(options, 16);
                    let subs = dispatch.subscriptions();
                    let ended = session(events, &health, &mut backoff, || {
                    let filters = subs
                        .iter()
                        .map(|(t, q)| rumqttc::SubscribeFilter::new(t.clone(), *q));
                    if let Err(e) = client.try_subscribe_many(filters) {
                        tracing::warn!(error = %e, "MQTT: could not queue the subscriptions");
                    }
                }, || nodes.set_broker_down(false), |topic, payload| {
                    let mut send = |obs| feed.send(obs);
                    dispatch.handle(topic, payload, clock.now(), clock.monotonic(), &mut send)
                })
                .await;
                    match ended {
                        Ended::PipelineGone => return,
                        Ended::Lost(why) => Some(why),
                    }
                }
            };
        nodes.set_broker_down(true);
        if let Some(why) = why {
            Health::bump(&health.failed_attempts);
            if health.down(why) {
                tracing::warn!(broker = %conn.host, port = conn.port, "MQTT: {why}; remote scanners are stale until it is back");
            }
        }
        if feed.is_closed() {
            return;
        }
        let wait = backoff.next().unwrap_or(conn.retry_max);
        tokio::time::sleep(wait).await;
    }
}

/// How a connection ended.
enum Ended {
    /// The broker or the network went away, or refused us.
    Lost(&'static str),
    /// Nobody reads what we deliver any more.
    PipelineGone,
}

/// Runs one connection until it ends: `connected` after each CONNACK (to
/// subscribe), `subscribed` once the broker confirms the subscriptions,
/// `message` for each PUBLISH (false stops).
async fn session(
    mut events: EventLoop,
    health: &Health,
    backoff: &mut Backoff,
    mut connected: impl FnMut(),
    mut subscribed: impl FnMut(),
    mut message: impl FnMut(&str, &[u8]) -> bool,
) -> Ended {
    loop {
        match events.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => connected(),
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                let refused = ack
                    .return_codes
                    .iter()
                    .filter(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure))
                    .count();
                if refused > 0 {
                    // Mosquitto refuses a subscription its ACL does not allow.
                    tracing::error!(
                        refused,
                        "MQTT: the broker refused subscriptions; check the ACL of this box's account"
                    );
                }
                if health.running() {
                    tracing::info!("MQTT: broker back; remote scanners resume");
                } else {
                    tracing::info!("MQTT: connected to the broker");
                }
                backoff.reset();
                subscribed();
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                Health::bump(&health.events);
                if !message(&p.topic, &p.payload) {
                    return Ended::PipelineGone;
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(error = %e, "MQTT connection ended");
                return Ended::Lost(classify(&e));
            }
        }
    }
}

/// A satellite's side (`nearcast scanner`): publishes what arrives on
/// `rx` as recording lines to `store`'s sightings topic for `scanner`,
/// batched every `every`, with `online` / last-will `offline` on its status
/// topic. Batches that cannot be sent while the broker is away are dropped
/// and counted in `health.queue_full` (the main box would have to refuse
/// them as stale anyway). Returns when `rx` closes.
pub async fn publish(
    conn: Connection,
    store: String,
    scanner: String,
    every: Duration,
    mut rx: mpsc::Receiver<Observation>,
    health: Arc<Health>,
    env: Arc<dyn Env>,
) {
    let topic = satellite::sightings_topic(&store, &scanner);
    let status = satellite::status_topic(&store, &scanner);
    let mut batch = satellite::Batch::new(&scanner);
    let mut backoff = Backoff::new(conn.retry_min, conn.retry_max);
    loop {
        let mut options = match conn.options(&*env) {
            Ok(o) => o,
            Err(e) => {
                if health.down("credentials or CA file unreadable") {
                    tracing::error!(broker = %conn.host, "MQTT: {e}");
                }
                tokio::time::sleep(backoff.next().unwrap_or(conn.retry_max)).await;
                continue;
            }
        };
        options.set_last_will(LastWill::new(&status, "offline", QoS::AtLeastOnce, true));
        let (client, mut events) = AsyncClient::new(options, 64);
        let mut connected = false;
        let mut tick = tokio::time::interval(every.max(Duration::from_millis(10)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let why = loop {
            tokio::select! {
                ev = events.poll() => match ev {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        connected = true;
                        if health.running() {
                            tracing::info!("MQTT: broker back; publishing again");
                        } else {
                            tracing::info!(topic = %topic, "MQTT: connected; publishing");
                        }
                        backoff.reset();
                        if let Err(e) = client.try_publish(&status, QoS::AtLeastOnce, true, "online") {
                            tracing::warn!(error = %e, "MQTT: could not queue the online status");
                        }
                    }
                    Ok(_) => {}
                    Err(e) => break classify(&e),
                },
                obs = rx.recv() => match obs {
                    None => {
                        // Leaving on purpose: say so, rather than let the
                        // broker report the last will later.
                        if connected {
                            let _ = client.try_publish(&status, QoS::AtLeastOnce, true, "offline");
                            let _ = client.try_disconnect();
                            let deadline = tokio::time::sleep(Duration::from_secs(2));
                            tokio::pin!(deadline);
                            loop {
                                tokio::select! {
                                    () = &mut deadline => break,
                                    ev = events.poll() => if ev.is_err() { break },
                                }
                            }
                        }
                        return;
                    }
                    Some(obs) => {
                        Health::bump(&health.events);
                        if batch.push(&obs) {
                            send_batch(&client, &topic, &mut batch, connected, &health);
                        }
                    }
                },
                _ = tick.tick() => {
                    if !batch.is_empty() {
                        send_batch(&client, &topic, &mut batch, connected, &health);
                    }
                }
            }
        };
        Health::bump(&health.failed_attempts);
        if health.down(why) {
            tracing::warn!(broker = %conn.host, port = conn.port, "MQTT: {why}; sightings are dropped until it is back");
        }
        tokio::time::sleep(backoff.next().unwrap_or(conn.retry_max)).await;
    }
}

/// Sends the batch (QoS 0), or drops and counts it when not connected or
/// the client's queue is full.
fn send_batch(
    client: &AsyncClient,
    topic: &str,
    batch: &mut satellite::Batch,
    connected: bool,
    health: &Health,
) {
    let lines = batch.len() as u64;
    let payload = batch.take();
    if connected
        && client
            .try_publish(topic, QoS::AtMostOnce, false, payload)
            .is_ok()
    {
        health.delivered.fetch_add(lines, Ordering::Relaxed);
    } else {
        health.queue_full.fetch_add(lines, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> MqttSettings {
        MqttSettings {
            connection: Connection::new("127.0.0.1", 1883, "nearcast-test"),
            store_id: "s1".into(),
            nodes: vec![
                RemoteScanner {
                    kind: NodeKind::Espresense,
                    node: "kitchen".into(),
                    scanner: ScannerIdx(1),
                },
                RemoteScanner {
                    kind: NodeKind::Nearcast,
                    node: "aisle".into(),
                    scanner: ScannerIdx(2),
                },
            ],
            node_rate: 10,
            max_clock_offset: Duration::from_secs(5),
        }
    }

    fn dispatch() -> (Dispatch, Arc<Nodes>) {
        let s = settings();
        let nodes = Arc::new(Nodes::new(&s, &Layout::single("S", "door")));
        nodes.set_broker_down(false);
        (Dispatch::new(&s, nodes.clone(), -59), nodes)
    }

    const REPORT: &[u8] = br#"{"mac":"c47c8d6a1102","id":"c47c8d6a1102","rssi":-60,"rssi@1m":-59}"#;

    #[test]
    fn urls() {
        let c = Connection::from_url("mqtts://broker.shop:8884", "x").unwrap();
        assert_eq!(
            (c.host.as_str(), c.port, c.tls.is_some()),
            ("broker.shop", 8884, true)
        );
        let c = Connection::from_url("mqtt://[::1]", "x").unwrap();
        assert_eq!(
            (c.host.as_str(), c.port, c.tls.is_none()),
            ("::1", 1883, true)
        );
        for (bad, why) in [
            ("http://x", "scheme `http` is not mqtt:// or mqtts://"),
            ("mqtt://user:pw@x", "credentials do not belong in the URL"),
            (
                "mqtt://x/topic",
                "the URL has a path or query; give only host and port",
            ),
        ] {
            assert_eq!(Connection::from_url(bad, "x").unwrap_err(), why, "{bad}");
        }
        assert!(Connection::from_url("broker:1883", "x").is_err());
    }

    #[test]
    fn reports_become_sightings_of_their_scanner_and_strangers_nodes_are_counted() {
        let (mut d, nodes) = dispatch();
        let mut got = Vec::new();
        let mut out = |o| {
            got.push(o);
            true
        };
        let now = Timestamp(1_000_000);
        assert!(d.handle(
            "espresense/devices/x/kitchen",
            REPORT,
            now,
            Duration::ZERO,
            &mut out
        ));
        assert!(d.handle(
            "espresense/devices/x/garage",
            REPORT,
            now,
            Duration::ZERO,
            &mut out
        ));
        assert!(d.handle(
            "espresense/devices/x/kitchen",
            b"{",
            now,
            Duration::ZERO,
            &mut out
        ));
        assert!(d.handle(
            "espresense/devices/x/kitchen",
            &vec![b' '; MAX_REPORT + 1],
            now,
            Duration::ZERO,
            &mut out
        ));
        assert!(d.handle("other/topic", REPORT, now, Duration::ZERO, &mut out));
        assert_eq!(got.len(), 1);
        let Observation::Ble(s) = &got[0] else {
            panic!()
        };
        assert_eq!((s.scanner, s.at), (ScannerIdx(1), now));
        let snap = &nodes.snapshot()[0];
        assert_eq!(
            (
                snap.sightings,
                snap.malformed,
                snap.oversized,
                snap.state.as_str()
            ),
            (1, 1, 1, "unknown")
        );
        assert_eq!(nodes.unknown_node.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_node_over_its_rate_is_cut_and_refills_with_time() {
        let (mut d, nodes) = dispatch();
        let mut n = 0;
        let mut out = |_| {
            n += 1;
            true
        };
        for _ in 0..25 {
            d.handle(
                "espresense/devices/x/kitchen",
                REPORT,
                Timestamp(0),
                Duration::ZERO,
                &mut out,
            );
        }
        for _ in 0..25 {
            d.handle(
                "espresense/devices/x/kitchen",
                REPORT,
                Timestamp(0),
                Duration::from_millis(500),
                &mut out,
            );
        }
        // A burst of 10, then 5 more in half a second at 10/s.
        assert_eq!(n, 15);
        assert_eq!(nodes.snapshot()[0].rate_limited, 35);
    }

    #[test]
    fn status_and_last_will_mark_a_node_down_and_up() {
        let (mut d, nodes) = dispatch();
        let mut out = |_| true;
        assert!(!nodes.is_down(0));
        d.handle(
            "espresense/rooms/kitchen/status",
            b"offline",
            Timestamp(0),
            Duration::ZERO,
            &mut out,
        );
        assert!(nodes.is_down(0));
        assert_eq!(nodes.snapshot()[0].state, "offline");
        d.handle(
            "espresense/rooms/kitchen/status",
            b"online",
            Timestamp(0),
            Duration::ZERO,
            &mut out,
        );
        assert!(!nodes.is_down(0));
        d.handle(
            "nearcast/s1/scanners/aisle/status",
            b"offline",
            Timestamp(0),
            Duration::ZERO,
            &mut out,
        );
        assert!(nodes.is_down(1) && !nodes.is_down(0));
        nodes.set_broker_down(true);
        assert!(nodes.is_down(0));
        assert_eq!(nodes.snapshot()[0].state, "unreachable");
    }

    fn line(t_ms: i64) -> String {
        format!(
            "{{\"t\": {}.{:03}, \"scanner\": \"aisle\", \"addr\": \"C4:7C:8D:6A:11:02\", \"rssi\": -60}}\n",
            t_ms / 1000,
            t_ms % 1000
        )
    }

    #[test]
    fn a_satellites_clock_is_corrected_or_refused() {
        let (mut d, nodes) = dispatch();
        let mut got = Vec::new();
        let mut out = |o: Observation| {
            got.push(o.at());
            true
        };
        // 3 s ahead, batches arriving 40 ms after their newest line.
        let sat = 1_000_000 + 3_000;
        let payload = line(sat - 50) + &line(sat);
        d.handle(
            "nearcast/s1/sightings/aisle",
            payload.as_bytes(),
            Timestamp(1_000_040),
            Duration::ZERO,
            &mut out,
        );
        assert_eq!(got, [Timestamp(999_990), Timestamp(1_000_040)]);
        assert_eq!(nodes.snapshot()[1].clock_offset_ms, Some(-2_960));
        assert_eq!(nodes.snapshot()[1].state, "unknown");
        // Now 20 s behind: past the 5 s bound, refused, and the scanner down.
        let (mut d, nodes) = dispatch();
        got.clear();
        let mut out = |o: Observation| {
            got.push(o.at());
            true
        };
        let payload = line(1_000_000 - 20_000);
        d.handle(
            "nearcast/s1/sightings/aisle",
            payload.as_bytes(),
            Timestamp(1_000_010),
            Duration::ZERO,
            &mut out,
        );
        assert!(got.is_empty());
        let snap = &nodes.snapshot()[1];
        assert_eq!(
            (
                snap.state.as_str(),
                snap.clock_refused,
                snap.clock_offset_ms
            ),
            ("refused", 1, Some(20_010))
        );
        assert!(nodes.is_down(1));
    }
}

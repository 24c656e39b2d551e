//! `nearcast scan`: a live table of what one adapter hears, for staff
//! calibrating zones: address, decoded identity, RSSI now and smoothed,
//! estimated distance, TX power and measured power, and — for enrolled
//! customers — who it is. Plain text (redrawn in a terminal) or `--json`.
//!
//! Shown on the screen only: nothing here is written to disk or logged.
//! The table ([`Table`]) is pure; the command wires it to the BLE source.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::future::Future;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use smallvec::SmallVec;
use tokio::sync::mpsc;

use super::{Error, database_path};
use crate::clock::Clock;
use crate::config::Config;
use crate::core::advert::{self, DecodeStats, Frame};
use crate::core::identity::{Hasher, Resolver};
use crate::core::types::{BdAddr, Observation, Rssi, ScannerIdx, Sighting, Timestamp};
use crate::core::zones::Layout;
use crate::source::SourceSettings;
use crate::source::ble::BleSettings;
use crate::store::{self, Store};

/// `scan` settings.
#[derive(Clone, Debug)]
pub struct ScanOptions {
    /// The adapter (`hci0`).
    pub adapter: String,
    /// Stop after this long (until Ctrl-C otherwise).
    pub seconds: Option<u64>,
    /// One JSON object per device and refresh instead of a table.
    pub json: bool,
    /// Clear the screen before each table (a terminal).
    pub redraw: bool,
    /// How often the table is shown.
    pub refresh: Duration,
    /// Database override (for customers' names).
    pub db: Option<PathBuf>,
}

/// Devices not heard for this long leave the table.
const FORGET: Duration = Duration::from_secs(30);
/// RSSI samples kept per device for the smoothed value (a median, like
/// the presence tracker's).
const WINDOW: usize = 5;

/// One device in the table.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// Address as heard.
    pub addr: BdAddr,
    /// Decoded identity, human-readable (`ibeacon E2C5…:1:2`), or the name.
    pub identity: String,
    /// Last RSSI.
    pub rssi: i16,
    /// Median of the last few.
    pub smoothed: f64,
    /// Estimated distance, metres.
    pub distance_m: f64,
    /// Advertised TX power.
    pub tx_power: Option<i8>,
    /// RSSI at 1 m used for the distance (calibration, frame or default).
    pub measured_power: i8,
    /// The enrolled customer, if it is one.
    pub customer: Option<String>,
    /// Advertisements heard.
    pub count: u64,
    /// Last heard.
    pub last: Timestamp,
    samples: SmallVec<[i16; WINDOW]>,
}

/// The table: pure, fed sightings, rendered on demand.
pub struct Table {
    layout: Arc<Layout>,
    resolver: Option<Resolver>,
    rows: HashMap<BdAddr, Row>,
    decode: DecodeStats,
}

/// Describes a frame for the identity column.
#[must_use]
pub fn describe(frame: &Frame) -> String {
    match frame {
        Frame::IBeacon {
            uuid, major, minor, ..
        } => format!(
            "ibeacon {}:{major}:{minor}",
            crate::core::types::Uuid128(u128::from_be_bytes(*uuid))
                .to_string()
                .to_uppercase()
        ),
        Frame::AltBeacon { id, .. } => format!("altbeacon {}", hex::encode(id)),
        Frame::EddystoneUid {
            namespace,
            instance,
            ..
        } => format!(
            "eddystone-uid {}:{}",
            hex::encode(namespace),
            hex::encode(instance)
        ),
        Frame::EddystoneUrl { url, .. } => format!("eddystone-url {url}"),
        Frame::EddystoneTlm {
            battery_mv,
            temperature,
            ..
        } => match temperature {
            Some(t) => format!("eddystone-tlm {battery_mv} mV {t:.1} °C"),
            None => format!("eddystone-tlm {battery_mv} mV"),
        },
        Frame::EddystoneEid { eid, .. } => format!("eddystone-eid {}", hex::encode(eid)),
    }
}

impl Table {
    /// A table estimating distances with `layout`, naming enrolled
    /// customers through `resolver` when there is one.
    #[must_use]
    pub fn new(layout: Arc<Layout>, resolver: Option<Resolver>) -> Table {
        Table {
            layout,
            resolver,
            rows: HashMap::new(),
            decode: DecodeStats::default(),
        }
    }

    /// Takes one sighting.
    pub fn observe(&mut self, s: &Sighting) {
        let mut frames: SmallVec<[Frame; 2]> = SmallVec::new();
        advert::decode(s, &mut self.decode, |f| frames.push(f));
        let customer = self.resolver.as_mut().and_then(|r| {
            let key = r.identify(frames.iter(), s.addr)?;
            r.directory().customer(key).map(|c| c.id.to_string())
        });
        let ranged = frames.iter().find(|f| f.measured_power_1m().is_some());
        let measured_power = self.layout.measured_power(ranged);
        // A TLM frame alone says nothing about identity: keep the last one.
        let identity = frames
            .iter()
            .find(|f| !matches!(f, Frame::EddystoneTlm { .. }))
            .or(frames.first())
            .map(describe);
        let row = self.rows.entry(s.addr).or_insert_with(|| Row {
            addr: s.addr,
            identity: String::new(),
            rssi: s.rssi.0,
            smoothed: f64::from(s.rssi.0),
            distance_m: 0.0,
            tx_power: None,
            measured_power,
            customer: None,
            count: 0,
            last: s.at,
            samples: SmallVec::new(),
        });
        if let Some(id) = identity {
            row.identity = id;
        } else if row.identity.is_empty()
            && let Some(name) = &s.name
        {
            row.identity = format!("name {name}");
        }
        if row.samples.len() == WINDOW {
            row.samples.remove(0);
        }
        row.samples.push(s.rssi.0);
        let mut sorted = row.samples.clone();
        row.smoothed = Rssi::median(&mut sorted).unwrap_or(f64::from(s.rssi.0));
        row.rssi = s.rssi.0;
        row.tx_power = s.tx_power.or(row.tx_power);
        row.measured_power = measured_power;
        row.distance_m = self
            .layout
            .distance_m(s.scanner, row.smoothed, measured_power);
        row.customer = customer.or(row.customer.take());
        row.count += 1;
        row.last = row.last.max(s.at);
    }

    /// Rows heard within the last 30 s at `now`, strongest first; older
    /// ones are forgotten.
    pub fn rows(&mut self, now: Timestamp) -> Vec<&Row> {
        let cutoff = now.saturating_sub(FORGET);
        self.rows.retain(|_, r| r.last >= cutoff);
        let mut v: Vec<&Row> = self.rows.values().collect();
        v.sort_by(|a, b| {
            b.smoothed
                .total_cmp(&a.smoothed)
                .then_with(|| a.addr.cmp(&b.addr))
        });
        v
    }

    /// The table as text.
    pub fn render(&mut self, now: Timestamp) -> String {
        let mut out = format!(
            "{:<17}  {:<58}  {:>5}  {:>6}  {:>7}  {:>5}  {:>5}  {:>6}  {}\n",
            "address", "identity", "rssi", "smooth", "dist m", "tx", "1m", "heard", "customer"
        );
        for r in self.rows(now) {
            let _ = writeln!(
                out,
                "{:<17}  {:<58}  {:>5}  {:>6.1}  {:>7.1}  {:>5}  {:>5}  {:>6}  {}",
                r.addr.to_string(),
                if r.identity.is_empty() {
                    "-"
                } else {
                    r.identity.as_str()
                },
                r.rssi,
                r.smoothed,
                r.distance_m,
                r.tx_power.map_or_else(|| "-".to_owned(), |t| t.to_string()),
                r.measured_power,
                r.count,
                r.customer.as_deref().unwrap_or("-"),
            );
        }
        out
    }

    /// One JSON object per row, one per line.
    pub fn json(&mut self, now: Timestamp) -> String {
        let mut out = String::new();
        for r in self.rows(now) {
            let v = serde_json::json!({
                "t": now.as_secs_f64(),
                "addr": r.addr.to_string(),
                "identity": (!r.identity.is_empty()).then_some(r.identity.as_str()),
                "rssi": r.rssi,
                "rssi_smoothed": r.smoothed,
                "distance_m": (r.distance_m * 100.0).round() / 100.0,
                "tx_power": r.tx_power,
                "measured_power": r.measured_power,
                "customer": r.customer,
                "heard": r.count,
            });
            out.push_str(&v.to_string());
            out.push('\n');
        }
        out
    }
}

/// The layout and scanner to estimate distances with: the configured ble
/// source for this adapter, else a one-scanner default.
fn layout_for(config: Option<&Config>, adapter: &str) -> (Arc<Layout>, ScannerIdx) {
    if let Some(c) = config {
        for s in &c.daemon.sources {
            if let SourceSettings::Ble(b) = s
                && b.adapter == adapter
            {
                return (c.layout.clone(), b.scanner);
            }
        }
        if let Some(first) = c.layout.scanners.first() {
            let mut l = Layout::single(&c.layout.store_name, &first.id);
            l.radio = c.layout.radio.clone();
            l.calibrations = c.layout.calibrations.clone();
            return (Arc::new(l), ScannerIdx(0));
        }
    }
    (Arc::new(Layout::single("store", adapter)), ScannerIdx(0))
}

/// A resolver over the enrolled customers, if the database and its secret
/// are there (read-only: scanning never writes).
fn resolver(config: &Config, db: Option<&std::path::Path>) -> Option<Resolver> {
    let path = database_path(config, db);
    let secret = config.daemon.secret_path(&path);
    if !secret.exists() {
        return None;
    }
    let store = Store::open_read_only(&path).ok()?;
    let hasher = Hasher::new(&store::load_or_create_secret(&secret).ok()?);
    Some(Resolver::new(hasher, Arc::new(store.directory().ok()?)))
}

/// What a scan saw.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScanSummary {
    /// Advertisements heard.
    pub sightings: u64,
    /// Distinct devices in the last table.
    pub devices: usize,
    /// Why the adapter never started scanning (no D-Bus, BlueZ not
    /// running, no such adapter), when it never did: the command failed.
    pub never_scanned: Option<String>,
}

/// Scans until `seconds` pass or `shutdown` completes, printing to `out`.
///
/// # Errors
/// Writing to `out` failed.
pub async fn scan(
    config: Option<&Config>,
    opts: &ScanOptions,
    clock: Arc<dyn Clock>,
    out: &mut (dyn Write + Send),
    shutdown: impl Future<Output = ()>,
) -> Result<ScanSummary, Error> {
    if let Some(db) = &opts.db {
        super::require_database(db)?;
    }
    let (layout, scanner) = layout_for(config, &opts.adapter);
    let resolver = config.and_then(|c| resolver(c, opts.db.as_deref()));
    let mut table = Table::new(layout, resolver);
    let mut settings = BleSettings::new(&opts.adapter, scanner);
    if let Some(c) = config {
        for s in &c.daemon.sources {
            if let SourceSettings::Ble(b) = s
                && b.adapter == opts.adapter
            {
                settings = b.clone();
            }
        }
    }
    let (tx, mut rx) = mpsc::channel::<Observation>(4096);
    let running = super::sources::spawn(
        &SourceSettings::Ble(settings),
        &table.layout,
        clock.clone(),
        tx,
    )?;
    let task = running.task;
    let io = |e: std::io::Error| Error::io(std::path::Path::new("<stdout>"), e);
    let deadline = opts
        .seconds
        .map(|s| tokio::time::Instant::now() + Duration::from_secs(s));
    let mut refresh = tokio::time::interval(opts.refresh.max(Duration::from_millis(100)));
    refresh.tick().await;
    tokio::pin!(shutdown);
    let mut summary = ScanSummary::default();
    // Heard anything since the table was last shown (the final table is
    // not shown twice when the end and a refresh coincide).
    let mut fresh = true;
    let show = |table: &mut Table, out: &mut (dyn Write + Send), now| -> std::io::Result<()> {
        let text = if opts.json {
            table.json(now)
        } else if opts.redraw {
            format!("\x1b[H\x1b[2J{}", table.render(now))
        } else {
            format!("{}\n", table.render(now))
        };
        out.write_all(text.as_bytes())?;
        out.flush()
    };
    loop {
        let until_end = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = &mut shutdown => break,
            () = until_end => break,
            obs = rx.recv() => match obs {
                Some(Observation::Ble(s)) => {
                    summary.sightings += 1;
                    table.observe(&s);
                    fresh = true;
                }
                Some(Observation::Wifi(_)) => {}
                None => break,
            },
            _ = refresh.tick() => {
                show(&mut table, out, clock.now()).map_err(io)?;
                fresh = false;
            }
        }
    }
    task.abort();
    if summary.sightings == 0
        && let Some(h) = &running.health
        && h.connects.load(std::sync::atomic::Ordering::Relaxed) == 0
    {
        summary.never_scanned = Some(
            h.snapshot()
                .last_outage
                .unwrap_or_else(|| "BlueZ did not answer in time".to_owned()),
        );
    }
    let now = clock.now();
    summary.devices = table.rows(now).len();
    if fresh {
        show(&mut table, out, now).map_err(io)?;
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::advert::Frame;
    use crate::core::types::Rssi;

    fn ibeacon(ms: i64, rssi: i16) -> Sighting {
        let mut s = Sighting::new(
            Timestamp(ms),
            ScannerIdx(0),
            BdAddr([0xC4, 0x7C, 0x8D, 0x6A, 0x11, 0x02]),
            Rssi(rssi),
        );
        s.tx_power = Some(-8);
        Frame::IBeacon {
            uuid: [0xE2; 16],
            major: 1,
            minor: 2,
            measured_power: -59,
        }
        .encode()
        .unwrap()
        .add_to(&mut s);
        s
    }

    #[test]
    fn the_table_decodes_smooths_and_estimates_distance() {
        let mut t = Table::new(Arc::new(Layout::single("s", "hci0")), None);
        for (i, r) in [-59, -70, -60, -61, -58].into_iter().enumerate() {
            t.observe(&ibeacon(i64::try_from(i).unwrap_or(0) * 100, r));
        }
        let mut bare = Sighting::new(Timestamp(0), ScannerIdx(0), BdAddr([2; 6]), Rssi(-90));
        bare.name = Some("Speaker".into());
        t.observe(&bare);
        let rows = t.rows(Timestamp(1000));
        assert_eq!(rows.len(), 2);
        let r = rows[0];
        assert_eq!(
            r.identity,
            "ibeacon E2E2E2E2-E2E2-E2E2-E2E2-E2E2E2E2E2E2:1:2"
        );
        // Median of -59 -70 -60 -61 -58 is -60; the frame says -59 at 1 m.
        assert_eq!((r.rssi, r.smoothed, r.measured_power), (-58, -60.0, -59));
        assert!(
            (r.distance_m - 10f64.powf(1.0 / 20.0)).abs() < 1e-9,
            "{}",
            r.distance_m
        );
        assert_eq!((r.tx_power, r.count), (Some(-8), 5));
        assert_eq!(rows[1].identity, "name Speaker");
        let text = t.render(Timestamp(1000));
        assert!(
            text.lines()
                .nth(1)
                .is_some_and(|l| l.starts_with("C4:7C:8D:6A:11:02")),
            "{text}"
        );
        let json = t.json(Timestamp(1000));
        let first: serde_json::Value =
            serde_json::from_str(json.lines().next().unwrap_or("")).unwrap_or_default();
        assert_eq!(first["rssi_smoothed"], -60.0);
        assert_eq!(first["customer"], serde_json::Value::Null);
        // 30 s later, both are forgotten.
        assert!(t.rows(Timestamp(31_001)).is_empty());
    }
}

//! Shared helpers for the integration tests: a small store configuration
//! written to a temporary directory, customers, and hand-made sightings.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use nearcast::app::{Output, Pipeline};
use nearcast::config::{self, Config};
use nearcast::core::advert::{Frame, Section};
use nearcast::core::campaign::{Ledger, Outcome};
use nearcast::core::identity::Hasher;
use nearcast::core::types::{
    BdAddr, Observation, Rssi, ScannerIdx, Sighting, Timestamp, WifiKind, WifiPresence,
};
use nearcast::store::{self, Store};

pub const APP_UUID: &str = "E2C56DB5-DFFB-48D2-B060-D0F5A71096E0";

pub const DAEMON: &str = r#"
[database]
path = "nearcast.db"

[channels.whatsapp]
adapter = "console"

[channels.sms]
adapter = "console"
"#;

pub const ZONES: &str = r#"
store = "Teststore"
store_id = "test-01"
time_zone = "Europe/Berlin"

[hours]
mon = "08:00-20:00"
tue = "08:00-20:00"
wed = "08:00-20:00"
thu = "08:00-20:00"
fri = "08:00-20:00"
sat = "08:00-20:00"
sun = "closed"

[radio]
measured_power = -59
path_loss_exponent = 2.0

[[scanner]]
id = "door"
position = [0.0, 0.0]

[[scanner]]
id = "till"
position = [20.0, 0.0]

[[zone]]
id = "store"
kind = "store"
min_dwell = "2s"
exit_after = "30s"

[[zone]]
id = "entrance"
kind = "near"
scanner = "door"
enter = 2.0
exit = 4.0
min_dwell = "3s"
exit_after = "5s"
"#;

pub const CAMPAIGNS: &str = r#"
[limits]
max_messages_per_day = 3
quiet_hours = ["19:00-09:00"]

[[campaign]]
id = "welcome"
trigger = "arrive"
message = "welcome"
points = 10
cooldown = "12h"
purpose = "welcome"

[[campaign]]
id = "door-offer"
trigger = "enter"
zone = "entrance"
message = "offer"
cooldown = "1h"
segments = ["gold"]
purpose = "offers"

[[message]]
id = "welcome"
ttl = "5m"
plain = "Hi {first_name}, welcome to {store}! +{points} points, balance {balance}."

[message.rich]
template = "welcome"
language = "en"
params = ["{first_name}"]
preview = "Welcome {first_name}!"

[[message]]
id = "offer"
ttl = "5m"
plain = "{first_name}: 2 for 1 today."
"#;

pub const CUSTOMERS: &str = "id,first_name,phone,channels,consent_at,consent_source,identities,segments
anna,Anna,+4915112345678,whatsapp|sms,2026-01-01T10:00:00Z,app,ibeacon:E2C56DB5-DFFB-48D2-B060-D0F5A71096E0:1:1,gold
ben,Ben,+4915112345679,sms,2026-01-01T10:00:00Z,app,ibeacon:E2C56DB5-DFFB-48D2-B060-D0F5A71096E0:1:2,
cleo,Cleo,+4915112345670,sms,2026-01-01T10:00:00Z,kiosk,mac:C4:7C:8D:6A:11:02,
";

/// A config directory with the test store, `edit` applied to campaigns.
pub fn config_dir(dir: &Path, campaigns: &str) -> Config {
    std::fs::write(dir.join(config::DAEMON_FILE), DAEMON).unwrap();
    std::fs::write(dir.join(config::ZONES_FILE), ZONES).unwrap();
    std::fs::write(dir.join(config::CAMPAIGNS_FILE), campaigns).unwrap();
    std::fs::write(dir.join("customers.csv"), CUSTOMERS).unwrap();
    config::load(dir).unwrap()
}

/// Opens the database beside the config and imports the test customers.
pub fn store_with_customers(config: &Config) -> (Store, Hasher) {
    let (mut s, h) = nearcast::app::open_database(config, None).unwrap();
    s.import_customers(
        CUSTOMERS.as_bytes(),
        &h,
        Timestamp::from_secs(1_767_261_600),
    )
    .unwrap();
    (s, h)
}

/// Wednesday 2026-11-18 at `hh:mm:ss` Berlin time.
pub fn at(hh: i8, mm: i8, ss: i8) -> Timestamp {
    let z = jiff::civil::date(2026, 11, 18)
        .at(hh, mm, ss, 0)
        .in_tz("Europe/Berlin")
        .unwrap();
    Timestamp(z.timestamp().as_millisecond())
}

/// An iBeacon sighting of the app UUID with `minor`, heard by `scanner` at `d` metres.
pub fn ibeacon(t: Timestamp, scanner: u16, minor: u16, d: f64, addr: [u8; 6]) -> Observation {
    let mut s = Sighting::new(t, ScannerIdx(scanner), BdAddr(addr), rssi_at(d));
    app_ibeacon(1, minor).add_to(&mut s);
    Observation::Ble(s)
}

/// The app UUID's iBeacon frame with `major` and `minor`, calibrated to
/// -59 dBm at 1 m.
pub fn app_ibeacon(major: u16, minor: u16) -> Section {
    Frame::IBeacon {
        uuid: nearcast::core::types::Uuid128::parse(APP_UUID)
            .unwrap()
            .to_bytes(),
        major,
        minor,
        measured_power: -59,
    }
    .encode()
    .unwrap()
}

/// A sighting from a bare address (no beacon frame).
pub fn bare(t: Timestamp, scanner: u16, d: f64, addr: [u8; 6]) -> Observation {
    Observation::Ble(Sighting::new(
        t,
        ScannerIdx(scanner),
        BdAddr(addr),
        rssi_at(d),
    ))
}

pub fn wifi(t: Timestamp, kind: WifiKind, addr: [u8; 6]) -> Observation {
    Observation::Wifi(WifiPresence {
        at: t,
        source: "test".into(),
        mac: BdAddr(addr),
        kind,
    })
}

/// RSSI the model (P1m −59, n 2) maps to `d` metres.
pub fn rssi_at(d: f64) -> Rssi {
    #[allow(clippy::cast_possible_truncation)]
    Rssi((-59.0 - 20.0 * d.log10()).round() as i16)
}

/// Every second from `from` to `to` (inclusive), one observation made by `f`.
pub fn every_second(
    from: Timestamp,
    to: Timestamp,
    f: impl Fn(Timestamp) -> Observation,
) -> Vec<Observation> {
    let mut v = Vec::new();
    let mut t = from;
    while t <= to {
        v.push(f(t));
        t = Timestamp(t.0 + 1000);
    }
    v
}

/// Runs observations through a pipeline, then timers up to `until`, and
/// returns each output as a short line: `10:00:02 arrived anna store`,
/// `10:00:02 act welcome anna sms`, `10:00:05 suppressed door-offer ben segment`.
pub fn run<L: Ledger>(p: &mut Pipeline<L>, obs: &[Observation], until: Timestamp) -> Vec<String>
where
    L::Error: std::fmt::Debug,
{
    let tz = jiff::tz::TimeZone::get("Europe/Berlin").unwrap();
    let clock = |t: Timestamp| {
        jiff::Timestamp::from_millisecond(t.0)
            .unwrap()
            .to_zoned(tz.clone())
            .strftime("%H:%M:%S")
            .to_string()
    };
    let mut lines = Vec::new();
    let mut sink = |o: Output<'_>| {
        lines.push(match o {
            Output::Event {
                event,
                customer,
                zone,
            } => format!(
                "{} {} {} {}",
                clock(event.at),
                event.kind.name(),
                customer.id,
                zone
            ),
            Output::Decision {
                customer,
                committed,
                ..
            } => {
                let d = &committed.decision;
                match &d.outcome {
                    Outcome::Act(a) => format!(
                        "{} act {} {} {}",
                        clock(d.at),
                        d.campaign_id,
                        customer.id,
                        a.channel
                            .as_ref()
                            .map_or("-".to_owned(), |c| format!("{}/{}", c.0, c.1))
                    ),
                    Outcome::Suppressed(r) => format!(
                        "{} suppressed {} {} {}",
                        clock(d.at),
                        d.campaign_id,
                        customer.id,
                        r
                    ),
                }
            }
        });
    };
    for o in obs {
        p.handle(o, &mut sink).unwrap();
    }
    p.advance(until, &mut sink).unwrap();
    lines
}

/// A pipeline over the SQLite store of `config`.
pub fn pipeline(config: &Config) -> Pipeline<Store> {
    let (s, h) = nearcast::app::open_database(config, None).unwrap();
    let dir = Arc::new(s.directory().unwrap());
    Pipeline::new(config.layout.clone(), config.engine.clone(), h, dir, s)
}

/// Every byte of the database and its WAL.
pub fn database_bytes(config: &Config) -> Vec<u8> {
    let db: PathBuf = config.daemon.database.clone();
    let mut bytes = std::fs::read(&db).unwrap();
    for ext in ["-wal", "-shm"] {
        let mut p = db.clone().into_os_string();
        p.push(ext);
        if let Ok(b) = std::fs::read(PathBuf::from(p)) {
            bytes.extend(b);
        }
    }
    bytes
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

pub fn secret(config: &Config) -> [u8; 32] {
    store::load_or_create_secret(&config.daemon.secret_path(&config.daemon.database)).unwrap()
}

//! `nearcast.toml`: database, sources, channels, outbox and logging.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::{Dur, Source};
use crate::channel::{ChannelSettings, OutboxSettings};
use crate::clock::ClockSettings;
use crate::core::guard::GuardConfig;
use crate::core::identity::AppBeacons;
use crate::core::types::Uuid128;
use crate::core::zones::Layout;
use crate::source::ble::BleSettings;
use crate::source::wifi::{Backend, WifiSettings};
use crate::source::{SimSettings, SourceSettings};

/// Daemon settings.
#[derive(Clone, Debug, PartialEq)]
pub struct Daemon {
    /// SQLite database file.
    pub database: PathBuf,
    /// Installation secret (identity hashing key); beside the database unless set.
    pub secret_file: Option<PathBuf>,
    /// Where observations come from.
    pub sources: Vec<SourceSettings>,
    /// Delivery channels by name.
    pub channels: Vec<ChannelSettings>,
    /// Outbox worker settings.
    pub outbox: OutboxSettings,
    /// tracing filter (`RUST_LOG` syntax).
    pub log_filter: String,
    /// Privacy settings.
    pub privacy: Privacy,
    /// When the wall clock is trusted.
    pub clock: ClockSettings,
    /// Flood and junk guards before identity lookup (`[guard]`).
    pub guard: GuardConfig,
    /// The local HTTP API (`[api]`, `[webhooks.*]`); `None` when off.
    pub api: Option<crate::api::ApiSettings>,
}

/// Privacy settings: rotating app tokens and retention.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Privacy {
    /// Which beacons carry the retailer app's rotating tokens.
    pub app: AppBeacons,
    /// How long one app token is valid.
    pub app_token_slot: Duration,
    /// Visits, decisions and finished messages older than this are deleted.
    pub retention: Duration,
}

impl Default for Privacy {
    fn default() -> Privacy {
        Privacy {
            app: AppBeacons::default(),
            app_token_slot: Duration::from_secs(15 * 60),
            retention: Duration::from_secs(180 * 86_400),
        }
    }
}

impl Daemon {
    /// The first simulator source, if any (the demo and `record` take
    /// their shoppers from it).
    #[must_use]
    pub fn sim(&self) -> Option<&SimSettings> {
        self.sources.iter().find_map(|s| match s {
            SourceSettings::Sim(sim) => Some(sim),
            _ => None,
        })
    }

    /// The secret file: configured, or `secret.key` beside `database`.
    #[must_use]
    pub fn secret_path(&self, database: &Path) -> PathBuf {
        self.secret_file.clone().unwrap_or_else(|| {
            database
                .parent()
                .map_or_else(|| PathBuf::from("secret.key"), |d| d.join("secret.key"))
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    database: RawDatabase,
    #[serde(default, rename = "source")]
    sources: Vec<RawSource>,
    #[serde(default)]
    channels: BTreeMap<String, Spanned<super::providers::RawChannel>>,
    #[serde(default)]
    outbox: RawOutbox,
    #[serde(default)]
    log: RawLog,
    #[serde(default)]
    privacy: RawPrivacy,
    #[serde(default)]
    clock: RawClock,
    #[serde(default)]
    guard: RawGuard,
    api: Option<Spanned<super::api::RawApi>>,
    webhooks: Option<Spanned<super::api::RawWebhooks>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawClock {
    require_sync: Option<bool>,
    max_jump: Option<Dur>,
    settle: Option<Dur>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPrivacy {
    app_ibeacon_uuid: Option<Spanned<String>>,
    app_eddystone_namespace: Option<Spanned<String>>,
    app_token_slot: Option<Spanned<Dur>>,
    retention: Option<Spanned<Dur>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawGuard {
    min_interval: Option<Dur>,
    identity_interval: Option<Dur>,
    max_addresses: Option<Spanned<usize>>,
    max_identities: Option<Spanned<usize>>,
    identity_window: Option<Dur>,
    quarantine: Option<Dur>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDatabase {
    path: PathBuf,
    secret_file: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    kind: Spanned<String>,
    shoppers_per_hour: Option<u32>,
    seed: Option<u64>,
    opted_in_share: Option<Spanned<f64>>,
    customers: Option<PathBuf>,
    file: Option<PathBuf>,
    // ble
    adapter: Option<Spanned<String>>,
    scanner: Option<Spanned<String>>,
    silence: Option<Dur>,
    // ble and wifi
    retry_min: Option<Dur>,
    retry_max: Option<Dur>,
    // wifi
    backend: Option<Spanned<String>>,
    control: Option<PathBuf>,
    ping: Option<Dur>,
    interface: Option<String>,
    stale_after: Option<Dur>,
    poll: Option<Dur>,
    seen_every: Option<Dur>,
}

impl RawSource {
    /// The optional keys that are set, by name (for "does not apply").
    fn keys_set(&self) -> Vec<&'static str> {
        [
            ("shoppers_per_hour", self.shoppers_per_hour.is_some()),
            ("seed", self.seed.is_some()),
            ("opted_in_share", self.opted_in_share.is_some()),
            ("customers", self.customers.is_some()),
            ("file", self.file.is_some()),
            ("adapter", self.adapter.is_some()),
            ("scanner", self.scanner.is_some()),
            ("silence", self.silence.is_some()),
            ("retry_min", self.retry_min.is_some()),
            ("retry_max", self.retry_max.is_some()),
            ("backend", self.backend.is_some()),
            ("control", self.control.is_some()),
            ("ping", self.ping.is_some()),
            ("interface", self.interface.is_some()),
            ("stale_after", self.stale_after.is_some()),
            ("poll", self.poll.is_some()),
            ("seen_every", self.seen_every.is_some()),
        ]
        .into_iter()
        .filter_map(|(k, set)| set.then_some(k))
        .collect()
    }
}

/// Keys each source kind (and wifi backend) accepts.
const SIM_KEYS: &[&str] = &["shoppers_per_hour", "seed", "opted_in_share", "customers"];
/// Keys each live source kind (and wifi backend) accepts.
const BLE_KEYS: &[&str] = &["adapter", "scanner", "silence", "retry_min", "retry_max"];
const WIFI_KEYS: &[&str] = &["backend", "retry_min", "retry_max", "seen_every"];
const HOSTAPD_KEYS: &[&str] = &["control", "ping"];
const NEIGHBOURS_KEYS: &[&str] = &["interface", "stale_after"];
const LEASES_KEYS: &[&str] = &["file", "poll"];

fn default_shoppers() -> u32 {
    120
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawOutbox {
    lease: Option<Dur>,
    batch: Option<u32>,
    poll: Option<Dur>,
    max_attempts: Option<u32>,
    backoff_min: Option<Dur>,
    backoff_max: Option<Dur>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    filter: String,
}

impl Default for RawLog {
    fn default() -> RawLog {
        RawLog {
            filter: "info".into(),
        }
    }
}

pub(super) fn build(dir: &Path, src: &mut Source, layout: Option<&Layout>) -> Option<Daemon> {
    let raw: Raw = src.parse()?;
    let before = src.errors.len();
    let rel = |p: PathBuf| if p.is_relative() { dir.join(p) } else { p };

    let mut sources = Vec::new();
    for s in raw.sources {
        let kind = s.kind.get_ref().as_str();
        match kind {
            "sim" => {
                refuse_keys(src, &s, SIM_KEYS);
                let share = s.opted_in_share.as_ref().map_or(0.3, |v| *v.get_ref());
                if let Some(v) = &s.opted_in_share
                    && !(0.0..=1.0).contains(v.get_ref())
                {
                    src.error(
                        v.span(),
                        "opted_in_share is a fraction between 0.0 and 1.0",
                        None,
                    );
                }
                let Some(customers) = s.customers.clone() else {
                    src.error(
                        s.kind.span(),
                        "a sim source needs `customers`",
                        Some("the demo customers CSV, e.g. customers = \"customers.csv\"".into()),
                    );
                    continue;
                };
                sources.push(SourceSettings::Sim(SimSettings {
                    shoppers_per_hour: s.shoppers_per_hour.unwrap_or_else(default_shoppers),
                    seed: s.seed.unwrap_or(0),
                    opted_in_share: share,
                    customers: rel(customers),
                }));
            }
            "replay" => {
                refuse_keys(src, &s, &["file"]);
                let Some(file) = s.file.clone() else {
                    src.error(s.kind.span(), "a replay source needs `file`", None);
                    continue;
                };
                sources.push(SourceSettings::Replay { file: rel(file) });
            }
            "ble" => {
                refuse_keys(src, &s, BLE_KEYS);
                if let Some(b) = ble_source(src, &s, layout) {
                    sources.push(SourceSettings::Ble(b));
                }
            }
            "wifi" => {
                if let Some(w) = wifi_source(src, &s, &rel) {
                    sources.push(SourceSettings::Wifi(w));
                }
            }
            other => src.error(
                s.kind.span(),
                format!("unknown source kind `{other}`"),
                Some("this build knows: sim, replay, ble, wifi".into()),
            ),
        }
    }

    let channels = super::channels::build(&raw.channels, src);
    let defaults = OutboxSettings::default();
    let outbox = OutboxSettings {
        lease: raw.outbox.lease.map_or(defaults.lease, |d| d.0),
        batch: raw.outbox.batch.unwrap_or(defaults.batch).clamp(1, 1000),
        poll: raw.outbox.poll.map_or(defaults.poll, |d| d.0),
        max_attempts: raw
            .outbox
            .max_attempts
            .unwrap_or(defaults.max_attempts)
            .clamp(1, 100),
        backoff_min: raw.outbox.backoff_min.map_or(defaults.backoff_min, |d| d.0),
        backoff_max: raw.outbox.backoff_max.map_or(defaults.backoff_max, |d| d.0),
    };
    if outbox.backoff_max < outbox.backoff_min {
        src.error(
            0..0,
            "[outbox] backoff_max is shorter than backoff_min",
            Some("backoff_max is the longest wait between attempts".into()),
        );
    }
    if tracing_subscriber::EnvFilter::try_new(&raw.log.filter).is_err() {
        src.error(
            0..0,
            format!("invalid log filter {:?}", raw.log.filter),
            Some("use RUST_LOG syntax, e.g. \"info\" or \"nearcast=debug,info\"".into()),
        );
    }
    let defaults = Privacy::default();
    let p = &raw.privacy;
    let mut privacy = Privacy {
        app: AppBeacons::default(),
        app_token_slot: p
            .app_token_slot
            .as_ref()
            .map_or(defaults.app_token_slot, |d| d.get_ref().0),
        retention: p
            .retention
            .as_ref()
            .map_or(defaults.retention, |d| d.get_ref().0),
    };
    if let Some(u) = &p.app_ibeacon_uuid {
        match Uuid128::parse(u.get_ref()) {
            Some(uuid) => privacy.app.ibeacon_uuid = Some(uuid.to_bytes()),
            None => src.error(
                u.span(),
                "not a UUID",
                Some("write it like \"E2C56DB5-DFFB-48D2-B060-D0F5A71096E0\"".into()),
            ),
        }
    }
    if let Some(n) = &p.app_eddystone_namespace {
        let mut ns = [0u8; 10];
        if hex::decode_to_slice(n.get_ref(), &mut ns).is_ok() {
            privacy.app.eddystone_namespace = Some(ns);
        } else {
            src.error(n.span(), "an Eddystone namespace is 20 hex digits", None);
        }
    }
    if let Some(d) = &p.app_token_slot
        && !(Duration::from_secs(60)..=Duration::from_secs(86_400)).contains(&d.get_ref().0)
    {
        src.error(
            d.span(),
            "app_token_slot must be between 1m and 24h",
            Some("the app and the box must agree; 15m is the default".into()),
        );
    }
    if let Some(d) = &p.retention
        && d.get_ref().0 < Duration::from_secs(86_400)
    {
        src.error(
            d.span(),
            "retention must be at least 1d",
            Some(
                "visit-count and win-back campaigns need the visit history; 180d is the default"
                    .into(),
            ),
        );
    }
    let guard = guard_config(src, &raw.guard);
    let api = super::api::build(src, raw.api.as_ref(), raw.webhooks.as_ref(), &channels);
    if src.errors.len() > before {
        return None;
    }
    let clock_defaults = ClockSettings::default();
    let clock = ClockSettings {
        require_sync: raw
            .clock
            .require_sync
            .unwrap_or(clock_defaults.require_sync),
        max_jump: raw.clock.max_jump.map_or(clock_defaults.max_jump, |d| d.0),
        settle: raw.clock.settle.map_or(clock_defaults.settle, |d| d.0),
    };
    Some(Daemon {
        privacy,
        clock,
        database: rel(raw.database.path),
        secret_file: raw.database.secret_file.map(rel),
        sources,
        channels,
        outbox,
        log_filter: raw.log.filter,
        guard,
        api,
    })
}

/// Refuses keys set on a source that its kind does not take.
fn refuse_keys(src: &mut Source, s: &RawSource, allowed: &[&str]) {
    let kind = s.kind.get_ref();
    for key in s.keys_set() {
        if !allowed.contains(&key) {
            src.error(
                s.kind.span(),
                format!("`{key}` does not apply to a {kind} source"),
                Some(format!("a {kind} source takes: {}", allowed.join(", "))),
            );
        }
    }
}

fn ble_source(src: &mut Source, s: &RawSource, layout: Option<&Layout>) -> Option<BleSettings> {
    let adapter = s
        .adapter
        .as_ref()
        .map_or_else(|| "hci0".to_owned(), |a| a.get_ref().clone());
    let adapter_ok = adapter.len() <= 32
        && !adapter.is_empty()
        && adapter
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !adapter_ok {
        let span = s.adapter.as_ref().map_or(s.kind.span(), Spanned::span);
        src.error(
            span,
            format!("invalid adapter name {adapter:?}"),
            Some("a BlueZ adapter name such as \"hci0\" (see `bluetoothctl list`)".into()),
        );
        return None;
    }
    let scanner = match (layout, &s.scanner) {
        // zones.toml failed to load: its own errors say why.
        (None, _) => crate::core::types::ScannerIdx(0),
        (Some(l), None) => {
            if l.scanners.is_empty() {
                src.error(
                    s.kind.span(),
                    "a ble source needs a scanner, and zones.toml has none",
                    Some(
                        "add a [[scanner]] to zones.toml and name it here: scanner = \"door\""
                            .into(),
                    ),
                );
                return None;
            }
            crate::core::types::ScannerIdx(0)
        }
        (Some(l), Some(name)) => {
            if let Some(i) = l.scanner_index(name.get_ref()) {
                i
            } else {
                let hint = super::did_you_mean(name.get_ref(), l.scanners.iter().map(|s| &*s.id));
                src.error(
                    name.span(),
                    format!("unknown scanner `{}`", name.get_ref()),
                    Some(hint),
                );
                return None;
            }
        }
    };
    let mut b = BleSettings::new(&adapter, scanner);
    if let Some(d) = s.silence {
        b.silence = d.0.max(std::time::Duration::from_secs(1));
    }
    if let Some(d) = s.retry_min {
        b.retry_min = d.0;
    }
    if let Some(d) = s.retry_max {
        b.retry_max = d.0;
    }
    Some(b)
}

fn wifi_source(
    src: &mut Source,
    s: &RawSource,
    rel: &dyn Fn(PathBuf) -> PathBuf,
) -> Option<WifiSettings> {
    let Some(backend) = &s.backend else {
        src.error(
            s.kind.span(),
            "a wifi source needs `backend`",
            Some("one of: hostapd, neighbours, leases".into()),
        );
        return None;
    };
    let keys = |extra: &[&'static str]| -> Vec<&'static str> {
        WIFI_KEYS.iter().chain(extra).copied().collect()
    };
    let backend = match backend.get_ref().as_str() {
        "hostapd" => {
            refuse_keys(src, s, &keys(HOSTAPD_KEYS));
            let Some(control) = s.control.clone() else {
                src.error(
                    s.kind.span(),
                    "the hostapd backend needs `control`",
                    Some(
                        "hostapd's control socket, e.g. control = \"/var/run/hostapd/wlan0\""
                            .into(),
                    ),
                );
                return None;
            };
            Backend::Hostapd {
                control: rel(control),
                ping_every: s.ping.map_or(std::time::Duration::from_secs(10), |d| d.0),
            }
        }
        "neighbours" => {
            refuse_keys(src, s, &keys(NEIGHBOURS_KEYS));
            Backend::Neighbours {
                interface: s.interface.clone(),
                stale_after: s
                    .stale_after
                    .map_or(std::time::Duration::from_secs(300), |d| d.0),
            }
        }
        "leases" => {
            refuse_keys(src, s, &keys(LEASES_KEYS));
            let Some(file) = s.file.clone() else {
                src.error(
                    s.kind.span(),
                    "the leases backend needs `file`",
                    Some(
                        "dnsmasq's leases file, e.g. file = \"/var/lib/misc/dnsmasq.leases\""
                            .into(),
                    ),
                );
                return None;
            };
            Backend::Leases {
                file: rel(file),
                poll: s.poll.map_or(std::time::Duration::from_secs(2), |d| d.0),
            }
        }
        other => {
            src.error(
                backend.span(),
                format!("unknown wifi backend `{other}`"),
                Some(super::did_you_mean(
                    other,
                    ["hostapd", "neighbours", "leases"],
                )),
            );
            return None;
        }
    };
    let mut w = WifiSettings::new(backend);
    if let Some(d) = s.retry_min {
        w.retry_min = d.0;
    }
    if let Some(d) = s.retry_max {
        w.retry_max = d.0;
    }
    if let Some(d) = s.seen_every {
        w.seen_every = d.0.max(std::time::Duration::from_secs(1));
    }
    Some(w)
}

fn guard_config(src: &mut Source, raw: &RawGuard) -> GuardConfig {
    let d = GuardConfig::default();
    let mut count = |v: &Option<Spanned<usize>>, default: usize, min: usize, what: &str| match v {
        Some(n) if *n.get_ref() < min => {
            src.error(n.span(), format!("{what} must be at least {min}"), None);
            default
        }
        Some(n) => *n.get_ref(),
        None => default,
    };
    GuardConfig {
        max_addresses: count(&raw.max_addresses, d.max_addresses, 16, "max_addresses"),
        max_identities: count(&raw.max_identities, d.max_identities, 1, "max_identities"),
        min_interval: raw.min_interval.map_or(d.min_interval, |v| v.0),
        identity_interval: raw.identity_interval.map_or(d.identity_interval, |v| v.0),
        identity_window: raw.identity_window.map_or(d.identity_window, |v| v.0),
        quarantine: raw.quarantine.map_or(d.quarantine, |v| v.0),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{CAMPAIGNS_FILE, DAEMON_FILE, Errors, ZONES_FILE, load};

    /// The example config with `sources` appended to nearcast.toml.
    fn with_sources(sources: &str) -> (tempfile::TempDir, Result<crate::config::Config, Errors>) {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        for name in [DAEMON_FILE, ZONES_FILE, CAMPAIGNS_FILE] {
            let mut text = std::fs::read_to_string(example.join(name)).unwrap_or_default();
            if name == DAEMON_FILE {
                text = text.replacen(
                    "[channels.whatsapp]",
                    &format!("{sources}\n[channels.whatsapp]"),
                    1,
                );
            }
            std::fs::write(dir.path().join(name), text).unwrap_or_else(|e| panic!("{e}"));
        }
        let r = load(dir.path());
        (dir, r)
    }

    fn errors(sources: &str) -> Vec<String> {
        let (_d, r) = with_sources(sources);
        let Err(Errors(errs)) = r else {
            panic!("accepted: {sources}")
        };
        errs.iter()
            .map(|e| {
                format!(
                    "{}:{} {} | {}",
                    e.line,
                    e.column,
                    e.message,
                    e.hint.as_deref().unwrap_or("")
                )
            })
            .collect()
    }

    fn line_of(text: &str, needle: &str) -> usize {
        let example = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("config")
                .join(DAEMON_FILE),
        )
        .unwrap_or_default();
        let at = example.find("[channels.whatsapp]").unwrap_or(0);
        let before = example[..at].lines().count();
        before + text.lines().position(|l| l.contains(needle)).unwrap_or(0) + 1
    }

    #[test]
    fn live_sources_are_read_with_their_settings() {
        let (dir, r) = with_sources(
            "[[source]]\nkind = \"ble\"\nadapter = \"hci1\"\nscanner = \"coffee\"\nsilence = \"2m\"\n\n\
             [[source]]\nkind = \"wifi\"\nbackend = \"hostapd\"\ncontrol = \"run/wlan0\"\n\n\
             [[source]]\nkind = \"wifi\"\nbackend = \"leases\"\nfile = \"/var/lib/misc/dnsmasq.leases\"\nseen_every = \"10s\"\n\n\
             [guard]\nmax_identities = 2\n",
        );
        let c = r.unwrap_or_else(|e| panic!("{e}"));
        let live: Vec<&SourceSettings> = c.daemon.sources.iter().filter(|s| s.is_live()).collect();
        let SourceSettings::Ble(b) = live[0] else {
            panic!("{live:?}")
        };
        assert_eq!((b.adapter.as_str(), b.scanner.0), ("hci1", 1));
        assert_eq!(b.silence, std::time::Duration::from_secs(120));
        let SourceSettings::Wifi(w) = live[1] else {
            panic!("{live:?}")
        };
        assert_eq!(
            w.backend,
            Backend::Hostapd {
                control: dir.path().join("run/wlan0"),
                ping_every: std::time::Duration::from_secs(10)
            }
        );
        let SourceSettings::Wifi(w) = live[2] else {
            panic!("{live:?}")
        };
        assert_eq!(w.seen_every, std::time::Duration::from_secs(10));
        assert_eq!(c.daemon.guard.max_identities, 2);
        assert_eq!(
            c.daemon.guard.min_interval,
            GuardConfig::default().min_interval
        );
    }

    #[test]
    fn mistakes_in_live_sources_are_pointed_at() {
        let src = "[[source]]\nkind = \"ble\"\nscanner = \"cofee\"\n";
        assert_eq!(
            errors(src),
            [format!(
                "{}:11 unknown scanner `cofee` | did you mean `coffee`? known: door, coffee, till",
                line_of(src, "scanner =")
            )]
        );
        let src = "[[source]]\nkind = \"ble\"\ncontrol = \"/x\"\n";
        assert_eq!(
            errors(src),
            [format!(
                "{}:8 `control` does not apply to a ble source | a ble source takes: adapter, scanner, silence, retry_min, retry_max",
                line_of(src, "kind =")
            )]
        );
        let src = "[[source]]\nkind = \"wifi\"\nbackend = \"hostpad\"\n";
        assert_eq!(
            errors(src),
            [format!(
                "{}:11 unknown wifi backend `hostpad` | did you mean `hostapd`? known: hostapd, neighbours, leases",
                line_of(src, "backend =")
            )]
        );
        let src = "[[source]]\nkind = \"wifi\"\nbackend = \"leases\"\n";
        assert!(errors(src)[0].contains("the leases backend needs `file`"));
        let src = "[[source]]\nkind = \"wifi\"\n";
        assert!(errors(src)[0].contains("a wifi source needs `backend`"));
        let src = "[[source]]\nkind = \"ble\"\nadapter = \"hci 0\"\n";
        assert!(errors(src)[0].contains("invalid adapter name \"hci 0\""));
        let src = "[guard]\nmax_addresses = 3\n";
        assert!(errors(src)[0].contains("max_addresses must be at least 16"));
    }
}

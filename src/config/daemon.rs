//! `nearcast.toml`: database, sources, channels, outbox, logging, privacy,
//! clock, guards, the local API and the MQTT broker; one builder per
//! section (sources, channels, the API and MQTT have their own files).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::zones::Zones;
use super::{Dur, Source};
use crate::channel::{ChannelSettings, OutboxSettings};
use crate::clock::ClockSettings;
use crate::core::guard::GuardConfig;
use crate::core::identity::AppBeacons;
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
    sources: Vec<super::sources::RawSource>,
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
    mqtt: Option<Spanned<super::mqtt::RawMqtt>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawClock {
    require_sync: Option<bool>,
    max_jump: Option<Spanned<Dur>>,
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
    min_interval: Option<Spanned<Dur>>,
    identity_interval: Option<Spanned<Dur>>,
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

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawOutbox {
    lease: Option<Spanned<Dur>>,
    batch: Option<Spanned<u32>>,
    poll: Option<Spanned<Dur>>,
    max_attempts: Option<Spanned<u32>>,
    backoff_min: Option<Dur>,
    backoff_max: Option<Spanned<Dur>>,
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

pub(super) fn build(dir: &Path, src: &mut Source, zones: Option<&Zones>) -> Option<Daemon> {
    let raw: Raw = src.parse()?;
    let before = src.errors.len();
    let rel = |p: PathBuf| if p.is_relative() { dir.join(p) } else { p };

    let mut sources = super::sources::build(raw.sources, src, zones, &rel);
    if let Some(m) = super::mqtt::build(src, raw.mqtt.as_ref(), zones, &rel) {
        sources.push(SourceSettings::Mqtt(m));
    }
    let channels = super::channels::build(&raw.channels, src);
    let outbox = outbox(src, &raw.outbox);
    lease_outlasts_requests(src, &raw.outbox, &raw.channels, &channels, outbox.lease);
    check_log_filter(src, &raw.log.filter);
    let privacy = privacy(src, &raw.privacy);
    let guard = guard_config(src, &raw.guard);
    let api = super::api::build(src, raw.api.as_ref(), raw.webhooks.as_ref(), &channels);
    let clock = clock(src, &raw.clock);
    if src.errors.len() > before {
        return None;
    }
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

/// `[outbox]`: lease, batch and retries, within bounds: a value outside
/// them is refused, never quietly replaced (a zero lease or no attempts
/// would leave every message unsent).
fn outbox(src: &mut Source, raw: &RawOutbox) -> OutboxSettings {
    let d = OutboxSettings::default();
    let secs = |s| Dur(Duration::from_secs(s));
    let lease = within(src, raw.lease.as_ref(), Dur(d.lease), "lease", secs(1)..=secs(3600),
        "a message claimed by a worker that stopped is sent again after the lease; 30s is the default").0;
    let poll = within(
        src,
        raw.poll.as_ref(),
        Dur(d.poll),
        "poll",
        Dur(Duration::from_millis(100))..=secs(60),
        "how often an idle worker looks for due messages; 1s is the default",
    )
    .0;
    let batch = within(
        src,
        raw.batch.as_ref(),
        d.batch,
        "batch",
        1..=1000,
        "messages claimed per round; 32 is the default",
    );
    let max_attempts = within(
        src,
        raw.max_attempts.as_ref(),
        d.max_attempts,
        "max_attempts",
        1..=100,
        "attempts before a message failing on a working channel is given up; 10 is the default",
    );
    let outbox = OutboxSettings {
        lease,
        batch,
        poll,
        max_attempts,
        backoff_min: raw.backoff_min.map_or(d.backoff_min, |d| d.0),
        backoff_max: raw
            .backoff_max
            .as_ref()
            .map_or(d.backoff_max, |d| d.get_ref().0),
    };
    if outbox.backoff_max < outbox.backoff_min {
        src.error(
            raw.backoff_max.as_ref().map_or(0..0, Spanned::span),
            "[outbox] backoff_max is shorter than backoff_min",
            Some("backoff_max is the longest wait between attempts".into()),
        );
    }
    outbox
}

/// How much longer than a channel's request timeout the outbox lease must
/// be: the claim's commit, loading the secret and rendering come before
/// the request, and a slow SD card makes the commit slow.
pub const LEASE_MARGIN: Duration = Duration::from_secs(5);

/// `[outbox] lease` against each channel's `timeout`: a lease that can run
/// out while a request is still in flight lets another worker (a
/// `broadcast` beside the daemon) claim the row again, and a provider that
/// cannot tell a repeat would get the message twice. Refused, at the lease
/// (or, when the lease is the default, at the channel).
fn lease_outlasts_requests(
    src: &mut Source,
    raw: &RawOutbox,
    raw_channels: &BTreeMap<String, Spanned<super::providers::RawChannel>>,
    channels: &[ChannelSettings],
    lease: Duration,
) {
    let Some((name, timeout)) = channels
        .iter()
        .filter_map(|c| Some((c.name.as_str(), c.adapter.timeout()?)))
        .max_by_key(|(_, t)| *t)
    else {
        return;
    };
    let need = timeout + LEASE_MARGIN;
    if lease > need {
        return;
    }
    let span = match (&raw.lease, raw_channels.get(name)) {
        (Some(l), _) => l.span(),
        (None, Some(c)) => c.get_ref().timeout.as_ref().map_or(c.span(), Spanned::span),
        (None, None) => 0..0,
    };
    src.error(
        span,
        format!(
            "[outbox] lease ({}) is not longer than the `{name}` channel's timeout ({}) plus {} s: \
             another worker could claim a message while its request is still in flight",
            humantime(lease),
            humantime(timeout),
            LEASE_MARGIN.as_secs()
        ),
        Some(format!(
            "set [outbox] lease = \"{}s\" or more, or a shorter timeout for `{name}`",
            need.as_secs() + 1
        )),
    );
}

/// A duration as the config writes it (`"30s"`, `"1500ms"`).
fn humantime(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// An `[outbox]` value within `range`, or an error at it (and `default`).
fn within<T: Copy + PartialOrd + Into<Shown>>(
    src: &mut Source,
    v: Option<&Spanned<T>>,
    default: T,
    key: &str,
    range: std::ops::RangeInclusive<T>,
    hint: &str,
) -> T {
    match v {
        Some(v) if range.contains(v.get_ref()) => *v.get_ref(),
        Some(v) => {
            src.error(
                v.span(),
                format!(
                    "[outbox] {key} must be between {} and {}",
                    (*range.start()).into(),
                    (*range.end()).into()
                ),
                Some(hint.to_owned()),
            );
            default
        }
        None => default,
    }
}

/// A bound as written in the file: `"1s"` or `100`.
struct Shown(String);

impl std::fmt::Display for Shown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<u32> for Shown {
    fn from(n: u32) -> Shown {
        Shown(n.to_string())
    }
}

impl From<Dur> for Shown {
    fn from(d: Dur) -> Shown {
        Shown(format!(
            "\"{:#}\"",
            jiff::SignedDuration::try_from(d.0).unwrap_or_default()
        ))
    }
}

/// `[log] filter` in `RUST_LOG` syntax.
fn check_log_filter(src: &mut Source, filter: &str) {
    if tracing_subscriber::EnvFilter::try_new(filter).is_err() {
        src.error(
            0..0,
            format!("invalid log filter {:?}", filter),
            Some("use RUST_LOG syntax, e.g. \"info\" or \"nearcast=debug,info\"".into()),
        );
    }
}

/// `[privacy]`: the app's rotating-token beacons, their slot, retention.
fn privacy(src: &mut Source, p: &RawPrivacy) -> Privacy {
    let defaults = Privacy::default();
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
        privacy.app.ibeacon_uuid = super::ibeacon_uuid(src, u);
    }
    if let Some(n) = &p.app_eddystone_namespace {
        privacy.app.eddystone_namespace = super::eddystone_namespace(src, n);
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
    privacy
}

/// `[clock]`: when the wall clock is trusted. A `max_jump` under a second
/// would take NTP's ordinary slewing for jumps and hold every decision.
fn clock(src: &mut Source, raw: &RawClock) -> ClockSettings {
    let clock_defaults = ClockSettings::default();
    if let Some(j) = &raw.max_jump
        && j.get_ref().0 < Duration::from_secs(1)
    {
        src.error(
            j.span(),
            "[clock] max_jump must be at least 1s",
            Some("a step larger than this holds decisions for `settle`; 2m is the default".into()),
        );
    }
    ClockSettings {
        require_sync: raw.require_sync.unwrap_or(clock_defaults.require_sync),
        max_jump: raw
            .max_jump
            .as_ref()
            .map_or(clock_defaults.max_jump, |d| d.get_ref().0),
        settle: raw.settle.map_or(clock_defaults.settle, |d| d.0),
    }
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
    let max_addresses = count(&raw.max_addresses, d.max_addresses, 16, "max_addresses");
    let max_identities = count(&raw.max_identities, d.max_identities, 1, "max_identities");
    // Presence averages a scanner's samples over a window of seconds; a
    // guard letting one through less often would starve it.
    let mut interval = |v: &Option<Spanned<Dur>>, default: Duration, what: &str| match v {
        Some(i) if i.get_ref().0 > Duration::from_secs(1) => {
            src.error(
                i.span(),
                format!("[guard] {what} must be at most 1s"),
                Some("presence needs several samples per scanner within `[radio] window`; 100ms is the default".into()),
            );
            default
        }
        Some(i) => i.get_ref().0,
        None => default,
    };
    GuardConfig {
        max_addresses,
        max_identities,
        min_interval: interval(&raw.min_interval, d.min_interval, "min_interval"),
        identity_interval: interval(
            &raw.identity_interval,
            d.identity_interval,
            "identity_interval",
        ),
        identity_window: raw.identity_window.map_or(d.identity_window, |v| v.0),
        quarantine: raw.quarantine.map_or(d.quarantine, |v| v.0),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{CAMPAIGNS_FILE, DAEMON_FILE, Errors, ZONES_FILE, load};
    use crate::source::wifi::Backend;

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

    /// The errors of the example config with `edit` applied to
    /// nearcast.toml, as `line:column message | hint`, and the edited text.
    fn edited(edit: impl Fn(String) -> String) -> (Vec<String>, String) {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let mut daemon = String::new();
        for name in [DAEMON_FILE, ZONES_FILE, CAMPAIGNS_FILE] {
            let mut text = std::fs::read_to_string(example.join(name)).unwrap_or_default();
            if name == DAEMON_FILE {
                text = edit(text);
                daemon.clone_from(&text);
            }
            std::fs::write(dir.path().join(name), text).unwrap_or_else(|e| panic!("{e}"));
        }
        let errors = match load(dir.path()) {
            Ok(_) => Vec::new(),
            Err(Errors(errs)) => errs
                .iter()
                .map(|e| {
                    format!(
                        "{}:{} {} | {}",
                        e.line,
                        e.column,
                        e.message,
                        e.hint.as_deref().unwrap_or("")
                    )
                })
                .collect(),
        };
        (errors, daemon)
    }

    #[test]
    fn a_lease_that_a_request_can_outlast_is_refused() {
        fn crm(timeout: &'static str) -> impl Fn(String) -> String {
            move |text: String| {
                text.replacen(
                    "[channels.whatsapp]",
                    &format!(
                        "[channels.crm]\nadapter = \"webhook\"\nurl = \"https://crm.example.com/n/\"\n\
                         token_file = \"crm\"\ntimeout = \"{timeout}\"\n\n[channels.whatsapp]"
                    ),
                    1,
                )
            }
        }
        // The example's lease (30s) against a 25s timeout: refused at the lease.
        let (errors, text) = edited(crm("25s"));
        let line = text
            .lines()
            .position(|l| l.starts_with("lease ="))
            .unwrap_or(0)
            + 1;
        assert_eq!(
            errors,
            [format!(
                "{line}:9 [outbox] lease (30s) is not longer than the `crm` channel's timeout (25s) plus 5 s: \
                 another worker could claim a message while its request is still in flight \
                 | set [outbox] lease = \"31s\" or more, or a shorter timeout for `crm`"
            )]
        );
        // With the default lease (30s, not written), at the channel's timeout.
        let (errors, text) = edited(|t| crm("60s")(t).replace("lease = \"30s\"", ""));
        let line = text
            .lines()
            .position(|l| l.starts_with("timeout = \"60s\""))
            .unwrap_or(0)
            + 1;
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with(&format!("{line}:11 [outbox] lease (30s) is not longer than the `crm` channel's timeout (60s)")),
            "{errors:?}"
        );
        // Longer than timeout and margin: fine.
        assert_eq!(edited(crm("24s")).0, Vec::<String>::new());
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

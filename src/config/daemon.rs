//! `nearcast.toml`: database, sources, channels, outbox and logging.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::{Dur, Source, valid_id};
use crate::core::identity::AppBeacons;
use crate::core::message::Variant;
use crate::core::types::Uuid128;

/// Daemon settings.
#[derive(Clone, Debug, PartialEq)]
pub struct Daemon {
    /// SQLite database file.
    pub database: PathBuf,
    /// Installation secret (identity hashing key); beside the database unless set.
    pub secret_file: Option<PathBuf>,
    /// Where observations come from.
    pub sources: Vec<SourceConfig>,
    /// Delivery channels by name.
    pub channels: Vec<ChannelConfig>,
    /// Outbox worker settings.
    pub outbox: OutboxConfig,
    /// tracing filter (`RUST_LOG` syntax).
    pub log_filter: String,
    /// Privacy settings.
    pub privacy: Privacy,
    /// When the wall clock is trusted.
    pub clock: ClockConfig,
}

/// When the wall clock is trusted (the box has no real-time clock).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClockConfig {
    /// Wait for the kernel to report NTP synchronisation.
    pub require_sync: bool,
    /// A step larger than this (wall against monotonic) is a jump.
    pub max_jump: Duration,
    /// After a jump, trust again once steady this long.
    pub settle: Duration,
}

impl Default for ClockConfig {
    fn default() -> ClockConfig {
        ClockConfig {
            require_sync: true,
            max_jump: Duration::from_secs(120),
            settle: Duration::from_secs(60),
        }
    }
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

/// A configured source of observations.
#[derive(Clone, Debug, PartialEq)]
pub enum SourceConfig {
    /// The built-in store simulator.
    Sim {
        /// Shoppers per hour.
        shoppers_per_hour: u32,
        /// Random seed.
        seed: u64,
        /// Share of shoppers who are enrolled customers.
        opted_in_share: f64,
        /// Enrolled customers' identities in clear (the demo's customers CSV).
        customers: PathBuf,
    },
    /// A recording, replayed in real time.
    Replay {
        /// The JSON Lines file.
        file: PathBuf,
    },
}

/// How a channel is delivered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Adapter {
    /// Print to standard output (demos, dry runs).
    Console,
    /// WhatsApp Business Cloud API.
    WhatsApp(super::providers::WhatsAppSettings),
    /// Twilio Programmable Messaging (SMS, MMS, WhatsApp).
    Twilio(super::providers::TwilioSettings),
    /// Vonage Messages API (SMS, MMS, WhatsApp, Viber).
    Vonage(super::providers::VonageSettings),
    /// Signed JSON POST to the retailer's own system.
    Webhook(super::providers::WebhookSettings),
}

/// A delivery channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelConfig {
    /// Name customers' preferences refer to (`whatsapp`, `sms`, `mms`).
    pub name: String,
    /// Richest variant it carries.
    pub variant: Variant,
    /// Adapter.
    pub adapter: Adapter,
}

/// Outbox worker settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxConfig {
    /// A claimed row is someone else's to retry after this long.
    pub lease: Duration,
    /// Rows claimed per round.
    pub batch: u32,
    /// How often the worker looks for due rows when idle.
    pub poll: Duration,
}

impl Default for OutboxConfig {
    fn default() -> OutboxConfig {
        OutboxConfig {
            lease: Duration::from_secs(30),
            batch: 32,
            poll: Duration::from_secs(1),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    database: RawDatabase,
    #[serde(default, rename = "source")]
    sources: Vec<RawSource>,
    #[serde(default)]
    channels: BTreeMap<String, Spanned<RawChannel>>,
    #[serde(default)]
    outbox: RawOutbox,
    #[serde(default)]
    log: RawLog,
    #[serde(default)]
    privacy: RawPrivacy,
    #[serde(default)]
    clock: RawClock,
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
}

fn default_shoppers() -> u32 {
    120
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawChannel {
    adapter: Spanned<String>,
    variant: Option<Spanned<String>>,
    // Provider settings, checked per adapter in `providers`.
    pub(super) base_url: Option<Spanned<String>>,
    pub(super) api_version: Option<Spanned<String>>,
    pub(super) phone_number_id: Option<Spanned<String>>,
    pub(super) account_sid: Option<Spanned<String>>,
    pub(super) api_key: Option<Spanned<String>>,
    pub(super) from: Option<Spanned<String>>,
    pub(super) messaging_service_sid: Option<Spanned<String>>,
    pub(super) content_sids: Option<Spanned<BTreeMap<String, Spanned<String>>>>,
    pub(super) provider_channel: Option<Spanned<String>>,
    pub(super) allow_text: Option<Spanned<bool>>,
    pub(super) status_callback: Option<Spanned<String>>,
    pub(super) url: Option<Spanned<String>>,
    pub(super) token_env: Option<Spanned<String>>,
    pub(super) token_file: Option<Spanned<String>>,
    pub(super) timeout: Option<Spanned<Dur>>,
    // Secrets written inline: read only to be refused with a hint.
    pub(super) token: Option<Spanned<toml::Value>>,
    pub(super) auth_token: Option<Spanned<toml::Value>>,
    pub(super) access_token: Option<Spanned<toml::Value>>,
    pub(super) api_secret: Option<Spanned<toml::Value>>,
    pub(super) secret: Option<Spanned<toml::Value>>,
    pub(super) password: Option<Spanned<toml::Value>>,
    pub(super) signing_key: Option<Spanned<toml::Value>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawOutbox {
    lease: Option<Dur>,
    batch: Option<u32>,
    poll: Option<Dur>,
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

/// The variant a channel carries when config doesn't say.
fn default_variant(name: &str) -> Variant {
    match name {
        "whatsapp" | "viber" | "messenger" | "rcs" => Variant::Rich,
        "mms" => Variant::Medium,
        _ => Variant::Plain,
    }
}

pub(super) fn build(dir: &Path, src: &mut Source) -> Option<Daemon> {
    let raw: Raw = src.parse()?;
    let before = src.errors.len();
    let rel = |p: PathBuf| if p.is_relative() { dir.join(p) } else { p };

    let mut sources = Vec::new();
    for s in raw.sources {
        let kind = s.kind.get_ref().as_str();
        let stray = |src: &mut Source, what: &str, present: bool| {
            if present {
                src.error(
                    s.kind.span(),
                    format!("`{what}` does not apply to a {kind} source"),
                    None,
                );
            }
        };
        match kind {
            "sim" => {
                stray(src, "file", s.file.is_some());
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
                sources.push(SourceConfig::Sim {
                    shoppers_per_hour: s.shoppers_per_hour.unwrap_or_else(default_shoppers),
                    seed: s.seed.unwrap_or(0),
                    opted_in_share: share,
                    customers: rel(customers),
                });
            }
            "replay" => {
                stray(src, "customers", s.customers.is_some());
                stray(src, "opted_in_share", s.opted_in_share.is_some());
                let Some(file) = s.file.clone() else {
                    src.error(s.kind.span(), "a replay source needs `file`", None);
                    continue;
                };
                sources.push(SourceConfig::Replay { file: rel(file) });
            }
            other => src.error(
                s.kind.span(),
                format!("unknown source kind `{other}`"),
                Some("this build knows: sim, replay".into()),
            ),
        }
    }

    let mut channels = Vec::new();
    for (name, ch) in &raw.channels {
        if !valid_id(name) {
            src.error(
                ch.span(),
                format!("channel name `{name}` must be lowercase letters, digits, `-` or `_`"),
                None,
            );
        }
        let c = ch.get_ref();
        let adapter = match c.adapter.get_ref().as_str() {
            "console" => {
                super::providers::check_keys("console", c, name, src);
                Adapter::Console
            }
            "whatsapp" | "twilio" | "vonage" | "webhook" => {
                super::providers::build(&c.adapter, c, name, src).unwrap_or(Adapter::Console)
            }
            other => {
                src.error(
                    c.adapter.span(),
                    format!("unknown adapter `{other}`"),
                    Some("this build knows: console, whatsapp, twilio, vonage, webhook".into()),
                );
                Adapter::Console
            }
        };
        let variant = match &c.variant {
            None => default_variant(name),
            Some(v) => Variant::parse(v.get_ref()).unwrap_or_else(|| {
                src.error(
                    v.span(),
                    format!("unknown variant `{}`", v.get_ref()),
                    Some("one of: rich, medium, plain".into()),
                );
                Variant::Plain
            }),
        };
        channels.push(ChannelConfig {
            name: name.clone(),
            variant,
            adapter,
        });
    }

    let defaults = OutboxConfig::default();
    let outbox = OutboxConfig {
        lease: raw.outbox.lease.map_or(defaults.lease, |d| d.0),
        batch: raw.outbox.batch.unwrap_or(defaults.batch).clamp(1, 1000),
        poll: raw.outbox.poll.map_or(defaults.poll, |d| d.0),
    };
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
    if src.errors.len() > before {
        return None;
    }
    let clock_defaults = ClockConfig::default();
    let clock = ClockConfig {
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
    })
}

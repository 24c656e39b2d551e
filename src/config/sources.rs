//! `[[source]]` of `nearcast.toml`: which kinds there are (`sim`,
//! `replay`, `ble`, `wifi` and its backends), the keys each takes, and the
//! settings each builds (owned by `source`).
//!
//! Reads nothing but the parsed TOML.

use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::zones::Zones;
use super::{Dur, Source};
use crate::core::zones::Layout;
use crate::source::ble::BleSettings;
use crate::source::mqtt::RemoteScanner;
use crate::source::wifi::{Backend, WifiSettings};
use crate::source::{SimSettings, SourceSettings};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSource {
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

/// Builds every source, recording problems in `src`; `rel` resolves a
/// relative path against the configuration directory.
pub(super) fn build(
    raw: Vec<RawSource>,
    src: &mut Source,
    zones: Option<&Zones>,
    rel: &dyn Fn(PathBuf) -> PathBuf,
) -> Vec<SourceSettings> {
    let layout = zones.map(|z| &z.layout);
    let remote = zones.map_or(&[][..], |z| &z.remote[..]);
    let mut sources = Vec::new();
    for s in raw {
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
                if let Some(b) = ble_source(src, &s, layout, remote) {
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

    sources
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

fn ble_source(
    src: &mut Source,
    s: &RawSource,
    layout: Option<&Layout>,
    remote: &[RemoteScanner],
) -> Option<BleSettings> {
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
    if let Some(r) = remote.iter().find(|r| r.scanner == scanner) {
        let span = s.scanner.as_ref().map_or(s.kind.span(), Spanned::span);
        src.error(
            span,
            format!(
                "scanner `{}` is a remote {} node in zones.toml, not an adapter of this box",
                layout
                    .and_then(|l| l.scanners.get(usize::from(scanner.0)))
                    .map_or("?", |sc| &*sc.id),
                r.kind.name()
            ),
            Some("name a scanner without `source` (or with source = \"local\") here".into()),
        );
        return None;
    }
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

//! Configuration: `nearcast.toml` (daemon), `zones.toml` (floor plan and
//! hours), `campaigns.toml` (campaigns, messages, limits).
//!
//! Parses TOML with unknown keys refused, checks cross-references, and
//! builds the core's types (`Layout`, `Engine`). Every problem is reported
//! with file, line, column and what to change. Reads files; never writes,
//! never touches the database or the network.

mod api;
mod campaigns;
mod channels;
mod daemon;
mod mqtt;
mod providers;
mod sources;
mod zones;

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use toml::Spanned;

use crate::credentials::SecretRef;

use crate::core::campaign::Engine;
use crate::core::types::Uuid128;
use crate::core::zones::Layout;

pub use daemon::{Daemon, Privacy};

/// The file names in a config directory.
pub const DAEMON_FILE: &str = "nearcast.toml";
/// Floor plan, hours and time zone.
pub const ZONES_FILE: &str = "zones.toml";
/// Campaigns, messages and limits.
pub const CAMPAIGNS_FILE: &str = "campaigns.toml";

/// A complete, validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// The directory it was read from.
    pub dir: PathBuf,
    /// Daemon settings.
    pub daemon: Daemon,
    /// Store id (`zones.toml` `store_id`), for idempotency keys and logs.
    pub store_id: String,
    /// Floor plan.
    pub layout: Arc<Layout>,
    /// Campaigns and rules.
    pub engine: Arc<Engine>,
}

/// One problem in a config file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    /// The file.
    pub file: PathBuf,
    /// 1-based line (0 when the problem is the file as a whole).
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// What is wrong.
    pub message: String,
    /// What to change.
    pub hint: Option<String>,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.message
        )?;
        if let Some(h) = &self.hint {
            write!(f, "\n  hint: {h}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
impl Error {
    /// `line:column: message | hint`, without the file: what the tests
    /// compare.
    pub(crate) fn brief(&self) -> String {
        let hint = self
            .hint
            .as_deref()
            .map(|h| format!(" | {h}"))
            .unwrap_or_default();
        format!("{}:{}: {}{hint}", self.line, self.column, self.message)
    }
}

/// Every problem found, in file order.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct Errors(pub Vec<Error>);

impl fmt::Display for Errors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl Config {
    /// Every secret the configuration names, with what needs it
    /// (`channel whatsapp`, `[webhooks.vonage]`): for the start-up check
    /// that says which credential is missing before the first send needs it.
    #[must_use]
    pub fn secrets(&self) -> Vec<(String, &SecretRef)> {
        use crate::channel::AdapterSettings as A;
        let mut v = Vec::new();
        for c in &self.daemon.channels {
            let token = match &c.adapter {
                A::Console => None,
                A::WhatsApp(s) => Some(&s.token),
                A::Twilio(s) => Some(&s.token),
                A::Vonage(s) => Some(&s.token),
                A::Webhook(s) => Some(&s.token),
            };
            if let Some(t) = token {
                v.push((format!("channel {}", c.name), t));
            }
        }
        if let Some(api) = &self.daemon.api {
            if let Some(t) = &api.token {
                v.push(("[api] token".to_owned(), t));
            }
            if let Some(w) = &api.whatsapp {
                v.push(("[webhooks.whatsapp] app_secret".to_owned(), &w.app_secret));
                v.push((
                    "[webhooks.whatsapp] verify_token".to_owned(),
                    &w.verify_token,
                ));
            }
            if let Some(t) = &api.twilio {
                v.push(("[webhooks.twilio] auth_token".to_owned(), t));
            }
            if let Some(t) = &api.vonage {
                v.push(("[webhooks.vonage] signature_secret".to_owned(), t));
            }
        }
        for s in &self.daemon.sources {
            if let crate::source::SourceSettings::Mqtt(m) = s
                && let Some(p) = &m.connection.password
            {
                v.push(("[mqtt] password".to_owned(), p));
            }
        }
        v
    }

    /// The named secrets that cannot be loaded from `env` now, each as a
    /// sentence naming what needs it and where it was looked for (never a
    /// value). A missing credential is not fatal: what needs it fails
    /// until it is there (a channel rests as misconfigured, a webhook
    /// answers 503).
    #[must_use]
    pub fn missing_secrets(&self, env: &dyn crate::credentials::Env) -> Vec<String> {
        self.secrets()
            .into_iter()
            .filter_map(|(what, r)| {
                crate::credentials::load_secret(r, env).err().map(|e| {
                    let hint = match r {
                        SecretRef::File(p) if p.is_relative() => format!(
                            "; under systemd put it in /etc/credstore/nearcast.{} (mode 0600) and restart",
                            p.display()
                        ),
                        _ => String::new(),
                    };
                    format!("{what}: {e}{hint}")
                })
            })
            .collect()
    }
}

/// A source file being checked: collects errors with positions.
pub(crate) struct Source {
    path: PathBuf,
    text: String,
    errors: Vec<Error>,
}

impl Source {
    fn read(path: PathBuf) -> Result<Source, Error> {
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Source { path, text, errors: Vec::new() }),
            Err(e) => Err(Error {
                file: path,
                line: 0,
                column: 0,
                message: format!("cannot read: {e}"),
                hint: Some("check the --config directory; `config/` in the repository has a complete example".into()),
            }),
        }
    }

    #[cfg(test)]
    fn inline(name: &str, text: &str) -> Source {
        Source {
            path: PathBuf::from(name),
            text: text.to_owned(),
            errors: Vec::new(),
        }
    }

    fn position(&self, offset: usize) -> (usize, usize) {
        let before = &self.text[..offset.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        (line, column)
    }

    /// Records an error at `span`.
    pub(crate) fn error(
        &mut self,
        span: Range<usize>,
        message: impl Into<String>,
        hint: impl Into<Option<String>>,
    ) {
        let (line, column) = self.position(span.start);
        self.errors.push(Error {
            file: self.path.clone(),
            line,
            column,
            message: message.into(),
            hint: hint.into(),
        });
    }

    /// Parses the whole file as `T`, recording a syntax or type error.
    fn parse<T: serde::de::DeserializeOwned>(&mut self) -> Option<T> {
        match toml::from_str::<T>(&self.text) {
            Ok(v) => Some(v),
            Err(e) => {
                let message = e.message().to_owned();
                let hint = hint_for(&message);
                self.error(e.span().unwrap_or(0..0), message, hint);
                None
            }
        }
    }
}

fn hint_for(message: &str) -> Option<String> {
    if message.starts_with("unknown field") {
        Some("remove the key or fix its spelling; the commented example in `config/` lists every key".into())
    } else if message.contains("duration") {
        Some("write durations like \"90s\", \"15m\", \"24h\" or \"7d\"".into())
    } else if message.starts_with("missing field") {
        Some("add the key; the commented example in `config/` shows its form".into())
    } else {
        None
    }
}

/// A duration written as `"90s"`, `"15m"`, `"24h"`, `"7d"`, `"1h 30m"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Dur, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s)
            .map(Dur)
            .map_err(serde::de::Error::custom)
    }
}

/// Parses a friendly duration; days and weeks count 24 h and 7 days.
///
/// # Errors
/// A message saying what form is expected.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad =
        || format!("invalid duration {s:?}: write it like \"90s\", \"15m\", \"24h\" or \"7d\"");
    let span: jiff::Span = s.trim().parse().map_err(|_| bad())?;
    let d = span
        .to_duration(jiff::SpanRelativeTo::days_are_24_hours())
        .map_err(|_| bad())?;
    if d.is_negative() {
        return Err(format!("invalid duration {s:?}: must not be negative"));
    }
    Duration::try_from(d).map_err(|_| bad())
}

/// Loads and validates the three files in `dir`.
///
/// # Errors
/// Every problem found, each with file, line, column and a hint.
pub fn load(dir: &Path) -> Result<Config, Errors> {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    for name in [DAEMON_FILE, ZONES_FILE, CAMPAIGNS_FILE] {
        match Source::read(dir.join(name)) {
            Ok(s) => files.push(s),
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        return Err(Errors(errors));
    }
    let [mut daemon_src, mut zones_src, mut campaigns_src] =
        <[Source; 3]>::try_from(files).map_err(|_| Errors(Vec::new()))?;
    let built = build(dir, &mut daemon_src, &mut zones_src, &mut campaigns_src);
    let errors: Vec<Error> = [daemon_src, zones_src, campaigns_src]
        .into_iter()
        .flat_map(|s| s.errors)
        .collect();
    match built {
        Some(config) if errors.is_empty() => Ok(config),
        _ => Err(Errors(errors)),
    }
}

fn build(
    dir: &Path,
    daemon_src: &mut Source,
    zones_src: &mut Source,
    campaigns_src: &mut Source,
) -> Option<Config> {
    let zones = zones::build(zones_src);
    let daemon = daemon::build(dir, daemon_src, zones.as_ref());
    if let Some(z) = &zones {
        let has_mqtt =
            toml::from_str::<toml::Table>(&daemon_src.text).is_ok_and(|t| t.contains_key("mqtt"));
        mqtt::check_remote_needs_broker(zones_src, z, has_mqtt);
    }
    let (Some(daemon), Some(zones)) = (daemon, zones) else {
        // Still check campaigns' syntax so one run shows every file's problems.
        let _ = campaigns_src.parse::<toml::Table>();
        return None;
    };
    let engine = campaigns::build(campaigns_src, &zones, &daemon)?;
    Some(Config {
        dir: dir.to_owned(),
        daemon,
        store_id: zones.store_id,
        layout: Arc::new(zones.layout),
        engine: Arc::new(engine),
    })
}

/// Refuses a secret written inline under `key`, with the hint to name it
/// as the systemd credential `credential` under `<name>_file` (or
/// `<name>_env`).
pub(crate) fn refuse_inline(
    src: &mut Source,
    key: &str,
    v: Option<&Spanned<toml::Value>>,
    credential: &str,
    name: &str,
) {
    if let Some(v) = v {
        src.error(
            v.span(),
            format!("`{key}` would put a secret into the config file; nearcast refuses that"),
            Some(format!(
                "keep it in a file readable only by nearcast and name it: with systemd, \
                 `LoadCredential={credential}:/etc/credstore/{credential}` in the unit and \
                 {name}_file = \"{credential}\"; or in the environment: {name}_env = \"NEARCAST_{}\"",
                credential.to_ascii_uppercase().replace('-', "_")
            )),
        );
    }
}

/// One secret by reference from `<key>_env` / `<key>_file` (`example`: an
/// environment variable name for the hint); `None` when neither is given
/// or both are (refused).
pub(crate) fn secret_ref(
    src: &mut Source,
    key: &str,
    env: Option<&Spanned<String>>,
    file: Option<&Spanned<String>>,
    example: &str,
) -> Option<SecretRef> {
    match (env, file) {
        (Some(e), None) => {
            let v = e.get_ref();
            if v.is_empty() || !v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                src.error(
                    e.span(),
                    format!("{key}_env {v:?} is not an environment variable name"),
                    Some(format!("letters, digits and `_`, e.g. \"{example}\"")),
                );
            }
            Some(SecretRef::Env(v.clone()))
        }
        (None, Some(f)) => Some(SecretRef::File(PathBuf::from(f.get_ref()))),
        (Some(e), Some(_)) => {
            src.error(
                e.span(),
                format!("give either `{key}_env` or `{key}_file`, not both"),
                None,
            );
            None
        }
        (None, None) => None,
    }
}

/// A near-miss suggestion: `"cofee"` → `coffee`.
pub(crate) fn did_you_mean<'a>(wanted: &str, known: impl IntoIterator<Item = &'a str>) -> String {
    let known: Vec<&str> = known.into_iter().collect();
    let close = known
        .iter()
        .copied()
        .min_by_key(|k| edit_distance(wanted, k))
        .filter(|k| edit_distance(wanted, k) <= 2);
    match close {
        Some(k) => format!("did you mean `{k}`? known: {}", known.join(", ")),
        None if known.is_empty() => "none are defined".into(),
        None => format!("known: {}", known.join(", ")),
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            cur.push(
                (prev[j] + usize::from(ca != *cb))
                    .min(prev[j + 1] + 1)
                    .min(cur[j] + 1),
            );
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Checks an id: lowercase letters, digits, `-` and `_`.
pub(crate) fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// An iBeacon UUID setting, as 16 bytes; an error at it when it is not one.
pub(crate) fn ibeacon_uuid(src: &mut Source, u: &Spanned<String>) -> Option<[u8; 16]> {
    let uuid = Uuid128::parse(u.get_ref());
    if uuid.is_none() {
        src.error(
            u.span(),
            "not a UUID",
            Some("write it like \"E2C56DB5-DFFB-48D2-B060-D0F5A71096E0\"".into()),
        );
    }
    uuid.map(|u| u.to_bytes())
}

/// An Eddystone namespace setting (20 hex digits), as 10 bytes; an error
/// at it when it is not one.
pub(crate) fn eddystone_namespace(src: &mut Source, n: &Spanned<String>) -> Option<[u8; 10]> {
    let mut namespace = [0u8; 10];
    if hex::decode_to_slice(n.get_ref(), &mut namespace).is_ok() {
        Some(namespace)
    } else {
        src.error(n.span(), "an Eddystone namespace is 20 hex digits", None);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_duration("-5s").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn positions_are_one_based_characters() {
        let s = Source::inline("x.toml", "a = 1\nbä = 2\n  c = 3");
        assert_eq!(s.position(0), (1, 1));
        assert_eq!(s.position(6), (2, 1));
        assert_eq!(s.position(s.text.find("c =").unwrap()), (3, 3));
        assert_eq!(s.position(s.text.find("= 2").unwrap()), (2, 4));
    }

    #[test]
    fn suggestions() {
        assert_eq!(
            did_you_mean("cofee", ["store", "coffee"]),
            "did you mean `coffee`? known: store, coffee"
        );
        assert_eq!(did_you_mean("x", ["store"]), "known: store");
        assert!(valid_id("coffee-bar_2") && !valid_id("Coffee") && !valid_id(""));
    }
}

#[cfg(test)]
mod load_tests {
    use super::*;

    /// A copy of the example config with `edit` applied to one file.
    fn with(
        file: &str,
        edit: impl Fn(&str) -> String,
    ) -> (tempfile::TempDir, Result<Config, Errors>) {
        with_edits(&[(file, &edit)])
    }

    /// An edit of one file of the example config.
    type Edit<'a> = (&'a str, &'a dyn Fn(&str) -> String);

    /// A copy of the example config with each file's edit applied.
    fn with_edits(edits: &[Edit<'_>]) -> (tempfile::TempDir, Result<Config, Errors>) {
        let dir = tempfile::tempdir().unwrap();
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        for name in [DAEMON_FILE, ZONES_FILE, CAMPAIGNS_FILE] {
            let mut text = std::fs::read_to_string(example.join(name)).unwrap();
            for (file, edit) in edits {
                if *file == name {
                    text = edit(&text);
                }
            }
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let r = load(dir.path());
        (dir, r)
    }

    /// The example with `coffee` and `till` as ESPresense and satellite
    /// nodes, and `broker` as nearcast.toml's [mqtt] section.
    fn remote(broker: &str) -> (tempfile::TempDir, Result<Config, Errors>) {
        let zones = |t: &str| {
            t.replace(
                "position = [15.0, 10.0]",
                "position = [15.0, 10.0]\nsource = \"espresense\"\nnode = \"coffee_bar\"",
            )
            .replace(
                "position = [17.0, 2.0]",
                "position = [17.0, 2.0]\nsource = \"nearcast\"",
            )
        };
        let broker = broker.to_owned();
        let daemon = move |t: &str| format!("{t}\n{broker}");
        with_edits(&[(ZONES_FILE, &zones), (DAEMON_FILE, &daemon)])
    }

    fn briefs(r: Result<Config, Errors>) -> Vec<String> {
        r.expect_err("config should be refused")
            .0
            .iter()
            .map(|e| {
                format!(
                    "{} {}",
                    e.file.file_name().unwrap().to_string_lossy(),
                    e.brief()
                )
            })
            .collect()
    }

    #[test]
    fn remote_scanners_become_the_mqtt_source() {
        let (_d, r) = remote(
            "[mqtt]\nurl = \"mqtt://127.0.0.1:1883\"\nusername = \"box\"\npassword_file = \"mqtt-password\"\nnode_rate = 50\n",
        );
        let c = r.unwrap();
        let Some(crate::source::SourceSettings::Mqtt(m)) = c.daemon.sources.last() else {
            panic!("{:?}", c.daemon.sources)
        };
        use crate::core::types::ScannerIdx;
        use crate::source::mqtt::{NodeKind, RemoteScanner};
        assert_eq!(
            m.nodes,
            [
                RemoteScanner {
                    kind: NodeKind::Espresense,
                    node: "coffee_bar".into(),
                    scanner: ScannerIdx(1)
                },
                RemoteScanner {
                    kind: NodeKind::Nearcast,
                    node: "till".into(),
                    scanner: ScannerIdx(2)
                },
            ]
        );
        assert_eq!(
            (
                m.connection.host.as_str(),
                m.connection.port,
                m.connection.client_id.as_str()
            ),
            ("127.0.0.1", 1883, "nearcast-musterladen-01")
        );
        assert_eq!(
            m.connection.password,
            Some(SecretRef::File("mqtt-password".into()))
        );
        assert_eq!((m.node_rate, m.store_id.as_str()), (50, "musterladen-01"));
    }

    #[test]
    fn remote_scanner_mistakes_are_refused_where_they_are() {
        // Remote scanners but no broker: the error is at the first `source`.
        let (_d, r) = remote("");
        let line = line_of(ZONES_FILE, "position = [15.0, 10.0]") + 1;
        assert_eq!(
            briefs(r),
            [format!(
                "zones.toml {line}:10: remote scanners (coffee_bar, till) need the store's MQTT broker, and nearcast.toml has no [mqtt] | add to nearcast.toml: [mqtt] url = \"mqtt://127.0.0.1:1883\" with username and password_file (see the commented example in config/)"
            )]
        );
        let mqtt_line = |n: usize| {
            let text = std::fs::read_to_string(
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("config")
                    .join(DAEMON_FILE),
            )
            .unwrap();
            text.lines().count() + 2 + n
        };
        for (section, want) in [
            (
                "url = \"http://box\"",
                "1:7: url \"http://box\": scheme `http` is not mqtt:// or mqtts:// | like \"mqtt://127.0.0.1:1883\", or \"mqtts://broker.lan:8883\" for TLS",
            ),
            (
                "url = \"mqtt://box\"\nusername = \"box\"\npassword = \"hunter2\"",
                "3:12: `password` would put a secret into the config file; nearcast refuses that | keep it in a file readable only by nearcast and name it: with systemd, `LoadCredential=mqtt-password:/etc/credstore/mqtt-password` in the unit and password_file = \"mqtt-password\"; or in the environment: password_env = \"NEARCAST_MQTT_PASSWORD\"",
            ),
            (
                "url = \"mqtt://box\"\nusername = \"box\"",
                "2:12: a username needs a password | name it: password_file = \"mqtt-password\" (a systemd credential) or password_env = \"NEARCAST_MQTT_PASSWORD\"",
            ),
            (
                "url = \"mqtt://box\"\nca_file = \"ca.pem\"",
                "2:11: ca_file applies only to a TLS connection | use an mqtts:// url, or remove ca_file",
            ),
            (
                "url = \"mqtt://box\"\nnode_rate = 0",
                "2:13: node_rate = 0 is out of range | sightings per second one node may deliver, 1 to 100000; default 1000",
            ),
        ] {
            let (_d, r) = remote(&format!("[mqtt]\n{section}\n"));
            let got = briefs(r);
            let (line, rest) = want.split_once(':').unwrap();
            let want = format!("nearcast.toml {}:{rest}", mqtt_line(line.parse().unwrap()));
            assert_eq!(got, [want], "{section}");
        }
        let (_d, r) = remote("[mqtt]\nurl = \"mqtts://box\"\nca_file = \"missing.pem\"\n");
        let got = briefs(r);
        assert!(
            got.len() == 1 && got[0].contains("ca_file ") && got[0].contains("missing.pem"),
            "{got:?}"
        );
        // A node kind that does not exist; `node` on a local scanner; one
        // node twice; a BLE adapter placed at a remote scanner.
        let msg = one_error(ZONES_FILE, |t| {
            t.replace(
                "position = [15.0, 10.0]",
                "position = [15.0, 10.0]\nsource = \"espresence\"",
            )
        });
        assert!(msg.ends_with("unknown scanner source `espresence` | did you mean `espresense`? known: local, espresense, nearcast"), "{msg}");
        let msg = one_error(ZONES_FILE, |t| {
            t.replace(
                "position = [15.0, 10.0]",
                "position = [15.0, 10.0]\nnode = \"x\"",
            )
        });
        assert!(msg.ends_with("`node` applies only to a remote scanner | set source = \"espresense\" or \"nearcast\", or remove `node`"), "{msg}");
        let twice = |t: &str| {
            t.replace(
                "position = [15.0, 10.0]",
                "position = [15.0, 10.0]\nsource = \"espresense\"\nnode = \"n1\"",
            )
            .replace(
                "position = [17.0, 2.0]",
                "position = [17.0, 2.0]\nsource = \"espresense\"\nnode = \"n1\"",
            )
        };
        let broker = |t: &str| format!("{t}\n[mqtt]\nurl = \"mqtt://box\"\n");
        let (_d, r) = with_edits(&[(ZONES_FILE, &twice), (DAEMON_FILE, &broker)]);
        let got = briefs(r);
        assert!(got.len() == 1 && got[0].ends_with("two scanners are the espresense node `n1` | each node is one scanner; give the other one its own `node`"), "{got:?}");
        let ble = |t: &str| format!("{t}\n[[source]]\nkind = \"ble\"\nscanner = \"till\"\n");
        let (_d, r) = remote("[mqtt]\nurl = \"mqtt://box\"\n");
        assert!(r.is_ok());
        let zones = |t: &str| {
            t.replace(
                "position = [17.0, 2.0]",
                "position = [17.0, 2.0]\nsource = \"nearcast\"",
            )
        };
        let both = |t: &str| broker(&ble(t));
        let (_d, r) = with_edits(&[(ZONES_FILE, &zones), (DAEMON_FILE, &both)]);
        let got = briefs(r);
        assert!(got.len() == 1 && got[0].contains("scanner `till` is a remote nearcast node in zones.toml, not an adapter of this box"), "{got:?}");
    }

    fn one_error(file: &str, edit: impl Fn(&str) -> String) -> String {
        let (dir, r) = with(file, edit);
        let errors = r.expect_err("config should be refused").0;
        assert_eq!(errors.len(), 1, "{errors:?}");
        let e = &errors[0];
        assert_eq!(e.file, dir.path().join(file));
        e.brief()
    }

    fn line_of(file: &str, needle: &str) -> usize {
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("config")
                .join(file),
        )
        .unwrap();
        text.lines().position(|l| l.contains(needle)).unwrap() + 1
    }

    #[test]
    fn the_example_config_loads() {
        let (_d, r) = with("", str::to_owned);
        let c = r.unwrap();
        assert_eq!(c.store_id, "musterladen-01");
        let zones: Vec<&str> = c.layout.zones.iter().map(|z| z.id.as_str()).collect();
        assert_eq!(zones, ["store", "entrance", "coffee", "checkout"]);
        assert_eq!(c.layout.scanners.len(), 3);
        assert_eq!(c.engine.campaigns.len(), 6);
        assert_eq!(c.engine.channels.len(), 3);
        assert!(c.engine.rules.quiet_hours[0].contains(22 * 60));
        assert_eq!(c.daemon.outbox.lease, Duration::from_secs(30));
    }

    #[test]
    fn unknown_key_is_refused_with_its_position() {
        let msg = one_error(ZONES_FILE, |t| {
            t.replace("exit_margin = 1.0", "exit_margn = 1.0")
        });
        let line = line_of(ZONES_FILE, "exit_margin = 1.0");
        assert!(
            msg.starts_with(&format!("{line}:1: unknown field `exit_margn`")),
            "{msg}"
        );
        assert!(
            msg.contains("hint: ") || msg.contains(" | remove the key"),
            "{msg}"
        );
    }

    #[test]
    fn missing_zone_reference_suggests_the_near_miss() {
        let msg = one_error(CAMPAIGNS_FILE, |t| {
            t.replace("zone = \"coffee\"", "zone = \"cofee\"")
        });
        let line = line_of(CAMPAIGNS_FILE, "zone = \"coffee\"");
        assert_eq!(
            msg,
            format!(
                "{line}:8: campaign `coffee-break` names unknown zone `cofee` | did you mean `coffee`? known: store, entrance, coffee, checkout"
            )
        );
    }

    #[test]
    fn bad_values_are_refused_with_hints() {
        let msg = one_error(CAMPAIGNS_FILE, |t| {
            t.replace("cooldown = \"20h\"", "cooldown = \"soon\"")
        });
        assert!(msg.contains("invalid duration \"soon\""), "{msg}");
        let msg = one_error(ZONES_FILE, |t| t.replace("Europe/Berlin", "Europe/Berlinn"));
        assert_eq!(
            msg,
            format!(
                "{}:13: unknown time zone \"Europe/Berlinn\" | use an IANA name such as \"Europe/Berlin\" or \"America/New_York\"",
                line_of(ZONES_FILE, "time_zone")
            )
        );
        let msg = one_error(ZONES_FILE, |t| t.replace("exit = 4.0", "exit = 1.0"));
        assert!(
            msg.contains("`exit` (1 m) must be at least `enter` (2.5 m)"),
            "{msg}"
        );
        let msg = one_error(CAMPAIGNS_FILE, |t| {
            t.replace(
                "Hallo {first_name}, willkommen bei",
                "Hallo {frist_name}, willkommen bei",
            )
        });
        assert!(msg.contains("template does not render"), "{msg}");
        let msg = one_error(CAMPAIGNS_FILE, |t| {
            t.replace("{first_name}, Lust auf einen Kaffee? Der zweite geht heute auf uns. Abmelden: STOP", &"x".repeat(161))
        });
        assert!(msg.contains("takes 2 SMS segments"), "{msg}");
        let msg = one_error(ZONES_FILE, |t| {
            t.replace("scanner = \"till\"", "scanner = \"kasse\"")
        });
        assert!(
            msg.contains("unknown scanner `kasse`") && msg.contains("known: door, coffee, till"),
            "{msg}"
        );
        let msg = one_error(DAEMON_FILE, |t| {
            t.replacen("adapter = \"console\"", "adapter = \"pigeon\"", 1)
        });
        assert!(msg.contains("unknown adapter `pigeon`"), "{msg}");
    }

    /// Values that parse but would quietly turn a feature off (a scanner
    /// nobody can be near, a zone nobody can enter, messages that expire
    /// before they are sent, a lease that lets every worker send the same
    /// row): refused at the value with a hint.
    #[test]
    fn values_that_switch_features_off_are_refused() {
        let cases: [(&str, &str, &str, &str); 17] = [
            (
                ZONES_FILE,
                "position = [1.0, 6.0]",
                "position = [1.0, 6.0, 2.0]",
                "a position is two numbers, [x, y], not 3 | the floor plan is flat: metres to the right and up from a fixed corner, e.g. [1.0, 6.0]",
            ),
            (
                ZONES_FILE,
                "position = [1.0, 6.0]",
                "position = [nan, 6.0]",
                "a position must be two finite numbers (nan and inf are not positions) | metres from a fixed corner of the store, e.g. [1.0, 6.0]",
            ),
            (
                ZONES_FILE,
                "position = [1.0, 6.0]",
                "position = [1.0, -inf]",
                "a position must be two finite numbers (nan and inf are not positions) | metres from a fixed corner of the store, e.g. [1.0, 6.0]",
            ),
            (
                ZONES_FILE,
                "position = [1.0, 6.0]",
                "position = [1.0e9, 6.0]",
                "[1000000000, 6] is more than 10000 m from the floor plan's origin | positions are metres from a fixed corner of the store",
            ),
            (
                ZONES_FILE,
                "[20.0, 7.0], [20.0, 12.0]",
                "[inf, 7.0], [20.0, 12.0]",
                "a position must be two finite numbers (nan and inf are not positions) | metres from a fixed corner of the store, e.g. [1.0, 6.0]",
            ),
            (
                ZONES_FILE,
                "[20.0, 7.0], [20.0, 12.0]",
                "[20.0, 7.0, 1.0], [20.0, 12.0]",
                "a position is two numbers, [x, y], not 3 | the floor plan is flat: metres to the right and up from a fixed corner, e.g. [1.0, 6.0]",
            ),
            (
                ZONES_FILE,
                "path_loss_exponent = 2.5 ",
                "path_loss_exponent = 0.0 ",
                "path_loss_exponent must be between 1.0 and 6.0 | 2.0 is free space; 2.5–3.5 suits a shop floor",
            ),
            (
                ZONES_FILE,
                "path_loss_exponent = 2.5 ",
                "path_loss_exponent = nan ",
                "path_loss_exponent must be between 1.0 and 6.0 | 2.0 is free space; 2.5–3.5 suits a shop floor",
            ),
            (
                ZONES_FILE,
                "rssi_offset = 0.0 ",
                "rssi_offset = nan ",
                "rssi_offset must be a number of dB between -40 and 40 | 0 for a bare adapter; a few dB for an enclosure or an external antenna",
            ),
            (
                ZONES_FILE,
                "enter = 2.5",
                "enter = nan",
                "`enter` must be a positive distance in metres",
            ),
            (
                ZONES_FILE,
                "mon = \"08:00-20:00\"",
                "mon = \"+8:00-20:00\"",
                "invalid opening hours \"+8:00-20:00\" | write \"09:00-20:00\", several ranges separated by commas, or \"closed\"",
            ),
            (
                CAMPAIGNS_FILE,
                "ttl = \"5m\"",
                "ttl = \"0s\"",
                "message `coffee`: ttl must be at least 10s | a message past its ttl is never sent, and sending takes a few seconds; \"10m\" suits a welcome",
            ),
            (
                DAEMON_FILE,
                "lease = \"30s\"",
                "lease = \"0s\"",
                "[outbox] lease must be between \"1s\" and \"1h\" | a message claimed by a worker that stopped is sent again after the lease; 30s is the default",
            ),
            (
                DAEMON_FILE,
                "# max_attempts = 10 ",
                "max_attempts = 0 ",
                "[outbox] max_attempts must be between 1 and 100 | attempts before a message failing on a working channel is given up; 10 is the default",
            ),
            (
                DAEMON_FILE,
                "poll = \"1s\"",
                "poll = \"0s\"",
                "[outbox] poll must be between \"100ms\" and \"1m\" | how often an idle worker looks for due messages; 1s is the default",
            ),
            (
                DAEMON_FILE,
                "max_jump = \"2m\"",
                "max_jump = \"0s\"",
                "[clock] max_jump must be at least 1s | a step larger than this holds decisions for `settle`; 2m is the default",
            ),
            (
                DAEMON_FILE,
                "[log]",
                "[guard]\nmin_interval = \"1m\"\n[log]",
                "[guard] min_interval must be at most 1s | presence needs several samples per scanner within `[radio] window`; 100ms is the default",
            ),
        ];
        for (file, from, to, expected) in cases {
            let msg = one_error(file, |t| {
                assert!(t.contains(from), "{from}");
                t.replacen(from, to, 1)
            });
            let line = line_of(file, from);
            let (at, text) = msg.split_once(": ").unwrap();
            let (l, column) = at.split_once(':').unwrap();
            // The `[guard]` section is new: its value is on the next line.
            let line = line + usize::from(to.starts_with("[guard]"));
            assert_eq!((l, text), (line.to_string().as_str(), expected), "{to}");
            // At the value (or the key's line), never at 1:1.
            assert!(column.parse::<usize>().unwrap() > 1 || line > 1, "{msg}");
        }
    }

    #[test]
    fn syntax_errors_point_at_the_character() {
        let msg = one_error(ZONES_FILE, |t| {
            t.replace("tick = \"1s\" ", "tick = = \"1s\" ")
        });
        let line = line_of(ZONES_FILE, "tick = \"1s\"");
        assert!(msg.starts_with(&format!("{line}:")), "{msg}");
    }

    #[test]
    fn every_file_reports_its_problems_in_one_run() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(DAEMON_FILE), "[database]\npath = 1\n").unwrap();
        std::fs::write(dir.path().join(ZONES_FILE), "store = \n").unwrap();
        std::fs::write(dir.path().join(CAMPAIGNS_FILE), "[[campaign]\n").unwrap();
        let errors = load(dir.path()).unwrap_err().0;
        let files: Vec<String> = errors
            .iter()
            .map(|e| e.file.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(files, [DAEMON_FILE, ZONES_FILE, CAMPAIGNS_FILE]);
        assert!(
            errors.iter().all(|e| e.line > 0 && e.column > 0),
            "{errors:?}"
        );
    }

    #[test]
    fn a_missing_directory_says_so() {
        let errors = load(Path::new("/nonexistent/nearcast")).unwrap_err().0;
        assert_eq!(errors.len(), 3);
        assert!(errors[0].message.starts_with("cannot read"));
    }
}

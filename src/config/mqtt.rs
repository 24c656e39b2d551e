//! `[mqtt]` of `nearcast.toml`: the store's broker (URL, client id, user,
//! password by reference, TLS CA), reconnection and per-node limits, joined
//! with the remote scanners of `zones.toml` into the MQTT source's
//! settings (owned by `source::mqtt`).
//!
//! Reads the parsed TOML and, to check it, the CA file; the password is
//! only named here, loaded by the source at each connection attempt.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::zones::Zones;
use super::{Dur, Source, refuse_inline, secret_ref};
use crate::source::mqtt::{Connection, MqttSettings, Tls, client_config};

/// The example variable name in the password's hints.
const PASSWORD_ENV: &str = "NEARCAST_MQTT_PASSWORD";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMqtt {
    url: Spanned<String>,
    client_id: Option<Spanned<String>>,
    username: Option<Spanned<String>>,
    password_env: Option<Spanned<String>>,
    password_file: Option<Spanned<String>>,
    ca_file: Option<Spanned<String>>,
    keep_alive: Option<Spanned<Dur>>,
    retry_min: Option<Dur>,
    retry_max: Option<Dur>,
    node_rate: Option<Spanned<i64>>,
    max_clock_offset: Option<Spanned<Dur>>,
    // Written inline: read only to be refused with a hint.
    password: Option<Spanned<toml::Value>>,
}

/// The MQTT source's settings: `None` when there is no `[mqtt]`, nothing to
/// subscribe to (no remote scanner) or the section is wrong (errors
/// recorded).
pub(super) fn build(
    src: &mut Source,
    mqtt: Option<&Spanned<RawMqtt>>,
    zones: Option<&Zones>,
    rel: &dyn Fn(PathBuf) -> PathBuf,
) -> Option<MqttSettings> {
    let remote = zones.map_or(&[][..], |z| &z.remote[..]);
    // Remote scanners without [mqtt] are refused in zones.toml, where they are.
    let mqtt = mqtt?;
    let m = mqtt.get_ref();
    let before = src.errors.len();
    refuse_inline(
        src,
        "password",
        m.password.as_ref(),
        "mqtt-password",
        "password",
    );
    let store_id = zones.map_or("store", |z| z.store_id.as_str());
    let client_id = m
        .client_id
        .as_ref()
        .map_or_else(|| format!("nearcast-{store_id}"), |c| c.get_ref().clone());
    if let Some(c) = &m.client_id
        && (c.get_ref().is_empty()
            || c.get_ref().len() > 64
            || c.get_ref()
                .chars()
                .any(|ch| ch.is_whitespace() || ch.is_control()))
    {
        src.error(
            c.span(),
            "client_id must be 1 to 64 characters without spaces",
            Some(format!(
                "one per box; the default is \"nearcast-{store_id}\""
            )),
        );
    }
    let mut connection = match Connection::from_url(m.url.get_ref(), &client_id) {
        Ok(c) => c,
        Err(why) => {
            src.error(
                m.url.span(),
                format!("url {:?}: {why}", m.url.get_ref()),
                Some(
                    "like \"mqtt://127.0.0.1:1883\", or \"mqtts://broker.lan:8883\" for TLS".into(),
                ),
            );
            return None;
        }
    };
    connection.username = m.username.as_ref().map(|u| u.get_ref().clone());
    connection.password = secret_ref(
        src,
        "password",
        m.password_env.as_ref(),
        m.password_file.as_ref(),
        PASSWORD_ENV,
    );
    match (&m.username, &connection.password) {
        (Some(u), None) if m.password.is_none() => src.error(
            u.span(),
            "a username needs a password",
            Some(format!(
                "name it: password_file = \"mqtt-password\" (a systemd credential) or \
                 password_env = \"{PASSWORD_ENV}\""
            )),
        ),
        (None, Some(_)) => src.error(
            mqtt.span(),
            "a password needs a username",
            Some("add username = \"…\", the broker account of this box".into()),
        ),
        _ => {}
    }
    if let Some(ca) = &m.ca_file {
        match &mut connection.tls {
            None => src.error(
                ca.span(),
                "ca_file applies only to a TLS connection",
                Some("use an mqtts:// url, or remove ca_file".into()),
            ),
            Some(tls) => {
                let t = Tls {
                    ca_file: Some(rel(PathBuf::from(ca.get_ref()))),
                };
                if let Err(e) = client_config(&t) {
                    src.error(
                        ca.span(),
                        e,
                        Some("a PEM file with the CA certificate that signed the broker's".into()),
                    );
                }
                *tls = t;
            }
        }
    }
    if let Some(k) = &m.keep_alive {
        let v = k.get_ref().0;
        if (Duration::from_secs(5)..=Duration::from_secs(600)).contains(&v) {
            connection.keep_alive = v;
        } else {
            src.error(
                k.span(),
                "keep_alive must be between 5s and 10m",
                Some("it is how soon a silent broker is noticed; 30s is the default".into()),
            );
        }
    }
    if let Some(d) = m.retry_min {
        connection.retry_min = d.0.max(Duration::from_millis(100));
    }
    if let Some(d) = m.retry_max {
        connection.retry_max = d.0;
    }
    if connection.retry_max < connection.retry_min {
        src.error(
            mqtt.span(),
            "[mqtt] retry_max is shorter than retry_min",
            Some("retry_max is the longest wait between reconnection attempts".into()),
        );
    }
    let node_rate = match &m.node_rate {
        None => MqttSettings::NODE_RATE,
        Some(n) => match u32::try_from(*n.get_ref()) {
            Ok(v) if (1..=100_000).contains(&v) => v,
            _ => {
                src.error(
                    n.span(),
                    format!("node_rate = {} is out of range", n.get_ref()),
                    Some(format!(
                        "sightings per second one node may deliver, 1 to 100000; default {}",
                        MqttSettings::NODE_RATE
                    )),
                );
                MqttSettings::NODE_RATE
            }
        },
    };
    let max_clock_offset = match &m.max_clock_offset {
        None => MqttSettings::MAX_CLOCK_OFFSET,
        Some(d) => {
            let v = d.get_ref().0;
            if !(Duration::from_millis(100)..=Duration::from_secs(3600)).contains(&v) {
                src.error(
                    d.span(),
                    "max_clock_offset must be between 100ms and 1h",
                    Some(
                        "a satellite whose clock is further off is refused; 10s is the default"
                            .into(),
                    ),
                );
            }
            v
        }
    };
    if src.errors.len() > before || remote.is_empty() {
        return None;
    }
    Some(MqttSettings {
        connection,
        store_id: store_id.to_owned(),
        nodes: remote.to_vec(),
        node_rate,
        max_clock_offset,
    })
}

/// Refuses remote scanners in `zones.toml` when `nearcast.toml` has no
/// `[mqtt]`: the error points at the first one's `source`.
pub(super) fn check_remote_needs_broker(zones_src: &mut Source, zones: &Zones, has_mqtt: bool) {
    if has_mqtt || zones.remote.is_empty() {
        return;
    }
    let names: Vec<&str> = zones.remote.iter().map(|r| r.node.as_str()).collect();
    zones_src.error(
        zones.remote_spans[0].clone(),
        format!(
            "remote scanners ({}) need the store's MQTT broker, and nearcast.toml has no [mqtt]",
            names.join(", ")
        ),
        Some(
            "add to nearcast.toml: [mqtt] url = \"mqtt://127.0.0.1:1883\" with username and \
             password_file (see the commented example in config/)"
                .into(),
        ),
    );
}

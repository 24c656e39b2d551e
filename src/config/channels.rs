//! `[channels.NAME]` of `nearcast.toml`: each channel's adapter (its
//! provider keys are read by `providers`), the variant it carries, whether
//! it is private, and its pace.
//!
//! Reads nothing but the parsed TOML.

use std::collections::BTreeMap;

use toml::Spanned;

use super::providers::{self, RawChannel};
use super::{Source, valid_id};
use crate::channel::{AdapterSettings, ChannelLimits, ChannelSettings};
use crate::core::message::Variant;

/// The variant a channel carries when config doesn't say.
fn default_variant(name: &str) -> Variant {
    match name {
        "whatsapp" | "viber" | "messenger" | "rcs" => Variant::Rich,
        "mms" => Variant::Medium,
        _ => Variant::Plain,
    }
}

/// Builds every channel, recording problems in `src`.
pub(super) fn build(
    raw: &BTreeMap<String, Spanned<RawChannel>>,
    src: &mut Source,
) -> Vec<ChannelSettings> {
    let mut channels = Vec::new();
    for (name, ch) in raw {
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
                providers::check_keys("console", c, name, src);
                AdapterSettings::Console
            }
            "whatsapp" | "twilio" | "vonage" | "webhook" => {
                providers::build(&c.adapter, c, name, src).unwrap_or(AdapterSettings::Console)
            }
            other => {
                src.error(
                    c.adapter.span(),
                    format!("unknown adapter `{other}`"),
                    Some("this build knows: console, whatsapp, twilio, vonage, webhook".into()),
                );
                AdapterSettings::Console
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
        let mut limits = ChannelLimits::default_for(&adapter);
        if let Some(r) = &c.rate {
            if r.get_ref().is_finite() && *r.get_ref() > 0.0 {
                limits.rate = *r.get_ref();
            } else {
                src.error(
                    r.span(),
                    format!(
                        "rate must be above 0 messages a second, not {}",
                        r.get_ref()
                    ),
                    Some("e.g. rate = 10.0; the provider's per-sender limit is the ceiling".into()),
                );
            }
        }
        for (v, field, what) in [
            (&c.burst, &mut limits.burst, "burst"),
            (&c.concurrency, &mut limits.concurrency, "concurrency"),
        ] {
            if let Some(v) = v {
                if (1..=256).contains(v.get_ref()) {
                    *field = *v.get_ref();
                } else {
                    src.error(
                        v.span(),
                        format!("{what} must be between 1 and 256, not {}", v.get_ref()),
                        None,
                    );
                }
            }
        }
        channels.push(ChannelSettings {
            name: name.clone(),
            variant,
            private: c.private.unwrap_or(true),
            adapter,
            limits,
        });
    }

    channels
}

//! `[api]` and `[webhooks.*]` of `nearcast.toml`: the local HTTP API's bind
//! address, its bearer token and the providers' webhook secrets, all by
//! reference (`*_env`, `*_file`); a secret written into the file is refused
//! with a hint, like the channels' tokens.
//!
//! Reads nothing but the parsed TOML: secrets are loaded by `api` when a
//! request needs them, never here.

use std::net::SocketAddr;

use serde::Deserialize;
use toml::Spanned;

use super::{Dur, Source, refuse_inline, secret_ref};
use crate::api::{ApiLimits, ApiSettings, DEFAULT_BIND, MAX_CONNECTIONS, MetaWebhook};
use crate::channel::{AdapterSettings, ChannelSettings};

/// The example variable name in the API's hints.
const API_ENV: &str = "NEARCAST_API_TOKEN";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawApi {
    enabled: Option<bool>,
    bind: Option<Spanned<String>>,
    token_env: Option<Spanned<String>>,
    token_file: Option<Spanned<String>>,
    public_url: Option<Spanned<String>>,
    max_connections: Option<Spanned<i64>>,
    header_timeout: Option<Spanned<Dur>>,
    request_timeout: Option<Spanned<Dur>>,
    // Written inline: read only to be refused with a hint.
    token: Option<Spanned<toml::Value>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWebhooks {
    whatsapp: Option<Spanned<RawMeta>>,
    twilio: Option<Spanned<RawTwilio>>,
    vonage: Option<Spanned<RawVonage>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMeta {
    app_secret_env: Option<Spanned<String>>,
    app_secret_file: Option<Spanned<String>>,
    verify_token_env: Option<Spanned<String>>,
    verify_token_file: Option<Spanned<String>>,
    app_secret: Option<Spanned<toml::Value>>,
    verify_token: Option<Spanned<toml::Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTwilio {
    auth_token_env: Option<Spanned<String>>,
    auth_token_file: Option<Spanned<String>>,
    auth_token: Option<Spanned<toml::Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVonage {
    signature_secret_env: Option<Spanned<String>>,
    signature_secret_file: Option<Spanned<String>>,
    signature_secret: Option<Spanned<toml::Value>>,
}

/// The limits on clients, each within bounds that keep the API usable and
/// the box's descriptors (`LimitNOFILE=4096` in the unit) sufficient.
fn limits(src: &mut Source, a: &RawApi) -> ApiLimits {
    let mut l = ApiLimits::default();
    if let Some(n) = &a.max_connections {
        match usize::try_from(*n.get_ref()) {
            Ok(v) if (1..=MAX_CONNECTIONS).contains(&v) => l.max_connections = v,
            _ => src.error(
                n.span(),
                format!("max_connections = {} is out of range", n.get_ref()),
                Some(format!(
                    "between 1 and {MAX_CONNECTIONS} (the unit allows 4096 open files); default {}",
                    l.max_connections
                )),
            ),
        }
    }
    for (key, raw, slot) in [
        ("header_timeout", &a.header_timeout, &mut l.header_timeout),
        (
            "request_timeout",
            &a.request_timeout,
            &mut l.request_timeout,
        ),
    ] {
        if let Some(d) = raw {
            let v = d.get_ref().0;
            if v < std::time::Duration::from_millis(100) || v > std::time::Duration::from_secs(600)
            {
                src.error(
                    d.span(),
                    format!("{key} must be between 100ms and 10m"),
                    Some(format!("like \"{}s\" (the default)", slot.as_secs())),
                );
            } else {
                *slot = v;
            }
        }
    }
    l
}

/// Builds the API settings; `None` when `[api]` is absent or disabled.
pub(super) fn build(
    src: &mut Source,
    api: Option<&Spanned<RawApi>>,
    hooks: Option<&Spanned<RawWebhooks>>,
    channels: &[ChannelSettings],
) -> Option<ApiSettings> {
    let Some(api) = api else {
        if let Some(h) = hooks {
            src.error(
                h.span(),
                "[webhooks] needs the local API, and there is no [api] section",
                Some(
                    "add [api] (it listens on 127.0.0.1:8787 unless `bind` says otherwise)".into(),
                ),
            );
        }
        return None;
    };
    let span = api.span();
    let a = api.get_ref();
    refuse_inline(src, "token", a.token.as_ref(), "api-token", "token");
    let bind = match &a.bind {
        None => DEFAULT_BIND.parse().ok()?,
        Some(b) => match b.get_ref().parse::<SocketAddr>() {
            Ok(addr) => addr,
            Err(_) => {
                src.error(
                    b.span(),
                    format!("bind {:?} is not an address and port", b.get_ref()),
                    Some(format!(
                        "like \"{DEFAULT_BIND}\" (loopback: only this box can call it)"
                    )),
                );
                return None;
            }
        },
    };
    let token = secret_ref(
        src,
        "token",
        a.token_env.as_ref(),
        a.token_file.as_ref(),
        API_ENV,
    );
    let public_url = a.public_url.as_ref().map(|u| {
        let v = u.get_ref();
        if !(v.starts_with("https://") || v.starts_with("http://")) || v.contains('?') {
            src.error(
                u.span(),
                format!("public_url {v:?} is not an http(s) URL without a query"),
                Some(
                    "the address providers call this box at, without /webhooks/…, e.g. \
                     \"https://box-17.example.com\""
                        .into(),
                ),
            );
        }
        v.trim_end_matches('/').to_owned()
    });
    let limits = limits(src, a);
    let mut config = ApiSettings {
        bind,
        token,
        public_url,
        whatsapp: None,
        twilio: None,
        vonage: None,
        limits,
    };
    let empty = RawWebhooks::default();
    let h = hooks.map_or(&empty, Spanned::get_ref);
    if let Some(m) = &h.whatsapp {
        let r = m.get_ref();
        refuse_inline(
            src,
            "app_secret",
            r.app_secret.as_ref(),
            "whatsapp-app-secret",
            "app_secret",
        );
        refuse_inline(
            src,
            "verify_token",
            r.verify_token.as_ref(),
            "whatsapp-verify-token",
            "verify_token",
        );
        let app_secret = secret_ref(
            src,
            "app_secret",
            r.app_secret_env.as_ref(),
            r.app_secret_file.as_ref(),
            API_ENV,
        );
        let verify_token = secret_ref(
            src,
            "verify_token",
            r.verify_token_env.as_ref(),
            r.verify_token_file.as_ref(),
            API_ENV,
        );
        match (app_secret, verify_token) {
            (Some(app_secret), Some(verify_token)) => {
                config.whatsapp = Some(MetaWebhook {
                    app_secret,
                    verify_token,
                });
            }
            _ => src.error(
                m.span(),
                "[webhooks.whatsapp] needs the app secret and the verify token",
                Some(
                    "app_secret_file = \"whatsapp-app-secret\" and verify_token_file = \
                     \"whatsapp-verify-token\" (or the _env forms)"
                        .into(),
                ),
            ),
        }
    }
    // Twilio signs with the account's auth token, which a twilio channel
    // already names: that is the default.
    let channel_token = channels.iter().find_map(|c| match &c.adapter {
        AdapterSettings::Twilio(t) => Some(t.token.clone()),
        _ => None,
    });
    config.twilio = match &h.twilio {
        Some(t) => {
            let r = t.get_ref();
            refuse_inline(
                src,
                "auth_token",
                r.auth_token.as_ref(),
                "twilio-token",
                "auth_token",
            );
            let token = secret_ref(
                src,
                "auth_token",
                r.auth_token_env.as_ref(),
                r.auth_token_file.as_ref(),
                API_ENV,
            )
            .or(channel_token);
            if token.is_none() {
                src.error(
                    t.span(),
                    "[webhooks.twilio] needs the auth token, and no twilio channel names one",
                    Some("auth_token_file = \"twilio-token\" (or auth_token_env)".into()),
                );
            }
            if config.public_url.is_none() {
                src.error(
                    span.clone(),
                    "Twilio webhooks need `public_url`: Twilio signs the URL it calls",
                    Some(
                        "public_url = \"https://box-17.example.com\" (the tunnel or proxy address)"
                            .into(),
                    ),
                );
            }
            token
        }
        // Without public_url the signature cannot be checked: the endpoint
        // stays off rather than accepting unverifiable posts.
        None => channel_token.filter(|_| config.public_url.is_some()),
    };
    if let Some(v) = &h.vonage {
        let r = v.get_ref();
        refuse_inline(
            src,
            "signature_secret",
            r.signature_secret.as_ref(),
            "vonage-signature-secret",
            "signature_secret",
        );
        config.vonage = secret_ref(
            src,
            "signature_secret",
            r.signature_secret_env.as_ref(),
            r.signature_secret_file.as_ref(),
            API_ENV,
        );
        if config.vonage.is_none() {
            src.error(
                v.span(),
                "[webhooks.vonage] needs the signature secret",
                Some(
                    "signature_secret_file = \"vonage-signature-secret\" (Vonage dashboard → \
                     API settings → signature secret)"
                        .into(),
                ),
            );
        }
    }
    (a.enabled != Some(false)).then_some(config)
}

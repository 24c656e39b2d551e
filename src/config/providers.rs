//! Provider settings of `[channels.NAME]` in `nearcast.toml`: which keys
//! each adapter (`whatsapp`, `twilio`, `vonage`, `webhook`) takes, their
//! checks, and secrets by reference only (`token_env`, `token_file`): a
//! secret written into the file itself is refused.
//!
//! Reads nothing but the parsed TOML: secrets are loaded by the channel
//! when it sends, never here.

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::{Dur, Source};
use crate::channel::{
    AdapterSettings, TwilioSettings, VonageChannel, VonageSettings, WebhookSettings,
    WhatsAppSettings,
};
use crate::credentials::SecretRef;

/// One `[channels.NAME]` table as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawChannel {
    pub(super) adapter: Spanned<String>,
    pub(super) variant: Option<Spanned<String>>,
    pub(super) rate: Option<Spanned<f64>>,
    pub(super) burst: Option<Spanned<u32>>,
    pub(super) concurrency: Option<Spanned<u32>>,
    pub(super) private: Option<bool>,
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

/// Key names that would put a secret into the file.
const INLINE_SECRETS: [&str; 7] = [
    "token",
    "auth_token",
    "access_token",
    "api_secret",
    "secret",
    "password",
    "signing_key",
];

/// The provider keys set in a channel table, with their spans.
fn present(c: &RawChannel) -> Vec<(&'static str, Range<usize>)> {
    fn sp<T>(name: &'static str, v: Option<&Spanned<T>>) -> Option<(&'static str, Range<usize>)> {
        v.map(|v| (name, v.span()))
    }
    [
        sp("base_url", c.base_url.as_ref()),
        sp("api_version", c.api_version.as_ref()),
        sp("phone_number_id", c.phone_number_id.as_ref()),
        sp("account_sid", c.account_sid.as_ref()),
        sp("api_key", c.api_key.as_ref()),
        sp("from", c.from.as_ref()),
        sp("messaging_service_sid", c.messaging_service_sid.as_ref()),
        sp("content_sids", c.content_sids.as_ref()),
        sp("provider_channel", c.provider_channel.as_ref()),
        sp("allow_text", c.allow_text.as_ref()),
        sp("status_callback", c.status_callback.as_ref()),
        sp("url", c.url.as_ref()),
        sp("token_env", c.token_env.as_ref()),
        sp("token_file", c.token_file.as_ref()),
        sp("timeout", c.timeout.as_ref()),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// Refuses secrets written inline and keys that don't apply to `adapter`.
/// Returns whether the table is clean.
pub(super) fn check_keys(adapter: &str, c: &RawChannel, name: &str, src: &mut Source) -> bool {
    let before = src.errors.len();
    let inline = [
        c.token.as_ref(),
        c.auth_token.as_ref(),
        c.access_token.as_ref(),
        c.api_secret.as_ref(),
        c.secret.as_ref(),
        c.password.as_ref(),
        c.signing_key.as_ref(),
    ];
    let credential = format!("{name}-token");
    for (key, v) in INLINE_SECRETS.iter().zip(inline) {
        super::refuse_inline(src, key, v, &credential, "token");
    }
    let allowed: &[&str] = match adapter {
        "whatsapp" => &["base_url", "api_version", "phone_number_id", "allow_text"],
        "twilio" => &[
            "base_url",
            "account_sid",
            "api_key",
            "from",
            "messaging_service_sid",
            "content_sids",
            "provider_channel",
            "allow_text",
            "status_callback",
        ],
        "vonage" => &[
            "base_url",
            "api_key",
            "from",
            "provider_channel",
            "allow_text",
        ],
        "webhook" => &["url"],
        _ => &[],
    };
    let secrets = !allowed.is_empty();
    for (key, span) in present(c) {
        let ok = allowed.contains(&key)
            || (secrets && matches!(key, "token_env" | "token_file" | "timeout"));
        if !ok {
            src.error(
                span,
                format!("`{key}` does not apply to a {adapter} channel"),
                Some(if allowed.is_empty() {
                    format!("a {adapter} channel takes only `adapter`, `variant` and `private`")
                } else {
                    format!(
                        "a {adapter} channel takes: {}, token_env or token_file, timeout",
                        allowed.join(", ")
                    )
                }),
            );
        }
    }
    src.errors.len() == before
}

/// Reads `[channels.NAME]` for `adapter`; `None` after recording errors.
pub(super) fn build(
    adapter: &Spanned<String>,
    c: &RawChannel,
    name: &str,
    src: &mut Source,
) -> Option<AdapterSettings> {
    let before = src.errors.len();
    check_keys(adapter.get_ref(), c, name, src);
    let t = Table { adapter, c, name };
    let token = super::secret_ref(
        src,
        "token",
        c.token_env.as_ref(),
        c.token_file.as_ref(),
        "NEARCAST_WHATSAPP_TOKEN",
    );
    if c.token_env.is_none() && c.token_file.is_none() {
        t.need(
            src,
            "token_file",
            &format!("\"{name}-token\" (a systemd credential) or token_env = \"NEARCAST_…\""),
        );
    }
    let timeout = match &c.timeout {
        None => crate::channel::http::DEFAULT_TIMEOUT,
        Some(t) => {
            let d = t.get_ref().0;
            if !(Duration::from_secs(1)..=Duration::from_secs(60)).contains(&d) {
                src.error(
                    t.span(),
                    "timeout must be between 1s and 60s",
                    Some("the default is \"10s\"".into()),
                );
            }
            d
        }
    };
    let built = match adapter.get_ref().as_str() {
        "whatsapp" => whatsapp(&t, src, token, timeout),
        "twilio" => twilio(&t, src, token, timeout),
        "vonage" => vonage(&t, src, token, timeout),
        "webhook" => webhook(&t, src, token, timeout),
        _ => None,
    };
    if src.errors.len() == before {
        built
    } else {
        None
    }
}

/// One `[channels.NAME]` table being read.
struct Table<'a> {
    adapter: &'a Spanned<String>,
    c: &'a RawChannel,
    name: &'a str,
}

impl Table<'_> {
    /// Records that the table lacks `key`.
    fn need(&self, src: &mut Source, key: &str, example: &str) {
        src.error(
            self.adapter.span(),
            format!("a {} channel needs `{key}`", self.adapter.get_ref()),
            Some(format!("for example {key} = {example}")),
        );
    }

    /// `base_url`, or the provider's `default`.
    fn base(&self, src: &mut Source, default: &str) -> String {
        self.c
            .base_url
            .as_ref()
            .map_or_else(|| default.to_owned(), |v| url(src, v))
    }

    fn allow_text(&self) -> bool {
        self.c.allow_text.as_ref().is_some_and(|v| *v.get_ref())
    }
}

/// A URL setting, checked (see [`check_url`]), without a trailing `/`.
fn url(src: &mut Source, v: &Spanned<String>) -> String {
    if let Err(e) = check_url(v.get_ref()) {
        src.error(
            v.span(),
            e,
            Some(
                "https://…, or http:// to 127.0.0.1, [::1] or localhost (tests, a local stand-in)"
                    .into(),
            ),
        );
    }
    v.get_ref().trim_end_matches('/').to_owned()
}

/// A Twilio SID setting with its `prefix`, checked.
fn sid(src: &mut Source, v: &Spanned<String>, prefix: &str, key: &str) -> String {
    if !is_sid(v.get_ref(), prefix) {
        src.error(
            v.span(),
            format!("{key} {:?} is not a {prefix}… SID", v.get_ref()),
            Some(format!(
                "{prefix} followed by 32 hexadecimal digits, as shown in the Twilio console"
            )),
        );
    }
    v.get_ref().clone()
}

/// The `whatsapp` adapter's keys.
fn whatsapp(
    t: &Table<'_>,
    src: &mut Source,
    token: Option<SecretRef>,
    timeout: Duration,
) -> Option<AdapterSettings> {
    let base_url = t.base(src, "https://graph.facebook.com");
    let api_version = t.c.api_version.as_ref().map_or_else(
        || "v23.0".to_owned(),
        |v| {
            if !is_api_version(v.get_ref()) {
                src.error(
                    v.span(),
                    format!("api_version {:?} is not a Graph API version", v.get_ref()),
                    Some("like \"v23.0\"".into()),
                );
            }
            v.get_ref().clone()
        },
    );
    let phone_number_id = match &t.c.phone_number_id {
        Some(v) if !v.get_ref().is_empty() && v.get_ref().bytes().all(|b| b.is_ascii_digit()) => {
            v.get_ref().clone()
        }
        Some(v) => {
            src.error(
                v.span(),
                "phone_number_id is the numeric id of the business phone number",
                Some(
                    "WhatsApp Manager → phone numbers; digits only, e.g. \"106540352242922\""
                        .into(),
                ),
            );
            String::new()
        }
        None => {
            t.need(src, "phone_number_id", "\"106540352242922\"");
            String::new()
        }
    };
    token.map(|token| {
        AdapterSettings::WhatsApp(WhatsAppSettings {
            base_url,
            api_version,
            phone_number_id,
            token,
            allow_text: t.allow_text(),
            timeout,
        })
    })
}

/// The `twilio` adapter's keys.
fn twilio(
    t: &Table<'_>,
    src: &mut Source,
    token: Option<SecretRef>,
    timeout: Duration,
) -> Option<AdapterSettings> {
    let base_url = t.base(src, "https://api.twilio.com");
    let account_sid = match &t.c.account_sid {
        Some(v) => sid(src, v, "AC", "account_sid"),
        None => {
            t.need(src, "account_sid", "\"AC…\"");
            String::new()
        }
    };
    let api_key = t.c.api_key.as_ref().map(|v| sid(src, v, "SK", "api_key"));
    let messaging_service_sid =
        t.c.messaging_service_sid
            .as_ref()
            .map(|v| sid(src, v, "MG", "messaging_service_sid"));
    let whatsapp = match &t.c.provider_channel {
        None => t.name == "whatsapp",
        Some(v) => match v.get_ref().as_str() {
            "sms" | "mms" => false,
            "whatsapp" => true,
            other => {
                src.error(
                    v.span(),
                    format!("twilio has no provider_channel `{other}` here"),
                    Some("one of: sms (SMS and MMS), whatsapp".into()),
                );
                false
            }
        },
    };
    let from = t.c.from.as_ref().map(|v| {
        let f = v.get_ref();
        let bare = f.strip_prefix("whatsapp:").unwrap_or(f);
        let valid = if whatsapp {
            is_e164(bare)
        } else {
            !f.starts_with("whatsapp:") && (is_e164(f) || is_sender_id(f))
        };
        if !valid {
            src.error(
                v.span(),
                format!("from {f:?} is not a sender for this channel"),
                Some(if whatsapp {
                    "the WhatsApp sender's number, \"+14155552345\" or \"whatsapp:+14155552345\"".into()
                } else {
                    "an E.164 number (\"+14155552345\") or an alphanumeric sender id of up to 11 characters".into()
                }),
            );
        }
        if whatsapp && !f.starts_with("whatsapp:") {
            format!("whatsapp:{f}")
        } else {
            f.clone()
        }
    });
    if from.is_none() && messaging_service_sid.is_none() {
        t.need(
            src,
            "from",
            "\"+14155552345\" (or messaging_service_sid = \"MG…\")",
        );
    }
    let mut content_sids = BTreeMap::new();
    if let Some(map) = &t.c.content_sids {
        if !whatsapp {
            src.error(
                map.span(),
                "content_sids are for WhatsApp through Twilio",
                Some("set provider_channel = \"whatsapp\", or remove them".into()),
            );
        }
        for (message, v) in map.get_ref() {
            content_sids.insert(message.clone(), sid(src, v, "HX", "content_sids"));
        }
    }
    let status_callback = t.c.status_callback.as_ref().map(|v| url(src, v));
    token.map(|token| {
        AdapterSettings::Twilio(TwilioSettings {
            base_url,
            account_sid,
            api_key,
            token,
            from,
            messaging_service_sid,
            whatsapp,
            content_sids,
            allow_text: t.allow_text(),
            status_callback,
            timeout,
        })
    })
}

/// The `vonage` adapter's keys.
fn vonage(
    t: &Table<'_>,
    src: &mut Source,
    token: Option<SecretRef>,
    timeout: Duration,
) -> Option<AdapterSettings> {
    let base_url = t.base(src, "https://api.nexmo.com");
    let api_key = match &t.c.api_key {
        Some(v)
            if !v.get_ref().is_empty()
                && v.get_ref().bytes().all(|b| b.is_ascii_alphanumeric()) =>
        {
            v.get_ref().clone()
        }
        Some(v) => {
            src.error(
                v.span(),
                "api_key is the Vonage account's key (letters and digits)",
                None,
            );
            String::new()
        }
        None => {
            t.need(src, "api_key", "\"abcd1234\"");
            String::new()
        }
    };
    let channel = match &t.c.provider_channel {
        None => match t.name {
            "whatsapp" => VonageChannel::WhatsApp,
            "mms" => VonageChannel::Mms,
            "viber" => VonageChannel::Viber,
            _ => VonageChannel::Sms,
        },
        Some(v) => match v.get_ref().as_str() {
            "sms" => VonageChannel::Sms,
            "mms" => VonageChannel::Mms,
            "whatsapp" => VonageChannel::WhatsApp,
            "viber" | "viber_service" => VonageChannel::Viber,
            "messenger" => {
                src.error(
                    v.span(),
                    "Messenger addresses people by page-scoped id, which the customer registry does not hold",
                    Some("use sms, mms, whatsapp or viber".into()),
                );
                VonageChannel::Sms
            }
            other => {
                src.error(
                    v.span(),
                    format!("vonage has no provider_channel `{other}`"),
                    Some("one of: sms, mms, whatsapp, viber".into()),
                );
                VonageChannel::Sms
            }
        },
    };
    let from = match &t.c.from {
        Some(v) => {
            let f = v.get_ref().trim_start_matches('+');
            if f.is_empty() || f.len() > 50 {
                src.error(
                    v.span(),
                    "from is the sender: a number, an alphanumeric id or a Viber service id",
                    None,
                );
            }
            f.to_owned()
        }
        None => {
            t.need(src, "from", "\"447700900000\"");
            String::new()
        }
    };
    token.map(|token| {
        AdapterSettings::Vonage(VonageSettings {
            base_url,
            api_key,
            token,
            from,
            channel,
            allow_text: t.allow_text(),
            timeout,
        })
    })
}

/// The `webhook` adapter's keys.
fn webhook(
    t: &Table<'_>,
    src: &mut Source,
    token: Option<SecretRef>,
    timeout: Duration,
) -> Option<AdapterSettings> {
    let target = match &t.c.url {
        Some(v) => url(src, v),
        None => {
            t.need(src, "url", "\"https://crm.example.com/nearcast\"");
            String::new()
        }
    };
    token.map(|token| {
        AdapterSettings::Webhook(WebhookSettings {
            url: target,
            token,
            timeout,
        })
    })
}

/// https anywhere; plain http only to this machine, since requests carry
/// credentials and customers' names and numbers.
fn check_url(u: &str) -> Result<(), String> {
    let rest = if let Some(r) = u.strip_prefix("https://") {
        r
    } else if let Some(r) = u.strip_prefix("http://") {
        let host = r.split(['/', '?']).next().unwrap_or("");
        let host = host.rsplit_once(':').map_or(host, |(h, port)| {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                h
            } else {
                host
            }
        });
        if !matches!(host, "127.0.0.1" | "localhost" | "[::1]") {
            return Err(format!("{u:?}: plain http is allowed only to this machine"));
        }
        r
    } else {
        return Err(format!("{u:?} is not an http(s) URL"));
    };
    if rest.is_empty() || rest.starts_with('/') || rest.contains(char::is_whitespace) {
        return Err(format!("{u:?} has no host"));
    }
    Ok(())
}

fn is_sid(s: &str, prefix: &str) -> bool {
    s.len() == 34 && s.starts_with(prefix) && s[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

fn is_e164(s: &str) -> bool {
    s.strip_prefix('+')
        .is_some_and(|d| (6..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()))
}

/// An alphanumeric sender id: up to 11 letters, digits and spaces, at
/// least one letter.
fn is_sender_id(s: &str) -> bool {
    (1..=11).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b' ')
        && s.bytes().any(|b| b.is_ascii_alphabetic())
}

fn is_api_version(s: &str) -> bool {
    s.strip_prefix('v')
        .and_then(|r| r.split_once('.'))
        .is_some_and(|(a, b)| {
            !a.is_empty()
                && !b.is_empty()
                && a.bytes().all(|x| x.is_ascii_digit())
                && b.bytes().all(|x| x.is_ascii_digit())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds `nearcast.toml` text; the errors as `line:column: message | hint`.
    fn load(channels: &str) -> (Vec<AdapterSettings>, Vec<String>) {
        let text = format!("[database]\npath = \"x.db\"\n\n{channels}");
        let mut src = Source::inline("nearcast.toml", &text);
        let daemon =
            super::super::daemon::build(std::path::Path::new("/etc/nearcast"), &mut src, None);
        let errors = src.errors.iter().map(super::super::Error::brief).collect();
        let adapters = daemon.map(|d| d.channels.into_iter().map(|c| c.adapter).collect());
        (adapters.unwrap_or_default(), errors)
    }

    #[test]
    fn every_adapter_with_its_settings() {
        let (adapters, errors) = load(
            r#"
[channels.whatsapp]
adapter = "whatsapp"
phone_number_id = "106540352242922"
token_file = "whatsapp-token"

[channels.sms]
adapter = "twilio"
account_sid = "AC0123456789abcdef0123456789abcdef"
messaging_service_sid = "MG0123456789abcdef0123456789abcdef"
token_env = "NEARCAST_TWILIO_TOKEN"
timeout = "5s"

[channels.viber]
adapter = "vonage"
api_key = "abcd1234"
from = "+447700900001"
token_env = "VONAGE_SECRET"

[channels.twa]
adapter = "twilio"
provider_channel = "whatsapp"
account_sid = "AC0123456789abcdef0123456789abcdef"
from = "+14155552345"
content_sids = { welcome = "HX0123456789abcdef0123456789abcdef" }
token_env = "T"

[channels.crm]
adapter = "webhook"
url = "https://crm.example.com/nearcast/"
token_file = "/etc/credstore/crm"
"#,
        );
        assert_eq!(errors, Vec::<String>::new());
        // Channels come sorted by name.
        assert_eq!(
            adapters,
            [
                AdapterSettings::Webhook(WebhookSettings {
                    url: "https://crm.example.com/nearcast".into(),
                    token: SecretRef::File("/etc/credstore/crm".into()),
                    timeout: Duration::from_secs(10),
                }),
                AdapterSettings::Twilio(TwilioSettings {
                    base_url: "https://api.twilio.com".into(),
                    account_sid: "AC0123456789abcdef0123456789abcdef".into(),
                    api_key: None,
                    token: SecretRef::Env("NEARCAST_TWILIO_TOKEN".into()),
                    from: None,
                    messaging_service_sid: Some("MG0123456789abcdef0123456789abcdef".into()),
                    whatsapp: false,
                    content_sids: BTreeMap::new(),
                    allow_text: false,
                    status_callback: None,
                    timeout: Duration::from_secs(5),
                }),
                AdapterSettings::Twilio(TwilioSettings {
                    base_url: "https://api.twilio.com".into(),
                    account_sid: "AC0123456789abcdef0123456789abcdef".into(),
                    api_key: None,
                    token: SecretRef::Env("T".into()),
                    from: Some("whatsapp:+14155552345".into()),
                    messaging_service_sid: None,
                    whatsapp: true,
                    content_sids: [(
                        "welcome".to_owned(),
                        "HX0123456789abcdef0123456789abcdef".to_owned()
                    )]
                    .into(),
                    allow_text: false,
                    status_callback: None,
                    timeout: Duration::from_secs(10),
                }),
                AdapterSettings::Vonage(VonageSettings {
                    base_url: "https://api.nexmo.com".into(),
                    api_key: "abcd1234".into(),
                    token: SecretRef::Env("VONAGE_SECRET".into()),
                    from: "447700900001".into(),
                    channel: VonageChannel::Viber,
                    allow_text: false,
                    timeout: Duration::from_secs(10),
                }),
                AdapterSettings::WhatsApp(WhatsAppSettings {
                    base_url: "https://graph.facebook.com".into(),
                    api_version: "v23.0".into(),
                    phone_number_id: "106540352242922".into(),
                    token: SecretRef::File("whatsapp-token".into()),
                    allow_text: false,
                    timeout: Duration::from_secs(10),
                }),
            ]
        );
    }

    #[test]
    fn the_commented_examples_in_config_are_valid() {
        let text = include_str!("../../config/nearcast.toml");
        let mut blocks = Vec::new();
        let mut cur: Option<String> = None;
        for line in text.lines() {
            match (&mut cur, line.strip_prefix("# ")) {
                (None, Some(l)) if l.starts_with("[channels.") => cur = Some(format!("{l}\n")),
                (Some(b), Some(l)) if !l.starts_with('#') => {
                    b.push_str(l);
                    b.push('\n');
                }
                (Some(_), Some(_)) => {}
                (Some(_), None) => blocks.extend(cur.take()),
                (None, _) => {}
            }
        }
        assert_eq!(blocks.len(), 5, "{blocks:?}");
        for b in blocks {
            let (adapters, errors) = load(&b);
            assert_eq!((adapters.len(), errors), (1, Vec::<String>::new()), "{b}");
        }
    }

    #[test]
    fn a_secret_written_inline_is_refused_with_a_hint() {
        let (_, errors) = load(
            "[channels.whatsapp]\nadapter = \"whatsapp\"\nphone_number_id = \"1\"\ntoken = \"EAAsecret\"\n",
        );
        assert_eq!(
            errors,
            [
                "7:9: `token` would put a secret into the config file; nearcast refuses that | \
                 keep it in a file readable only by nearcast and name it: with systemd, \
                 `LoadCredential=whatsapp-token:/etc/credstore/whatsapp-token` in the unit and \
                 token_file = \"whatsapp-token\"; or in the environment: token_env = \"NEARCAST_WHATSAPP_TOKEN\"",
                "5:11: a whatsapp channel needs `token_file` | for example token_file = \"whatsapp-token\" \
                 (a systemd credential) or token_env = \"NEARCAST_…\"",
            ]
        );
    }

    #[test]
    fn wrong_or_missing_keys_point_at_the_line() {
        let e = |t: &str| load(t).1;
        assert_eq!(
            e("[channels.sms]\nadapter = \"console\"\ntoken_env = \"X\"\n"),
            [
                "6:13: `token_env` does not apply to a console channel | a console channel takes only `adapter`, `variant` and `private`"
            ]
        );
        assert_eq!(
            e(
                "[channels.whatsapp]\nadapter = \"whatsapp\"\ntoken_env = \"X\"\naccount_sid = \"AC1\"\n"
            ),
            [
                "7:15: `account_sid` does not apply to a whatsapp channel | a whatsapp channel takes: \
                 base_url, api_version, phone_number_id, allow_text, token_env or token_file, timeout",
                "5:11: a whatsapp channel needs `phone_number_id` | for example phone_number_id = \"106540352242922\"",
            ]
        );
        assert_eq!(
            e(
                "[channels.crm]\nadapter = \"webhook\"\nurl = \"http://crm.example.com\"\ntoken_env = \"K\"\ntoken_file = \"k\"\n"
            ),
            [
                "7:13: give either `token_env` or `token_file`, not both",
                "6:7: \"http://crm.example.com\": plain http is allowed only to this machine | \
                 https://…, or http:// to 127.0.0.1, [::1] or localhost (tests, a local stand-in)",
            ]
        );
        assert_eq!(
            e(
                "[channels.sms]\nadapter = \"twilio\"\naccount_sid = \"AC42\"\nfrom = \"+1 415\"\ntoken_env = \"T\"\n"
            ),
            [
                "6:15: account_sid \"AC42\" is not a AC… SID | AC followed by 32 hexadecimal digits, as shown in the Twilio console",
                "7:8: from \"+1 415\" is not a sender for this channel | an E.164 number (\"+14155552345\") or an \
                 alphanumeric sender id of up to 11 characters",
            ]
        );
        assert_eq!(
            e(
                "[channels.fb]\nadapter = \"vonage\"\napi_key = \"k\"\nfrom = \"1\"\nprovider_channel = \"messenger\"\ntoken_env = \"T\"\n"
            ),
            [
                "8:20: Messenger addresses people by page-scoped id, which the customer registry does not hold | use sms, mms, whatsapp or viber"
            ]
        );
    }

    #[test]
    fn urls() {
        assert!(check_url("https://graph.facebook.com").is_ok());
        assert!(check_url("http://127.0.0.1:4010").is_ok());
        assert!(check_url("http://localhost/x").is_ok());
        assert!(check_url("http://[::1]:8080").is_ok());
        assert!(check_url("http://crm.example.com").is_err());
        assert!(check_url("ftp://x").is_err());
        assert!(check_url("https://").is_err());
    }

    #[test]
    fn ids() {
        assert!(is_sid("AC0123456789abcdef0123456789abcdef", "AC"));
        assert!(!is_sid("AC0123456789abcdef0123456789abcdeg", "AC"));
        assert!(!is_sid("MG0123456789abcdef0123456789abcdef", "AC"));
        assert!(is_e164("+4915112345678") && !is_e164("4915112345678"));
        assert!(
            is_sender_id("Musterladen") && !is_sender_id("12345") && !is_sender_id("Musterladen1")
        );
        assert!(is_api_version("v23.0") && !is_api_version("23.0") && !is_api_version("v23"));
    }
}

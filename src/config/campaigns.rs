//! `campaigns.toml`: limits, quiet hours, campaigns and messages, built into
//! the campaign `Engine` with every cross-reference checked.

use std::collections::HashSet;
use std::sync::Arc;

use serde::Deserialize;
use toml::Spanned;

use super::daemon::Daemon;
use super::zones::{Zones, parse_ranges};
use super::{Dur, Source, did_you_mean, valid_id};
use crate::core::campaign::{
    Campaign, ChannelSpec, Conditions, Days, Engine, Fallback, FollowUp, MessageIdx, Reached,
    Rules, Trigger,
};
use crate::core::message::{Medium, Message, Rich, Vars, render, sms_size};
use crate::core::types::Purpose;
use crate::core::zones::ZoneIdx;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default)]
    limits: RawLimits,
    #[serde(default, rename = "campaign")]
    campaigns: Vec<RawCampaign>,
    #[serde(default, rename = "message")]
    messages: Vec<RawMessage>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_messages_per_day: Option<u32>,
    max_messages_per_week: Option<u32>,
    max_points_per_day: Option<u32>,
    #[serde(default)]
    quiet_hours: Vec<Spanned<String>>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum TriggerName {
    Arrive,
    Enter,
    Dwell,
    Exit,
    Leave,
    VisitCount,
    Broadcast,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCampaign {
    id: Spanned<String>,
    trigger: Spanned<TriggerName>,
    zone: Option<Spanned<String>>,
    visits: Option<Spanned<u32>>,
    #[serde(default)]
    repeat: bool,
    message: Option<Spanned<String>>,
    #[serde(default)]
    points: u32,
    cooldown: Dur,
    #[serde(default)]
    hours: Vec<Spanned<String>>,
    days: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    segments: Vec<String>,
    #[serde(default)]
    exclude_segments: Vec<String>,
    #[serde(default)]
    first_visit_of_day: bool,
    min_days_since_last_visit: Option<u32>,
    purpose: Option<Spanned<String>>,
    fallback: Option<Spanned<RawFallback>>,
    follow_up: Option<Spanned<RawFollowUp>>,
    #[serde(default)]
    not_private: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFollowUp {
    message: Spanned<String>,
    after: Dur,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFallback {
    after: Dur,
    #[serde(default)]
    unless: Option<Spanned<String>>,
    #[serde(default)]
    channel: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMessage {
    id: Spanned<String>,
    ttl: Spanned<Dur>,
    plain: Spanned<String>,
    #[serde(default = "one")]
    max_segments: u32,
    medium: Option<RawMedium>,
    rich: Option<RawRich>,
}

fn one() -> u32 {
    1
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMedium {
    text: Spanned<String>,
    image: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRich {
    template: String,
    language: String,
    #[serde(default)]
    params: Vec<Spanned<String>>,
    image: Option<Spanned<String>>,
    #[serde(default)]
    buttons: Vec<String>,
    preview: Spanned<String>,
}

pub(super) fn build(src: &mut Source, zones: &Zones, daemon: &Daemon) -> Option<Engine> {
    let raw: Raw = src.parse()?;
    let before = src.errors.len();

    let rules = Rules {
        tz: zones.tz.clone(),
        opening: zones.opening.clone(),
        quiet_hours: parse_ranges(src, &raw.limits.quiet_hours),
        max_messages_per_day: raw.limits.max_messages_per_day,
        max_messages_per_week: raw.limits.max_messages_per_week,
        max_points_per_day: raw.limits.max_points_per_day,
    };

    let mut seen = HashSet::new();
    let messages: Vec<Message> = raw
        .messages
        .into_iter()
        .map(|m| message(src, m, &mut seen))
        .collect();

    let names = Names {
        zones: zones.layout.zones.iter().map(|z| z.id.as_str()).collect(),
        messages: messages.iter().map(|m| m.id.to_string()).collect(),
        channels: daemon.channels.iter().map(|c| c.name.as_str()).collect(),
    };
    let mut seen = HashSet::new();
    // Where each campaign names its message, for the privacy check.
    let (campaigns, message_spans): (Vec<Campaign>, Vec<_>) = raw
        .campaigns
        .into_iter()
        .map(|c| campaign(src, c, &names, zones, &mut seen))
        .unzip();
    if campaigns.len() > 1000 || messages.len() > 1000 {
        src.error(0..0, "more than 1000 campaigns or messages", None);
    }
    if src.errors.len() > before {
        return None;
    }
    let channels = daemon
        .channels
        .iter()
        .map(|c| ChannelSpec {
            name: c.name.as_str().into(),
            variant: c.variant,
            private: c.private,
        })
        .collect();
    let engine = Engine {
        campaigns,
        messages,
        rules,
        channels,
    };
    check_privacy(src, &engine, &message_spans);
    (src.errors.len() == before).then_some(engine)
}

/// The shortest time to live: the worker claims due messages about once a
/// second, and a provider takes a few seconds to answer.
const MIN_TTL: std::time::Duration = std::time::Duration::from_secs(10);

/// One `[[message]]`: its id, templates, segments and media checked.
fn message(src: &mut Source, m: RawMessage, seen: &mut HashSet<String>) -> Message {
    let id = m.id.get_ref().clone();
    if !valid_id(&id) {
        src.error(
            m.id.span(),
            format!("message id `{id}` must be lowercase letters, digits, `-` or `_`"),
            None,
        );
    }
    if !seen.insert(id.clone()) {
        src.error(
            m.id.span(),
            format!("message `{id}` is defined twice"),
            None,
        );
    }
    if m.ttl.get_ref().0 < MIN_TTL {
        src.error(
            m.ttl.span(),
            format!("message `{id}`: ttl must be at least 10s"),
            Some("a message past its ttl is never sent, and sending takes a few seconds; \"10m\" suits a welcome".into()),
        );
    }
    check_template(src, &m.plain);
    if let Ok(text) = render(m.plain.get_ref(), &Vars::sample()) {
        let size = sms_size(&text);
        if size.segments > m.max_segments as usize {
            src.error(
                m.plain.span(),
                format!(
                    "the plain text takes {} SMS segments ({} {}) with a long name and balance, more than max_segments = {}",
                    size.segments,
                    size.units,
                    if size.gsm7 { "GSM-7 septets" } else { "UCS-2 characters: it has characters outside GSM-7" },
                    m.max_segments
                ),
                Some(if size.gsm7 {
                    "shorten it to fit 160 characters, or allow more with max_segments".into()
                } else {
                    "replace characters outside the GSM alphabet (curly quotes, emoji) to get 160 instead of 70 per segment, or allow more with max_segments".into()
                }),
            );
        }
    }
    let medium = m.medium.map(|md| {
        check_template(src, &md.text);
        check_url(src, &md.image);
        Medium {
            text: md.text.into_inner(),
            image: md.image.into_inner(),
        }
    });
    let rich = m.rich.map(|r| {
        check_template(src, &r.preview);
        for p in &r.params {
            check_template(src, p);
        }
        if let Some(i) = &r.image {
            check_url(src, i);
        }
        Rich {
            template: r.template,
            language: r.language,
            params: r.params.into_iter().map(Spanned::into_inner).collect(),
            image: r.image.map(Spanned::into_inner),
            buttons: r.buttons,
            preview: r.preview.into_inner(),
        }
    });
    Message {
        id: id.as_str().into(),
        ttl: m.ttl.get_ref().0,
        plain: m.plain.into_inner(),
        max_segments: m.max_segments,
        medium,
        rich,
    }
}

/// What campaigns may name: zones, messages and channels.
struct Names<'a> {
    zones: Vec<&'a str>,
    messages: Vec<String>,
    channels: Vec<&'a str>,
}

/// One `[[campaign]]`, its references resolved against `names`; also where
/// it names its message (for the privacy check).
fn campaign(
    src: &mut Source,
    c: RawCampaign,
    names: &Names<'_>,
    zones: &Zones,
    seen: &mut HashSet<String>,
) -> (Campaign, std::ops::Range<usize>) {
    let id = c.id.get_ref().clone();
    if !valid_id(&id) {
        src.error(
            c.id.span(),
            format!("campaign id `{id}` must be lowercase letters, digits, `-` or `_`"),
            None,
        );
    }
    if !seen.insert(id.clone()) {
        src.error(
            c.id.span(),
            format!("campaign `{id}` is defined twice"),
            None,
        );
    }
    let trigger = trigger(src, &c, &id, names, zones);
    let message = match &c.message {
        None => None,
        Some(m) => match names.messages.iter().position(|n| n == m.get_ref()) {
            Some(i) => Some(MessageIdx(u16::try_from(i).unwrap_or(0))),
            None => {
                src.error(
                    m.span(),
                    format!("campaign `{id}` names unknown message `{}`", m.get_ref()),
                    Some(did_you_mean(
                        m.get_ref(),
                        names.messages.iter().map(String::as_str),
                    )),
                );
                None
            }
        },
    };
    if c.message.is_none() && c.points == 0 {
        src.error(
            c.id.span(),
            format!("campaign `{id}` neither sends a message nor awards points"),
            Some("add message = \"…\" or points = N".into()),
        );
    }
    let days = c.days.as_ref().map(|list| {
        let mut d = Days::default();
        for s in list {
            match parse_weekday(s.get_ref()) {
                Some(w) => d = d.with(w),
                None => src.error(
                    s.span(),
                    format!("unknown day {:?}", s.get_ref()),
                    Some("use mon, tue, wed, thu, fri, sat, sun".into()),
                ),
            }
        }
        d
    });
    let purpose = match &c.purpose {
        Some(p) => Purpose::parse(p.get_ref()).unwrap_or_else(|| {
            src.error(
                p.span(),
                format!("unknown purpose {:?}", p.get_ref()),
                Some("one of: welcome, loyalty, offers".into()),
            );
            Purpose::Offers
        }),
        // The strictest consent unless the campaign says otherwise.
        None if c.message.is_some() => Purpose::Offers,
        None => Purpose::Loyalty,
    };
    let fallback = c
        .fallback
        .as_ref()
        .map(|f| fallback(src, &c, f, &id, names));
    let follow_up = c
        .follow_up
        .as_ref()
        .and_then(|f| follow_up(src, &c, f, &id, names));
    let mut not_private = Vec::new();
    for ch in &c.not_private {
        if names.channels.contains(&ch.get_ref().as_str()) {
            not_private.push(ch.get_ref().as_str().into());
        } else {
            src.error(
                ch.span(),
                format!(
                    "campaign `{id}`: unknown channel `{}` in not_private",
                    ch.get_ref()
                ),
                Some(did_you_mean(ch.get_ref(), names.channels.iter().copied())),
            );
        }
    }
    let message_span = c
        .message
        .as_ref()
        .map_or_else(|| c.id.span(), Spanned::span);
    let campaign = Campaign {
        id: id.as_str().into(),
        trigger,
        conditions: Conditions {
            hours: parse_ranges(src, &c.hours),
            days,
            segments: c.segments.iter().map(|s| Arc::from(s.as_str())).collect(),
            exclude_segments: c
                .exclude_segments
                .iter()
                .map(|s| Arc::from(s.as_str()))
                .collect(),
            first_visit_of_day: c.first_visit_of_day,
            min_days_since_last_visit: c.min_days_since_last_visit,
        },
        message,
        points: c.points,
        cooldown: c.cooldown.0,
        purpose,
        fallback,
        follow_up,
        not_private,
    };
    (campaign, message_span)
}

/// A campaign's trigger, with the zone it names checked against `names`.
fn trigger(
    src: &mut Source,
    c: &RawCampaign,
    id: &str,
    names: &Names<'_>,
    zones: &Zones,
) -> Trigger {
    let trigger = *c.trigger.get_ref();
    let needs_zone = matches!(
        trigger,
        TriggerName::Enter | TriggerName::Dwell | TriggerName::Exit
    );
    let zone = match (&c.zone, needs_zone) {
        (None, true) => {
            src.error(
                c.trigger.span(),
                format!("campaign `{id}`: this trigger needs `zone`"),
                Some(did_you_mean("", names.zones.iter().copied())),
            );
            None
        }
        (Some(z), false) => {
            src.error(
                z.span(),
                format!("campaign `{id}`: `zone` does not apply to this trigger"),
                Some("arrive, leave, visit_count and broadcast are about the whole store".into()),
            );
            None
        }
        (Some(z), true) => match names.zones.iter().position(|n| n == z.get_ref()) {
            None => {
                src.error(
                    z.span(),
                    format!("campaign `{id}` names unknown zone `{}`", z.get_ref()),
                    Some(did_you_mean(z.get_ref(), names.zones.iter().copied())),
                );
                None
            }
            Some(0) if trigger != TriggerName::Dwell => {
                src.error(
                    z.span(),
                    format!("campaign `{id}`: the store zone is entered by arriving"),
                    Some("use trigger = \"arrive\" or \"leave\"".into()),
                );
                None
            }
            Some(i) => {
                let idx = ZoneIdx(u16::try_from(i).unwrap_or(0));
                if trigger == TriggerName::Dwell && zones.layout.zone(idx).dwell_after.is_none() {
                    src.error(z.span(), format!("campaign `{id}` triggers on dwelling in `{}`, which has no `dwell` time", z.get_ref()), Some(format!("add e.g. dwell = \"3m\" to zone `{}` in zones.toml", z.get_ref())));
                }
                Some(idx)
            }
        },
        (None, false) => None,
    };
    let z = zone.unwrap_or(ZoneIdx(0));
    let trigger = match trigger {
        TriggerName::Arrive => Trigger::Arrive,
        TriggerName::Leave => Trigger::Leave,
        TriggerName::Enter => Trigger::Enter(z),
        TriggerName::Dwell => Trigger::Dwell(z),
        TriggerName::Exit => Trigger::Exit(z),
        TriggerName::Broadcast => {
            if c.first_visit_of_day {
                src.error(
                    c.trigger.span(),
                    format!("campaign `{id}`: first_visit_of_day does not apply to a broadcast, which is not about a visit"),
                    Some("remove first_visit_of_day; min_days_since_last_visit does apply".into()),
                );
            }
            if c.message.is_none() {
                src.error(
                    c.trigger.span(),
                    format!("campaign `{id}`: a broadcast sends a message"),
                    Some("add message = \"…\"".into()),
                );
            }
            Trigger::Broadcast
        }
        TriggerName::VisitCount => {
            let n = match &c.visits {
                Some(v) if *v.get_ref() > 0 => *v.get_ref(),
                Some(v) => {
                    src.error(v.span(), "`visits` must be at least 1", None);
                    1
                }
                None => {
                    src.error(
                        c.trigger.span(),
                        format!("campaign `{id}`: visit_count needs `visits`"),
                        Some(
                            "e.g. visits = 5 (the fifth visit), with repeat = true for every fifth"
                                .into(),
                        ),
                    );
                    1
                }
            };
            Trigger::VisitCount {
                n,
                repeat: c.repeat,
            }
        }
    };
    if !matches!(trigger, Trigger::VisitCount { .. })
        && let Some(v) = &c.visits
    {
        src.error(
            v.span(),
            "`visits` only applies to trigger = \"visit_count\"",
            None,
        );
    }
    trigger
}

/// A campaign's `fallback`, its channel checked against `names`.
fn fallback(
    src: &mut Source,
    c: &RawCampaign,
    f: &Spanned<RawFallback>,
    id: &str,
    names: &Names<'_>,
) -> Fallback {
    let raw = f.get_ref();
    if c.message.is_none() {
        src.error(
            f.span(),
            "a fallback needs a message to fall back from",
            Some("remove `fallback` or give the campaign a `message`".into()),
        );
    }
    let unless = match raw
        .unless
        .as_ref()
        .map(|u| (u.get_ref().as_str(), u.span()))
    {
        None | Some(("delivered", _)) => Reached::Delivered,
        Some(("read", _)) => Reached::Read,
        Some((other, span)) => {
            src.error(
                span,
                format!("unknown fallback condition {other:?}"),
                Some("`unless = \"delivered\"` or `unless = \"read\"`".into()),
            );
            Reached::Delivered
        }
    };
    let channel = raw.channel.as_deref().unwrap_or("sms");
    if !names.channels.contains(&channel) {
        src.error(
            f.span(),
            format!("campaign `{id}`: fallback channel `{channel}` is not configured"),
            Some(did_you_mean(channel, names.channels.iter().copied())),
        );
    }
    Fallback {
        after: raw.after.0,
        unless,
        channel: Arc::from(channel),
    }
}

/// A campaign's `follow_up`, its message checked against `names`.
fn follow_up(
    src: &mut Source,
    c: &RawCampaign,
    f: &Spanned<RawFollowUp>,
    id: &str,
    names: &Names<'_>,
) -> Option<FollowUp> {
    let raw = f.get_ref();
    if c.message.is_none() {
        src.error(
            f.span(),
            "a follow-up needs a message to follow up on",
            Some("remove `follow_up` or give the campaign a `message`".into()),
        );
    }
    match names
        .messages
        .iter()
        .position(|n| n == raw.message.get_ref())
    {
        Some(i) => Some(FollowUp {
            message: MessageIdx(u16::try_from(i).unwrap_or(0)),
            after: raw.after.0,
        }),
        None => {
            src.error(
                raw.message.span(),
                format!(
                    "campaign `{id}`: follow_up names unknown message `{}`",
                    raw.message.get_ref()
                ),
                Some(did_you_mean(
                    raw.message.get_ref(),
                    names.messages.iter().map(String::as_str),
                )),
            );
            None
        }
    }
}

/// Refuses a campaign whose message would show personal data (`{first_name}`,
/// `{balance}`) over a channel that is not private enough for it: any
/// configured channel may be a customer's, so every one is checked with the
/// variant it would get.
fn check_privacy(src: &mut Source, engine: &Engine, message_spans: &[std::ops::Range<usize>]) {
    for (c, span) in engine.campaigns.iter().zip(message_spans) {
        let Some(m) = c.message else { continue };
        let message = engine.message(m);
        for ch in &engine.channels {
            if engine.private_enough(c.id.as_str(), ch.name.as_str()) {
                continue;
            }
            let personal = message.personal_data(ch.variant);
            if personal.is_empty() {
                continue;
            }
            let why = if ch.private {
                "the campaign lists it in not_private".to_owned()
            } else {
                format!("nearcast.toml [channels.{}] has private = false", ch.name)
            };
            let fields = personal
                .iter()
                .map(|p| format!("{{{p}}}"))
                .collect::<Vec<_>>()
                .join(" and ");
            src.error(
                span.clone(),
                format!(
                    "campaign `{}` would send {fields} (message `{}`, {} variant) over channel `{}`, which is not private enough ({why})",
                    c.id,
                    message.id,
                    message.best_for(ch.variant),
                    ch.name
                ),
                Some(format!(
                    "take {fields} out of that variant of message `{}`, or give this campaign a message without personal data",
                    message.id
                )),
            );
        }
    }
}

fn check_template(src: &mut Source, t: &Spanned<String>) {
    if let Err(e) = render(t.get_ref(), &Vars::sample()) {
        src.error(
            t.span(),
            format!("template does not render: {e}"),
            Some("placeholders are {first_name}, {points}, {balance}, {store}; write a literal brace as \\{".into()),
        );
    }
}

fn check_url(src: &mut Source, u: &Spanned<String>) {
    if !u.get_ref().starts_with("https://") {
        src.error(
            u.span(),
            "media must be an https:// URL",
            Some("providers fetch media themselves and refuse plain http".into()),
        );
    }
}

fn parse_weekday(s: &str) -> Option<jiff::civil::Weekday> {
    use jiff::civil::Weekday::{Friday, Monday, Saturday, Sunday, Thursday, Tuesday, Wednesday};
    Some(match s.to_ascii_lowercase().as_str() {
        "mon" | "monday" => Monday,
        "tue" | "tuesday" => Tuesday,
        "wed" | "wednesday" => Wednesday,
        "thu" | "thursday" => Thursday,
        "fri" | "friday" => Friday,
        "sat" | "saturday" => Saturday,
        "sun" | "sunday" => Sunday,
        _ => return None,
    })
}

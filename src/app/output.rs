//! How pipeline output is shown: a human-readable line for the demo and
//! dry runs, or one JSON object per line (`replay --json`) for scripts.
//!
//! Only opted-in customers ever reach this point; their retailer id and
//! first name are shown, never a device identifier or phone number.

use std::fmt::Write as _;

use jiff::tz::TimeZone;
use serde::Serialize;

use super::pipeline::Output;
use crate::channel::console::clock;
use crate::core::campaign::{Engine, Outcome};
use crate::core::presence::EventKind;

/// One line of `replay --json`.
#[derive(Serialize, Debug, PartialEq)]
pub struct JsonLine<'a> {
    /// Unix seconds.
    pub t: f64,
    /// `arrived`, `entered`, `dwelled`, `exited`, `left`, `decision`, `suppressed`.
    #[serde(rename = "type")]
    pub kind: &'a str,
    /// Retailer's customer id.
    pub customer: &'a str,
    /// Zone id.
    pub zone: &'a str,
    /// For dwell events: seconds in the zone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dwell_s: Option<u64>,
    /// For decisions: the event that triggered it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<&'a str>,
    /// For decisions: the campaign.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub campaign: Option<&'a str>,
    /// For decisions with a message: the channel.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<&'a str>,
    /// For decisions with a message: the variant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variant: Option<&'a str>,
    /// For decisions with a message: the message id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<&'a str>,
    /// For decisions: points awarded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub points: Option<u32>,
    /// For suppressions: why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'a str>,
}

/// Formats `out` as one JSON line (with trailing newline).
#[must_use]
pub fn json(out: &Output<'_>, engine: &Engine) -> String {
    let line = match out {
        Output::Event {
            event,
            customer,
            zone,
        } => JsonLine {
            t: event.at.as_secs_f64(),
            kind: event.kind.name(),
            customer: customer.id.as_str(),
            zone,
            dwell_s: match event.kind {
                EventKind::Dwelled(_, d) => Some(d.as_secs()),
                _ => None,
            },
            event: None,
            campaign: None,
            channel: None,
            variant: None,
            message: None,
            points: None,
            reason: None,
        },
        Output::Decision {
            event,
            customer,
            committed,
        } => {
            let d = &committed.decision;
            let (kind, channel, variant, message, points, reason) = match &d.outcome {
                Outcome::Act(a) => (
                    "decision",
                    a.channel.as_ref().map(|c| c.0.as_str()),
                    a.channel.as_ref().map(|c| c.1.name()),
                    a.message.map(|m| engine.message(m).id.as_str()),
                    Some(a.points),
                    None,
                ),
                Outcome::Suppressed(r) => ("suppressed", None, None, None, None, Some(r.name())),
            };
            JsonLine {
                t: d.at.as_secs_f64(),
                kind,
                customer: customer.id.as_str(),
                zone: "",
                dwell_s: None,
                event: Some(event.kind.name()),
                campaign: Some(d.campaign_id.as_str()),
                channel,
                variant,
                message,
                points,
                reason,
            }
        }
    };
    let mut s = serde_json::to_string(&line).unwrap_or_default();
    s.push('\n');
    s
}

/// Formats `out` for people, with times in the store's time zone.
#[must_use]
pub fn human(out: &Output<'_>, tz: &TimeZone) -> String {
    let mut s = String::new();
    match out {
        Output::Event {
            event,
            customer,
            zone,
        } => {
            let (mark, what) = match event.kind {
                EventKind::Arrived => ("→", "arrived".to_owned()),
                EventKind::Left => ("←", "left".to_owned()),
                EventKind::Entered(_) => ("→", format!("entered {zone}")),
                EventKind::Exited(_) => ("←", format!("exited  {zone}")),
                EventKind::Dwelled(_, d) => ("⏱", format!("dwelled {zone} {}", mmss(d.as_secs()))),
            };
            let _ = writeln!(
                s,
                "{}  {mark} {:<18} {what}",
                clock(event.at, tz),
                name(customer)
            );
        }
        Output::Decision {
            customer,
            committed,
            ..
        } => {
            let d = &committed.decision;
            match &d.outcome {
                Outcome::Act(a) => {
                    let mut what = match &a.channel {
                        Some((c, v)) => format!("queued for {c}/{v}"),
                        None => "no message".to_owned(),
                    };
                    if a.points > 0 {
                        let _ = write!(
                            what,
                            ", +{} points (balance {})",
                            a.points, committed.balance
                        );
                    }
                    let _ = writeln!(
                        s,
                        "{}  ✓ {:<18} {}: {what}",
                        clock(d.at, tz),
                        name(customer),
                        d.campaign_id
                    );
                }
                Outcome::Suppressed(r) => {
                    let _ = writeln!(
                        s,
                        "{}  · {:<18} {}: suppressed ({r})",
                        clock(d.at, tz),
                        name(customer),
                        d.campaign_id
                    );
                }
            }
        }
    }
    s
}

fn name(c: &crate::core::identity::CustomerInfo) -> String {
    c.id.to_string()
}

fn mmss(secs: u64) -> String {
    format!("{}m{:02}s", secs / 60, secs % 60)
}

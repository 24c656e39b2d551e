//! Counters shared by the daemon's tasks and read by the local API's
//! `/metrics` and `/healthz`: the pipeline's totals ([`Counters`], copied in
//! once a tick), per-channel send outcomes and latency (fed by the outbox
//! worker through [`Metrics::note_send`]), and what the webhooks did.
//!
//! Atomics only on the hot paths; counts, never a customer's or a device's
//! identifier. Rendering to the Prometheus text format is here too, so the
//! exact lines are testable without HTTP. Sits below `channel` and `api`,
//! which feed and read it, and above `store` and `source`, whose states it
//! names; it calls none of them.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::clock::ClockStatus;
use crate::core::advert::DecodeStats;
use crate::core::campaign::Reason;
use crate::core::guard::GuardStats;
use crate::core::presence::PresenceStats;
use crate::core::types::Timestamp;
use crate::source::health::{Health, State};
use crate::store::OutboxState;

/// Running totals.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// BLE sightings handled.
    pub sightings: u64,
    /// Wi-Fi reports handled.
    pub wifi: u64,
    /// Presence events by kind: arrived, entered, dwelled, exited, left.
    pub events: [u64; 5],
    /// Decisions that acted.
    pub acted: u64,
    /// Messages queued.
    pub messages: u64,
    /// Points awarded.
    pub points: u64,
    /// Suppressions by reason (indexed like `Reason::ALL`).
    pub suppressed: [u64; Reason::ALL.len()],
    /// Frame decoding counts.
    pub decode: DecodeStats,
    /// What the flood and junk guards let through or dropped.
    pub guard: GuardStats,
    /// Presence right now: customers tracked, whose zone is unknown, and
    /// scanners silent.
    pub presence: PresenceStats,
    /// Decisions held while the database refused writes.
    pub held: HeldStats,
}

/// Events whose decisions the database could not take when they happened
/// (a full disk), held in memory and committed later.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HeldStats {
    /// Waiting now.
    pub waiting: u64,
    /// Held since start.
    pub held: u64,
    /// Committed once the database took writes again.
    pub committed: u64,
    /// Of their messages, committed past their time to live (recorded
    /// expired, never sent).
    pub expired: u64,
    /// Dropped, the oldest first, when the queue was full.
    pub dropped: u64,
}

impl Counters {
    /// Suppressions of one reason.
    #[must_use]
    pub fn suppressed(&self, r: Reason) -> u64 {
        Reason::ALL
            .iter()
            .position(|x| *x == r)
            .map_or(0, |i| self.suppressed[i])
    }
}

/// Upper bounds (seconds) of the send-latency histogram's buckets.
pub const LATENCY_BUCKETS: [f64; 9] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

const EVENT_KINDS: [&str; 5] = ["arrived", "entered", "dwelled", "exited", "left"];

/// One channel's sends: outcome counts, latency histogram, last outcome.
#[derive(Debug, Default)]
pub struct ChannelStats {
    ok: AtomicU64,
    errors: AtomicU64,
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    sum_micros: AtomicU64,
    /// When the provider last answered (ms), 0 = never.
    last_ok: AtomicI64,
    /// When the provider last could not be reached or failed (ms), 0 = never.
    last_error: AtomicI64,
}

/// What webhooks did, by result.
#[derive(Debug, Default)]
pub struct WebhookCounters {
    /// Status reports that moved a message forward.
    pub status_applied: AtomicU64,
    /// Status reports for a message already at or past that status.
    pub status_unchanged: AtomicU64,
    /// Status reports for provider ids nearcast does not know.
    pub status_unknown: AtomicU64,
    /// Inbound messages from enrolled customers.
    pub inbound_known: AtomicU64,
    /// Inbound messages from numbers that are no customer's (dropped).
    pub inbound_unknown: AtomicU64,
    /// Customers opted out by a reply (STOP, …).
    pub opt_outs: AtomicU64,
    /// Double opt-in confirmations by a reply (JA, YES, …).
    pub confirmations: AtomicU64,
    /// Requests refused for a missing or wrong signature, by provider
    /// (whatsapp, twilio, vonage).
    pub rejected: [AtomicU64; 3],
}

/// The daemon's shared counters.
#[derive(Debug, Default)]
pub struct Metrics {
    sightings: AtomicU64,
    wifi: AtomicU64,
    events: [AtomicU64; 5],
    acted: AtomicU64,
    messages: AtomicU64,
    suppressed: [AtomicU64; Reason::ALL.len()],
    tracked: AtomicU64,
    unknown: AtomicU64,
    silent_scanners: AtomicU64,
    held: [AtomicU64; 4],
    storage_failures: AtomicU64,
    channels: RwLock<BTreeMap<String, Arc<ChannelStats>>>,
    clock: RwLock<Option<ClockStatus>>,
    /// Webhook results.
    pub webhooks: WebhookCounters,
}

/// A channel's last send outcome, for `/healthz`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelHealth {
    /// Channel name.
    pub channel: String,
    /// Whether the last send reached the provider.
    pub ok: bool,
    /// When the provider last answered.
    pub last_ok: Option<Timestamp>,
    /// When a send last failed to reach it.
    pub last_error: Option<Timestamp>,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Metrics {
    /// Adds one to a counter (webhook results).
    pub fn bump(counter: &AtomicU64) {
        bump(counter);
    }

    /// Takes the pipeline's running totals (called by the daemon's loop).
    pub fn set_pipeline(&self, c: &Counters) {
        let set = |a: &AtomicU64, v: u64| a.store(v, Ordering::Relaxed);
        set(&self.sightings, c.sightings);
        set(&self.wifi, c.wifi);
        for (a, v) in self.events.iter().zip(c.events) {
            set(a, v);
        }
        set(&self.acted, c.acted);
        set(&self.messages, c.messages);
        for (a, v) in self.suppressed.iter().zip(c.suppressed) {
            set(a, v);
        }
        set(&self.tracked, c.presence.tracked);
        set(&self.unknown, c.presence.unknown);
        set(&self.silent_scanners, c.presence.silent_scanners);
        let h = c.held;
        for (a, v) in self
            .held
            .iter()
            .zip([h.waiting, h.committed, h.expired, h.dropped])
        {
            set(a, v);
        }
    }

    /// Counts a database write that failed and will be retried (the
    /// outbox worker's, with backoff).
    pub fn note_storage_failure(&self) {
        bump(&self.storage_failures);
    }

    /// Database writes that failed so far.
    #[must_use]
    pub fn storage_failures(&self) -> u64 {
        self.storage_failures.load(Ordering::Relaxed)
    }

    /// Decisions waiting for the database now.
    #[must_use]
    pub fn held_waiting(&self) -> u64 {
        self.held[0].load(Ordering::Relaxed)
    }

    /// The daemon's loop says whether it trusts the wall clock.
    pub fn set_clock(&self, status: ClockStatus) {
        if let Ok(mut c) = self.clock.write() {
            *c = Some(status);
        }
    }

    /// What the daemon's loop last said about the wall clock (`None`
    /// outside the daemon, e.g. in tests of the API alone).
    #[must_use]
    pub fn clock(&self) -> Option<ClockStatus> {
        self.clock.read().ok().and_then(|c| c.clone())
    }

    /// Records one send on `channel`: `ok` when the provider answered
    /// (accepted or refused the message), not when it could not be reached
    /// or asked to retry; `latency` of the request; `at` now.
    pub fn note_send(&self, channel: &str, ok: bool, latency: Duration, at: Timestamp) {
        let stats = self.channel(channel);
        if ok {
            bump(&stats.ok);
            stats.last_ok.store(at.0, Ordering::Relaxed);
        } else {
            bump(&stats.errors);
            stats.last_error.store(at.0, Ordering::Relaxed);
        }
        let secs = latency.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|b| secs <= *b) {
            bump(&stats.buckets[i]);
        }
        stats.sum_micros.fetch_add(
            u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    fn channel(&self, name: &str) -> Arc<ChannelStats> {
        if let Ok(map) = self.channels.read()
            && let Some(s) = map.get(name)
        {
            return s.clone();
        }
        match self.channels.write() {
            Ok(mut map) => map.entry(name.to_owned()).or_default().clone(),
            Err(_) => Arc::default(),
        }
    }

    fn snapshot_channels(&self) -> Vec<(String, Arc<ChannelStats>)> {
        self.channels.read().map_or_else(
            |_| Vec::new(),
            |m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        )
    }

    /// Each channel's last outcome; a channel never used is not listed.
    #[must_use]
    pub fn channel_health(&self) -> Vec<ChannelHealth> {
        let ts = |v: i64| (v != 0).then_some(Timestamp(v));
        self.snapshot_channels()
            .into_iter()
            .map(|(channel, s)| {
                let last_ok = s.last_ok.load(Ordering::Relaxed);
                let last_error = s.last_error.load(Ordering::Relaxed);
                ChannelHealth {
                    channel,
                    ok: last_error == 0 || last_ok >= last_error,
                    last_ok: ts(last_ok),
                    last_error: ts(last_error),
                }
            })
            .collect()
    }

    /// The Prometheus text exposition (format 0.0.4), with the outbox
    /// depth by state and the live sources' state as read now.
    #[must_use]
    pub fn render(&self, outbox: &[(OutboxState, i64)], sources: &[Arc<Health>]) -> String {
        let mut o = String::with_capacity(4096);
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let head = |o: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        head(
            &mut o,
            "nearcast_sightings_total",
            "counter",
            "BLE sightings handled.",
        );
        let _ = writeln!(o, "nearcast_sightings_total {}", get(&self.sightings));
        head(
            &mut o,
            "nearcast_wifi_reports_total",
            "counter",
            "Wi-Fi presence reports handled.",
        );
        let _ = writeln!(o, "nearcast_wifi_reports_total {}", get(&self.wifi));
        if let Some(c) = self.clock() {
            head(
                &mut o,
                "nearcast_clock_trusted",
                "gauge",
                "1 when the wall clock is trusted (synchronised and steady), else 0.",
            );
            let _ = writeln!(o, "nearcast_clock_trusted {}", u8::from(c.trusted));
        }
        head(
            &mut o,
            "nearcast_zone_events_total",
            "counter",
            "Presence events of enrolled customers, by kind.",
        );
        for (kind, a) in EVENT_KINDS.iter().zip(&self.events) {
            let _ = writeln!(
                o,
                "nearcast_zone_events_total{{kind=\"{kind}\"}} {}",
                get(a)
            );
        }
        for (name, help, a) in [
            (
                "nearcast_presence_tracked",
                "Enrolled customers being tracked now.",
                &self.tracked,
            ),
            (
                "nearcast_presence_unknown",
                "Tracked customers whose zone is unknown now: a scanner it depends on is silent.",
                &self.unknown,
            ),
            (
                "nearcast_scanners_silent",
                "Scanners that heard nothing at all for scanner_silence, or whose source is down.",
                &self.silent_scanners,
            ),
        ] {
            head(&mut o, name, "gauge", help);
            let _ = writeln!(o, "{name} {}", get(a));
        }
        head(
            &mut o,
            "nearcast_decisions_held",
            "gauge",
            "Events whose decisions wait in memory for the database to take writes (a full disk).",
        );
        let _ = writeln!(o, "nearcast_decisions_held {}", get(&self.held[0]));
        head(
            &mut o,
            "nearcast_decisions_held_total",
            "counter",
            "Held events by what became of them: committed late, messages expired meanwhile, dropped (queue full).",
        );
        for (result, a) in ["committed", "expired", "dropped"]
            .iter()
            .zip(&self.held[1..])
        {
            let _ = writeln!(
                o,
                "nearcast_decisions_held_total{{result=\"{result}\"}} {}",
                get(a)
            );
        }
        head(
            &mut o,
            "nearcast_storage_failures_total",
            "counter",
            "Outbox rounds the database refused (a full disk, an I/O error), each retried with backoff.",
        );
        let _ = writeln!(
            o,
            "nearcast_storage_failures_total {}",
            get(&self.storage_failures)
        );
        head(
            &mut o,
            "nearcast_decisions_total",
            "counter",
            "Campaign decisions that acted.",
        );
        let _ = writeln!(o, "nearcast_decisions_total {}", get(&self.acted));
        head(
            &mut o,
            "nearcast_messages_queued_total",
            "counter",
            "Messages put in the outbox.",
        );
        let _ = writeln!(o, "nearcast_messages_queued_total {}", get(&self.messages));
        head(
            &mut o,
            "nearcast_suppressions_total",
            "counter",
            "Campaign decisions suppressed, by reason.",
        );
        for (r, a) in Reason::ALL.iter().zip(&self.suppressed) {
            let _ = writeln!(
                o,
                "nearcast_suppressions_total{{reason=\"{}\"}} {}",
                r.name(),
                get(a)
            );
        }
        head(
            &mut o,
            "nearcast_outbox_messages",
            "gauge",
            "Outbox rows by state.",
        );
        for (state, n) in outbox {
            let _ = writeln!(o, "nearcast_outbox_messages{{state=\"{state}\"}} {n}");
        }
        let channels = self.snapshot_channels();
        head(
            &mut o,
            "nearcast_sends_total",
            "counter",
            "Sends by channel and whether the provider answered.",
        );
        for (c, s) in &channels {
            let _ = writeln!(
                o,
                "nearcast_sends_total{{channel=\"{c}\",outcome=\"ok\"}} {}",
                get(&s.ok)
            );
            let _ = writeln!(
                o,
                "nearcast_sends_total{{channel=\"{c}\",outcome=\"error\"}} {}",
                get(&s.errors)
            );
        }
        head(
            &mut o,
            "nearcast_send_duration_seconds",
            "histogram",
            "Time a provider took to answer a send.",
        );
        for (c, s) in &channels {
            let mut cumulative = 0;
            for (le, a) in LATENCY_BUCKETS.iter().zip(&s.buckets) {
                cumulative += get(a);
                let _ = writeln!(
                    o,
                    "nearcast_send_duration_seconds_bucket{{channel=\"{c}\",le=\"{le}\"}} {cumulative}"
                );
            }
            let count = get(&s.ok) + get(&s.errors);
            let _ = writeln!(
                o,
                "nearcast_send_duration_seconds_bucket{{channel=\"{c}\",le=\"+Inf\"}} {count}"
            );
            #[allow(clippy::cast_precision_loss)]
            let sum = get(&s.sum_micros) as f64 / 1e6;
            let _ = writeln!(
                o,
                "nearcast_send_duration_seconds_sum{{channel=\"{c}\"}} {sum}"
            );
            let _ = writeln!(
                o,
                "nearcast_send_duration_seconds_count{{channel=\"{c}\"}} {count}"
            );
        }
        let w = &self.webhooks;
        head(
            &mut o,
            "nearcast_webhook_statuses_total",
            "counter",
            "Provider status reports, by what they did.",
        );
        for (result, a) in [
            ("applied", &w.status_applied),
            ("unchanged", &w.status_unchanged),
            ("unknown", &w.status_unknown),
        ] {
            let _ = writeln!(
                o,
                "nearcast_webhook_statuses_total{{result=\"{result}\"}} {}",
                get(a)
            );
        }
        head(
            &mut o,
            "nearcast_webhook_rejected_total",
            "counter",
            "Webhook requests refused for a missing or wrong signature.",
        );
        for (p, a) in ["whatsapp", "twilio", "vonage"].iter().zip(&w.rejected) {
            let _ = writeln!(
                o,
                "nearcast_webhook_rejected_total{{provider=\"{p}\"}} {}",
                get(a)
            );
        }
        head(
            &mut o,
            "nearcast_inbound_messages_total",
            "counter",
            "Inbound replies, by whether the sender is a customer.",
        );
        let _ = writeln!(
            o,
            "nearcast_inbound_messages_total{{sender=\"customer\"}} {}",
            get(&w.inbound_known)
        );
        let _ = writeln!(
            o,
            "nearcast_inbound_messages_total{{sender=\"unknown\"}} {}",
            get(&w.inbound_unknown)
        );
        head(
            &mut o,
            "nearcast_reply_opt_outs_total",
            "counter",
            "Customers opted out by a reply such as STOP.",
        );
        let _ = writeln!(o, "nearcast_reply_opt_outs_total {}", get(&w.opt_outs));
        head(
            &mut o,
            "nearcast_reply_confirmations_total",
            "counter",
            "Double opt-in confirmations by a reply such as JA.",
        );
        let _ = writeln!(
            o,
            "nearcast_reply_confirmations_total {}",
            get(&w.confirmations)
        );
        if !sources.is_empty() {
            head(
                &mut o,
                "nearcast_source_up",
                "gauge",
                "Live sources: 1 receiving, 0 starting or recovering.",
            );
            for h in sources {
                let up = u8::from(h.state() == State::Running);
                let _ = writeln!(o, "nearcast_source_up{{source=\"{}\"}} {up}", h.name);
            }
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_last_outcome_decides_health() {
        let m = Metrics::default();
        m.note_send("sms", true, Duration::from_millis(40), Timestamp(1_000));
        m.note_send("sms", true, Duration::from_millis(300), Timestamp(2_000));
        m.note_send("sms", false, Duration::from_secs(60), Timestamp(3_000));
        let text = m.render(&[], &[]);
        for line in [
            "nearcast_send_duration_seconds_bucket{channel=\"sms\",le=\"0.05\"} 1",
            "nearcast_send_duration_seconds_bucket{channel=\"sms\",le=\"0.5\"} 2",
            "nearcast_send_duration_seconds_bucket{channel=\"sms\",le=\"30\"} 2",
            "nearcast_send_duration_seconds_bucket{channel=\"sms\",le=\"+Inf\"} 3",
            "nearcast_send_duration_seconds_sum{channel=\"sms\"} 60.34",
            "nearcast_send_duration_seconds_count{channel=\"sms\"} 3",
            "nearcast_sends_total{channel=\"sms\",outcome=\"error\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}\n{text}");
        }
        assert!(!m.channel_health()[0].ok);
        m.note_send("sms", true, Duration::from_millis(10), Timestamp(4_000));
        assert_eq!(
            m.channel_health(),
            [ChannelHealth {
                channel: "sms".into(),
                ok: true,
                last_ok: Some(Timestamp(4_000)),
                last_error: Some(Timestamp(3_000)),
            }]
        );
    }
}

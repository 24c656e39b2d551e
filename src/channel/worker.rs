//! The outbox worker: claims due rows per channel under a lease, renders
//! the variant for the row's channel, sends through the channel's adapter
//! and records the result.
//!
//! Pace and failure are handled per channel, because that is where they
//! happen: each channel has a token bucket (messages a second) and a limit
//! on requests in flight; an answer of "try later" (timeout, refused
//! connection, 5xx, 429) pauses the whole channel with exponential backoff
//! and jitter, honouring the provider's `Retry-After`, so a provider outage
//! costs one probe per backoff step instead of a storm, and the queue
//! drains in the order it was decided once the provider is back. While a
//! channel is down its probes do not use up a message's attempts; a
//! message that keeps failing on a working channel is given up (`dead`)
//! after `max_attempts`. Rows past their time to live are expired by the
//! claim, never sent late. A row whose previous attempt was interrupted (a
//! crash between the claim and the result) is sent again only to an
//! adapter that deduplicates by the outbox key; otherwise it is recorded as
//! ambiguous and left alone.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

use super::ChannelLimits;
use super::SendResult;
use super::{Adapter, Error, Outgoing};
use crate::core::campaign::Engine;
use crate::core::message::{Variant, Vars};
use crate::core::types::{ChannelName, Timestamp, millis};
use crate::store::{FollowUpResult, OutboxItem, OutboxState, Store};

/// How long a misconfigured channel rests before it is tried again (a
/// configuration reload tries it at once).
pub const MISCONFIGURED_PAUSE: Duration = Duration::from_secs(300);

/// Outbox worker settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxSettings {
    /// A claimed row is someone else's to retry after this long.
    pub lease: Duration,
    /// Rows claimed per round.
    pub batch: u32,
    /// How often the worker looks for due rows when idle.
    pub poll: Duration,
    /// Attempts before a message that keeps failing is given up (`dead`).
    pub max_attempts: u32,
    /// First wait after a failed attempt; it doubles with each attempt
    /// (with jitter) up to `backoff_max`. A provider's `Retry-After` is
    /// honoured when it asks for longer.
    pub backoff_min: Duration,
    /// Longest wait between attempts.
    pub backoff_max: Duration,
}

impl Default for OutboxSettings {
    fn default() -> OutboxSettings {
        OutboxSettings {
            lease: Duration::from_secs(30),
            batch: 32,
            poll: Duration::from_secs(1),
            max_attempts: 10,
            backoff_min: Duration::from_secs(2),
            backoff_max: Duration::from_secs(900),
        }
    }
}

/// What one round did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Messages sent.
    pub sent: u64,
    /// Messages that failed for good.
    pub failed: u64,
    /// Messages to be retried.
    pub retried: u64,
    /// Messages expired unsent.
    pub expired: u64,
    /// Messages moved to the customer's next channel.
    pub fell_over: u64,
    /// Messages given up after their last attempt.
    pub dead: u64,
    /// Interrupted sends not repeated: the provider may or may not have them.
    pub ambiguous: u64,
    /// Messages queued again on another channel after they were accepted:
    /// not delivered (or read) in time, or reported undeliverable.
    pub fallbacks: u64,
    /// Follow-ups queued (read, no purchase since).
    pub follow_ups: u64,
}

impl std::ops::AddAssign for Report {
    fn add_assign(&mut self, o: Report) {
        self.sent += o.sent;
        self.failed += o.failed;
        self.retried += o.retried;
        self.expired += o.expired;
        self.fell_over += o.fell_over;
        self.dead += o.dead;
        self.ambiguous += o.ambiguous;
        self.fallbacks += o.fallbacks;
        self.follow_ups += o.follow_ups;
    }
}

/// Retries: attempts per message and the backoff between them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts before a message is given up.
    pub max_attempts: u32,
    /// First backoff step.
    pub backoff_min: Duration,
    /// Longest backoff step.
    pub backoff_max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        let d = OutboxSettings::default();
        RetryPolicy::from(&d)
    }
}

impl From<&OutboxSettings> for RetryPolicy {
    fn from(c: &OutboxSettings) -> RetryPolicy {
        RetryPolicy {
            max_attempts: c.max_attempts,
            backoff_min: c.backoff_min,
            backoff_max: c.backoff_max,
        }
    }
}

impl RetryPolicy {
    /// The wait before the `n`th retry (1-based): `backoff_min · 2ⁿ⁻¹`,
    /// capped at `backoff_max`, of which the upper half is random
    /// ("equal jitter"), so retries of many boxes spread out without ever
    /// coming back sooner than half the step.
    #[must_use]
    pub fn backoff(&self, n: u32, rng: &mut fastrand::Rng) -> Duration {
        let step = self
            .backoff_min
            .saturating_mul(1u32 << n.saturating_sub(1).min(20))
            .min(self.backoff_max);
        let half = step / 2;
        let ms = u64::try_from(half.as_millis()).unwrap_or(u64::MAX);
        half + Duration::from_millis(rng.u64(0..=ms))
    }
}

/// One channel's pace and health. The pace is a token bucket kept as a
/// theoretical arrival time (GCRA): `rate` messages a second, at most
/// `burst` back to back, exact over any stretch of time however coarsely
/// the worker wakes.
#[derive(Clone, Copy, Debug)]
struct Lane {
    limits: ChannelLimits,
    /// When the bucket is next empty-and-refilled, in fractional ms.
    tat: f64,
    /// Answers of "try later" in a row.
    failures: u32,
    /// Nothing goes out on the channel before this.
    paused_until: Timestamp,
}

impl Lane {
    fn new(limits: ChannelLimits) -> Lane {
        Lane {
            limits,
            tat: f64::MIN,
            failures: 0,
            paused_until: Timestamp(i64::MIN),
        }
    }

    /// Milliseconds between two messages.
    fn interval(&self) -> f64 {
        1000.0 / self.limits.rate
    }

    /// How far ahead of the schedule a burst may run.
    fn tolerance(&self) -> f64 {
        self.interval() * f64::from(self.limits.burst.saturating_sub(1))
    }

    /// How many may go out now.
    #[allow(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss
    )]
    fn budget(&self, now: Timestamp, batch: u32) -> u32 {
        if now < self.paused_until {
            return 0;
        }
        let now = now.0 as f64;
        let start = self.tat.max(now);
        let slack = now + self.tolerance() - start;
        if slack < 0.0 {
            return 0;
        }
        let n = (slack / self.interval())
            .floor()
            .min(f64::from(u32::MAX - 1)) as u32
            + 1;
        n.min(self.limits.concurrency).min(batch)
    }

    fn take(&mut self, now: Timestamp, n: usize) {
        #[allow(clippy::cast_precision_loss)]
        let (now, n) = (now.0 as f64, n as f64);
        // Up to a millisecond of lateness is credited: time here has
        // millisecond steps, and the rate must hold exactly whatever the
        // interval's fraction.
        let base = if self.tat < now - 1.0 { now } else { self.tat };
        self.tat = base + n * self.interval();
    }

    /// When the next message may go out (pace and pause), from `now`.
    #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)]
    fn ready_at(&self, now: Timestamp) -> Timestamp {
        let earliest = self.tat - self.tolerance();
        let at = if earliest <= now.0 as f64 {
            now
        } else {
            Timestamp(earliest.ceil() as i64)
        };
        at.max(self.paused_until)
    }
}

/// Sends what the outbox holds.
pub struct Worker {
    store: Store,
    engine: Arc<Engine>,
    store_name: String,
    adapters: HashMap<String, Adapter>,
    lease: Duration,
    batch: u32,
    policy: RetryPolicy,
    limits: HashMap<String, ChannelLimits>,
    lanes: HashMap<String, Lane>,
    rng: fastrand::Rng,
    /// Channels that may have rows waiting: the configured ones and any
    /// found in the queue at the last full look.
    known: Vec<String>,
    /// When expiry, the sweeps and the full look last ran.
    last_sweep: Option<Timestamp>,
    /// Totals since start.
    pub totals: Report,
    /// Send outcomes and latency per channel, for `/healthz` and `/metrics`.
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// Limits for a channel the configuration does not pace (tests' adapters).
const UNPACED: ChannelLimits = ChannelLimits {
    rate: 1.0e9,
    burst: u32::MAX,
    concurrency: 1,
};

impl Worker {
    /// A worker on its own database connection, with default retries and
    /// no pacing; see [`Worker::with_policy`] and [`Worker::with_limits`].
    #[must_use]
    pub fn new(
        store: Store,
        engine: Arc<Engine>,
        store_name: String,
        adapters: HashMap<String, Adapter>,
        lease: Duration,
        batch: u32,
    ) -> Worker {
        Worker {
            store,
            engine,
            store_name,
            adapters,
            lease,
            batch: batch.max(1),
            policy: RetryPolicy::default(),
            limits: HashMap::new(),
            lanes: HashMap::new(),
            rng: fastrand::Rng::new(),
            known: Vec::new(),
            last_sweep: None,
            totals: Report::default(),
            metrics: Arc::default(),
        }
    }

    /// Sets the retry policy.
    #[must_use]
    pub fn with_policy(mut self, policy: RetryPolicy) -> Worker {
        self.policy = policy;
        self
    }

    /// Sets each channel's pace; a channel not named is not paced.
    #[must_use]
    pub fn with_limits(mut self, limits: HashMap<String, ChannelLimits>) -> Worker {
        self.set_limits(limits);
        self
    }

    /// Seeds the jitter (tests).
    #[must_use]
    pub fn with_seed(mut self, seed: u64) -> Worker {
        self.rng = fastrand::Rng::with_seed(seed);
        self
    }

    fn set_limits(&mut self, limits: HashMap<String, ChannelLimits>) {
        for (name, lane) in &mut self.lanes {
            lane.limits = limits.get(name).copied().unwrap_or(UNPACED);
        }
        self.limits = limits;
    }

    /// Takes a reloaded configuration: campaigns and messages, the store's
    /// name, the channels' adapters and pace. A paused channel is tried
    /// again at once: the reload may have fixed it.
    pub fn reconfigure(
        &mut self,
        engine: Arc<Engine>,
        store_name: String,
        adapters: HashMap<String, Adapter>,
        limits: HashMap<String, ChannelLimits>,
    ) {
        self.engine = engine;
        self.store_name = store_name;
        self.adapters = adapters;
        self.last_sweep = None;
        self.set_limits(limits);
        for lane in self.lanes.values_mut() {
            lane.paused_until = Timestamp(i64::MIN);
            lane.failures = 0;
        }
    }

    /// Deletes what retention says is old (see [`Store::purge`]).
    ///
    /// # Errors
    /// Database failures.
    pub fn purge(&mut self, cutoff: Timestamp) -> Result<crate::store::Purged, Error> {
        Ok(self.store.purge(cutoff)?)
    }

    /// The worker's connection.
    #[must_use]
    pub fn store(&self) -> &Store {
        &self.store
    }

    fn lane(&mut self, channel: &str) -> &mut Lane {
        let limits = self.limits.get(channel).copied().unwrap_or(UNPACED);
        self.lanes
            .entry(channel.to_owned())
            .or_insert_with(|| Lane::new(limits))
    }

    /// Sends what is due at `now` and what each channel's pace allows, in
    /// the order it was decided; returns when nothing more may go out at
    /// `now` ([`Worker::next_due`] says when to call again).
    ///
    /// # Errors
    /// Database failures.
    pub async fn run_once(&mut self, now: Timestamp) -> Result<Report, Error> {
        let mut report = Report::default();
        // A round may claim several times at `now`; each lease runs from
        // when its claim is really made, not from the round's start, so a
        // row claimed after earlier sends took their time is not up for
        // another worker while its own request is in flight.
        let started = tokio::time::Instant::now();
        // Expiry, the sweeps and the full look at the queue once a second:
        // their cost grows with the backlog; a round's does not (claims
        // skip expired rows themselves).
        if self
            .last_sweep
            .is_none_or(|t| now < t || now.0 - t.0 >= 1000)
        {
            self.last_sweep = Some(now);
            report.expired = self.store.expire_outbox(now)? as u64;
            self.sweep_fallbacks(now, &mut report)?;
            self.sweep_follow_ups(now, &mut report)?;
            let mut known: Vec<String> = self.adapters.keys().cloned().collect();
            for (channel, _) in self.store.outbox_channels()? {
                if !known.contains(&channel) {
                    known.push(channel);
                }
            }
            known.sort();
            self.known = known;
        }
        loop {
            let mut claimed = Vec::new();
            let mut took = 0;
            for channel in self.known.clone() {
                match self.store.outbox_channel_due(&channel)? {
                    Some(due) if due <= now => {}
                    _ => continue,
                }
                let batch = self.batch;
                let budget = self.lane(&channel).budget(now, batch);
                if budget == 0 {
                    continue;
                }
                let lease = self.lease.saturating_add(started.elapsed());
                let items = self.store.claim_channel(now, lease, &channel, budget)?;
                self.lane(&channel).take(now, items.len());
                took += items.len();
                for item in items {
                    if item.interrupted
                        && self
                            .adapters
                            .get(item.channel.as_str())
                            .is_some_and(|a| !a.dedupes())
                    {
                        let error = format!(
                            "a crash interrupted the send on attempt {}; {} cannot tell a repeat, so it is not sent again",
                            item.attempts - 1,
                            item.channel
                        );
                        tracing::warn!(outbox = item.id, channel = %item.channel, %error, "interrupted send not repeated");
                        self.store
                            .finish(item.id, OutboxState::Failed, &error, true)?;
                        report.ambiguous += 1;
                    } else {
                        claimed.push(item);
                    }
                }
            }
            if took == 0 {
                break;
            }
            claimed.sort_by_key(|i| (i.created_at, i.id));
            let Worker {
                engine,
                adapters,
                store_name,
                ..
            } = &*self;
            let (engine, adapters, store_name) = (engine.clone(), adapters.clone(), store_name);
            let store_name = store_name.clone();
            let mut sends: FuturesUnordered<_> = claimed
                .iter()
                .map(|item| {
                    let (engine, adapters, store_name) = (&engine, &adapters, &store_name);
                    async move {
                        let started = std::time::Instant::now();
                        let result = deliver(engine, adapters, store_name, item, now).await;
                        (item, result, started.elapsed())
                    }
                })
                .collect();
            // Each result is recorded as soon as it is in, so a crash
            // leaves as few sends unrecorded as possible.
            while let Some((item, result, latency)) = sends.next().await {
                // An answer from the provider, even a refusal, shows the
                // channel works.
                let answered = !matches!(
                    result,
                    SendResult::Retry { .. } | SendResult::Misconfigured { .. }
                );
                self.metrics
                    .note_send(item.channel.as_str(), answered, latency, now);
                self.record(item, now, result, &mut report)?;
            }
        }
        self.totals += report;
        Ok(report)
    }

    fn record(
        &mut self,
        item: &OutboxItem,
        now: Timestamp,
        result: SendResult,
        report: &mut Report,
    ) -> Result<(), Error> {
        match result {
            SendResult::Sent { provider_id } => {
                self.lane(item.channel.as_str()).failures = 0;
                report.sent += 1;
                self.store
                    .record_sent(item.id, now, provider_id.as_deref())?;
                let campaign = self
                    .engine
                    .campaigns
                    .iter()
                    .find(|c| c.id.as_str() == item.campaign);
                if let Some(f) = campaign.and_then(|c| c.fallback.as_ref())
                    && *f.channel != *item.channel.as_str()
                {
                    self.store.arm_fallback(
                        item.id,
                        now.saturating_add(f.after),
                        f.unless.name(),
                        &f.channel,
                    )?;
                }
            }
            SendResult::Retry { after, error } => {
                let policy = self.policy;
                let lane = self
                    .lanes
                    .entry(item.channel.to_string())
                    .or_insert_with(|| {
                        Lane::new(
                            self.limits
                                .get(item.channel.as_str())
                                .copied()
                                .unwrap_or(UNPACED),
                        )
                    });
                // The first failure after a success counts against the
                // message; further ones are the channel being down.
                let counts = lane.failures == 0;
                lane.failures = lane.failures.saturating_add(1);
                let n = lane.failures;
                let wait = policy.backoff(n, &mut self.rng).max(after);
                let until = now.saturating_add(wait);
                let lane = self.lane(item.channel.as_str());
                lane.paused_until = lane.paused_until.max(until);
                if counts && item.attempts >= policy.max_attempts {
                    tracing::warn!(outbox = item.id, campaign = %item.campaign, channel = %item.channel, attempts = item.attempts, %error, "giving up on the message");
                    self.store.finish(
                        item.id,
                        OutboxState::Dead,
                        &format!("{error} (after {} attempts)", item.attempts),
                        false,
                    )?;
                    report.dead += 1;
                } else {
                    tracing::info!(outbox = item.id, channel = %item.channel, retry_in_ms = millis(wait), %error, "send failed; retrying later");
                    self.store.retry_at(item.id, until, &error, counts)?;
                    report.retried += 1;
                }
            }
            SendResult::Fallback { ref error } => {
                self.lane(item.channel.as_str()).failures = 0;
                if let Some((channel, variant)) = self.next_channel(item) {
                    tracing::info!(outbox = item.id, from = %item.channel, to = %channel, %error, "falling over to the next channel");
                    self.store
                        .fall_over(item.id, now, &channel, variant, error)?;
                    report.fell_over += 1;
                } else {
                    tracing::warn!(outbox = item.id, campaign = %item.campaign, %error, "no further channel; message failed");
                    self.store
                        .finish(item.id, OutboxState::Failed, error, false)?;
                    report.failed += 1;
                }
            }
            SendResult::Failed { ref error } => {
                self.lane(item.channel.as_str()).failures = 0;
                tracing::warn!(outbox = item.id, campaign = %item.campaign, channel = %item.channel, %error, "message failed");
                self.store
                    .finish(item.id, OutboxState::Failed, error, false)?;
                report.failed += 1;
            }
            SendResult::Misconfigured { error } => {
                let until = now.saturating_add(MISCONFIGURED_PAUSE);
                let lane = self.lane(item.channel.as_str());
                let first = lane.paused_until < until;
                lane.paused_until = lane.paused_until.max(until);
                if first {
                    tracing::error!(channel = %item.channel, %error, "channel misconfigured; its messages wait until it is fixed (a reload tries again at once)");
                }
                self.store.retry_at(item.id, until, &error, false)?;
                report.retried += 1;
            }
        }
        Ok(())
    }

    /// Queues the follow-on of every sent message whose fallback time has
    /// come: the plain variant on the campaign's fallback channel if it was
    /// not delivered (or read) in time; the customer's next channel if the
    /// provider reported it undeliverable. Each at most once.
    fn sweep_fallbacks(&mut self, now: Timestamp, report: &mut Report) -> Result<(), Error> {
        for due in self.store.due_fallbacks(now)? {
            let item = &due.item;
            let target = if due.failed {
                self.next_channel(item)
            } else if due.unmet {
                due.channel
                    .filter(|c| {
                        item.channels.contains(c)
                            && item.consented.contains(c)
                            && self.adapters.contains_key(c.as_str())
                    })
                    .map(|c| (c, Variant::Plain))
            } else {
                None
            };
            let ttl = self
                .engine
                .messages
                .iter()
                .find(|m| m.id.as_str() == item.message)
                .map(|m| m.ttl);
            match (target, ttl) {
                (Some((channel, variant)), Some(ttl)) => {
                    let queued = self.store.chain(
                        item.id,
                        now,
                        &channel,
                        variant,
                        "fallback",
                        now.saturating_add(ttl),
                    )?;
                    if queued.is_some() {
                        tracing::info!(outbox = item.id, from = %item.channel, to = %channel, failed = due.failed, "fallback queued");
                        report.fallbacks += 1;
                    }
                }
                _ => self.store.disarm(item.id)?,
            }
        }
        Ok(())
    }

    /// Commits the follow-ups that are due, as the campaign engine decides
    /// them: messages of a campaign with a `follow_up`, read in the window
    /// the engine gives, with no purchase since.
    fn sweep_follow_ups(&mut self, now: Timestamp, report: &mut Report) -> Result<(), Error> {
        let engine = self.engine.clone();
        let local = engine.rules.local(now);
        for campaign in &engine.campaigns {
            let Some(f) = &campaign.follow_up else {
                continue;
            };
            let Some(read) = engine.follow_up_window(f, now) else {
                continue;
            };
            for parent in self.store.follow_ups_due(campaign.id.as_str(), read)? {
                match self
                    .store
                    .commit_follow_up(parent, now, &local, &engine, f)?
                {
                    FollowUpResult::Queued(id) => {
                        tracing::info!(outbox = id, parent, campaign = %campaign.id, "follow-up queued");
                        report.follow_ups += 1;
                    }
                    FollowUpResult::Suppressed(reason) => {
                        tracing::info!(parent, campaign = %campaign.id, reason = reason.name(), "follow-up suppressed");
                    }
                    FollowUpResult::Done => {}
                }
            }
        }
        Ok(())
    }

    /// When something may go out next, if anything waits: the earliest
    /// due row of each channel, no sooner than the channel's pace and
    /// pause allow.
    ///
    /// # Errors
    /// Database failures.
    pub fn next_due(&mut self, now: Timestamp) -> Result<Option<Timestamp>, Error> {
        let mut next: Option<Timestamp> = None;
        for channel in self.known.clone() {
            let Some(due) = self.store.outbox_channel_due(&channel)? else {
                continue;
            };
            let at = due.max(self.lane(&channel).ready_at(now));
            next = Some(next.map_or(at, |n| n.min(at)));
        }
        Ok(next)
    }

    /// When the worker next has anything to do at all, if anything waits:
    /// a row due ([`Worker::next_due`]), an armed fallback, or a message
    /// read that a follow-up may come after. The daemon wakes at least
    /// every `poll` anyway; a replay jumps straight there over idle time.
    /// A follow-up that is due but held (quiet hours) is reported as due
    /// now: it is looked at again at every call.
    ///
    /// # Errors
    /// Database failures.
    pub fn next_wake(&mut self, now: Timestamp) -> Result<Option<Timestamp>, Error> {
        let mut next = self.next_due(now)?;
        let mut wake = |t: Timestamp| next = Some(next.map_or(t, |n| n.min(t)));
        if let Some(t) = self.store.next_fallback()? {
            wake(t);
        }
        let engine = self.engine.clone();
        for campaign in &engine.campaigns {
            let Some(f) = &campaign.follow_up else {
                continue;
            };
            let since = Engine::follow_up_reads_since(f, now);
            if let Some(read) = self
                .store
                .next_follow_up_read(campaign.id.as_str(), since)?
            {
                wake(read.saturating_add(f.after));
            }
        }
        Ok(next)
    }

    /// The customer's next configured channel after the item's, with the
    /// richest variant of its message that channel carries.
    fn next_channel(&self, item: &OutboxItem) -> Option<(ChannelName, Variant)> {
        let message = self
            .engine
            .messages
            .iter()
            .find(|m| m.id.as_str() == item.message)?;
        let after = item.channels.iter().position(|c| *c == item.channel)?;
        let consented = item.channels[after + 1..]
            .iter()
            .filter(|c| item.consented.contains(c));
        consented.into_iter().find_map(|name| {
            let spec = self.engine.channels.iter().find(|c| c.name == *name)?;
            self.adapters
                .contains_key(name.as_str())
                .then(|| (name.clone(), message.best_for(spec.variant)))
        })
    }
}

/// Renders and sends one claimed row (or decides not to).
async fn deliver(
    engine: &Engine,
    adapters: &HashMap<String, Adapter>,
    store_name: &str,
    item: &OutboxItem,
    now: Timestamp,
) -> SendResult {
    // Consent is checked again at send time: it may have been withdrawn
    // for this channel since the decision.
    if !item.consented.contains(&item.channel) {
        return SendResult::Fallback {
            error: format!("no {} consent on this channel", item.purpose),
        };
    }
    let Some(message) = engine
        .messages
        .iter()
        .find(|m| m.id.as_str() == item.message)
    else {
        return SendResult::Failed {
            error: format!("message {:?} is no longer configured", item.message),
        };
    };
    let Some(adapter) = adapters.get(item.channel.as_str()) else {
        return SendResult::Failed {
            error: format!("channel {:?} is not configured", item.channel),
        };
    };
    let vars = Vars {
        first_name: item.first_name.clone(),
        points: item.points,
        balance: item.balance,
        store: store_name.to_owned(),
    };
    let variant = item.variant;
    // Defence in depth behind check-config: no name or balance over a
    // channel not private enough for the campaign; try the next channel.
    if let Err(error) =
        engine.privacy_guard(&item.campaign, item.channel.as_str(), message, variant)
    {
        return SendResult::Fallback { error };
    }
    let rendered = match message.render(variant, &vars) {
        Ok(r) => r,
        Err(e) => {
            return SendResult::Failed {
                error: format!("render: {e}"),
            };
        }
    };
    adapter
        .send(&Outgoing {
            item,
            rendered: &rendered,
            at: now,
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_in_the_upper_half_and_is_capped() {
        let p = RetryPolicy {
            max_attempts: 10,
            backoff_min: Duration::from_secs(2),
            backoff_max: Duration::from_secs(60),
        };
        let mut rng = fastrand::Rng::with_seed(1);
        for (n, step) in [(1, 2), (2, 4), (3, 8), (5, 32), (6, 60), (30, 60)] {
            let step = Duration::from_secs(step);
            let mut seen = std::collections::BTreeSet::new();
            for _ in 0..200 {
                let d = p.backoff(n, &mut rng);
                assert!(
                    d >= step / 2 && d <= step,
                    "n={n}: {d:?} outside {step:?}/2..={step:?}"
                );
                seen.insert(d);
            }
            assert!(seen.len() > 50, "n={n}: jitter too coarse: {}", seen.len());
        }
    }

    /// A lane sending `rate` a second, `burst` at once, `concurrency` in flight.
    fn lane(rate: f64, burst: u32, concurrency: u32) -> Lane {
        Lane::new(ChannelLimits {
            rate,
            burst,
            concurrency,
        })
    }

    #[test]
    fn a_bucket_paces_to_its_rate_after_its_burst() {
        let mut lane = lane(80.0, 1, 8);
        let t0 = Timestamp(1_000_000);
        assert_eq!(lane.budget(t0, 32), 1);
        lane.take(t0, 1);
        assert_eq!(lane.budget(t0, 32), 0);
        // One every 12.5 ms.
        assert_eq!(lane.ready_at(t0), Timestamp(t0.0 + 13));
        assert_eq!(lane.budget(Timestamp(t0.0 + 12), 32), 0);
        assert_eq!(lane.budget(Timestamp(t0.0 + 13), 32), 1);
        // Woken every millisecond for ten seconds: exactly 800 more, one
        // at a time.
        let mut sent = 0;
        for ms in 13..10_013 {
            let now = Timestamp(t0.0 + ms);
            let b = lane.budget(now, 32);
            assert!(b <= 1);
            lane.take(now, b as usize);
            sent += b;
        }
        assert_eq!(sent, 800);
        // Woken once after a quiet minute: still one (burst 1).
        assert_eq!(lane.budget(Timestamp(t0.0 + 70_000), 32), 1);
    }

    #[test]
    fn a_burst_goes_at_once_then_the_rate_holds() {
        let mut lane = lane(10.0, 5, 100);
        let t0 = Timestamp(0);
        assert_eq!(lane.budget(t0, 100), 5);
        lane.take(t0, 5);
        assert_eq!(lane.budget(t0, 100), 0);
        assert_eq!(lane.ready_at(t0), Timestamp(100));
        assert_eq!(lane.budget(Timestamp(350), 100), 3);
    }

    #[test]
    fn concurrency_and_batch_bound_a_round() {
        let mut lane = lane(1000.0, 100, 8);
        assert_eq!(lane.budget(Timestamp(0), 32), 8);
        lane.take(Timestamp(0), 0);
        assert_eq!(lane.budget(Timestamp(0), 3), 3);
        lane.paused_until = Timestamp(5);
        assert_eq!(lane.budget(Timestamp(4), 32), 0);
        assert_eq!(lane.ready_at(Timestamp(4)), Timestamp(5));
    }
}

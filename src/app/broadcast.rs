//! `nearcast broadcast --campaign ID`: one `trigger = "broadcast"` campaign
//! to every consented customer (a flash sale), decided by the same engine
//! checks and committed through the same store transaction as a presence
//! event, then delivered through the normal outbox `Worker` (so leases, rate
//! limits and failover apply, and a running daemon may share the work
//! without a message going out twice). `--dry-run` opens the database
//! read-only and reports what would be queued.
//!
//! Owns no decisions and no SQL; reads time only through its `Clock`.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Error, database_path};
use crate::channel::SendResult;
use crate::channel::{Adapter, Deliver, Outgoing, SendFuture, Worker};
use crate::clock::Clock;
use crate::config::Config;
use crate::core::campaign::{CampaignIdx, Ledger, Outcome, Reason, Trigger};
use crate::core::identity::CustomerInfo;
use crate::core::message::Variant;
use crate::core::types::Timestamp;
use crate::store::Store;

/// Customers decided and committed per transaction.
const BATCH: usize = 256;

/// How progress is shown while the outbox drains.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressStyle {
    /// A bar redrawn in place (a terminal).
    Bar,
    /// A plain line at every tenth of the way (logs, pipes).
    Lines,
    /// Nothing.
    Off,
}

/// Broadcast settings.
#[derive(Clone, Debug)]
pub struct BroadcastOptions {
    /// The campaign's id; its trigger must be `broadcast`.
    pub campaign: String,
    /// Only customers in this segment.
    pub segment: Option<String>,
    /// Decide nothing durable; report what would be queued.
    pub dry_run: bool,
    /// Database override.
    pub db: Option<PathBuf>,
    /// Progress display.
    pub progress: ProgressStyle,
}

/// What a broadcast did (or, dry, would do).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BroadcastSummary {
    /// The campaign.
    pub campaign: String,
    /// When it was decided (its messages' `created_at`).
    pub at: Timestamp,
    /// A dry run: nothing was written or sent.
    pub dry_run: bool,
    /// Customers on file (opted out included) within `--segment`.
    pub considered: u64,
    /// Customers left out by `--segment` (no decision recorded).
    pub outside_segment: u64,
    /// Messages queued (or that would be) by channel and variant.
    pub queued: Vec<(String, Variant, u64)>,
    /// Suppressed decisions by reason.
    pub suppressed: Vec<(Reason, u64)>,
    /// Delivered to the provider (sent, delivered or read).
    pub sent: u64,
    /// Failed for good.
    pub failed: u64,
    /// Moved to the customer's next channel on the way (by this process).
    pub fell_over: u64,
    /// Expired unsent (past the message's time to live).
    pub expired: u64,
    /// Still queued or being sent when the broadcast stopped waiting.
    pub pending: u64,
    /// Wall time taken.
    pub elapsed: Duration,
    /// Why the clock could not be trusted, for a dry run that went ahead
    /// anyway (a real broadcast refuses).
    pub clock_warning: Option<String>,
    /// Customers whose decision is committed (or, dry, made), opted-out
    /// ones included: all of `considered` unless it stopped.
    pub decided: u64,
    /// The campaign's cooldown (what keeps a rerun from queueing twice).
    pub cooldown: Duration,
    /// Why it stopped before the end, if it did.
    pub stopped: Option<Stopped>,
    /// Messages an earlier run of the campaign left queued (a run that
    /// stopped), still alive when this one started: it sends them too.
    pub earlier_waiting: u64,
    /// Of those, still queued when this one stopped waiting.
    pub earlier_pending: u64,
}

/// A broadcast that could not finish (the database refused a write).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stopped {
    /// While deciding (some customers not decided), or while sending.
    pub deciding: bool,
    /// What the database said.
    pub error: String,
}

impl BroadcastSummary {
    /// Messages queued in total.
    #[must_use]
    pub fn queued_total(&self) -> u64 {
        self.queued.iter().map(|q| q.2).sum()
    }

    /// Suppressions in total.
    #[must_use]
    pub fn suppressed_total(&self) -> u64 {
        self.suppressed.iter().map(|s| s.1).sum()
    }

    /// Suppressions for `reason`.
    #[must_use]
    pub fn suppressed_for(&self, reason: Reason) -> u64 {
        self.suppressed
            .iter()
            .find(|s| s.0 == reason)
            .map_or(0, |s| s.1)
    }

    /// The summary as staff read it.
    #[must_use]
    pub fn text(&self) -> String {
        let mut s = format!(
            "── broadcast {}{} ──\n",
            self.campaign,
            if self.dry_run {
                " (dry run: nothing written, nothing sent)"
            } else {
                ""
            }
        );
        if let Some(why) = &self.clock_warning {
            s.push_str(&format!(
                "clock                 NOT TRUSTED: {why}; a real broadcast would refuse to run\n"
            ));
        }
        s.push_str(&format!("customers considered  {}", self.considered));
        if self.outside_segment > 0 {
            s.push_str(&format!(
                " ({} outside --segment, left out)",
                self.outside_segment
            ));
        }
        s.push('\n');
        let verb = if self.dry_run {
            "would queue"
        } else {
            "queued"
        };
        let queued = if self.queued.is_empty() {
            "none".to_owned()
        } else {
            self.queued
                .iter()
                .map(|(c, v, n)| format!("{c}/{v} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        s.push_str(&format!("{verb:<22}{} ({queued})\n", self.queued_total()));
        let sup = if self.suppressed.is_empty() {
            "none".to_owned()
        } else {
            self.suppressed
                .iter()
                .map(|(r, n)| format!("{r} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        s.push_str(&format!(
            "suppressed            {} ({sup})\n",
            self.suppressed_total()
        ));
        if let Some(stop) = self.stopped.as_ref().filter(|s| s.deciding) {
            let left = self.considered.saturating_sub(self.decided);
            s.push_str(&format!(
                "STOPPED               after deciding {} of {} customers: {}\n",
                self.decided, self.considered, stop.error
            ));
            s.push_str(&format!(
                "                      the decisions above are committed; the other {left} are not.\n"
            ));
            if self.cooldown.is_zero() {
                s.push_str(
                    "                      this campaign has no cooldown: running it again would queue the \
                     customers above a second time\n",
                );
            } else {
                s.push_str(&format!(
                    "                      run the same command again to finish (within the campaign's cooldown \
                     of {}: the customers above are not queued twice)\n",
                    span(self.cooldown)
                ));
            }
        }
        if !self.dry_run {
            s.push_str(&format!("sent                  {}\n", self.sent));
            s.push_str(&format!("failed                {}\n", self.failed));
            s.push_str(&format!("fell over             {}\n", self.fell_over));
            s.push_str(&format!("expired               {}\n", self.expired));
            if self.earlier_waiting > 0 {
                s.push_str(&format!(
                    "from an earlier run   {} of the {} it left queued settled now (sent, failed or expired)\n",
                    self.earlier_waiting - self.earlier_pending.min(self.earlier_waiting),
                    self.earlier_waiting
                ));
            }
            if let Some(stop) = self.stopped.as_ref().filter(|s| !s.deciding) {
                s.push_str(&format!("STOPPED sending:      {}\n", stop.error));
            }
            if self.pending > 0 {
                s.push_str(&format!(
                    "still pending         {} (the daemon sends them, or running the same command again \
                     does; past their time to live they expire)\n",
                    self.pending
                ));
            }
        }
        s.push_str(&format!(
            "elapsed               {:.1} s\n",
            self.elapsed.as_secs_f64()
        ));
        s
    }
}

/// A duration as campaigns.toml writes it: `7d`, `12h`, `90m`, `30s`.
fn span(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        _ if s > 0 && s % 86_400 == 0 => format!("{}d", s / 86_400),
        _ if s > 0 && s % 3_600 == 0 => format!("{}h", s / 3_600),
        _ if s > 0 && s % 60 == 0 => format!("{}m", s / 60),
        _ => format!("{s}s"),
    }
}

/// Where progress and console output go.
pub type Sink = Arc<Mutex<dyn Write + Send>>;

/// Broadcasts `opts.campaign` at the clock's now: decides and queues for
/// every customer, then drains the outbox through `adapters` (unless dry).
///
/// # Errors
/// [`Error::Usage`] for an unknown or non-broadcast campaign or an
/// untrusted clock; database and delivery failures.
pub async fn broadcast(
    config: &Config,
    opts: &BroadcastOptions,
    clock: &dyn Clock,
    adapters: HashMap<String, Adapter>,
    progress_out: Sink,
) -> Result<BroadcastSummary, Error> {
    let started = Instant::now();
    let engine = config.engine.clone();
    let idx = campaign(config, &opts.campaign)?;
    let campaign = engine.campaign(idx);
    let untrusted = if config.daemon.clock.require_sync {
        match clock.sync_state() {
            crate::clock::SyncState::Synchronized => None,
            crate::clock::SyncState::Unsynchronized => Some(
                "the system clock is not synchronised (NTP): nothing is decided or sent until it is; \
                 check `timedatectl`"
                    .to_owned(),
            ),
            crate::clock::SyncState::Unreadable(e) => Some(format!(
                "cannot read clock sync: {e}: nothing is decided or sent until it can be read"
            )),
        }
    } else {
        None
    };
    // A dry run sends nothing and writes nothing, so it may look ahead on
    // an unsynchronised clock; it says so instead of refusing.
    if let Some(why) = &untrusted
        && !opts.dry_run
    {
        return Err(Error::Usage(why.clone()));
    }
    let db = database_path(config, opts.db.as_deref());
    super::require_database(&db)?;
    let mut store = if opts.dry_run {
        Store::open_read_only(&db)?
    } else {
        Store::open(&db)?
    };
    let now = clock.now();
    let local = engine.rules.local(now);
    let directory = store.directory()?;
    let mut keys: Vec<_> = directory.customers().collect();
    keys.sort_unstable();

    let mut summary = BroadcastSummary {
        campaign: campaign.id.to_string(),
        at: now,
        dry_run: opts.dry_run,
        clock_warning: untrusted,
        ..BroadcastSummary::default()
    };
    let opted_out = store.opted_out_segments()?;
    if let Some(want) = opts.segment.as_deref() {
        let on_file: std::collections::BTreeSet<&str> = opted_out
            .iter()
            .flatten()
            .map(String::as_str)
            .chain(
                keys.iter()
                    .filter_map(|k| directory.customer(*k))
                    .flat_map(|c| c.segments.iter().map(|s| &**s)),
            )
            .collect();
        if !on_file.contains(want) {
            return Err(Error::Usage(format!(
                "--segment {want} selects nobody: no customer on file is in it ({})",
                crate::config::did_you_mean(want, on_file.iter().copied())
            )));
        }
    }
    let mut queued: BTreeMap<(String, Variant), u64> = BTreeMap::new();
    let mut suppressed: BTreeMap<Reason, u64> = BTreeMap::new();
    for segments in opted_out {
        if in_segment(opts.segment.as_deref(), segments.iter().map(String::as_str)) {
            summary.considered += 1;
            *suppressed.entry(Reason::OptedOut).or_default() += 1;
        } else {
            summary.outside_segment += 1;
        }
    }
    let audience: Vec<&Arc<CustomerInfo>> = keys
        .iter()
        .filter_map(|k| directory.customer(*k))
        .filter(|c| {
            let inside = in_segment(opts.segment.as_deref(), c.segments.iter().map(|s| &**s));
            if !inside {
                summary.outside_segment += 1;
            }
            inside
        })
        .collect();
    summary.considered += audience.len() as u64;
    // Customers left out before deciding (opted out) count as decided.
    summary.decided = summary.considered - audience.len() as u64;
    for chunk in audience.chunks(BATCH) {
        let mut decide = || -> Result<Vec<Outcome>, Error> {
            let mut batch = Vec::with_capacity(chunk.len());
            for c in chunk {
                let history = Ledger::history(&mut store, c, &local)?;
                batch.push((&***c, engine.decide_broadcast(idx, c, &history, now)));
            }
            Ok(if opts.dry_run {
                batch.into_iter().map(|(_, d)| d.outcome).collect()
            } else {
                store
                    .commit_broadcast(batch, &local, &engine)?
                    .into_iter()
                    .map(|c| c.decision.outcome)
                    .collect()
            })
        };
        // A batch commits whole or not at all: the count is exact.
        let outcomes = match decide() {
            Ok(o) => o,
            Err(e) => {
                summary.stopped = Some(Stopped {
                    deciding: true,
                    error: e.to_string(),
                });
                break;
            }
        };
        summary.decided += chunk.len() as u64;
        for o in outcomes {
            match o {
                Outcome::Act(a) => {
                    if let Some((channel, variant)) = a.channel {
                        *queued.entry((channel.to_string(), variant)).or_default() += 1;
                    }
                }
                Outcome::Suppressed(r) => *suppressed.entry(r).or_default() += 1,
            }
        }
    }
    summary.queued = queued.into_iter().map(|((c, v), n)| (c, v, n)).collect();
    summary.suppressed = suppressed.into_iter().collect();
    summary.cooldown = campaign.cooldown;
    tracing::info!(campaign = %campaign.id, considered = summary.considered, decided = summary.decided, queued = summary.queued_total(), suppressed = summary.suppressed_total(), dry_run = opts.dry_run, "broadcast decided");
    let ttl = campaign
        .message
        .map_or(Duration::ZERO, |m| engine.message(m).ttl);
    // This run's messages and any an earlier run of it left queued and
    // still alive: a rerun after a failure finishes those too.
    let since = now.saturating_sub(ttl);
    let before = Timestamp(now.0.saturating_sub(1));
    let pending = |store: &Store, from: Timestamp, to: Timestamp| -> Result<u64, Error> {
        Ok(count(
            &store.broadcast_states(&campaign.id, from, to)?,
            &["queued", "sending"],
        ))
    };
    let waiting = if opts.dry_run || summary.stopped.is_some() {
        0
    } else {
        summary.earlier_waiting = pending(&store, since, before)?;
        pending(&store, since, now)?
    };
    drop(store);

    if waiting > 0 {
        let progress = Arc::new(Progress::new(waiting, opts.progress, progress_out));
        let adapters = adapters
            .into_iter()
            .map(|(name, inner)| {
                let counted: Adapter = Arc::new(Counted {
                    inner,
                    progress: progress.clone(),
                });
                (name, counted)
            })
            .collect();
        let mut worker = Worker::new(
            Store::open(&db)?,
            engine.clone(),
            config.layout.store_name.clone(),
            adapters,
            config.daemon.outbox.lease,
            config.daemon.outbox.batch,
        )
        // The channels' pace and the retry policy, as in the daemon: a
        // broadcast is exactly when a provider's rate limit is reached.
        .with_policy(crate::channel::RetryPolicy::from(&config.daemon.outbox))
        .with_limits(super::limits(config));
        // Past this, every row has been sent, failed or expired by a claim,
        // or is leased by a daemon that will settle it.
        let give_up = now
            .saturating_add(ttl)
            .saturating_add(config.daemon.outbox.lease)
            .saturating_add(Duration::from_secs(5));
        loop {
            let t = clock.now();
            let round = async {
                worker.run_once(t).await?;
                let pending = count(
                    &worker.store().broadcast_states(&campaign.id, since, now)?,
                    &["queued", "sending"],
                );
                let wake = worker.next_due(t)?;
                Ok::<_, crate::channel::Error>((pending, wake))
            };
            let (pending, wake) = match round.await {
                Ok(r) => r,
                Err(e) => {
                    summary.stopped = Some(Stopped {
                        deciding: false,
                        error: e.to_string(),
                    });
                    break;
                }
            };
            if pending == 0 || t > give_up {
                break;
            }
            let wake = wake.unwrap_or(t.saturating_add(Duration::from_secs(1)));
            let ms = wake.0.saturating_sub(t.0).clamp(10, 1000);
            tokio::time::sleep(Duration::from_millis(u64::try_from(ms).unwrap_or(1000))).await;
        }
        progress.finish();
        // Reading works on a full disk; if even that fails, the counts
        // stay unknown rather than wrong.
        if let Ok(states) = worker.store().broadcast_states(&campaign.id, now, now) {
            summary.sent = count(&states, &["sent", "delivered", "read"]);
            summary.failed = count(&states, &["failed", "dead"]);
            summary.expired = count(&states, &["expired"]);
            summary.pending = count(&states, &["queued", "sending"]);
        }
        if let Ok(left) = pending(worker.store(), since, before) {
            summary.earlier_pending = left;
        }
        summary.fell_over = worker.totals.fell_over;
    }
    summary.elapsed = started.elapsed();
    Ok(summary)
}

/// The campaign `id`, if it exists and is a broadcast campaign.
fn campaign(config: &Config, id: &str) -> Result<CampaignIdx, Error> {
    let engine = &config.engine;
    let broadcasts: Vec<&str> = engine
        .campaigns
        .iter()
        .filter(|c| c.trigger == Trigger::Broadcast)
        .map(|c| c.id.as_str())
        .collect();
    let hint = if broadcasts.is_empty() {
        "campaigns.toml has none: add a [[campaign]] with trigger = \"broadcast\"".to_owned()
    } else {
        format!("broadcast campaigns: {}", broadcasts.join(", "))
    };
    let Some(idx) = engine.find_campaign(id) else {
        let close = crate::config::did_you_mean(id, broadcasts.iter().copied());
        let hint = if broadcasts.is_empty() {
            hint
        } else {
            close.replace("known:", "broadcast campaigns:")
        };
        return Err(Error::Usage(format!(
            "no campaign `{id}` in campaigns.toml ({hint})"
        )));
    };
    if engine.campaign(idx).trigger != Trigger::Broadcast {
        return Err(Error::Usage(format!(
            "campaign `{id}` is sent on presence, not broadcast: only campaigns with trigger = \"broadcast\" \
             go to every customer at once ({hint})"
        )));
    }
    Ok(idx)
}

fn in_segment<'a>(want: Option<&str>, mut segments: impl Iterator<Item = &'a str>) -> bool {
    want.is_none_or(|want| segments.any(|s| s == want))
}

fn count(states: &[(String, u64)], which: &[&str]) -> u64 {
    states
        .iter()
        .filter(|(s, _)| which.contains(&s.as_str()))
        .map(|(_, n)| n)
        .sum()
}

/// An adapter that reports each send's result to the progress display.
struct Counted {
    inner: Adapter,
    progress: Arc<Progress>,
}

impl Deliver for Counted {
    fn send<'a>(&'a self, msg: &'a Outgoing<'a>) -> SendFuture<'a> {
        Box::pin(async move {
            let result = self.inner.send(msg).await;
            self.progress.record(&result);
            result
        })
    }
}

#[derive(Default)]
struct Tally {
    sent: u64,
    failed: u64,
    fell_over: u64,
    retried: u64,
    last_step: u64,
    drawn: Option<Instant>,
}

/// Progress of the drain: a bar redrawn at most ten times a second on a
/// terminal, or a line at each tenth of the total.
struct Progress {
    total: u64,
    style: ProgressStyle,
    out: Sink,
    started: Instant,
    tally: Mutex<Tally>,
}

impl Progress {
    fn new(total: u64, style: ProgressStyle, out: Sink) -> Progress {
        Progress {
            total,
            style,
            out,
            started: Instant::now(),
            tally: Mutex::new(Tally::default()),
        }
    }

    fn record(&self, r: &SendResult) {
        let Ok(mut t) = self.tally.lock() else {
            return;
        };
        match r {
            SendResult::Sent { .. } => t.sent += 1,
            SendResult::Failed { .. } => t.failed += 1,
            SendResult::Fallback { .. } => t.fell_over += 1,
            SendResult::Retry { .. } | SendResult::Misconfigured { .. } => t.retried += 1,
        }
        let done = t.sent + t.failed;
        match self.style {
            ProgressStyle::Off => {}
            ProgressStyle::Lines => {
                let step = done * 10 / self.total.max(1);
                if step > t.last_step {
                    t.last_step = step;
                    self.write(&format!("{}\n", self.line(&t)));
                }
            }
            ProgressStyle::Bar => {
                if t.drawn
                    .is_none_or(|d| d.elapsed() >= Duration::from_millis(100))
                    || done == self.total
                {
                    t.drawn = Some(Instant::now());
                    self.write(&format!("\r\x1b[2K{}", self.line(&t)));
                }
            }
        }
    }

    fn line(&self, t: &Tally) -> String {
        let done = t.sent + t.failed;
        let total = self.total.max(1);
        let filled = usize::try_from(done * 30 / total).unwrap_or(30).min(30);
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        #[allow(clippy::cast_precision_loss)]
        let rate = t.sent as f64 / secs;
        let bar = if self.style == ProgressStyle::Bar {
            format!("[{}{}] ", "#".repeat(filled), "-".repeat(30 - filled))
        } else {
            String::new()
        };
        format!(
            "{bar}{done}/{} ({}%) sent {}, failed {}, fell over {}, retrying {} ({rate:.0}/s)",
            self.total,
            done * 100 / total,
            t.sent,
            t.failed,
            t.fell_over,
            t.retried
        )
    }

    fn finish(&self) {
        if self.style == ProgressStyle::Bar {
            self.write("\n");
        }
    }

    fn write(&self, s: &str) {
        if let Ok(mut o) = self.out.lock() {
            let _ = o.write_all(s.as_bytes());
            let _ = o.flush();
        }
    }
}

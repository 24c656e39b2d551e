//! The outbox: durable queue of messages with leases, attempts, TTL
//! expiry and the result of each send.
//!
//! A worker claims a channel's due rows in one immediate transaction: it
//! selects them oldest decision first along the `outbox_channel` index,
//! sets each to `sending` under a lease and counts the attempt, then reads
//! it back typed (channel, variant, purpose parsed once, here; a row this
//! build cannot read fails, saying why). If the worker dies mid-send, the
//! lease runs out and the row is claimed again, marked interrupted. Which
//! rows to queue, chain or follow up is the campaign engine's decision;
//! this module only stores it atomically.

use std::fmt;
use std::time::Duration;

use rusqlite::{OptionalExtension, TransactionBehavior, params};

use super::{Result, Store};
use crate::core::campaign::{Engine, FollowUp, Local, Reason};
use crate::core::message::Variant;
use crate::core::types::{ChannelName, Purpose, Timestamp};

/// Where a message is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OutboxState {
    /// Waiting to be sent (or retried).
    Queued,
    /// Claimed by a worker under a lease.
    Sending,
    /// Accepted by the channel.
    Sent,
    /// Delivered to the handset.
    Delivered,
    /// Read by the customer.
    Read,
    /// Could not be sent (permanent error, opt-out).
    Failed,
    /// Its time to live ran out before it could be sent.
    Expired,
    /// Retries exhausted.
    Dead,
}

impl OutboxState {
    /// Every state.
    pub const ALL: [OutboxState; 8] = [
        OutboxState::Queued,
        OutboxState::Sending,
        OutboxState::Sent,
        OutboxState::Delivered,
        OutboxState::Read,
        OutboxState::Failed,
        OutboxState::Expired,
        OutboxState::Dead,
    ];

    /// The state's name in the database and output.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            OutboxState::Queued => "queued",
            OutboxState::Sending => "sending",
            OutboxState::Sent => "sent",
            OutboxState::Delivered => "delivered",
            OutboxState::Read => "read",
            OutboxState::Failed => "failed",
            OutboxState::Expired => "expired",
            OutboxState::Dead => "dead",
        }
    }

    /// Parses a state name.
    #[must_use]
    pub fn parse(s: &str) -> Option<OutboxState> {
        OutboxState::ALL.into_iter().find(|st| st.name() == s)
    }
}

impl fmt::Display for OutboxState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A claimed message, with what the channel needs to render and address it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxItem {
    /// Row id.
    pub id: i64,
    /// Idempotency key.
    pub key: String,
    /// Retailer's customer id.
    pub customer: String,
    /// Customer's first name.
    pub first_name: String,
    /// Customer's phone, if any.
    pub phone: Option<String>,
    /// Customer's channels in preference order.
    pub channels: Vec<ChannelName>,
    /// The purpose the message serves.
    pub purpose: Purpose,
    /// Channels with a usable consent for that purpose, now.
    pub consented: Vec<ChannelName>,
    /// Campaign id.
    pub campaign: String,
    /// Message id.
    pub message: String,
    /// The channel it goes out on.
    pub channel: ChannelName,
    /// The variant that channel gets.
    pub variant: Variant,
    /// Points awarded with it.
    pub points: u32,
    /// Balance after the award.
    pub balance: i64,
    /// When it was decided.
    pub created_at: Timestamp,
    /// Not to be sent after this.
    pub expires_at: Timestamp,
    /// Attempts so far, this one included.
    pub attempts: u32,
    /// The previous attempt was interrupted between claim and result (a
    /// crash): the provider may or may not have the message.
    pub interrupted: bool,
}

fn split(s: &str) -> Vec<ChannelName> {
    s.split('|')
        .filter(|c| !c.is_empty())
        .map(ChannelName::from)
        .collect()
}

/// A typed column's text parsed once, here: an unknown value is named as
/// the row's fault, never guessed at.
fn typed<T>(
    r: &rusqlite::Row<'_>,
    idx: usize,
    what: &'static str,
    parse: fn(&str) -> Option<T>,
) -> rusqlite::Result<std::result::Result<T, String>> {
    let text: String = r.get(idx)?;
    Ok(parse(&text).ok_or_else(|| format!("unknown {what} {text:?}")))
}

/// The same, for a listing: an unknown value fails the read.
fn column<T>(
    r: &rusqlite::Row<'_>,
    idx: usize,
    what: &'static str,
    parse: fn(&str) -> Option<T>,
) -> rusqlite::Result<T> {
    typed(r, idx, what, parse)?.map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, e.into())
    })
}

/// Row `id` as the worker needs it; `Some(Err(why))` when a column holds
/// a value this build does not know (a newer version wrote it).
fn load_item(
    conn: &rusqlite::Connection,
    id: i64,
    interrupted: bool,
) -> Result<Option<std::result::Result<OutboxItem, String>>> {
    let mut st = conn.prepare_cached(
        "SELECT o.id, o.key, c.id, c.first_name, c.phone, o.campaign, o.message, o.channel, o.variant,
                o.points, o.balance, o.created_at, o.expires_at, o.attempts, c.channels, o.purpose,
                (SELECT group_concat(s.channel, '|') FROM consents s
                 WHERE s.customer = o.customer AND s.purpose = o.purpose AND s.withdrawn_at IS NULL
                   AND (s.purpose <> 'offers' OR s.confirmed_at IS NOT NULL))
         FROM outbox o JOIN customers c ON c.key = o.customer WHERE o.id = ?1",
    )?;
    Ok(st
        .query_row([id], |r| {
            let variant = typed(r, 8, "variant", Variant::parse)?;
            let purpose = typed(r, 15, "purpose", Purpose::parse)?;
            let (variant, purpose) = match (variant, purpose) {
                (Ok(v), Ok(p)) => (v, p),
                (Err(e), _) | (_, Err(e)) => return Ok(Err(e)),
            };
            Ok(Ok(OutboxItem {
                id: r.get(0)?,
                key: r.get(1)?,
                customer: r.get(2)?,
                first_name: r.get(3)?,
                phone: r.get(4)?,
                channels: split(&r.get::<_, String>(14)?),
                purpose,
                consented: split(&r.get::<_, Option<String>>(16)?.unwrap_or_default()),
                campaign: r.get(5)?,
                message: r.get(6)?,
                channel: ChannelName::from(r.get::<_, String>(7)?.as_str()),
                variant,
                points: r.get(9)?,
                balance: r.get(10)?,
                created_at: Timestamp(r.get(11)?),
                expires_at: Timestamp(r.get(12)?),
                attempts: r.get(13)?,
                interrupted,
            }))
        })
        .optional()?)
}

/// Messages of campaign `?1` read in `?2..?3` that may be followed up:
/// first messages (not fallbacks or follow-ups themselves) of customers
/// still in, with no purchase since they were sent and no follow-up
/// decided since they were read.
const FOLLOW_UP_CANDIDATES: &str = "FROM outbox o JOIN customers c ON c.key = o.customer
     WHERE o.campaign = ?1 AND o.relation IS NULL AND o.read_at >= ?2 AND o.read_at < ?3
       AND c.opted_out_at IS NULL
       AND NOT EXISTS (SELECT 1 FROM conversions v WHERE v.customer = o.customer AND v.at >= o.sent_at)
       AND NOT EXISTS (SELECT 1 FROM decisions d WHERE d.customer = o.customer AND d.campaign = o.campaign
                       AND d.event = 'follow_up' AND d.at >= o.read_at)";

/// A sent or failed message whose fallback time has come.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DueFallback {
    /// The row, as the worker needs it.
    pub item: OutboxItem,
    /// It failed after acceptance (the provider reported it undeliverable).
    pub failed: bool,
    /// It did not reach what its campaign's fallback asked for in time.
    pub unmet: bool,
    /// Where its campaign's fallback goes.
    pub channel: Option<ChannelName>,
}

/// A row for `outbox list`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxRow {
    /// Row id.
    pub id: i64,
    /// Customer id.
    pub customer: String,
    /// Campaign.
    pub campaign: String,
    /// Channel.
    pub channel: ChannelName,
    /// Variant.
    pub variant: Variant,
    /// State.
    pub state: OutboxState,
    /// Decided at.
    pub created_at: Timestamp,
    /// Sent at.
    pub sent_at: Option<Timestamp>,
    /// Attempts.
    pub attempts: u32,
    /// Last error.
    pub error: Option<String>,
    /// A crash interrupted its send and it was not repeated: the provider
    /// may or may not have it.
    pub ambiguous: bool,
}

/// What [`Store::commit_follow_up`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FollowUpResult {
    /// Queued as this row.
    Queued(i64),
    /// Suppressed, and recorded so.
    Suppressed(Reason),
    /// The row had been followed up already.
    Done,
}

/// What one claim did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Claim {
    /// Rows claimed.
    pub items: Vec<OutboxItem>,
    /// Rows that had expired and were marked so.
    pub expired: usize,
}

impl Store {
    /// Marks rows past their TTL as expired. A row a crashed worker was
    /// sending is also marked ambiguous: it may have reached the provider.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn expire_outbox(&mut self, now: Timestamp) -> Result<usize> {
        Ok(self
            .conn
            .prepare_cached(
                "UPDATE outbox SET state = 'expired', ambiguous = (state = 'sending'), lease_until = NULL
                 WHERE state IN ('queued', 'sending') AND expires_at <= ?1 AND coalesce(lease_until, 0) <= ?1",
            )?
            .execute([now.0])?)
    }

    /// The channels with rows due at `now` (queued and due, or sending
    /// with a lapsed lease), and for every channel with rows waiting, the
    /// earliest time one is due.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn outbox_channels(&self) -> Result<Vec<(String, Timestamp)>> {
        let mut st = self.conn.prepare_cached(
            "SELECT channel, min(CASE state WHEN 'queued' THEN due_at ELSE lease_until END) FROM outbox
             WHERE state IN ('queued', 'sending') GROUP BY channel",
        )?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, Timestamp(r.get(1)?))))?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    /// When `channel`'s next row is due (queued and due, or a lease that
    /// lapses), if it has any waiting; an index lookup, however long the
    /// queue.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn outbox_channel_due(&self, channel: &str) -> Result<Option<Timestamp>> {
        let queued: Option<i64> = self
            .conn
            .prepare_cached(
                "SELECT min(due_at) FROM outbox WHERE state = 'queued' AND channel = ?1",
            )?
            .query_row([channel], |r| r.get(0))?;
        let sending: Option<i64> = self
            .conn
            .prepare_cached(
                "SELECT min(lease_until) FROM outbox WHERE state = 'sending' AND channel = ?1",
            )?
            .query_row([channel], |r| r.get(0))?;
        Ok(match (queued, sending) {
            (Some(a), Some(b)) => Some(Timestamp(a.min(b))),
            (a, b) => a.or(b).map(Timestamp),
        })
    }

    /// Marks rows past their TTL as expired, then claims up to `limit` due
    /// rows of every channel (see [`Store::claim_channel`]).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn claim_outbox(&mut self, now: Timestamp, lease: Duration, limit: u32) -> Result<Claim> {
        let expired = self.expire_outbox(now)?;
        let mut items = Vec::new();
        for (channel, due) in self.outbox_channels()? {
            if due <= now {
                items.extend(self.claim_channel(now, lease, &channel, limit)?);
            }
        }
        items.sort_by_key(|i| (i.created_at, i.id));
        Ok(Claim { items, expired })
    }

    /// Claims up to `limit` of `channel`'s due rows for `lease`, oldest
    /// decision first, counting the attempt before anything is sent: a
    /// claim is the record that a send may have started.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn claim_channel(
        &mut self,
        now: Timestamp,
        lease: Duration,
        channel: &str,
        limit: u32,
    ) -> Result<Vec<OutboxItem>> {
        // The claim is the record that a send may have started, so it must
        // survive a power cut: with `synchronous = NORMAL` a WAL commit
        // reaches the disk only at the next checkpoint, and a box that
        // loses power after the request would come back with the row
        // queued, not interrupted, and send it again unmarked. This one
        // transaction is synced (the rest keep NORMAL); syncing the WAL
        // also makes every earlier commit in it durable.
        self.conn.pragma_update(None, "synchronous", "FULL")?;
        let claimed = self.claim_channel_tx(now, lease, channel, limit);
        self.conn.pragma_update(None, "synchronous", "NORMAL")?;
        claimed
    }

    fn claim_channel_tx(
        &mut self,
        now: Timestamp,
        lease: Duration,
        channel: &str,
        limit: u32,
    ) -> Result<Vec<OutboxItem>> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        // One walk per state along (channel, state, created_at), stopping
        // after `limit` matches: the cost does not grow with the backlog.
        let mut due: Vec<(i64, i64, bool)> = Vec::new();
        for (state, time) in [("queued", "due_at"), ("sending", "lease_until")] {
            let rows = tx
                .prepare_cached(&format!(
                    "SELECT created_at, id FROM outbox INDEXED BY outbox_channel
                     WHERE channel = ?1 AND state = ?4 AND {time} <= ?2 AND expires_at > ?2
                     ORDER BY created_at, id LIMIT ?3"
                ))?
                .query_map(params![channel, now.0, limit, state], |r| {
                    Ok((r.get(0)?, r.get(1)?, state == "sending"))
                })?
                .collect::<std::result::Result<Vec<_>, _>>()?;
            due.extend(rows);
        }
        due.sort_unstable();
        due.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        let due: Vec<(i64, bool)> = due.into_iter().map(|(_, id, s)| (id, s)).collect();
        let mut items = Vec::with_capacity(due.len());
        {
            let mut claim = tx.prepare_cached(
                "UPDATE outbox SET state = 'sending', lease_until = ?2, attempts = attempts + 1 WHERE id = ?1",
            )?;
            for (id, interrupted) in due {
                claim.execute(params![id, now.saturating_add(lease).0])?;
                match load_item(&tx, id, interrupted)? {
                    Some(Ok(item)) => items.push(item),
                    // Nothing can be sent from a row this build cannot
                    // read; it fails, saying why, rather than being sent
                    // as something else.
                    Some(Err(why)) => {
                        tx.prepare_cached(
                            "UPDATE outbox SET state = 'failed', lease_until = NULL, error = ?2 WHERE id = ?1",
                        )?
                        .execute(params![id, format!("unreadable row: {why}")])?;
                    }
                    None => {}
                }
            }
        }
        tx.commit()?;
        Ok(items)
    }

    /// Records that the provider accepted row `id` at `now`, under its
    /// message id if it gave one.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn record_sent(
        &mut self,
        id: i64,
        now: Timestamp,
        provider_id: Option<&str>,
    ) -> Result<()> {
        self.conn
            .prepare_cached(
                "UPDATE outbox SET state = 'sent', sent_at = ?2, provider_id = ?3, lease_until = NULL, error = NULL WHERE id = ?1",
            )?
            .execute(params![id, now.0, provider_id])?;
        Ok(())
    }

    /// Puts row `id` back in the queue, due at `due`. `counts: false`
    /// gives the attempt back: the message was not at fault (its channel
    /// was down or misconfigured).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn retry_at(&mut self, id: i64, due: Timestamp, error: &str, counts: bool) -> Result<()> {
        self.conn
            .prepare_cached(
                "UPDATE outbox SET state = 'queued', due_at = ?2, lease_until = NULL, error = ?3,
                        attempts = attempts - (1 - ?4) WHERE id = ?1",
            )?
            .execute(params![id, due.0, error, counts])?;
        Ok(())
    }

    /// Ends row `id` in `state` (`failed` or `dead`); `ambiguous` says the
    /// provider may have it even so.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn finish(
        &mut self,
        id: i64,
        state: OutboxState,
        error: &str,
        ambiguous: bool,
    ) -> Result<()> {
        self.conn
            .prepare_cached(
                "UPDATE outbox SET state = ?2, lease_until = NULL, error = ?3, ambiguous = ?4 WHERE id = ?1",
            )?
            .execute(params![id, state.name(), error, ambiguous])?;
        Ok(())
    }

    /// Arms row `id`'s delivery-timeout fallback: unless it is `unless`
    /// (`delivered` or `read`) by `at`, `channel` gets the message. A row
    /// that is itself a fallback or follow-up is not armed.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn arm_fallback(
        &mut self,
        id: i64,
        at: Timestamp,
        unless: &str,
        channel: &str,
    ) -> Result<()> {
        self.conn
            .prepare_cached(
                "UPDATE outbox SET fallback_at = ?2, fallback_on = ?3, fallback_channel = ?4
                 WHERE id = ?1 AND relation IS NULL",
            )?
            .execute(params![id, at.0, unless, channel])?;
        Ok(())
    }

    /// Rows whose fallback time has come: sent rows with an armed
    /// fallback, and rows the provider reported failed after accepting
    /// them (the API sets their fallback time to the report's).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn due_fallbacks(&self, now: Timestamp) -> Result<Vec<DueFallback>> {
        let rows: Vec<(i64, bool, bool, Option<String>)> = self
            .conn
            .prepare_cached(
                "SELECT id, state = 'failed',
                        CASE fallback_on WHEN 'read' THEN state IN ('sent', 'delivered') AND read_at IS NULL
                                         ELSE state = 'sent' AND delivered_at IS NULL AND read_at IS NULL END,
                        fallback_channel
                 FROM outbox WHERE fallback_at IS NOT NULL AND fallback_at <= ?1 ORDER BY fallback_at, id",
            )?
            .query_map([now.0], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
            .collect::<std::result::Result<_, _>>()?;
        let mut out = Vec::with_capacity(rows.len());
        for (id, failed, unmet, channel) in rows {
            if let Some(Ok(item)) = load_item(&self.conn, id, false)? {
                out.push(DueFallback {
                    item,
                    failed,
                    unmet,
                    channel: channel.as_deref().map(ChannelName::from),
                });
            }
        }
        Ok(out)
    }

    /// Queues row `parent`'s message again as a new row on `channel` with
    /// `variant`, due at `now` and living until `expires_at`, linked to its
    /// parent as `relation` (`fallback` or `follow_up`), and disarms the
    /// parent; at most once per parent and relation (the key says so).
    /// Returns the new row's id, or `None` if there already was one.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn chain(
        &mut self,
        parent: i64,
        now: Timestamp,
        channel: &ChannelName,
        variant: Variant,
        relation: &str,
        expires_at: Timestamp,
    ) -> Result<Option<i64>> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let n = tx
            .prepare_cached(
                "INSERT OR IGNORE INTO outbox (key, customer, campaign, message, channel, variant, points, balance,
                        created_at, due_at, expires_at, state, purpose, parent, relation)
                 SELECT key || ':' || ?5, customer, campaign, message, ?3, ?4, points, balance,
                        ?2, ?2, ?6, 'queued', purpose, id, ?5
                 FROM outbox WHERE id = ?1",
            )?
            .execute(params![
                parent,
                now.0,
                channel.as_str(),
                variant.name(),
                relation,
                expires_at.0
            ])?;
        let id = (n == 1).then(|| tx.last_insert_rowid());
        tx.prepare_cached("UPDATE outbox SET fallback_at = NULL WHERE id = ?1")?
            .execute([parent])?;
        tx.commit()?;
        Ok(id)
    }

    /// Messages of `campaign` read in `read` (a window of read times) with
    /// no purchase by the customer since they were sent, no follow-up
    /// decided for them yet, from customers who have not opted out: their
    /// row ids, oldest first.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn follow_ups_due(
        &self,
        campaign: &str,
        read: std::ops::Range<Timestamp>,
    ) -> Result<Vec<i64>> {
        let rows = self
            .conn
            .prepare_cached(&format!(
                "SELECT o.id {FOLLOW_UP_CANDIDATES} ORDER BY o.read_at, o.id"
            ))?
            .query_map(params![campaign, read.start.0, read.end.0], |r| r.get(0))?
            .collect::<std::result::Result<_, _>>()?;
        Ok(rows)
    }

    /// The earliest read time, at or after `since`, of a message of
    /// `campaign` that [`Store::follow_ups_due`] would still return once
    /// its time comes (not followed up, no purchase since, customer still
    /// in): when the next follow-up can come due is that plus the
    /// campaign's delay.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn next_follow_up_read(
        &self,
        campaign: &str,
        since: Timestamp,
    ) -> Result<Option<Timestamp>> {
        let at: Option<i64> = self
            .conn
            .prepare_cached(&format!("SELECT min(o.read_at) {FOLLOW_UP_CANDIDATES}"))?
            .query_row(params![campaign, since.0, i64::MAX], |r| r.get(0))?;
        Ok(at.map(Timestamp))
    }

    /// When the earliest armed fallback is due, if any.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn next_fallback(&self) -> Result<Option<Timestamp>> {
        let at: Option<i64> = self
            .conn
            .prepare_cached("SELECT min(fallback_at) FROM outbox WHERE fallback_at IS NOT NULL")?
            .query_row([], |r| r.get(0))?;
        Ok(at.map(Timestamp))
    }

    /// Commits follow-up `f` of row `parent` as the engine decides it
    /// from the customer's counts read inside this transaction: queued as a
    /// new row on the parent's channel, or suppressed by a cap. Either way
    /// the decision is recorded (event `follow_up`), so it is decided once.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn commit_follow_up(
        &mut self,
        parent: i64,
        now: Timestamp,
        local: &Local,
        engine: &Engine,
        f: &FollowUp,
    ) -> Result<FollowUpResult> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let (customer, campaign, channel): (i64, String, String) = tx
            .prepare_cached("SELECT customer, campaign, channel FROM outbox WHERE id = ?1")?
            .query_row([parent], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        let counts = super::ledger::counts(&tx, customer, local)?;
        let (result, id) = match engine.decide_follow_up(f, &channel, counts, now) {
            Err(reason) => (FollowUpResult::Suppressed(reason), None),
            Ok(action) => {
                let n = tx.prepare_cached(
                    "INSERT OR IGNORE INTO outbox (key, customer, campaign, message, channel, variant, points, balance,
                            created_at, due_at, expires_at, state, purpose, parent, relation)
                     SELECT key || ':follow_up', customer, campaign, ?3, channel, ?4, 0, balance,
                            ?2, ?2, ?5, 'queued', purpose, id, 'follow_up'
                     FROM outbox WHERE id = ?1",
                )?
                .execute(params![
                    parent,
                    now.0,
                    engine.message(action.message).id.as_str(),
                    action.variant.name(),
                    action.expires_at.0
                ])?;
                if n == 0 {
                    // Already followed up (the key says so): nothing to record.
                    return Ok(FollowUpResult::Done);
                }
                let id = tx.last_insert_rowid();
                (FollowUpResult::Queued(id), Some(id))
            }
        };
        let reason = match result {
            FollowUpResult::Suppressed(r) => Some(r.name()),
            _ => None,
        };
        tx.prepare_cached(
            "INSERT INTO decisions (at, customer, campaign, event, zone, outcome, reason, channel, outbox)
             VALUES (?1, ?2, ?3, 'follow_up', '-', ?4, ?5, ?6, ?7)",
        )?
        .execute(params![
            now.0,
            customer,
            campaign,
            if reason.is_some() { "suppressed" } else { "act" },
            reason,
            channel,
            id
        ])?;
        tx.commit()?;
        Ok(result)
    }

    /// Disarms row `id`'s fallback: nothing is to follow it.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn disarm(&mut self, id: i64) -> Result<()> {
        self.conn
            .prepare_cached("UPDATE outbox SET fallback_at = NULL WHERE id = ?1")?
            .execute([id])?;
        Ok(())
    }

    /// Moves row `id` to another channel and variant, due at once: the
    /// customer was not reachable on the previous one (`error`).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn fall_over(
        &mut self,
        id: i64,
        now: Timestamp,
        channel: &ChannelName,
        variant: Variant,
        error: &str,
    ) -> Result<()> {
        self.conn
            .prepare_cached(
                "UPDATE outbox SET state = 'queued', channel = ?3, variant = ?4, due_at = ?2, lease_until = NULL,
                        error = ?5 WHERE id = ?1",
            )?
            .execute(params![id, now.0, channel.as_str(), variant.name(), error])?;
        Ok(())
    }

    /// Outbox rows, newest first, optionally of one state.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn outbox_rows(&self, state: Option<OutboxState>, limit: u32) -> Result<Vec<OutboxRow>> {
        let mut st = self.conn.prepare_cached(
            "SELECT o.id, c.id, o.campaign, o.channel, o.variant, o.state, o.created_at, o.sent_at, o.attempts, o.error,
                    o.ambiguous
             FROM outbox o JOIN customers c ON c.key = o.customer
             WHERE ?1 IS NULL OR o.state = ?1 ORDER BY o.id DESC LIMIT ?2",
        )?;
        let rows = st.query_map(params![state.map(OutboxState::name), limit], |r| {
            Ok(OutboxRow {
                id: r.get(0)?,
                customer: r.get(1)?,
                campaign: r.get(2)?,
                channel: ChannelName::from(r.get::<_, String>(3)?.as_str()),
                variant: column(r, 4, "variant", Variant::parse)?,
                state: column(r, 5, "state", OutboxState::parse)?,
                created_at: Timestamp(r.get(6)?),
                sent_at: r.get::<_, Option<i64>>(7)?.map(Timestamp),
                attempts: r.get(8)?,
                error: r.get(9)?,
                ambiguous: r.get(10)?,
            })
        })?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }
}

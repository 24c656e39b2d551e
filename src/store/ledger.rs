//! The campaign engine's ledger in SQLite: history snapshots, and each
//! event's decisions committed in one transaction with the cooldown claimed
//! conditionally, caps re-checked, points and the outbox row written, so two
//! deciders on one database can never both send.

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use super::{Error, Store};
use crate::core::campaign::{
    Committed, Counts, Decision, Engine, History, Ledger, Local, Outcome, Reason,
};
use crate::core::identity::CustomerInfo;
use crate::core::presence::{EventKind, ZoneEvent};
use crate::core::types::millis;

impl Ledger for Store {
    type Error = Error;

    fn history(&mut self, customer: &CustomerInfo, local: &Local) -> Result<History, Error> {
        let c = &self.conn;
        let key = i64::from(customer.key.0);
        let mut arrivals = c.prepare_cached(
            "SELECT arrived_at FROM visits WHERE customer = ?1 ORDER BY arrived_at DESC LIMIT 2",
        )?;
        let last: Vec<i64> = arrivals
            .query_map([key], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        let visits: i64 = c
            .prepare_cached("SELECT count(*) FROM visits WHERE customer = ?1")?
            .query_row([key], |r| r.get(0))?;
        let mut fired =
            c.prepare_cached("SELECT campaign, last_at FROM cooldowns WHERE customer = ?1")?;
        let last_fired = fired
            .query_map([key], |r| {
                Ok((
                    r.get::<_, String>(0)?.as_str().into(),
                    crate::core::types::Timestamp(r.get(1)?),
                ))
            })?
            .collect::<Result<_, _>>()?;
        let counts = counts(c, key, local)?;
        Ok(History {
            visits: clamp(visits),
            last_arrival: last.first().copied().map(crate::core::types::Timestamp),
            previous_arrival: last.get(1).copied().map(crate::core::types::Timestamp),
            last_fired,
            messages_today: counts.messages_today,
            messages_week: counts.messages_week,
            points_today: counts.points_today,
            balance: balance_of(c, key)?,
        })
    }

    fn commit(
        &mut self,
        event: &ZoneEvent,
        zone: &str,
        customer: &CustomerInfo,
        local: &Local,
        engine: &Engine,
        decisions: Vec<Decision>,
    ) -> Result<Vec<Committed>, Error> {
        let key = i64::from(customer.key.0);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        // Consent is re-read inside the transaction: an opt-out or erasure
        // since the snapshot wins, and nothing more is written about them.
        if !opted_in(&tx, key)? {
            return Ok(decisions.into_iter().map(opted_out).collect());
        }
        match event.kind {
            EventKind::Arrived => {
                tx.prepare_cached("INSERT INTO visits (customer, arrived_at) VALUES (?1, ?2)")?
                    .execute(params![key, event.at.0])?;
            }
            EventKind::Left => {
                tx.prepare_cached(
                    "UPDATE visits SET left_at = ?2 WHERE id = (SELECT max(id) FROM visits WHERE customer = ?1 AND left_at IS NULL)",
                )?
                .execute(params![key, event.at.0])?;
            }
            _ => {}
        }
        let mut balance = balance_of(&tx, key)?;
        let mut out = Vec::with_capacity(decisions.len());
        for d in decisions {
            out.push(commit_decision(
                &tx,
                customer,
                local,
                engine,
                d,
                (event.kind.name(), zone),
                &mut balance,
            )?);
        }
        tx.commit()?;
        Ok(out)
    }
}

fn clamp(v: i64) -> u32 {
    u32::try_from(v.max(0)).unwrap_or(u32::MAX)
}

/// What the caps count for customer `key` at `local` (messages queued
/// since the local day's and week's start, points awarded today): the facts
/// the engine's caps are decided from, before a decision and again inside
/// the transaction that commits it.
pub(super) fn counts(c: &Connection, key: i64, local: &Local) -> Result<Counts, Error> {
    let (today, week): (i64, i64) = c
        .prepare_cached(
            "SELECT coalesce(sum(created_at >= ?2), 0), count(*) FROM outbox WHERE customer = ?1 AND created_at >= ?3",
        )?
        .query_row(
            params![key, local.day_start.0, local.week_start.0.min(local.day_start.0)],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
    let points_today: i64 = c
        .prepare_cached(
            "SELECT coalesce(sum(points), 0) FROM ledger WHERE customer = ?1 AND at >= ?2 AND points > 0",
        )?
        .query_row(params![key, local.day_start.0], |r| r.get(0))?;
    Ok(Counts {
        messages_today: clamp(today),
        messages_week: clamp(week),
        points_today: clamp(points_today),
    })
}

/// Whether the customer is still on file and has not opted out.
pub(super) fn opted_in(tx: &Transaction<'_>, key: i64) -> Result<bool, Error> {
    let consented: Option<bool> = tx
        .query_row(
            "SELECT opted_out_at IS NULL FROM customers WHERE key = ?1",
            [key],
            |r| r.get(0),
        )
        .optional()?;
    Ok(consented == Some(true))
}

/// A decision for a customer who opted out meanwhile: nothing is written.
pub(super) fn opted_out(mut d: Decision) -> Committed {
    d.outcome = Outcome::Suppressed(Reason::OptedOut);
    Committed {
        decision: d,
        outbox_id: None,
        balance: 0,
    }
}

/// The customer's points balance.
pub(super) fn balance_of(c: &Connection, key: i64) -> Result<i64, Error> {
    Ok(
        c.prepare_cached("SELECT coalesce(sum(points), 0) FROM ledger WHERE customer = ?1")?
            .query_row([key], |r| r.get(0))?,
    )
}

/// Commits one decision inside `tx`: the engine's caps re-decided from the
/// counts as they are now, the cooldown claimed conditionally, points and the outbox row written, and the decision
/// recorded with `event` and `zone` (`(kind, zone)`, or `("broadcast", "-")`).
/// Presence events and broadcasts both go through here.
pub(super) fn commit_decision(
    tx: &Transaction<'_>,
    customer: &CustomerInfo,
    local: &Local,
    engine: &Engine,
    mut d: Decision,
    (event, zone): (&str, &str),
    balance: &mut i64,
) -> Result<Committed, Error> {
    let key = i64::from(customer.key.0);
    let campaign = engine.campaign(d.campaign);
    let mut outbox_id = None;
    if let Outcome::Act(a) = &mut d.outcome {
        let suppressed = (|| -> Result<Option<Reason>, Error> {
            match engine
                .rules
                .caps(counts(tx, key, local)?, a.message.is_some(), a.points)
            {
                Ok(points) => a.points = points,
                Err(reason) => return Ok(Some(reason)),
            }
            // The claim: succeeds only if no decision took this
            // campaign's cooldown for this customer meanwhile.
            let claimed = tx
                .prepare_cached(
                    "INSERT INTO cooldowns (customer, campaign, last_at) VALUES (?1, ?2, ?3)
                         ON CONFLICT (customer, campaign) DO UPDATE SET last_at = excluded.last_at
                         WHERE excluded.last_at - cooldowns.last_at >= ?4",
                )?
                .execute(params![
                    key,
                    d.campaign_id.as_str(),
                    d.at.0,
                    millis(campaign.cooldown)
                ])?;
            Ok((claimed == 0).then_some(Reason::Cooldown))
        })()?;
        if let Some(reason) = suppressed {
            d.outcome = Outcome::Suppressed(reason);
        } else {
            if a.points > 0 {
                tx.prepare_cached(
                    "INSERT INTO ledger (customer, at, points, campaign) VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![
                    key,
                    d.at.0,
                    a.points,
                    d.campaign_id.as_str()
                ])?;
                *balance += i64::from(a.points);
            }
            if let (Some(m), Some((channel, variant))) = (a.message, &a.channel) {
                let idem = format!("{}-{}-{}", customer.key.0, d.campaign_id, d.at.0);
                tx.prepare_cached(
                        "INSERT INTO outbox (key, customer, campaign, message, channel, variant, points, balance,
                                             created_at, due_at, expires_at, state, purpose)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9, ?10, 'queued', ?11)",
                    )?
                    .execute(params![
                        idem,
                        key,
                        d.campaign_id.as_str(),
                        engine.message(m).id.as_str(),
                        channel.as_str(),
                        variant.name(),
                        a.points,
                        *balance,
                        d.at.0,
                        a.expires_at.0,
                        campaign.purpose.name()
                    ])?;
                outbox_id = Some(tx.last_insert_rowid());
            }
        }
    }
    let (outcome, reason, channel) = match &d.outcome {
        Outcome::Act(a) => ("act", None, a.channel.as_ref().map(|c| c.0.as_str())),
        Outcome::Suppressed(r) => ("suppressed", Some(r.name()), None),
    };
    tx.prepare_cached(
            "INSERT INTO decisions (at, customer, campaign, event, zone, outcome, reason, channel, outbox)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?
        .execute(params![d.at.0, key, d.campaign_id.as_str(), event, zone, outcome, reason, channel, outbox_id])?;
    Ok(Committed {
        decision: d,
        outbox_id,
        balance: *balance,
    })
}

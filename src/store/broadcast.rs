//! Broadcasts in SQLite: a batch of customers' broadcast decisions committed
//! through the same per-decision code as presence events (consent re-read,
//! caps re-checked, cooldown claimed conditionally, points, outbox row,
//! audit), and the delivery state of one broadcast's messages.

use rusqlite::{TransactionBehavior, params};

use super::ledger::{balance_of, commit_decision, opted_in, opted_out};
use super::{Error, Store};
use crate::core::campaign::{Committed, Decision, Engine, Local};
use crate::core::identity::CustomerInfo;
use crate::core::types::{CampaignId, Timestamp};

/// The `event` a broadcast decision is recorded with in the audit trail.
pub const BROADCAST_EVENT: &str = "broadcast";

impl Store {
    /// Commits broadcast decisions for a batch of customers in one
    /// transaction (one per customer would cost an fsync each on an SD
    /// card). Each decision is re-checked exactly like a presence event's:
    /// a customer who opted out meanwhile gets `Suppressed(OptedOut)` and
    /// nothing written; a cooldown or cap taken meanwhile suppresses it.
    ///
    /// # Errors
    /// Storage failures; then nothing of the batch was written.
    pub fn commit_broadcast(
        &mut self,
        batch: Vec<(&CustomerInfo, Decision)>,
        local: &Local,
        engine: &Engine,
    ) -> Result<Vec<Committed>, Error> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut out = Vec::with_capacity(batch.len());
        for (customer, d) in batch {
            let key = i64::from(customer.key.0);
            if !opted_in(&tx, key)? {
                out.push(opted_out(d));
                continue;
            }
            let mut balance = balance_of(&tx, key)?;
            out.push(commit_decision(
                &tx,
                customer,
                local,
                engine,
                d,
                (BROADCAST_EVENT, "-"),
                &mut balance,
            )?);
        }
        tx.commit()?;
        Ok(out)
    }

    /// The segments of each customer who opted out (so a broadcast can
    /// count them, by `--segment`, as suppressed `opted_out`).
    ///
    /// # Errors
    /// Storage failures.
    pub fn opted_out_segments(&self) -> Result<Vec<Vec<String>>, Error> {
        let mut st = self
            .conn
            .prepare_cached("SELECT segments FROM customers WHERE opted_out_at IS NOT NULL")?;
        let rows = st.query_map([], |r| r.get::<_, String>(0))?;
        rows.map(|r| {
            r.map(|s| {
                s.split(';')
                    .filter(|x| !x.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .map_err(Error::from)
        })
        .collect()
    }

    /// How many of the messages broadcasts of `campaign` queued, decided
    /// from `since` through `at`, are in each outbox state.
    ///
    /// # Errors
    /// Storage failures.
    pub fn broadcast_states(
        &self,
        campaign: &CampaignId,
        since: Timestamp,
        at: Timestamp,
    ) -> Result<Vec<(String, u64)>, Error> {
        let mut st = self.conn.prepare_cached(
            "SELECT state, count(*) FROM outbox WHERE campaign = ?1 AND created_at BETWEEN ?2 AND ?3 AND parent IS NULL
             GROUP BY state ORDER BY state",
        )?;
        let rows = st.query_map(params![campaign.as_str(), since.0, at.0], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
        })?;
        rows.map(|r| {
            r.map(|(s, n)| (s, u64::try_from(n).unwrap_or(0)))
                .map_err(Error::from)
        })
        .collect()
    }
}

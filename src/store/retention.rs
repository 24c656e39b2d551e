//! Retention: visits, decisions, finished messages, conversions and
//! last-inbound times older than the configured period are deleted. Sightings are never stored at all; the
//! points ledger stays (it is the customer's balance), and so do cooldowns
//! (one row per customer and campaign; deleting one early could let a
//! campaign with a long cooldown send again).

use rusqlite::params;

use super::{Result, Store};
use crate::core::types::Timestamp;

/// What a purge deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Purged {
    /// Visits that ended before the cutoff.
    pub visits: usize,
    /// Decisions made before the cutoff.
    pub decisions: usize,
    /// Finished messages (sent, delivered, read, failed, expired, dead)
    /// decided before the cutoff.
    pub messages: usize,
    /// Conversions (purchases) made before the cutoff.
    pub conversions: usize,
    /// Last-inbound-message times older than the cutoff.
    pub inbound: usize,
}

impl Store {
    /// Deletes what is older than `cutoff`, in one transaction.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn purge(&mut self, cutoff: Timestamp) -> Result<Purged> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let c = cutoff.0;
        let purged = Purged {
            // An open visit (no left_at) is kept however old: the customer
            // may still be in the store after a long outage.
            visits: tx.execute(
                "DELETE FROM visits WHERE left_at IS NOT NULL AND left_at < ?1",
                params![c],
            )?,
            decisions: tx.execute("DELETE FROM decisions WHERE at < ?1", params![c])?,
            messages: tx.execute(
                "DELETE FROM outbox WHERE created_at < ?1
                 AND state IN ('sent', 'delivered', 'read', 'failed', 'expired', 'dead')",
                params![c],
            )?,
            conversions: tx.execute("DELETE FROM conversions WHERE at < ?1", params![c])?,
            inbound: tx.execute("DELETE FROM inbound WHERE last_at < ?1", params![c])?,
        };
        tx.commit()?;
        Ok(purged)
    }
}

//! What the providers and the retailer's systems report back through the
//! local API: delivery status of sent messages (matched by the provider's
//! message id), inbound replies (the last one per customer and channel,
//! double opt-in confirmations), conversions from the POS or CRM, and the
//! read-only probes `/healthz` and `/metrics` need.
//!
//! Status updates only move forward (sent → delivered → read; a failure
//! after acceptance marks the row for the worker's fallback sweep), so
//! duplicate or out-of-order webhooks change nothing.

use rusqlite::{OptionalExtension, params};

use super::{Error, Result, Store};
use crate::core::types::Timestamp;

/// A delivery status reported by a provider, in nearcast's terms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeliveryStatus {
    /// Accepted or sent by the provider: nothing new for nearcast.
    Sent,
    /// Delivered to the handset.
    Delivered,
    /// Read by the customer.
    Read,
    /// Not delivered after the provider accepted it; `error` is the
    /// provider's code or title (scrubbed by the caller).
    Failed {
        /// The provider's code or title.
        error: String,
    },
}

/// What a status update did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusOutcome {
    /// The row moved forward.
    Applied,
    /// The row is known but already at or past this status.
    Unchanged,
    /// No row has this provider id.
    Unknown,
}

/// A customer found by phone number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PhoneMatch {
    /// Stable key.
    pub key: i64,
    /// Retailer's id.
    pub id: String,
    /// Whether the customer has opted out.
    pub opted_out: bool,
}

/// A purchase reported by the POS or CRM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conversion {
    /// The retailer's customer id.
    pub customer: String,
    /// When the purchase happened.
    pub at: Timestamp,
    /// Amount in the currency's minor unit.
    pub amount_cents: i64,
    /// ISO 4217 code, upper case.
    pub currency: String,
    /// The POS/CRM reference: the idempotency key.
    pub reference: String,
}

/// What recording a conversion did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConversionOutcome {
    /// A new row.
    Recorded,
    /// The same reference with the same content was already recorded.
    Duplicate,
    /// The same reference was recorded with different content.
    Conflict,
}

impl Store {
    /// Applies a provider's status report to the outbox row with
    /// `provider_id`. Forward only: `read` never goes back to `delivered`,
    /// a failure is taken only while the row is `sent`, and it sets
    /// `fallback_at = now` so the worker falls over to the next channel.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn apply_delivery_status(
        &mut self,
        provider_id: &str,
        status: &DeliveryStatus,
        now: Timestamp,
    ) -> Result<StatusOutcome> {
        let n = match status {
            DeliveryStatus::Sent => 0,
            DeliveryStatus::Delivered => self
                .conn
                .prepare_cached(
                    "UPDATE outbox SET state = 'delivered', delivered_at = coalesce(delivered_at, ?2)
                     WHERE provider_id = ?1 AND state = 'sent'",
                )?
                .execute(params![provider_id, now.0])?,
            // Read implies delivered (WhatsApp may skip the delivered report).
            DeliveryStatus::Read => self
                .conn
                .prepare_cached(
                    "UPDATE outbox SET state = 'read', read_at = coalesce(read_at, ?2),
                            delivered_at = coalesce(delivered_at, ?2)
                     WHERE provider_id = ?1 AND state IN ('sent', 'delivered')",
                )?
                .execute(params![provider_id, now.0])?,
            DeliveryStatus::Failed { error } => self
                .conn
                .prepare_cached(
                    "UPDATE outbox SET state = 'failed', error = ?3, fallback_at = ?2, lease_until = NULL
                     WHERE provider_id = ?1 AND state = 'sent'",
                )?
                .execute(params![provider_id, now.0, error])?,
        };
        if n > 0 {
            return Ok(StatusOutcome::Applied);
        }
        let known: bool = self
            .conn
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM outbox WHERE provider_id = ?1)")?
            .query_row([provider_id], |r| r.get(0))?;
        Ok(if known {
            StatusOutcome::Unchanged
        } else {
            StatusOutcome::Unknown
        })
    }

    /// The customer with this E.164 phone number, if any.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn customer_by_phone(&self, phone: &str) -> Result<Option<PhoneMatch>> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT key, id, opted_out_at IS NOT NULL FROM customers WHERE phone = ?1
                 ORDER BY opted_out_at IS NOT NULL, key LIMIT 1",
            )?
            .query_row([phone], |r| {
                Ok(PhoneMatch {
                    key: r.get(0)?,
                    id: r.get(1)?,
                    opted_out: r.get(2)?,
                })
            })
            .optional()?)
    }

    /// Records that the customer wrote on `channel` at `at` (opens the chat
    /// window); only the latest time is kept.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn record_inbound(&mut self, customer: i64, channel: &str, at: Timestamp) -> Result<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO inbound (customer, channel, last_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (customer, channel) DO UPDATE SET last_at = max(last_at, excluded.last_at)",
            )?
            .execute(params![customer, channel, at.0])?;
        Ok(())
    }

    /// Double opt-in: confirms the customer's pending (unconfirmed, not
    /// withdrawn) consents on `channel`. Returns how many were confirmed.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn confirm_pending(
        &mut self,
        customer: i64,
        channel: &str,
        now: Timestamp,
    ) -> Result<usize> {
        Ok(self
            .conn
            .prepare_cached(
                "UPDATE consents SET confirmed_at = ?3
                 WHERE customer = ?1 AND channel = ?2 AND confirmed_at IS NULL AND withdrawn_at IS NULL",
            )?
            .execute(params![customer, channel, now.0])?)
    }

    /// Records a conversion, once per reference.
    ///
    /// # Errors
    /// [`Error::NoSuchCustomer`] or SQLite errors.
    pub fn record_conversion(
        &mut self,
        c: &Conversion,
        now: Timestamp,
    ) -> Result<ConversionOutcome> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let key: Option<i64> = tx
            .query_row(
                "SELECT key FROM customers WHERE id = ?1",
                [&c.customer],
                |r| r.get(0),
            )
            .optional()?;
        let Some(key) = key else {
            return Err(Error::NoSuchCustomer(c.customer.clone()));
        };
        let n = tx.execute(
            "INSERT INTO conversions (customer, at, amount_cents, currency, reference, received_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (reference) DO NOTHING",
            params![key, c.at.0, c.amount_cents, c.currency, c.reference, now.0],
        )?;
        let outcome = if n > 0 {
            ConversionOutcome::Recorded
        } else {
            let same: bool = tx.query_row(
                "SELECT customer = ?2 AND at = ?3 AND amount_cents = ?4 AND currency = ?5
                 FROM conversions WHERE reference = ?1",
                params![c.reference, key, c.at.0, c.amount_cents, c.currency],
                |r| r.get(0),
            )?;
            if same {
                ConversionOutcome::Duplicate
            } else {
                ConversionOutcome::Conflict
            }
        };
        tx.commit()?;
        Ok(outcome)
    }

    /// Outbox rows by state, every state listed (zero included).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn outbox_depth(&self) -> Result<Vec<(super::OutboxState, i64)>> {
        let mut st = self
            .conn
            .prepare_cached("SELECT state, count(*) FROM outbox GROUP BY state")?;
        let rows: Vec<(String, i64)> = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<std::result::Result<_, _>>()?;
        Ok(super::OutboxState::ALL
            .into_iter()
            .map(|s| {
                let n = rows
                    .iter()
                    .find(|(name, _)| name == s.name())
                    .map_or(0, |r| r.1);
                (s, n)
            })
            .collect())
    }

    /// A trivial query: is the database answering?
    ///
    /// # Errors
    /// SQLite errors.
    pub fn ping(&self) -> Result<()> {
        self.conn
            .prepare_cached("SELECT 1")?
            .query_row([], |r| r.get::<_, i64>(0))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("n.db")).unwrap();
        (dir, s)
    }

    #[test]
    fn unknown_provider_ids_change_nothing() {
        let (_d, mut s) = store();
        assert_eq!(
            s.apply_delivery_status("wamid.x", &DeliveryStatus::Read, Timestamp(1))
                .unwrap(),
            StatusOutcome::Unknown
        );
        assert_eq!(s.outbox_depth().unwrap().len(), 8);
        s.ping().unwrap();
    }
}

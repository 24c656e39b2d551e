//! The outbox worker: claims due rows under a lease, renders the variant
//! for the row's channel, sends through the channel's adapter and records
//! the result. Rows past their time to live are expired by the claim, never
//! sent late.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::{Adapter, Error, Outgoing};
use crate::core::campaign::Engine;
use crate::core::message::{Variant, Vars};
use crate::core::types::Timestamp;
use crate::store::{OutboxItem, SendResult, Store};

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
}

impl std::ops::AddAssign for Report {
    fn add_assign(&mut self, o: Report) {
        self.sent += o.sent;
        self.failed += o.failed;
        self.retried += o.retried;
        self.expired += o.expired;
        self.fell_over += o.fell_over;
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
    /// Totals since start.
    pub totals: Report,
}

impl Worker {
    /// A worker on its own database connection.
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
            batch,
            totals: Report::default(),
        }
    }

    /// Takes a reloaded configuration: campaigns and messages, the store's
    /// name and the channels' adapters.
    pub fn reconfigure(
        &mut self,
        engine: Arc<Engine>,
        store_name: String,
        adapters: HashMap<String, Adapter>,
    ) {
        self.engine = engine;
        self.store_name = store_name;
        self.adapters = adapters;
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

    /// Sends every row due at `now`, in the order they were decided.
    ///
    /// # Errors
    /// Database failures.
    pub async fn run_once(&mut self, now: Timestamp) -> Result<Report, Error> {
        let mut report = Report::default();
        loop {
            let claim = self.store.claim_outbox(now, self.lease, self.batch)?;
            report.expired += claim.expired as u64;
            if claim.items.is_empty() {
                break;
            }
            for item in &claim.items {
                let result = self.send(item, now).await;
                match &result {
                    SendResult::Sent { .. } => report.sent += 1,
                    SendResult::Retry { .. } => report.retried += 1,
                    SendResult::Fallback { error } => {
                        if let Some((channel, variant)) = self.next_channel(item) {
                            tracing::info!(outbox = item.id, from = %item.channel, to = %channel, %error, "falling over to the next channel");
                            self.store
                                .fall_over(item.id, now, &channel, variant.name(), error)?;
                            report.fell_over += 1;
                            continue;
                        }
                        tracing::warn!(outbox = item.id, campaign = %item.campaign, %error, "no further channel; message failed");
                        report.failed += 1;
                    }
                    SendResult::Failed { error } => {
                        tracing::warn!(outbox = item.id, campaign = %item.campaign, channel = %item.channel, %error, "message failed");
                        report.failed += 1;
                    }
                    SendResult::Misconfigured { error } => {
                        tracing::error!(channel = %item.channel, %error, "channel misconfigured; its messages wait");
                        report.retried += 1;
                    }
                }
                self.store.record_send(item.id, now, &result)?;
            }
        }
        self.totals += report;
        Ok(report)
    }

    /// When the next row is due, if any.
    ///
    /// # Errors
    /// Database failures.
    pub fn next_due(&self) -> Result<Option<Timestamp>, Error> {
        Ok(self.store.outbox_next_due()?)
    }

    /// The customer's next configured channel after the item's, with the
    /// richest variant of its message that channel carries.
    fn next_channel(&self, item: &OutboxItem) -> Option<(String, Variant)> {
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
            let spec = self
                .engine
                .channels
                .iter()
                .find(|c| c.name.as_str() == name)?;
            self.adapters
                .contains_key(name)
                .then(|| (name.clone(), message.best_for(spec.variant)))
        })
    }

    async fn send(&self, item: &OutboxItem, now: Timestamp) -> SendResult {
        // Consent is checked again at send time: it may have been withdrawn
        // for this channel since the decision.
        if !item.consented.contains(&item.channel) {
            return SendResult::Fallback {
                error: format!("no {} consent on this channel", item.purpose),
            };
        }
        let Some(message) = self
            .engine
            .messages
            .iter()
            .find(|m| m.id.as_str() == item.message)
        else {
            return SendResult::Failed {
                error: format!("message {:?} is no longer configured", item.message),
            };
        };
        let Some(adapter) = self.adapters.get(&item.channel) else {
            return SendResult::Failed {
                error: format!("channel {:?} is not configured", item.channel),
            };
        };
        let vars = Vars {
            first_name: item.first_name.clone(),
            points: item.points,
            balance: item.balance,
            store: self.store_name.clone(),
        };
        let variant = Variant::parse(&item.variant).unwrap_or(Variant::Plain);
        // Defence in depth behind check-config: no name or balance over a
        // channel not private enough for the campaign; try the next channel.
        if let Err(error) =
            self.engine
                .privacy_guard(&item.campaign, &item.channel, message, variant)
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
}

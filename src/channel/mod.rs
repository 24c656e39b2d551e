//! Delivery: the outbox worker and the channel adapters.
//!
//! The only module that builds what a provider receives. Adapters turn an
//! outbox item and its rendered variant into a send and classify the answer
//! (`SendResult`); the worker claims due rows, renders, sends and records.
//! Never decides whether a customer should get a message: that was settled
//! when the row was queued.

pub mod console;
pub mod worker;

use crate::core::message::Rendered;
use crate::core::types::Timestamp;
use crate::store::{OutboxItem, SendResult};

pub use worker::{Report, Worker};

/// A message on its way out.
#[derive(Clone, Copy, Debug)]
pub struct Outgoing<'a> {
    /// The outbox row.
    pub item: &'a OutboxItem,
    /// The rendered variant.
    pub rendered: &'a Rendered,
    /// When it is being sent.
    pub at: Timestamp,
}

/// A future an adapter returns.
pub type SendFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = SendResult> + Send + 'a>>;

/// The trait boundary of delivery: one implementation per provider (and
/// mocks in tests). Sends one message and classifies the provider's answer.
pub trait Deliver: Send + Sync {
    /// Sends `msg`; never panics, never returns an error: every outcome is a
    /// [`SendResult`].
    fn send<'a>(&'a self, msg: &'a Outgoing<'a>) -> SendFuture<'a>;
}

/// A configured adapter.
pub type Adapter = std::sync::Arc<dyn Deliver>;

/// Delivery errors (send failures are `SendResult`s, not errors).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database failed.
    #[error(transparent)]
    Store(#[from] crate::store::Error),
}

//! Delivery: the outbox worker and the channel adapters.
//!
//! The only module that builds what a provider receives. Adapters turn an
//! outbox item and its rendered variant into a send and classify the answer
//! (`SendResult`); the worker claims due rows, renders, sends and records.
//! Never decides whether a customer should get a message: that was settled
//! when the row was queued.

pub mod console;
pub mod http;
pub mod twilio;
pub mod vonage;
pub mod webhook;
pub mod whatsapp;
pub mod worker;

use crate::core::message::Rendered;
use crate::core::types::Timestamp;
use crate::store::{OutboxItem, SendResult};

pub use worker::{Report, RetryPolicy, Worker};

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

    /// Whether the provider recognises a message sent again with the same
    /// idempotency key (the outbox key) and keeps only one. A send that a
    /// crash interrupted is then simply sent again; otherwise it is
    /// recorded as ambiguous and not repeated, since a customer must not
    /// get the same message twice.
    fn dedupes(&self) -> bool {
        false
    }
}

/// A configured adapter.
pub type Adapter = std::sync::Arc<dyn Deliver>;

/// Delivery errors (send failures are `SendResult`s, not errors).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database failed.
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    /// The HTTP client could not be set up.
    #[error("HTTP client: {0}")]
    Http(String),
}

/// Builds provider adapters that share one HTTP client and read their
/// secrets from the process environment.
pub struct Providers {
    client: http::Client,
    env: std::sync::Arc<dyn http::Env>,
}

impl Providers {
    /// One shared client for every provider channel.
    ///
    /// # Errors
    /// [`Error::Http`] when the TLS backend cannot be set up.
    pub fn new() -> Result<Providers, Error> {
        Ok(Providers {
            client: http::Client::new().map_err(|e| Error::Http(e.to_string()))?,
            env: std::sync::Arc::new(http::ProcessEnv),
        })
    }

    /// Like [`Providers::new`], with secrets looked up in `env` instead of
    /// the process environment (the demo's dummy credentials).
    ///
    /// # Errors
    /// [`Error::Http`] when the TLS backend cannot be set up.
    pub fn with_env(env: std::sync::Arc<dyn http::Env>) -> Result<Providers, Error> {
        Ok(Providers {
            client: http::Client::new().map_err(|e| Error::Http(e.to_string()))?,
            env,
        })
    }

    /// The adapter for a configured provider (`console` is built by the
    /// caller, which owns the terminal).
    #[must_use]
    pub fn adapter(&self, a: &crate::config::Adapter) -> Adapter {
        use crate::config::Adapter as A;
        let (client, env) = (self.client.clone(), self.env.clone());
        match a {
            A::WhatsApp(s) => std::sync::Arc::new(whatsapp::WhatsApp::new(s.clone(), client, env)),
            A::Twilio(s) => std::sync::Arc::new(twilio::Twilio::new(s.clone(), client, env)),
            A::Vonage(s) => std::sync::Arc::new(vonage::Vonage::new(s.clone(), client, env)),
            A::Webhook(s) => std::sync::Arc::new(webhook::Webhook::new(s.clone(), client, env)),
            A::Console => std::sync::Arc::new(Unconfigured),
        }
    }
}

/// Stands in where the caller should have built a console adapter.
struct Unconfigured;

impl Deliver for Unconfigured {
    fn send<'a>(&'a self, _msg: &'a Outgoing<'a>) -> SendFuture<'a> {
        Box::pin(std::future::ready(SendResult::Misconfigured {
            error: "console channel built without a console".into(),
        }))
    }
}

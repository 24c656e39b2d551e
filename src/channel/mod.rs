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

use crate::core::message::{Rendered, Variant};
use std::time::Duration;

use crate::core::types::Timestamp;
use crate::store::OutboxItem;

pub use twilio::TwilioSettings;
pub use vonage::{VonageChannel, VonageSettings};
pub use webhook::WebhookSettings;
pub use whatsapp::WhatsAppSettings;
pub use worker::{OutboxSettings, Report, RetryPolicy, Worker};

/// How a channel is delivered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdapterSettings {
    /// Print to standard output (demos, dry runs).
    Console,
    /// WhatsApp Business Cloud API.
    WhatsApp(WhatsAppSettings),
    /// Twilio Programmable Messaging (SMS, MMS, WhatsApp).
    Twilio(TwilioSettings),
    /// Vonage Messages API (SMS, MMS, WhatsApp, Viber).
    Vonage(VonageSettings),
    /// Signed JSON POST to the retailer's own system.
    Webhook(WebhookSettings),
}

impl AdapterSettings {
    /// The longest a request to the provider may take (`None`: the console
    /// sends nothing over the network).
    #[must_use]
    pub fn timeout(&self) -> Option<Duration> {
        use http::Api;
        match self {
            AdapterSettings::Console => None,
            AdapterSettings::WhatsApp(s) => Some(s.timeout()),
            AdapterSettings::Twilio(s) => Some(s.timeout()),
            AdapterSettings::Vonage(s) => Some(s.timeout()),
            AdapterSettings::Webhook(s) => Some(s.timeout()),
        }
    }
}

/// A delivery channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelSettings {
    /// Name customers' preferences refer to (`whatsapp`, `sms`, `mms`).
    pub name: String,
    /// Richest variant it carries.
    pub variant: Variant,
    /// Whether personal data (name, balance) may go over it.
    pub private: bool,
    /// Adapter and its provider settings.
    pub adapter: AdapterSettings,
    /// How fast and how many at once messages go out on it.
    pub limits: ChannelLimits,
}

/// A channel's pace: a token bucket (`rate` messages a second, at most
/// `burst` at once after a quiet spell) and at most `concurrency` requests
/// in flight. Providers throttle per sender; sending faster than they
/// accept only earns 429s.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ChannelLimits {
    /// Messages a second.
    pub rate: f64,
    /// Tokens the bucket holds.
    pub burst: u32,
    /// Requests in flight.
    pub concurrency: u32,
}

impl Eq for ChannelLimits {}

impl ChannelLimits {
    /// Defaults: a console prints as fast as it is asked; a provider gets
    /// 10 messages a second, one at a time after a lull, 4 in flight.
    #[must_use]
    pub fn default_for(adapter: &AdapterSettings) -> ChannelLimits {
        match adapter {
            AdapterSettings::Console => ChannelLimits {
                rate: 1000.0,
                burst: 1000,
                concurrency: 1,
            },
            _ => ChannelLimits {
                rate: 10.0,
                burst: 1,
                concurrency: 4,
            },
        }
    }
}

/// The outcome of one send attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SendResult {
    /// Accepted.
    Sent {
        /// The provider's message id.
        provider_id: Option<String>,
    },
    /// Try again later.
    Retry {
        /// Not before this long.
        after: Duration,
        /// What happened.
        error: String,
    },
    /// Not reachable on this channel (not a WhatsApp user, outside the
    /// chat window, unsubscribed from this channel only): try the
    /// customer's next channel.
    Fallback {
        /// What happened.
        error: String,
    },
    /// Do not try again (the recipient unsubscribed, the number is invalid).
    Failed {
        /// What happened.
        error: String,
    },
    /// The channel itself is misconfigured (bad credentials, unknown sender):
    /// stop sending on it and alert; the message waits.
    Misconfigured {
        /// What happened.
        error: String,
    },
}

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

impl Outgoing<'_> {
    /// The customer's phone number, or (for adapter `what`) the fallback to
    /// the next channel when there is none.
    ///
    /// # Errors
    /// [`SendResult::Fallback`] without a phone number.
    pub fn phone(&self, what: &str) -> Result<&str, SendResult> {
        self.item
            .phone
            .as_deref()
            .ok_or_else(|| SendResult::Fallback {
                error: format!("{what}: the customer has no phone number"),
            })
    }
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
    env: std::sync::Arc<dyn crate::credentials::Env>,
}

impl Providers {
    /// One shared client for every provider channel.
    ///
    /// # Errors
    /// [`Error::Http`] when the TLS backend cannot be set up.
    pub fn new() -> Result<Providers, Error> {
        Ok(Providers {
            client: http::Client::new().map_err(|e| Error::Http(e.to_string()))?,
            env: std::sync::Arc::new(crate::credentials::ProcessEnv),
        })
    }

    /// Like [`Providers::new`], with secrets looked up in `env` instead of
    /// the process environment (the demo's dummy credentials).
    ///
    /// # Errors
    /// [`Error::Http`] when the TLS backend cannot be set up.
    pub fn with_env(env: std::sync::Arc<dyn crate::credentials::Env>) -> Result<Providers, Error> {
        Ok(Providers {
            client: http::Client::new().map_err(|e| Error::Http(e.to_string()))?,
            env,
        })
    }

    /// The adapter for a configured provider (`console` is built by the
    /// caller, which owns the terminal).
    #[must_use]
    pub fn adapter(&self, a: &AdapterSettings) -> Adapter {
        use AdapterSettings as A;
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

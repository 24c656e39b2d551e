//! nearcast: recognises opted-in customers in a store by BLE and Wi-Fi and
//! sends them consented, rate-limited messages.
//!
//! Layout (see `ARCHITECTURE.md`):
//! - [`core`]: sans-IO decisions: frame decoding, identity, presence, campaigns.
//!   Time is an argument; no IO.
//! - [`config`]: the three TOML files, validated into core types with
//!   file:line:column errors.
//! - [`store`]: SQLite, the only SQL: customers, consent, visits, cooldowns,
//!   points, decisions, outbox.
//! - [`source`]: where observations come from: recordings and the simulator.
//! - [`channel`]: delivery: the outbox worker and the adapters.
//! - [`api`]: the local HTTP API: health, metrics, enrolment, conversions
//!   and the providers' signed webhooks.
//! - [`app`]: wiring: the daemon, the demo, replay and record.

pub mod api;
pub mod app;
pub mod channel;
pub mod config;
pub mod core;
pub mod source;
pub mod store;

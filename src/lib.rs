//! nearcast: recognises opted-in customers in a store by BLE and Wi-Fi and
//! sends them consented, rate-limited messages.
//!
//! Layout (see `ARCHITECTURE.md`):
//! - [`core`]: sans-IO decisions: frame decoding, identity, presence, campaigns.
//! - [`config`]: the three TOML files, validated into core types.
//! - [`store`]: SQLite: customers, consent, visits, cooldowns, points, outbox.

pub mod config;
pub mod core;
pub mod store;

//! nearcast: recognises opted-in customers in a store by BLE and Wi-Fi and
//! sends them consented, rate-limited messages.
//!
//! Layout (see `ARCHITECTURE.md`), bottom layer first; a module uses only
//! those above it in this list:
//! - [`core`]: sans-IO decisions: frame decoding, identity, presence, campaigns.
//!   Time is an argument; no IO.
//! - [`clock`]: the wall and monotonic clocks and NTP state, behind `Clock`;
//!   the one place time is read.
//! - [`credentials`]: secrets by reference (`SecretRef`), loaded when used,
//!   never printed (`Secret`).
//! - [`store`]: SQLite, the only SQL: customers, consent, visits, cooldowns,
//!   points, decisions, outbox.
//! - [`source`]: where observations come from: recordings, the simulator,
//!   BLE through BlueZ, Wi-Fi presence (hostapd, neighbours, leases) and
//!   remote scanners over MQTT (ESPresense nodes, nearcast satellites).
//! - [`metrics`]: counters the daemon's tasks share, rendered for `/metrics`.
//! - [`channel`]: delivery: the outbox worker, the adapters and their
//!   settings.
//! - [`api`]: the local HTTP API: health, metrics, enrolment, conversions
//!   and the providers' signed webhooks.
//! - [`config`]: the three TOML files, validated into each component's
//!   settings and the core's types, with file:line:column errors.
//! - [`app`]: wiring: the daemon, the demo, replay, record, scan, broadcast
//!   and the command bodies of the binary.

pub mod api;
pub mod app;
pub mod channel;
pub mod clock;
pub mod config;
pub mod core;
pub mod credentials;
pub mod metrics;
pub mod source;
pub mod store;

//! nearcast: recognises opted-in customers in a store by BLE and Wi-Fi and
//! sends them consented, rate-limited messages.
//!
//! Layout (see `ARCHITECTURE.md`):
//! - [`core`]: sans-IO decisions: frame decoding, identity, presence, campaigns.
//! - [`source`]: where observations come from (recordings, the simulator);
//!   produces them in time order and decides nothing.

pub mod core;
pub mod source;

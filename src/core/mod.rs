//! The decision core: frames, identity, presence, zones and campaigns.
//!
//! No IO and no clock: every function takes the time as an argument and
//! returns data. Nothing here imports tokio, rusqlite, reqwest, btleplug or
//! axum (a test in `tests/architecture.rs` checks that).

pub mod advert;
pub mod campaign;
pub mod clock_guard;
pub mod enrolment;
pub mod guard;
pub mod identity;
pub mod message;
pub mod presence;
pub mod rooms;
pub mod rotating;
pub mod types;
pub mod zones;

//! Where observations come from: recordings ([`replay`]) and a simulated
//! store ([`sim`]); later the live BLE scanner and Wi-Fi presence backends.
//!
//! Sources only produce [`Observation`](crate::core::types::Observation)s in
//! time order. They never decide anything: no identification, no presence, no
//! campaign logic, no database. A source never logs a device address (most
//! devices it hears belong to people who did not opt in); problems with input
//! are counted by kind and line number, never echoed with their content.

pub mod replay;
pub mod sim;

use crate::core::types::ScannerIdx;

/// What can stop a source.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing the underlying file or stream failed.
    #[error("recording I/O failed: {0}")]
    Io(#[from] std::io::Error),
    /// An observation names a scanner that the layout does not have, so it
    /// cannot be written under a scanner name.
    #[error("scanner #{} is not in the layout", .0.0)]
    UnknownScanner(ScannerIdx),
    /// The layout has no scanner: the simulator needs the first one as the
    /// store's entrance, and nothing could hear the simulated phones.
    #[error("the layout has no scanner to simulate")]
    NoScanners,
    /// A simulator setting is out of range.
    #[error("invalid simulator setting: {0}")]
    SimConfig(&'static str),
}

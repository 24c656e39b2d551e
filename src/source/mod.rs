//! Where observations come from: recordings ([`replay`]), a simulated
//! store ([`sim`]), and live sensing: BLE through BlueZ ([`ble`]), Wi-Fi
//! presence ([`wifi`]) and remote scanners over MQTT ([`mqtt`]: ESPresense
//! nodes, nearcast satellites), with their [`health`] for `stats`.
//!
//! Sources only produce [`Observation`](crate::core::types::Observation)s in
//! time order. They never decide anything: no identification, no presence, no
//! campaign logic, no database. A source never logs a device address (most
//! devices it hears belong to people who did not opt in); problems with input
//! are counted by kind and line number, never echoed with their content.

pub mod ble;
pub mod health;
pub mod mqtt;
pub mod replay;
pub mod sim;
pub mod wifi;

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::core::types::{Observation, ScannerIdx};
use ble::BleSettings;
use health::Health;
use wifi::WifiSettings;

/// A configured source of observations (`[[source]]` in `nearcast.toml`).
#[derive(Clone, Debug, PartialEq)]
pub enum SourceSettings {
    /// The built-in store simulator.
    Sim(SimSettings),
    /// A recording, replayed in real time.
    Replay {
        /// The JSON Lines file.
        file: PathBuf,
    },
    /// A BlueZ adapter (`kind = "ble"`).
    Ble(BleSettings),
    /// Wi-Fi presence (`kind = "wifi"`).
    Wifi(WifiSettings),
    /// Remote scanners through the store's MQTT broker (`[mqtt]`, and
    /// scanners with `source = "espresense"` or `"nearcast"`).
    Mqtt(mqtt::MqttSettings),
}

impl SourceSettings {
    /// True for sources that listen to the store (BLE, Wi-Fi, remote
    /// scanners), as opposed to the simulator and recordings.
    #[must_use]
    pub fn is_live(&self) -> bool {
        matches!(
            self,
            SourceSettings::Ble(_) | SourceSettings::Wifi(_) | SourceSettings::Mqtt(_)
        )
    }
}

/// The simulator as a source (`kind = "sim"`): how busy the store is and
/// whose phones it simulates.
#[derive(Clone, Debug, PartialEq)]
pub struct SimSettings {
    /// Shoppers per hour.
    pub shoppers_per_hour: u32,
    /// Random seed.
    pub seed: u64,
    /// Share of shoppers who are enrolled customers.
    pub opted_in_share: f64,
    /// Enrolled customers' identities in clear (the demo's customers CSV).
    pub customers: PathBuf,
}

/// A live source's way to the pipeline: a bounded queue, and the source's
/// [`Health`] counting what was delivered or dropped.
#[derive(Clone)]
pub struct Feed {
    tx: mpsc::Sender<Observation>,
    /// The source's counters.
    pub health: Arc<Health>,
}

impl Feed {
    /// A feed into `tx` counting in `health`.
    #[must_use]
    pub fn new(tx: mpsc::Sender<Observation>, health: Arc<Health>) -> Feed {
        Feed { tx, health }
    }

    /// Queues one observation without waiting: the radio does not wait
    /// either, so on a full queue it is dropped and counted. False when the
    /// pipeline is gone and the source should stop.
    pub fn send(&self, obs: Observation) -> bool {
        match self.tx.try_send(obs) {
            Ok(()) => {
                Health::bump(&self.health.delivered);
                true
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                Health::bump(&self.health.queue_full);
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// True when the pipeline is gone.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

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

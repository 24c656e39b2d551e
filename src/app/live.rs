//! The daemon's status file, which is how `nearcast stats` shows the live
//! sources' health (remote scanners' too), the guards' counters and whether the wall clock is
//! trusted while the daemon runs (counts only, never a device). The sources themselves start in `sources`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use super::Counters;
use crate::clock::ClockStatus;
use crate::core::guard::GuardStats;
use crate::core::presence::PresenceStats;
use crate::core::types::Timestamp;
use crate::source::health::{Health, HealthSnapshot};
use crate::source::mqtt::{NodeSnapshot, Nodes};

/// The daemon's status file: beside the database, `<name>.status.json`.
#[must_use]
pub fn status_path(db: &Path) -> PathBuf {
    db.with_extension("status.json")
}

/// What the status file holds.
#[derive(Serialize, serde::Deserialize, Debug, PartialEq)]
pub struct Status {
    /// When it was written (Unix seconds).
    pub written_at: f64,
    /// BLE sightings the pipeline handled.
    pub sightings: u64,
    /// Wi-Fi reports the pipeline handled.
    pub wifi: u64,
    /// The flood and junk guards.
    pub guard: GuardStats,
    /// Presence now: tracked customers, unknown zones, silent scanners.
    #[serde(default)]
    pub presence: PresenceStats,
    /// The scanners presence takes as silent, by name.
    #[serde(default)]
    pub silent_scanners: Vec<String>,
    /// Each live source.
    pub sources: Vec<HealthSnapshot>,
    /// Whether the daemon trusts the wall clock, and why not.
    #[serde(default)]
    pub clock: Option<ClockStatus>,
    /// Each remote scanner (ESPresense node, satellite): state, what it
    /// delivered and dropped, a satellite's clock offset.
    #[serde(default)]
    pub remote: Vec<NodeSnapshot>,
    /// Messages from nodes `zones.toml` does not have.
    #[serde(default)]
    pub unknown_nodes: u64,
    /// Decisions held while the database refused writes.
    #[serde(default)]
    pub held: crate::metrics::HeldStats,
}

impl Status {
    /// The status now.
    #[must_use]
    pub fn new(
        at: Timestamp,
        counters: &Counters,
        healths: &[Arc<Health>],
        clock: Option<ClockStatus>,
    ) -> Status {
        Status {
            written_at: at.as_secs_f64(),
            sightings: counters.sightings,
            wifi: counters.wifi,
            guard: counters.guard,
            presence: counters.presence,
            silent_scanners: Vec::new(),
            sources: healths.iter().map(|h| h.snapshot()).collect(),
            clock,
            remote: Vec::new(),
            unknown_nodes: 0,
            held: counters.held,
        }
    }

    /// Adds the remote scanners' health.
    pub fn set_remote(&mut self, remote: &[Arc<Nodes>]) {
        self.remote = remote.iter().flat_map(|n| n.snapshot()).collect();
        self.unknown_nodes = remote
            .iter()
            .map(|n| n.unknown_node.load(std::sync::atomic::Ordering::Relaxed))
            .sum();
    }

    /// Writes it to `path` atomically (temporary file, then rename).
    ///
    /// # Errors
    /// IO failures.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, path)
    }

    /// Reads a status file, if there is a readable one.
    #[must_use]
    pub fn read(path: &Path) -> Option<Status> {
        serde_json::from_slice(&std::fs::read(path).ok()?).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_file_round_trips_without_device_details() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = status_path(&dir.path().join("nearcast.db"));
        assert!(path.ends_with("nearcast.status.json"));
        let h = Arc::new(Health::new("ble:hci0"));
        h.down("adapter removed");
        h.running();
        let mut c = Counters {
            sightings: 7,
            ..Counters::default()
        };
        c.guard.admitted = 5;
        c.guard.address_rate = 2;
        let s = Status::new(Timestamp(1_000), &c, &[h], None);
        s.write(&path).unwrap_or_else(|e| panic!("{e}"));
        let back = Status::read(&path);
        assert_eq!(back.as_ref(), Some(&s));
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            text.contains("\"recoveries\": 1") && text.contains("adapter removed"),
            "{text}"
        );
    }
}

//! The store's floor plan: scanners with positions and calibration, zones
//! (`store`, `near`, `area` in groups), the radio model's settings, and the
//! path-loss arithmetic that turns signal strength into distance.
//!
//! Pure data and arithmetic, built by `config` from `zones.toml`.

use std::sync::Arc;
use std::time::Duration;

use geo::Polygon;

use super::advert::Frame;
use super::types::{ScannerIdx, ZoneId};

/// A BLE scanner (an adapter on this box, later a remote one) on the floor plan.
#[derive(Clone, Debug, PartialEq)]
pub struct Scanner {
    /// Name, as used in recordings (`"scanner": "door"`).
    pub id: Arc<str>,
    /// Position on the floor plan, metres.
    pub position: (f64, f64),
    /// Added to every RSSI this scanner reports (antenna gain, enclosure loss).
    pub rssi_offset: f64,
    /// Path-loss exponent around this scanner (2 free space, 2.5–4 indoors).
    pub path_loss_exponent: f64,
}

/// Calibrated RSSI at 1 m for a family of beacons (the retailer app's
/// iBeacon UUID, an Eddystone namespace), overriding what frames claim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Calibration {
    /// iBeacons with this proximity UUID.
    IBeacon {
        /// Proximity UUID.
        uuid: [u8; 16],
        /// RSSI at 1 m, dBm.
        measured_power: i8,
    },
    /// Eddystone beacons with this namespace.
    Eddystone {
        /// Namespace.
        namespace: [u8; 10],
        /// RSSI at 1 m, dBm.
        measured_power: i8,
    },
}

/// What decides whether a customer is inside a zone.
#[derive(Clone, Debug, PartialEq)]
pub enum ZoneKind {
    /// Anywhere in the store: heard by any scanner (within `range_m`, if
    /// set) or associated to the store's Wi-Fi.
    Store {
        /// Maximum estimated distance from the nearest scanner to count as in.
        range_m: Option<f64>,
    },
    /// Within a distance of one scanner, with hysteresis.
    Near {
        /// The scanner.
        scanner: ScannerIdx,
        /// Enter when the estimate is at most this, metres.
        enter_m: f64,
        /// Leave when the estimate is more than this, metres (≥ `enter_m`).
        exit_m: f64,
    },
    /// A floor-plan polygon. The areas of one group are exclusive: a
    /// customer is in at most one of them (see `core::rooms`).
    Area {
        /// The polygon, metres.
        polygon: Polygon<f64>,
        /// Toward the open floor (outside every area of the group), the
        /// customer still counts as inside up to this far out, metres.
        exit_margin_m: f64,
        /// Index into [`Layout::groups`].
        group: u16,
    },
}

/// A zone and its timing.
#[derive(Clone, Debug, PartialEq)]
pub struct Zone {
    /// Id from `zones.toml`.
    pub id: ZoneId,
    /// What counts as inside.
    pub kind: ZoneKind,
    /// Inside this long before `entered` (`arrived` for the store).
    pub min_dwell: Duration,
    /// Outside (or unheard) this long before `exited` (`left`).
    pub exit_after: Duration,
    /// Present this long → one `dwelled` event per stay.
    pub dwell_after: Option<Duration>,
}

/// The radio model's defaults and the presence filter's beat.
#[derive(Clone, Debug, PartialEq)]
pub struct Radio {
    /// RSSI at 1 m when neither config nor frame says, dBm.
    pub measured_power: i8,
    /// Presence is decided once per tick, from each scanner's mean RSSI
    /// over the last `window`.
    pub tick: Duration,
    /// The averaging window per (customer, scanner): a whole number of ticks.
    pub window: Duration,
    /// A scanner's samples older than this no longer count; a device not
    /// heard for this long is out of range of that scanner.
    pub signal_timeout: Duration,
    /// Signal lost per area outline between a scanner and a device, dB
    /// (outlines usually follow walls, shelving or counters).
    pub wall_loss_db: f64,
    /// A scanner that heard nothing at all for this long is taken as
    /// silent (adapter lost, node offline): rooms that depend on it are
    /// unknown rather than guessed.
    pub scanner_silence: Duration,
}

impl Default for Radio {
    fn default() -> Radio {
        Radio {
            measured_power: -59,
            tick: Duration::from_secs(1),
            window: Duration::from_secs(2),
            signal_timeout: Duration::from_secs(10),
            wall_loss_db: 3.0,
            scanner_silence: Duration::from_secs(60),
        }
    }
}

impl Radio {
    /// The averaging window in ticks (at least one).
    #[must_use]
    pub fn window_ticks(&self) -> usize {
        let tick = self.tick.as_millis().max(1);
        usize::try_from(self.window.as_millis().div_ceil(tick))
            .unwrap_or(1)
            .max(1)
    }
}

/// The whole floor plan. `zones[0]` is always the store zone.
#[derive(Clone, Debug, PartialEq)]
pub struct Layout {
    /// Store name, for messages (`{store}`).
    pub store_name: String,
    /// Scanners in config order; `ScannerIdx` indexes this.
    pub scanners: Vec<Scanner>,
    /// Zones; index 0 is the store.
    pub zones: Vec<Zone>,
    /// Names of the groups of exclusive areas (`group = "…"`; areas
    /// without one share the group `areas`).
    pub groups: Vec<Arc<str>>,
    /// Radio defaults.
    pub radio: Radio,
    /// Per-beacon-family calibration.
    pub calibrations: Vec<Calibration>,
}

/// Index of a zone in [`Layout::zones`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ZoneIdx(pub u16);

impl ZoneIdx {
    /// The store zone.
    pub const STORE: ZoneIdx = ZoneIdx(0);
}

impl Layout {
    /// A layout with one scanner and the store zone only (tests, `scan`).
    #[must_use]
    pub fn single(store_name: &str, scanner: &str) -> Layout {
        Layout {
            store_name: store_name.to_owned(),
            scanners: vec![Scanner {
                id: scanner.into(),
                position: (0.0, 0.0),
                rssi_offset: 0.0,
                path_loss_exponent: 2.0,
            }],
            zones: vec![Zone {
                id: "store".into(),
                kind: ZoneKind::Store { range_m: None },
                min_dwell: Duration::ZERO,
                exit_after: Duration::from_secs(60),
                dwell_after: None,
            }],
            groups: Vec::new(),
            radio: Radio::default(),
            calibrations: Vec::new(),
        }
    }

    /// The scanner called `name`.
    #[must_use]
    pub fn scanner_index(&self, name: &str) -> Option<ScannerIdx> {
        self.scanners
            .iter()
            .position(|s| &*s.id == name)
            .and_then(|i| u16::try_from(i).ok())
            .map(ScannerIdx)
    }

    /// The zone called `id`.
    #[must_use]
    pub fn zone_index(&self, id: &str) -> Option<ZoneIdx> {
        self.zones
            .iter()
            .position(|z| z.id.as_str() == id)
            .and_then(|i| u16::try_from(i).ok())
            .map(ZoneIdx)
    }

    /// The zone at `idx`.
    #[must_use]
    pub fn zone(&self, idx: ZoneIdx) -> &Zone {
        &self.zones[usize::from(idx.0)]
    }

    /// RSSI at 1 m for a device: configured calibration for its beacon
    /// family, else what its frame claims, else the default.
    #[must_use]
    pub fn measured_power(&self, frame: Option<&Frame>) -> i8 {
        let Some(frame) = frame else {
            return self.radio.measured_power;
        };
        for c in &self.calibrations {
            match (c, frame) {
                (
                    Calibration::IBeacon {
                        uuid,
                        measured_power,
                    },
                    Frame::IBeacon { uuid: u, .. },
                ) if uuid == u => {
                    return *measured_power;
                }
                (
                    Calibration::Eddystone {
                        namespace,
                        measured_power,
                    },
                    Frame::EddystoneUid { namespace: n, .. },
                ) if namespace == n => return *measured_power,
                _ => {}
            }
        }
        frame
            .measured_power_1m()
            .unwrap_or(self.radio.measured_power)
    }

    /// Estimated distance in metres from a smoothed RSSI heard by `scanner`,
    /// with the log-distance path-loss model
    /// `d = 10 ^ ((P1m − (rssi + offset)) / (10 n))`.
    #[must_use]
    pub fn distance_m(&self, scanner: ScannerIdx, rssi: f64, measured_power: i8) -> f64 {
        10f64.powf(self.log_distance(scanner, rssi, measured_power))
    }

    /// `log10` of [`Layout::distance_m`]: what the tracker compares, since a
    /// logarithm of a threshold is computed once and a power per sample is
    /// not needed.
    #[must_use]
    pub fn log_distance(&self, scanner: ScannerIdx, rssi: f64, measured_power: i8) -> f64 {
        let (offset, n) = self
            .scanners
            .get(usize::from(scanner.0))
            .map_or((0.0, 2.0), |s| (s.rssi_offset, s.path_loss_exponent));
        (f64::from(measured_power) - (rssi + offset)) / (10.0 * n.max(0.5))
    }
}

/// The log-distance path-loss model, in metres.
#[must_use]
pub fn distance_m(rssi: f64, measured_power_1m: f64, exponent: f64) -> f64 {
    10f64.powf((measured_power_1m - rssi) / (10.0 * exponent.max(0.5)))
}

/// How a position or distance relates to a zone's boundaries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Membership {
    /// Inside the enter boundary.
    Inside,
    /// Between the enter and exit boundaries: stays in if in, stays out if out.
    Band,
    /// Beyond the exit boundary, or not heard at all.
    Outside,
}

/// Where a distance lies relative to `near` thresholds (or its logarithm
/// relative to theirs).
#[must_use]
pub fn near_membership(distance_m: f64, enter_m: f64, exit_m: f64) -> Membership {
    if distance_m <= enter_m {
        Membership::Inside
    } else if distance_m <= exit_m {
        Membership::Band
    } else {
        Membership::Outside
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_loss_model() {
        assert!((distance_m(-59.0, -59.0, 2.0) - 1.0).abs() < 1e-9);
        assert!((distance_m(-79.0, -59.0, 2.0) - 10.0).abs() < 1e-9);
        assert!((distance_m(-84.0, -59.0, 2.5) - 10.0).abs() < 1e-9);
    }

    #[test]
    fn scanner_offset_and_exponent_apply() {
        let mut l = Layout::single("S", "door");
        l.scanners[0].rssi_offset = 6.0;
        l.scanners[0].path_loss_exponent = 3.0;
        // -65 + 6 = -59 → 1 m at any exponent.
        assert!((l.distance_m(ScannerIdx(0), -65.0, -59) - 1.0).abs() < 1e-9);
        assert!((l.distance_m(ScannerIdx(0), -95.0, -59) - 10.0).abs() < 1e-9);
    }

    #[test]
    fn calibration_beats_frame_beats_default() {
        let mut l = Layout::single("S", "door");
        let uuid = [7u8; 16];
        let frame = Frame::IBeacon {
            uuid,
            major: 1,
            minor: 2,
            measured_power: -70,
        };
        assert_eq!(l.measured_power(None), -59);
        assert_eq!(l.measured_power(Some(&frame)), -70);
        l.calibrations.push(Calibration::IBeacon {
            uuid,
            measured_power: -62,
        });
        assert_eq!(l.measured_power(Some(&frame)), -62);
        let eddy = Frame::EddystoneUid {
            ranging: -20,
            namespace: [1; 10],
            instance: [0; 6],
        };
        assert_eq!(l.measured_power(Some(&eddy)), -61);
    }

    #[test]
    fn membership_bands() {
        assert_eq!(near_membership(1.9, 2.0, 3.0), Membership::Inside);
        assert_eq!(near_membership(2.5, 2.0, 3.0), Membership::Band);
        assert_eq!(near_membership(3.1, 2.0, 3.0), Membership::Outside);
    }
}

//! The radio model: the inverse of the layout's path-loss model, with
//! Gaussian noise, multipath dips and spikes, the scanner's sensitivity and
//! missed advertisements.

use super::*;

/// Multipath: a deep dip or a spike, each this often.
pub(super) const DIP_SHARE: f64 = 0.015;
pub(super) const SPIKE_SHARE: f64 = 0.015;
pub(super) const DIP_DB: f64 = -15.0;
pub(super) const SPIKE_DB: f64 = 8.0;

/// The RSSI `scanner` reports for an advertisement from `at`, if it hears it.
pub(super) fn hear(
    rng: &mut Rng,
    config: &SimConfig,
    scanner: &Scanner,
    at: (f64, f64),
    p1m: f64,
) -> Option<i16> {
    // Closer than half a metre the antenna pattern, not distance, dominates.
    let (sx, sy) = scanner.position;
    let d = (at.0 - sx).hypot(at.1 - sy).max(0.5);
    // The inverse of `Layout::distance_m`, with the same exponent floor.
    let mean = p1m - 10.0 * scanner.path_loss_exponent.max(0.5) * d.log10() - scanner.rssi_offset;
    if mean + SPIKE_DB + 6.0 * config.rssi_sigma_db < config.sensitivity_dbm {
        return None;
    }
    let mut rssi = mean + config.rssi_sigma_db * gauss(rng);
    let u = rng.f64();
    if u < DIP_SHARE {
        rssi += DIP_DB;
    } else if u < DIP_SHARE + SPIKE_SHARE {
        rssi += SPIKE_DB;
    }
    if rssi < config.sensitivity_dbm || rng.f64() < config.miss_rate {
        return None;
    }
    #[allow(clippy::cast_possible_truncation)]
    Some(rssi.round().clamp(-127.0, 20.0) as i16)
}

/// A standard normal variate (Box–Muller).
pub(super) fn gauss(rng: &mut Rng) -> f64 {
    let u1 = 1.0 - rng.f64(); // (0, 1]: ln stays finite
    let u2 = rng.f64();
    (-2.0 * u1.ln()).sqrt() * (TAU * u2).cos()
}

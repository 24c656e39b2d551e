//! The radio model: the inverse of the layout's path-loss model, with the
//! spread, drop-outs and outages of a real room.
//!
//! [`Radio::MEASURED`] holds what `tests/fixtures/flat-ble/fit_radio.py`
//! measures on the flat-ble recording (a tag walked through a furnished flat
//! by a robot, six anchors, LiDAR ground truth): what is left after each
//! anchor's path-loss fit splits into a *slow* part — shadowing by walls,
//! furniture and the carrier's body, which drifts as the device moves and
//! forgets itself in about six seconds — and a *fast* part per advertisement
//! (multipath), with more deep dips than a Gaussian has and no more spikes.
//! A scanner hears about six in ten advertisements regardless of level
//! within a room's range, and now and then hears nothing at all from a
//! device for a few seconds.
//!
//! Each (device, scanner) pair is a [`Link`]: its shadowing is an
//! Ornstein–Uhlenbeck process (an AR(1) step for the time since the link
//! was last heard), its outages a two-state chain.

use super::*;

/// How the store's scanners hear the devices in it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Radio {
    /// Spread of each advertisement around the link's current level
    /// (multipath), dB.
    pub fast_sigma_db: f64,
    /// Spread of the link's slow drift (shadowing), dB.
    pub shadow_sigma_db: f64,
    /// Correlation time of the slow drift: after this long it keeps 1/e of
    /// what it was.
    pub shadow_time: Duration,
    /// Share of advertisements caught in a deep multipath dip.
    pub dip_share: f64,
    /// How deep such a dip is, dB (negative).
    pub dip_db: f64,
    /// Weakest RSSI a scanner reports, dBm.
    pub sensitivity_dbm: f64,
    /// Share of advertisements a scanner misses although it is in range
    /// (scan duty cycle, channel hopping, collisions).
    pub miss_rate: f64,
    /// How often, per second, a link falls silent altogether (the carrier
    /// turns, a crowd passes, the scanner's controller is busy).
    pub outage_per_s: f64,
    /// How long such an outage lasts on average (exponentially distributed).
    pub outage_mean: Duration,
}

impl Radio {
    /// Fitted on the flat-ble recording (62,892 packets of five walks) by
    /// `tests/fixtures/flat-ble/fit_radio.py`: residual 7.8 dB in all,
    /// slow 5.3 dB with a 6 s correlation time (quartiles 4–9 s), fast
    /// 5.2 dB (from the interquartile range), 1.9 % of packets below
    /// −2.5 σ where a Gaussian has 0.6 % (mean −16.5 dB), spikes no more
    /// than Gaussian, 6.1 of 10 possible receptions a second at every
    /// level, and silent seconds starting at 0.0041/s lasting 3.9 s.
    pub const MEASURED: Radio = Radio {
        fast_sigma_db: 5.2,
        shadow_sigma_db: 5.3,
        shadow_time: Duration::from_secs(6),
        dip_share: 0.013,
        dip_db: -16.5,
        sensitivity_dbm: -100.0,
        miss_rate: 0.39,
        outage_per_s: 0.0041,
        outage_mean: Duration::from_millis(3900),
    };

    /// A quiet radio: the path-loss level with a little per-advertisement
    /// noise, no drift, dips or outages. For tests about what happens
    /// downstream of the radio.
    pub const QUIET: Radio = Radio {
        fast_sigma_db: 2.0,
        shadow_sigma_db: 0.0,
        shadow_time: Duration::from_secs(6),
        dip_share: 0.0,
        dip_db: 0.0,
        sensitivity_dbm: -100.0,
        miss_rate: 0.1,
        outage_per_s: 0.0,
        outage_mean: Duration::from_secs(1),
    };

    /// The combined spread of fast and slow parts, dB.
    fn sigma_db(&self) -> f64 {
        self.fast_sigma_db.hypot(self.shadow_sigma_db)
    }
}

/// The state of one (device, scanner) pair.
#[derive(Clone, Copy, Debug)]
pub(super) struct Link {
    /// The slow drift, dB.
    shadow: f64,
    /// When the drift was last stepped, ms.
    at: i64,
    /// Silent until then, ms.
    silent_until: i64,
}

impl Link {
    /// A link as it would be after a long time: drift from its stationary
    /// distribution, no outage.
    pub(super) fn new(rng: &mut Rng, radio: &Radio, at: i64) -> Link {
        Link {
            shadow: radio.shadow_sigma_db * gauss(rng),
            at,
            silent_until: i64::MIN,
        }
    }
}

/// The RSSI `scanner` reports for an advertisement from `at` (position)
/// at time `now`, if it hears it.
pub(super) fn hear(
    rng: &mut Rng,
    radio: &Radio,
    link: &mut Link,
    scanner: &Scanner,
    (at, now): ((f64, f64), i64),
    p1m: f64,
) -> Option<i16> {
    // Closer than half a metre the antenna pattern, not distance, dominates.
    let (sx, sy) = scanner.position;
    let d = (at.0 - sx).hypot(at.1 - sy).max(0.5);
    // The inverse of `Layout::distance_m`, with the same exponent floor.
    let mean = p1m - 10.0 * scanner.path_loss_exponent.max(0.5) * d.log10() - scanner.rssi_offset;
    if mean + 6.0 * radio.sigma_db() < radio.sensitivity_dbm {
        return None;
    }
    #[allow(clippy::cast_precision_loss)]
    let dt_s = (now - link.at).max(0) as f64 / 1000.0;
    link.at = now;
    let tau_s = radio.shadow_time.as_secs_f64().max(1e-3);
    let keep = (-dt_s / tau_s).exp();
    link.shadow =
        keep * link.shadow + radio.shadow_sigma_db * (1.0 - keep * keep).sqrt() * gauss(rng);
    if now < link.silent_until {
        return None;
    }
    if radio.outage_per_s > 0.0 && rng.f64() < 1.0 - (-radio.outage_per_s * dt_s).exp() {
        #[allow(clippy::cast_possible_truncation)]
        let length = (-radio.outage_mean.as_secs_f64() * 1000.0 * (1.0 - rng.f64()).ln()) as i64;
        link.silent_until = now.saturating_add(length);
        return None;
    }
    let mut rssi = mean + link.shadow + radio.fast_sigma_db * gauss(rng);
    if rng.f64() < radio.dip_share {
        rssi += radio.dip_db;
    }
    if rssi < radio.sensitivity_dbm || rng.f64() < radio.miss_rate {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn scanner() -> Scanner {
        Scanner {
            id: "s".into(),
            position: (0.0, 0.0),
            rssi_offset: 0.0,
            path_loss_exponent: 2.0,
        }
    }

    /// Ten minutes of a device advertising five times a second 4 m from a
    /// scanner: (time ms, RSSI) of what was heard.
    fn heard(radio: &Radio, seed: u64) -> (Vec<(i64, f64)>, usize) {
        let mut rng = Rng::with_seed(seed);
        let mut link = Link::new(&mut rng, radio, 0);
        let s = scanner();
        let sent = 10 * 60 * 5;
        let out = (0..sent)
            .filter_map(|i| {
                let now = i64::from(i) * 200;
                hear(&mut rng, radio, &mut link, &s, ((4.0, 0.0), now), -59.0)
                    .map(|r| (now, f64::from(r)))
            })
            .collect();
        (out, usize::try_from(sent).unwrap())
    }

    fn mean(v: &[f64]) -> f64 {
        #[allow(clippy::cast_precision_loss)]
        let n = v.len() as f64;
        v.iter().sum::<f64>() / n
    }

    #[test]
    fn the_measured_radio_gives_back_the_recordings_spread_drift_and_losses() {
        let mut spread = Vec::new();
        let mut heard_share = Vec::new();
        let mut keep_at_tau = Vec::new();
        for seed in 1..=20 {
            let (h, sent) = heard(&Radio::MEASURED, seed);
            #[allow(clippy::cast_precision_loss)]
            heard_share.push(h.len() as f64 / sent as f64);
            let level = -59.0 - 20.0 * 4f64.log10();
            let residuals: Vec<f64> = h.iter().map(|(_, r)| r - level).collect();
            let m = mean(&residuals);
            spread.push(
                mean(
                    &residuals
                        .iter()
                        .map(|r| (r - m).powi(2))
                        .collect::<Vec<_>>(),
                )
                .sqrt(),
            );
            // Autocorrelation of the per-second means at the drift's
            // correlation time.
            let mut per_s = vec![(0.0, 0u32); 600];
            for (t, r) in &h {
                let e = &mut per_s[usize::try_from(t / 1000).unwrap()];
                e.0 += r - level - m;
                e.1 += 1;
            }
            let s: Vec<Option<f64>> = per_s
                .iter()
                .map(|(sum, n)| (*n > 0).then(|| sum / f64::from(*n)))
                .collect();
            let pairs: Vec<f64> = s
                .iter()
                .zip(&s[6..])
                .filter_map(|(a, b)| Some((*a)? * (*b)?))
                .collect();
            let var = mean(&s.iter().flatten().map(|a| a * a).collect::<Vec<_>>());
            keep_at_tau.push(mean(&pairs) / var);
        }
        let (spread, heard_share, keep) = (mean(&spread), mean(&heard_share), mean(&keep_at_tau));
        // The recording: 7.8 dB in all, six in ten heard, the per-second
        // drift keeping about 1/e of itself after 6 s (it also carries the
        // averaged fast part, so a little less).
        assert!((7.0..8.2).contains(&spread), "spread {spread:.2} dB");
        assert!(
            (0.58..0.62).contains(&heard_share),
            "heard {heard_share:.3}"
        );
        assert!((0.22..0.45).contains(&keep), "kept after 6 s {keep:.2}");
    }

    #[test]
    fn the_quiet_radio_stays_near_the_path_loss_level() {
        let (h, _) = heard(&Radio::QUIET, 7);
        let level = -59.0 - 20.0 * 4f64.log10();
        let m = mean(&h.iter().map(|(_, r)| *r).collect::<Vec<_>>());
        assert!((m - level).abs() < 0.3, "mean {m:.2} vs {level:.2}");
        assert!(h.iter().all(|(_, r)| (r - level).abs() <= 10.0));
    }
}

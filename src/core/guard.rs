//! Flood and junk guards that run before identity lookup, so that a busy
//! store (hundreds of phones, Apple continuity chatter, 10 Hz beacons)
//! costs little and a spoofer cannot drown a customer's beacon.
//!
//! Pure: time is an argument, nothing is read or written. Per advertisement
//! it costs one hash-map lookup and a few comparisons. What it remembers
//! about devices (addresses, claimed identities, last times) lives only in
//! memory, bounded by [`GuardConfig::max_addresses`]: when the table is
//! full the least recently heard half is dropped (two generations, no
//! per-entry recency bookkeeping), and the drops are counted.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::Hash;
use std::time::Duration;

use smallvec::SmallVec;

use super::advert::Frame;
use super::identity::Identity;
use super::types::{BdAddr, ScannerIdx, Sighting, Timestamp};

/// Thresholds of the guard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuardConfig {
    /// At most one sighting per (scanner, address) in this time; the rest
    /// are dropped. Presence averages every sample of a short window, and
    /// each one it keeps narrows the estimate (measured on a real
    /// recording: 10 per second and scanner place a tag in the right room
    /// clearly more often than 4), so the default lets a 10 Hz beacon
    /// through whole.
    pub min_interval: Duration,
    /// At most one sighting per (scanner, beacon identity) in this time,
    /// however many addresses advertise it (cloned or rotating beacons).
    pub identity_interval: Duration,
    /// Addresses remembered at most (oldest half evicted beyond that).
    pub max_addresses: usize,
    /// Distinct beacon identities one address may claim within
    /// `identity_window`; one more and the address is ignored.
    pub max_identities: usize,
    /// The window over which claimed identities are counted.
    pub identity_window: Duration,
    /// How long an address that claimed too many identities is ignored.
    pub quarantine: Duration,
}

impl Default for GuardConfig {
    fn default() -> GuardConfig {
        GuardConfig {
            min_interval: Duration::from_millis(100),
            identity_interval: Duration::from_millis(100),
            max_addresses: 4096,
            max_identities: 3,
            identity_window: Duration::from_secs(600),
            quarantine: Duration::from_secs(600),
        }
    }
}

/// What the guard decided about one sighting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Go on to identity lookup.
    Admit,
    /// An impossible signal strength (BlueZ reports 127 for "unknown").
    Junk,
    /// The same address from the same scanner too soon.
    AddressRate,
    /// The same beacon identity from the same scanner too soon.
    IdentityRate,
    /// The address claimed too many identities: ignored for a while.
    Spoofing,
}

/// What the guard did, by verdict.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GuardStats {
    /// Sightings let through to identity lookup.
    pub admitted: u64,
    /// Sightings with an impossible RSSI.
    pub junk: u64,
    /// Dropped by the per-address rate limit.
    pub address_rate: u64,
    /// Dropped by the per-identity rate limit.
    pub identity_rate: u64,
    /// Dropped because their address claimed too many identities.
    pub spoofing: u64,
    /// Addresses put in quarantine for claiming too many identities.
    pub quarantined: u64,
    /// Remembered addresses and identities dropped to stay within bounds.
    pub evicted: u64,
}

impl GuardStats {
    /// Every sighting that was not admitted.
    #[must_use]
    pub fn dropped(&self) -> u64 {
        self.junk + self.address_rate + self.identity_rate + self.spoofing
    }
}

/// What the guard remembers about one address.
#[derive(Clone, Debug, Default)]
struct AddrState {
    /// Last admitted sighting per scanner.
    last: SmallVec<[(ScannerIdx, Timestamp); 3]>,
    /// Identities claimed recently, with when each was last claimed.
    claimed: SmallVec<[(Identity, Timestamp); 4]>,
    /// Ignored until then.
    quarantined_until: Option<Timestamp>,
}

/// A map bounded by two generations: lookups promote to the current one;
/// when the current one is full the previous one is dropped whole.
struct Generations<K, V> {
    current: HashMap<K, V, foldhash::fast::RandomState>,
    previous: HashMap<K, V, foldhash::fast::RandomState>,
    half: usize,
}

impl<K: Hash + Eq + Copy, V: Default> Generations<K, V> {
    fn new(cap: usize) -> Self {
        Generations {
            current: HashMap::default(),
            previous: HashMap::default(),
            half: (cap / 2).max(1),
        }
    }

    /// The entry for `k`, created if new; adds dropped entries to `evicted`.
    /// One probe of `current` when the key is there (the common case).
    fn entry(&mut self, k: K, evicted: &mut u64) -> &mut V {
        if self.current.len() >= self.half && !self.current.contains_key(&k) {
            let v = self.previous.remove(&k).unwrap_or_default();
            *evicted += self.previous.len() as u64;
            self.previous = std::mem::take(&mut self.current);
            return self.current.entry(k).or_insert(v);
        }
        match self.current.entry(k) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(self.previous.remove(&k).unwrap_or_default()),
        }
    }

    fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }
}

/// The guard.
pub struct Guard {
    config: GuardConfig,
    addrs: Generations<BdAddr, AddrState>,
    identities: Generations<(ScannerIdx, Identity), Option<Timestamp>>,
    stats: GuardStats,
}

impl Guard {
    /// A guard with these thresholds.
    #[must_use]
    pub fn new(config: GuardConfig) -> Guard {
        Guard {
            addrs: Generations::new(config.max_addresses),
            identities: Generations::new(config.max_addresses),
            config,
            stats: GuardStats::default(),
        }
    }

    /// Counts so far.
    #[must_use]
    pub fn stats(&self) -> GuardStats {
        self.stats
    }

    /// Addresses and (scanner, identity) pairs remembered right now.
    #[must_use]
    pub fn remembered(&self) -> usize {
        self.addrs.len() + self.identities.len()
    }

    /// Judges one sighting whose frames were decoded into `frames`.
    pub fn check(&mut self, s: &Sighting, frames: &[Frame]) -> Verdict {
        let verdict = self.judge(s, frames);
        let counter = match verdict {
            Verdict::Admit => &mut self.stats.admitted,
            Verdict::Junk => &mut self.stats.junk,
            Verdict::AddressRate => &mut self.stats.address_rate,
            Verdict::IdentityRate => &mut self.stats.identity_rate,
            Verdict::Spoofing => &mut self.stats.spoofing,
        };
        *counter += 1;
        verdict
    }

    fn judge(&mut self, s: &Sighting, frames: &[Frame]) -> Verdict {
        if !(-127..20).contains(&s.rssi.0) {
            return Verdict::Junk;
        }
        let at = s.at;
        let cfg = &self.config;
        let ids: SmallVec<[Identity; 2]> = frames.iter().filter_map(Identity::from_frame).collect();
        let state = self.addrs.entry(s.addr, &mut self.stats.evicted);
        if let Some(until) = state.quarantined_until {
            if at < until {
                return Verdict::Spoofing;
            }
            state.quarantined_until = None;
        }
        if !ids.is_empty() {
            let forget_before = at.saturating_sub(cfg.identity_window);
            state.claimed.retain(|(_, t)| *t >= forget_before);
            for id in &ids {
                match state.claimed.iter_mut().find(|(c, _)| c == id) {
                    Some((_, t)) => *t = at.max(*t),
                    None => state.claimed.push((*id, at)),
                }
            }
            if state.claimed.len() > cfg.max_identities {
                state.claimed.clear();
                state.quarantined_until = Some(at.saturating_add(cfg.quarantine));
                self.stats.quarantined += 1;
                return Verdict::Spoofing;
            }
        }
        let last = state.last.iter_mut().find(|(sc, _)| *sc == s.scanner);
        if let Some((_, t)) = &last
            && at.since(*t) < cfg.min_interval
        {
            return Verdict::AddressRate;
        }
        match last {
            Some((_, t)) => *t = at,
            None => state.last.push((s.scanner, at)),
        }
        let mut limited = false;
        for id in ids {
            let last = self
                .identities
                .entry((s.scanner, id), &mut self.stats.evicted);
            match last {
                Some(t) if at.since(*t) < cfg.identity_interval => limited = true,
                _ => *last = Some(at),
            }
        }
        if limited {
            Verdict::IdentityRate
        } else {
            Verdict::Admit
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::types::{ManufacturerData, Rssi};

    fn ibeacon_frame(minor: u16) -> Frame {
        Frame::IBeacon {
            uuid: [0xE2; 16],
            major: 1,
            minor,
            measured_power: -59,
        }
    }

    fn sighting(ms: i64, scanner: u16, addr: u8, rssi: i16) -> Sighting {
        let mut s = Sighting::new(
            Timestamp(ms),
            ScannerIdx(scanner),
            BdAddr([0xC4, 0, 0, 0, 0, addr]),
            Rssi(rssi),
        );
        s.manufacturer_data.push(ManufacturerData {
            company: 76,
            data: smallvec::smallvec![0x10, 0x05],
        });
        s
    }

    /// Runs (ms, scanner, addr, minor or none) through a default guard and
    /// returns the verdicts.
    fn check(input: &[(i64, u16, u8, Option<u16>)], config: GuardConfig) -> Vec<Verdict> {
        let mut g = Guard::new(config);
        input
            .iter()
            .map(|&(ms, sc, addr, minor)| {
                let frames: Vec<Frame> = minor.into_iter().map(ibeacon_frame).collect();
                g.check(&sighting(ms, sc, addr, -60), &frames)
            })
            .collect()
    }

    use Verdict::{AddressRate, Admit, IdentityRate, Spoofing};

    #[test]
    fn a_beacon_faster_than_ten_hertz_is_cut_to_ten_per_second_per_scanner() {
        // 20 advertisements a second: every other one goes through.
        let input: Vec<_> = (0..8).map(|i| (i * 50, 0, 1, Some(7))).collect();
        let v = check(&input, GuardConfig::default());
        assert_eq!(
            v,
            [
                Admit,
                AddressRate,
                Admit,
                AddressRate,
                Admit,
                AddressRate,
                Admit,
                AddressRate
            ]
        );
        // A 10 Hz beacon, the fastest common rate, goes through whole.
        let input: Vec<_> = (0..10).map(|i| (i * 100, 0, 1, Some(7))).collect();
        assert!(
            check(&input, GuardConfig::default())
                .iter()
                .all(|v| *v == Admit)
        );
        // Another scanner hearing the same beacon is limited on its own.
        let v = check(
            &[(0, 0, 1, Some(7)), (10, 1, 1, Some(7)), (20, 0, 1, Some(7))],
            GuardConfig::default(),
        );
        assert_eq!(v, [Admit, Admit, AddressRate]);
    }

    #[test]
    fn one_identity_from_many_addresses_is_limited_per_identity() {
        let v = check(
            &[
                (0, 0, 1, Some(7)),
                (50, 0, 2, Some(7)),
                (80, 0, 3, Some(7)),
                (300, 0, 4, Some(7)),
                (300, 0, 5, Some(8)),
            ],
            GuardConfig::default(),
        );
        assert_eq!(v, [Admit, IdentityRate, IdentityRate, Admit, Admit]);
    }

    #[test]
    fn an_address_claiming_many_identities_is_ignored_then_forgiven() {
        let cfg = GuardConfig {
            quarantine: Duration::from_secs(60),
            ..GuardConfig::default()
        };
        let mut g = Guard::new(cfg);
        let mut at = 0;
        let mut verdicts = Vec::new();
        for minor in [1, 2, 3, 4, 1] {
            at += 1000;
            verdicts.push(g.check(&sighting(at, 0, 9, -60), &[ibeacon_frame(minor)]));
        }
        assert_eq!(verdicts, [Admit, Admit, Admit, Spoofing, Spoofing]);
        // Even a frame-less sighting of that address is ignored meanwhile.
        assert_eq!(g.check(&sighting(at + 1000, 0, 9, -60), &[]), Spoofing);
        // Another address is not affected.
        assert_eq!(
            g.check(&sighting(at, 0, 8, -60), &[ibeacon_frame(5)]),
            Admit
        );
        assert_eq!(
            g.check(&sighting(at + 61_000, 0, 9, -60), &[ibeacon_frame(1)]),
            Admit
        );
        let s = g.stats();
        assert_eq!((s.spoofing, s.quarantined, s.admitted), (3, 1, 5));
    }

    #[test]
    fn old_claims_age_out_of_the_window() {
        let cfg = GuardConfig {
            identity_window: Duration::from_secs(10),
            ..GuardConfig::default()
        };
        // Four identities, but never more than three within ten seconds.
        let v = check(
            &[
                (0, 0, 1, Some(1)),
                (5_000, 0, 1, Some(2)),
                (9_000, 0, 1, Some(3)),
                (16_000, 0, 1, Some(4)),
            ],
            cfg,
        );
        assert_eq!(v, [Admit, Admit, Admit, Admit]);
    }

    #[test]
    fn impossible_signal_strengths_are_junk() {
        let mut g = Guard::new(GuardConfig::default());
        assert_eq!(g.check(&sighting(0, 0, 1, 127), &[]), Verdict::Junk);
        assert_eq!(g.check(&sighting(0, 0, 1, -128), &[]), Verdict::Junk);
        assert_eq!(g.check(&sighting(0, 0, 1, -127), &[]), Verdict::Admit);
        assert_eq!(g.stats().junk, 2);
    }

    #[test]
    fn a_flood_of_random_addresses_stays_bounded() {
        let cfg = GuardConfig {
            max_addresses: 100,
            ..GuardConfig::default()
        };
        let mut g = Guard::new(cfg);
        for i in 0..10_000u32 {
            let b = i.to_be_bytes();
            let s = Sighting::new(
                Timestamp(i64::from(i)),
                ScannerIdx(0),
                BdAddr([0x40, 0, b[0], b[1], b[2], b[3]]),
                Rssi(-80),
            );
            assert_eq!(g.check(&s, &[]), Verdict::Admit);
            assert!(g.remembered() <= 100, "{}", g.remembered());
        }
        // 10 000 addresses in, at most 100 remembered: the rest evicted.
        let s = g.stats();
        assert!(s.evicted >= 9_900 && s.evicted <= 10_000, "{s:?}");
        // A recently heard address survives an eviction round.
        let mut g = Guard::new(GuardConfig {
            max_addresses: 4,
            ..GuardConfig::default()
        });
        let seen = |g: &mut Guard, ms: i64, a: u8| g.check(&sighting(ms, 0, a, -60), &[]);
        assert_eq!(seen(&mut g, 0, 1), Admit);
        assert_eq!(seen(&mut g, 0, 2), Admit);
        assert_eq!(seen(&mut g, 0, 3), Admit); // rotates: {1,2} now previous
        assert_eq!(seen(&mut g, 50, 1), AddressRate); // promoted back, still limited
    }
}

//! A seeded, deterministic simulated store, for `nearcast demo`, tests and
//! benchmarks.
//!
//! Owns the simulated world: shoppers' walks through the layout, their
//! phones' advertising, the store's fixed devices, the radio model and the
//! Wi-Fi reports of phones identified by MAC. It produces
//! [`Observation`]s exactly as scanners in a real store would, and decides
//! nothing: it does not identify, track or message anyone. It must not read
//! a clock, use a thread RNG or do IO: the same [`SimConfig`], layout and
//! customers always give the same observations.
//!
//! The radio model is the inverse of [`Layout::distance_m`]: a scanner
//! reports `P1m − 10·n·log10(d) − rssi_offset`, plus a slow drift per device
//! and scanner, per-advertisement noise with deep dips, missed
//! advertisements and short outages, as measured on a real recording
//! ([`Radio::MEASURED`]), and hears an advertisement when that is at least
//! the radio's sensitivity. `P1m` is what the device's frame claims (−59 dBm
//! for frames that claim nothing).
//!
//! Layout: this file holds the settings and the [`Simulator`] (planning and
//! the event queue); `world` the floor plan and shoppers' walks, `radio`
//! what a scanner hears, `devices` what each device advertises.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::f64::consts::TAU;
use std::sync::Arc;
use std::time::Duration;

use fastrand::Rng;
use geo::{BoundingRect, Centroid, Contains, Point};
use smallvec::SmallVec;

use super::Error;
use crate::core::advert::{APPLE, Frame, Section};
use crate::core::identity::Identity;
use crate::core::types::{
    BdAddr, ManufacturerData, Observation, Payload, Rssi, ScannerIdx, ServiceData, Sighting,
    Timestamp, Uuid128, WifiKind, WifiPresence, millis,
};
use crate::core::zones::{Layout, Scanner, ZoneIdx, ZoneKind};

mod devices;
mod radio;
mod world;

use devices::*;
pub use radio::Radio;
use radio::*;
use world::*;

/// What to simulate.
#[derive(Clone, Debug, PartialEq)]
pub struct SimConfig {
    /// Seed of every random choice.
    pub seed: u64,
    /// How many shoppers visit.
    pub shoppers: u32,
    /// When the first shopper may appear.
    pub start: Timestamp,
    /// Shoppers appear uniformly over this span (arrivals of a Poisson
    /// process with exactly `shoppers` events); they finish their visit
    /// after it.
    pub duration: Duration,
    /// Share of shoppers who are enrolled customers, `0.0..=1.0`; rounded to
    /// a whole number of shoppers and capped by the customers given.
    pub opted_in_share: f64,
    /// Shortest and longest stop at a zone.
    pub dwell: (Duration, Duration),
    /// How scanners hear devices: [`Radio::MEASURED`] unless a test wants
    /// the radio out of its way.
    pub radio: Radio,
    /// Whether the store's own devices (a shelf beacon, a payment terminal,
    /// an Eddystone beacon) advertise throughout.
    pub fixed_devices: bool,
}

impl Default for SimConfig {
    fn default() -> SimConfig {
        SimConfig {
            seed: 1,
            shoppers: 40,
            // 2025-11-21 08:00:00 UTC, the day of the format's example.
            start: Timestamp(1_763_712_000_000),
            duration: Duration::from_secs(3600),
            opted_in_share: 0.25,
            dwell: (Duration::from_secs(30), Duration::from_secs(6 * 60)),
            radio: Radio::MEASURED,
            fixed_devices: true,
        }
    }
}

/// An enrolled customer the simulator may send into the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimCustomer {
    /// What their phone shows: each beacon identity is advertised by the
    /// phone; a `Mac` is its public BLE address and its Wi-Fi MAC. Without
    /// any, the customer shops with an anonymous phone.
    pub identities: Vec<Identity>,
}

/// One stop on a shopper's walk: the ground truth tests compare against.
#[derive(Clone, Debug, PartialEq)]
pub struct SimStop {
    /// The zone visited, or `None` for a point near a scanner in a layout
    /// without zones.
    pub zone: Option<ZoneIdx>,
    /// Where the shopper stands, floor-plan metres.
    pub at: (f64, f64),
    /// Loitering at the zone's edge (in a near zone's hysteresis band, or
    /// just outside an area), not inside it.
    pub edge: bool,
    /// Arrived at the point.
    pub from: Timestamp,
    /// Walked on.
    pub until: Timestamp,
}

/// One shopper's visit, as planned.
#[derive(Clone, Debug, PartialEq)]
pub struct SimShopper {
    /// Index into the customers given to [`Simulator::new`], if opted in.
    pub customer: Option<usize>,
    /// Starts walking in from out of range.
    pub appears: Timestamp,
    /// Passes the entrance (the first scanner) inwards.
    pub enters: Timestamp,
    /// Passes the entrance outwards.
    pub exits: Timestamp,
    /// Out of range; the phone is no longer simulated.
    pub gone: Timestamp,
    /// Stops, in order.
    pub stops: Vec<SimStop>,
}

/// The simulated store: an iterator of observations in non-decreasing time
/// order, ending when the last shopper is gone.
pub struct Simulator {
    layout: Arc<Layout>,
    config: SimConfig,
    shoppers: Vec<SimShopper>,
    walks: Vec<Vec<Leg>>,
    devices: Vec<Device>,
    queue: BinaryHeap<Reverse<Due>>,
    pending: VecDeque<Observation>,
    seq: u64,
    end: i64,
}

/// The source name of the simulator's Wi-Fi reports.
pub const WIFI_SOURCE: &str = "sim";

/// RSSI at 1 m of devices whose frames claim nothing, dBm.
const DEFAULT_P1M: i8 = -59;
/// Phones rotate their resolvable private address about this often.
const ADDRESS_ROTATION_MS: i64 = 15 * 60 * 1000;
/// Shoppers vanish at most this far beyond the entrance (round the corner,
/// into a car), even where the model would still hear them.
const MAX_WALK_OUT_M: f64 = 50.0;
/// Share of stops spent loitering at a zone's edge.
const EDGE_SHARE: f64 = 0.15;
/// Upper bounds keeping every time computation far from overflow.
const MAX_SHOPPERS: u32 = 100_000;
const MAX_DURATION: Duration = Duration::from_secs(366 * 24 * 3600);
const MAX_ABS_START_MS: i64 = 1 << 52;

impl Simulator {
    /// Plans every visit for `config` in `layout`, drawing opted-in
    /// shoppers from `customers` without repetition.
    ///
    /// # Errors
    /// [`Error::NoScanners`] for a layout without scanners;
    /// [`Error::SimConfig`] for a setting out of range.
    pub fn new(
        config: SimConfig,
        layout: Arc<Layout>,
        customers: Vec<SimCustomer>,
    ) -> Result<Simulator, Error> {
        validate(&config)?;
        let entrance = layout.scanners.first().ok_or(Error::NoScanners)?.position;
        let mut rng = Rng::with_seed(config.seed);
        let start = config.start.0;
        let span = millis(config.duration);
        let n = usize::try_from(config.shoppers).unwrap_or(usize::MAX);

        let mut arrivals: Vec<i64> = (0..n).map(|_| start + rng.i64(0..=span)).collect();
        arrivals.sort_unstable();

        // Which shoppers are which customers.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let wanted = (config.opted_in_share * f64::from(config.shoppers)).round() as usize;
        let opted = wanted.min(customers.len()).min(n);
        let mut who: Vec<usize> = (0..n).collect();
        rng.shuffle(&mut who);
        let mut picks: Vec<usize> = (0..customers.len()).collect();
        rng.shuffle(&mut picks);
        let mut customer_of = vec![None; n];
        for (&shopper, &customer) in who.iter().zip(&picks).take(opted) {
            customer_of[shopper] = Some(customer);
        }

        let world = World::new(&layout, &config, entrance);
        let mut sim = Simulator {
            layout: Arc::clone(&layout),
            config,
            shoppers: Vec::with_capacity(n),
            walks: Vec::with_capacity(n),
            devices: Vec::new(),
            queue: BinaryHeap::new(),
            pending: VecDeque::new(),
            seq: 0,
            end: start.saturating_add(span),
        };
        for (i, (&appears, customer)) in arrivals.iter().zip(customer_of).enumerate() {
            let (shopper, legs) = world.plan(&mut rng, appears, customer);
            sim.end = sim.end.max(shopper.gone.0);
            let identities = customer
                .and_then(|c| customers.get(c))
                .map(|c| c.identities.as_slice())
                .unwrap_or_default();
            let (from, until) = (shopper.appears.0, shopper.gone.0);
            if identities.is_empty() {
                let kind = noise_kind(&mut rng);
                sim.add_device(&mut rng, Carrier::Shopper(i), (from, until), kind, None);
            }
            for identity in identities {
                let kind = Kind::Identity(*identity);
                sim.add_device(&mut rng, Carrier::Shopper(i), (from, until), kind, None);
                if let Identity::Mac(_) = identity {
                    let device = sim.devices.len() - 1;
                    sim.schedule(shopper.enters.0, device, What::Joined);
                    sim.schedule(until, device, What::Left);
                }
            }
            sim.shoppers.push(shopper);
            sim.walks.push(legs);
        }
        if sim.config.fixed_devices {
            let end = sim.end;
            for (at, kind, fixed) in world.fixed_devices(&mut rng, &layout) {
                sim.add_device(
                    &mut rng,
                    Carrier::Fixed(at),
                    (start, end),
                    kind,
                    Some(fixed),
                );
            }
        }
        Ok(sim)
    }

    /// Every shopper's planned visit, in order of appearance.
    #[must_use]
    pub fn shoppers(&self) -> &[SimShopper] {
        &self.shoppers
    }

    /// When the simulation ends: the later of the configured span's end and
    /// the last shopper leaving.
    #[must_use]
    pub fn end(&self) -> Timestamp {
        Timestamp(self.end)
    }

    /// The layout simulated.
    #[must_use]
    pub fn layout(&self) -> &Arc<Layout> {
        &self.layout
    }

    /// Adds a device advertising from `from` to `until`. Phones advertise
    /// at their own interval from a rotating private address; a public
    /// `Mac` identity and the store's `fixed` devices keep theirs.
    fn add_device(
        &mut self,
        rng: &mut Rng,
        carrier: Carrier,
        (from, until): (i64, i64),
        kind: Kind,
        fixed: Option<Fixed>,
    ) {
        let mut own = Rng::with_seed(rng.u64(..));
        let interval = fixed.map_or_else(|| own.i64(100..=2000), |f| f.interval);
        let (addr, next_rotation) = match (fixed, &kind) {
            (Some(f), _) => (f.addr, None),
            (None, Kind::Identity(Identity::Mac(mac))) => (*mac, None),
            (None, _) => (
                resolvable_address(&mut own),
                Some(from + own.i64(0..=ADDRESS_ROTATION_MS)),
            ),
        };
        let first = from + own.i64(0..=interval);
        let p1m = f64::from(kind_p1m(&kind, &mut own));
        let mut device = Device {
            carrier,
            from,
            until,
            interval,
            addr,
            next_rotation,
            p1m,
            sections: Sections::default(),
            adv_count: 0,
            kind,
            cursor: 0,
            links: Vec::new(),
            rng: own,
        };
        device.refresh_sections();
        self.devices.push(device);
        let index = self.devices.len() - 1;
        if first <= until {
            self.schedule(first, index, What::Advert);
        }
    }

    fn schedule(&mut self, at: i64, device: usize, what: What) {
        self.seq += 1;
        self.queue.push(Reverse(Due {
            at,
            seq: self.seq,
            device,
            what,
        }));
    }

    fn fire(&mut self, due: &Due) {
        let Some(device) = self.devices.get_mut(due.device) else {
            return;
        };
        match due.what {
            What::Joined | What::Left => {
                let Kind::Identity(Identity::Mac(mac)) = device.kind else {
                    return;
                };
                self.pending.push_back(Observation::Wifi(WifiPresence {
                    at: Timestamp(due.at),
                    source: WIFI_SOURCE.into(),
                    mac,
                    kind: if due.what == What::Joined {
                        WifiKind::Joined
                    } else {
                        WifiKind::Left
                    },
                }));
            }
            What::Advert => {
                let at = due.at;
                let position = match device.carrier {
                    Carrier::Fixed(p) => p,
                    Carrier::Shopper(s) => match self.walks.get(s) {
                        Some(legs) => position(legs, &mut device.cursor, at),
                        None => return,
                    },
                };
                device.advertise(at);
                let mut template =
                    Sighting::new(Timestamp(at), ScannerIdx(0), device.addr, Rssi(0));
                device.sections.fill(&mut template);
                let radio = &self.config.radio;
                if device.links.len() != self.layout.scanners.len() {
                    let rng = &mut device.rng;
                    device.links = (0..self.layout.scanners.len())
                        .map(|_| Link::new(rng, radio, at))
                        .collect();
                }
                for (i, (scanner, link)) in self
                    .layout
                    .scanners
                    .iter()
                    .zip(&mut device.links)
                    .enumerate()
                {
                    let Ok(idx) = u16::try_from(i) else { break };
                    let heard = hear(
                        &mut device.rng,
                        radio,
                        link,
                        scanner,
                        (position, at),
                        device.p1m,
                    );
                    if let Some(rssi) = heard {
                        let mut s = template.clone();
                        s.scanner = ScannerIdx(idx);
                        s.rssi = Rssi(rssi);
                        self.pending.push_back(Observation::Ble(s));
                    }
                }
                let jitter = device.rng.i64(-10..=10);
                let next = at + (device.interval + jitter).max(1);
                if next <= device.until {
                    self.schedule(next, due.device, What::Advert);
                }
            }
        }
    }
}

impl Iterator for Simulator {
    type Item = Observation;

    fn next(&mut self) -> Option<Observation> {
        loop {
            if let Some(obs) = self.pending.pop_front() {
                return Some(obs);
            }
            let Reverse(due) = self.queue.pop()?;
            self.fire(&due);
        }
    }
}

fn validate(c: &SimConfig) -> Result<(), Error> {
    let bad = |what| Err(Error::SimConfig(what));
    if !(0.0..=1.0).contains(&c.opted_in_share) {
        return bad("opted_in_share must be between 0 and 1");
    }
    if c.shoppers > MAX_SHOPPERS {
        return bad("at most 100000 shoppers");
    }
    if c.duration > MAX_DURATION {
        return bad("duration must be at most 366 days");
    }
    if c.start.0.unsigned_abs() > MAX_ABS_START_MS.unsigned_abs() {
        return bad("start is not a plausible time");
    }
    if c.dwell.0 > c.dwell.1 || c.dwell.1 > MAX_DURATION {
        return bad("dwell must be (shortest, longest) with shortest <= longest <= 366 days");
    }
    let r = &c.radio;
    let db = |v: f64| v.is_finite() && (0.0..=30.0).contains(&v);
    if !(db(r.fast_sigma_db) && db(r.shadow_sigma_db) && db(-r.dip_db)) {
        return bad("radio spreads and dip depth must be between 0 and 30 dB");
    }
    if !(r.sensitivity_dbm.is_finite() && (-150.0..=0.0).contains(&r.sensitivity_dbm)) {
        return bad("radio sensitivity_dbm must be between -150 and 0");
    }
    if !((0.0..1.0).contains(&r.miss_rate) && (0.0..=1.0).contains(&r.dip_share)) {
        return bad("radio miss_rate must be in [0, 1) and dip_share in [0, 1]");
    }
    if !(r.outage_per_s.is_finite() && (0.0..=1.0).contains(&r.outage_per_s)) {
        return bad("radio outage_per_s must be between 0 and 1");
    }
    if r.shadow_time.is_zero() || r.outage_mean > Duration::from_secs(3600) {
        return bad("radio shadow_time must be positive and outage_mean at most an hour");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use geo::polygon;

    use super::*;
    use crate::core::advert::{DecodeStats, Frame, decode};
    use crate::core::zones::{Zone, ZoneKind};
    use crate::source::replay::{Reader, Writer};

    /// A small store: the door, a shoe wall 20 m in, a café area behind it.
    fn store() -> Arc<Layout> {
        let mut l = Layout::single("Test store", "door");
        for (id, position) in [("shoes", (20.0, 0.0)), ("cafe", (20.0, 15.0))] {
            l.scanners.push(Scanner {
                id: id.into(),
                position,
                rssi_offset: 0.0,
                path_loss_exponent: 2.5,
            });
        }
        l.scanners[0].path_loss_exponent = 2.5;
        let zone = |id: &str, kind| Zone {
            id: id.into(),
            kind,
            min_dwell: Duration::from_secs(10),
            exit_after: Duration::from_secs(30),
            dwell_after: None,
        };
        l.zones.push(zone(
            "shoes",
            ZoneKind::Near {
                scanner: ScannerIdx(1),
                enter_m: 3.0,
                exit_m: 5.0,
            },
        ));
        l.groups = vec!["areas".into()];
        l.zones.push(zone(
            "cafe",
            ZoneKind::Area {
                polygon: polygon![(x: 16.0, y: 11.0), (x: 24.0, y: 11.0), (x: 24.0, y: 19.0), (x: 16.0, y: 19.0)],
                exit_margin_m: 1.0,
                group: 0,
            },
        ));
        Arc::new(l)
    }

    fn customers() -> Vec<SimCustomer> {
        let ids = [
            "ibeacon:E2C56DB5-DFFB-48D2-B060-D0F5A71096E0:1:2",
            "ibeacon:E2C56DB5-DFFB-48D2-B060-D0F5A71096E0:1:3",
            "altbeacon:2f234454cf6d4a0fadf2f4911ba9ffa600010002",
            "eddystone-uid:0102030405060708090a:a0a1a2a3a4a5",
            "eddystone-uid:0102030405060708090a:a0a1a2a3a4a6",
            "mac:C4:7C:8D:6A:11:02",
            "mac:C4:7C:8D:6A:11:03",
            "altbeacon:2f234454cf6d4a0fadf2f4911ba9ffa600010003",
        ];
        ids.iter()
            .map(|s| SimCustomer {
                identities: vec![Identity::parse(s).unwrap()],
            })
            .collect()
    }

    fn quick(seed: u64, shoppers: u32, share: f64) -> SimConfig {
        SimConfig {
            seed,
            shoppers,
            duration: Duration::from_secs(120),
            opted_in_share: share,
            dwell: (Duration::from_secs(30), Duration::from_secs(60)),
            ..SimConfig::default()
        }
    }

    fn run(config: SimConfig) -> (Vec<SimShopper>, Vec<Observation>) {
        let sim = Simulator::new(config, store(), customers()).unwrap();
        let shoppers = sim.shoppers().to_vec();
        (shoppers, sim.collect())
    }

    /// The enrolled identity a sighting shows, if any.
    fn identity_of(obs: &Observation, enrolled: &[Identity]) -> Option<Identity> {
        let Observation::Ble(s) = obs else {
            return None;
        };
        let mut frames = Vec::new();
        decode(s, &mut DecodeStats::default(), |f| frames.push(f));
        frames
            .iter()
            .filter_map(Identity::from_frame)
            .chain([Identity::Mac(s.addr)])
            .find(|id| enrolled.contains(id))
    }

    #[test]
    fn same_seed_same_observations_other_seed_others() {
        let (_, a) = run(quick(7, 6, 0.5));
        let (_, b) = run(quick(7, 6, 0.5));
        let (_, c) = run(quick(8, 6, 0.5));
        assert!(a.len() > 1000, "{}", a.len());
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn time_never_goes_back_and_everything_ends() {
        let sim = Simulator::new(quick(3, 6, 0.5), store(), customers()).unwrap();
        let end = sim.end();
        let gone = sim.shoppers().iter().map(|s| s.gone).max().unwrap();
        assert!(end >= gone);
        let obs: Vec<_> = sim.collect();
        assert!(obs.windows(2).all(|w| w[0].at() <= w[1].at()));
        assert!(obs.first().unwrap().at() >= SimConfig::default().start);
        assert!(obs.last().unwrap().at() <= end);
    }

    #[test]
    fn the_share_of_opted_in_shoppers_is_exact_and_without_repetition() {
        let sim = Simulator::new(quick(11, 20, 0.25), store(), customers()).unwrap();
        let mut picked: Vec<usize> = sim.shoppers().iter().filter_map(|s| s.customer).collect();
        assert_eq!(picked.len(), 5);
        picked.sort_unstable();
        picked.dedup();
        assert_eq!(picked.len(), 5, "no customer twice");
        // Capped by the customers available; none when the share is zero.
        let sim = Simulator::new(quick(11, 20, 1.0), store(), customers()).unwrap();
        assert_eq!(
            sim.shoppers()
                .iter()
                .filter(|s| s.customer.is_some())
                .count(),
            8
        );
        let sim = Simulator::new(quick(11, 20, 0.0), store(), customers()).unwrap();
        assert!(sim.shoppers().iter().all(|s| s.customer.is_none()));
    }

    #[test]
    fn visits_walk_in_stop_and_walk_out() {
        let (shoppers, _) = run(quick(5, 10, 0.0));
        let layout = store();
        for s in &shoppers {
            assert!(s.appears < s.enters && s.enters < s.exits && s.exits < s.gone);
            assert!(!s.stops.is_empty());
            let mut last = s.enters;
            for stop in &s.stops {
                assert!(stop.from >= last && stop.until > stop.from);
                let dwell = stop.until.since(stop.from);
                assert!((30..=60).contains(&dwell.as_secs()), "{dwell:?}");
                last = stop.until;
                let zone = layout.zone(stop.zone.unwrap());
                match &zone.kind {
                    ZoneKind::Near {
                        scanner,
                        enter_m,
                        exit_m,
                    } => {
                        let p = layout.scanners[usize::from(scanner.0)].position;
                        let d = (stop.at.0 - p.0).hypot(stop.at.1 - p.1);
                        if stop.edge {
                            assert!((*enter_m..=*exit_m).contains(&d), "{d}");
                        } else {
                            assert!(d < *enter_m, "{d}");
                        }
                    }
                    ZoneKind::Area { polygon, .. } => {
                        let inside = polygon.contains(&Point::new(stop.at.0, stop.at.1));
                        assert!(inside || stop.edge);
                    }
                    ZoneKind::Store { .. } => panic!("the store is not a stop"),
                }
            }
            assert!(s.exits >= last);
        }
    }

    #[test]
    fn every_identity_frame_decodes_to_its_identity() {
        let layout = store();
        for customer in customers() {
            let identity = customer.identities[0];
            for p1m in [-62i8, -59, -56] {
                let mut s = Sighting::new(Timestamp(0), ScannerIdx(0), BdAddr([0; 6]), Rssi(-60));
                identity_sections(&identity, p1m).fill(&mut s);
                let mut stats = DecodeStats::default();
                let mut frames: Vec<Frame> = Vec::new();
                decode(&s, &mut stats, |f| frames.push(f));
                assert_eq!(stats.rejected(), 0);
                match identity {
                    Identity::Mac(_) => assert!(frames.is_empty()),
                    _ => {
                        assert_eq!(frames.len(), 1);
                        assert_eq!(Identity::from_frame(&frames[0]), Some(identity));
                        assert_eq!(layout.measured_power(Some(&frames[0])), p1m);
                    }
                }
            }
        }
    }

    #[test]
    fn opted_in_phones_show_their_identity_and_noise_shows_none() {
        let customers = customers();
        let enrolled: Vec<Identity> = customers.iter().map(|c| c.identities[0]).collect();
        let (shoppers, obs) = run(quick(21, 40, 0.2));
        let mut seen: HashMap<Identity, usize> = HashMap::new();
        let mut stats = DecodeStats::default();
        for o in &obs {
            if let Some(id) = identity_of(o, &enrolled) {
                *seen.entry(id).or_default() += 1;
            }
            if let Observation::Ble(s) = o {
                decode(s, &mut stats, |_| {});
            }
        }
        let expected: Vec<Identity> = shoppers
            .iter()
            .filter_map(|s| s.customer)
            .map(|c| enrolled[c])
            .collect();
        assert_eq!(expected.len(), 8);
        let mut heard: Vec<_> = seen.keys().copied().collect();
        heard.sort_by_key(|id| enrolled.iter().position(|e| e == id));
        let mut want = expected.clone();
        want.sort_by_key(|id| enrolled.iter().position(|e| e == id));
        assert_eq!(heard, want, "exactly the opted-in shoppers' identities");
        // The noise exercises the decoder: other beacons, Eddystone, junk.
        assert!(stats.ibeacon > 0 && stats.eddystone > 0, "{stats:?}");
        assert!(stats.unknown > 0 && stats.truncated > 0, "{stats:?}");
    }

    #[test]
    fn mac_customers_join_and_leave_the_wifi() {
        let customers = customers();
        let (shoppers, obs) = run(quick(21, 16, 0.5));
        for s in shoppers.iter().filter(|s| s.customer.is_some()) {
            let identity = customers[s.customer.unwrap()].identities[0];
            let Identity::Mac(mac) = identity else {
                continue;
            };
            let reports: Vec<(Timestamp, WifiKind)> = obs
                .iter()
                .filter_map(|o| match o {
                    Observation::Wifi(w) if w.mac == mac => {
                        assert_eq!(&*w.source, WIFI_SOURCE);
                        Some((w.at, w.kind))
                    }
                    _ => None,
                })
                .collect();
            assert_eq!(
                reports,
                [(s.enters, WifiKind::Joined), (s.gone, WifiKind::Left)]
            );
        }
        assert_eq!(
            obs.iter()
                .filter(|o| matches!(o, Observation::Wifi(_)))
                .count(),
            4,
            "two MAC customers among the opted-in"
        );
    }

    #[test]
    fn the_nearest_scanner_hears_a_stopped_shopper_loudest() {
        let customers = customers();
        let enrolled: Vec<Identity> = customers.iter().map(|c| c.identities[0]).collect();
        let layout = store();
        let (shoppers, obs) = run(quick(33, 8, 1.0));
        let mut checked = 0;
        for s in &shoppers {
            let identity = enrolled[s.customer.unwrap()];
            for stop in &s.stops {
                let dist: Vec<f64> = layout
                    .scanners
                    .iter()
                    .map(|sc| (sc.position.0 - stop.at.0).hypot(sc.position.1 - stop.at.1))
                    .collect();
                let mut order: Vec<usize> = (0..dist.len()).collect();
                order.sort_by(|&a, &b| dist[a].total_cmp(&dist[b]));
                if dist[order[1]] < 1.5 * dist[order[0]] {
                    continue; // too close to call
                }
                let mut sum = vec![(0i64, 0i64); dist.len()];
                for o in obs
                    .iter()
                    .filter(|o| o.at() >= stop.from && o.at() < stop.until)
                {
                    if identity_of(o, &enrolled) == Some(identity) {
                        if let Observation::Ble(b) = o {
                            let e = &mut sum[usize::from(b.scanner.0)];
                            *e = (e.0 + i64::from(b.rssi.0), e.1 + 1);
                        }
                    }
                }
                assert!(sum[order[0]].1 >= 5, "{sum:?}");
                #[allow(clippy::cast_precision_loss)]
                let mean = |i: usize| {
                    let (total, n) = sum[i];
                    if n == 0 {
                        f64::MIN
                    } else {
                        total as f64 / n as f64
                    }
                };
                let loudest = (0..dist.len())
                    .max_by(|&a, &b| mean(a).total_cmp(&mean(b)))
                    .unwrap();
                assert_eq!(loudest, order[0], "stop at {:?}: {sum:?}", stop.at);
                checked += 1;
            }
        }
        assert!(checked >= 10, "only {checked} stops checked");
    }

    #[test]
    fn a_recording_of_the_simulation_replays_identically() {
        let layout = store();
        let sim = Simulator::new(quick(2, 4, 0.5), Arc::clone(&layout), customers()).unwrap();
        let obs: Vec<_> = sim.collect();
        let mut w = Writer::new(Vec::new(), &layout);
        for o in &obs {
            w.write(o).unwrap();
        }
        let bytes = w.into_inner();
        let mut r = Reader::new(bytes.as_slice(), &layout);
        let back: Vec<_> = r.by_ref().map(Result::unwrap).collect();
        assert_eq!(r.stats().skipped(), 0);
        assert_eq!(back, obs);
    }

    #[test]
    fn bad_settings_are_refused() {
        let layout = store();
        let refused = |c: SimConfig| {
            matches!(
                Simulator::new(c, Arc::clone(&layout), Vec::new()),
                Err(Error::SimConfig(_))
            )
        };
        assert!(refused(SimConfig {
            opted_in_share: f64::NAN,
            ..SimConfig::default()
        }));
        assert!(refused(SimConfig {
            opted_in_share: 1.5,
            ..SimConfig::default()
        }));
        assert!(refused(SimConfig {
            dwell: (Duration::from_secs(60), Duration::from_secs(30)),
            ..SimConfig::default()
        }));
        assert!(refused(SimConfig {
            start: Timestamp(i64::MAX),
            ..SimConfig::default()
        }));
        let mut empty = (*layout).clone();
        empty.scanners.clear();
        assert!(matches!(
            Simulator::new(SimConfig::default(), Arc::new(empty), Vec::new()),
            Err(Error::NoScanners)
        ));
    }
}

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
//! reports `P1m − 10·n·log10(d) − rssi_offset`, plus Gaussian noise and
//! occasional multipath dips and spikes, and hears an advertisement when
//! that is at least [`SimConfig::sensitivity_dbm`]. `P1m` is what the
//! device's frame claims (−59 dBm for frames that claim nothing).

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
    /// Standard deviation of the RSSI noise, dB.
    pub rssi_sigma_db: f64,
    /// Weakest RSSI a scanner reports, dBm.
    pub sensitivity_dbm: f64,
    /// Share of advertisements a scanner misses although it is in range
    /// (scan duty cycle, collisions).
    pub miss_rate: f64,
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
            rssi_sigma_db: 4.0,
            sensitivity_dbm: -100.0,
            miss_rate: 0.1,
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
/// Multipath: a deep dip or a spike, each this often.
const DIP_SHARE: f64 = 0.015;
const SPIKE_SHARE: f64 = 0.015;
const DIP_DB: f64 = -15.0;
const SPIKE_DB: f64 = 8.0;
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
                for (i, scanner) in self.layout.scanners.iter().enumerate() {
                    let Ok(idx) = u16::try_from(i) else { break };
                    let heard = hear(&mut device.rng, &self.config, scanner, position, device.p1m);
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
    if !(c.rssi_sigma_db.is_finite() && (0.0..=30.0).contains(&c.rssi_sigma_db)) {
        return bad("rssi_sigma_db must be between 0 and 30");
    }
    if !(c.sensitivity_dbm.is_finite() && (-150.0..=0.0).contains(&c.sensitivity_dbm)) {
        return bad("sensitivity_dbm must be between -150 and 0");
    }
    if !(0.0..1.0).contains(&c.miss_rate) {
        return bad("miss_rate must be at least 0 and below 1");
    }
    Ok(())
}

/// One straight piece of a walk (or a stand, when `from == to`).
#[derive(Clone, Copy, Debug)]
struct Leg {
    start: i64,
    end: i64,
    from: (f64, f64),
    to: (f64, f64),
}

/// Where a walk is at `t`; `cursor` remembers the leg, as times only grow.
fn position(legs: &[Leg], cursor: &mut usize, t: i64) -> (f64, f64) {
    while *cursor + 1 < legs.len() && legs[*cursor].end <= t {
        *cursor += 1;
    }
    let Some(leg) = legs.get(*cursor) else {
        return (0.0, 0.0);
    };
    if leg.end <= leg.start {
        return leg.to;
    }
    #[allow(clippy::cast_precision_loss)]
    let f = ((t - leg.start) as f64 / (leg.end - leg.start) as f64).clamp(0.0, 1.0);
    (
        leg.from.0 + (leg.to.0 - leg.from.0) * f,
        leg.from.1 + (leg.to.1 - leg.from.1) * f,
    )
}

/// The floor plan as the planner sees it.
struct World<'l> {
    layout: &'l Layout,
    entrance: (f64, f64),
    /// Unit vector from the store out through the entrance.
    outward: (f64, f64),
    walk_out_m: f64,
    dwell_ms: (i64, i64),
}

impl<'l> World<'l> {
    fn new(layout: &'l Layout, config: &SimConfig, entrance: (f64, f64)) -> World<'l> {
        #[allow(clippy::cast_precision_loss)]
        let count = layout.scanners.len().max(1) as f64;
        let (cx, cy) = layout.scanners.iter().fold((0.0, 0.0), |(x, y), s| {
            (x + s.position.0 / count, y + s.position.1 / count)
        });
        let (dx, dy) = (entrance.0 - cx, entrance.1 - cy);
        let len = dx.hypot(dy);
        let outward = if len > 1e-6 {
            (dx / len, dy / len)
        } else {
            (0.0, -1.0)
        };
        // Far enough that the loudest phone is below the sensitivity at
        // every scanner on average, within reason.
        let walk_out_m = layout
            .scanners
            .iter()
            .map(|s| {
                let d_entrance = (s.position.0 - entrance.0).hypot(s.position.1 - entrance.1);
                let range = 10f64.powf(
                    (-56.0 - s.rssi_offset - config.sensitivity_dbm)
                        / (10.0 * s.path_loss_exponent.max(0.5)),
                );
                range - d_entrance
            })
            .fold(10.0, f64::max)
            .min(MAX_WALK_OUT_M);
        World {
            layout,
            entrance,
            outward,
            walk_out_m,
            dwell_ms: (millis(config.dwell.0), millis(config.dwell.1)),
        }
    }

    /// A point out of range beyond the entrance, a few metres to either side.
    fn outside(&self, rng: &mut Rng) -> (f64, f64) {
        let side = rng.f64() * 6.0 - 3.0;
        let (ox, oy) = self.outward;
        (
            self.entrance.0 + ox * self.walk_out_m - oy * side,
            self.entrance.1 + oy * self.walk_out_m + ox * side,
        )
    }

    fn plan(&self, rng: &mut Rng, appears: i64, customer: Option<usize>) -> (SimShopper, Vec<Leg>) {
        let speed = 0.8 + 0.6 * rng.f64();
        let mut legs = Vec::new();
        let mut here = self.outside(rng);
        let mut now = appears;
        let walk = |legs: &mut Vec<Leg>, now: &mut i64, here: &mut (f64, f64), to: (f64, f64)| {
            let metres = (to.0 - here.0).hypot(to.1 - here.1);
            #[allow(clippy::cast_possible_truncation)]
            let ms = (metres / speed * 1000.0).round() as i64;
            legs.push(Leg {
                start: *now,
                end: *now + ms,
                from: *here,
                to,
            });
            *now += ms;
            *here = to;
        };
        walk(&mut legs, &mut now, &mut here, self.entrance);
        let enters = now;
        let mut stops = Vec::new();
        for (zone, at, edge) in self.choose_stops(rng) {
            walk(&mut legs, &mut now, &mut here, at);
            let dwell = rng.i64(self.dwell_ms.0..=self.dwell_ms.1);
            legs.push(Leg {
                start: now,
                end: now + dwell,
                from: at,
                to: at,
            });
            stops.push(SimStop {
                zone,
                at,
                edge,
                from: Timestamp(now),
                until: Timestamp(now + dwell),
            });
            now += dwell;
        }
        walk(&mut legs, &mut now, &mut here, self.entrance);
        let exits = now;
        let out = self.outside(rng);
        walk(&mut legs, &mut now, &mut here, out);
        let shopper = SimShopper {
            customer,
            appears: Timestamp(appears),
            enters: Timestamp(enters),
            exits: Timestamp(exits),
            gone: Timestamp(now),
            stops,
        };
        (shopper, legs)
    }

    /// A random subset of the zones in random order, each with a point to
    /// stand at; near random scanners in a layout without zones.
    fn choose_stops(&self, rng: &mut Rng) -> Vec<(Option<ZoneIdx>, (f64, f64), bool)> {
        let mut zones: Vec<usize> = (1..self.layout.zones.len()).collect();
        rng.shuffle(&mut zones);
        let mut stops = Vec::new();
        for &z in &zones {
            if rng.f64() < 0.6 {
                stops.extend(self.stop_in(rng, z));
            }
        }
        if stops.is_empty() {
            if let Some(&z) = zones.first() {
                stops.extend(self.stop_in(rng, z));
            }
        }
        if stops.is_empty() {
            for _ in 0..rng.usize(1..=3) {
                let Some(s) = rng.choice(&self.layout.scanners) else {
                    break;
                };
                let r = 3.0 * rng.f64().sqrt();
                let at = around(rng, s.position, r);
                stops.push((None, at, false));
            }
        }
        stops
    }

    fn stop_in(&self, rng: &mut Rng, zone: usize) -> Option<(Option<ZoneIdx>, (f64, f64), bool)> {
        let idx = ZoneIdx(u16::try_from(zone).ok()?);
        let edge = rng.f64() < EDGE_SHARE;
        let at = match &self.layout.zones.get(zone)?.kind {
            ZoneKind::Store { .. } => return None,
            ZoneKind::Near {
                scanner,
                enter_m,
                exit_m,
            } => {
                let centre = self.layout.scanners.get(usize::from(scanner.0))?.position;
                let r = if edge {
                    enter_m + (exit_m - enter_m).max(0.5) * rng.f64()
                } else {
                    enter_m * 0.8 * rng.f64().sqrt()
                };
                around(rng, centre, r)
            }
            ZoneKind::Area {
                polygon,
                exit_margin_m,
            } => {
                let centroid = polygon.centroid()?;
                if edge {
                    let edges: Vec<_> = polygon.exterior().lines().collect();
                    let line = rng.choice(&edges)?;
                    let f = rng.f64();
                    let p = (
                        line.start.x + (line.end.x - line.start.x) * f,
                        line.start.y + (line.end.y - line.start.y) * f,
                    );
                    let (dx, dy) = (p.0 - centroid.x(), p.1 - centroid.y());
                    let len = dx.hypot(dy).max(1e-6);
                    let out = exit_margin_m * rng.f64();
                    (p.0 + dx / len * out, p.1 + dy / len * out)
                } else {
                    let rect = polygon.bounding_rect()?;
                    (0..32)
                        .map(|_| {
                            (
                                rect.min().x + rect.width() * rng.f64(),
                                rect.min().y + rect.height() * rng.f64(),
                            )
                        })
                        .find(|&(x, y)| polygon.contains(&Point::new(x, y)))
                        .unwrap_or((centroid.x(), centroid.y()))
                }
            }
        };
        Some((Some(idx), at, edge))
    }

    /// The store's own devices: a shelf beacon by the last scanner, a
    /// payment terminal by the entrance, an Eddystone beacon in the middle.
    fn fixed_devices(&self, rng: &mut Rng, layout: &Layout) -> Vec<((f64, f64), Kind, Fixed)> {
        let last = layout.scanners.last().map_or(self.entrance, |s| s.position);
        #[allow(clippy::cast_precision_loss)]
        let count = layout.scanners.len().max(1) as f64;
        let middle = layout.scanners.iter().fold((0.0, 0.0), |(x, y), s| {
            (x + s.position.0 / count, y + s.position.1 / count)
        });
        let mut shelf = Sections::default();
        shelf.add(&Frame::IBeacon {
            uuid: random_array(rng),
            major: rng.u16(..),
            minor: rng.u16(..),
            measured_power: DEFAULT_P1M,
        });
        let mut terminal = Sections::default();
        terminal.mfg.push(ManufacturerData {
            company: 0x0059,
            data: random_payload(rng, 8),
        });
        terminal.uuids.push(Uuid128::from_u16(0x180A));
        terminal.name = Some("POS-Terminal".into());
        terminal.tx_power = Some(0);
        vec![
            (
                around(rng, last, 1.5),
                Kind::Static(Box::new(shelf)),
                Fixed {
                    addr: static_random_address(rng),
                    interval: 1000,
                },
            ),
            (
                around(rng, self.entrance, 2.0),
                Kind::Static(Box::new(terminal)),
                Fixed {
                    addr: BdAddr(random_array(rng)),
                    interval: 500,
                },
            ),
            (
                around(rng, middle, 1.0),
                Kind::EddystoneTag,
                Fixed {
                    addr: static_random_address(rng),
                    interval: 700,
                },
            ),
        ]
    }
}

/// A point `r` metres from `centre` in a random direction.
fn around(rng: &mut Rng, centre: (f64, f64), r: f64) -> (f64, f64) {
    let a = TAU * rng.f64();
    (centre.0 + r * a.cos(), centre.1 + r * a.sin())
}

/// The RSSI `scanner` reports for an advertisement from `at`, if it hears it.
fn hear(
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
fn gauss(rng: &mut Rng) -> f64 {
    let u1 = 1.0 - rng.f64(); // (0, 1]: ln stays finite
    let u2 = rng.f64();
    (-2.0 * u1.ln()).sqrt() * (TAU * u2).cos()
}

/// An event in the simulation's queue; `seq` breaks ties in scheduling order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Due {
    at: i64,
    seq: u64,
    device: usize,
    what: What,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum What {
    Advert,
    Joined,
    Left,
}

#[derive(Clone, Copy, Debug)]
enum Carrier {
    Fixed((f64, f64)),
    Shopper(usize),
}

/// The data sections of an advertisement.
#[derive(Clone, Debug, Default, PartialEq)]
struct Sections {
    mfg: SmallVec<[ManufacturerData; 1]>,
    svc: SmallVec<[ServiceData; 1]>,
    uuids: SmallVec<[Uuid128; 1]>,
    tx_power: Option<i8>,
    name: Option<Box<str>>,
}

impl Sections {
    /// Adds a beacon frame, laid out by `core::advert`.
    fn add(&mut self, frame: &Frame) {
        match frame.encode() {
            Some(Section::Manufacturer(m)) => self.mfg.push(m),
            Some(Section::Service(d)) => {
                self.uuids.push(d.uuid);
                self.svc.push(d);
            }
            None => {}
        }
    }

    fn fill(&self, s: &mut Sighting) {
        s.manufacturer_data.clone_from(&self.mfg);
        s.service_data.clone_from(&self.svc);
        s.service_uuids.clone_from(&self.uuids);
        s.tx_power = self.tx_power;
        s.name.clone_from(&self.name);
    }
}

/// What a device advertises.
#[derive(Clone, Debug)]
enum Kind {
    /// An opted-in customer's phone showing one of their identities.
    Identity(Identity),
    /// Apple continuity messages, new with every address.
    Chatter(u8),
    /// The same sections every time (other apps' iBeacons, Fast Pair,
    /// Swift Pair, wearables).
    Static(Box<Sections>),
    /// An Eddystone tag interleaving URL and TLM frames.
    EddystoneTag,
    /// Truncated or nonsensical frames, different every time.
    Junk,
}

/// The address and interval of one of the store's own devices.
#[derive(Clone, Copy, Debug)]
struct Fixed {
    addr: BdAddr,
    interval: i64,
}

struct Device {
    rng: Rng,
    carrier: Carrier,
    from: i64,
    until: i64,
    interval: i64,
    addr: BdAddr,
    next_rotation: Option<i64>,
    /// True RSSI at 1 m, dBm.
    p1m: f64,
    kind: Kind,
    sections: Sections,
    adv_count: u32,
    cursor: usize,
}

impl Device {
    /// Prepares the sections of an advertisement at `at`.
    fn advertise(&mut self, at: i64) {
        self.adv_count = self.adv_count.wrapping_add(1);
        if let Some(next) = self.next_rotation {
            if at >= next {
                self.addr = resolvable_address(&mut self.rng);
                let jitter = self.rng.i64(-60_000..=60_000);
                self.next_rotation = Some(next + ADDRESS_ROTATION_MS + jitter);
                if let Kind::Chatter(_) = self.kind {
                    self.refresh_sections();
                }
            }
        }
        match self.kind {
            Kind::Junk => self.sections = junk(&mut self.rng),
            Kind::EddystoneTag => self.eddystone_frame(at),
            Kind::Identity(_) | Kind::Chatter(_) | Kind::Static(_) => {}
        }
    }

    /// The URL and TLM frames alternate, as Eddystone beacons send them.
    fn eddystone_frame(&mut self, at: i64) {
        #[allow(clippy::cast_possible_truncation)]
        let ranging = (self.p1m as i8).saturating_add(41);
        let frame = if self.adv_count % 2 == 0 {
            Frame::EddystoneUrl {
                ranging,
                url: "https://www.example.com/".into(),
            }
        } else {
            let uptime_ds = u32::try_from((at - self.from).max(0) / 100).unwrap_or(u32::MAX);
            Frame::EddystoneTlm {
                battery_mv: 3000,
                temperature: Some(23.5),
                adv_count: self.adv_count,
                uptime_ds,
            }
        };
        self.sections = Sections::default();
        self.sections.add(&frame);
    }

    fn refresh_sections(&mut self) {
        #[allow(clippy::cast_possible_truncation)]
        let p1m = self.p1m as i8;
        self.sections = match &self.kind {
            Kind::Identity(identity) => identity_sections(identity, p1m),
            Kind::Chatter(kind) => continuity(&mut self.rng, *kind),
            Kind::Static(s) => (**s).clone(),
            Kind::EddystoneTag | Kind::Junk => Sections::default(),
        };
    }
}

/// The true RSSI at 1 m: what a beacon frame claims, else about −59 dBm.
fn kind_p1m(kind: &Kind, rng: &mut Rng) -> i8 {
    match kind {
        Kind::Identity(Identity::Mac(_)) => DEFAULT_P1M,
        Kind::Identity(_) | Kind::Chatter(_) | Kind::EddystoneTag | Kind::Junk => rng.i8(-62..=-56),
        Kind::Static(s) => s
            .mfg
            .iter()
            .find_map(|m| match m.data.as_slice() {
                [0x02, 0x15, .., p] if m.company == APPLE && m.data.len() == 23 => {
                    Some(i8::from_ne_bytes([*p]))
                }
                _ => None,
            })
            .unwrap_or(DEFAULT_P1M),
    }
}

/// The sections an opted-in phone advertises for `identity`. A `Mac`
/// identity has none: the address itself is the identity.
fn identity_sections(identity: &Identity, p1m: i8) -> Sections {
    let mut s = Sections::default();
    match *identity {
        Identity::IBeacon { uuid, major, minor } => s.add(&Frame::IBeacon {
            uuid,
            major,
            minor,
            measured_power: p1m,
        }),
        Identity::AltBeacon(id) => s.add(&Frame::AltBeacon {
            company: 0x0118,
            id,
            reference_rssi: p1m,
            reserved: 0,
        }),
        Identity::EddystoneUid {
            namespace,
            instance,
        } => s.add(&Frame::EddystoneUid {
            ranging: p1m.saturating_add(41),
            namespace,
            instance,
        }),
        Identity::Mac(_) => {}
    }
    s
}

/// What a bystander's phone or gadget advertises.
fn noise_kind(rng: &mut Rng) -> Kind {
    let u = rng.f64();
    let mut s = Sections::default();
    if u < 0.50 {
        return Kind::Chatter(rng.u8(..));
    } else if u < 0.62 {
        // Google Fast Pair: a 3-byte model id under 0xFE2C.
        s.svc.push(ServiceData {
            uuid: Uuid128::from_u16(0xFE2C),
            data: random_payload(rng, 3),
        });
        s.uuids.push(Uuid128::from_u16(0xFE2C));
    } else if u < 0.70 {
        // Microsoft Swift Pair / CDP beacon under company 6.
        let mut data = Payload::from_slice(&[0x01, 0x09, 0x20, 0x02]);
        data.extend(random_payload(rng, 20));
        s.mfg.push(ManufacturerData { company: 6, data });
    } else if u < 0.80 {
        // Another app's iBeacon, with a UUID nobody here enrolled.
        let p1m = rng.i8(-62..=-56);
        s.add(&Frame::IBeacon {
            uuid: random_array(rng),
            major: rng.u16(..),
            minor: rng.u16(..),
            measured_power: p1m,
        });
    } else if u < 0.86 {
        return Kind::EddystoneTag;
    } else if u < 0.93 {
        // A wearable: a name, a service list and a TX power level.
        const NAMES: [&str; 4] = ["Charge 6", "Galaxy Watch", "JBL Flip 6", "HRM-Pro"];
        s.name = rng.choice(NAMES).map(Box::from);
        s.uuids.push(Uuid128::from_u16(0x180D));
        s.uuids.push(Uuid128::from_u16(0x180F));
        s.tx_power = Some(rng.i8(-20..=4));
    } else {
        return Kind::Junk;
    }
    Kind::Static(Box::new(s))
}

/// Apple continuity messages (Nearby Info, Handoff, Find My, proximity
/// pairing, Nearby Action): never `02 15`, so never an iBeacon.
fn continuity(rng: &mut Rng, kind: u8) -> Sections {
    let (tag, len) = match kind % 5 {
        0 => (0x10, 5),
        1 => (0x0C, 14),
        2 => (0x12, 25),
        3 => (0x07, 25),
        _ => (0x0F, 5),
    };
    let mut data = Payload::from_slice(&[tag, len]);
    data.extend(random_payload(rng, usize::from(len)));
    let mut s = Sections::default();
    s.mfg.push(ManufacturerData {
        company: APPLE,
        data,
    });
    s
}

/// A broken advertisement: truncated beacon frames, an unknown Eddystone
/// type, a reserved company id with random bytes.
fn junk(rng: &mut Rng) -> Sections {
    let mut s = Sections::default();
    match rng.u8(0..4) {
        0 => {
            let mut data = Payload::from_slice(&[0x02, 0x15]);
            let n = rng.usize(0..=19);
            data.extend(random_payload(rng, n));
            s.mfg.push(ManufacturerData {
                company: APPLE,
                data,
            });
        }
        1 => {
            let mut data = Payload::from_slice(&[0xBE, 0xAC]);
            let n = rng.usize(0..=20);
            data.extend(random_payload(rng, n));
            s.mfg.push(ManufacturerData {
                company: rng.u16(..),
                data,
            });
        }
        2 => {
            let mut data = Payload::from_slice(&[rng.choice([0x00, 0x40, 0x50]).unwrap_or(0x40)]);
            let n = rng.usize(0..=12);
            data.extend(random_payload(rng, n));
            s.svc.push(ServiceData {
                uuid: Uuid128::EDDYSTONE,
                data,
            });
        }
        _ => {
            let n = rng.usize(0..=27);
            s.mfg.push(ManufacturerData {
                company: 0xFFFF,
                data: random_payload(rng, n),
            });
        }
    }
    s
}

fn random_payload(rng: &mut Rng, n: usize) -> Payload {
    (0..n).map(|_| rng.u8(..)).collect()
}

fn random_array<const N: usize>(rng: &mut Rng) -> [u8; N] {
    let mut out = [0u8; N];
    rng.fill(&mut out);
    out
}

/// A resolvable private address: the two most significant bits are `01`.
fn resolvable_address(rng: &mut Rng) -> BdAddr {
    let mut a: [u8; 6] = random_array(rng);
    a[0] = (a[0] & 0x3F) | 0x40;
    BdAddr(a)
}

/// A static random address: the two most significant bits are `11`.
fn static_random_address(rng: &mut Rng) -> BdAddr {
    let mut a: [u8; 6] = random_array(rng);
    a[0] |= 0xC0;
    BdAddr(a)
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
        l.zones.push(zone(
            "cafe",
            ZoneKind::Area {
                polygon: polygon![(x: 16.0, y: 11.0), (x: 24.0, y: 11.0), (x: 24.0, y: 19.0), (x: 16.0, y: 19.0)],
                exit_margin_m: 1.0,
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

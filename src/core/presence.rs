//! Presence tracking: RSSI smoothing per (customer, scanner), distance and
//! position estimates, and a state machine per (customer, zone) with
//! hysteresis, minimum dwell and absence timeout.
//!
//! Sans-IO in the quinn-proto manner: [`Tracker::observe_ble`],
//! [`Tracker::observe_wifi`] and [`Tracker::handle_timeout`] take `now` and
//! append [`ZoneEvent`]s; [`Tracker::poll_timeout`] says when the shell must
//! call back. It only ever sees customers who were identified; unknown
//! devices never reach it.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use smallvec::SmallVec;

use super::identity::CustomerKey;
use super::types::{Rssi, ScannerIdx, Timestamp, WifiKind};
use super::zones::{
    Layout, Membership, ZoneIdx, ZoneKind, area_membership, near_membership, position_weight,
};

/// What happened to a customer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// Arrived in the store.
    Arrived,
    /// Entered a zone.
    Entered(ZoneIdx),
    /// Has been in a zone (the store included) for the zone's dwell time.
    Dwelled(ZoneIdx, Duration),
    /// Left a zone.
    Exited(ZoneIdx),
    /// Left the store.
    Left,
}

impl EventKind {
    /// The name used in output (`arrived`, `entered`, …).
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::Arrived => "arrived",
            EventKind::Entered(_) => "entered",
            EventKind::Dwelled(..) => "dwelled",
            EventKind::Exited(_) => "exited",
            EventKind::Left => "left",
        }
    }

    /// The zone the event is about (the store for arrived/left).
    #[must_use]
    pub fn zone(&self) -> ZoneIdx {
        match *self {
            EventKind::Arrived | EventKind::Left => ZoneIdx::STORE,
            EventKind::Entered(z) | EventKind::Dwelled(z, _) | EventKind::Exited(z) => z,
        }
    }
}

/// A presence event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ZoneEvent {
    /// When.
    pub at: Timestamp,
    /// Who.
    pub customer: CustomerKey,
    /// What.
    pub kind: EventKind,
}

/// Counts of tracker activity.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PresenceStats {
    /// Observations fed in.
    pub observations: u64,
    /// Events emitted.
    pub events: u64,
    /// Customers currently tracked.
    pub tracked: u64,
}

const MAX_WINDOW: usize = 8;

/// Recent RSSI samples from one scanner, filtered by median: one multipath
/// spike or body-blocked dip in a window of five does not move it.
#[derive(Clone, Debug)]
struct Link {
    scanner: ScannerIdx,
    samples: [(Timestamp, i16); MAX_WINDOW],
    len: u8,
    next: u8,
    measured_power: i8,
    last_heard: Timestamp,
    /// `log10` of the distance from the median of the fresh samples,
    /// updated with every sample.
    log_d: f64,
    /// This link's weight in the position estimate (from `log_d`).
    weight: f64,
}

impl Link {
    fn new(scanner: ScannerIdx) -> Link {
        Link {
            scanner,
            samples: [(Timestamp::MIN, 0); MAX_WINDOW],
            len: 0,
            next: 0,
            measured_power: -59,
            last_heard: Timestamp::MIN,
            log_d: f64::INFINITY,
            weight: 0.0,
        }
    }

    fn push(&mut self, at: Timestamp, rssi: i16, layout: &Layout) {
        self.push_sample(at, rssi, layout.radio.window);
        let fresh_after = self.last_heard.saturating_sub(layout.radio.signal_timeout);
        if let Some(m) = self.median(fresh_after) {
            self.log_d = layout.log_distance(self.scanner, m, self.measured_power);
            self.weight = position_weight(self.log_d);
        }
    }

    fn push_sample(&mut self, at: Timestamp, rssi: i16, window: usize) {
        let window = window.clamp(1, MAX_WINDOW);
        self.samples[usize::from(self.next)] = (at, rssi);
        self.next = u8::try_from((usize::from(self.next) + 1) % window).unwrap_or(0);
        self.len = u8::try_from((usize::from(self.len) + 1).min(window)).unwrap_or(1);
        // Recordings and merged sources may step back a little in time; the
        // link was still heard at its latest time.
        self.last_heard = self.last_heard.max(at);
    }

    /// Median of the samples heard since `fresh_after`.
    fn median(&self, fresh_after: Timestamp) -> Option<f64> {
        let mut v: SmallVec<[i16; MAX_WINDOW]> = self.samples[..usize::from(self.len)]
            .iter()
            .filter(|(t, _)| *t > fresh_after)
            .map(|(_, r)| *r)
            .collect();
        Rssi::median(&mut v)
    }
}

/// One (customer, zone) state machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Absent,
    /// Inside since `since`, not yet for the minimum dwell.
    Entering {
        since: Timestamp,
    },
    /// In the zone since `since`.
    Present {
        since: Timestamp,
        dwelled: bool,
    },
    /// Was present since `since`; outside (or unheard) since `outside_since`.
    Leaving {
        since: Timestamp,
        dwelled: bool,
        outside_since: Timestamp,
    },
}

impl State {
    fn is_in(self) -> bool {
        matches!(self, State::Present { .. } | State::Leaving { .. })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Transition {
    Entered,
    Dwelled(Duration),
    Exited,
}

#[derive(Clone, Debug)]
struct Track {
    links: SmallVec<[Link; 3]>,
    wifi: bool,
    zones: SmallVec<[State; 8]>,
    scheduled: Option<Timestamp>,
}

/// Per-zone thresholds in the tracker's terms, computed once from the
/// layout: `log10` distances, and each area's bounding box grown by its
/// exit margin.
#[derive(Clone, Debug)]
enum ZoneCache {
    Store {
        log_range: Option<f64>,
    },
    Near {
        scanner: ScannerIdx,
        log_enter: f64,
        log_exit: f64,
    },
    Area {
        bounds: (f64, f64, f64, f64),
    },
}

impl ZoneCache {
    fn new(kind: &ZoneKind) -> ZoneCache {
        match kind {
            ZoneKind::Store { range_m } => ZoneCache::Store {
                log_range: range_m.map(f64::log10),
            },
            ZoneKind::Near {
                scanner,
                enter_m,
                exit_m,
            } => ZoneCache::Near {
                scanner: *scanner,
                log_enter: enter_m.log10(),
                log_exit: exit_m.log10(),
            },
            ZoneKind::Area {
                polygon,
                exit_margin_m,
            } => {
                let m = exit_margin_m.max(0.0);
                let bounds = geo::BoundingRect::bounding_rect(polygon).map_or(
                    (
                        f64::INFINITY,
                        f64::INFINITY,
                        f64::NEG_INFINITY,
                        f64::NEG_INFINITY,
                    ),
                    |r| (r.min().x - m, r.min().y - m, r.max().x + m, r.max().y + m),
                );
                ZoneCache::Area { bounds }
            }
        }
    }
}

/// Tracks opted-in customers through the store's zones.
pub struct Tracker {
    layout: Arc<Layout>,
    cache: Vec<ZoneCache>,
    tracks: HashMap<CustomerKey, Track, foldhash::fast::RandomState>,
    timers: BinaryHeap<Reverse<(Timestamp, CustomerKey)>>,
    stats: PresenceStats,
}

impl Tracker {
    /// A tracker for this floor plan.
    #[must_use]
    pub fn new(layout: Arc<Layout>) -> Tracker {
        Tracker {
            cache: layout
                .zones
                .iter()
                .map(|z| ZoneCache::new(&z.kind))
                .collect(),
            layout,
            tracks: HashMap::default(),
            timers: BinaryHeap::new(),
            stats: PresenceStats::default(),
        }
    }

    /// The floor plan.
    #[must_use]
    pub fn layout(&self) -> &Arc<Layout> {
        &self.layout
    }

    /// Counts so far.
    #[must_use]
    pub fn stats(&self) -> PresenceStats {
        PresenceStats {
            tracked: self.tracks.len() as u64,
            ..self.stats
        }
    }

    /// Feeds one BLE sighting of `customer` by `scanner`. `measured_power` is
    /// the device's calibrated RSSI at 1 m (see [`Layout::measured_power`]).
    pub fn observe_ble(
        &mut self,
        now: Timestamp,
        customer: CustomerKey,
        scanner: ScannerIdx,
        rssi: Rssi,
        measured_power: i8,
        out: &mut Vec<ZoneEvent>,
    ) {
        self.stats.observations += 1;
        let layout = self.layout.clone();
        let track = self.track(customer);
        let link = match track.links.iter().position(|l| l.scanner == scanner) {
            Some(i) => &mut track.links[i],
            None => {
                track.links.push(Link::new(scanner));
                let last = track.links.len() - 1;
                &mut track.links[last]
            }
        };
        link.measured_power = measured_power;
        link.push(now, rssi.0, &layout);
        self.update(now, customer, true, out);
    }

    /// Feeds one Wi-Fi presence report of `customer`.
    pub fn observe_wifi(
        &mut self,
        now: Timestamp,
        customer: CustomerKey,
        kind: WifiKind,
        out: &mut Vec<ZoneEvent>,
    ) {
        self.stats.observations += 1;
        if kind == WifiKind::Left && !self.tracks.contains_key(&customer) {
            return;
        }
        self.track(customer).wifi = kind != WifiKind::Left;
        self.update(now, customer, true, out);
    }

    /// The next time [`Tracker::handle_timeout`] has work (an absence
    /// timeout, a dwell time, a signal going stale).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        self.timers.peek().map(|Reverse((t, _))| *t)
    }

    /// Runs every timer due at or before `now`.
    pub fn handle_timeout(&mut self, now: Timestamp, out: &mut Vec<ZoneEvent>) {
        while let Some(&Reverse((t, key))) = self.timers.peek() {
            if t > now {
                break;
            }
            self.timers.pop();
            let Some(track) = self.tracks.get_mut(&key) else {
                continue;
            };
            if track.scheduled != Some(t) {
                continue; // superseded by an earlier timer
            }
            track.scheduled = None;
            self.update(now, key, false, out);
        }
    }

    /// Forgets a customer at once (opt-out, erasure), without events.
    pub fn forget(&mut self, customer: CustomerKey) {
        self.tracks.remove(&customer);
    }

    /// The zones a customer is currently in (present or leaving), store first.
    #[must_use]
    pub fn zones_of(&self, customer: CustomerKey) -> Vec<ZoneIdx> {
        self.tracks.get(&customer).map_or_else(Vec::new, |t| {
            t.zones
                .iter()
                .enumerate()
                .filter(|(_, s)| s.is_in())
                .filter_map(|(i, _)| u16::try_from(i).ok().map(ZoneIdx))
                .collect()
        })
    }

    fn track(&mut self, customer: CustomerKey) -> &mut Track {
        let zones = self.layout.zones.len();
        self.tracks.entry(customer).or_insert_with(|| Track {
            links: SmallVec::new(),
            wifi: false,
            zones: std::iter::repeat_n(State::Absent, zones).collect(),
            scheduled: None,
        })
    }

    /// Re-evaluates one customer's zones at `now`, then reschedules or drops
    /// the track. `observed` is false when a timer, not a signal, asks.
    fn update(
        &mut self,
        now: Timestamp,
        customer: CustomerKey,
        observed: bool,
        out: &mut Vec<ZoneEvent>,
    ) {
        let layout = &*self.layout;
        let Some(track) = self.tracks.get_mut(&customer) else {
            return;
        };
        let before = out.len();
        evaluate(layout, &self.cache, track, customer, now, observed, out);
        self.stats.events += (out.len() - before) as u64;

        let idle = !track.wifi
            && track.zones.iter().all(|s| *s == State::Absent)
            && track
                .links
                .iter()
                .all(|l| l.last_heard.saturating_add(layout.radio.signal_timeout) <= now);
        if idle {
            self.tracks.remove(&customer);
            return;
        }
        if let Some(d) = deadline(layout, track, now)
            && track.scheduled.is_none_or(|s| d < s)
        {
            track.scheduled = Some(d);
            self.timers.push(Reverse((d, customer)));
        }
    }
}

/// Membership of every zone at `now`, from the fresh links.
fn evaluate(
    layout: &Layout,
    cache: &[ZoneCache],
    track: &mut Track,
    customer: CustomerKey,
    now: Timestamp,
    observed: bool,
    out: &mut Vec<ZoneEvent>,
) {
    let fresh_after = now.saturating_sub(layout.radio.signal_timeout);
    track.links.retain(|l| l.last_heard > fresh_after);
    let heard: SmallVec<[(ScannerIdx, f64, f64); 4]> = track
        .links
        .iter()
        .filter(|l| l.log_d.is_finite())
        .map(|l| (l.scanner, l.log_d, l.weight))
        .collect();
    let mut position = None;
    let mut position_done = false;
    let wifi = track.wifi;
    let mut membership = |i: usize| -> Membership {
        match (&layout.zones[i].kind, &cache[i]) {
            (_, ZoneCache::Store { log_range }) => {
                let in_range = heard
                    .iter()
                    .any(|(_, d, _)| log_range.is_none_or(|r| *d <= r));
                if wifi || in_range {
                    Membership::Inside
                } else {
                    Membership::Outside
                }
            }
            (
                _,
                ZoneCache::Near {
                    scanner,
                    log_enter,
                    log_exit,
                },
            ) => heard
                .iter()
                .find(|(s, _, _)| s == scanner)
                .map_or(Membership::Outside, |(_, d, _)| {
                    near_membership(*d, *log_enter, *log_exit)
                }),
            (
                ZoneKind::Area {
                    polygon,
                    exit_margin_m,
                },
                ZoneCache::Area { bounds },
            ) => {
                if !position_done {
                    position = layout.position_weighted(heard.iter().map(|(s, _, w)| (*s, *w)));
                    position_done = true;
                }
                position.map_or(Membership::Outside, |p| {
                    // Most positions are nowhere near a given area: a box
                    // test spares the polygon arithmetic.
                    if p.0 < bounds.0 || p.1 < bounds.1 || p.0 > bounds.2 || p.1 > bounds.3 {
                        Membership::Outside
                    } else {
                        area_membership(polygon, *exit_margin_m, p)
                    }
                })
            }
            (_, ZoneCache::Area { .. }) => Membership::Outside,
        }
    };
    let event = |kind| ZoneEvent {
        at: now,
        customer,
        kind,
    };

    let store = &layout.zones[0];
    let store_tr = step(&mut track.zones[0], store, membership(0), now, observed);
    match store_tr {
        Some(Transition::Entered) => out.push(event(EventKind::Arrived)),
        Some(Transition::Dwelled(d)) => out.push(event(EventKind::Dwelled(ZoneIdx::STORE, d))),
        _ => {}
    }
    let in_store = track.zones[0].is_in();
    for (i, zone) in layout.zones.iter().enumerate().skip(1) {
        let idx = ZoneIdx(u16::try_from(i).unwrap_or(u16::MAX));
        let state = &mut track.zones[i];
        if !in_store {
            // Leaving the store closes every zone first, so `exited` always
            // precedes `left` and no zone is entered before `arrived`.
            if state.is_in() {
                out.push(event(EventKind::Exited(idx)));
            }
            *state = State::Absent;
            continue;
        }
        match step(state, zone, membership(i), now, observed) {
            Some(Transition::Entered) => out.push(event(EventKind::Entered(idx))),
            Some(Transition::Dwelled(d)) => out.push(event(EventKind::Dwelled(idx, d))),
            Some(Transition::Exited) => out.push(event(EventKind::Exited(idx))),
            None => {}
        }
    }
    if store_tr == Some(Transition::Exited) {
        out.push(event(EventKind::Left));
    }
}

/// One zone's state machine step. Entry completes only on an observation:
/// a device heard once and then silent is never promoted by a timer.
fn step(
    state: &mut State,
    zone: &super::zones::Zone,
    m: Membership,
    now: Timestamp,
    observed: bool,
) -> Option<Transition> {
    let dwell = |since: Timestamp, dwelled: &mut bool| {
        let due = zone
            .dwell_after
            .is_some_and(|d| !*dwelled && now.since(since) >= d);
        if due {
            *dwelled = true;
            Some(Transition::Dwelled(now.since(since)))
        } else {
            None
        }
    };
    match (*state, m) {
        (State::Absent, Membership::Inside) => {
            if zone.min_dwell.is_zero() {
                *state = State::Present {
                    since: now,
                    dwelled: false,
                };
                Some(Transition::Entered)
            } else {
                *state = State::Entering { since: now };
                None
            }
        }
        (State::Absent, _) | (State::Entering { .. }, Membership::Band) => None,
        (State::Entering { since }, Membership::Inside) => {
            if observed && now.since(since) >= zone.min_dwell {
                *state = State::Present {
                    since,
                    dwelled: false,
                };
                Some(Transition::Entered)
            } else {
                None
            }
        }
        (State::Entering { .. }, Membership::Outside) => {
            *state = State::Absent;
            None
        }
        (
            State::Present { since, mut dwelled }
            | State::Leaving {
                since, mut dwelled, ..
            },
            Membership::Inside | Membership::Band,
        ) => {
            let t = dwell(since, &mut dwelled);
            *state = State::Present { since, dwelled };
            t
        }
        (State::Present { since, dwelled }, Membership::Outside) => {
            if zone.exit_after.is_zero() {
                *state = State::Absent;
                Some(Transition::Exited)
            } else {
                *state = State::Leaving {
                    since,
                    dwelled,
                    outside_since: now,
                };
                None
            }
        }
        (State::Leaving { outside_since, .. }, Membership::Outside) => {
            if now.since(outside_since) >= zone.exit_after {
                *state = State::Absent;
                Some(Transition::Exited)
            } else {
                None
            }
        }
    }
}

/// When this track next needs a look without new observations.
fn deadline(layout: &Layout, track: &Track, now: Timestamp) -> Option<Timestamp> {
    let links = track
        .links
        .iter()
        .map(|l| l.last_heard.saturating_add(layout.radio.signal_timeout));
    let zones = track
        .zones
        .iter()
        .zip(&layout.zones)
        .filter_map(|(s, z)| match *s {
            State::Present {
                since,
                dwelled: false,
            } => z.dwell_after.map(|d| since.saturating_add(d)),
            State::Leaving { outside_since, .. } => {
                Some(outside_since.saturating_add(z.exit_after))
            }
            _ => None,
        });
    links.chain(zones).filter(|t| *t > now).min()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::zones::{Scanner, Zone};
    use geo::polygon;

    const C: CustomerKey = CustomerKey(1);

    /// Door scanner at (0,0), till scanner at (20,0); store zone, a `near`
    /// zone at the door (enter 2 m, exit 4 m) and an `area` around the till.
    fn layout() -> Arc<Layout> {
        let mut l = Layout::single("Test", "door");
        l.scanners.push(Scanner {
            id: "till".into(),
            position: (20.0, 0.0),
            rssi_offset: 0.0,
            path_loss_exponent: 2.0,
        });
        l.zones[0].min_dwell = Duration::from_secs(2);
        l.zones[0].exit_after = Duration::from_secs(30);
        l.zones.push(Zone {
            id: "entrance".into(),
            kind: ZoneKind::Near {
                scanner: ScannerIdx(0),
                enter_m: 2.0,
                exit_m: 4.0,
            },
            min_dwell: Duration::from_secs(3),
            exit_after: Duration::from_secs(5),
            dwell_after: Some(Duration::from_secs(20)),
        });
        l.zones.push(Zone {
            id: "till".into(),
            kind: ZoneKind::Area {
                polygon: polygon![(x: 15.0, y: -3.0), (x: 25.0, y: -3.0), (x: 25.0, y: 3.0), (x: 15.0, y: 3.0)],
                exit_margin_m: 1.0,
            },
            min_dwell: Duration::ZERO,
            exit_after: Duration::from_secs(5),
            dwell_after: None,
        });
        Arc::new(l)
    }

    /// RSSI that the model maps to `d` metres (P1m -59, n 2).
    fn at_m(d: f64) -> Rssi {
        #[allow(clippy::cast_possible_truncation)]
        Rssi((-59.0 - 20.0 * d.log10()).round() as i16)
    }

    /// Feeds `(seconds, scanner, metres)` sightings, running timers in
    /// between and up to `until`, and returns `(seconds, event)` pairs.
    fn check(l: &Arc<Layout>, input: &[(f64, u16, f64)], until: f64) -> Vec<(f64, String)> {
        let mut t = Tracker::new(l.clone());
        let mut out = Vec::new();
        let ts = |s: f64| Timestamp::from_secs_f64(s).unwrap();
        for &(s, scanner, d) in input {
            while let Some(due) = t.poll_timeout().filter(|due| *due <= ts(s)) {
                t.handle_timeout(due, &mut out);
            }
            t.observe_ble(ts(s), C, ScannerIdx(scanner), at_m(d), -59, &mut out);
        }
        while let Some(due) = t.poll_timeout().filter(|due| *due <= ts(until)) {
            t.handle_timeout(due, &mut out);
        }
        out.iter()
            .map(|e| {
                let name = match e.kind {
                    EventKind::Dwelled(z, d) => {
                        format!("dwelled {} {}s", l.zone(z).id, d.as_secs())
                    }
                    k => format!("{} {}", k.name(), l.zone(k.zone()).id),
                };
                (e.at.as_secs_f64(), name)
            })
            .collect()
    }

    fn every(
        from: f64,
        to: f64,
        step: f64,
        scanner: u16,
        d: impl Fn(f64) -> f64,
    ) -> Vec<(f64, u16, f64)> {
        let mut v = Vec::new();
        let mut s = from;
        while s <= to + 1e-9 {
            v.push((s, scanner, d(s)));
            s += step;
        }
        v
    }

    #[test]
    fn walk_in_linger_at_door_and_leave() {
        let l = layout();
        // Heard at 10 m from t=0, walks to 1 m at t=10, stays until t=40, gone.
        let input = every(0.0, 40.0, 1.0, 0, |s| if s < 10.0 { 10.0 } else { 1.0 });
        let ev = check(&l, &input, 200.0);
        assert_eq!(
            ev,
            vec![
                (2.0, "arrived store".into()),
                // Inside from t=10 (median of 5 catches up at t=12), 3 s minimum dwell.
                (15.0, "entered entrance".into()),
                (32.0, "dwelled entrance 20s".into()),
                // Last heard at 40; the signal is stale at 50; exit 5 s later.
                (55.0, "exited entrance".into()),
                (80.0, "left store".into()),
            ]
        );
    }

    #[test]
    fn lingering_at_the_zone_edge_does_not_flap() {
        let l = layout();
        // Walks in to 1.5 m, then hovers between 2.5 and 3.8 m (inside the
        // hysteresis band) with noise for five minutes.
        let mut input = every(0.0, 10.0, 1.0, 0, |_| 1.5);
        input.extend(every(11.0, 300.0, 0.5, 0, |s| {
            2.5 + 1.3 * ((s * 7.3).sin() * 0.5 + 0.5)
        }));
        let ev = check(&l, &input, 300.0);
        let names: Vec<&str> = ev.iter().map(|(_, n)| n.as_str()).collect();
        assert_eq!(
            names,
            ["arrived store", "entered entrance", "dwelled entrance 20s"]
        );
    }

    #[test]
    fn a_single_outlier_does_not_enter_or_exit() {
        let l = layout();
        // At 8 m, one spike reading as 0.5 m: no entry.
        let mut input = every(0.0, 20.0, 1.0, 0, |_| 8.0);
        input[10].2 = 0.5;
        let ev = check(&l, &input, 20.0);
        assert_eq!(ev, vec![(2.0, "arrived store".to_owned())]);
        // Inside at 1 m, one dip reading as 30 m: no exit.
        let mut input = every(0.0, 30.0, 1.0, 0, |_| 1.0);
        input[20].2 = 30.0;
        let ev = check(&l, &input, 30.0);
        let names: Vec<&str> = ev.iter().map(|(_, n)| n.as_str()).collect();
        assert_eq!(
            names,
            ["arrived store", "entered entrance", "dwelled entrance 20s"]
        );
    }

    #[test]
    fn area_zone_from_two_scanners_and_single_scanner_fallback() {
        let l = layout();
        // Heard only by the till scanner: position falls back to the till → inside.
        let input = every(0.0, 10.0, 1.0, 1, |_| 3.0);
        let ev = check(&l, &input, 10.0);
        assert_eq!(
            ev,
            vec![(2.0, "arrived store".into()), (2.0, "entered till".into())]
        );

        // Heard by both, much nearer the door: position near the door → not in the till area.
        let mut input = Vec::new();
        for s in 0..10 {
            input.push((f64::from(s), 0, 1.0));
            input.push((f64::from(s) + 0.5, 1, 19.0));
        }
        let ev = check(&l, &input, 10.0);
        let names: Vec<&str> = ev.iter().map(|(_, n)| n.as_str()).collect();
        assert_eq!(names, ["arrived store", "entered entrance"]);
    }

    #[test]
    fn short_visit_below_minimum_dwell_emits_nothing() {
        let l = layout();
        let ev = check(&l, &[(0.0, 0, 5.0), (1.0, 0, 5.0)], 100.0);
        assert!(ev.is_empty(), "{ev:?}");
    }

    #[test]
    fn wifi_keeps_a_customer_in_the_store_until_left() {
        let l = layout();
        let mut t = Tracker::new(l.clone());
        let mut out = Vec::new();
        t.observe_wifi(Timestamp::from_secs(0), C, WifiKind::Joined, &mut out);
        t.observe_wifi(Timestamp::from_secs(3), C, WifiKind::Seen, &mut out);
        assert_eq!(
            out.iter()
                .map(|e| (e.at.as_secs(), e.kind))
                .collect::<Vec<_>>(),
            [(3, EventKind::Arrived)]
        );
        assert_eq!(t.poll_timeout(), None);
        t.observe_wifi(Timestamp::from_secs(600), C, WifiKind::Left, &mut out);
        t.handle_timeout(Timestamp::from_secs(629), &mut out);
        assert_eq!(out.len(), 1);
        t.handle_timeout(Timestamp::from_secs(630), &mut out);
        assert_eq!(
            out.last().map(|e| (e.at.as_secs(), e.kind)),
            Some((630, EventKind::Left))
        );
        assert_eq!(t.stats().tracked, 0);
    }

    #[test]
    fn a_late_sample_does_not_move_last_heard_back() {
        let mut link = Link::new(ScannerIdx(0));
        link.push_sample(Timestamp::from_secs(10), -60, 5);
        link.push_sample(Timestamp::from_secs(7), -61, 5);
        assert_eq!(link.last_heard, Timestamp::from_secs(10));
    }

    #[test]
    fn forget_drops_state_without_events() {
        let l = layout();
        let mut t = Tracker::new(l);
        let mut out = Vec::new();
        for s in 0..5 {
            t.observe_ble(
                Timestamp::from_secs(s),
                C,
                ScannerIdx(0),
                at_m(1.0),
                -59,
                &mut out,
            );
        }
        assert_eq!(t.zones_of(C), vec![ZoneIdx::STORE]);
        t.forget(C);
        let n = out.len();
        t.handle_timeout(Timestamp::from_secs(1000), &mut out);
        assert_eq!(out.len(), n);
        assert_eq!(t.stats().tracked, 0);
    }

    proptest::proptest! {
        /// Whatever the signal does, events per zone alternate in/out, the
        /// store brackets every zone, and everything is closed at the end.
        #[test]
        fn events_are_well_nested(samples in proptest::collection::vec((0u16..2, 0.2f64..40.0, 0.1f64..20.0), 1..200)) {
            let l = layout();
            let mut input = Vec::new();
            let mut s = 0.0;
            for (scanner, d, gap) in samples {
                s += gap;
                input.push((s, scanner, d));
            }
            let ev = check(&l, &input, s + 1000.0);
            let mut inside = vec![false; l.zones.len()];
            for (_, name) in &ev {
                let (kind, zone) = name.split_once(' ').unwrap();
                let z = l.zone_index(zone.split(' ').next().unwrap()).unwrap().0 as usize;
                match kind {
                    "arrived" | "entered" => { proptest::prop_assert!(!inside[z]); if z > 0 { proptest::prop_assert!(inside[0]); } inside[z] = true; }
                    "exited" | "left" => { proptest::prop_assert!(inside[z]); inside[z] = false; if z == 0 { proptest::prop_assert!(inside.iter().all(|i| !i)); } }
                    "dwelled" => proptest::prop_assert!(inside[z]),
                    _ => unreachable!(),
                }
            }
            proptest::prop_assert!(inside.iter().all(|i| !i));
        }
    }
}

//! Presence tracking: per (customer, scanner) RSSI averaged over a short
//! window, decided on a steady beat (one tick a second by default), into a
//! state machine per (customer, zone) and one room per group of exclusive
//! areas.
//!
//! - The store zone and `near` zones are independent state machines with
//!   hysteresis, a minimum dwell and an absence timeout. Entry and exit are
//!   majority decisions over the ticks of the dwell or timeout: one stray
//!   tick neither starts nor cancels anything.
//! - The areas of a group are exclusive: `core::rooms` keeps a probability
//!   per area (and for the open floor), and a customer is in at most one
//!   area of the group. Moving between areas is one hand-over (`exited`
//!   then `entered`, same instant) once the new area leads by a clear
//!   margin, or by a smaller one for several ticks.
//! - Nothing waits on anything else: zones count while the store arrival
//!   is still pending, and the first zone is entered as soon as the
//!   arrival is.
//! - A scanner that has gone silent (nothing heard from anybody, or marked
//!   down by its source) makes the zones that depend on it *unknown*: they
//!   keep their state instead of moving the customer elsewhere.
//!
//! Sans-IO in the quinn-proto manner: [`Tracker::observe_ble`] and
//! [`Tracker::observe_wifi`] only record; [`Tracker::handle_timeout`] runs
//! the ticks and appends [`ZoneEvent`]s; [`Tracker::poll_timeout`] says
//! when the shell must call back. It only ever sees customers who were
//! identified; unknown devices never reach it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use smallvec::SmallVec;

use super::identity::CustomerKey;
use super::rooms::{Heard, Rooms};
use super::types::{Rssi, ScannerIdx, Timestamp, WifiKind};
use super::zones::{Layout, Membership, Zone, ZoneIdx, ZoneKind, near_membership};

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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PresenceStats {
    /// Observations fed in.
    pub observations: u64,
    /// Events emitted.
    pub events: u64,
    /// Customers currently tracked.
    pub tracked: u64,
    /// Tracked customers whose zone is unknown right now, because a scanner
    /// it depends on is silent.
    pub unknown: u64,
    /// Scanners silent right now.
    pub silent_scanners: u64,
}

/// A hand-over happens at once when the new area leads the current one by
/// this much probability…
const LEAD_AT_ONCE: f32 = 0.4;
/// …or when it leads by this much for `LEAD_TICKS` ticks in a row.
const LEAD_SUSTAINED: f32 = 0.2;
/// See `LEAD_SUSTAINED`.
const LEAD_TICKS: u16 = 3;
/// Ticks of samples a link keeps (the longest averaging window).
const MAX_BINS: usize = 8;

/// One (customer, scanner) link: the samples of the last few ticks, summed
/// per tick, and the mean of the last window that had any.
#[derive(Clone, Debug)]
struct Link {
    scanner: ScannerIdx,
    /// `(sum of RSSI, samples)` per tick; `bins[0]` is tick `head`.
    bins: [(i32, u16); MAX_BINS],
    head: i64,
    measured_power: i8,
    last_heard: Timestamp,
    /// Mean RSSI of the last window with samples (held while fresh).
    mean: f32,
    /// Samples in the window at the last tick (0: none, `mean` is held).
    samples: u16,
    /// Whether the last tick itself had samples.
    this_tick: bool,
}

impl Link {
    fn new(scanner: ScannerIdx) -> Link {
        Link {
            scanner,
            bins: [(0, 0); MAX_BINS],
            head: i64::MIN,
            measured_power: -59,
            last_heard: Timestamp::MIN,
            mean: f32::NAN,
            samples: 0,
            this_tick: false,
        }
    }

    /// Adds a sample heard in tick `k` (the tick that ends after it).
    fn push(&mut self, k: i64, at: Timestamp, rssi: i16) {
        if k > self.head {
            let shift = usize::try_from(k.saturating_sub(self.head)).unwrap_or(MAX_BINS);
            if shift >= MAX_BINS {
                self.bins = [(0, 0); MAX_BINS];
            } else {
                self.bins.rotate_right(shift);
                self.bins[..shift].fill((0, 0));
            }
            self.head = k;
        }
        // Recordings and merged sources may step back a little in time: a
        // late sample still counts in its own tick if that is kept.
        if let Ok(i) = usize::try_from(self.head - k)
            && let Some(bin) = self.bins.get_mut(i)
        {
            bin.0 += i32::from(rssi);
            bin.1 = bin.1.saturating_add(1);
        }
        self.last_heard = self.last_heard.max(at);
    }

    /// Recomputes the mean over ticks `k - window + 1 ..= k`.
    fn average(&mut self, k: i64, window: usize) {
        // bins[i] is tick head - i: the window is indices head - k and the
        // `window - 1` after it (the ones before are ticks still to come).
        let lo = self.head.saturating_sub(k);
        let hi = lo.saturating_add(i64::try_from(window).unwrap_or(1));
        let first = usize::try_from(lo.max(0)).unwrap_or(MAX_BINS);
        let end = usize::try_from(hi.max(0)).unwrap_or(0).min(MAX_BINS);
        let (mut sum, mut n) = (0i32, 0u32);
        for &(s, c) in self.bins.get(first..end).unwrap_or(&[]) {
            sum += s;
            n += u32::from(c);
        }
        self.samples = u16::try_from(n).unwrap_or(u16::MAX);
        if n > 0 {
            #[allow(clippy::cast_precision_loss)]
            {
                self.mean = sum as f32 / n as f32;
            }
        }
        self.this_tick = self.head == k && self.bins[0].1 > 0;
    }

    fn fresh(&self, now: Timestamp, timeout: Duration) -> bool {
        self.last_heard.saturating_add(timeout) > now
    }
}

/// One (customer, zone) state machine for the store and `near` zones; for
/// areas it mirrors the group's room (`Present` while in it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Absent,
    /// Inside since `since`, not yet for the minimum dwell; ticks counted
    /// inside and outside since then.
    Entering {
        since: Timestamp,
        inside: u16,
        outside: u16,
    },
    /// In the zone since `since`.
    Present {
        since: Timestamp,
        dwelled: bool,
    },
    /// Was present since `since`; outside since `outside_since`, with the
    /// ticks counted inside and outside since then.
    Leaving {
        since: Timestamp,
        dwelled: bool,
        outside_since: Timestamp,
        inside: u16,
        outside: u16,
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

/// Where a customer is within one group of exclusive areas.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Room {
    /// In none of the group's areas. `since`: an area has been leading
    /// since then, with the ticks counted for and against.
    Outside {
        since: Option<Timestamp>,
        inside: u16,
        outside: u16,
    },
    /// In area state `state`. `challenger`: another area leading by the
    /// sustained margin, for so many ticks. `leaving`: the open floor has
    /// been leading since then, with ticks counted for staying and leaving.
    In {
        state: usize,
        challenger: Option<(usize, u16)>,
        leaving: Option<(Timestamp, u16, u16)>,
    },
}

impl Room {
    const OUTSIDE: Room = Room::Outside {
        since: None,
        inside: 0,
        outside: 0,
    };
}

#[derive(Clone, Debug)]
struct GroupTrack {
    /// Probability per state of the group (see `core::rooms::Group`).
    p: SmallVec<[f32; 8]>,
    /// Tick of the last filter step.
    filtered: Option<i64>,
    room: Room,
}

#[derive(Clone, Debug)]
struct Track {
    links: SmallVec<[Link; 4]>,
    wifi: bool,
    /// A Wi-Fi report arrived since the last tick (evidence, like a sample).
    wifi_news: bool,
    zones: SmallVec<[State; 8]>,
    groups: SmallVec<[GroupTrack; 1]>,
    scheduled: Option<Timestamp>,
    /// A zone of this customer was held because a scanner is silent.
    unknown: bool,
}

/// Tracks opted-in customers through the store's zones.
pub struct Tracker {
    layout: Arc<Layout>,
    rooms: Rooms,
    near: Vec<(f64, f64)>,
    tick_ms: i64,
    window: usize,
    /// Per scanner: when it last heard anything at all, and whether its
    /// source says it is down.
    scanners: Vec<(Timestamp, bool)>,
    /// Which scanners were silent at tick `silent_at`.
    silent: Vec<bool>,
    silent_at: Timestamp,
    tracks: HashMap<CustomerKey, Track, foldhash::fast::RandomState>,
    /// Customers to look at, by tick (every time is a tick boundary).
    timers: BTreeMap<Timestamp, Vec<CustomerKey>>,
    /// Spare customer lists, so that a tick allocates nothing.
    spare: Vec<Vec<CustomerKey>>,
    stats: PresenceStats,
}

impl Tracker {
    /// A tracker for this floor plan.
    #[must_use]
    pub fn new(layout: Arc<Layout>) -> Tracker {
        Tracker {
            rooms: Rooms::new(&layout),
            near: layout
                .zones
                .iter()
                .map(|z| match z.kind {
                    ZoneKind::Near {
                        enter_m, exit_m, ..
                    } => (enter_m.log10(), exit_m.log10()),
                    _ => (f64::NAN, f64::NAN),
                })
                .collect(),
            tick_ms: i64::try_from(layout.radio.tick.as_millis())
                .unwrap_or(1000)
                .max(1),
            window: layout.radio.window_ticks(),
            scanners: vec![(Timestamp::MIN, false); layout.scanners.len()],
            silent: Vec::new(),
            silent_at: Timestamp::MIN,
            layout,
            tracks: HashMap::default(),
            timers: BTreeMap::new(),
            spare: Vec::new(),
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
            unknown: self.tracks.values().filter(|t| t.unknown).count() as u64,
            ..self.stats
        }
    }

    /// Notes that `scanner` heard something (anyone, enrolled or not) at
    /// `at`: a scanner that hears nothing for `scanner_silence` is silent.
    pub fn heard_scanner(&mut self, scanner: ScannerIdx, at: Timestamp) {
        if let Some(s) = self.scanners.get_mut(usize::from(scanner.0)) {
            s.0 = s.0.max(at);
        }
    }

    /// Marks a scanner down (its source lost it: adapter gone, node
    /// offline) or up again.
    pub fn set_scanner_down(&mut self, scanner: ScannerIdx, down: bool) {
        if let Some(s) = self.scanners.get_mut(usize::from(scanner.0)) {
            s.1 = down;
        }
    }

    /// Works out which scanners are silent at `now` (once per tick; the
    /// shell may also call it on its own beat, so that `stats` and
    /// `silent_scanners` are current when no customer is being looked at).
    pub fn refresh(&mut self, now: Timestamp) {
        if self.silent_at == now {
            return;
        }
        let silent: Vec<bool> = (0..self.scanners.len())
            .map(|s| u16::try_from(s).is_ok_and(|s| self.scanner_silent(ScannerIdx(s), now)))
            .collect();
        self.stats.silent_scanners = silent.iter().filter(|s| **s).count() as u64;
        self.silent = silent;
        self.silent_at = now;
    }

    /// The scanners silent at the last tick.
    #[must_use]
    pub fn silent_scanners(&self) -> Vec<ScannerIdx> {
        self.silent
            .iter()
            .enumerate()
            .filter(|(_, s)| **s)
            .filter_map(|(i, _)| u16::try_from(i).ok().map(ScannerIdx))
            .collect()
    }

    /// Whether `scanner` counts as silent at `now`. A scanner never heard
    /// is not: nothing says it ever worked or failed.
    #[must_use]
    pub fn scanner_silent(&self, scanner: ScannerIdx, now: Timestamp) -> bool {
        self.scanners
            .get(usize::from(scanner.0))
            .is_some_and(|&(last, down)| {
                down || (last != Timestamp::MIN
                    && last.saturating_add(self.layout.radio.scanner_silence) <= now)
            })
    }

    /// Feeds one BLE sighting of `customer` by `scanner`. `measured_power` is
    /// the device's calibrated RSSI at 1 m (see [`Layout::measured_power`]).
    /// Nothing is decided until the tick that follows.
    pub fn observe_ble(
        &mut self,
        now: Timestamp,
        customer: CustomerKey,
        scanner: ScannerIdx,
        rssi: Rssi,
        measured_power: i8,
    ) {
        self.stats.observations += 1;
        self.heard_scanner(scanner, now);
        let k = self.tick_of(now);
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
        link.push(k, now, rssi.0);
        self.schedule(customer, self.at_tick(k));
    }

    /// Feeds one Wi-Fi presence report of `customer`, decided at the next tick.
    pub fn observe_wifi(&mut self, now: Timestamp, customer: CustomerKey, kind: WifiKind) {
        self.stats.observations += 1;
        if kind == WifiKind::Left && !self.tracks.contains_key(&customer) {
            return;
        }
        let track = self.track(customer);
        track.wifi = kind != WifiKind::Left;
        track.wifi_news = true;
        let next = self.at_tick(self.tick_of(now));
        self.schedule(customer, next);
    }

    /// The next time [`Tracker::handle_timeout`] has work (a tick with new
    /// samples, a minimum dwell or absence being counted, a dwell time, a
    /// signal going stale).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        self.timers.keys().next().copied()
    }

    /// Runs every tick due at or before `now`.
    pub fn handle_timeout(&mut self, now: Timestamp, out: &mut Vec<ZoneEvent>) {
        while let Some(entry) = self.timers.first_entry() {
            let t = *entry.key();
            if t > now {
                break;
            }
            let mut keys = entry.remove();
            for &key in &keys {
                let Some(track) = self.tracks.get_mut(&key) else {
                    continue;
                };
                if track.scheduled != Some(t) {
                    continue; // superseded by an earlier timer
                }
                track.scheduled = None;
                self.update(t, key, out);
            }
            keys.clear();
            self.spare.push(keys);
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

    /// Whether the customer's zone is currently unknown (a scanner it
    /// depends on is silent).
    #[must_use]
    pub fn is_unknown(&self, customer: CustomerKey) -> bool {
        self.tracks.get(&customer).is_some_and(|t| t.unknown)
    }

    /// The tick a sample at `at` belongs to: the first tick boundary after it.
    fn tick_of(&self, at: Timestamp) -> i64 {
        at.0.div_euclid(self.tick_ms).saturating_add(1)
    }

    fn at_tick(&self, k: i64) -> Timestamp {
        Timestamp(k.saturating_mul(self.tick_ms))
    }

    fn schedule(&mut self, customer: CustomerKey, at: Timestamp) {
        if let Some(track) = self.tracks.get_mut(&customer)
            && track.scheduled.is_none_or(|s| at < s)
        {
            track.scheduled = Some(at);
            let spare = &mut self.spare;
            self.timers
                .entry(at)
                .or_insert_with(|| spare.pop().unwrap_or_default())
                .push(customer);
        }
    }

    fn track(&mut self, customer: CustomerKey) -> &mut Track {
        let zones = self.layout.zones.len();
        let rooms = &self.rooms;
        self.tracks.entry(customer).or_insert_with(|| Track {
            links: SmallVec::new(),
            wifi: false,
            wifi_news: false,
            zones: std::iter::repeat_n(State::Absent, zones).collect(),
            groups: rooms
                .groups
                .iter()
                .map(|g| GroupTrack {
                    p: g.prior(),
                    filtered: None,
                    room: Room::OUTSIDE,
                })
                .collect(),
            scheduled: None,
            unknown: false,
        })
    }

    /// Evaluates one customer at tick time `now`, then reschedules or drops
    /// the track.
    fn update(&mut self, now: Timestamp, customer: CustomerKey, out: &mut Vec<ZoneEvent>) {
        let k = now.0.div_euclid(self.tick_ms);
        self.refresh(now);
        let ctx = Context {
            layout: &self.layout,
            near: &self.near,
            rooms: &self.rooms,
            tick: Duration::from_millis(u64::try_from(self.tick_ms).unwrap_or(1000)),
            window: self.window,
            silent: &self.silent,
        };
        let Some(track) = self.tracks.get_mut(&customer) else {
            return;
        };
        let before = out.len();
        evaluate(&ctx, track, customer, now, k, out);
        self.stats.events += (out.len() - before) as u64;

        let timeout = self.layout.radio.signal_timeout;
        let idle = !track.wifi
            && track.zones.iter().all(|s| *s == State::Absent)
            && track.groups.iter().all(|g| g.room == Room::OUTSIDE)
            && track.links.iter().all(|l| !l.fresh(now, timeout));
        if idle {
            self.tracks.remove(&customer);
            return;
        }
        if let Some(d) = deadline(&self.layout, &self.rooms, track, now) {
            // Round up to a tick boundary: everything is decided on the beat.
            let d = Timestamp(
                d.0.div_euclid(self.tick_ms)
                    .saturating_add(i64::from(d.0.rem_euclid(self.tick_ms) != 0))
                    .saturating_mul(self.tick_ms),
            )
            .max(now.saturating_add(ctx.tick));
            self.schedule(customer, d);
        }
    }
}

/// What a tick needs besides the track.
struct Context<'a> {
    layout: &'a Layout,
    /// Per zone: `log10` of a `near` zone's enter and exit distances.
    near: &'a [(f64, f64)],
    rooms: &'a Rooms,
    tick: Duration,
    window: usize,
    silent: &'a [bool],
}

impl Context<'_> {
    fn silent(&self, s: ScannerIdx) -> bool {
        self.silent.get(usize::from(s.0)).copied().unwrap_or(false)
    }
}

/// One tick for one customer: averages, then the store, the `near` zones
/// and the groups of areas, in that order.
fn evaluate(
    ctx: &Context<'_>,
    track: &mut Track,
    customer: CustomerKey,
    now: Timestamp,
    k: i64,
    out: &mut Vec<ZoneEvent>,
) {
    let layout = ctx.layout;
    let timeout = layout.radio.signal_timeout;
    track.links.retain(|l| l.fresh(now, timeout));
    for l in &mut track.links {
        l.average(k, ctx.window);
    }
    track.unknown = false;
    let event = |kind| ZoneEvent {
        at: now,
        customer,
        kind,
    };

    // The store: heard (within range) by any scanner, or on the Wi-Fi.
    let store_m = {
        let range = match layout.zones[0].kind {
            ZoneKind::Store { range_m } => range_m,
            _ => None,
        };
        let mut m = if track.wifi {
            Membership::Inside
        } else {
            Membership::Outside
        };
        for l in &track.links {
            let near_enough = range.is_none_or(|r| {
                layout.log_distance(l.scanner, f64::from(l.mean), l.measured_power) <= r.log10()
            });
            if near_enough {
                // Not heard this tick: keeps a customer in, but does not
                // count toward arriving.
                m = if l.this_tick {
                    Membership::Inside
                } else if m == Membership::Outside {
                    Membership::Band
                } else {
                    m
                };
            }
        }
        m
    };
    let evidence = track.links.iter().any(|l| l.this_tick);
    // Associated to the store's Wi-Fi is evidence at every tick.
    let wifi_news = std::mem::take(&mut track.wifi_news);
    let store_tr = step(
        &mut track.zones[0],
        &layout.zones[0],
        store_m,
        now,
        true,
        evidence || wifi_news || track.wifi,
    );
    match store_tr {
        Some(Transition::Entered) => out.push(event(EventKind::Arrived)),
        Some(Transition::Dwelled(d)) => out.push(event(EventKind::Dwelled(ZoneIdx::STORE, d))),
        _ => {}
    }
    let in_store = track.zones[0].is_in();
    let counting = in_store || matches!(track.zones[0], State::Entering { .. });
    if !counting {
        // Leaving the store closes every zone first, so `exited` always
        // precedes `left` and no zone is entered before `arrived`.
        for (i, state) in track.zones.iter_mut().enumerate().skip(1) {
            if state.is_in() {
                out.push(event(EventKind::Exited(zone_idx(i))));
            }
            *state = State::Absent;
        }
        for g in &mut track.groups {
            g.room = Room::OUTSIDE;
        }
    } else {
        for (i, zone) in layout.zones.iter().enumerate().skip(1) {
            let ZoneKind::Near { scanner, .. } = zone.kind else {
                continue;
            };
            if ctx.silent(scanner) {
                // Its scanner is silent: neither in nor out is known.
                track.unknown |= track.zones[i] != State::Absent;
                continue;
            }
            let m = track.links.iter().find(|l| l.scanner == scanner).map_or(
                Membership::Outside,
                |l| {
                    // Compared as logarithms: no power of ten per tick.
                    let log_d = layout.log_distance(scanner, f64::from(l.mean), l.measured_power);
                    let (log_enter, log_exit) = ctx.near[i];
                    match near_membership(log_d, log_enter, log_exit) {
                        Membership::Inside if !l.this_tick => Membership::Band,
                        m => m,
                    }
                },
            );
            // A tick votes when the customer was heard at all: not heard by
            // this zone's scanner while heard by others is a vote out.
            match step(&mut track.zones[i], zone, m, now, in_store, evidence) {
                Some(Transition::Entered) => out.push(event(EventKind::Entered(zone_idx(i)))),
                Some(Transition::Dwelled(d)) => {
                    out.push(event(EventKind::Dwelled(zone_idx(i), d)));
                }
                Some(Transition::Exited) => out.push(event(EventKind::Exited(zone_idx(i)))),
                None => {}
            }
        }
        for g in 0..track.groups.len() {
            rooms_tick(ctx, track, g, now, k, in_store, &mut |kind| {
                out.push(event(kind));
            });
        }
    }
    if store_tr == Some(Transition::Exited) {
        out.push(event(EventKind::Left));
    }
}

fn zone_idx(i: usize) -> ZoneIdx {
    ZoneIdx(u16::try_from(i).unwrap_or(u16::MAX))
}

/// One tick of one group of areas: the filter step, then the decision.
fn rooms_tick(
    ctx: &Context<'_>,
    track: &mut Track,
    g: usize,
    now: Timestamp,
    k: i64,
    in_store: bool,
    emit: &mut impl FnMut(EventKind),
) {
    let Some(model) = ctx.rooms.groups.get(g) else {
        return;
    };
    let layout = ctx.layout;
    let gt = &mut track.groups[g];
    let current = match gt.room {
        Room::In { state, .. } => Some(state),
        Room::Outside { .. } => None,
    };
    // Only a tick with new samples is evidence. Unheard, nothing moves:
    // the probabilities wait (and then allow for all the walking the gap
    // could have held).
    let evidence = track.links.iter().any(|l| l.this_tick);
    if evidence {
        let heard: SmallVec<[Heard; 8]> = track
            .links
            .iter()
            .filter(|l| l.samples > 0)
            .map(|l| {
                let offset = layout
                    .scanners
                    .get(usize::from(l.scanner.0))
                    .map_or(0.0, |s| s.rssi_offset);
                #[allow(clippy::cast_possible_truncation)]
                Heard {
                    scanner: l.scanner,
                    level: l.mean + offset as f32 - f32::from(l.measured_power),
                    samples: l.samples,
                }
            })
            .collect();
        let elapsed = gt.filtered.map_or(0, |f| k.saturating_sub(f));
        model.predict(&mut gt.p, elapsed);
        model.update(&mut gt.p, &heard, current);
        gt.filtered = Some(k);
    }

    let best =
        gt.p.iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map_or(0, |(i, _)| i);
    let unknown = |s: usize| model.depends_on(s).iter().any(|x| ctx.silent(*x));
    let area = |s: usize| model.zone(s);

    match gt.room {
        Room::Outside { .. } if !evidence => {}
        Room::Outside {
            since,
            inside,
            outside,
        } => {
            let (mut since, mut inside, mut outside) = (since, inside, outside);
            if area(best).is_some() {
                since.get_or_insert(now);
                inside = inside.saturating_add(1);
            } else if since.is_some() {
                outside = outside.saturating_add(1);
                if outside > inside {
                    (since, inside, outside) = (None, 0, 0);
                }
            }
            gt.room = Room::Outside {
                since,
                inside,
                outside,
            };
            let Some(zone) = area(best) else {
                return;
            };
            if unknown(best) {
                track.unknown = true;
                return;
            }
            let min_dwell = layout.zone(zone).min_dwell;
            if in_store && inside > outside && since.is_some_and(|s| now.since(s) >= min_dwell) {
                gt.room = Room::In {
                    state: best,
                    challenger: None,
                    leaving: None,
                };
                track.zones[usize::from(zone.0)] = State::Present {
                    since: now,
                    dwelled: false,
                };
                emit(EventKind::Entered(zone));
            }
        }
        Room::In {
            state,
            challenger,
            leaving,
        } => {
            let Some(zone) = area(state) else {
                gt.room = Room::OUTSIDE;
                return;
            };
            let mut next = Room::In {
                state,
                challenger: None,
                leaving,
            };
            if !evidence {
                // No new samples: nothing votes, but a begun exit completes
                // on time.
                if let Some((since, inside, outside)) = leaving
                    && now.since(since) >= layout.zone(zone).exit_after
                    && outside >= inside
                {
                    track.zones[usize::from(zone.0)] = State::Absent;
                    emit(EventKind::Exited(zone));
                    next = Room::OUTSIDE;
                } else {
                    next = gt.room;
                }
            } else if unknown(state) || (best != state && unknown(best)) {
                // Hold: the scanners that would tell are silent.
                track.unknown = true;
                next = gt.room;
            } else if best == state {
                if let Some((since, inside, outside)) = leaving {
                    let inside = inside.saturating_add(1);
                    next = Room::In {
                        state,
                        challenger: None,
                        leaving: (inside < outside).then_some((since, inside, outside)),
                    };
                }
            } else if let Some(new) = area(best) {
                let lead = gt.p[best] - gt.p[state];
                let ticks = match challenger {
                    Some((c, n)) if c == best => n.saturating_add(1),
                    _ => 1,
                };
                if lead >= LEAD_AT_ONCE || (lead >= LEAD_SUSTAINED && ticks >= LEAD_TICKS) {
                    track.zones[usize::from(zone.0)] = State::Absent;
                    emit(EventKind::Exited(zone));
                    track.zones[usize::from(new.0)] = State::Present {
                        since: now,
                        dwelled: false,
                    };
                    emit(EventKind::Entered(new));
                    next = Room::In {
                        state: best,
                        challenger: None,
                        leaving: None,
                    };
                } else if lead >= LEAD_SUSTAINED {
                    next = Room::In {
                        state,
                        challenger: Some((best, ticks)),
                        leaving,
                    };
                }
            } else {
                // The open floor leads: leave after the area's exit time,
                // if the floor keeps the majority of the ticks.
                let (since, inside, outside) = leaving.unwrap_or((now, 0, 0));
                let outside = outside.saturating_add(1);
                if now.since(since) >= layout.zone(zone).exit_after && outside >= inside {
                    track.zones[usize::from(zone.0)] = State::Absent;
                    emit(EventKind::Exited(zone));
                    next = Room::OUTSIDE;
                } else {
                    next = Room::In {
                        state,
                        challenger: None,
                        leaving: Some((since, inside, outside)),
                    };
                }
            }
            gt.room = next;
            // Dwell in the area, however the room was decided.
            if let Room::In { state, .. } = gt.room
                && let Some(z) = area(state)
                && let State::Present { since, dwelled } = &mut track.zones[usize::from(z.0)]
                && !*dwelled
                && let Some(d) = layout.zone(z).dwell_after
                && now.since(*since) >= d
            {
                *dwelled = true;
                emit(EventKind::Dwelled(z, now.since(*since)));
            }
        }
    }
}

/// One zone's state machine step for the store and `near` zones. Only a
/// tick with `evidence` (new samples for this zone) votes: entry needs the
/// majority of the votes since it began inside, and completes only on
/// evidence; an exit that has begun is cancelled once the votes inside
/// catch up, and completes by time. `may_enter` is false while the store
/// arrival is still pending: counting goes on, entering waits for it.
fn step(
    state: &mut State,
    zone: &Zone,
    m: Membership,
    now: Timestamp,
    may_enter: bool,
    evidence: bool,
) -> Option<Transition> {
    let vote = u16::from(evidence);
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
        (State::Absent, Membership::Inside) if evidence => {
            if zone.min_dwell.is_zero() && may_enter {
                *state = State::Present {
                    since: now,
                    dwelled: false,
                };
                Some(Transition::Entered)
            } else {
                *state = State::Entering {
                    since: now,
                    inside: 1,
                    outside: 0,
                };
                None
            }
        }
        (State::Absent, _) | (State::Entering { .. }, Membership::Band) => None,
        (
            State::Entering {
                since,
                inside,
                outside,
            },
            Membership::Inside,
        ) => {
            let inside = inside.saturating_add(vote);
            *state = State::Entering {
                since,
                inside,
                outside,
            };
            promote(
                state,
                since,
                zone.min_dwell,
                now,
                evidence && may_enter && inside > outside,
            )
        }
        (
            State::Entering {
                since,
                inside,
                outside,
            },
            Membership::Outside,
        ) => {
            let outside = outside.saturating_add(vote);
            // Outside with no new samples: the signal was lost.
            *state = if outside > inside || !evidence {
                State::Absent
            } else {
                State::Entering {
                    since,
                    inside,
                    outside,
                }
            };
            None
        }
        (State::Present { since, mut dwelled }, Membership::Inside | Membership::Band) => {
            let t = dwell(since, &mut dwelled);
            *state = State::Present { since, dwelled };
            t
        }
        (
            State::Leaving {
                since,
                mut dwelled,
                outside_since,
                inside,
                outside,
            },
            Membership::Inside | Membership::Band,
        ) => {
            let inside = inside.saturating_add(vote);
            let t = dwell(since, &mut dwelled);
            *state = if evidence && inside >= outside {
                State::Present { since, dwelled }
            } else {
                State::Leaving {
                    since,
                    dwelled,
                    outside_since,
                    inside,
                    outside,
                }
            };
            t
        }
        (State::Present { since, mut dwelled }, Membership::Outside) => {
            if zone.exit_after.is_zero() {
                *state = State::Absent;
                Some(Transition::Exited)
            } else {
                // Still in until the exit is decided: the dwell counts on.
                let t = dwell(since, &mut dwelled);
                *state = State::Leaving {
                    since,
                    dwelled,
                    outside_since: now,
                    inside: 0,
                    outside: vote,
                };
                t
            }
        }
        (
            State::Leaving {
                since,
                mut dwelled,
                outside_since,
                inside,
                outside,
            },
            Membership::Outside,
        ) => {
            let outside = outside.saturating_add(vote);
            if now.since(outside_since) >= zone.exit_after && outside >= inside {
                *state = State::Absent;
                Some(Transition::Exited)
            } else {
                let t = dwell(since, &mut dwelled);
                *state = State::Leaving {
                    since,
                    dwelled,
                    outside_since,
                    inside,
                    outside,
                };
                t
            }
        }
    }
}

/// Completes an entry that has counted long enough.
fn promote(
    state: &mut State,
    since: Timestamp,
    min_dwell: Duration,
    now: Timestamp,
    allowed: bool,
) -> Option<Transition> {
    if allowed && now.since(since) >= min_dwell {
        *state = State::Present {
            since,
            dwelled: false,
        };
        Some(Transition::Entered)
    } else {
        None
    }
}

/// When this track next needs a look without new samples: a signal going
/// stale, an exit or a dwell time coming due. Votes need samples, so
/// nothing else can change in between.
fn deadline(layout: &Layout, rooms: &Rooms, track: &Track, now: Timestamp) -> Option<Timestamp> {
    let links = track
        .links
        .iter()
        .map(|l| l.last_heard.saturating_add(layout.radio.signal_timeout));
    let zones = track.zones.iter().zip(&layout.zones).flat_map(|(s, z)| {
        let (dwell, exit) = match *s {
            State::Present {
                since,
                dwelled: false,
            } => (z.dwell_after.map(|d| since.saturating_add(d)), None),
            State::Leaving {
                since,
                dwelled,
                outside_since,
                ..
            } => (
                z.dwell_after
                    .filter(|_| !dwelled)
                    .map(|d| since.saturating_add(d)),
                Some(outside_since.saturating_add(z.exit_after)),
            ),
            _ => (None, None),
        };
        dwell.into_iter().chain(exit)
    });
    let groups = track
        .groups
        .iter()
        .zip(&rooms.groups)
        .filter_map(|(g, model)| match g.room {
            Room::In {
                state,
                leaving: Some((since, _, _)),
                ..
            } => model
                .zone(state)
                .map(|z| since.saturating_add(layout.zone(z).exit_after)),
            _ => None,
        });
    // On the Wi-Fi, arriving needs no further samples: it completes on time.
    let wifi = match track.zones.first() {
        Some(State::Entering { since, .. }) if track.wifi => layout
            .zones
            .first()
            .map(|z| since.saturating_add(z.min_dwell)),
        _ => None,
    };
    links
        .chain(zones)
        .chain(groups)
        .chain(wifi)
        .filter(|t| *t > now)
        .min()
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
        l.groups = vec!["areas".into()];
        l.zones.push(Zone {
            id: "till".into(),
            kind: ZoneKind::Area {
                polygon: polygon![(x: 15.0, y: -3.0), (x: 25.0, y: -3.0), (x: 25.0, y: 3.0), (x: 15.0, y: 3.0)],
                exit_margin_m: 1.0,
                group: 0,
            },
            min_dwell: Duration::ZERO,
            exit_after: Duration::from_secs(5),
            dwell_after: None,
        });
        Arc::new(l)
    }

    /// Three rooms in a row, 4 × 4 m each, a scanner in the middle of each:
    /// west (0–4), middle (4–8), east (8–12).
    fn rooms() -> Arc<Layout> {
        let mut l = Layout::single("Flat", "west");
        l.scanners[0].position = (2.0, 2.0);
        for (id, x) in [("middle", 6.0), ("east", 10.0)] {
            l.scanners.push(Scanner {
                id: id.into(),
                position: (x, 2.0),
                rssi_offset: 0.0,
                path_loss_exponent: 2.0,
            });
        }
        l.zones[0].min_dwell = Duration::from_secs(5);
        l.zones[0].exit_after = Duration::from_secs(30);
        l.groups = vec!["rooms".into()];
        for (id, x) in [("west", 0.0), ("middle", 4.0), ("east", 8.0)] {
            l.zones.push(Zone {
                id: id.into(),
                kind: ZoneKind::Area {
                    polygon: polygon![(x: x, y: 0.0), (x: x + 4.0, y: 0.0), (x: x + 4.0, y: 4.0), (x: x, y: 4.0)],
                    exit_margin_m: 0.0,
                    group: 0,
                },
                min_dwell: Duration::from_secs(5),
                exit_after: Duration::from_secs(20),
                dwell_after: Some(Duration::from_secs(30)),
            });
        }
        Arc::new(l)
    }

    /// RSSI that the model maps to `d` metres (P1m -59, n 2).
    fn at_m(d: f64) -> Rssi {
        #[allow(clippy::cast_possible_truncation)]
        Rssi((-59.0 - 20.0 * d.log10()).round() as i16)
    }

    /// RSSI at each scanner of `l` from a device at `p`: log-distance at
    /// 1 m above, 3 dB per room wall in between (rooms 4 m wide along x).
    fn heard_from(l: &Layout, p: (f64, f64)) -> Vec<(u16, Rssi)> {
        l.scanners
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let d = (p.0 - s.position.0).hypot(p.1 - s.position.1).hypot(1.0);
                let walls = ((p.0 / 4.0).floor() - (s.position.0 / 4.0).floor()).abs();
                #[allow(clippy::cast_possible_truncation)]
                let rssi = (-59.0 - 20.0 * d.log10() - 3.0 * walls).round() as i16;
                (u16::try_from(i).unwrap(), Rssi(rssi))
            })
            .collect()
    }

    /// Runs `input` (seconds, scanner, RSSI) through a tracker, running
    /// timers in between and up to `until`; `(seconds, event)` pairs.
    fn run(l: &Arc<Layout>, input: &[(f64, u16, Rssi)], until: f64) -> Vec<(f64, String)> {
        run_with(l, input, until, |_, _| {})
    }

    fn run_with(
        l: &Arc<Layout>,
        input: &[(f64, u16, Rssi)],
        until: f64,
        mut before: impl FnMut(&mut Tracker, f64),
    ) -> Vec<(f64, String)> {
        let mut t = Tracker::new(l.clone());
        let mut out = Vec::new();
        let ts = |s: f64| Timestamp::from_secs_f64(s).unwrap();
        for &(s, scanner, rssi) in input {
            while let Some(due) = t.poll_timeout().filter(|due| *due <= ts(s)) {
                t.handle_timeout(due, &mut out);
            }
            before(&mut t, s);
            t.observe_ble(ts(s), C, ScannerIdx(scanner), rssi, -59);
        }
        while let Some(due) = t.poll_timeout().filter(|due| *due <= ts(until)) {
            t.handle_timeout(due, &mut out);
        }
        names(l, &out)
    }

    fn names(l: &Layout, out: &[ZoneEvent]) -> Vec<(f64, String)> {
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

    /// `(seconds, scanner, metres)` → `(seconds, scanner, RSSI)`.
    fn metres(input: &[(f64, u16, f64)]) -> Vec<(f64, u16, Rssi)> {
        input.iter().map(|&(s, sc, d)| (s, sc, at_m(d))).collect()
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

    /// A walk through `rooms()`: position at each second, every scanner
    /// heard 4 times a second.
    fn walk(
        l: &Layout,
        from: f64,
        to: f64,
        at: impl Fn(f64) -> (f64, f64),
    ) -> Vec<(f64, u16, Rssi)> {
        let mut v = Vec::new();
        let mut s = from;
        while s <= to + 1e-9 {
            for (i, (scanner, rssi)) in heard_from(l, at(s)).into_iter().enumerate() {
                #[allow(clippy::cast_precision_loss)]
                v.push((s + 0.01 * i as f64, scanner, rssi));
            }
            s += 0.25;
        }
        v
    }

    fn only(ev: &[(f64, String)]) -> Vec<&str> {
        ev.iter().map(|(_, n)| n.as_str()).collect()
    }

    #[test]
    fn walk_in_linger_at_door_and_leave() {
        let l = layout();
        // Heard at 10 m from t=0, walks to 1 m at t=10, stays until t=40, gone.
        let input = metres(&every(
            0.0,
            40.0,
            0.5,
            0,
            |s| if s < 10.0 { 10.0 } else { 1.0 },
        ));
        let ev = run(&l, &input, 200.0);
        assert_eq!(
            ev,
            vec![
                // Ticks 1 and 3: heard since the first tick, 2 s minimum dwell.
                (3.0, "arrived store".into()),
                // The 2 s average is inside from tick 12; 3 s minimum dwell.
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
        let mut input = every(0.0, 10.0, 0.5, 0, |_| 1.5);
        input.extend(every(10.5, 300.0, 0.5, 0, |s| {
            2.5 + 1.3 * ((s * 7.3).sin() * 0.5 + 0.5)
        }));
        let ev = run(&l, &metres(&input), 300.0);
        assert_eq!(
            only(&ev),
            ["arrived store", "entered entrance", "dwelled entrance 20s"]
        );
    }

    #[test]
    fn stray_samples_neither_enter_nor_exit() {
        let l = layout();
        // At 8 m, a burst reading as 0.5 m for one second: no entry.
        let mut input = every(0.0, 30.0, 0.5, 0, |_| 8.0);
        for s in &mut input[20..22] {
            s.2 = 0.5;
        }
        let ev = run(&l, &metres(&input), 30.0);
        assert_eq!(ev, vec![(3.0, "arrived store".to_owned())]);
        // Inside at 1 m, a second reading as 30 m every ten seconds: no exit.
        let mut input = every(0.0, 60.0, 0.5, 0, |_| 1.0);
        for i in (20..input.len() - 1).step_by(20) {
            input[i].2 = 30.0;
            input[i + 1].2 = 30.0;
        }
        let ev = run(&l, &metres(&input), 60.0);
        assert_eq!(
            only(&ev),
            ["arrived store", "entered entrance", "dwelled entrance 20s"]
        );
    }

    #[test]
    fn an_area_is_entered_with_the_arrival_when_the_plan_says_so() {
        let l = layout();
        // Heard only by the till scanner, 3 m away: the area around it.
        let input = metres(&every(0.0, 10.0, 0.5, 1, |_| 3.0));
        let ev = run(&l, &input, 10.0);
        assert_eq!(
            ev,
            vec![(3.0, "arrived store".into()), (3.0, "entered till".into())]
        );
        // Heard by both, much nearer the door: not in the till area.
        let mut input = Vec::new();
        for s in 0..20 {
            input.push((f64::from(s) * 0.5, 0, 1.0));
            input.push((f64::from(s) * 0.5 + 0.25, 1, 19.0));
        }
        let ev = run(&l, &metres(&input), 10.0);
        assert_eq!(only(&ev), ["arrived store", "entered entrance"]);
    }

    #[test]
    fn short_visit_below_minimum_dwell_emits_nothing() {
        let l = layout();
        let ev = run(&l, &metres(&[(0.0, 0, 5.0), (1.0, 0, 5.0)]), 100.0);
        assert!(ev.is_empty(), "{ev:?}");
    }

    #[test]
    fn arrival_and_first_room_together_then_one_hand_over() {
        let l = rooms();
        // West until 30 s, then in the middle room.
        let input = walk(&l, 0.0, 60.0, |s| {
            if s < 30.0 { (2.0, 2.0) } else { (6.0, 2.0) }
        });
        let ev = run(&l, &input, 60.0);
        assert_eq!(
            ev,
            vec![
                (6.0, "arrived store".into()),
                (6.0, "entered west".into()),
                (32.0, "exited west".into()),
                (32.0, "entered middle".into()),
            ]
        );
    }

    #[test]
    fn a_challenger_takes_over_only_when_it_leads_steadily() {
        let l = rooms();
        // In the middle room; at 30 s it sounds like the east room for one
        // second: no change.
        let brief = walk(&l, 0.0, 60.0, |s| {
            if (30.0..31.0).contains(&s) {
                (9.0, 2.0)
            } else {
                (5.0, 2.0)
            }
        });
        assert_eq!(
            only(&run(&l, &brief, 60.0)),
            ["arrived store", "entered middle", "dwelled middle 30s"]
        );
        // The same for 10 seconds: one change, and back.
        let steady = walk(&l, 0.0, 60.0, |s| {
            if (30.0..40.0).contains(&s) {
                (9.0, 2.0)
            } else {
                (5.0, 2.0)
            }
        });
        assert_eq!(
            run(&l, &steady, 60.0),
            vec![
                (6.0, "arrived store".into()),
                (6.0, "entered middle".into()),
                (32.0, "exited middle".into()),
                (32.0, "entered east".into()),
                (42.0, "exited east".into()),
                (42.0, "entered middle".into()),
            ]
        );
    }

    #[test]
    fn a_room_whose_scanner_is_silent_is_held_as_unknown() {
        let mut l = (*rooms()).clone();
        l.radio.scanner_silence = Duration::from_secs(10);
        let l = Arc::new(l);
        // In the middle room until 30 s, then heard as if in the west room,
        // but without the middle scanner: it went silent at 20 s while the
        // others still hear other devices.
        let input: Vec<_> = walk(&l, 0.0, 80.0, |s| {
            if s < 30.0 { (6.0, 2.0) } else { (3.0, 2.0) }
        })
        .into_iter()
        .filter(|&(s, scanner, _)| s < 20.0 || scanner != 1)
        .collect();
        let mut unknown_at = Vec::new();
        let mut t = Tracker::new(l.clone());
        let mut out = Vec::new();
        let ts = |s: f64| Timestamp::from_secs_f64(s).unwrap();
        for &(s, scanner, rssi) in &input {
            while let Some(due) = t.poll_timeout().filter(|due| *due <= ts(s)) {
                t.handle_timeout(due, &mut out);
                if t.is_unknown(C) && unknown_at.is_empty() {
                    unknown_at.push(due.as_secs());
                }
            }
            t.heard_scanner(ScannerIdx(0), ts(s));
            t.heard_scanner(ScannerIdx(2), ts(s));
            t.observe_ble(ts(s), C, ScannerIdx(scanner), rssi, -59);
        }
        assert_eq!(
            names(&l, &out),
            vec![
                (6.0, "arrived store".into()),
                (6.0, "entered middle".into()),
                (36.0, "dwelled middle 30s".into()),
            ]
        );
        assert_eq!(unknown_at, [30]);
        assert_eq!(t.stats().unknown, 1);
        assert_eq!(t.stats().silent_scanners, 1);

        // The same with the scanner marked down by its source at once, and
        // heard again at 50 s: held until then, then the move happens.
        let input = walk(&l, 0.0, 80.0, |s| {
            if s < 30.0 { (6.0, 2.0) } else { (3.0, 2.0) }
        });
        let ev = run_with(&l, &input, 80.0, |t, s| {
            t.set_scanner_down(ScannerIdx(1), (20.0..50.0).contains(&s));
        });
        assert_eq!(
            ev,
            vec![
                (6.0, "arrived store".into()),
                (6.0, "entered middle".into()),
                (36.0, "dwelled middle 30s".into()),
                (51.0, "exited middle".into()),
                (51.0, "entered west".into()),
            ]
        );
    }

    #[test]
    fn wifi_keeps_a_customer_in_the_store_until_left() {
        let l = layout();
        let mut t = Tracker::new(l.clone());
        let mut out = Vec::new();
        let ts = Timestamp::from_secs;
        let until = |t: &mut Tracker, s: i64, out: &mut Vec<ZoneEvent>| {
            while let Some(due) = t.poll_timeout().filter(|due| *due <= ts(s)) {
                t.handle_timeout(due, out);
            }
        };
        t.observe_wifi(ts(0), C, WifiKind::Joined);
        until(&mut t, 300, &mut out);
        assert_eq!(names(&l, &out), vec![(3.0, "arrived store".into())]);
        assert_eq!(
            t.poll_timeout(),
            None,
            "nothing to count while on the Wi-Fi"
        );
        t.observe_wifi(ts(600), C, WifiKind::Left);
        until(&mut t, 630, &mut out);
        assert_eq!(out.len(), 1);
        until(&mut t, 631, &mut out);
        assert_eq!(
            names(&l, &out).last(),
            Some(&(631.0, "left store".to_owned()))
        );
        assert_eq!(t.stats().tracked, 0);
    }

    #[test]
    fn a_late_sample_counts_in_its_own_tick_and_does_not_move_last_heard_back() {
        let mut link = Link::new(ScannerIdx(0));
        link.push(11, Timestamp::from_secs(10), -60);
        link.push(8, Timestamp::from_secs(7), -70);
        assert_eq!(link.last_heard, Timestamp::from_secs(10));
        link.average(11, 2);
        assert_eq!((link.mean, link.samples), (-60.0, 1));
        link.average(11, 4);
        assert_eq!((link.mean, link.samples), (-65.0, 2));
        // A tick later the window still holds tick 11, not tick 8.
        link.average(12, 2);
        assert_eq!((link.mean, link.samples, link.this_tick), (-60.0, 1, false));
        // Two ticks later it is empty: the mean is held, with no samples.
        link.average(13, 2);
        assert_eq!((link.mean, link.samples), (-60.0, 0));
    }

    #[test]
    fn forget_drops_state_without_events() {
        let l = layout();
        let mut t = Tracker::new(l);
        let mut out = Vec::new();
        for s in 0..5 {
            let now = Timestamp::from_secs(s);
            t.handle_timeout(now, &mut out);
            t.observe_ble(now, C, ScannerIdx(0), at_m(1.0), -59);
        }
        t.handle_timeout(Timestamp::from_secs(5), &mut out);
        assert_eq!(t.zones_of(C), vec![ZoneIdx::STORE, ZoneIdx(1)]);
        t.forget(C);
        let n = out.len();
        t.handle_timeout(Timestamp::from_secs(1000), &mut out);
        assert_eq!(out.len(), n);
        assert_eq!(t.stats().tracked, 0);
    }

    /// Whatever the signal does, events per zone alternate in/out, the
    /// store brackets every zone, at most one area of a group is entered
    /// at a time, and everything is closed at the end.
    fn well_nested(
        l: &Layout,
        ev: &[(f64, String)],
    ) -> Result<(), proptest::test_runner::TestCaseError> {
        let mut inside = vec![false; l.zones.len()];
        for (_, name) in ev {
            let (kind, zone) = name.split_once(' ').unwrap();
            let z = usize::from(l.zone_index(zone.split(' ').next().unwrap()).unwrap().0);
            match kind {
                "arrived" | "entered" => {
                    proptest::prop_assert!(!inside[z]);
                    if z > 0 {
                        proptest::prop_assert!(inside[0]);
                    }
                    inside[z] = true;
                }
                "exited" | "left" => {
                    proptest::prop_assert!(inside[z]);
                    inside[z] = false;
                    if z == 0 {
                        proptest::prop_assert!(inside.iter().all(|i| !i));
                    }
                }
                "dwelled" => proptest::prop_assert!(inside[z]),
                _ => unreachable!(),
            }
            let areas = l
                .zones
                .iter()
                .zip(&inside)
                .filter(|(z, i)| **i && matches!(z.kind, ZoneKind::Area { .. }))
                .count();
            proptest::prop_assert!(areas <= 1, "{ev:?}");
        }
        proptest::prop_assert!(inside.iter().all(|i| !i));
        Ok(())
    }

    proptest::proptest! {
        #[test]
        fn events_are_well_nested(samples in proptest::collection::vec((0u16..2, 0.2f64..40.0, 0.1f64..20.0), 1..200)) {
            let l = layout();
            let mut input = Vec::new();
            let mut s = 0.0;
            for (scanner, d, gap) in samples {
                s += gap;
                input.push((s, scanner, at_m(d)));
            }
            let ev = run(&l, &input, s + 1000.0);
            well_nested(&l, &ev)?;
        }

        #[test]
        fn rooms_are_exclusive(samples in proptest::collection::vec((0u16..3, -95i16..-40, 0.05f64..3.0), 1..300)) {
            let l = rooms();
            let mut input = Vec::new();
            let mut s = 0.0;
            for (scanner, rssi, gap) in samples {
                s += gap;
                input.push((s, scanner, Rssi(rssi)));
            }
            let ev = run(&l, &input, s + 1000.0);
            well_nested(&l, &ev)?;
        }
    }
}

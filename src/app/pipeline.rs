//! The decision pipeline: decode → identify → presence → campaign → ledger,
//! one observation at a time, in the observation's own time.
//!
//! Synchronous and clock-free: the caller feeds observations in time order
//! (live, replayed or simulated) and the pipeline runs presence timers up to
//! each observation's time before handling it. Output goes to a sink.
//!
//! When the ledger cannot take a decision (the database refuses writes: a
//! full disk, a dying card), a pipeline set up to hold them
//! ([`Pipeline::with_holding`], the daemon) keeps the event in a bounded
//! queue instead of losing it, and decides and commits the queue in order
//! when [`Pipeline::retry_held`] finds the database writable again: each
//! event at its own time, so cooldowns and caps come out as they would
//! have, and a message whose time to live ran out meanwhile is committed
//! already expired (the worker never sends it). Without holding, a ledger
//! failure is the caller's error, as in a replay.

use std::collections::VecDeque;
use std::sync::Arc;

use smallvec::SmallVec;

use crate::core::advert::{self, Frame};
use crate::core::campaign::{Committed, Engine, Ledger, Outcome, Reason};
use crate::core::guard::{Guard, GuardConfig, Verdict};
use crate::core::identity::{CustomerInfo, Directory, Hasher, Identity, Resolver};
use crate::core::presence::{EventKind, Tracker, ZoneEvent};
use crate::core::types::{Observation, ScannerIdx, Timestamp};
use crate::core::zones::Layout;
pub use crate::metrics::{Counters, HeldStats};

/// What the pipeline reports as it goes.
#[derive(Debug)]
pub enum Output<'a> {
    /// A presence event for a known customer.
    Event {
        /// The event.
        event: &'a ZoneEvent,
        /// Who.
        customer: &'a CustomerInfo,
        /// The zone's id.
        zone: &'a str,
    },
    /// A campaign decision, as committed.
    Decision {
        /// The event that triggered it.
        event: &'a ZoneEvent,
        /// Who.
        customer: &'a CustomerInfo,
        /// The decision.
        committed: &'a Committed,
    },
}

fn event_index(kind: &EventKind) -> usize {
    match kind {
        EventKind::Arrived => 0,
        EventKind::Entered(_) => 1,
        EventKind::Dwelled(..) => 2,
        EventKind::Exited(_) => 3,
        EventKind::Left => 4,
    }
}

/// An event whose decisions the ledger could not take, waiting to be
/// decided and committed.
#[derive(Debug)]
struct Held {
    event: ZoneEvent,
    customer: CustomerInfo,
    zone: String,
}

/// The pipeline over a ledger (SQLite, or memory for dry runs).
pub struct Pipeline<L: Ledger> {
    layout: Arc<Layout>,
    engine: Arc<Engine>,
    resolver: Resolver,
    tracker: Tracker,
    ledger: L,
    counters: Counters,
    events: Vec<ZoneEvent>,
    frames: SmallVec<[Frame; 2]>,
    clock_trusted: bool,
    guard: Guard,
    /// Events waiting for a writable ledger, oldest first.
    held: VecDeque<Held>,
    /// How many may wait (0: a ledger failure is returned instead).
    hold_capacity: usize,
    held_stats: HeldStats,
    /// Whether the oldest was dropped for room since the ledger failed.
    dropping: bool,
}

impl<L: Ledger> Pipeline<L> {
    /// A pipeline for this store.
    #[must_use]
    pub fn new(
        layout: Arc<Layout>,
        engine: Arc<Engine>,
        hasher: Hasher,
        directory: Arc<Directory>,
        ledger: L,
    ) -> Self {
        Pipeline {
            tracker: Tracker::new(layout.clone()),
            layout,
            engine,
            resolver: Resolver::new(hasher, directory),
            ledger,
            counters: Counters::default(),
            events: Vec::new(),
            frames: SmallVec::new(),
            clock_trusted: true,
            guard: Guard::new(GuardConfig::default()),
            held: VecDeque::new(),
            hold_capacity: 0,
            held_stats: HeldStats::default(),
            dropping: false,
        }
    }

    /// Holds up to `capacity` events whose decisions the ledger could not
    /// take, instead of failing (see the module's documentation); beyond
    /// that, the oldest is dropped and counted.
    #[must_use]
    pub fn with_holding(mut self, capacity: usize) -> Self {
        self.hold_capacity = capacity;
        self
    }

    /// Replaces the flood and junk guards' thresholds (and their memory).
    #[must_use]
    pub fn with_guard(mut self, config: GuardConfig) -> Self {
        self.guard = Guard::new(config);
        self
    }

    /// Totals so far.
    #[must_use]
    pub fn counters(&self) -> Counters {
        Counters {
            decode: self.counters.decode,
            guard: self.guard.stats(),
            presence: self.tracker.stats(),
            held: HeldStats {
                waiting: self.held.len() as u64,
                ..self.held_stats
            },
            ..self.counters.clone()
        }
    }

    /// Marks a scanner down (its source lost the adapter) or up again, as
    /// of `now`.
    pub fn set_scanner_down(&mut self, scanner: ScannerIdx, down: bool, now: Timestamp) {
        self.tracker.set_scanner_down(scanner, down);
        self.tracker.refresh(now);
    }

    /// The scanners presence takes as silent at its last tick, by name.
    #[must_use]
    pub fn silent_scanners(&self) -> Vec<String> {
        self.tracker
            .silent_scanners()
            .into_iter()
            .filter_map(|s| self.layout.scanners.get(usize::from(s.0)))
            .map(|s| s.id.to_string())
            .collect()
    }

    /// The ledger.
    pub fn ledger_mut(&mut self) -> &mut L {
        &mut self.ledger
    }

    /// Swaps in a new registry snapshot (import, opt-out, erasure). Tracking
    /// state of customers no longer in it is dropped at once.
    pub fn set_directory(&mut self, directory: Arc<Directory>) {
        let gone: Vec<_> = self
            .resolver
            .directory()
            .customers()
            .filter(|k| directory.customer(*k).is_none())
            .collect();
        for k in gone {
            self.tracker.forget(k);
        }
        self.resolver.set_directory(directory);
    }

    /// Takes a reloaded configuration. Campaign changes apply to the next
    /// event; a changed floor plan restarts presence tracking (customers in
    /// the store arrive again, and their cooldowns keep them from a second
    /// greeting).
    pub fn reconfigure(&mut self, layout: Arc<Layout>, engine: Arc<Engine>) {
        if *layout != *self.layout {
            self.tracker = Tracker::new(layout.clone());
            self.layout = layout;
        }
        self.engine = engine;
    }

    /// Sets the rotating-identity index (EIDs, app tokens) built for the
    /// current snapshot.
    pub fn set_rotating(
        &mut self,
        index: crate::core::rotating::RotatingIndex,
        app: crate::core::identity::AppBeacons,
    ) {
        self.resolver.set_rotating(index, app);
    }

    /// Whether the wall clock is trustworthy. While it is not, presence is
    /// tracked but nothing is decided or recorded: every campaign an event
    /// would wake is suppressed as `clock_unsynced`.
    pub fn set_clock_trusted(&mut self, trusted: bool) {
        self.clock_trusted = trusted;
    }

    /// When [`Pipeline::advance`] next has timer work.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        self.tracker.poll_timeout()
    }

    /// Runs presence timers due up to `now`, each at its own time.
    ///
    /// # Errors
    /// Ledger failures.
    pub fn advance(
        &mut self,
        now: Timestamp,
        sink: &mut impl FnMut(Output<'_>),
    ) -> Result<(), L::Error> {
        while let Some(due) = self.tracker.poll_timeout().filter(|d| *d <= now) {
            self.tracker.handle_timeout(due, &mut self.events);
            self.process_events(sink)?;
        }
        Ok(())
    }

    /// Handles one observation (after running timers up to its time).
    ///
    /// # Errors
    /// Ledger failures; the observation's events are then lost, not half-written.
    pub fn handle(
        &mut self,
        obs: &Observation,
        sink: &mut impl FnMut(Output<'_>),
    ) -> Result<(), L::Error> {
        self.advance(obs.at(), sink)?;
        self.resolver.advance(obs.at());
        match obs {
            Observation::Ble(s) => {
                self.counters.sightings += 1;
                // Any advertisement shows the scanner is alive (presence
                // holds a room whose scanners have gone silent).
                self.tracker.heard_scanner(s.scanner, s.at);
                self.frames.clear();
                let frames = &mut self.frames;
                advert::decode(s, &mut self.counters.decode, |f| frames.push(f));
                // Floods and junk stop before the (hashing) identity lookup.
                if self.guard.check(s, &self.frames) != Verdict::Admit {
                    return Ok(());
                }
                let Some(key) = self.resolver.identify(self.frames.iter(), s.addr) else {
                    return Ok(());
                };
                let power = self
                    .layout
                    .measured_power(self.frames.iter().find(|f| f.measured_power_1m().is_some()));
                self.tracker
                    .observe_ble(s.at, key, s.scanner, s.rssi, power);
            }
            Observation::Wifi(w) => {
                self.counters.wifi += 1;
                let Some(key) = self.resolver.resolve(&Identity::Mac(w.mac)) else {
                    return Ok(());
                };
                self.tracker.observe_wifi(w.at, key, w.kind);
            }
        }
        if self.events.is_empty() {
            Ok(())
        } else {
            self.process_events(sink)
        }
    }

    fn process_events(&mut self, sink: &mut impl FnMut(Output<'_>)) -> Result<(), L::Error> {
        let events = std::mem::take(&mut self.events);
        let mut result = Ok(());
        for event in &events {
            self.counters.events[event_index(&event.kind)] += 1;
            let Some(customer) = self.resolver.directory().customer(event.customer).cloned() else {
                continue;
            };
            let zone = self.layout.zone(event.kind.zone()).id.clone();
            sink(Output::Event {
                event,
                customer: &customer,
                zone: zone.as_str(),
            });
            let records_visit = matches!(event.kind, EventKind::Arrived | EventKind::Left);
            if !records_visit && !self.engine.listens(&event.kind) {
                continue;
            }
            if let Err(e) = self.decide(event, &customer, zone.as_str(), sink) {
                result = Err(e);
                break;
            }
        }
        let mut events = events;
        events.clear();
        self.events = events;
        result
    }

    /// Events waiting for a writable ledger.
    #[must_use]
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Decides and commits the held events, oldest first, each at its own
    /// time; messages whose time to live ended before `now` are committed
    /// expired. Stops at the first failure (the event stays first in line).
    ///
    /// # Errors
    /// The ledger still fails; then the rest wait.
    pub fn retry_held(
        &mut self,
        now: Timestamp,
        sink: &mut impl FnMut(Output<'_>),
    ) -> Result<(), L::Error> {
        if !self.clock_trusted {
            return Ok(()); // decided once the clock is right again
        }
        let (mut committed, mut expired) = (0u64, 0u64);
        while let Some(h) = self.held.pop_front() {
            match self.commit_event(&h.event, &h.customer, &h.zone, sink) {
                Ok(done) => {
                    committed += 1;
                    expired += done
                        .iter()
                        .filter(|c| c.outbox_id.is_some())
                        .filter(|c| match &c.decision.outcome {
                            Outcome::Act(a) => a.expires_at <= now,
                            Outcome::Suppressed(_) => false,
                        })
                        .count() as u64;
                }
                Err(e) => {
                    self.held.push_front(h);
                    self.note(committed, expired);
                    return Err(e);
                }
            }
        }
        self.note(committed, expired);
        if committed > 0 {
            tracing::info!(
                committed,
                expired,
                dropped = self.held_stats.dropped,
                "the database takes writes again: held decisions committed (messages past their time to live recorded as expired)"
            );
        }
        self.dropping = false;
        Ok(())
    }

    fn note(&mut self, committed: u64, expired: u64) {
        self.held_stats.committed += committed;
        self.held_stats.expired += expired;
    }

    /// Keeps an event for [`Pipeline::retry_held`], the oldest making room.
    fn hold(&mut self, event: &ZoneEvent, customer: &CustomerInfo, zone: &str) {
        if self.held.len() >= self.hold_capacity {
            self.held.pop_front();
            self.held_stats.dropped += 1;
            if !self.dropping {
                self.dropping = true;
                tracing::error!(
                    capacity = self.hold_capacity,
                    "the queue of held decisions is full: dropping the oldest"
                );
            }
        }
        self.held_stats.held += 1;
        self.held.push_back(Held {
            event: *event,
            customer: customer.clone(),
            zone: zone.to_owned(),
        });
    }

    fn decide(
        &mut self,
        event: &ZoneEvent,
        customer: &CustomerInfo,
        zone: &str,
        sink: &mut impl FnMut(Output<'_>),
    ) -> Result<(), L::Error> {
        if self.clock_trusted && self.hold_capacity > 0 {
            // In order: nothing is decided past an event still waiting.
            if !self.held.is_empty() {
                self.hold(event, customer, zone);
                return Ok(());
            }
            if let Err(e) = self.commit_event(event, customer, zone, sink) {
                tracing::error!(
                    error = %e,
                    capacity = self.hold_capacity,
                    "cannot record decisions; holding them in memory until the database takes writes again"
                );
                self.hold(event, customer, zone);
            }
            return Ok(());
        }
        self.commit_event(event, customer, zone, sink).map(drop)
    }

    /// Decides `event` and commits its decisions (or, on an untrusted
    /// clock, suppresses them all), telling the sink; what was committed.
    fn commit_event(
        &mut self,
        event: &ZoneEvent,
        customer: &CustomerInfo,
        zone: &str,
        sink: &mut impl FnMut(Output<'_>),
    ) -> Result<Vec<Committed>, L::Error> {
        if !self.clock_trusted {
            for d in self.engine.suppress_all(event, Reason::ClockUnsynced) {
                self.counters.suppressed[Reason::ALL
                    .iter()
                    .position(|r| *r == Reason::ClockUnsynced)
                    .unwrap_or(0)] += 1;
                let committed = Committed {
                    decision: d,
                    outbox_id: None,
                    balance: 0,
                };
                sink(Output::Decision {
                    event,
                    customer,
                    committed: &committed,
                });
            }
            return Ok(Vec::new());
        }
        let local = self.engine.rules.local(event.at);
        let history = self.ledger.history(customer, &local)?;
        let decisions = self.engine.decide(event, customer, &history);
        let committed =
            self.ledger
                .commit(event, zone, customer, &local, &self.engine, decisions)?;
        for c in &committed {
            match &c.decision.outcome {
                Outcome::Act(a) => {
                    self.counters.acted += 1;
                    self.counters.points += u64::from(a.points);
                    self.counters.messages += u64::from(a.message.is_some());
                }
                Outcome::Suppressed(r) => {
                    if let Some(i) = Reason::ALL.iter().position(|x| x == r) {
                        self.counters.suppressed[i] += 1;
                    }
                    if *r == Reason::OptedOut {
                        // Consent went away since the snapshot: stop tracking now.
                        self.tracker.forget(customer.key);
                    }
                }
            }
            sink(Output::Decision {
                event,
                customer,
                committed: c,
            });
        }
        Ok(committed)
    }
}

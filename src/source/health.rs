//! How a live source is doing, shared with the daemon's `stats`: its state,
//! what it delivered, how often it lost its radio or backend and recovered;
//! and the retry backoff every live source uses.
//!
//! Counts only: never an address or any other device detail.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A live source's state, as shown by `nearcast stats`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Not yet connected.
    #[default]
    Starting,
    /// Receiving.
    Running,
    /// Lost its radio or backend; retrying with backoff.
    Recovering,
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            State::Starting => "starting",
            State::Running => "running",
            State::Recovering => "recovering",
        })
    }
}

/// Counters of one live source. Cheap to update from its task, read by the
/// daemon when it writes its status.
#[derive(Debug)]
pub struct Health {
    /// `ble:hci0`, `wifi:hostapd`, …
    pub name: String,
    state: Mutex<(State, Option<&'static str>)>,
    /// Raw events received from the radio or backend.
    pub events: AtomicU64,
    /// Observations delivered to the pipeline.
    pub delivered: AtomicU64,
    /// Observations dropped because the pipeline's queue was full.
    pub queue_full: AtomicU64,
    /// Times the source lost its radio/backend and started recovering.
    pub outages: AtomicU64,
    /// Times it came back.
    pub recoveries: AtomicU64,
    /// Reconnection attempts that failed.
    pub failed_attempts: AtomicU64,
    /// Times the source connected to its radio or backend (a BLE scan
    /// started, a Wi-Fi backend answered): zero means it never got going.
    pub connects: AtomicU64,
}

/// A copy of [`Health`] for printing, and as the daemon's status file
/// carries it to `nearcast stats`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthSnapshot {
    /// Source name.
    pub name: String,
    /// State now.
    pub state: State,
    /// Why it last went down (`adapter powered off`, `bluez restarted`, …).
    pub last_outage: Option<String>,
    /// Raw events received.
    pub events: u64,
    /// Observations delivered.
    pub delivered: u64,
    /// Observations dropped on a full queue.
    pub queue_full: u64,
    /// Outages.
    pub outages: u64,
    /// Recoveries.
    pub recoveries: u64,
    /// Failed reconnection attempts.
    pub failed_attempts: u64,
}

impl Health {
    /// A fresh record for the source called `name`.
    #[must_use]
    pub fn new(name: impl Into<String>) -> Health {
        Health {
            name: name.into(),
            state: Mutex::new((State::Starting, None)),
            events: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            queue_full: AtomicU64::new(0),
            outages: AtomicU64::new(0),
            recoveries: AtomicU64::new(0),
            failed_attempts: AtomicU64::new(0),
            connects: AtomicU64::new(0),
        }
    }

    /// Adds one to a counter.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The state now.
    #[must_use]
    pub fn state(&self) -> State {
        self.state.lock().map_or(State::Recovering, |s| s.0)
    }

    /// Marks the source running; returns true when that is a recovery.
    pub fn running(&self) -> bool {
        let Ok(mut s) = self.state.lock() else {
            return false;
        };
        let recovered = s.0 == State::Recovering;
        s.0 = State::Running;
        if recovered {
            Self::bump(&self.recoveries);
        }
        recovered
    }

    /// Marks an outage for `why`; returns true when it is a new one (so the
    /// caller logs it once, not on every retry).
    pub fn down(&self, why: &'static str) -> bool {
        let Ok(mut s) = self.state.lock() else {
            return false;
        };
        let new = s.0 != State::Recovering;
        if new {
            Self::bump(&self.outages);
            s.1 = Some(why);
        }
        s.0 = State::Recovering;
        new
    }

    /// A copy for printing.
    #[must_use]
    pub fn snapshot(&self) -> HealthSnapshot {
        let (state, last_outage) = self.state.lock().map_or((State::Recovering, None), |s| *s);
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        HealthSnapshot {
            name: self.name.clone(),
            state,
            last_outage: last_outage.map(str::to_owned),
            events: get(&self.events),
            delivered: get(&self.delivered),
            queue_full: get(&self.queue_full),
            outages: get(&self.outages),
            recoveries: get(&self.recoveries),
            failed_attempts: get(&self.failed_attempts),
        }
    }
}

/// Exponential backoff between `min` and `max`, with jitter drawn from an
/// injected function (a fraction in `[0, 1)`), so tests can fix it.
pub struct Backoff<J = fn() -> f64> {
    min: Duration,
    max: Duration,
    next: Duration,
    jitter: J,
}

impl Backoff {
    /// Backoff with ±20 % random jitter.
    #[must_use]
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff::with_jitter(min, max, fastrand::f64)
    }
}

impl<J: FnMut() -> f64> Backoff<J> {
    /// Backoff with jitter from `jitter` (fractions in `[0, 1)`).
    pub fn with_jitter(min: Duration, max: Duration, jitter: J) -> Backoff<J> {
        let min = min.max(Duration::from_millis(1));
        Backoff {
            min,
            max: max.max(min),
            next: min,
            jitter,
        }
    }

    /// Starts over from `min` (after a success).
    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

impl<J: FnMut() -> f64> Iterator for Backoff<J> {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        let factor = 0.8 + 0.4 * (self.jitter)().clamp(0.0, 1.0);
        Some(base.mul_f64(factor).min(self.max))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::with_jitter(Duration::from_secs(1), Duration::from_secs(10), || 0.5);
        let v: Vec<u64> = b.by_ref().take(6).map(|d| d.as_secs()).collect();
        assert_eq!(v, [1, 2, 4, 8, 10, 10]);
        b.reset();
        assert_eq!(b.next(), Some(Duration::from_secs(1)));
        let mut low =
            Backoff::with_jitter(Duration::from_secs(10), Duration::from_secs(60), || 0.0);
        assert_eq!(low.next(), Some(Duration::from_secs(8)));
    }

    #[test]
    fn an_outage_is_reported_once_and_a_recovery_counted() {
        let h = Health::new("ble:hci0");
        assert!(!h.running(), "starting is not a recovery");
        assert!(h.down("adapter powered off"));
        assert!(!h.down("adapter powered off"));
        assert!(!h.down("bluez gone"));
        assert!(h.running());
        let s = h.snapshot();
        assert_eq!(
            (s.state, s.last_outage.as_deref(), s.outages, s.recoveries),
            (State::Running, Some("adapter powered off"), 1, 1)
        );
    }
}

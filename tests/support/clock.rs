//! The one test clock: wall time set by hand, standing still or moving
//! with tokio's (paused) clock, and synchronised unless a test says not.
//! Tests never wait on the real clock.
#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use nearcast::clock::Clock;
use nearcast::core::types::Timestamp;

/// A [`Clock`] a test drives.
pub struct TestClock {
    /// Where tokio's clock stood at the start; `None`: the clock stands still.
    t0: Option<tokio::time::Instant>,
    /// The wall time at the start, in ms (a jump moves it).
    start: AtomicI64,
    synced: AtomicBool,
}

impl TestClock {
    /// Stands still at `at` (its monotonic time too).
    pub fn fixed(at: Timestamp) -> TestClock {
        TestClock {
            t0: None,
            start: AtomicI64::new(at.0),
            synced: AtomicBool::new(true),
        }
    }

    /// Starts at `at` now and moves with tokio's clock, wall and monotonic
    /// alike (until a jump).
    pub fn ticking(at: Timestamp) -> TestClock {
        TestClock {
            t0: Some(tokio::time::Instant::now()),
            ..TestClock::fixed(at)
        }
    }

    /// Moves the wall time as of the start to `at`: everything since moves
    /// with it (NTP setting the clock, a test setting "now").
    pub fn set_start(&self, at: Timestamp) {
        self.start.store(at.0, Ordering::SeqCst);
    }

    /// Steps the wall clock by `ms` (negative: back), the monotonic clock
    /// not at all.
    pub fn step(&self, ms: i64) {
        self.start.fetch_add(ms, Ordering::SeqCst);
    }

    /// What the kernel says about synchronisation from now on.
    pub fn set_synchronized(&self, synced: bool) {
        self.synced.store(synced, Ordering::SeqCst);
    }

    fn elapsed(&self) -> Duration {
        self.t0.map_or(Duration::ZERO, |t0| t0.elapsed())
    }
}

impl Clock for TestClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.start.load(Ordering::SeqCst)).saturating_add(self.elapsed())
    }

    fn monotonic(&self) -> Duration {
        self.elapsed()
    }

    fn synchronized(&self) -> bool {
        self.synced.load(Ordering::SeqCst)
    }
}

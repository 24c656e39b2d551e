//! Is the wall clock trustworthy? The box has no real-time clock: until NTP
//! has set it, it reads 1970 or the time of the last shutdown, and NTP may
//! step it by hours. Decisions and cooldowns stamped with such a time would
//! expire or extend cooldowns wrongly, so nothing is decided or sent until
//! the clock is synchronised and has not jumped for a while.
//!
//! Pure: the shell samples the wall clock, a monotonic clock and the
//! kernel's synchronisation flag and passes them in.

use std::time::Duration;

use super::types::Timestamp;

/// One reading of the clocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClockSample {
    /// Wall time.
    pub wall: Timestamp,
    /// Monotonic time since an arbitrary origin (never jumps).
    pub monotonic: Duration,
    /// The kernel (or an override) says the wall clock is synchronised.
    pub synchronized: bool,
}

/// Why the clock is not trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Distrust {
    /// Not synchronised (yet).
    Unsynchronized,
    /// The wall clock jumped against the monotonic one; trusted again once
    /// it has been steady for the settle time.
    Jumped {
        /// How far, in milliseconds (signed).
        by_ms: i64,
    },
}

/// Tracks trust in the wall clock from successive samples.
#[derive(Clone, Debug)]
pub struct ClockGuard {
    max_jump: Duration,
    settle: Duration,
    offset: Option<i64>,
    steady_since: Option<Duration>,
    last: Option<Distrust>,
}

impl ClockGuard {
    /// A guard that distrusts the clock after a jump of more than
    /// `max_jump`, until it has been steady for `settle`.
    #[must_use]
    pub fn new(max_jump: Duration, settle: Duration) -> ClockGuard {
        ClockGuard {
            max_jump,
            settle,
            offset: None,
            steady_since: None,
            last: None,
        }
    }

    /// Takes a sample; `Ok(())` when the wall clock can be trusted now.
    ///
    /// # Errors
    /// Why it cannot.
    pub fn observe(&mut self, s: ClockSample) -> Result<(), Distrust> {
        let mono_ms = super::types::millis(s.monotonic);
        let offset = s.wall.0.saturating_sub(mono_ms);
        let jumped = self
            .offset
            .map(|o| offset.saturating_sub(o))
            .filter(|d| d.unsigned_abs() > self.max_jump.as_millis() as u64);
        self.offset = Some(offset);
        let verdict = if !s.synchronized {
            self.steady_since = None;
            Err(Distrust::Unsynchronized)
        } else if let Some(by_ms) = jumped {
            self.steady_since = Some(s.monotonic);
            Err(Distrust::Jumped { by_ms })
        } else {
            let since = *self.steady_since.get_or_insert(s.monotonic);
            if s.monotonic.saturating_sub(since) >= self.settle || self.last.is_none() {
                Ok(())
            } else {
                Err(self.last.unwrap_or(Distrust::Unsynchronized))
            }
        };
        self.last = verdict.err();
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(wall_s: i64, mono_s: u64, synchronized: bool) -> ClockSample {
        ClockSample {
            wall: Timestamp::from_secs(wall_s),
            monotonic: Duration::from_secs(mono_s),
            synchronized,
        }
    }

    #[test]
    fn distrusts_until_synchronised_then_settled() {
        let mut g = ClockGuard::new(Duration::from_secs(120), Duration::from_secs(60));
        // Boot: 1970, not synchronised.
        assert_eq!(
            g.observe(sample(30, 30, false)),
            Err(Distrust::Unsynchronized)
        );
        // NTP steps the clock to 2026 and reports synchronised: a jump, settle first.
        let now = 1_763_712_000;
        assert_eq!(
            g.observe(sample(now, 40, true)),
            Err(Distrust::Jumped {
                by_ms: (now - 40) * 1000
            })
        );
        assert!(g.observe(sample(now + 59, 99, true)).is_err());
        assert_eq!(g.observe(sample(now + 60, 100, true)), Ok(()));
        assert_eq!(g.observe(sample(now + 3600, 3640, true)), Ok(()));
    }

    #[test]
    fn a_clock_synchronised_at_start_is_trusted_at_once() {
        let mut g = ClockGuard::new(Duration::from_secs(120), Duration::from_secs(60));
        assert_eq!(g.observe(sample(1_763_712_000, 5, true)), Ok(()));
    }

    #[test]
    fn a_jump_of_hours_suspends_trust_and_small_slews_do_not() {
        let mut g = ClockGuard::new(Duration::from_secs(120), Duration::from_secs(60));
        let t = 1_763_712_000;
        assert!(g.observe(sample(t, 1000, false)).is_err());
        assert!(g.observe(sample(t + 1, 1001, true)).is_err());
        assert_eq!(g.observe(sample(t + 61, 1061, true)), Ok(()));
        // NTP slews a second: fine.
        assert_eq!(g.observe(sample(t + 121, 1120, true)), Ok(()));
        assert_eq!(g.observe(sample(t + 121, 1121, true)), Ok(()));
        // Someone sets the clock three hours ahead.
        assert_eq!(
            g.observe(sample(t + 121 + 3 * 3600, 1121, true)),
            Err(Distrust::Jumped {
                by_ms: 3 * 3600 * 1000
            })
        );
        assert!(g.observe(sample(t + 150 + 3 * 3600, 1150, true)).is_err());
        // And back again: another jump, another settle.
        assert!(g.observe(sample(t + 200, 1200, true)).is_err());
        assert_eq!(g.observe(sample(t + 260, 1260, true)), Ok(()));
    }
}

//! Where the shell's time comes from: the system's wall clock, a monotonic
//! clock to notice jumps, and the kernel's "synchronised" flag; tests pass
//! a clock of their own.
//!
//! The one clock every layer above `core` reads: the daemon's loop, the live
//! sources (to stamp what they hear) and the API. Knows nothing of them;
//! `core` never reads it (time is an argument there).

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::core::clock_guard::ClockSample;
use crate::core::types::Timestamp;

/// When the wall clock is trusted (`[clock]`; the box has no real-time
/// clock).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClockSettings {
    /// Wait for the kernel to report NTP synchronisation.
    pub require_sync: bool,
    /// A step larger than this (wall against monotonic) is a jump.
    pub max_jump: Duration,
    /// After a jump, trust again once steady this long.
    pub settle: Duration,
}

impl Default for ClockSettings {
    fn default() -> ClockSettings {
        ClockSettings {
            require_sync: true,
            max_jump: Duration::from_secs(120),
            settle: Duration::from_secs(60),
        }
    }
}

/// A source of time for the daemon.
pub trait Clock: Send + Sync {
    /// Wall time.
    fn now(&self) -> Timestamp;
    /// Monotonic time since an arbitrary origin.
    fn monotonic(&self) -> Duration;
    /// Whether the wall clock is synchronised (NTP).
    fn synchronized(&self) -> bool {
        true
    }
    /// All three at once.
    fn sample(&self) -> ClockSample {
        ClockSample {
            wall: self.now(),
            monotonic: self.monotonic(),
            synchronized: self.synchronized(),
        }
    }
}

/// The system clocks. `require_sync: false` trusts an unsynchronised clock
/// (a box without NTP whose time is set by hand).
#[derive(Clone, Copy, Debug)]
pub struct SystemClock {
    /// Ask the kernel whether the clock is synchronised.
    pub require_sync: bool,
}

impl Default for SystemClock {
    fn default() -> SystemClock {
        SystemClock { require_sync: true }
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp(crate::core::types::millis(d))
    }

    fn monotonic(&self) -> Duration {
        static ORIGIN: OnceLock<Instant> = OnceLock::new();
        ORIGIN.get_or_init(Instant::now).elapsed()
    }

    fn synchronized(&self) -> bool {
        // Asked every loop turn: one adjtimex call a second is plenty.
        static CACHE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        if !self.require_sync {
            return true;
        }
        let now_s = self.monotonic().as_secs() + 1;
        let cached = CACHE.load(std::sync::atomic::Ordering::Relaxed);
        if cached >> 1 == now_s {
            return cached & 1 == 1;
        }
        let synced = kernel_synchronized();
        CACHE.store(
            (now_s << 1) | u64::from(synced),
            std::sync::atomic::Ordering::Relaxed,
        );
        synced
    }
}

/// The kernel's NTP status (`adjtimex`): synchronised unless `STA_UNSYNC`
/// is set or the state is `TIME_ERROR`. chrony, systemd-timesyncd and ntpd
/// all clear the flag once they have set the clock.
#[allow(unsafe_code)]
#[must_use]
pub fn kernel_synchronized() -> bool {
    // SAFETY: `timex` is a plain C struct for which all-zero is valid, and
    // with `modes == 0` adjtimex only reads the kernel's state into it.
    let (state, status) = unsafe {
        let mut tx: libc::timex = std::mem::zeroed();
        let state = libc::adjtimex(&raw mut tx);
        (state, tx.status)
    };
    state >= 0 && state != libc::TIME_ERROR && status & libc::STA_UNSYNC == 0
}

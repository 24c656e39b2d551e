//! Where the shell's time comes from: the system's wall clock, a monotonic
//! clock to notice jumps, and the kernel's "synchronised" flag; tests pass
//! a clock of their own.
//!
//! The flag is read with `adjtimex` (modes 0: read only). A seccomp filter
//! (systemd's `ProtectClock=yes`, a container's profile) may answer EPERM
//! even to that; then systemd-timesyncd's flag file
//! (`/run/systemd/timesync/synchronized`, created once it has set the clock
//! this boot) answers instead, and without it the state is
//! [`SyncState::Unreadable`], reported as such, never as "NTP
//! unsynchronised".
//!
//! The one clock every layer above `core` reads: the daemon's loop, the live
//! sources (to stamp what they hear) and the API. Knows nothing of them;
//! `core` never reads it (time is an argument there).

use std::path::Path;
use std::sync::{Mutex, OnceLock};
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

/// What the system says about the wall clock's synchronisation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SyncState {
    /// Synchronised (NTP), or trusted by configuration.
    Synchronized,
    /// The kernel says it is not synchronised (yet).
    Unsynchronized,
    /// The state cannot be read; why, for the log, `stats` and `/healthz`.
    Unreadable(String),
}

impl SyncState {
    /// One word for `stats` and `/healthz`.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            SyncState::Synchronized => "synchronised",
            SyncState::Unsynchronized => "unsynchronised",
            SyncState::Unreadable(_) => "unreadable",
        }
    }
}

/// Whether the daemon trusts the wall clock now, and why not: what the log
/// said, for `stats` (through the status file) and `/healthz`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ClockStatus {
    /// Decisions and sends go ahead.
    pub trusted: bool,
    /// `trusted`, `unsynchronised`, `unreadable` or `jumped`.
    pub state: String,
    /// What is wrong, in words (`cannot read clock sync: …`); empty when
    /// trusted.
    pub detail: String,
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
    /// The synchronisation state with the reason it cannot be read, if so.
    fn sync_state(&self) -> SyncState {
        if self.synchronized() {
            SyncState::Synchronized
        } else {
            SyncState::Unsynchronized
        }
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
        self.sync_state() == SyncState::Synchronized
    }

    fn sync_state(&self) -> SyncState {
        if !self.require_sync {
            return SyncState::Synchronized;
        }
        // Asked every loop turn: one probe a second is plenty.
        static CACHE: Mutex<Option<(u64, SyncState)>> = Mutex::new(None);
        let now_s = self.monotonic().as_secs();
        let Ok(mut cache) = CACHE.lock() else {
            return probe(Path::new(TIMESYNCD_FLAG));
        };
        if let Some((at, state)) = &*cache
            && *at == now_s
        {
            return state.clone();
        }
        let state = probe(Path::new(TIMESYNCD_FLAG));
        *cache = Some((now_s, state.clone()));
        state
    }
}

/// systemd-timesyncd creates this file once it has synchronised the clock
/// (`/run` is emptied at boot, so it speaks for this boot only).
pub const TIMESYNCD_FLAG: &str = "/run/systemd/timesync/synchronized";

/// The kernel's answer, or timesyncd's `flag` file when the kernel cannot
/// be asked.
#[must_use]
pub fn probe(flag: &Path) -> SyncState {
    match kernel_synchronized() {
        Ok(true) => SyncState::Synchronized,
        Ok(false) => SyncState::Unsynchronized,
        Err(e) if flag.exists() => {
            tracing::debug!(error = %e, "adjtimex refused; systemd-timesyncd says synchronised");
            SyncState::Synchronized
        }
        Err(e) => SyncState::Unreadable(format!(
            "adjtimex: {e}{}; and {} does not exist",
            if e.raw_os_error() == Some(libc::EPERM) {
                " (a seccomp filter such as systemd's ProtectClock=yes denies it)"
            } else {
                ""
            },
            flag.display()
        )),
    }
}

/// The kernel's NTP status (`adjtimex` with modes 0, which only reads):
/// synchronised unless `STA_UNSYNC` is set or the state is `TIME_ERROR`.
/// chrony, systemd-timesyncd and ntpd all clear the flag once they have
/// set the clock.
///
/// # Errors
/// The call was refused (EPERM from a seccomp filter).
#[allow(unsafe_code)]
pub fn kernel_synchronized() -> std::io::Result<bool> {
    // SAFETY: `timex` is a plain C struct for which all-zero is valid, and
    // with `modes == 0` adjtimex only reads the kernel's state into it.
    let (state, status) = unsafe {
        let mut tx: libc::timex = std::mem::zeroed();
        let state = libc::adjtimex(&raw mut tx);
        (state, tx.status)
    };
    if state < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(state != libc::TIME_ERROR && status & libc::STA_UNSYNC == 0)
}

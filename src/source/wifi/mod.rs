//! Wi-Fi presence: customers who joined the store's Wi-Fi (the captive
//! portal registered their per-network MAC) are present while associated.
//! Three backends, chosen in `nearcast.toml`:
//! - [`hostapd`]: the access point's control interface (`ATTACH`,
//!   `AP-STA-CONNECTED` / `AP-STA-DISCONNECTED`; stations listed on start).
//! - [`neighbours`]: the kernel neighbour table through rtnetlink, for a box
//!   that routes the store LAN or sits on it.
//! - [`leases`]: a dnsmasq leases file, re-read when it changes.
//!
//! Each backend reports stations as `joined` / `left` [`WifiPresence`]s; a
//! [`Roster`] turns snapshots and state changes into exactly those
//! transitions. Presence itself (and merging with BLE, so one visit is one
//! greeting whichever source saw the customer) is `core::presence`'s.
//! Backends retry with backoff when their AP, socket or file goes away,
//! log the outage once and never end the daemon. MACs are never logged:
//! most stations belong to people who did not opt in.

pub mod hostapd;
pub mod leases;
pub mod neighbours;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::Feed;
use super::health::{Backoff, Health};
use crate::clock::Clock;
use crate::core::types::{BdAddr, Observation, Timestamp, WifiKind, WifiPresence};

/// Which backend, with its settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    /// hostapd's control interface.
    Hostapd {
        /// The AP's control socket (`/var/run/hostapd/wlan0`).
        control: PathBuf,
        /// How often the AP is pinged to notice a restart.
        ping_every: Duration,
    },
    /// The kernel neighbour table.
    Neighbours {
        /// Only this interface (all when unset).
        interface: Option<String>,
        /// A `stale` entry (no traffic confirmed lately) still counts as
        /// present for this long.
        stale_after: Duration,
    },
    /// A dnsmasq leases file.
    Leases {
        /// The file.
        file: PathBuf,
        /// How often its size and modification time are checked.
        poll: Duration,
    },
}

impl Backend {
    /// `hostapd`, `neighbours` or `leases` (the reports' `source`).
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Hostapd { .. } => "hostapd",
            Backend::Neighbours { .. } => "neighbours",
            Backend::Leases { .. } => "leases",
        }
    }
}

/// `[[source]] kind = "wifi"`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WifiSettings {
    /// The backend.
    pub backend: Backend,
    /// First retry delay after an outage.
    pub retry_min: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// How often every present station is reported `seen`: presence
    /// confirms an arrival on a later observation (minimum dwell), and a
    /// backend only reports changes.
    pub seen_every: Duration,
}

impl WifiSettings {
    /// Default retry delays for `backend`.
    #[must_use]
    pub fn new(backend: Backend) -> WifiSettings {
        WifiSettings {
            backend,
            retry_min: Duration::from_secs(1),
            retry_max: Duration::from_secs(30),
            seen_every: Duration::from_secs(5),
        }
    }
}

/// The stations currently present, turning snapshots and single changes
/// into `joined` / `left` transitions. Pure.
#[derive(Debug, Default)]
pub struct Roster {
    present: HashSet<BdAddr, foldhash::fast::RandomState>,
}

impl Roster {
    /// Marks one station present or gone; the transition, if any.
    pub fn set(&mut self, mac: BdAddr, present: bool) -> Option<WifiKind> {
        if present {
            self.present.insert(mac).then_some(WifiKind::Joined)
        } else {
            self.present.remove(&mac).then_some(WifiKind::Left)
        }
    }

    /// Replaces the whole set: stations not in `now` left, new ones joined
    /// (left first, each group in address order).
    pub fn replace(&mut self, now: impl IntoIterator<Item = BdAddr>) -> Vec<(WifiKind, BdAddr)> {
        let now: HashSet<BdAddr, foldhash::fast::RandomState> = now.into_iter().collect();
        let mut left: Vec<BdAddr> = self.present.difference(&now).copied().collect();
        let mut joined: Vec<BdAddr> = now.difference(&self.present).copied().collect();
        left.sort_unstable();
        joined.sort_unstable();
        self.present = now;
        left.into_iter()
            .map(|m| (WifiKind::Left, m))
            .chain(joined.into_iter().map(|m| (WifiKind::Joined, m)))
            .collect()
    }

    /// The stations present, in address order.
    #[must_use]
    pub fn stations(&self) -> Vec<BdAddr> {
        let mut v: Vec<BdAddr> = self.present.iter().copied().collect();
        v.sort_unstable();
        v
    }

    /// Number of stations present.
    #[must_use]
    pub fn len(&self) -> usize {
        self.present.len()
    }

    /// True when nobody is present.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.present.is_empty()
    }
}

/// Sends one report; false when the pipeline is gone.
pub(crate) fn report(
    feed: &Feed,
    source: &'static str,
    at: Timestamp,
    kind: WifiKind,
    mac: BdAddr,
) -> bool {
    Health::bump(&feed.health.events);
    feed.send(Observation::Wifi(WifiPresence {
        at,
        source: source.into(),
        mac,
        kind,
    }))
}

/// Reports every present station `seen`; false when the pipeline is gone.
pub(crate) fn seen_all(feed: &Feed, source: &'static str, at: Timestamp, roster: &Roster) -> bool {
    roster
        .stations()
        .into_iter()
        .all(|mac| report(feed, source, at, WifiKind::Seen, mac))
}

/// Why a backend session ended.
pub(crate) enum Ended {
    /// The pipeline is gone: stop.
    Closed,
    /// The backend failed: retry after a backoff.
    Down(&'static str),
}

/// What every backend's session works with besides its own settings.
pub(crate) struct Session<'a> {
    /// How often present stations are reported `seen` again.
    pub(crate) seen_every: Duration,
    /// Stamps the reports.
    pub(crate) clock: &'a dyn Clock,
    /// Where reports go.
    pub(crate) feed: &'a Feed,
    /// Who is present, across sessions.
    pub(crate) roster: &'a mut Roster,
    /// Reset once a session is up.
    pub(crate) backoff: &'a mut Backoff,
}

/// Runs the configured backend until the pipeline goes away; retries with
/// backoff whatever happens to the AP, the socket or the file.
pub async fn run(settings: WifiSettings, clock: Arc<dyn Clock>, feed: Feed) {
    let mut backoff = Backoff::new(settings.retry_min, settings.retry_max);
    let mut roster = Roster::default();
    let name = settings.backend.name();
    loop {
        let session = Session {
            seen_every: settings.seen_every,
            clock: &*clock,
            feed: &feed,
            roster: &mut roster,
            backoff: &mut backoff,
        };
        let ended = match &settings.backend {
            Backend::Hostapd {
                control,
                ping_every,
            } => hostapd::session(control, *ping_every, session).await,
            Backend::Neighbours {
                interface,
                stale_after,
            } => neighbours::session(interface.as_deref(), *stale_after, session).await,
            Backend::Leases { file, poll } => leases::session(file, *poll, session).await,
        };
        match ended {
            Ended::Closed => return,
            Ended::Down(why) => {
                if feed.health.down(why) {
                    tracing::warn!(
                        backend = name,
                        reason = why,
                        "wifi presence lost; recovering"
                    );
                } else {
                    Health::bump(&feed.health.failed_attempts);
                    tracing::debug!(
                        backend = name,
                        reason = why,
                        "wifi presence still unavailable"
                    );
                }
            }
        }
        if feed.is_closed() {
            return;
        }
        tokio::time::sleep(backoff.next().unwrap_or(settings.retry_max)).await;
    }
}

/// Marks the backend running (logging a recovery) and resets the backoff.
pub(crate) fn up(feed: &Feed, backoff: &mut Backoff, backend: &'static str) {
    backoff.reset();
    Health::bump(&feed.health.connects);
    if feed.health.running() {
        tracing::info!(backend, "wifi presence back");
    } else {
        tracing::info!(backend, "wifi presence started");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(last: u8) -> BdAddr {
        BdAddr([2, 0, 0, 0, 0, last])
    }

    #[test]
    fn the_roster_reports_transitions_only() {
        let mut r = Roster::default();
        assert_eq!(r.set(mac(1), true), Some(WifiKind::Joined));
        assert_eq!(r.set(mac(1), true), None);
        assert_eq!(r.set(mac(2), false), None);
        assert_eq!(
            r.replace([mac(3), mac(2)]),
            [
                (WifiKind::Left, mac(1)),
                (WifiKind::Joined, mac(2)),
                (WifiKind::Joined, mac(3))
            ]
        );
        assert_eq!(r.replace([mac(3), mac(2)]), []);
        assert_eq!(r.set(mac(3), false), Some(WifiKind::Left));
        assert_eq!(r.len(), 1);
    }
}

//! Wi-Fi presence from the kernel neighbour table (ARP / NDP), for a box
//! that is the store LAN's router or sits on it: a phone that talks on the
//! network has a neighbour entry with its MAC.
//!
//! Read through rtnetlink (the rust-netlink project's crates, which the
//! `ip` tool's netlink messages map onto one to one): a dump on start, then
//! `RTM_NEWNEIGH` / `RTM_DELNEIGH` notifications from the neighbour
//! multicast group. No polling, no `ip neigh` parsing, no unsafe code.
//!
//! What the states mean for presence ([`NeighbourTable`], pure):
//! `reachable`, `delay` and `probe` are present; `stale` (nothing confirmed
//! lately, but the entry is there) counts as present for `stale_after` from
//! when it went stale; `failed`, `incomplete` and deletion are gone. A MAC
//! is present while any of its entries (IPv4 and IPv6) is.
//!
//! "When it went stale" is the kernel's, not ours: every entry in a dump
//! or a notification carries its age (`NDA_CACHEINFO`'s `updated`, the time
//! since its state last changed). The kernel keeps stale entries of a small
//! table for hours, so on start (or after the netlink socket is reopened
//! and the table dumped again) an entry that went stale long ago must not
//! count from the moment it is read: a phone that left before the daemon
//! started does not arrive.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use rtnetlink::packet_core::NetlinkPayload;
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};

use super::{Ended, Roster, Session, report, seen_all, up};
use crate::core::types::{BdAddr, Timestamp};
use crate::source::Feed;
use crate::source::health::Health;

const SOURCE: &str = "neighbours";

/// The unit of the kernel's neighbour ages (`jiffies_to_clock_t`):
/// `USER_HZ`, 100 on every architecture nearcast builds for (x86, arm,
/// arm64), as `ip -s neigh` assumes through `sysconf(_SC_CLK_TCK)`.
const USER_HZ: u64 = 100;

/// What a neighbour state says about presence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// Confirmed reachable (or being confirmed).
    Present,
    /// In the table, not confirmed lately.
    Stale,
    /// Unreachable or removed.
    Gone,
    /// Not about a station (static or no-ARP entries): ignored.
    Ignore,
}

/// Classifies a kernel neighbour state.
#[must_use]
pub fn classify(state: NeighbourState) -> Class {
    match state {
        NeighbourState::Reachable | NeighbourState::Delay | NeighbourState::Probe => Class::Present,
        NeighbourState::Stale => Class::Stale,
        NeighbourState::Failed | NeighbourState::Incomplete | NeighbourState::None => Class::Gone,
        _ => Class::Ignore,
    }
}

/// One neighbour entry: the interface and the IP address it is for.
pub type Key = (u32, Vec<u8>);

#[derive(Clone, Debug)]
struct Entry {
    mac: BdAddr,
    /// Present until then (`None`: present with no end in sight).
    until: Option<Timestamp>,
}

/// The neighbour table as presence: entries by (interface, IP), each with
/// the MAC it resolves to and until when it counts. Pure.
#[derive(Debug)]
pub struct NeighbourTable {
    stale_after: Duration,
    entries: HashMap<Key, Entry>,
}

impl NeighbourTable {
    /// A table where stale entries count for `stale_after`.
    #[must_use]
    pub fn new(stale_after: Duration) -> NeighbourTable {
        NeighbourTable {
            stale_after,
            entries: HashMap::new(),
        }
    }

    /// Applies one entry's new state at `at`. `mac` is absent for entries
    /// being resolved or failed; the entry's known MAC is used then. `age`
    /// is how long ago the kernel last changed the entry's state (it
    /// reports it with every entry); a stale entry counts from then.
    pub fn update(
        &mut self,
        at: Timestamp,
        key: Key,
        mac: Option<BdAddr>,
        class: Class,
        age: Option<Duration>,
    ) {
        match class {
            Class::Ignore => {}
            Class::Gone => {
                self.entries.remove(&key);
            }
            Class::Present | Class::Stale => {
                let Some(mac) = mac.or_else(|| self.entries.get(&key).map(|e| e.mac)) else {
                    return;
                };
                let until = match class {
                    Class::Stale => {
                        // Stale since the kernel says it went stale; without
                        // an age, since we first saw it stale (keeping the
                        // earlier deadline if it already was).
                        let prev = self.entries.get(&key).and_then(|e| e.until);
                        let since = age.map(|a| at.saturating_sub(a));
                        Some(match (since, prev) {
                            (Some(since), _) => since.saturating_add(self.stale_after),
                            (None, Some(prev)) => prev,
                            (None, None) => at.saturating_add(self.stale_after),
                        })
                    }
                    _ => None,
                };
                self.entries.insert(key, Entry { mac, until });
            }
        }
    }

    /// Forgets an entry (`RTM_DELNEIGH`).
    pub fn remove(&mut self, key: &Key) {
        self.entries.remove(key);
    }

    /// The MACs present at `at`.
    pub fn present(&self, at: Timestamp) -> impl Iterator<Item = BdAddr> + '_ {
        self.entries
            .values()
            .filter(move |e| e.until.is_none_or(|u| at < u))
            .map(|e| e.mac)
    }

    /// When a stale entry next stops counting.
    #[must_use]
    pub fn next_deadline(&self, at: Timestamp) -> Option<Timestamp> {
        self.entries
            .values()
            .filter_map(|e| e.until)
            .filter(|u| *u > at)
            .min()
    }
}

/// One neighbour message, as the table takes it.
struct Parsed {
    key: Key,
    mac: Option<BdAddr>,
    class: Class,
    /// Time since the entry's state last changed.
    age: Option<Duration>,
}

/// The key, MAC, class and age of a kernel neighbour message; `None` when
/// it is on another interface or not an IP neighbour.
fn parse(msg: &NeighbourMessage, ifindex: Option<u32>) -> Option<Parsed> {
    if ifindex.is_some_and(|i| i != msg.header.ifindex) {
        return None;
    }
    let mut ip = None;
    let mut mac = None;
    let mut age = None;
    for a in &msg.attributes {
        match a {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => {
                ip = Some(v4.octets().to_vec());
            }
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => {
                ip = Some(v6.octets().to_vec());
            }
            NeighbourAttribute::LinkLayerAddress(l) => {
                mac = <[u8; 6]>::try_from(l.as_slice()).ok().map(BdAddr);
            }
            NeighbourAttribute::CacheInfo(c) => {
                age = Some(Duration::from_millis(u64::from(c.updated) * 1000 / USER_HZ));
            }
            _ => {}
        }
    }
    Some(Parsed {
        key: (msg.header.ifindex, ip?),
        mac,
        class: classify(msg.header.state),
        age,
    })
}

/// Brings the roster in line with the table at `at`; false when the
/// pipeline is gone.
fn sync(table: &NeighbourTable, roster: &mut Roster, at: Timestamp, feed: &Feed) -> bool {
    for (kind, mac) in roster.replace(table.present(at)) {
        if !report(feed, SOURCE, at, kind, mac) {
            return false;
        }
    }
    true
}

/// One rtnetlink session, until it fails or the pipeline is gone.
pub(crate) async fn session(
    interface: Option<&str>,
    stale_after: Duration,
    s: Session<'_>,
) -> Ended {
    let Ok((conn, handle, mut messages)) =
        rtnetlink::new_multicast_connection(&[rtnetlink::MulticastGroup::Neigh])
    else {
        return Ended::Down("cannot open a netlink socket");
    };
    let conn = tokio::spawn(conn);
    let ended = async {
        let ifindex = match interface {
            None => None,
            Some(name) => {
                let link = handle
                    .link()
                    .get()
                    .match_name(name.to_owned())
                    .execute()
                    .try_next()
                    .await;
                match link {
                    Ok(Some(l)) => Some(l.header.index),
                    _ => return Ended::Down("interface not found"),
                }
            }
        };
        let mut table = NeighbourTable::new(stale_after);
        let mut dump = handle.neighbours().get().execute();
        let at = s.clock.now();
        loop {
            match dump.try_next().await {
                Ok(Some(msg)) => {
                    if let Some(p) = parse(&msg, ifindex) {
                        table.update(at, p.key, p.mac, p.class, p.age);
                    }
                }
                Ok(None) => break,
                Err(_) => return Ended::Down("neighbour dump failed"),
            }
        }
        if !sync(&table, s.roster, at, s.feed) {
            return Ended::Closed;
        }
        up(s.feed, s.backoff, SOURCE);
        let mut seen = tokio::time::interval(s.seen_every.max(Duration::from_millis(100)));
        seen.tick().await;
        loop {
            let t = s.clock.now();
            let wait = table
                .next_deadline(t)
                .map_or(Duration::from_secs(3600), |d| d.since(t));
            tokio::select! {
                got = messages.next() => {
                    let Some((msg, _)) = got else { return Ended::Down("netlink socket closed") };
                    Health::bump(&s.feed.health.events);
                    let t = s.clock.now();
                    match msg.payload {
                        NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewNeighbour(n)) => {
                            if let Some(p) = parse(&n, ifindex) {
                                table.update(t, p.key, p.mac, p.class, p.age);
                            }
                        }
                        NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelNeighbour(n)) => {
                            if let Some(p) = parse(&n, ifindex) {
                                table.remove(&p.key);
                            }
                        }
                        _ => continue,
                    }
                    if !sync(&table, s.roster, t, s.feed) {
                        return Ended::Closed;
                    }
                }
                _ = seen.tick() => {
                    let t = s.clock.now();
                    if !sync(&table, s.roster, t, s.feed) || !seen_all(s.feed, SOURCE, t, s.roster) {
                        return Ended::Closed;
                    }
                }
                () = tokio::time::sleep(wait) => {
                    if !sync(&table, s.roster, s.clock.now(), s.feed) {
                        return Ended::Closed;
                    }
                }
            }
            if s.feed.is_closed() {
                return Ended::Closed;
            }
        }
    }
    .await;
    conn.abort();
    ended
}

#[cfg(test)]
mod tests {
    use super::*;

    const PHONE: BdAddr = BdAddr([0xC4, 0x7C, 0x8D, 0x6A, 0x11, 0x02]);

    fn present(t: &NeighbourTable, s: i64) -> Vec<BdAddr> {
        let mut v: Vec<_> = t.present(Timestamp::from_secs(s)).collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    #[test]
    fn states_map_to_presence() {
        assert_eq!(classify(NeighbourState::Reachable), Class::Present);
        assert_eq!(classify(NeighbourState::Probe), Class::Present);
        assert_eq!(classify(NeighbourState::Stale), Class::Stale);
        assert_eq!(classify(NeighbourState::Failed), Class::Gone);
        assert_eq!(classify(NeighbourState::Permanent), Class::Ignore);
    }

    #[test]
    fn a_stale_entry_counts_for_a_while_and_a_failed_one_not_at_all() {
        let mut t = NeighbourTable::new(Duration::from_secs(60));
        let v4: Key = (3, vec![10, 0, 0, 2]);
        let v6: Key = (
            3,
            vec![0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
        );
        t.update(
            Timestamp::from_secs(0),
            v4.clone(),
            Some(PHONE),
            Class::Present,
            None,
        );
        t.update(
            Timestamp::from_secs(1),
            v6.clone(),
            Some(PHONE),
            Class::Present,
            None,
        );
        assert_eq!(present(&t, 1), [PHONE]);
        // Both go stale at 30 s; stale again later does not extend it.
        t.update(
            Timestamp::from_secs(30),
            v4.clone(),
            None,
            Class::Stale,
            None,
        );
        t.update(
            Timestamp::from_secs(30),
            v6.clone(),
            None,
            Class::Stale,
            None,
        );
        t.update(
            Timestamp::from_secs(50),
            v4.clone(),
            None,
            Class::Stale,
            None,
        );
        assert_eq!(
            t.next_deadline(Timestamp::from_secs(50)),
            Some(Timestamp::from_secs(90))
        );
        assert_eq!(present(&t, 89), [PHONE]);
        assert_eq!(present(&t, 90), []);
        // Reachable again: present with no deadline.
        t.update(
            Timestamp::from_secs(95),
            v4.clone(),
            None,
            Class::Present,
            None,
        );
        assert_eq!(present(&t, 1000), [PHONE]);
        // Failed (no MAC in the message) removes the entry.
        t.update(
            Timestamp::from_secs(96),
            v4.clone(),
            None,
            Class::Gone,
            None,
        );
        t.remove(&v6);
        assert_eq!(present(&t, 96), []);
        // An entry never resolved has no MAC and is not a station.
        t.update(
            Timestamp::from_secs(97),
            (3, vec![10, 0, 0, 9]),
            None,
            Class::Present,
            None,
        );
        assert_eq!(present(&t, 97), []);
    }

    #[test]
    fn a_stale_entry_counts_from_when_the_kernel_says_it_went_stale() {
        let mut t = NeighbourTable::new(Duration::from_secs(60));
        let left: Key = (3, vec![10, 0, 0, 2]);
        let fresh: Key = (3, vec![10, 0, 0, 3]);
        let other = BdAddr([0xC4, 0x7C, 0x8D, 0x6A, 0x11, 0x03]);
        // Read at 1000 s (a daemon start): one went stale 38 s ago, one
        // 61 s ago (as long ago as stale_after, and more: never present).
        t.update(
            Timestamp::from_secs(1000),
            left.clone(),
            Some(PHONE),
            Class::Stale,
            Some(Duration::from_secs(38)),
        );
        t.update(
            Timestamp::from_secs(1000),
            fresh.clone(),
            Some(other),
            Class::Stale,
            Some(Duration::from_secs(61)),
        );
        assert_eq!(present(&t, 1000), [PHONE]);
        assert_eq!(
            t.next_deadline(Timestamp::from_secs(1000)),
            Some(Timestamp::from_secs(1022))
        );
        assert_eq!(present(&t, 1022), []);
        // A notification later carries the same age, moved on: same deadline.
        t.update(
            Timestamp::from_secs(1010),
            left,
            None,
            Class::Stale,
            Some(Duration::from_secs(48)),
        );
        assert_eq!(
            t.next_deadline(Timestamp::from_secs(1010)),
            Some(Timestamp::from_secs(1022))
        );
    }

    #[test]
    fn the_age_comes_from_the_cache_info_in_user_hz() {
        use rtnetlink::packet_route::neighbour::NeighbourCacheInfo;
        let mut msg = NeighbourMessage::default();
        msg.header.ifindex = 3;
        msg.header.state = NeighbourState::Stale;
        // confirmed, used, updated, refcnt, as the kernel lays them out.
        let bytes: Vec<u8> = [9_000u32, 9_000, 3_812, 1]
            .iter()
            .flat_map(|v| v.to_ne_bytes())
            .collect();
        let info = NeighbourCacheInfo::parse(&bytes).unwrap();
        msg.attributes = vec![
            NeighbourAttribute::Destination(NeighbourAddress::Inet([10, 0, 0, 2].into())),
            NeighbourAttribute::LinkLayerAddress(PHONE.0.to_vec()),
            NeighbourAttribute::CacheInfo(info),
        ];
        let p = parse(&msg, Some(3)).unwrap();
        assert_eq!(p.key, (3, vec![10, 0, 0, 2]));
        assert_eq!(p.mac, Some(PHONE));
        assert_eq!(p.class, Class::Stale);
        assert_eq!(p.age, Some(Duration::from_millis(38_120)));
        assert!(parse(&msg, Some(4)).is_none());
    }
}

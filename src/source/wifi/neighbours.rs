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
    /// being resolved or failed; the entry's known MAC is used then.
    pub fn update(&mut self, at: Timestamp, key: Key, mac: Option<BdAddr>, class: Class) {
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
                        // Stale since its last confirmation: keep the earlier
                        // deadline if it was already stale.
                        let prev = self.entries.get(&key).and_then(|e| e.until);
                        Some(prev.unwrap_or_else(|| at.saturating_add(self.stale_after)))
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

/// The key, MAC and class of a kernel neighbour message; `None` when it is
/// on another interface or not an IP neighbour.
fn parse(msg: &NeighbourMessage, ifindex: Option<u32>) -> Option<(Key, Option<BdAddr>, Class)> {
    if ifindex.is_some_and(|i| i != msg.header.ifindex) {
        return None;
    }
    let mut ip = None;
    let mut mac = None;
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
            _ => {}
        }
    }
    Some(((msg.header.ifindex, ip?), mac, classify(msg.header.state)))
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
                    if let Some((key, mac, class)) = parse(&msg, ifindex) {
                        table.update(at, key, mac, class);
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
                            if let Some((key, mac, class)) = parse(&n, ifindex) {
                                table.update(t, key, mac, class);
                            }
                        }
                        NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelNeighbour(n)) => {
                            if let Some((key, _, _)) = parse(&n, ifindex) {
                                table.remove(&key);
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
        );
        t.update(
            Timestamp::from_secs(1),
            v6.clone(),
            Some(PHONE),
            Class::Present,
        );
        assert_eq!(present(&t, 1), [PHONE]);
        // Both go stale at 30 s; stale again later does not extend it.
        t.update(Timestamp::from_secs(30), v4.clone(), None, Class::Stale);
        t.update(Timestamp::from_secs(30), v6.clone(), None, Class::Stale);
        t.update(Timestamp::from_secs(50), v4.clone(), None, Class::Stale);
        assert_eq!(
            t.next_deadline(Timestamp::from_secs(50)),
            Some(Timestamp::from_secs(90))
        );
        assert_eq!(present(&t, 89), [PHONE]);
        assert_eq!(present(&t, 90), []);
        // Reachable again: present with no deadline.
        t.update(Timestamp::from_secs(95), v4.clone(), None, Class::Present);
        assert_eq!(present(&t, 1000), [PHONE]);
        // Failed (no MAC in the message) removes the entry.
        t.update(Timestamp::from_secs(96), v4.clone(), None, Class::Gone);
        t.remove(&v6);
        assert_eq!(present(&t, 96), []);
        // An entry never resolved has no MAC and is not a station.
        t.update(
            Timestamp::from_secs(97),
            (3, vec![10, 0, 0, 9]),
            None,
            Class::Present,
        );
        assert_eq!(present(&t, 97), []);
    }
}

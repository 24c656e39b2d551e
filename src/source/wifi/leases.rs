//! Wi-Fi presence from a dnsmasq leases file: one line per lease,
//! `<expiry, Unix seconds or 0 for infinite> <mac> <ip> <hostname|*> <client id|*>`.
//! A MAC with an unexpired lease is present.
//!
//! dnsmasq rewrites the file in place (truncate, write, flush) whenever a
//! lease changes; other DHCP servers write a new file and rename it. Both
//! are caught by polling its size, modification time and inode, which costs
//! one `stat` per poll and needs no inotify watch to re-arm after a rename.
//! A read is used only if the file did not change while it was read, and
//! a file that suddenly reads empty is believed only on the next poll, so a
//! rewrite caught half-way never makes everyone leave.
//!
//! Note that a lease outlives the visit (leases last hours): this backend
//! is the coarsest of the three.

use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use super::{Ended, Session, report, seen_all, up};
use crate::core::types::{BdAddr, Timestamp};
use crate::source::health::Health;

const SOURCE: &str = "leases";

/// Parses a leases file into (MAC, expiry) pairs; `None` expiry means
/// infinite. Malformed lines (and dnsmasq's `duid` line) are skipped.
#[must_use]
pub fn parse(text: &str) -> Vec<(BdAddr, Option<Timestamp>)> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let expiry: i64 = f.next()?.parse().ok()?;
            let mac = BdAddr::parse(f.next()?)?;
            f.next()?; // the IP address: a lease line has one
            Some((mac, (expiry != 0).then(|| Timestamp::from_secs(expiry))))
        })
        .collect()
}

/// The MACs whose leases are valid at `at`.
pub fn present(
    leases: &[(BdAddr, Option<Timestamp>)],
    at: Timestamp,
) -> impl Iterator<Item = BdAddr> + '_ {
    leases
        .iter()
        .filter(move |(_, exp)| exp.is_none_or(|e| at < e))
        .map(|(m, _)| *m)
}

/// Size, modification time and inode: what changes when the file does.
fn stamp(path: &Path) -> std::io::Result<(u64, u128, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path)?;
    let mtime = m
        .modified()?
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    Ok((m.len(), mtime, m.ino()))
}

/// Watches the file until the pipeline is gone or the file cannot be read.
pub(crate) async fn session(file: &Path, poll: Duration, s: Session<'_>) -> Ended {
    let mut seen = None;
    let mut leases: Vec<(BdAddr, Option<Timestamp>)> = Vec::new();
    let mut doubt_empty = false;
    let mut started = false;
    let mut last_seen = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(poll.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if s.feed.is_closed() {
            return Ended::Closed;
        }
        let Ok(before) = stamp(file) else {
            return Ended::Down("leases file unreadable");
        };
        if seen != Some(before) {
            let Ok(text) = std::fs::read_to_string(file) else {
                return Ended::Down("leases file unreadable");
            };
            if stamp(file).ok() != Some(before) {
                continue; // changed while we read it: next poll
            }
            let parsed = parse(&text);
            if parsed.is_empty() && !leases.is_empty() && !doubt_empty {
                // Perhaps caught between truncate and write: look again.
                doubt_empty = true;
                continue;
            }
            doubt_empty = false;
            Health::bump(&s.feed.health.events);
            seen = Some(before);
            leases = parsed;
        }
        if !started {
            started = true;
            up(s.feed, s.backoff, SOURCE);
        }
        let at = s.clock.now();
        for (kind, mac) in s.roster.replace(present(&leases, at)) {
            if !report(s.feed, SOURCE, at, kind, mac) {
                return Ended::Closed;
            }
        }
        if last_seen.elapsed() >= s.seen_every {
            last_seen = tokio::time::Instant::now();
            if !seen_all(s.feed, SOURCE, at, s.roster) {
                return Ended::Closed;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_lines_parse_and_expire() {
        let text = "1763712600 c4:7c:8d:6a:11:02 192.168.1.23 anna-phone 01:c4:7c:8d:6a:11:02\n\
                    0 02:00:00:00:00:07 192.168.1.24 * *\n\
                    duid 00:01:00:01:2c:5f:1e:4a:52:54:00:12:34:56\n\
                    garbage\n\
                    1763712000 zz:00:00:00:00:01 192.168.1.25 * *\n";
        let l = parse(text);
        assert_eq!(l.len(), 2);
        let anna = BdAddr::parse("C4:7C:8D:6A:11:02").unwrap();
        let forever = BdAddr::parse("02:00:00:00:00:07").unwrap();
        let at = |s| present(&l, Timestamp::from_secs(s)).collect::<Vec<_>>();
        assert_eq!(at(1_763_712_599), [anna, forever]);
        assert_eq!(at(1_763_712_600), [forever]);
    }
}

//! Wi-Fi presence from hostapd's control interface: a Unix datagram socket
//! per AP interface (`/var/run/hostapd/wlan0`). One client socket is
//! `ATTACH`ed and receives `AP-STA-CONNECTED <mac>` /
//! `AP-STA-DISCONNECTED <mac>` events; a second one sends requests
//! (`STA-FIRST` / `STA-NEXT` to list the stations on start, `PING` to
//! notice hostapd going away), so replies never mix with events.
//!
//! Client sockets are bound in the abstract namespace: nothing to clean up
//! in the file system, whatever happens.

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::UnixDatagram;

use super::{Ended, Session, report, seen_all, up};
use crate::core::types::{BdAddr, WifiKind};

const SOURCE: &str = "hostapd";
/// hostapd answers in milliseconds; a request not answered in this long
/// means it is gone or wedged.
const REPLY_TIMEOUT: Duration = Duration::from_secs(2);
/// Stations listed at most (hostapd supports a few thousand at most).
const MAX_STATIONS: usize = 4096;

/// Parses one unsolicited event (`<3>AP-STA-CONNECTED 02:00:00:00:01:00`,
/// possibly prefixed `IFNAME=wlan0 `). Other events give `None`.
#[must_use]
pub fn parse_event(msg: &str) -> Option<(WifiKind, BdAddr)> {
    let body = msg.rsplit_once('>').map_or(msg, |(_, b)| b);
    let mut words = body.split_whitespace();
    let kind = match words.next()? {
        "AP-STA-CONNECTED" => WifiKind::Joined,
        "AP-STA-DISCONNECTED" => WifiKind::Left,
        _ => return None,
    };
    Some((kind, BdAddr::parse(words.next()?)?))
}

/// The station a `STA-FIRST` / `STA-NEXT` reply describes (its first line);
/// `None` at the end of the list.
#[must_use]
pub fn parse_station(reply: &str) -> Option<BdAddr> {
    BdAddr::parse(reply.lines().next()?.trim())
}

static CLIENTS: AtomicU64 = AtomicU64::new(0);

/// A client socket bound to a fresh abstract name, connected to `control`.
fn client(control: &Path) -> io::Result<UnixDatagram> {
    let n = CLIENTS.fetch_add(1, Ordering::Relaxed);
    let name = format!("nearcast-hostapd-{}-{n}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
    let sock = std::os::unix::net::UnixDatagram::bind_addr(&addr)?;
    sock.connect(control)?;
    sock.set_nonblocking(true)?;
    UnixDatagram::from_std(sock)
}

/// Sends `cmd` and waits for the reply.
async fn request(sock: &UnixDatagram, cmd: &str) -> io::Result<String> {
    sock.send(cmd.as_bytes()).await?;
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(REPLY_TIMEOUT, sock.recv(&mut buf))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no reply"))??;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// Every station associated now.
async fn stations(sock: &UnixDatagram) -> io::Result<Vec<BdAddr>> {
    let mut out = Vec::new();
    let mut next = parse_station(&request(sock, "STA-FIRST").await?);
    while let Some(mac) = next {
        if out.len() >= MAX_STATIONS {
            break;
        }
        out.push(mac);
        next = parse_station(&request(sock, &format!("STA-NEXT {mac}")).await?);
    }
    Ok(out)
}

/// Attaches the event socket: `ATTACH`, then wait for its `OK` (skipping
/// any event that slips in before it).
async fn attach(sock: &UnixDatagram) -> io::Result<()> {
    sock.send(b"ATTACH").await?;
    let mut buf = vec![0u8; 4096];
    let wait = async {
        loop {
            let n = sock.recv(&mut buf).await?;
            match std::str::from_utf8(&buf[..n]).map(str::trim) {
                Ok("OK") => return Ok(()),
                Ok("FAIL") => return Err(io::Error::other("ATTACH refused")),
                _ => {}
            }
        }
    };
    tokio::time::timeout(REPLY_TIMEOUT, wait)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no reply to ATTACH"))?
}

/// One connection to hostapd, until it fails or the pipeline is gone.
pub(crate) async fn session(control: &Path, ping_every: Duration, s: Session<'_>) -> Ended {
    let connected = async {
        let events = client(control)?;
        attach(&events).await?;
        let requests = client(control)?;
        let list = stations(&requests).await?;
        Ok::<_, io::Error>((events, requests, list))
    };
    let (events, requests, list) = match connected.await {
        Ok(c) => c,
        Err(_) => return Ended::Down("hostapd control socket unavailable"),
    };
    // Stations that left while we were away leave now; new ones join.
    let at = s.clock.now();
    for (kind, mac) in s.roster.replace(list) {
        if !report(s.feed, SOURCE, at, kind, mac) {
            return Ended::Closed;
        }
    }
    up(s.feed, s.backoff, SOURCE);
    let mut ping = tokio::time::interval(ping_every);
    ping.tick().await;
    let mut seen = tokio::time::interval(s.seen_every.max(Duration::from_millis(100)));
    seen.tick().await;
    let mut buf = vec![0u8; 4096];
    let ended = loop {
        tokio::select! {
            got = events.recv(&mut buf) => {
                let Ok(n) = got else { break Ended::Down("hostapd event socket failed") };
                let msg = String::from_utf8_lossy(&buf[..n]);
                let Some((kind, mac)) = parse_event(&msg) else { continue };
                if s.roster.set(mac, kind == WifiKind::Joined).is_some()
                    && !report(s.feed, SOURCE, s.clock.now(), kind, mac)
                {
                    break Ended::Closed;
                }
            }
            _ = seen.tick() => {
                if !seen_all(s.feed, SOURCE, s.clock.now(), s.roster) {
                    break Ended::Closed;
                }
            }
            _ = ping.tick() => {
                if s.feed.is_closed() {
                    break Ended::Closed;
                }
                match request(&requests, "PING").await {
                    Ok(r) if r.trim() == "PONG" => {}
                    _ => break Ended::Down("hostapd not answering"),
                }
            }
        }
    };
    let _ = events.try_send(b"DETACH");
    ended
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_parsed_with_or_without_prefixes() {
        let m = BdAddr::parse("02:00:00:00:01:00").unwrap();
        assert_eq!(
            parse_event("<3>AP-STA-CONNECTED 02:00:00:00:01:00"),
            Some((WifiKind::Joined, m))
        );
        assert_eq!(
            parse_event("IFNAME=wlan0 <3>AP-STA-DISCONNECTED 02:00:00:00:01:00\n"),
            Some((WifiKind::Left, m))
        );
        assert_eq!(
            parse_event("<3>AP-STA-CONNECTED 02:00:00:00:01:00 keyid=guest"),
            Some((WifiKind::Joined, m))
        );
        assert_eq!(
            parse_event("<3>CTRL-EVENT-EAP-STARTED 02:00:00:00:01:00"),
            None
        );
        assert_eq!(parse_event("<3>AP-STA-CONNECTED nonsense"), None);
        assert_eq!(parse_event(""), None);
    }

    #[test]
    fn station_replies_give_the_first_line() {
        assert_eq!(
            parse_station("02:00:00:00:01:00\nflags=[AUTH][ASSOC]\naid=1\n"),
            BdAddr::parse("02:00:00:00:01:00")
        );
        assert_eq!(parse_station(""), None);
        assert_eq!(parse_station("FAIL\n"), None);
    }
}

//! nearcast satellites' wire format: a second box running `nearcast
//! scanner` publishes what its adapter hears as recording lines
//! (`formats/replay.md`), batched, to `nearcast/<store>/sightings/<scanner>`,
//! and its state to `nearcast/<store>/scanners/<scanner>/status` (`online`,
//! last will `offline`).
//!
//! Both ends live here: [`Batch`] (what a satellite sends) and
//! [`parse_batch`] with [`ClockOffset`] (what the main box makes of it).
//! A satellite stamps sightings with its own clock; the main box measures
//! each satellite's offset from the times it receives batches and moves the
//! sightings onto its own clock, or refuses a satellite whose clock is off
//! by more than a bound. Pure: no socket, no clock.

use std::collections::VecDeque;
use std::time::Duration;

use crate::core::types::{Observation, Sighting, Timestamp, millis};
use crate::core::zones::Layout;
use crate::source::replay::{self, Reason};

/// The topic a satellite publishes its sightings to.
#[must_use]
pub fn sightings_topic(store: &str, scanner: &str) -> String {
    format!("nearcast/{store}/sightings/{scanner}")
}

/// The topic a satellite publishes its state to (retained, with a last will).
#[must_use]
pub fn status_topic(store: &str, scanner: &str) -> String {
    format!("nearcast/{store}/scanners/{scanner}/status")
}

/// The main box's subscriptions for the satellites of `store`.
#[must_use]
pub fn subscriptions(store: &str) -> [String; 2] {
    [
        format!("nearcast/{store}/sightings/+"),
        format!("nearcast/{store}/scanners/+/status"),
    ]
}

/// What a satellite topic carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Topic<'a> {
    /// A batch of recording lines from `node`.
    Sightings {
        /// The satellite's scanner name.
        node: &'a str,
    },
    /// `node`'s state.
    Status {
        /// The satellite's scanner name.
        node: &'a str,
    },
}

impl<'a> Topic<'a> {
    /// Classifies a topic of `store`; `None` for anything else.
    #[must_use]
    pub fn parse(store: &str, topic: &'a str) -> Option<Topic<'a>> {
        let rest = topic.strip_prefix("nearcast/")?.strip_prefix(store)?;
        let rest = rest.strip_prefix('/')?;
        let mut it = rest.split('/');
        let t = match (it.next()?, it.next()?, it.next()) {
            ("sightings", node, None) => Topic::Sightings { node },
            ("scanners", node, Some("status")) => Topic::Status { node },
            _ => return None,
        };
        if it.next().is_some() {
            return None;
        }
        Some(t)
    }
}

/// A satellite's batch being filled: recording lines of one scanner.
pub struct Batch {
    layout: Layout,
    buf: Vec<u8>,
    lines: usize,
}

impl Batch {
    /// Largest batch a satellite sends, bytes: it is sent early when full.
    pub const MAX_BYTES: usize = 48 * 1024;

    /// An empty batch for the scanner called `scanner`.
    #[must_use]
    pub fn new(scanner: &str) -> Batch {
        Batch {
            layout: Layout::single("", scanner),
            buf: Vec::with_capacity(4096),
            lines: 0,
        }
    }

    /// Adds a sighting (its scanner is this batch's whatever it says);
    /// true when the batch is full and should be sent now. Wi-Fi reports
    /// are not a satellite's to send and are skipped.
    pub fn push(&mut self, obs: &Observation) -> bool {
        if let Observation::Ble(s) = obs {
            let mut s = s.clone();
            s.scanner = crate::core::types::ScannerIdx(0);
            if replay::format_line(&Observation::Ble(s), &self.layout, &mut self.buf).is_ok() {
                self.lines += 1;
            }
        }
        self.buf.len() >= Self::MAX_BYTES
    }

    /// Lines waiting.
    #[must_use]
    pub fn len(&self) -> usize {
        self.lines
    }

    /// True when nothing waits.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.lines == 0
    }

    /// The payload to send, leaving the batch empty.
    pub fn take(&mut self) -> Vec<u8> {
        self.lines = 0;
        std::mem::replace(&mut self.buf, Vec::with_capacity(4096))
    }
}

/// Parses a batch: each line's sighting, or why it is skipped. The topic
/// names the scanner (the broker's ACL lets a satellite publish only under
/// its own name), so a line's `scanner` is not read: every sighting comes
/// back as scanner 0 of a one-scanner layout, for the caller to place.
pub fn parse_batch<'a>(
    payload: &'a [u8],
    node: &'a Layout,
) -> impl Iterator<Item = Result<Sighting, Reason>> + 'a {
    payload
        .split(|b| *b == b'\n')
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .map(move |line| {
            let line = std::str::from_utf8(line).map_err(|_| Reason::Json)?;
            match replay::parse_line(line, node)? {
                Observation::Ble(s) => Ok(s),
                Observation::Wifi(_) => Err(Reason::Json),
            }
        })
}

/// One satellite's clock offset as the main box measures it: for each
/// batch, its receive time minus the newest time in it. The smallest of
/// these over a window is the offset plus the shortest delay seen (the
/// least-delayed batch is the best evidence; delays only ever add), so it
/// errs by at most the batching period late, never early.
#[derive(Clone, Debug)]
pub struct ClockOffset {
    samples: VecDeque<(Timestamp, i64)>,
    window: Duration,
}

impl ClockOffset {
    /// Samples kept at most (a batch per 100 ms for `window`).
    const MAX_SAMPLES: usize = 256;

    /// Estimates over the last `window` of batches.
    #[must_use]
    pub fn new(window: Duration) -> ClockOffset {
        ClockOffset {
            samples: VecDeque::new(),
            window,
        }
    }

    /// A batch received at `received` (main box's clock) whose newest line
    /// says `newest` (the satellite's clock).
    pub fn observe(&mut self, received: Timestamp, newest: Timestamp) {
        let cutoff = received.saturating_sub(self.window);
        while self
            .samples
            .front()
            .is_some_and(|(t, _)| *t < cutoff || self.samples.len() >= Self::MAX_SAMPLES)
        {
            self.samples.pop_front();
        }
        self.samples
            .push_back((received, received.0.saturating_sub(newest.0)));
    }

    /// Milliseconds to add to the satellite's times to get the main box's;
    /// `None` before the first batch.
    #[must_use]
    pub fn offset_ms(&self) -> Option<i64> {
        self.samples.iter().map(|(_, o)| *o).min()
    }

    /// True when the offset is larger than `bound` either way.
    #[must_use]
    pub fn beyond(&self, bound: Duration) -> bool {
        self.offset_ms()
            .is_some_and(|o| o.unsigned_abs() > u64::try_from(millis(bound)).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::types::{BdAddr, Rssi, ScannerIdx};

    #[test]
    fn topics() {
        assert_eq!(
            Topic::parse("s1", "nearcast/s1/sightings/aisle"),
            Some(Topic::Sightings { node: "aisle" })
        );
        assert_eq!(
            Topic::parse("s1", "nearcast/s1/scanners/aisle/status"),
            Some(Topic::Status { node: "aisle" })
        );
        for other in [
            "nearcast/s2/sightings/aisle",
            "nearcast/s1x/sightings/aisle",
            "nearcast/s1/sightings/aisle/more",
            "nearcast/s1/scanners/aisle",
            "nearcast/s1/scanners/aisle/status/x",
        ] {
            assert_eq!(Topic::parse("s1", other), None, "{other}");
        }
        assert_eq!(
            sightings_topic("s1", "aisle"),
            "nearcast/s1/sightings/aisle"
        );
        assert_eq!(
            status_topic("s1", "aisle"),
            "nearcast/s1/scanners/aisle/status"
        );
    }

    #[test]
    fn a_batch_round_trips_and_skips_what_is_not_a_sighting() {
        let mut b = Batch::new("aisle");
        for i in 0..3 {
            let s = Sighting::new(
                Timestamp(1_000 + i),
                ScannerIdx(7),
                BdAddr([1, 2, 3, 4, 5, 6]),
                Rssi(-60),
            );
            assert!(!b.push(&Observation::Ble(s)));
        }
        assert_eq!(b.len(), 3);
        let mut payload = b.take();
        assert!(b.is_empty());
        payload.extend_from_slice(
            br#"{"t": 2.0, "scanner": "till", "addr": "01:02:03:04:05:06", "rssi": -61}"#,
        );
        payload.extend_from_slice(b"\nnot json\n\n");
        payload.extend_from_slice(
            br#"{"t": 3.0, "wifi": "joined", "source": "ap", "mac": "01:02:03:04:05:06"}"#,
        );
        let node = Layout::single("", "aisle");
        let got: Vec<_> = parse_batch(&payload, &node).collect();
        assert_eq!(got.len(), 6);
        assert!(got[..3].iter().all(|r| {
            r.as_ref()
                .is_ok_and(|s| s.scanner == ScannerIdx(0) && s.rssi == Rssi(-60))
        }));
        assert_eq!(got[0].as_ref().map(|s| s.at), Ok(Timestamp(1_000)));
        assert_eq!(
            got[3].as_ref().map(|s| (s.scanner, s.rssi)),
            Ok((ScannerIdx(0), Rssi(-61)))
        );
        assert_eq!(got[4], Err(Reason::Json));
        assert_eq!(got[5], Err(Reason::Json));
    }

    #[test]
    fn clock_offset_is_the_least_delayed_batch_and_forgets_old_ones() {
        let mut c = ClockOffset::new(Duration::from_secs(10));
        assert_eq!(c.offset_ms(), None);
        // The satellite runs 3 s ahead; batches take 20–90 ms to arrive.
        for (i, delay) in [90, 20, 55, 70].into_iter().enumerate() {
            let sent = 100_000 + 3_000 + 1_000 * i64::try_from(i).unwrap();
            c.observe(Timestamp(sent - 3_000 + delay), Timestamp(sent));
        }
        assert_eq!(c.offset_ms(), Some(-2_980));
        assert!(c.beyond(Duration::from_secs(2)));
        assert!(!c.beyond(Duration::from_secs(5)));
        // Its clock is fixed: 10 s later only the new evidence counts.
        c.observe(Timestamp(120_000), Timestamp(119_960));
        assert_eq!(c.offset_ms(), Some(40));
    }
}

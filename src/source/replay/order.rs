//! The time-order rules of a recording: which lines go on, in file order,
//! and which are skipped for their time ([`Reason::OutOfOrder`],
//! [`Reason::Implausible`]), judged against the lines either side.
//!
//! A line may go back up to [`MAX_BACKWARDS`] (merged scanners reorder
//! their reports slightly); more, and it is out of order, unless
//! [`RESYNC_AFTER`] lines in a row are, when the recording's clock really
//! stepped back and the rules follow it. A line more than [`MAX_BACKWARDS`]
//! *ahead* of the newest so far is held until the next line shows whether
//! the recording really moved on (the next line is near it or later) or
//! the held line is the odd one out (the next line carries on from before
//! it): then it is skipped as implausible, instead of making every real
//! line after it look out of order. The first line has no line before it:
//! it is held until two more lines decide between it and the second.
//!
//! Pure bookkeeping over timestamps: no parsing, no I/O.

use std::collections::VecDeque;

use super::{MAX_BACKWARDS, RESYNC_AFTER, Reason, ReplayStats};
use crate::core::types::{Observation, Timestamp};

/// A line waiting for its neighbours' verdict.
#[derive(Debug)]
struct Held {
    obs: Observation,
    line: u64,
}

impl Held {
    fn at(&self) -> Timestamp {
        self.obs.at()
    }
}

/// The time-order state of one recording.
#[derive(Debug, Default)]
pub(super) struct Order {
    /// The newest time passed on so far.
    newest: Option<Timestamp>,
    /// Lines out of order in a row.
    behind: u32,
    /// A line too far ahead (or the first line), not yet passed on.
    held: Option<Held>,
    /// The first line's rival: a second line far before it.
    rival: Option<Held>,
}

/// `a` is more than [`MAX_BACKWARDS`] before `b`.
fn well_before(a: Timestamp, b: Timestamp) -> bool {
    a < b.saturating_sub(MAX_BACKWARDS)
}

impl Order {
    /// Takes line `line`'s observation; what may go on (now or released by
    /// it) is pushed to `out`, what is skipped is counted in `stats`.
    pub(super) fn push(
        &mut self,
        obs: Observation,
        line: u64,
        out: &mut VecDeque<Observation>,
        stats: &mut ReplayStats,
    ) {
        let next = Held { obs, line };
        let Some(held) = self.held.take() else {
            return self.arrive(next, out, stats);
        };
        if !well_before(next.at(), held.at()) {
            // The recording moved on: the held line was right.
            self.rival_out_of_order(stats);
            self.accept(held, out, stats);
            return self.arrive(next, out, stats);
        }
        match (self.newest, self.rival.take()) {
            // The next line carries on from before the held one.
            (Some(newest), None) if !well_before(next.at(), newest) => {
                stats.skip(held.line, Reason::Implausible);
                self.arrive(next, out, stats);
            }
            // Behind both: the held line stands, this one is out of order.
            (Some(_), None) => {
                self.accept(held, out, stats);
                self.arrive(next, out, stats);
            }
            // The first line and a second far before it: the third decides.
            (None, None) => {
                self.held = Some(held);
                self.rival = Some(next);
            }
            (_, Some(rival)) if !well_before(next.at(), rival.at()) => {
                stats.skip(held.line, Reason::Implausible);
                self.accept(rival, out, stats);
                self.arrive(next, out, stats);
            }
            // Behind both: the first line stands, the others are out of order.
            (_, Some(rival)) => {
                self.behind += 1;
                stats.skip(rival.line, Reason::OutOfOrder);
                self.accept(held, out, stats);
                self.arrive(next, out, stats);
            }
        }
    }

    /// The end of the recording: a held line stands (nothing contradicts
    /// it).
    pub(super) fn finish(&mut self, out: &mut VecDeque<Observation>, stats: &mut ReplayStats) {
        if let Some(held) = self.held.take() {
            self.rival_out_of_order(stats);
            self.accept(held, out, stats);
        }
    }

    /// A line with nothing held: passed on, held, or out of order.
    fn arrive(&mut self, next: Held, out: &mut VecDeque<Observation>, stats: &mut ReplayStats) {
        let at = next.at();
        let Some(newest) = self.newest else {
            self.held = Some(next);
            return;
        };
        if well_before(newest, at) {
            self.held = Some(next);
        } else if well_before(at, newest) {
            self.behind += 1;
            if self.behind < RESYNC_AFTER {
                stats.skip(next.line, Reason::OutOfOrder);
            } else {
                stats.resyncs += 1;
                self.newest = Some(at);
                self.behind = 0;
                stats.count(&next.obs);
                out.push_back(next.obs);
            }
        } else {
            self.accept(next, out, stats);
        }
    }

    /// Passes a line on.
    fn accept(&mut self, line: Held, out: &mut VecDeque<Observation>, stats: &mut ReplayStats) {
        let at = line.at();
        self.newest = Some(self.newest.map_or(at, |n| n.max(at)));
        self.behind = 0;
        stats.count(&line.obs);
        out.push_back(line.obs);
    }

    /// The first line's rival lost: it was out of order.
    fn rival_out_of_order(&mut self, stats: &mut ReplayStats) {
        if let Some(rival) = self.rival.take() {
            self.behind += 1;
            stats.skip(rival.line, Reason::OutOfOrder);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::types::{BdAddr, Rssi, ScannerIdx, Sighting};

    /// Runs lines at these seconds through the rules: the seconds passed
    /// on, and the skipped line numbers (1-based) with their reasons.
    fn check(secs: &[i64]) -> (Vec<i64>, Vec<(u64, Reason)>, ReplayStats) {
        let mut order = Order::default();
        let mut stats = ReplayStats::default();
        let mut out = VecDeque::new();
        for (i, s) in secs.iter().enumerate() {
            let obs = Observation::Ble(Sighting::new(
                Timestamp::from_secs(*s),
                ScannerIdx(0),
                BdAddr([0; 6]),
                Rssi(-60),
            ));
            order.push(obs, i as u64 + 1, &mut out, &mut stats);
        }
        order.finish(&mut out, &mut stats);
        let passed = out.iter().map(|o| o.at().0 / 1000).collect();
        let skipped = stats.first_bad.iter().map(|b| (b.line, b.reason)).collect();
        (passed, skipped, stats)
    }

    const FAR: i64 = 2_000_000_000;

    #[test]
    fn small_steps_back_pass_and_large_ones_are_out_of_order() {
        let (passed, skipped, _) = check(&[100, 101, 97, 102, 90, 103]);
        assert_eq!(passed, [100, 101, 97, 102, 103]);
        assert_eq!(skipped, [(5, Reason::OutOfOrder)]);
    }

    #[test]
    fn one_bogus_future_line_is_skipped_and_nothing_after_it() {
        let (passed, skipped, stats) = check(&[100, 101, FAR, 102, 103, 104]);
        assert_eq!(passed, [100, 101, 102, 103, 104]);
        assert_eq!(skipped, [(3, Reason::Implausible)]);
        assert_eq!((stats.implausible, stats.out_of_order), (1, 0));
    }

    #[test]
    fn a_bogus_future_first_line_is_skipped() {
        let (passed, skipped, _) = check(&[FAR, 100, 101, 102]);
        assert_eq!(passed, [100, 101, 102]);
        assert_eq!(skipped, [(1, Reason::Implausible)]);
    }

    #[test]
    fn a_bogus_past_second_line_is_out_of_order() {
        let (passed, skipped, _) = check(&[1000, 10, 1001, 1002]);
        assert_eq!(passed, [1000, 1001, 1002]);
        assert_eq!(skipped, [(2, Reason::OutOfOrder)]);
        let (passed, skipped, _) = check(&[1000, 1001, 10, 1002]);
        assert_eq!(passed, [1000, 1001, 1002]);
        assert_eq!(skipped, [(3, Reason::OutOfOrder)]);
    }

    #[test]
    fn a_real_gap_passes_however_long() {
        let month = 30 * 24 * 3600;
        let (passed, skipped, _) = check(&[100, 101, 101 + month, 102 + month]);
        assert_eq!(passed, [100, 101, 101 + month, 102 + month]);
        assert!(skipped.is_empty());
        // The last line of a recording, after a gap: nothing contradicts it.
        let (passed, _, _) = check(&[100, 100 + month]);
        assert_eq!(passed, [100, 100 + month]);
    }

    #[test]
    fn two_bogus_lines_in_a_row_are_taken_as_the_recording_moving_on() {
        // The rules look one line ahead: two lines agreeing are believed,
        // and the real ones after them are out of order until the resync.
        let (passed, _, stats) = check(&[100, FAR, FAR + 1, 101, 102]);
        assert_eq!(passed, [100, FAR, FAR + 1]);
        assert_eq!(stats.out_of_order, 2);
    }

    #[test]
    fn a_clock_step_back_is_followed_after_enough_lines() {
        let mut secs: Vec<i64> = (0..10).map(|s| 1_763_712_000 + s).collect();
        secs.extend((0..150).map(|s| 1_700_000_000 + s));
        let (passed, _, stats) = check(&secs);
        let resync = usize::try_from(RESYNC_AFTER).unwrap();
        assert_eq!(stats.out_of_order, u64::from(RESYNC_AFTER) - 1);
        assert_eq!(stats.resyncs, 1);
        assert_eq!(passed.len(), 10 + 150 - (resync - 1));
        assert_eq!(passed[10], 1_700_000_000 + 99);
    }
}

//! `nearcast replay` into a real database through the real worker (the
//! console channel): idle time between observations is crossed in one
//! step, not a tick per recorded second, with exactly the events, decisions
//! and sends of the tick-per-second path; and a bogus line dated far in
//! the future costs only itself.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use nearcast::app::Ticks;
use nearcast::app::replay::{ReplayOptions, ReplayReport, replay};
use nearcast::core::types::{Observation, Timestamp, WifiKind};
use nearcast::source::replay::format_line;
use nearcast::store::Store;
use proptest::prelude::*;
use support::*;

const CLEO: [u8; 6] = [0xC4, 0x7C, 0x8D, 0x6A, 0x11, 0x02];
const ANNA: [u8; 6] = [0x11, 0x22, 0x33, 0x44, 0x55, 0x66];
const DAY: i64 = 24 * 3_600_000;

/// Writes the observations as a recording in `dir`; `bogus` lines are put
/// in as they are, after the observation with that index.
fn recording(dir: &Path, obs: &[Observation], bogus: &[(usize, &str)]) -> PathBuf {
    let config = nearcast::config::load(dir).unwrap();
    let mut text = Vec::new();
    for (i, o) in obs.iter().enumerate() {
        format_line(o, &config.layout, &mut text).unwrap();
        for (_, line) in bogus.iter().filter(|(at, _)| *at == i) {
            text.extend_from_slice(line.as_bytes());
            text.push(b'\n');
        }
    }
    let file = dir.join("day.jsonl");
    std::fs::write(&file, text).unwrap();
    file
}

/// Replays `file` into a fresh database of the test store; the report, the
/// output lines, and every outbox row as `state created_at sent_at customer
/// campaign`.
fn run(
    obs: &[Observation],
    bogus: &[(usize, &str)],
    ticks: Ticks,
) -> (ReplayReport, String, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let config = config_dir(dir.path(), CAMPAIGNS);
    drop(store_with_customers(&config));
    let file = recording(dir.path(), obs, bogus);
    let out: Arc<Mutex<Vec<u8>>> = Arc::default();
    let opts = ReplayOptions {
        file,
        fast: true,
        ticks,
        ..ReplayOptions::default()
    };
    let sink: Arc<Mutex<dyn Write + Send>> = out.clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let report = rt.block_on(replay(&config, &opts, sink)).unwrap();
    let store = Store::open(&config.daemon.database).unwrap();
    let mut rows: Vec<String> = store
        .outbox_rows(None, 1000)
        .unwrap()
        .into_iter()
        .map(|r| {
            format!(
                "{} {} {:?} {} {}",
                r.state,
                r.created_at.0,
                r.sent_at.map(|t| t.0),
                r.customer,
                r.campaign
            )
        })
        .collect();
    rows.sort();
    let text = String::from_utf8(out.lock().unwrap().clone()).unwrap();
    (report, text, rows)
}

/// Cleo's phone on the Wi-Fi from `from` for `minutes`, seen every 30 s.
fn visit(from: Timestamp, minutes: i64) -> Vec<Observation> {
    let mut v = vec![wifi(from, WifiKind::Joined, CLEO)];
    let end = from.0 + minutes * 60_000;
    let mut t = from.0 + 30_000;
    while t < end {
        v.push(wifi(Timestamp(t), WifiKind::Seen, CLEO));
        t += 30_000;
    }
    v.push(wifi(Timestamp(end), WifiKind::Left, CLEO));
    v
}

#[test]
fn a_month_between_two_visits_is_crossed_in_one_step() {
    // Wednesday 18 November, and four weeks later.
    let mut obs = visit(at(10, 0, 0), 5);
    obs.extend(visit(Timestamp(at(10, 0, 0).0 + 28 * DAY), 5));
    let (report, text, rows) = run(&obs, &[], Ticks::Jump);
    // A tick per second would be 2.4 million; a tick per second with
    // something due is a few hundred.
    assert!(report.ticks < 2_000, "{} ticks", report.ticks);
    assert_eq!(text.matches("arrived").count(), 2, "{text}");
    assert_eq!(
        rows,
        [
            format!(
                "sent {} Some({}) cleo welcome",
                at(10, 0, 3).0,
                at(10, 0, 3).0
            ),
            format!(
                "sent {} Some({}) cleo welcome",
                at(10, 0, 3).0 + 28 * DAY,
                at(10, 0, 3).0 + 28 * DAY
            ),
        ]
    );
}

#[test]
fn a_bogus_line_from_the_year_7600_costs_only_itself() {
    let obs = visit(at(10, 0, 0), 5);
    // 7600-01-01, as a fuzzer made it, after the second line.
    let bogus = r#"{"t":177701990400,"wifi":"seen","mac":"C4:7C:8D:6A:11:02","source":"x"}"#;
    let (report, text, rows) = run(&obs, &[(1, bogus)], Ticks::Jump);
    assert_eq!(report.stats.implausible, 1);
    assert_eq!(report.stats.out_of_order, 0);
    assert_eq!(report.stats.observations(), obs.len() as u64);
    assert_eq!(report.stats.first_bad[0].line, 3);
    assert!(report.ticks < 2_000, "{} ticks", report.ticks);
    assert_eq!(text.matches("arrived").count(), 1, "{text}");
    assert_eq!(text.matches("left").count(), 1, "{text}");
    assert_eq!(rows.len(), 1, "{rows:?}");
}

/// Visits by Cleo (Wi-Fi) and Anna (beacon at the door: the gold offer)
/// with gaps from seconds to hours between them.
fn visits() -> impl Strategy<Value = Vec<Observation>> {
    prop::collection::vec((1i64..=3 * 3600, 1i64..=12, any::<bool>()), 1..5).prop_map(|plan| {
        let mut t = at(9, 30, 0).0;
        let mut obs = Vec::new();
        for (gap, minutes, anna) in plan {
            t += gap * 1000;
            let from = Timestamp(t);
            if anna {
                let to = Timestamp(t + minutes * 60_000);
                obs.extend(every_second(from, to, |s| ibeacon(s, 0, 1, 1.0, ANNA)));
            } else {
                obs.extend(visit(from, minutes));
            }
            t += minutes * 60_000;
        }
        obs
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, ..ProptestConfig::default() })]

    /// The jumps are fenced by the plain path: the same output and the same
    /// outbox, to the millisecond, as a tick every second.
    #[test]
    fn jumping_over_idle_time_changes_nothing(obs in visits()) {
        let (jump, jump_text, jump_rows) = run(&obs, &[], Ticks::Jump);
        let (plain, plain_text, plain_rows) = run(&obs, &[], Ticks::EverySecond);
        prop_assert_eq!(jump_text, plain_text);
        prop_assert_eq!(jump_rows, plain_rows);
        prop_assert!(jump.ticks <= plain.ticks);
    }
}

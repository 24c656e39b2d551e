//! `nearcast calibrate`: fits the scanners' RSSI offsets to a walk with a
//! test beacon whose rooms are known, and writes a suggestion for
//! `zones.toml` for staff to review.
//!
//! A staff member carries a test beacon (never a customer's device) through
//! the areas while `nearcast record --all` runs, and notes when they enter
//! each one (a marks file, or `--mark` on the command line). Calibrate plays
//! the recording through the same pipeline the daemon runs, with the beacon
//! as the only customer, and scores each marked second: is the beacon in the
//! marked area? It then searches per-scanner offsets for a better score and
//! checks the fit on the half of the walk it was not fitted on.
//!
//! A walk only tells about the scanners near where it went: only scanners
//! that an area walked for a minute depends on (the strongest expected
//! somewhere in it) are fitted; the others keep their configured offsets.
//! Offsets are only suggested when the walk supports them: at least two
//! areas walked for a minute (one area gives nothing to tell apart), and
//! the held-out half better by at least a point; otherwise the configured
//! ones stay, and it says why. It writes a copy of `zones.toml` for review
//! and never the staff's own file.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{Error, Output, Pipeline};
use crate::config::Config;
use crate::core::campaign::MemoryLedger;
use crate::core::identity::{CustomerInfo, Directory, Hasher, Identity};
use crate::core::presence::EventKind;
use crate::core::rooms::Rooms;
use crate::core::types::{CustomerKey, Observation, Timestamp};
use crate::core::zones::{Layout, ZoneIdx, ZoneKind};
use crate::source::replay::Reader;

/// What `calibrate` needs.
#[derive(Clone, Debug)]
pub struct CalibrateOptions {
    /// The walk's recording (`nearcast record --all`).
    pub recording: PathBuf,
    /// The test beacon, as in `customers.csv` (`ibeacon:…`, `mac:…`).
    pub beacon: String,
    /// A marks file: `TIME ZONE` per line.
    pub marks_file: Option<PathBuf>,
    /// Marks given on the command line, `TIME=ZONE`.
    pub marks: Vec<String>,
    /// Where to write the suggested `zones.toml`.
    pub out: PathBuf,
}

/// One mark: from `at` on, the beacon is in `zone` (an area, or `None` for
/// no area); `skip` leaves the following seconds unscored; `end` stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mark {
    /// In this area (or in none) from then on.
    In(Option<ZoneIdx>),
    /// Not scored from then on (the walker was unsure, or stepped out).
    Skip,
    /// The walk is over.
    End,
}

/// What calibrate found.
#[derive(Clone, Debug, PartialEq)]
pub struct Calibration {
    /// Marked seconds scored.
    pub seconds: usize,
    /// Right-area share with the configured offsets, on the whole walk.
    pub before: f64,
    /// And with the fitted ones.
    pub after: f64,
    /// Fitted on the first half only: the second half before and after.
    pub held_out: (f64, f64),
    /// Whether the walk supports the fitted offsets.
    pub verdict: Verdict,
    /// Per scanner: (id, configured offset, suggested offset).
    pub offsets: Vec<(String, f64, f64)>,
    /// Scanners no walked area depends on: not fitted, kept as configured.
    pub unfitted: Vec<String>,
}

/// Whether a walk supports new offsets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Yes: two areas or more walked, and the half of the walk not fitted
    /// on got better.
    Suggested,
    /// Fewer than two areas were walked for a minute; these were not.
    Unvisited(Vec<String>),
    /// Fitted on one half, the other half did not get better: the fit
    /// follows this walk's noise, not the scanners.
    NotSupported,
}

/// An area visited for less than this many marked seconds is not walked.
const MIN_SECONDS_PER_AREA: usize = 60;
/// A walk must cover this many areas for a suggestion.
const MIN_AREAS_WALKED: usize = 2;
/// The held-out half must improve by this share for a suggestion.
const MIN_HELD_OUT_GAIN: f64 = 0.01;

/// Parses marks: `TIME ZONE` lines (`#` comments), times as Unix seconds,
/// RFC 3339, or `HH:MM:SS` local store time on `day`; zones are area ids,
/// `none` or `end`.
///
/// # Errors
/// The first bad line, with its number and what to write.
pub fn parse_marks(
    lines: &[(usize, &str)],
    layout: &Layout,
    tz: &jiff::tz::TimeZone,
    day: Timestamp,
) -> Result<Vec<(Timestamp, Mark)>, String> {
    let mut out = Vec::new();
    for &(line, text) in lines {
        let text = text.split('#').next().unwrap_or("").trim();
        if text.is_empty() {
            continue;
        }
        let (time, zone) = text
            .split_once(|c: char| c.is_whitespace() || c == '=')
            .ok_or_else(|| format!("mark {line}: write `TIME ZONE`, e.g. `10:02:30 kitchen`"))?;
        let at = parse_time(time.trim(), tz, day).ok_or_else(|| {
            format!("mark {line}: {time:?} is not a time: write Unix seconds, RFC 3339 or HH:MM:SS")
        })?;
        let zone = zone.trim();
        let mark = match zone {
            "end" => Mark::End,
            "skip" | "?" => Mark::Skip,
            "none" | "-" => Mark::In(None),
            id => {
                let z = layout
                    .zone_index(id)
                    .filter(|z| matches!(layout.zone(*z).kind, ZoneKind::Area { .. }));
                Mark::In(Some(z.ok_or_else(|| {
                    let areas: Vec<&str> = layout
                        .zones
                        .iter()
                        .filter(|z| matches!(z.kind, ZoneKind::Area { .. }))
                        .map(|z| z.id.as_str())
                        .collect();
                    format!(
                        "mark {line}: `{id}` is not an area zone (areas: {}; or `none`, `skip`, `end`)",
                        areas.join(", ")
                    )
                })?))
            }
        };
        out.push((at, mark));
    }
    out.sort_by_key(|(t, _)| *t);
    if out.is_empty() {
        return Err("no marks: say when the beacon entered each area".into());
    }
    Ok(out)
}

fn parse_time(s: &str, tz: &jiff::tz::TimeZone, day: Timestamp) -> Option<Timestamp> {
    if let Ok(secs) = s.parse::<f64>() {
        return Timestamp::from_secs_f64(secs);
    }
    if let Ok(t) = s.parse::<jiff::Timestamp>() {
        return Some(Timestamp(t.as_millisecond()));
    }
    let time: jiff::civil::Time = s.parse().ok()?;
    let date = jiff::Timestamp::from_millisecond(day.0)
        .ok()?
        .to_zoned(tz.clone())
        .date();
    let zoned = date.to_datetime(time).to_zoned(tz.clone()).ok()?;
    Some(Timestamp(zoned.timestamp().as_millisecond()))
}

/// The expected area per whole second `[t, t+1)` (scored at `t + 0.5`),
/// from the first mark to `end` (or the last observation).
fn expected(marks: &[(Timestamp, Mark)], end: Timestamp) -> Vec<(i64, Option<ZoneIdx>)> {
    let Some(&(first, _)) = marks.first() else {
        return Vec::new();
    };
    let stop = marks
        .iter()
        .find(|(_, m)| *m == Mark::End)
        .map_or(end, |(t, _)| *t);
    let mut out = Vec::new();
    let mut i = 0;
    let mut current = None;
    let mut s = first.0.div_euclid(1000);
    while Timestamp(s * 1000 + 500) < stop {
        let mid = Timestamp(s * 1000 + 500);
        while i < marks.len() && marks[i].0 <= mid {
            match marks[i].1 {
                Mark::In(z) => current = Some(z),
                Mark::Skip => current = None,
                Mark::End => {}
            }
            i += 1;
        }
        if let Some(z) = current {
            out.push((s, z));
        }
        s += 1;
    }
    out
}

/// Share of `windows` (first `from..to` of them) where the area timeline
/// `events` (time, entered?, zone) agrees with the expected area.
fn score(
    windows: &[(i64, Option<ZoneIdx>)],
    events: &[(Timestamp, bool, ZoneIdx)],
    range: std::ops::Range<usize>,
) -> f64 {
    let mut active: Vec<ZoneIdx> = Vec::new();
    let mut e = 0;
    let (mut right, mut total) = (0usize, 0usize);
    for (i, &(s, want)) in windows.iter().enumerate() {
        let mid = Timestamp(s * 1000 + 500);
        while e < events.len() && events[e].0 <= mid {
            let (_, entered, z) = events[e];
            active.retain(|a| *a != z);
            if entered {
                active.push(z);
            }
            e += 1;
        }
        if !range.contains(&i) {
            continue;
        }
        total += 1;
        let ok = match want {
            Some(z) => active.contains(&z),
            None => active.is_empty(),
        };
        right += usize::from(ok);
    }
    #[allow(clippy::cast_precision_loss)]
    if total == 0 {
        0.0
    } else {
        right as f64 / total as f64
    }
}

/// The beacon's area events when `observations` are played through the
/// pipeline on `layout`.
fn play(
    config: &Config,
    layout: &Arc<Layout>,
    hasher: &Hasher,
    directory: &Arc<Directory>,
    observations: &[Observation],
) -> Vec<(Timestamp, bool, ZoneIdx)> {
    let mut p = Pipeline::new(
        layout.clone(),
        config.engine.clone(),
        hasher.clone(),
        directory.clone(),
        MemoryLedger::new(),
    )
    .with_guard(config.daemon.guard.clone());
    let mut events = Vec::new();
    let area = |z: ZoneIdx| matches!(layout.zone(z).kind, ZoneKind::Area { .. });
    let mut sink = |o: Output<'_>| {
        if let Output::Event { event, .. } = o {
            match event.kind {
                EventKind::Entered(z) if area(z) => events.push((event.at, true, z)),
                EventKind::Exited(z) if area(z) => events.push((event.at, false, z)),
                _ => {}
            }
        }
    };
    for o in observations {
        // A memory ledger cannot fail.
        let _ = p.handle(o, &mut sink);
    }
    if let Some(last) = observations.iter().map(Observation::at).max() {
        let _ = p.advance(
            last.saturating_add(std::time::Duration::from_secs(600)),
            &mut sink,
        );
    }
    events
}

fn with_offsets(layout: &Layout, offsets: &[f64]) -> Arc<Layout> {
    let mut l = layout.clone();
    for (s, o) in l.scanners.iter_mut().zip(offsets) {
        s.rssi_offset = *o;
    }
    Arc::new(l)
}

/// Fits the offsets of the `free` scanners on `windows[fit]`: a
/// coordinate search, coarse steps then fine ones; a change must gain at
/// least half a percentage point, so that noise is not fitted.
fn fit(
    config: &Config,
    (hasher, directory): (&Hasher, &Arc<Directory>),
    observations: &[Observation],
    windows: &[(i64, Option<ZoneIdx>)],
    fit: &std::ops::Range<usize>,
    free: &[bool],
) -> Vec<f64> {
    let layout = &config.layout;
    let mut offsets: Vec<f64> = layout.scanners.iter().map(|s| s.rssi_offset).collect();
    let eval = |o: &[f64]| {
        let events = play(
            config,
            &with_offsets(layout, o),
            hasher,
            directory,
            observations,
        );
        score(windows, &events, fit.clone())
    };
    let mut best = eval(&offsets);
    for steps in [[-6.0, -3.0, 3.0, 6.0], [-1.5, -0.5, 0.5, 1.5]] {
        for _round in 0..2 {
            let mut changed = false;
            for s in (0..offsets.len()).filter(|s| free.get(*s) == Some(&true)) {
                for d in steps {
                    let mut o = offsets.clone();
                    o[s] += d;
                    let sc = eval(&o);
                    if sc >= best + 0.005 {
                        best = sc;
                        offsets = o;
                        changed = true;
                    }
                }
            }
            if !changed {
                break;
            }
        }
    }
    offsets.iter().map(|o| (o * 2.0).round() / 2.0).collect()
}

/// Runs a calibration: reads the recording and marks, fits, scores.
///
/// # Errors
/// Unreadable files, a beacon identity or marks that do not parse, a
/// walk in which the beacon is never heard.
pub fn calibrate(config: &Config, opts: &CalibrateOptions) -> Result<Calibration, Error> {
    let identity = Identity::parse(&opts.beacon).map_err(|e| {
        Error::Usage(format!(
            "--beacon {:?}: {e} (write it as in customers.csv, e.g. ibeacon:UUID:MAJOR:MINOR or mac:AA:BB:CC:DD:EE:FF)",
            opts.beacon
        ))
    })?;
    let file = std::fs::File::open(&opts.recording).map_err(|e| Error::io(&opts.recording, e))?;
    let observations: Vec<Observation> = Reader::new(std::io::BufReader::new(file), &config.layout)
        .filter_map(Result::ok)
        .collect();
    let first = observations
        .iter()
        .map(Observation::at)
        .min()
        .ok_or_else(|| Error::Usage(format!("{}: no observations", opts.recording.display())))?;
    let last = observations
        .iter()
        .map(Observation::at)
        .max()
        .unwrap_or(first);

    let text = match &opts.marks_file {
        Some(p) => std::fs::read_to_string(p).map_err(|e| Error::io(p, e))?,
        None => String::new(),
    };
    let mut lines: Vec<(usize, &str)> = text.lines().enumerate().map(|(i, l)| (i + 1, l)).collect();
    lines.extend(
        opts.marks
            .iter()
            .enumerate()
            .map(|(i, m)| (i + 1, m.as_str())),
    );
    let marks = parse_marks(&lines, &config.layout, &config.engine.rules.tz, first)
        .map_err(Error::Usage)?;

    // The beacon as the only customer, hashed with a key that lives only
    // for this run.
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(|e| Error::Usage(format!("no randomness: {e}")))?;
    let hasher = Hasher::new(&key);
    let mut directory = Directory::default();
    directory.insert(
        CustomerInfo {
            key: CustomerKey(1),
            id: "calibration-beacon".into(),
            segments: Box::new([]),
            channels: Box::new([]),
        },
        [hasher.hash(&identity)],
    );
    let directory = Arc::new(directory);

    let windows = expected(&marks, last);
    if windows.is_empty() {
        return Err(Error::Usage(
            "the marks cover no second of the recording".into(),
        ));
    }
    let all = 0..windows.len();
    let half = windows.len() / 2;
    let before_events = play(config, &config.layout, &hasher, &directory, &observations);
    if before_events.is_empty() && windows.iter().any(|(_, z)| z.is_some()) {
        tracing::warn!(
            "the beacon was never placed in an area: is --beacon right, and was it heard?"
        );
    }
    let before = score(&windows, &before_events, all.clone());
    let (walked, unwalked): (Vec<_>, Vec<_>) = config
        .layout
        .zones
        .iter()
        .enumerate()
        .filter(|(_, z)| matches!(z.kind, ZoneKind::Area { .. }))
        .map(|(i, z)| (ZoneIdx(u16::try_from(i).unwrap_or(u16::MAX)), z))
        .partition(|(i, _)| {
            windows.iter().filter(|(_, w)| *w == Some(*i)).count() >= MIN_SECONDS_PER_AREA
        });
    let mut free = vec![false; config.layout.scanners.len()];
    for group in &Rooms::new(&config.layout).groups {
        for state in walked.iter().filter_map(|(z, _)| group.state_of(*z)) {
            for s in group.depends_on(state) {
                if let Some(f) = free.get_mut(usize::from(s.0)) {
                    *f = true;
                }
            }
        }
    }
    let keys = (&hasher, &directory);
    let fitted = fit(config, keys, &observations, &windows, &all, &free);
    let after_events = play(
        config,
        &with_offsets(&config.layout, &fitted),
        &hasher,
        &directory,
        &observations,
    );
    let after = score(&windows, &after_events, all);
    let first_half = fit(config, keys, &observations, &windows, &(0..half), &free);
    let held_events = play(
        config,
        &with_offsets(&config.layout, &first_half),
        &hasher,
        &directory,
        &observations,
    );
    let held_out = (
        score(&windows, &before_events, half..windows.len()),
        score(&windows, &held_events, half..windows.len()),
    );
    let verdict = if walked.len() < MIN_AREAS_WALKED {
        Verdict::Unvisited(unwalked.iter().map(|(_, z)| z.id.to_string()).collect())
    } else if held_out.1 < held_out.0 + MIN_HELD_OUT_GAIN {
        Verdict::NotSupported
    } else {
        Verdict::Suggested
    };
    let configured: Vec<f64> = config
        .layout
        .scanners
        .iter()
        .map(|s| s.rssi_offset)
        .collect();
    let suggested = if verdict == Verdict::Suggested {
        &fitted
    } else {
        &configured
    };
    Ok(Calibration {
        seconds: windows.len(),
        before,
        after,
        held_out,
        verdict,
        offsets: config
            .layout
            .scanners
            .iter()
            .zip(suggested)
            .map(|(s, o)| (s.id.to_string(), s.rssi_offset, *o))
            .collect(),
        unfitted: config
            .layout
            .scanners
            .iter()
            .zip(&free)
            .filter(|(_, f)| !**f)
            .map(|(s, _)| s.id.to_string())
            .collect(),
    })
}

/// Writes a copy of `zones.toml` (from `config_dir`) with the suggested
/// offsets to `out`, with a header saying where they came from. Refuses to
/// write over the staff's own `zones.toml`.
///
/// # Errors
/// IO failures, `out` being the configured `zones.toml`, or a `zones.toml`
/// that is not TOML.
pub fn write_suggestion(
    config_dir: &Path,
    out: &Path,
    found: &Calibration,
    recording: &Path,
) -> Result<(), Error> {
    super::refuse_live_zones(config_dir, out, "calibrate")?;
    let zones = config_dir.join(crate::config::ZONES_FILE);
    let text = std::fs::read_to_string(&zones).map_err(|e| Error::io(&zones, e))?;
    let mut doc: toml_edit::DocumentMut = text
        .parse()
        .map_err(|e| Error::Usage(format!("{}: {e}", zones.display())))?;
    if let Some(scanners) = doc
        .get_mut("scanner")
        .and_then(toml_edit::Item::as_array_of_tables_mut)
    {
        for table in scanners.iter_mut() {
            let id = table.get("id").and_then(|v| v.as_str()).map(str::to_owned);
            if let Some((_, _, o)) = found
                .offsets
                .iter()
                .find(|(s, _, _)| Some(s.as_str()) == id.as_deref())
            {
                table["rssi_offset"] = toml_edit::value(*o);
            }
        }
    }
    let header = format!(
        "# Suggested by `nearcast calibrate` from {} ({} marked seconds):\n\
         # right area {:.1} % -> {:.1} % on the walk; fitted on its first half, the\n\
         # second half went {:.1} % -> {:.1} %. {}\n",
        recording.display(),
        found.seconds,
        found.before * 100.0,
        found.after * 100.0,
        found.held_out.0 * 100.0,
        found.held_out.1 * 100.0,
        match &found.verdict {
            Verdict::Suggested => "Review, then copy over zones.toml.".to_owned(),
            Verdict::Unvisited(a) => format!(
                "Offsets unchanged: walk at least two areas for a minute each (less: {}).",
                a.join(", ")
            ),
            Verdict::NotSupported => {
                "Offsets unchanged: the walk does not support a change.".to_owned()
            }
        }
    );
    std::fs::write(out, format!("{header}{doc}")).map_err(|e| Error::io(out, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> Layout {
        let mut l = Layout::single("T", "a");
        l.groups = vec!["areas".into()];
        for id in ["kitchen", "hall"] {
            l.zones.push(crate::core::zones::Zone {
                id: id.into(),
                kind: ZoneKind::Area {
                    polygon: geo::Polygon::new(
                        vec![(0.0, 0.0), (1.0, 0.0), (1.0, 1.0)].into(),
                        vec![],
                    ),
                    exit_margin_m: 0.0,
                    group: 0,
                },
                min_dwell: std::time::Duration::ZERO,
                exit_after: std::time::Duration::ZERO,
                dwell_after: None,
            });
        }
        l
    }

    #[test]
    fn marks_take_unix_rfc3339_and_local_times_and_refuse_unknown_areas() {
        let l = layout();
        let tz = jiff::tz::TimeZone::get("Europe/Berlin").unwrap();
        let day = Timestamp::from_secs(1_763_712_000); // 2025-11-21 09:00 Berlin
        let marks = parse_marks(
            &[
                (1, "1763712060 kitchen  # a minute in"),
                (2, ""),
                (3, "2025-11-21T08:02:00Z hall"),
                (4, "09:03:00 none"),
                (5, "09:04:00=end"),
            ],
            &l,
            &tz,
            day,
        )
        .unwrap();
        assert_eq!(
            marks,
            [
                (
                    Timestamp::from_secs(1_763_712_060),
                    Mark::In(Some(ZoneIdx(1)))
                ),
                (
                    Timestamp::from_secs(1_763_712_120),
                    Mark::In(Some(ZoneIdx(2)))
                ),
                (Timestamp::from_secs(1_763_712_180), Mark::In(None)),
                (Timestamp::from_secs(1_763_712_240), Mark::End),
            ]
        );
        let e = parse_marks(&[(7, "09:00:00 store")], &l, &tz, day).unwrap_err();
        assert_eq!(
            e,
            "mark 7: `store` is not an area zone (areas: kitchen, hall; or `none`, `skip`, `end`)"
        );
        assert!(parse_marks(&[(2, "soon kitchen")], &l, &tz, day).is_err());
    }

    #[test]
    fn seconds_are_scored_against_the_area_timeline() {
        let k = Some(ZoneIdx(1));
        let marks = [
            (Timestamp::from_secs(100), Mark::In(k)),
            (Timestamp::from_secs(104), Mark::In(None)),
            (Timestamp::from_secs(106), Mark::Skip),
            (Timestamp::from_secs(108), Mark::In(None)),
            (Timestamp::from_secs(108), Mark::End),
        ];
        let windows = expected(&marks, Timestamp::from_secs(1000));
        // 106 and 107 are skipped; the walk ends at 108.
        assert_eq!(
            windows,
            [
                (100, k),
                (101, k),
                (102, k),
                (103, k),
                (104, None),
                (105, None)
            ]
        );
        // Entered at 101.2, left at 105.0: right in 101, 102, 103 and 105.
        let events = [
            (Timestamp(101_200), true, ZoneIdx(1)),
            (Timestamp(105_000), false, ZoneIdx(1)),
        ];
        assert!((score(&windows, &events, 0..6) - 4.0 / 6.0).abs() < 1e-9);
        assert!((score(&windows, &events, 3..6) - 2.0 / 3.0).abs() < 1e-9);
    }
}

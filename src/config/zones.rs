//! `zones.toml`: store identity, time zone, opening hours, scanners (and
//! which of them are remote nodes), calibration and zones, built into a
//! `Layout`, the remote scanners and the opening hours.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::{Dur, Source, did_you_mean, valid_id};
use crate::core::campaign::TimeRange;
use crate::core::types::ScannerIdx;
use crate::core::zones::{Calibration, Layout, Radio, Scanner, Zone, ZoneKind};
use crate::source::mqtt::{NodeKind, RemoteScanner};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    store: String,
    store_id: Spanned<String>,
    time_zone: Spanned<String>,
    hours: Spanned<Hours>,
    #[serde(default)]
    radio: RawRadio,
    #[serde(default, rename = "scanner")]
    scanners: Vec<RawScanner>,
    #[serde(default, rename = "calibration")]
    calibrations: Vec<RawCalibration>,
    #[serde(default, rename = "zone")]
    zones: Vec<RawZone>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Hours {
    mon: Spanned<String>,
    tue: Spanned<String>,
    wed: Spanned<String>,
    thu: Spanned<String>,
    fri: Spanned<String>,
    sat: Spanned<String>,
    sun: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRadio {
    #[serde(default = "default_power")]
    measured_power: i8,
    #[serde(default = "default_exponent")]
    path_loss_exponent: Spanned<f64>,
    #[serde(default = "default_window")]
    window: Spanned<Window>,
    #[serde(default = "default_tick")]
    tick: Spanned<Dur>,
    #[serde(default = "default_signal_timeout")]
    signal_timeout: Dur,
    #[serde(default = "default_wall_loss")]
    wall_loss: Spanned<f64>,
    #[serde(default = "default_scanner_silence")]
    scanner_silence: Spanned<Dur>,
}

/// `[radio] window`: a duration (`"2s"`), or a number of ticks as written
/// before presence ran on a tick (it counted samples then).
#[derive(Deserialize)]
#[serde(untagged)]
enum Window {
    Ticks(u64),
    Time(Dur),
}

impl Default for RawRadio {
    fn default() -> RawRadio {
        RawRadio {
            measured_power: default_power(),
            path_loss_exponent: default_exponent(),
            window: default_window(),
            tick: default_tick(),
            signal_timeout: default_signal_timeout(),
            wall_loss: default_wall_loss(),
            scanner_silence: default_scanner_silence(),
        }
    }
}

fn default_power() -> i8 {
    -59
}
fn default_exponent() -> Spanned<f64> {
    Spanned::new(0..0, 2.0)
}
fn default_window() -> Spanned<Window> {
    Spanned::new(0..0, Window::Time(Dur(Radio::default().window)))
}
fn default_tick() -> Spanned<Dur> {
    Spanned::new(0..0, Dur(Radio::default().tick))
}
fn default_wall_loss() -> Spanned<f64> {
    Spanned::new(0..0, Radio::default().wall_loss_db)
}
fn default_scanner_silence() -> Spanned<Dur> {
    Spanned::new(0..0, Dur(Radio::default().scanner_silence))
}
fn default_signal_timeout() -> Dur {
    Dur(Duration::from_secs(10))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScanner {
    id: Spanned<String>,
    position: Spanned<Vec<f64>>,
    rssi_offset: Option<Spanned<f64>>,
    path_loss_exponent: Option<Spanned<f64>>,
    /// `local` (an adapter of this box), `espresense` or `nearcast`.
    source: Option<Spanned<String>>,
    /// A remote scanner's id in its topics (default: `id`).
    node: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCalibration {
    ibeacon_uuid: Option<Spanned<String>>,
    eddystone_namespace: Option<Spanned<String>>,
    measured_power: i8,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "lowercase")]
enum KindName {
    Store,
    Near,
    Area,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawZone {
    id: Spanned<String>,
    kind: Spanned<KindName>,
    scanner: Option<Spanned<String>>,
    enter: Option<Spanned<f64>>,
    exit: Option<Spanned<f64>>,
    polygon: Option<Spanned<Vec<Spanned<Vec<f64>>>>>,
    exit_margin: Option<Spanned<f64>>,
    group: Option<Spanned<String>>,
    range: Option<Spanned<f64>>,
    #[serde(default)]
    min_dwell: Dur,
    exit_after: Option<Dur>,
    dwell: Option<Dur>,
}

/// What `zones.toml` yields.
pub(super) struct Zones {
    pub store_id: String,
    pub layout: Layout,
    /// The scanners that are remote nodes.
    pub remote: Vec<RemoteScanner>,
    /// Where each of them says `source`.
    pub remote_spans: Vec<std::ops::Range<usize>>,
    pub tz: jiff::tz::TimeZone,
    pub opening: [Vec<TimeRange>; 7],
}

pub(super) fn build(src: &mut Source) -> Option<Zones> {
    let raw: Raw = src.parse()?;
    let before = src.errors.len();

    check_store_id(src, &raw.store_id);
    let tz = time_zone(src, &raw.time_zone);
    let opening = opening_hours(src, raw.hours.get_ref());
    let radio = radio(src, &raw.radio);
    let scanners = scanners(src, &raw.scanners, &raw.radio.path_loss_exponent);
    let (remote, remote_spans) = remote_scanners(src, &raw.scanners);
    let calibrations = calibrations(src, &raw.calibrations);
    let (zones, groups) = zones(src, &raw.zones, &scanners);
    overlapping_areas(src, &raw.zones, &zones, &groups);
    if src.errors.len() > before {
        return None;
    }
    Some(Zones {
        store_id: raw.store_id.into_inner(),
        remote,
        remote_spans,
        layout: Layout {
            store_name: raw.store,
            scanners,
            zones,
            groups,
            radio,
            calibrations,
        },
        tz,
        opening,
    })
}

/// `store_id`: it names the store in the database and in messages' links.
fn check_store_id(src: &mut Source, store_id: &Spanned<String>) {
    if !valid_id(store_id.get_ref()) {
        src.error(
            store_id.span(),
            "store_id must be lowercase letters, digits, `-` or `_`",
            None,
        );
    }
}

/// `time_zone`: an IANA name; UTC (with an error) when unknown.
fn time_zone(src: &mut Source, name: &Spanned<String>) -> jiff::tz::TimeZone {
    match jiff::tz::TimeZone::get(name.get_ref()) {
        Ok(tz) => tz,
        Err(_) => {
            src.error(
                name.span(),
                format!("unknown time zone {:?}", name.get_ref()),
                Some("use an IANA name such as \"Europe/Berlin\" or \"America/New_York\"".into()),
            );
            jiff::tz::TimeZone::UTC
        }
    }
}

/// `[hours]`: each day's opening ranges, Monday first.
fn opening_hours(src: &mut Source, h: &Hours) -> [Vec<TimeRange>; 7] {
    [&h.mon, &h.tue, &h.wed, &h.thu, &h.fri, &h.sat, &h.sun].map(|d| day_hours(src, d))
}

/// `[[scanner]]`: unique ids, positions, and each one's path-loss exponent
/// (`[radio]`'s unless it sets its own); at least one.
fn scanners(src: &mut Source, raw: &[RawScanner], default_exponent: &Spanned<f64>) -> Vec<Scanner> {
    let mut scanners = Vec::new();
    let mut seen = HashSet::new();
    for s in raw {
        let id = s.id.get_ref();
        if !seen.insert(id.clone()) {
            src.error(
                s.id.span(),
                format!("scanner `{id}` is defined twice"),
                None,
            );
        }
        let exponent = s.path_loss_exponent.as_ref().unwrap_or(default_exponent);
        if s.path_loss_exponent.is_some() {
            check_exponent(src, exponent);
        }
        let rssi_offset = s.rssi_offset.as_ref().map_or(0.0, |o| *o.get_ref());
        if let Some(o) = &s.rssi_offset
            && !(-MAX_RSSI_OFFSET_DB..=MAX_RSSI_OFFSET_DB).contains(o.get_ref())
        {
            src.error(
                o.span(),
                format!(
                    "rssi_offset must be a number of dB between -{MAX_RSSI_OFFSET_DB} and {MAX_RSSI_OFFSET_DB}"
                ),
                Some("0 for a bare adapter; a few dB for an enclosure or an external antenna".into()),
            );
        }
        scanners.push(Scanner {
            id: id.as_str().into(),
            position: point(src, &s.position).unwrap_or_default(),
            rssi_offset,
            path_loss_exponent: *exponent.get_ref(),
        });
    }
    if scanners.is_empty() {
        src.error(
            0..0,
            "no [[scanner]] defined",
            Some(
                "add at least one scanner, e.g. [[scanner]] id = \"door\" position = [0.0, 0.0]"
                    .into(),
            ),
        );
    }
    scanners
}

/// Largest `rssi_offset` either way, dB: more is no enclosure or antenna
/// but a typo, and would put the scanner's every customer out of range.
const MAX_RSSI_OFFSET_DB: f64 = 40.0;
/// Largest coordinate on the floor plan, metres.
const MAX_COORDINATE_M: f64 = 10_000.0;

/// A `path_loss_exponent` (`[radio]`'s or a scanner's): 0, NaN or an
/// extreme value would make every distance estimate meaningless.
fn check_exponent(src: &mut Source, e: &Spanned<f64>) {
    if !(1.0..=6.0).contains(e.get_ref()) {
        src.error(
            e.span(),
            "path_loss_exponent must be between 1.0 and 6.0",
            Some("2.0 is free space; 2.5–3.5 suits a shop floor".into()),
        );
    }
}

/// A position on the floor plan, `[x, y]` in metres: two finite numbers
/// within reach; an error at it otherwise.
fn point(src: &mut Source, p: &Spanned<Vec<f64>>) -> Option<(f64, f64)> {
    match p.get_ref().as_slice() {
        &[x, y] if x.is_finite() && y.is_finite() => {
            if x.abs() <= MAX_COORDINATE_M && y.abs() <= MAX_COORDINATE_M {
                return Some((x, y));
            }
            src.error(
                p.span(),
                format!("[{x}, {y}] is more than {MAX_COORDINATE_M} m from the floor plan's origin"),
                Some("positions are metres from a fixed corner of the store".into()),
            );
        }
        &[_, _] => src.error(
            p.span(),
            "a position must be two finite numbers (nan and inf are not positions)",
            Some("metres from a fixed corner of the store, e.g. [1.0, 6.0]".into()),
        ),
        v => src.error(
            p.span(),
            format!("a position is two numbers, [x, y], not {}", v.len()),
            Some("the floor plan is flat: metres to the right and up from a fixed corner, e.g. [1.0, 6.0]".into()),
        ),
    }
    None
}

/// `[[scanner]] source` and `node`: which scanners are remote nodes, and
/// their ids in MQTT topics (one topic level, unique per kind).
fn remote_scanners(
    src: &mut Source,
    raw: &[RawScanner],
) -> (Vec<RemoteScanner>, Vec<std::ops::Range<usize>>) {
    const KINDS: [&str; 3] = ["local", "espresense", "nearcast"];
    let mut remote = Vec::new();
    let mut spans = Vec::new();
    let mut seen = HashSet::new();
    for (i, s) in raw.iter().enumerate() {
        let kind = match s.source.as_ref().map(|k| (k.get_ref().as_str(), k.span())) {
            None | Some(("local", _)) => None,
            Some(("espresense", _)) => Some(NodeKind::Espresense),
            Some(("nearcast", _)) => Some(NodeKind::Nearcast),
            Some((other, span)) => {
                src.error(
                    span,
                    format!("unknown scanner source `{other}`"),
                    Some(did_you_mean(other, KINDS)),
                );
                continue;
            }
        };
        let Some(kind) = kind else {
            if let Some(n) = &s.node {
                src.error(
                    n.span(),
                    "`node` applies only to a remote scanner",
                    Some("set source = \"espresense\" or \"nearcast\", or remove `node`".into()),
                );
            }
            continue;
        };
        let (node, span) = s.node.as_ref().map_or_else(
            || (s.id.get_ref().clone(), s.id.span()),
            |n| (n.get_ref().clone(), n.span()),
        );
        let topic_level = !node.is_empty()
            && node.len() <= 64
            && !node
                .chars()
                .any(|c| matches!(c, '/' | '+' | '#') || c.is_whitespace() || c.is_control());
        if !topic_level {
            src.error(
                span,
                format!("`{node}` cannot be a node id in MQTT topics"),
                Some(
                    "up to 64 characters without `/`, `+`, `#` or spaces; for ESPresense, the \
                     node's room id as its topics show it (e.g. \"office_alt\")"
                        .into(),
                ),
            );
            continue;
        }
        if !seen.insert((kind, node.clone())) {
            src.error(
                span,
                format!("two scanners are the {} node `{node}`", kind.name()),
                Some("each node is one scanner; give the other one its own `node`".into()),
            );
            continue;
        }
        remote.push(RemoteScanner {
            kind,
            node,
            scanner: ScannerIdx(u16::try_from(i).unwrap_or(u16::MAX)),
        });
        spans.push(s.source.as_ref().map_or(0..0, Spanned::span));
    }
    (remote, spans)
}

/// `[[calibration]]`: a measured power for one iBeacon UUID or one
/// Eddystone namespace.
fn calibrations(src: &mut Source, raw: &[RawCalibration]) -> Vec<Calibration> {
    let mut calibrations = Vec::new();
    for c in raw {
        match (&c.ibeacon_uuid, &c.eddystone_namespace) {
            (Some(u), None) => {
                if let Some(uuid) = super::ibeacon_uuid(src, u) {
                    calibrations.push(Calibration::IBeacon {
                        uuid,
                        measured_power: c.measured_power,
                    });
                }
            }
            (None, Some(n)) => {
                if let Some(namespace) = super::eddystone_namespace(src, n) {
                    calibrations.push(Calibration::Eddystone {
                        namespace,
                        measured_power: c.measured_power,
                    });
                }
            }
            _ => src.error(
                0..0,
                "a [[calibration]] needs exactly one of ibeacon_uuid or eddystone_namespace",
                None,
            ),
        }
    }
    calibrations
}

/// `[[zone]]`: unique ids, each zone by its kind, the store zone first
/// (a default one when none is written), and the groups area zones name.
fn zones(src: &mut Source, raw: &[RawZone], scanners: &[Scanner]) -> (Vec<Zone>, Vec<Arc<str>>) {
    let scanner_names: Vec<String> = scanners.iter().map(|s| s.id.to_string()).collect();
    let mut zones: Vec<Zone> = Vec::new();
    let mut groups: Vec<Arc<str>> = Vec::new();
    let mut store_zone = None;
    let mut seen = HashSet::new();
    for z in raw {
        let id = z.id.get_ref();
        if !valid_id(id) {
            src.error(
                z.id.span(),
                format!("zone id `{id}` must be lowercase letters, digits, `-` or `_`"),
                None,
            );
        }
        if !seen.insert(id.clone()) {
            src.error(z.id.span(), format!("zone `{id}` is defined twice"), None);
        }
        let kind = match z.kind.get_ref() {
            KindName::Store => {
                unused(src, "scanner", z.scanner.as_ref());
                unused(src, "polygon", z.polygon.as_ref());
                if store_zone.is_some() {
                    src.error(
                        z.kind.span(),
                        "only one zone can be of kind \"store\"",
                        None,
                    );
                }
                store_zone = Some(zones.len());
                if let Some(r) = &z.range
                    && !(*r.get_ref() > 0.0 && *r.get_ref() <= MAX_COORDINATE_M)
                {
                    src.error(
                        r.span(),
                        "`range` must be a positive distance in metres",
                        Some("how far from the nearest scanner a customer still counts as in the store; leave it out for anywhere heard".into()),
                    );
                }
                ZoneKind::Store {
                    range_m: z.range.as_ref().map(|r| *r.get_ref()),
                }
            }
            KindName::Near => near_zone(src, z, &scanner_names),
            KindName::Area => area_zone(src, z, &mut groups),
        };
        unused_by_kind(src, z);
        let default_exit = if matches!(z.kind.get_ref(), KindName::Store) {
            120
        } else {
            20
        };
        zones.push(Zone {
            id: id.as_str().into(),
            kind,
            min_dwell: z.min_dwell.0,
            exit_after: z
                .exit_after
                .map_or(Duration::from_secs(default_exit), |d| d.0),
            dwell_after: z.dwell.map(|d| d.0),
        });
    }
    match store_zone {
        Some(i) => {
            let store = zones.remove(i);
            zones.insert(0, store);
        }
        None => zones.insert(
            0,
            Zone {
                id: "store".into(),
                kind: ZoneKind::Store { range_m: None },
                min_dwell: Duration::from_secs(5),
                exit_after: Duration::from_secs(120),
                dwell_after: None,
            },
        ),
    }
    if zones.len() > 64 {
        src.error(
            0..0,
            "more than 64 zones",
            Some("merge zones; each one costs work per sighting".into()),
        );
    }
    (zones, groups)
}

/// An error at a key written on a zone whose kind does not take it.
fn unused<T>(src: &mut Source, name: &str, field: Option<&Spanned<T>>) {
    if let Some(field) = field {
        src.error(
            field.span(),
            format!("`{name}` does not apply to this kind of zone"),
            None,
        );
    }
}

/// The keys only one kind of zone takes, written on another kind.
fn unused_by_kind(src: &mut Source, z: &RawZone) {
    if !matches!(z.kind.get_ref(), KindName::Near) {
        unused(src, "enter", z.enter.as_ref());
        unused(src, "exit", z.exit.as_ref());
    }
    if !matches!(z.kind.get_ref(), KindName::Area) {
        unused(src, "exit_margin", z.exit_margin.as_ref());
        unused(src, "group", z.group.as_ref());
    }
    if !matches!(z.kind.get_ref(), KindName::Store) {
        unused(src, "range", z.range.as_ref());
    }
}

/// A near zone: its scanner by name, and `enter` within `exit`.
fn near_zone(src: &mut Source, z: &RawZone, scanner_names: &[String]) -> ZoneKind {
    unused(src, "polygon", z.polygon.as_ref());
    let id = z.id.get_ref();
    let scanner = match &z.scanner {
        None => {
            src.error(
                z.kind.span(),
                format!("near zone `{id}` needs `scanner`"),
                Some(format!("one of: {}", scanner_names.join(", "))),
            );
            ScannerIdx(0)
        }
        Some(s) => match scanner_names.iter().position(|n| n == s.get_ref()) {
            Some(i) => ScannerIdx(u16::try_from(i).unwrap_or(0)),
            None => {
                src.error(
                    s.span(),
                    format!("unknown scanner `{}`", s.get_ref()),
                    Some(did_you_mean(
                        s.get_ref(),
                        scanner_names.iter().map(String::as_str),
                    )),
                );
                ScannerIdx(0)
            }
        },
    };
    let enter = z.enter.as_ref().map_or(2.0, |e| *e.get_ref());
    let exit = z.exit.as_ref().map_or(enter * 1.5, |e| *e.get_ref());
    if !(enter > 0.0 && enter <= MAX_COORDINATE_M) {
        src.error(
            z.enter.as_ref().map_or(z.kind.span(), Spanned::span),
            "`enter` must be a positive distance in metres",
            None,
        );
    } else if !(0.0..=MAX_COORDINATE_M).contains(&exit) {
        src.error(
            z.exit.as_ref().map_or(z.kind.span(), Spanned::span),
            "`exit` must be a distance in metres",
            None,
        );
    } else if exit < enter {
        src.error(
            z.exit.as_ref().map_or(z.kind.span(), Spanned::span),
            format!("`exit` ({exit} m) must be at least `enter` ({enter} m)"),
            Some("the gap between them is the hysteresis that stops customers at the edge from flapping; 1.5 × enter is a good start".into()),
        );
    }
    ZoneKind::Near {
        scanner,
        enter_m: enter,
        exit_m: exit,
    }
}

/// An area zone: a polygon with area, its exit margin, and its group
/// (added to `groups` when new).
fn area_zone(src: &mut Source, z: &RawZone, groups: &mut Vec<Arc<str>>) -> ZoneKind {
    unused(src, "scanner", z.scanner.as_ref());
    let id = z.id.get_ref();
    let polygon = match &z.polygon {
        Some(p) if p.get_ref().len() >= 3 => {
            // Every corner checked, so one run names each bad one.
            let corners: Vec<Option<(f64, f64)>> =
                p.get_ref().iter().map(|c| point(src, c)).collect();
            let ring: Option<Vec<(f64, f64)>> = corners.into_iter().collect();
            let poly = geo::Polygon::new(ring.unwrap_or_default().into(), vec![]);
            if !poly.exterior().0.is_empty() && geo::Area::unsigned_area(&poly) <= f64::EPSILON {
                src.error(
                    p.span(),
                    "the polygon has no area",
                    Some("list at least three corners that are not on one line".into()),
                );
            }
            poly
        }
        Some(p) => {
            src.error(p.span(), "a polygon needs at least three corners", None);
            geo::Polygon::new(geo::LineString::new(vec![]), vec![])
        }
        None => {
            src.error(
                z.kind.span(),
                format!("area zone `{id}` needs `polygon`"),
                Some(
                    "corners in metres on the floor plan: polygon = [[0, 0], [4, 0], [4, 3], [0, 3]]"
                        .into(),
                ),
            );
            geo::Polygon::new(geo::LineString::new(vec![]), vec![])
        }
    };
    let margin = z.exit_margin.as_ref().map_or(1.0, |m| *m.get_ref());
    if !(margin >= 0.0 && margin.is_finite()) {
        src.error(
            z.exit_margin.as_ref().map_or(z.kind.span(), Spanned::span),
            "`exit_margin` must be a distance of 0 m or more",
            None,
        );
    }
    let name = z
        .group
        .as_ref()
        .map_or(DEFAULT_GROUP, |g| g.get_ref().as_str());
    if !valid_id(name) {
        src.error(
            z.group.as_ref().map_or(z.kind.span(), Spanned::span),
            format!("group `{name}` must be lowercase letters, digits, `-` or `_`"),
            None,
        );
    }
    let group = groups.iter().position(|g| &**g == name).unwrap_or_else(|| {
        groups.push(name.into());
        groups.len() - 1
    });
    ZoneKind::Area {
        polygon,
        exit_margin_m: margin,
        group: u16::try_from(group).unwrap_or(u16::MAX),
    }
}

/// The group of area zones that do not name one.
const DEFAULT_GROUP: &str = "areas";

fn radio(src: &mut Source, raw: &RawRadio) -> Radio {
    check_exponent(src, &raw.path_loss_exponent);
    let tick = raw.tick.get_ref().0;
    if tick < Duration::from_millis(100) || tick > Duration::from_secs(10) {
        src.error(
            raw.tick.span(),
            "radio.tick must be between 100ms and 10s",
            Some("\"1s\" decides presence once a second".into()),
        );
    }
    let window = match raw.window.get_ref() {
        Window::Ticks(n) => tick.saturating_mul(u32::try_from(*n).unwrap_or(u32::MAX)),
        Window::Time(d) => d.0,
    };
    if window < tick || window > tick.saturating_mul(8) {
        src.error(
            raw.window.span(),
            "radio.window must be at least one tick and at most eight",
            Some("\"2s\" averages each scanner over two ticks of a second".into()),
        );
    }
    let wall_loss = *raw.wall_loss.get_ref();
    if !(0.0..=20.0).contains(&wall_loss) {
        src.error(
            raw.wall_loss.span(),
            "radio.wall_loss must be between 0 and 20 dB",
            Some("3 dB per light wall or shelf; 0 if the areas are open floor".into()),
        );
    }
    let silence = raw.scanner_silence.get_ref().0;
    if silence < raw.signal_timeout.0 {
        src.error(
            raw.scanner_silence.span(),
            "radio.scanner_silence must be at least signal_timeout",
            Some("a scanner that hears nobody for a minute is likely down: \"1m\"".into()),
        );
    }
    Radio {
        measured_power: raw.measured_power,
        tick,
        window,
        signal_timeout: raw.signal_timeout.0,
        wall_loss_db: wall_loss,
        scanner_silence: silence,
    }
}

/// The areas of one group are exclusive, so they must not overlap.
fn overlapping_areas(src: &mut Source, raw: &[RawZone], zones: &[Zone], groups: &[Arc<str>]) {
    use geo::BooleanOps;
    let areas: Vec<(&RawZone, &geo::Polygon<f64>, u16)> = raw
        .iter()
        .zip(zones)
        .filter_map(|(r, z)| match &z.kind {
            ZoneKind::Area { polygon, group, .. } => Some((r, polygon, *group)),
            _ => None,
        })
        .collect();
    for (i, (ra, a, ga)) in areas.iter().enumerate() {
        for (rb, b, gb) in &areas[..i] {
            if ga != gb {
                continue;
            }
            let shared = geo::Area::unsigned_area(&a.intersection(*b));
            if shared > 0.01 {
                let group = groups.get(usize::from(*ga)).map_or(DEFAULT_GROUP, |g| &**g);
                src.error(
                    ra.polygon.as_ref().map_or(ra.id.span(), Spanned::span),
                    format!(
                        "area `{}` overlaps area `{}` ({shared:.1} m²); both are in group `{group}`, where a customer is in one area at a time",
                        ra.id.get_ref(),
                        rb.id.get_ref()
                    ),
                    Some(format!(
                        "move the shared corner, or put one of them in its own group: group = \"{}\"",
                        ra.id.get_ref()
                    )),
                );
            }
        }
    }
}

/// `"09:00-20:00"`, `"09:00-13:00, 14:00-18:00"` or `"closed"`.
fn day_hours(src: &mut Source, s: &Spanned<String>) -> Vec<TimeRange> {
    let text = s.get_ref().trim();
    if text.eq_ignore_ascii_case("closed") {
        return Vec::new();
    }
    let mut out = Vec::new();
    for part in text.split(',') {
        match TimeRange::parse(part) {
            Some(r) => out.push(r),
            None => {
                src.error(
                    s.span(),
                    format!("invalid opening hours {text:?}"),
                    Some(
                        "write \"09:00-20:00\", several ranges separated by commas, or \"closed\""
                            .into(),
                    ),
                );
                return Vec::new();
            }
        }
    }
    out
}

pub(super) fn parse_ranges(src: &mut Source, list: &[Spanned<String>]) -> Vec<TimeRange> {
    let mut out = Vec::new();
    for s in list {
        match TimeRange::parse(s.get_ref()) {
            Some(r) => out.push(r),
            None => src.error(
                s.span(),
                format!("invalid time range {:?}", s.get_ref()),
                Some("write \"HH:MM-HH:MM\" in 24-hour local time, e.g. \"20:00-09:00\"".into()),
            ),
        }
    }
    out
}

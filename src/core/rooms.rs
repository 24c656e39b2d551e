//! Which room: a discrete Bayesian filter over the exclusive areas of a
//! group (and the open floor around them), fed with each scanner's averaged
//! RSSI once per tick.
//!
//! Built once from the [`Layout`]; per customer it keeps one probability per
//! state. The observation model is the log-distance path loss with a loss
//! per area outline crossed (a multi-wall model: outlines usually follow
//! walls, shelving or counters) and the device's own power unknown around
//! its calibrated value, so only the *pattern* of levels across scanners
//! must fit, not their absolute values. Each area is represented by a few
//! support points spread over it, so a room without a scanner of its own
//! can still be told apart, and the estimate is not pulled toward the
//! scanners' middle the way a weighted centroid is. The motion model lets
//! a customer move to an adjoining state (sharing an outline) a few times a
//! minute.
//!
//! Pure arithmetic: no clock, no IO. Decisions (hand-over, entry, exit) are
//! made from the probabilities by `core::presence`.

use geo::{Contains, Distance, Euclidean, Point, Polygon};
use smallvec::SmallVec;

use super::types::ScannerIdx;
use super::zones::{Layout, ZoneIdx, ZoneKind};

/// Spread of a scanner's averaged level around the model, apart from
/// fading: furniture, bodies, antenna patterns (dB).
const SIGMA_MODEL_DB: f32 = 4.0;
/// Spread of one sample (fast fading), averaged down by the sample count (dB).
const SIGMA_SAMPLE_DB: f32 = 6.0;
/// How far a device's power at 1 m may be from its calibrated value (dB):
/// phones differ, pockets and bags absorb.
const SIGMA_POWER_DB: f32 = 8.0;
/// Averaging windows overlap from tick to tick, so one tick's evidence is
/// counted at this weight.
const EVIDENCE_WEIGHT: f32 = 0.7;
/// Chance per second of moving to an adjoining state, before evidence.
const MOVE_PER_SECOND: f64 = 0.1;
/// Chance per tick of any state at all: recovers from a wrong lock-in.
const ANY_STATE: f32 = 0.001;
/// Scanners are mounted above the device (ceiling, shelf top); distances
/// are taken in 3-D with this height difference (metres).
const HEIGHT_M: f64 = 1.0;
/// Support points per area, about.
const POINTS_PER_AREA: f64 = 4.0;
/// Support points over the whole floor plan for the open floor, about.
const FLOOR_POINTS: f64 = 8.0;
/// At most this many areas in one group (`config` refuses more).
pub const MAX_AREAS: usize = 31;
/// At most this many support points in one group.
const MAX_POINTS: usize = 256;
/// Outline crossings closer than this along a line count as one wall (m).
const SAME_WALL_M: f64 = 0.05;

/// One scanner's evidence for one tick.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Heard {
    /// The scanner.
    pub scanner: ScannerIdx,
    /// Mean RSSI over the averaging window, with the scanner's offset and
    /// minus the device's calibrated power at 1 m (dB).
    pub level: f32,
    /// Samples in that mean.
    pub samples: u16,
}

/// A support point of a state.
#[derive(Clone, Copy, Debug)]
struct Support {
    /// The state it belongs to.
    state: u8,
    /// For an open-floor point within an area's `exit_margin`: that area's
    /// state. While a customer is in that area, the point counts for it.
    margin_of: Option<u8>,
}

/// The model of one group of exclusive areas.
#[derive(Clone, Debug)]
pub struct Group {
    /// The group's areas; state `i` is `zones[i]`.
    pub zones: Vec<ZoneIdx>,
    /// Whether state `zones.len()` is the open floor (parts of the floor
    /// plan in none of the group's areas).
    pub floor: bool,
    /// Expected level at each support point from each scanner, relative to
    /// the device's power at 1 m: `[scanner * points + point]` (dB), so
    /// that one scanner's evidence runs over contiguous memory.
    gain: Vec<f32>,
    /// Per support point: the state it counts for while the customer is
    /// outside `margin_of`'s area, and while inside it.
    point_state: Vec<(u8, Option<u8>)>,
    scanners: usize,
    /// Where a customer who moves goes: `[from * states + to]`, rows sum
    /// to 1 (no self-moves).
    moves: Vec<f32>,
    /// Per area state: the scanners it depends on (the strongest expected
    /// at one of its points). When one is silent, the room is unknown.
    depends: Vec<SmallVec<[ScannerIdx; 4]>>,
    /// The share that moves in one tick.
    leave_per_tick: f32,
    tick_seconds: f64,
}

impl Group {
    /// Number of states (areas, and the open floor if any).
    #[must_use]
    pub fn states(&self) -> usize {
        self.zones.len() + usize::from(self.floor)
    }

    /// The zone of state `s`, `None` for the open floor.
    #[must_use]
    pub fn zone(&self, s: usize) -> Option<ZoneIdx> {
        self.zones.get(s).copied()
    }

    /// The state of zone `z`.
    #[must_use]
    pub fn state_of(&self, z: ZoneIdx) -> Option<usize> {
        self.zones.iter().position(|x| *x == z)
    }

    /// The scanners state `s` depends on.
    #[must_use]
    pub fn depends_on(&self, s: usize) -> &[ScannerIdx] {
        self.depends.get(s).map_or(&[], |d| d.as_slice())
    }

    /// Probabilities before any evidence: every state alike.
    #[must_use]
    pub fn prior(&self) -> SmallVec<[f32; 8]> {
        let n = self.states();
        #[allow(clippy::cast_precision_loss)]
        let p = 1.0 / n as f32;
        std::iter::repeat_n(p, n).collect()
    }

    /// Moves `p` forward by `ticks` ticks of possible walking: some of each
    /// state's probability flows to its neighbours.
    pub fn predict(&self, p: &mut [f32], ticks: i64) {
        let n = self.states();
        if n < 2 || ticks <= 0 || p.len() != n {
            return;
        }
        let leave = if ticks == 1 {
            self.leave_per_tick
        } else {
            #[allow(clippy::cast_precision_loss)]
            let seconds = ticks as f64 * self.tick_seconds;
            #[allow(clippy::cast_possible_truncation)]
            let l = (1.0 - (1.0 - MOVE_PER_SECOND).powf(seconds)) as f32;
            l
        };
        // Rows of `moves` sum to one, so the total stays one.
        let mut next = [0.0f32; MAX_AREAS + 1];
        for (from, &mass) in p.iter().enumerate() {
            let out = mass * leave;
            next[from] += mass - out;
            let row = &self.moves[from * n..(from + 1) * n];
            for (x, w) in next.iter_mut().zip(row) {
                *x += out * w;
            }
        }
        #[allow(clippy::cast_precision_loss)]
        let any = ANY_STATE / n as f32;
        for (x, y) in p.iter_mut().zip(&next) {
            *x = (1.0 - ANY_STATE) * y + any;
        }
    }

    /// Weighs `p` by one tick's evidence. `current` is the state the
    /// customer is in (its margin points count for it). Does nothing
    /// without evidence from a scanner of this floor plan.
    pub fn update(&self, p: &mut [f32], heard: &[Heard], current: Option<usize>) {
        let n = self.states();
        if p.len() != n {
            return;
        }
        // Per heard scanner: its inverse variance. The device's power is
        // unknown around its calibrated value; integrating it out leaves a
        // Gaussian in the levels whose precision is `w - shrink w wᵀ`.
        let mut obs = [(0usize, 0.0f32, 0.0f32); 16];
        let mut count = 0;
        let mut precision_sum = 0.0f32;
        for h in heard {
            let s = usize::from(h.scanner.0);
            if s >= self.scanners || h.samples == 0 || count == obs.len() {
                continue;
            }
            let var =
                SIGMA_MODEL_DB.powi(2) + SIGMA_SAMPLE_DB.powi(2) / f32::from(h.samples.max(1));
            let w = 1.0 / var;
            precision_sum += w;
            obs[count] = (s, h.level, w);
            count += 1;
        }
        if count == 0 {
            return;
        }
        let obs = &obs[..count];
        let tau2 = SIGMA_POWER_DB.powi(2);
        let shrink = tau2 / (1.0 + tau2 * precision_sum);
        // Log-likelihood of each point; a state is as likely as its best
        // point (a mean over the points would cost an exponential each and
        // measured no better on real recordings).
        let points = self.point_state.len().min(MAX_POINTS);
        let (mut a, mut b) = ([0.0f32; MAX_POINTS], [0.0f32; MAX_POINTS]);
        for &(s, level, w) in obs {
            let gains = &self.gain[s * self.point_state.len()..][..points];
            for ((a, b), g) in a.iter_mut().zip(b.iter_mut()).zip(gains) {
                let e = level - g;
                *a += e * e * w;
                *b += e * w;
            }
        }
        let mut state_ll = [f32::NEG_INFINITY; MAX_AREAS + 1];
        for ((a, b), &(state, margin_of)) in a.iter().zip(&b).zip(&self.point_state) {
            let ll = -0.5 * (a - shrink * b * b);
            let state = match (margin_of, current) {
                (Some(m), Some(c)) if usize::from(m) == c => c,
                _ => usize::from(state),
            };
            if let Some(x) = state_ll.get_mut(state) {
                *x = x.max(ll);
            }
        }
        let top = state_ll[..n]
            .iter()
            .copied()
            .fold(f32::NEG_INFINITY, f32::max);
        if !top.is_finite() {
            return;
        }
        let mut total = 0.0f32;
        for (x, ll) in p.iter_mut().zip(&state_ll) {
            *x *= (EVIDENCE_WEIGHT * (ll - top)).exp();
            total += *x;
        }
        if total > 0.0 && total.is_finite() {
            for x in p.iter_mut() {
                *x /= total;
            }
        } else {
            // Every state ruled out (rounding): start afresh.
            let prior = self.prior();
            p.copy_from_slice(&prior);
        }
    }
}

/// The room models of a floor plan, one per group of area zones.
#[derive(Clone, Debug, Default)]
pub struct Rooms {
    /// Groups, in the order of their first area in `zones.toml`.
    pub groups: Vec<Group>,
}

impl Rooms {
    /// Builds the models: support points, expected levels, neighbours.
    #[must_use]
    pub fn new(layout: &Layout) -> Rooms {
        let outlines: Vec<&Polygon<f64>> = layout
            .zones
            .iter()
            .filter_map(|z| match &z.kind {
                ZoneKind::Area { polygon, .. } => Some(polygon),
                _ => None,
            })
            .collect();
        let mut groups = Vec::new();
        for g in 0..layout.groups.len() {
            let members: Vec<(ZoneIdx, &Polygon<f64>, f64)> = layout
                .zones
                .iter()
                .enumerate()
                .filter_map(|(i, z)| match &z.kind {
                    ZoneKind::Area {
                        polygon,
                        exit_margin_m,
                        group,
                    } if usize::from(*group) == g => Some((
                        ZoneIdx(u16::try_from(i).unwrap_or(u16::MAX)),
                        polygon,
                        *exit_margin_m,
                    )),
                    _ => None,
                })
                .collect();
            if !members.is_empty() {
                // `config` refuses larger groups; a hand-built layout is cut.
                let members = &members[..members.len().min(MAX_AREAS)];
                groups.push(build_group(layout, members, &outlines));
            }
        }
        Rooms { groups }
    }
}

fn build_group(
    layout: &Layout,
    members: &[(ZoneIdx, &Polygon<f64>, f64)],
    outlines: &[&Polygon<f64>],
) -> Group {
    let areas = members.len();
    let mut points: Vec<(f64, f64)> = Vec::new();
    let mut support: Vec<Support> = Vec::new();
    for (i, (_, poly, _)) in members.iter().enumerate() {
        let state = u8::try_from(i).unwrap_or(u8::MAX);
        let area = geo::Area::unsigned_area(*poly);
        let mut inside = grid_points(poly_bounds(poly), area / POINTS_PER_AREA)
            .into_iter()
            .filter(|p| poly.contains(&Point::new(p.0, p.1)))
            .collect::<Vec<_>>();
        if inside.is_empty() {
            // A thin or oddly shaped area: one point that is surely inside.
            if let Some(p) = geo::InteriorPoint::interior_point(*poly) {
                inside.push((p.x(), p.y()));
            }
        }
        for p in inside {
            points.push(p);
            support.push(Support {
                state,
                margin_of: None,
            });
        }
    }

    // The open floor: the plan's extent (areas and scanners) outside every
    // area of the group.
    let mut bounds = (
        f64::INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NEG_INFINITY,
    );
    for (_, poly, _) in members {
        let b = poly_bounds(poly);
        bounds = (
            bounds.0.min(b.0),
            bounds.1.min(b.1),
            bounds.2.max(b.2),
            bounds.3.max(b.3),
        );
    }
    for s in &layout.scanners {
        bounds = (
            bounds.0.min(s.position.0),
            bounds.1.min(s.position.1),
            bounds.2.max(s.position.0),
            bounds.3.max(s.position.1),
        );
    }
    let extent = (bounds.2 - bounds.0).max(0.0) * (bounds.3 - bounds.1).max(0.0);
    let floor_state = u8::try_from(areas).unwrap_or(u8::MAX);
    let mut floor = false;
    for p in grid_points(bounds, extent / FLOOR_POINTS) {
        let pt = Point::new(p.0, p.1);
        if members.iter().any(|(_, poly, _)| poly.contains(&pt)) {
            continue;
        }
        let margin_of = members
            .iter()
            .enumerate()
            .filter_map(|(i, (_, poly, margin))| {
                let d = Euclidean.distance(&pt, *poly);
                (d <= *margin).then_some((i, d))
            })
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .and_then(|(i, _)| u8::try_from(i).ok());
        floor = true;
        points.push(p);
        support.push(Support {
            state: floor_state,
            margin_of,
        });
    }
    let states = areas + usize::from(floor);

    points.truncate(MAX_POINTS);
    support.truncate(MAX_POINTS);
    let scanners = layout.scanners.len();
    let mut gain = Vec::with_capacity(points.len() * scanners);
    for p in &points {
        for s in &layout.scanners {
            let d = (p.0 - s.position.0).hypot(p.1 - s.position.1);
            let walls = walls_between(s.position, *p, outlines);
            #[allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]
            gain.push(
                (-10.0 * s.path_loss_exponent.max(0.5) * d.hypot(HEIGHT_M).log10()
                    - layout.radio.wall_loss_db * walls as f64) as f32,
            );
        }
    }

    let mut depends: Vec<SmallVec<[ScannerIdx; 4]>> = vec![SmallVec::new(); areas];
    for (i, sp) in support.iter().enumerate() {
        let state = usize::from(sp.state);
        if state >= areas {
            continue;
        }
        let row = &gain[i * scanners..(i + 1) * scanners];
        if let Some((s, _)) = row
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .and_then(|(s, g)| u16::try_from(s).ok().map(|s| (ScannerIdx(s), g)))
            && !depends[state].contains(&s)
        {
            depends[state].push(s);
        }
    }

    // Neighbours: areas by the length of outline they share; the open
    // floor by the length of an area's outline that no other area shares.
    let mut shared = vec![0.0f64; states * states];
    for (i, (_, a, _)) in members.iter().enumerate() {
        let mut alone = 0.0;
        for (pt, len) in outline_samples(a) {
            let mut with_other = false;
            for (j, (_, b, _)) in members.iter().enumerate() {
                if i != j && Euclidean.distance(&pt, *b) < 0.1 {
                    shared[i * states + j] += len;
                    with_other = true;
                }
            }
            if !with_other {
                alone += len;
            }
        }
        if floor {
            shared[i * states + areas] += alone;
            shared[areas * states + i] += alone;
        }
    }
    let mut moves = vec![0.0f32; states * states];
    for from in 0..states {
        let row = &shared[from * states..(from + 1) * states];
        let total: f64 = row.iter().sum();
        for to in 0..states {
            if to == from {
                continue;
            }
            #[allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]
            let w = if total > 0.0 {
                row[to] / total
            } else {
                1.0 / (states - 1).max(1) as f64
            };
            #[allow(clippy::cast_possible_truncation)]
            {
                moves[from * states + to] = w as f32;
            }
        }
    }

    // Stored scanner-major for the evidence loop.
    let mut by_scanner = vec![0.0f32; gain.len()];
    for (i, row) in gain.chunks(scanners.max(1)).enumerate() {
        for (s, g) in row.iter().enumerate() {
            by_scanner[s * points.len() + i] = *g;
        }
    }
    let point_state = support.iter().map(|sp| (sp.state, sp.margin_of)).collect();
    let tick_seconds = layout.radio.tick.as_secs_f64();
    #[allow(clippy::cast_possible_truncation)]
    let leave_per_tick = (1.0 - (1.0 - MOVE_PER_SECOND).powf(tick_seconds)) as f32;
    Group {
        zones: members.iter().map(|(z, _, _)| *z).collect(),
        floor,
        gain: by_scanner,
        point_state,
        scanners,
        moves,
        depends,
        leave_per_tick,
        tick_seconds,
    }
}

fn poly_bounds(poly: &Polygon<f64>) -> (f64, f64, f64, f64) {
    geo::BoundingRect::bounding_rect(poly).map_or((0.0, 0.0, 0.0, 0.0), |r| {
        (r.min().x, r.min().y, r.max().x, r.max().y)
    })
}

/// Cell centres of a grid over `bounds` with about `cell_area` per cell.
fn grid_points(bounds: (f64, f64, f64, f64), cell_area: f64) -> Vec<(f64, f64)> {
    let (w, h) = (bounds.2 - bounds.0, bounds.3 - bounds.1);
    if !(w.is_finite() && h.is_finite()) || w <= 0.0 || h <= 0.0 {
        return Vec::new();
    }
    let side = cell_area.max(0.0625).sqrt();
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let (nx, ny) = (
        ((w / side).round() as usize).clamp(1, 64),
        ((h / side).round() as usize).clamp(1, 64),
    );
    let mut out = Vec::with_capacity(nx * ny);
    for i in 0..nx {
        for j in 0..ny {
            #[allow(clippy::cast_precision_loss)]
            out.push((
                bounds.0 + (i as f64 + 0.5) * w / nx as f64,
                bounds.1 + (j as f64 + 0.5) * h / ny as f64,
            ));
        }
    }
    out
}

/// Points along a polygon's outline every 5 cm, with the length each stands for.
fn outline_samples(poly: &Polygon<f64>) -> Vec<(Point<f64>, f64)> {
    let mut out = Vec::new();
    for line in poly.exterior().lines() {
        let len = (line.end.x - line.start.x).hypot(line.end.y - line.start.y);
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let n = ((len / 0.05).ceil() as usize).clamp(1, 10_000);
        for k in 0..n {
            #[allow(clippy::cast_precision_loss)]
            let t = (k as f64 + 0.5) / n as f64;
            out.push((
                Point::new(
                    line.start.x + (line.end.x - line.start.x) * t,
                    line.start.y + (line.end.y - line.start.y) * t,
                ),
                len / n as f64,
            ));
        }
    }
    out
}

/// How many area outlines the straight line from `a` to `b` crosses;
/// crossings within a few centimetres of each other (two areas sharing a
/// wall) count once.
fn walls_between(a: (f64, f64), b: (f64, f64), outlines: &[&Polygon<f64>]) -> usize {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let len = dx.hypot(dy);
    if len <= 0.0 {
        return 0;
    }
    let mut at: SmallVec<[f64; 16]> = SmallVec::new();
    for poly in outlines {
        for e in poly.exterior().lines() {
            let (ex, ey) = (e.end.x - e.start.x, e.end.y - e.start.y);
            let denom = dx * ey - dy * ex;
            if denom.abs() < 1e-12 {
                continue; // parallel: running along a wall is not crossing it
            }
            let (wx, wy) = (e.start.x - a.0, e.start.y - a.1);
            let t = (wx * ey - wy * ex) / denom;
            let u = (wx * dy - wy * dx) / denom;
            if (0.0..=1.0).contains(&t) && (0.0..=1.0).contains(&u) {
                at.push(t * len);
            }
        }
    }
    at.sort_by(f64::total_cmp);
    let mut count = 0;
    let mut last = f64::NEG_INFINITY;
    for t in at {
        if t - last > SAME_WALL_M {
            count += 1;
        }
        last = t;
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::zones::{Scanner, Zone};
    use geo::polygon;
    use std::time::Duration;

    fn square(x0: f64, y0: f64, x1: f64, y1: f64) -> Polygon<f64> {
        polygon![(x: x0, y: y0), (x: x1, y: y0), (x: x1, y: y1), (x: x0, y: y1)]
    }

    /// Two 4 × 4 m rooms side by side, a scanner in the middle of each.
    fn two_rooms() -> Layout {
        let mut l = Layout::single("T", "west");
        l.scanners[0].position = (2.0, 2.0);
        l.scanners.push(Scanner {
            id: "east".into(),
            position: (6.0, 2.0),
            rssi_offset: 0.0,
            path_loss_exponent: 2.0,
        });
        l.groups = vec!["rooms".into()];
        for (id, poly) in [
            ("west", square(0.0, 0.0, 4.0, 4.0)),
            ("east", square(4.0, 0.0, 8.0, 4.0)),
        ] {
            l.zones.push(Zone {
                id: id.into(),
                kind: ZoneKind::Area {
                    polygon: poly,
                    exit_margin_m: 0.0,
                    group: 0,
                },
                min_dwell: Duration::ZERO,
                exit_after: Duration::ZERO,
                dwell_after: None,
            });
        }
        l
    }

    #[test]
    fn walls_are_counted_once_per_shared_outline() {
        let a = square(0.0, 0.0, 4.0, 4.0);
        let b = square(4.0, 0.0, 8.0, 4.0);
        let outlines = [&a, &b];
        assert_eq!(walls_between((2.0, 2.0), (3.0, 2.0), &outlines), 0);
        assert_eq!(walls_between((2.0, 2.0), (6.0, 2.0), &outlines), 1);
        assert_eq!(walls_between((2.0, 2.0), (10.0, 2.0), &outlines), 2);
        // Along a wall is not through it.
        assert_eq!(walls_between((4.0, 1.0), (4.0, 3.0), &outlines), 0);
    }

    #[test]
    fn adjoining_rooms_are_neighbours_and_tile_without_a_floor() {
        let rooms = Rooms::new(&two_rooms());
        assert_eq!(rooms.groups.len(), 1);
        let g = &rooms.groups[0];
        assert!(!g.floor, "the rooms cover the plan");
        assert_eq!(g.states(), 2);
        assert!((g.moves[1] - 1.0).abs() < 1e-6);
        assert_eq!(g.depends_on(0), &[ScannerIdx(0)]);
        assert_eq!(g.depends_on(1), &[ScannerIdx(1)]);
    }

    #[test]
    fn evidence_moves_the_probability_to_the_room_that_fits() {
        let layout = two_rooms();
        let rooms = Rooms::new(&layout);
        let g = &rooms.groups[0];
        let mut p = g.prior();
        // Loud at east, quiet at west: whatever the device's own power.
        for power_error in [-10.0f32, 0.0, 10.0] {
            let mut p2 = g.prior();
            let heard = [
                Heard {
                    scanner: ScannerIdx(0),
                    level: -16.0 + power_error,
                    samples: 8,
                },
                Heard {
                    scanner: ScannerIdx(1),
                    level: -3.0 + power_error,
                    samples: 8,
                },
            ];
            g.update(&mut p2, &heard, None);
            assert!(p2[1] > 0.9, "{power_error}: {p2:?}");
            p = p2;
        }
        // Moving forward spreads some of it back.
        g.predict(&mut p, 1);
        assert!(p[1] < 0.99 && p[1] > 0.8, "{p:?}");
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    }

    #[test]
    fn an_area_with_open_floor_around_it_gets_a_floor_state_with_margin_points() {
        let mut l = Layout::single("T", "door");
        l.scanners[0].position = (0.0, 0.0);
        l.scanners.push(Scanner {
            id: "corner".into(),
            position: (20.0, 10.0),
            rssi_offset: 0.0,
            path_loss_exponent: 2.0,
        });
        l.groups = vec!["areas".into()];
        l.zones.push(Zone {
            id: "corner".into(),
            kind: ZoneKind::Area {
                polygon: square(15.0, 5.0, 20.0, 10.0),
                exit_margin_m: 3.0,
                group: 0,
            },
            min_dwell: Duration::ZERO,
            exit_after: Duration::ZERO,
            dwell_after: None,
        });
        let g = &Rooms::new(&l).groups[0];
        assert!(g.floor);
        assert_eq!(g.zone(1), None);
        assert!(g.point_state.iter().any(|s| s.1 == Some(0)));
        assert!(g.point_state.iter().any(|s| s.0 == 1 && s.1.is_none()));
    }
}

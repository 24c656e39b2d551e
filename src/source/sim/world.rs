//! The floor plan as the simulator's planner sees it: the entrance, the
//! zones' stops, and each shopper's walk as straight legs.

use super::*;

/// One straight piece of a walk (or a stand, when `from == to`).
#[derive(Clone, Copy, Debug)]
pub(super) struct Leg {
    pub(super) start: i64,
    pub(super) end: i64,
    pub(super) from: (f64, f64),
    pub(super) to: (f64, f64),
}

/// Where a walk is at `t`; `cursor` remembers the leg, as times only grow.
pub(super) fn position(legs: &[Leg], cursor: &mut usize, t: i64) -> (f64, f64) {
    while *cursor + 1 < legs.len() && legs[*cursor].end <= t {
        *cursor += 1;
    }
    let Some(leg) = legs.get(*cursor) else {
        return (0.0, 0.0);
    };
    if leg.end <= leg.start {
        return leg.to;
    }
    #[allow(clippy::cast_precision_loss)]
    let f = ((t - leg.start) as f64 / (leg.end - leg.start) as f64).clamp(0.0, 1.0);
    (
        leg.from.0 + (leg.to.0 - leg.from.0) * f,
        leg.from.1 + (leg.to.1 - leg.from.1) * f,
    )
}

/// The floor plan as the planner sees it.
pub(super) struct World<'l> {
    pub(super) layout: &'l Layout,
    pub(super) entrance: (f64, f64),
    /// Unit vector from the store out through the entrance.
    pub(super) outward: (f64, f64),
    pub(super) walk_out_m: f64,
    pub(super) dwell_ms: (i64, i64),
}

impl<'l> World<'l> {
    pub(super) fn new(layout: &'l Layout, config: &SimConfig, entrance: (f64, f64)) -> World<'l> {
        #[allow(clippy::cast_precision_loss)]
        let count = layout.scanners.len().max(1) as f64;
        let (cx, cy) = layout.scanners.iter().fold((0.0, 0.0), |(x, y), s| {
            (x + s.position.0 / count, y + s.position.1 / count)
        });
        let (dx, dy) = (entrance.0 - cx, entrance.1 - cy);
        let len = dx.hypot(dy);
        let outward = if len > 1e-6 {
            (dx / len, dy / len)
        } else {
            (0.0, -1.0)
        };
        // Far enough that the loudest phone is below the sensitivity at
        // every scanner on average, within reason.
        let walk_out_m = layout
            .scanners
            .iter()
            .map(|s| {
                let d_entrance = (s.position.0 - entrance.0).hypot(s.position.1 - entrance.1);
                let range = 10f64.powf(
                    (-56.0 - s.rssi_offset - config.radio.sensitivity_dbm)
                        / (10.0 * s.path_loss_exponent.max(0.5)),
                );
                range - d_entrance
            })
            .fold(10.0, f64::max)
            .min(MAX_WALK_OUT_M);
        World {
            layout,
            entrance,
            outward,
            walk_out_m,
            dwell_ms: (millis(config.dwell.0), millis(config.dwell.1)),
        }
    }

    /// A point out of range beyond the entrance, a few metres to either side.
    pub(super) fn outside(&self, rng: &mut Rng) -> (f64, f64) {
        let side = rng.f64() * 6.0 - 3.0;
        let (ox, oy) = self.outward;
        (
            self.entrance.0 + ox * self.walk_out_m - oy * side,
            self.entrance.1 + oy * self.walk_out_m + ox * side,
        )
    }

    pub(super) fn plan(
        &self,
        rng: &mut Rng,
        appears: i64,
        customer: Option<usize>,
    ) -> (SimShopper, Vec<Leg>) {
        let speed = 0.8 + 0.6 * rng.f64();
        let mut legs = Vec::new();
        let mut here = self.outside(rng);
        let mut now = appears;
        let walk = |legs: &mut Vec<Leg>, now: &mut i64, here: &mut (f64, f64), to: (f64, f64)| {
            let metres = (to.0 - here.0).hypot(to.1 - here.1);
            #[allow(clippy::cast_possible_truncation)]
            let ms = (metres / speed * 1000.0).round() as i64;
            legs.push(Leg {
                start: *now,
                end: *now + ms,
                from: *here,
                to,
            });
            *now += ms;
            *here = to;
        };
        walk(&mut legs, &mut now, &mut here, self.entrance);
        let enters = now;
        let mut stops = Vec::new();
        for (zone, at, edge) in self.choose_stops(rng) {
            walk(&mut legs, &mut now, &mut here, at);
            let dwell = rng.i64(self.dwell_ms.0..=self.dwell_ms.1);
            legs.push(Leg {
                start: now,
                end: now + dwell,
                from: at,
                to: at,
            });
            stops.push(SimStop {
                zone,
                at,
                edge,
                from: Timestamp(now),
                until: Timestamp(now + dwell),
            });
            now += dwell;
        }
        walk(&mut legs, &mut now, &mut here, self.entrance);
        let exits = now;
        let out = self.outside(rng);
        walk(&mut legs, &mut now, &mut here, out);
        let shopper = SimShopper {
            customer,
            appears: Timestamp(appears),
            enters: Timestamp(enters),
            exits: Timestamp(exits),
            gone: Timestamp(now),
            stops,
        };
        (shopper, legs)
    }

    /// A random subset of the zones in random order, each with a point to
    /// stand at; near random scanners in a layout without zones.
    pub(super) fn choose_stops(&self, rng: &mut Rng) -> Vec<(Option<ZoneIdx>, (f64, f64), bool)> {
        let mut zones: Vec<usize> = (1..self.layout.zones.len()).collect();
        rng.shuffle(&mut zones);
        let mut stops = Vec::new();
        for &z in &zones {
            if rng.f64() < 0.6 {
                stops.extend(self.stop_in(rng, z));
            }
        }
        if stops.is_empty() {
            if let Some(&z) = zones.first() {
                stops.extend(self.stop_in(rng, z));
            }
        }
        if stops.is_empty() {
            for _ in 0..rng.usize(1..=3) {
                let Some(s) = rng.choice(&self.layout.scanners) else {
                    break;
                };
                let r = 3.0 * rng.f64().sqrt();
                let at = around(rng, s.position, r);
                stops.push((None, at, false));
            }
        }
        stops
    }

    pub(super) fn stop_in(
        &self,
        rng: &mut Rng,
        zone: usize,
    ) -> Option<(Option<ZoneIdx>, (f64, f64), bool)> {
        let idx = ZoneIdx(u16::try_from(zone).ok()?);
        let edge = rng.f64() < EDGE_SHARE;
        let at = match &self.layout.zones.get(zone)?.kind {
            ZoneKind::Store { .. } => return None,
            ZoneKind::Near {
                scanner,
                enter_m,
                exit_m,
            } => {
                let centre = self.layout.scanners.get(usize::from(scanner.0))?.position;
                let r = if edge {
                    enter_m + (exit_m - enter_m).max(0.5) * rng.f64()
                } else {
                    enter_m * 0.8 * rng.f64().sqrt()
                };
                around(rng, centre, r)
            }
            ZoneKind::Area {
                polygon,
                exit_margin_m,
                ..
            } => {
                let centroid = polygon.centroid()?;
                if edge {
                    let edges: Vec<_> = polygon.exterior().lines().collect();
                    let line = rng.choice(&edges)?;
                    let f = rng.f64();
                    let p = (
                        line.start.x + (line.end.x - line.start.x) * f,
                        line.start.y + (line.end.y - line.start.y) * f,
                    );
                    let (dx, dy) = (p.0 - centroid.x(), p.1 - centroid.y());
                    let len = dx.hypot(dy).max(1e-6);
                    let out = exit_margin_m * rng.f64();
                    (p.0 + dx / len * out, p.1 + dy / len * out)
                } else {
                    let rect = polygon.bounding_rect()?;
                    (0..32)
                        .map(|_| {
                            (
                                rect.min().x + rect.width() * rng.f64(),
                                rect.min().y + rect.height() * rng.f64(),
                            )
                        })
                        .find(|&(x, y)| polygon.contains(&Point::new(x, y)))
                        .unwrap_or((centroid.x(), centroid.y()))
                }
            }
        };
        Some((Some(idx), at, edge))
    }

    /// The store's own devices: a shelf beacon by the last scanner, a
    /// payment terminal by the entrance, an Eddystone beacon in the middle.
    pub(super) fn fixed_devices(
        &self,
        rng: &mut Rng,
        layout: &Layout,
    ) -> Vec<((f64, f64), Kind, Fixed)> {
        let last = layout.scanners.last().map_or(self.entrance, |s| s.position);
        #[allow(clippy::cast_precision_loss)]
        let count = layout.scanners.len().max(1) as f64;
        let middle = layout.scanners.iter().fold((0.0, 0.0), |(x, y), s| {
            (x + s.position.0 / count, y + s.position.1 / count)
        });
        let mut shelf = Sections::default();
        shelf.add(&Frame::IBeacon {
            uuid: random_array(rng),
            major: rng.u16(..),
            minor: rng.u16(..),
            measured_power: DEFAULT_P1M,
        });
        let mut terminal = Sections::default();
        terminal.mfg.push(ManufacturerData {
            company: 0x0059,
            data: random_payload(rng, 8),
        });
        terminal.uuids.push(Uuid128::from_u16(0x180A));
        terminal.name = Some("POS-Terminal".into());
        terminal.tx_power = Some(0);
        vec![
            (
                around(rng, last, 1.5),
                Kind::Static(Box::new(shelf)),
                Fixed {
                    addr: static_random_address(rng),
                    interval: 1000,
                },
            ),
            (
                around(rng, self.entrance, 2.0),
                Kind::Static(Box::new(terminal)),
                Fixed {
                    addr: BdAddr(random_array(rng)),
                    interval: 500,
                },
            ),
            (
                around(rng, middle, 1.0),
                Kind::EddystoneTag,
                Fixed {
                    addr: static_random_address(rng),
                    interval: 700,
                },
            ),
        ]
    }
}

/// A point `r` metres from `centre` in a random direction.
pub(super) fn around(rng: &mut Rng, centre: (f64, f64), r: f64) -> (f64, f64) {
    let a = TAU * rng.f64();
    (centre.0 + r * a.cos(), centre.1 + r * a.sin())
}

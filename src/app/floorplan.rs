//! `nearcast import-floorplan`: turns an ESPresense-companion `config.yaml`
//! (floors of rooms with polygon outlines, nodes with `point: [x, y, z]`)
//! into a suggested `zones.toml`: each stationary node an ESPresense
//! scanner, each room an `area` zone, each floor its own group.
//!
//! It reads the staff's live `zones.toml` only to keep the store's name,
//! id, time zone, hours, radio model and calibrations, and writes a copy for
//! review, never the live file (like `nearcast calibrate`). Owns no
//! validation of its own: `check-config` judges the result.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::Path;

use serde::Deserialize;

use super::Error;

/// The parts of ESPresense-companion's `config.yaml` a floor plan needs;
/// everything else in it (MQTT, filtering, devices) is ignored.
#[derive(Deserialize)]
struct Companion {
    #[serde(default)]
    floors: Vec<Floor>,
    #[serde(default)]
    nodes: Vec<Node>,
}

#[derive(Deserialize)]
struct Floor {
    id: Option<String>,
    name: Option<String>,
    #[serde(default)]
    rooms: Vec<Room>,
}

#[derive(Deserialize)]
struct Room {
    id: Option<String>,
    name: Option<String>,
    #[serde(default)]
    points: Vec<Vec<f64>>,
}

#[derive(Deserialize)]
struct Node {
    id: Option<String>,
    name: Option<String>,
    point: Option<Vec<f64>>,
    #[serde(default)]
    floors: Vec<String>,
    #[serde(default = "yes")]
    stationary: bool,
}

fn yes() -> bool {
    true
}

/// A floor plan as nearcast will use it.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// The floors imported, by id.
    pub floors: Vec<String>,
    /// ESPresense nodes: (scanner and node id, position in metres).
    pub scanners: Vec<(String, [f64; 2])>,
    /// Rooms: (zone id, floor id, outline without the closing point).
    pub areas: Vec<(String, String, Vec<[f64; 2]>)>,
    /// What was left out and why, for the suggestion's comments.
    pub skipped: Vec<String>,
}

/// Why a `config.yaml` gives no plan.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// Not a companion configuration: `line:column: what`.
    #[error("{0}")]
    Yaml(String),
    /// `--floor` names no floor of the file.
    #[error("--floor {wanted}: no such floor in the file (floors: {})", .floors.join(", "))]
    NoFloor {
        /// The floor asked for.
        wanted: String,
        /// The file's floors.
        floors: Vec<String>,
    },
}

/// ESPresense-companion's id for a name: lower snake case (`"Upstairs
/// Hallway"` → `upstairs_hallway`), which is also the node's room in its
/// MQTT topics.
fn snake(name: &str) -> String {
    let mut out = String::new();
    for c in name.trim().chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.is_empty() && !out.ends_with('_') {
            out.push('_');
        }
    }
    out.trim_end_matches('_').to_owned()
}

/// Reads `yaml` (ESPresense-companion's `config.yaml`), keeping only
/// `floor` when given.
///
/// # Errors
/// YAML that is not a companion configuration (with line and column), or
/// an unknown `floor`.
pub fn read(yaml: &str, floor: Option<&str>) -> Result<Plan, ReadError> {
    let c: Companion = serde_yaml_ng::from_str(yaml).map_err(|e| {
        ReadError::Yaml(match e.location() {
            Some(l) => {
                let at = format!(" at line {} column {}", l.line(), l.column());
                format!(
                    "{}:{}: {}",
                    l.line(),
                    l.column(),
                    e.to_string().replacen(&at, "", 1)
                )
            }
            None => e.to_string(),
        })
    })?;
    let floor_id = |i: usize, f: &Floor| {
        f.id.clone()
            .or_else(|| f.name.as_deref().map(snake))
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| format!("floor{}", i + 1))
    };
    let all: Vec<String> = c
        .floors
        .iter()
        .enumerate()
        .map(|(i, f)| floor_id(i, f))
        .collect();
    if let Some(want) = floor {
        if !all.iter().any(|f| f == want) {
            return Err(ReadError::NoFloor {
                wanted: want.to_owned(),
                floors: all,
            });
        }
    }
    let chosen = |f: &str| floor.is_none_or(|want| want == f);
    let mut plan = Plan {
        floors: all.iter().filter(|f| chosen(f)).cloned().collect(),
        scanners: Vec::new(),
        areas: Vec::new(),
        skipped: Vec::new(),
    };

    for n in &c.nodes {
        let label = n.name.as_deref().or(n.id.as_deref()).unwrap_or("?");
        let id = n.id.clone().unwrap_or_else(|| snake(label));
        if !n.floors.is_empty() && !n.floors.iter().any(|f| chosen(f)) {
            continue;
        }
        let why = match &n.point {
            _ if id.is_empty() => Some("it has no name or id"),
            _ if !n.stationary => Some("it moves (stationary: false)"),
            Some(p) if p.len() >= 2 && p[0].is_finite() && p[1].is_finite() => None,
            _ => Some("it has no `point: [x, y, z]`"),
        };
        if let Some(why) = why {
            plan.skipped.push(format!("node {label:?}: {why}"));
        } else if plan.scanners.iter().any(|(s, _)| *s == id) {
            plan.skipped
                .push(format!("node {label:?}: a second node `{id}`"));
        } else if let Some(p) = &n.point {
            plan.scanners.push((id, [p[0], p[1]]));
        }
    }

    let mut taken: HashSet<String> = HashSet::from(["store".to_owned()]);
    for (f, fid) in c.floors.iter().zip(&all) {
        if !chosen(fid) {
            continue;
        }
        for r in &f.rooms {
            let label = r.name.as_deref().or(r.id.as_deref()).unwrap_or("?");
            let mut outline: Vec<[f64; 2]> = r
                .points
                .iter()
                .filter(|p| p.len() >= 2 && p[0].is_finite() && p[1].is_finite())
                .map(|p| [p[0], p[1]])
                .collect();
            if outline.len() > 1 && outline.first() == outline.last() {
                outline.pop();
            }
            let base = r.id.clone().unwrap_or_else(|| snake(label));
            if outline.len() < 3 || base.is_empty() {
                plan.skipped.push(format!(
                    "room {label:?} on {fid}: no name or fewer than three points"
                ));
                continue;
            }
            let id = if taken.contains(&base) {
                format!("{fid}_{base}")
            } else {
                base
            };
            if !taken.insert(id.clone()) {
                plan.skipped
                    .push(format!("room {label:?} on {fid}: a second room `{id}`"));
                continue;
            }
            plan.areas.push((id, fid.clone(), outline));
        }
    }
    Ok(plan)
}

/// How a suggestion's header starts.
const HEADER: &str = "# Suggested by `nearcast import-floorplan`";

/// The suggested `zones.toml`: the store's settings from `live` (the
/// current `zones.toml`, if there is one) with its scanners and zones
/// replaced by `plan`'s.
///
/// # Errors
/// A `live` file that is not TOML.
pub fn render(plan: &Plan, live: Option<&str>, source: &Path) -> Result<String, String> {
    let mut out = String::new();
    let floors = plan.floors.join(", ");
    let _ = writeln!(
        out,
        "{HEADER} from {}:\n\
         # {} ESPresense nodes as scanners, {} rooms as areas (floors: {floors}).\n\
         # Each floor is its own group of areas. nearcast places a customer on one\n\
         # plane, so rooms of different floors overlap: import one floor with\n\
         # --floor if that is where customers are. Node heights are dropped.\n\
         # Review (opening hours, store id), then copy over zones.toml.",
        source.display(),
        plan.scanners.len(),
        plan.areas.len(),
    );
    for s in &plan.skipped {
        let _ = writeln!(out, "# Left out: {s}.");
    }
    out.push('\n');
    match live {
        Some(text) => {
            // A suggestion copied over zones.toml as it was: its header is
            // not the staff's comment, and a new one replaces it.
            let text = if text.starts_with(HEADER) {
                text.split_once("\n\n").map_or("", |(_, rest)| rest)
            } else {
                text
            };
            let mut doc: toml_edit::DocumentMut = text.parse().map_err(|e| format!("{e}"))?;
            doc.remove("scanner");
            doc.remove("zone");
            out.push_str(doc.to_string().trim_end());
            out.push('\n');
        }
        None => {
            let tz = jiff::tz::TimeZone::system()
                .iana_name()
                .unwrap_or("UTC")
                .to_owned();
            let _ = writeln!(
                out,
                "store = \"Imported floor plan\"\nstore_id = \"store\"\ntime_zone = {}\n\n[hours]",
                toml_edit::Value::from(tz)
            );
            for day in ["mon", "tue", "wed", "thu", "fri", "sat", "sun"] {
                let _ = writeln!(out, "{day} = \"09:00-20:00\"");
            }
        }
    }
    for (id, [x, y]) in &plan.scanners {
        let _ = write!(
            out,
            "\n[[scanner]]\nid = \"{id}\"\nposition = [{x:?}, {y:?}]\nsource = \"espresense\"\n"
        );
    }
    out.push_str("\n[[zone]]\nid = \"store\"\nkind = \"store\"\n");
    for (id, floor, outline) in &plan.areas {
        let points: Vec<String> = outline
            .iter()
            .map(|[x, y]| format!("[{x:?}, {y:?}]"))
            .collect();
        let _ = write!(
            out,
            "\n[[zone]]\nid = \"{id}\"\nkind = \"area\"\ngroup = \"{floor}\"\npolygon = [{}]\n",
            points.join(", ")
        );
    }
    Ok(out)
}

/// Reads `file`, and writes the suggestion to `out`, never over the live
/// `zones.toml` in `config_dir`.
///
/// # Errors
/// `out` is the live file; a file that cannot be read, parsed or written.
pub fn import(
    config_dir: &Path,
    file: &Path,
    floor: Option<&str>,
    out: &Path,
) -> Result<Plan, Error> {
    super::refuse_live_zones(config_dir, out, "import-floorplan")?;
    let yaml = std::fs::read_to_string(file).map_err(|e| Error::io(file, e))?;
    let plan = read(&yaml, floor).map_err(|e| match e {
        ReadError::Yaml(at) => Error::Usage(format!("{}:{at}", file.display())),
        e @ ReadError::NoFloor { .. } => Error::Usage(format!("{}: {e}", file.display())),
    })?;
    let zones = config_dir.join(crate::config::ZONES_FILE);
    let live = match std::fs::read_to_string(&zones) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(Error::io(&zones, e)),
    };
    let text = render(&plan, live.as_deref(), file)
        .map_err(|e| Error::Usage(format!("{}: {e}", zones.display())))?;
    std::fs::write(out, text).map_err(|e| Error::io(out, e))?;
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_companion_ids() {
        assert_eq!(snake("Upstairs Hallway"), "upstairs_hallway");
        assert_eq!(snake(" Master  Bathroom "), "master_bathroom");
        assert_eq!(snake("VW EOS"), "vw_eos");
        assert_eq!(snake("Café!"), "caf");
    }

    #[test]
    fn rooms_nodes_and_what_is_left_out() {
        let yaml = "floors:\n  - id: ground\n    rooms:\n      - name: Shop Floor\n        points: [[0, 0], [4, 0], [4, 3], [0, 0]]\n      - name: Store\n        points: [[4, 0], [8, 0], [8, 3]]\n      - name: Line\n        points: [[0, 0], [1, 1]]\n  - id: up\n    rooms:\n      - name: Office\n        points: [[0, 0], [1, 0], [1, 1]]\nnodes:\n  - name: Door\n    point: [0.5, 0.25, 1]\n    floors: [ground]\n  - name: Cart\n    stationary: false\n    point: [1, 1, 1]\n  - name: Up\n    point: [1, 1, 3]\n    floors: [up]\n  - id: bare\n";
        let plan = read(yaml, Some("ground")).unwrap();
        assert_eq!(plan.floors, ["ground"]);
        assert_eq!(plan.scanners, [("door".to_owned(), [0.5, 0.25])]);
        assert_eq!(
            plan.areas,
            [
                (
                    "shop_floor".to_owned(),
                    "ground".to_owned(),
                    vec![[0.0, 0.0], [4.0, 0.0], [4.0, 3.0]]
                ),
                (
                    "ground_store".to_owned(),
                    "ground".to_owned(),
                    vec![[4.0, 0.0], [8.0, 0.0], [8.0, 3.0]]
                ),
            ]
        );
        assert_eq!(
            plan.skipped,
            [
                "node \"Cart\": it moves (stationary: false)",
                "node \"bare\": it has no `point: [x, y, z]`",
                "room \"Line\" on ground: no name or fewer than three points",
            ]
        );
        assert_eq!(
            read(yaml, Some("roof")).unwrap_err().to_string(),
            "--floor roof: no such floor in the file (floors: ground, up)"
        );
        assert_eq!(read(yaml, None).unwrap().areas.len(), 3);
    }

    #[test]
    fn yaml_errors_say_where() {
        let err = read("floors:\n  - id: a\n    rooms: 3\n", None)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "3:12: floors[0].rooms: invalid type: integer `3`, expected a sequence"
        );
    }
}

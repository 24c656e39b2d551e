//! `nearcast import-floorplan` on ESPresense-companion's own `config.yaml`
//! (tests/fixtures/espresense-companion): the suggestion passes
//! `check-config` with exactly the house's nodes and rooms, keeps the live
//! store's settings, and never overwrites the live `zones.toml`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/espresense-companion/config.yaml")
}

fn nearcast(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nearcast"))
        .arg("--config")
        .arg(dir)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A config directory with a broker and a campaign, and no zones.toml yet.
fn config_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("nearcast.toml"),
        "[database]\npath = \"nearcast.db\"\n\n[channels.sms]\nadapter = \"console\"\n\n[mqtt]\nurl = \"mqtt://127.0.0.1:1883\"\nusername = \"nearcast\"\npassword_file = \"mqtt-password\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("campaigns.toml"),
        "[[campaign]]\nid = \"hello\"\ntrigger = \"arrive\"\nmessage = \"hello\"\ncooldown = \"1h\"\npurpose = \"welcome\"\n\n[[message]]\nid = \"hello\"\nttl = \"5m\"\nplain = \"Hi {first_name}\"\n",
    )
    .unwrap();
    dir
}

/// (scanner id, position, source) and (zone id, kind, group) of a zones.toml.
type Scanners = Vec<(String, [f64; 2], String)>;
type Zones = Vec<(String, String, Option<String>)>;
fn plan(path: &Path) -> (toml::Table, Scanners, Zones) {
    let t: toml::Table = std::fs::read_to_string(path).unwrap().parse().unwrap();
    let scanners = t["scanner"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let p = s["position"].as_array().unwrap();
            (
                s["id"].as_str().unwrap().to_owned(),
                [p[0].as_float().unwrap(), p[1].as_float().unwrap()],
                s["source"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let zones = t["zone"]
        .as_array()
        .unwrap()
        .iter()
        .map(|z| {
            (
                z["id"].as_str().unwrap().to_owned(),
                z["kind"].as_str().unwrap().to_owned(),
                z.get("group").map(|g| g.as_str().unwrap().to_owned()),
            )
        })
        .collect();
    (t, scanners, zones)
}

const FIRST_FLOOR_NODES: [(&str, [f64; 2]); 9] = [
    ("garage", [1.0, 17.3]),
    ("family", [0.25, 0.4]),
    ("kitchen", [8.0, 6.5]),
    ("nook", [7.0, 0.55]),
    ("dining", [16.3, 2.6]),
    ("basement", [15.8, 11.5]),
    ("laundry", [4.3, 7.6]),
    ("back_stairs", [4.5, 7.5]),
    ("foyer", [9.9, 8.3]),
];

const FIRST_FLOOR_ROOMS: [&str; 9] = [
    "powder", "den", "family", "kitchen", "garage", "living", "dining", "foyer", "laundry",
];

#[test]
fn the_companions_house_becomes_a_zones_toml_that_check_config_accepts() {
    let dir = config_dir();
    let file = fixture();
    let out = nearcast(dir.path(), &["import-floorplan", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).lines().take(2).collect::<Vec<_>>(),
        [
            "13 nodes as ESPresense scanners, 13 rooms as areas (floors: first, second) -> zones.suggested.toml",
            "left out: node \"VW EOS\": it moves (stationary: false)",
        ]
    );
    let suggested = dir.path().join("zones.suggested.toml");
    let (_, scanners, zones) = plan(&suggested);
    // Every stationary node, in config.yaml's order, at its x and y.
    let expected: Vec<(String, [f64; 2], String)> = [
        ("master", [3.4, 10.4]),
        ("bathroom", [0.15, 8.6]),
        ("upstairs_hallway", [10.4, 6.4]),
    ]
    .into_iter()
    .chain([FIRST_FLOOR_NODES[0]])
    .chain([("office", [6.8, 13.5])])
    .chain(FIRST_FLOOR_NODES[1..].iter().copied())
    .map(|(id, p)| (id.to_owned(), p, "espresense".to_owned()))
    .collect();
    assert_eq!(scanners, expected);
    let mut expected: Vec<(String, String, Option<String>)> =
        vec![("store".into(), "store".into(), None)];
    for r in FIRST_FLOOR_ROOMS {
        expected.push((r.into(), "area".into(), Some("first".into())));
    }
    for r in ["master", "office", "master_bathroom", "master_closet"] {
        expected.push((r.into(), "area".into(), Some("second".into())));
    }
    assert_eq!(zones, expected);

    std::fs::copy(&suggested, dir.path().join("zones.toml")).unwrap();
    let check = nearcast(dir.path(), &["check-config"]);
    assert!(check.status.success(), "{}", text(&check.stderr));
    assert!(
        text(&check.stdout).contains("configuration OK: 13 scanners, 14 zones"),
        "{}",
        text(&check.stdout)
    );
}

#[test]
fn one_floor_keeps_the_live_stores_settings_and_passes_check_config() {
    let dir = config_dir();
    // The live zones.toml: the committed hand-made plan of the same house.
    let live = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/espresense-companion/zones.toml");
    std::fs::copy(&live, dir.path().join("zones.toml")).unwrap();
    let file = fixture();
    let out = nearcast(
        dir.path(),
        &[
            "import-floorplan",
            file.to_str().unwrap(),
            "--floor",
            "first",
            "--out",
            "first.toml",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (t, scanners, zones) = plan(&dir.path().join("first.toml"));
    assert_eq!(t["store"].as_str(), Some("ESPresense test house"));
    assert_eq!(t["store_id"].as_str(), Some("house"));
    assert_eq!(t["time_zone"].as_str(), Some("America/New_York"));
    assert_eq!(t["radio"]["path_loss_exponent"].as_float(), Some(3.0));
    let expected: Vec<_> = FIRST_FLOOR_NODES
        .iter()
        .map(|(id, p)| ((*id).to_owned(), *p, "espresense".to_owned()))
        .collect();
    assert_eq!(scanners, expected);
    assert_eq!(
        zones.iter().map(|z| z.0.as_str()).collect::<Vec<_>>(),
        [&["store"][..], &FIRST_FLOOR_ROOMS[..]].concat()
    );

    // Importing again over a live file that is itself a suggestion keeps
    // one header, not two.
    std::fs::copy(dir.path().join("first.toml"), dir.path().join("zones.toml")).unwrap();
    let check = nearcast(dir.path(), &["check-config"]);
    assert!(check.status.success(), "{}", text(&check.stderr));
    let again = nearcast(
        dir.path(),
        &[
            "import-floorplan",
            file.to_str().unwrap(),
            "--floor",
            "first",
            "--out",
            "again.toml",
        ],
    );
    assert!(again.status.success(), "{}", text(&again.stderr));
    let again = std::fs::read_to_string(dir.path().join("again.toml")).unwrap();
    assert_eq!(again.matches("# Suggested by").count(), 1, "{again}");
    assert_eq!(
        again,
        std::fs::read_to_string(dir.path().join("first.toml")).unwrap()
    );
}

#[test]
fn the_live_zones_toml_is_never_overwritten() {
    let dir = config_dir();
    let zones = dir.path().join("zones.toml");
    std::fs::write(&zones, "# the staff's own\n").unwrap();
    let file = fixture();
    let out = nearcast(
        dir.path(),
        &[
            "import-floorplan",
            file.to_str().unwrap(),
            "--out",
            zones.to_str().unwrap(),
        ],
    );
    assert!(!out.status.success());
    assert_eq!(
        text(&out.stderr),
        format!(
            "nearcast: --out {} is the live zones.toml: import-floorplan only writes a suggestion; choose another file and review it\n",
            zones.display()
        )
    );
    assert_eq!(
        std::fs::read_to_string(&zones).unwrap(),
        "# the staff's own\n"
    );
}

#[test]
fn bad_yaml_and_unknown_floors_are_refused_with_where_and_what() {
    let dir = config_dir();
    std::fs::write(
        dir.path().join("bad.yaml"),
        "floors:\n  - id: a\n    rooms: 3\n",
    )
    .unwrap();
    let out = nearcast(dir.path(), &["import-floorplan", "bad.yaml"]);
    assert!(!out.status.success());
    assert_eq!(
        text(&out.stderr),
        "nearcast: bad.yaml:3:12: floors[0].rooms: invalid type: integer `3`, expected a sequence\n"
    );
    let file = fixture();
    let out = nearcast(
        dir.path(),
        &[
            "import-floorplan",
            file.to_str().unwrap(),
            "--floor",
            "third",
        ],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).ends_with(
            "config.yaml: --floor third: no such floor in the file (floors: first, second)\n"
        ),
        "{}",
        text(&out.stderr)
    );
    assert!(!dir.path().join("zones.suggested.toml").exists());
}

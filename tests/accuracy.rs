//! Presence accuracy on a real recording: the flat-ble harness
//! (`tests/fixtures/flat-ble`, six BLE anchors in a furnished flat, LiDAR
//! ground truth) run on the binary this test suite builds. A quality floor,
//! not a timing: it fails when nearcast puts the tag in the right room less
//! often than 80 % of the scored seconds.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::Path;
use std::process::Command;

const FLOOR_PERCENT: f64 = 80.0;

#[test]
fn flat_ble_right_room_accuracy_stays_above_the_floor() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cache = tempfile::tempdir().unwrap();
    let out = Command::new("bash")
        .arg(root.join("tests/fixtures/flat-ble/run"))
        .arg(env!("CARGO_BIN_EXE_nearcast"))
        .args(["--template", "config"])
        .current_dir(root)
        .env("FLAT_BLE_CACHE", cache.path())
        .env("TMPDIR", cache.path())
        .output()
        .expect("bash runs the flat-ble harness (it needs python3 >= 3.11)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the harness could not run:\n{stdout}\n{stderr}"
    );
    // The last line: `zone accuracy X% (strongest-room Y%, smoothed Z%), …`.
    let summary = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with("zone accuracy "))
        .unwrap_or_else(|| panic!("no summary line in:\n{stdout}"));
    let accuracy: f64 = summary["zone accuracy ".len()..]
        .split('%')
        .next()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no accuracy in {summary:?}"));
    let two_plus: f64 = summary
        .rsplit(", ")
        .find_map(|part| part.strip_prefix("2+ zones ")?.strip_suffix('%'))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no 2+ zones figure in {summary:?}"));
    eprintln!("{stdout}");
    assert!(
        accuracy >= FLOOR_PERCENT,
        "right-room accuracy {accuracy}% is below the {FLOOR_PERCENT}% floor:\n{stdout}"
    );
    assert!(
        two_plus == 0.0,
        "a tag stood in two rooms at once ({two_plus}% of seconds):\n{stdout}"
    );
}

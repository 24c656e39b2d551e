//! The Debian package's description: every asset exists, the conffiles are
//! the three configuration files, the maintainer scripts are valid shell,
//! and the service is installed but neither enabled nor started.
#![allow(clippy::unwrap_used, missing_docs)]

use std::path::Path;

fn manifest() -> toml::Table {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    toml::from_str(&std::fs::read_to_string(root.join("Cargo.toml")).unwrap()).unwrap()
}

#[test]
fn the_deb_metadata_is_complete_and_starts_nothing() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let m = manifest();
    let deb = m["package"]["metadata"]["deb"].as_table().unwrap();
    let mut installed = Vec::new();
    for a in deb["assets"].as_array().unwrap() {
        let a = a.as_array().unwrap();
        let (src, dest) = (a[0].as_str().unwrap(), a[1].as_str().unwrap());
        if src != "target/release/nearcast" {
            assert!(root.join(src).exists(), "asset {src} is missing");
        }
        let name = Path::new(src).file_name().unwrap().to_str().unwrap();
        installed.push(format!("/{dest}{name}"));
    }
    assert!(installed.contains(&"/usr/bin/nearcast".to_owned()));
    let conffiles: Vec<&str> = deb["conf-files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        conffiles,
        [
            "/etc/nearcast/nearcast.toml",
            "/etc/nearcast/zones.toml",
            "/etc/nearcast/campaigns.toml"
        ]
    );
    for c in &conffiles {
        assert!(installed.iter().any(|i| i == c), "{c} is not installed");
    }
    let units = deb["systemd-units"].as_table().unwrap();
    assert_eq!(units["enable"].as_bool(), Some(false));
    assert_eq!(units["start"].as_bool(), Some(false));
    assert!(
        root.join(units["unit-scripts"].as_str().unwrap())
            .join("nearcast.service")
            .exists()
    );
    for script in ["postinst", "postrm"] {
        let path = root
            .join(deb["maintainer-scripts"].as_str().unwrap())
            .join(script);
        let ok = std::process::Command::new("sh")
            .arg("-n")
            .arg(&path)
            .status()
            .unwrap();
        assert!(ok.success(), "{} is not valid shell", path.display());
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("#DEBHELPER#"),
            "{script} lacks the #DEBHELPER# token"
        );
    }
}

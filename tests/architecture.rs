//! Architecture invariants as tests: each is an absence that a change can
//! break (see ARCHITECTURE.md).
#![allow(clippy::unwrap_used, missing_docs)]

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(rust_files(&p));
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    out.sort();
    out
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Source text without `#[cfg(test)]` modules and comments, so tests and
/// docs may mention what the code must not use.
fn code(p: &Path) -> String {
    let text = std::fs::read_to_string(p).unwrap();
    let text = text.split("#[cfg(test)]").next().unwrap_or("").to_owned();
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn core_does_no_io_and_reads_no_clock() {
    let forbidden = [
        "tokio",
        "rusqlite",
        "reqwest",
        "btleplug",
        "axum",
        "std::fs",
        "std::net",
        "std::io::",
        "SystemTime",
        "Instant::now",
        "std::env",
        "std::thread",
        "tracing::",
    ];
    for f in rust_files(&src().join("core")) {
        let c = code(&f);
        for word in forbidden {
            assert!(!c.contains(word), "{} uses `{word}`", f.display());
        }
    }
}

#[test]
fn only_store_contains_sql() {
    let sql = [
        "SELECT ",
        "INSERT INTO",
        "UPDATE outbox",
        "DELETE FROM",
        "CREATE TABLE",
        "PRAGMA ",
    ];
    for f in rust_files(&src()) {
        if f.starts_with(src().join("store")) {
            continue;
        }
        let c = code(&f);
        for word in sql {
            assert!(!c.contains(word), "{} contains SQL (`{word}`)", f.display());
        }
        assert!(!c.contains("rusqlite"), "{} uses rusqlite", f.display());
    }
}

#[test]
fn only_source_ble_imports_btleplug_and_only_channel_builds_requests() {
    for f in rust_files(&src()) {
        let c = code(&f);
        if f != src().join("source").join("ble.rs") {
            assert!(!c.contains("btleplug"), "{} imports btleplug", f.display());
        }
        if !f.starts_with(src().join("channel")) {
            assert!(
                !c.contains("reqwest"),
                "{} builds provider requests",
                f.display()
            );
        }
    }
}

#[test]
fn every_module_says_what_it_owns() {
    for f in rust_files(&src()) {
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(
            text.trim_start().starts_with("//!"),
            "{} has no //! module doc",
            f.display()
        );
    }
}

#[test]
fn anyhow_only_in_the_binary() {
    for f in rust_files(&src()) {
        if f.ends_with("main.rs") {
            continue;
        }
        assert!(!code(&f).contains("anyhow"), "{} uses anyhow", f.display());
    }
}

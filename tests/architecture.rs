//! Architecture invariants as tests: each is an absence that a change can
//! break (see ARCHITECTURE.md).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

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

/// The top-level module a file under `src/` belongs to (`core` for
/// `src/core/zones.rs`, `clock` for `src/clock.rs`), and its path of
/// modules below that (`["zones"]`).
fn module_of(f: &Path) -> (String, Vec<String>) {
    let rel = f.strip_prefix(src()).unwrap();
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_owned())
        .collect();
    if parts.last().is_some_and(|l| l == "mod") {
        parts.pop();
    }
    let top = parts.remove(0);
    (top, parts)
}

/// The first segment of every path that follows `prefix` (`crate::`,
/// `super::`), also inside `use prefix{a::b, c}` groups.
fn paths_after(code: &str, prefix: &str) -> Vec<String> {
    let ident = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut out = Vec::new();
    for (i, _) in code.match_indices(prefix) {
        // `super::super::` or `crate::x::super::` is not a fresh path.
        if code[..i]
            .chars()
            .last()
            .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':')
        {
            continue;
        }
        let rest = &code[i + prefix.len()..];
        let Some(group) = rest.strip_prefix('{') else {
            out.push(ident(rest));
            continue;
        };
        let mut depth = 1;
        let mut item = String::new();
        for c in group.chars() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                _ => {}
            }
            if depth == 0 || (depth == 1 && c == ',') {
                out.push(ident(&item));
                item.clear();
                if depth == 0 {
                    break;
                }
            } else {
                item.push(c);
            }
        }
    }
    out.retain(|s| !s.is_empty() && s != "self");
    out
}

/// The layer order as ARCHITECTURE.md writes it, bottom first.
fn layers() -> Vec<String> {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("ARCHITECTURE.md"))
            .unwrap();
    let (_, after) = doc
        .split_once("Layers, bottom first:")
        .expect("ARCHITECTURE.md states the layers");
    let list = after.split_once('.').map_or(after, |(l, _)| l);
    list.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// The library's top-level modules, from `src/lib.rs`.
fn top_modules() -> Vec<String> {
    std::fs::read_to_string(src().join("lib.rs"))
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("pub mod "))
        .map(|m| m.trim_end_matches(';').to_owned())
        .collect()
}

#[test]
fn every_import_points_down_the_layers() {
    let order = layers();
    let mut modules = top_modules();
    modules.sort();
    let mut listed = order.clone();
    listed.sort();
    assert_eq!(
        listed, modules,
        "ARCHITECTURE.md's layers must name every module of src/lib.rs once"
    );
    let rank = |m: &str| order.iter().position(|o| o == m);
    let mut wrong = Vec::new();
    for f in rust_files(&src()) {
        if f == src().join("main.rs") || f == src().join("lib.rs") {
            continue;
        }
        let (top, inner) = module_of(&f);
        let c = code(&f);
        let mut used = paths_after(&c, "crate::");
        // In a top-level module's own file, `super::` is the crate root.
        if inner.is_empty() {
            used.extend(paths_after(&c, "super::"));
        }
        for m in used {
            let (Some(from), Some(to)) = (rank(&top), rank(&m)) else {
                continue;
            };
            if to > from {
                wrong.push(format!(
                    "{} ({top}) imports `{m}`, which is above it",
                    f.display()
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn no_two_modules_import_each_other() {
    // Edges between sibling modules one level below the top (`core::identity`
    // → `core::types`), from `super::x` and `crate::top::x`.
    let mut edges: Vec<(String, String)> = Vec::new();
    for f in rust_files(&src()) {
        let (top, inner) = module_of(&f);
        let Some(me) = inner.first() else { continue };
        let c = code(&f);
        let mut used: Vec<String> = Vec::new();
        if inner.len() == 1 {
            used.extend(paths_after(&c, "super::"));
        }
        let own = format!("crate::{top}::");
        used.extend(paths_after(&c, &own));
        for m in used {
            let sibling = src().join(&top).join(format!("{m}.rs")).exists()
                || src().join(&top).join(&m).is_dir();
            if sibling && m != *me {
                edges.push((format!("{top}::{me}"), format!("{top}::{m}")));
            }
        }
    }
    edges.sort();
    edges.dedup();
    // A cycle: a path from `b` back to `a` for some edge a → b.
    let reaches = |from: &str, to: &str| {
        let mut seen = vec![from.to_owned()];
        let mut i = 0;
        while i < seen.len() {
            let cur = seen[i].clone();
            for (a, b) in &edges {
                if *a == cur && !seen.contains(b) {
                    seen.push(b.clone());
                }
            }
            i += 1;
        }
        seen.iter().any(|s| s == to)
    };
    let cycles: Vec<String> = edges
        .iter()
        .filter(|(a, b)| reaches(b, a))
        .map(|(a, b)| format!("{a} → {b} → … → {a}"))
        .collect();
    assert!(cycles.is_empty(), "{}", cycles.join("\n"));
}

#[test]
fn the_import_scan_reads_groups_and_paths() {
    assert_eq!(
        paths_after(
            "use crate::{config::{self, Config}, store};\nlet x = crate::clock::Clock::now;",
            "crate::"
        ),
        ["config", "store", "clock"]
    );
    assert_eq!(
        paths_after("use super::super::Foo; use super::bar;", "super::"),
        ["super", "bar"]
    );
}

#[test]
fn lib_rs_maps_every_module() {
    let lib = std::fs::read_to_string(src().join("lib.rs")).unwrap();
    for m in top_modules() {
        assert!(
            lib.contains(&format!("[`{m}`]")),
            "src/lib.rs's map does not name `{m}`"
        );
    }
}

//! The `nearcast` binary as staff and scripts use it: check-config, the demo,
//! customers, record and replay, stats.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn nearcast(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nearcast"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config")
}

/// A copy of the example config whose database lives in the temp dir.
fn config_copy(dir: &Path) -> PathBuf {
    let c = dir.join("config");
    std::fs::create_dir_all(&c).unwrap();
    for name in [
        "nearcast.toml",
        "zones.toml",
        "campaigns.toml",
        "customers.csv",
    ] {
        let mut t = std::fs::read_to_string(example().join(name)).unwrap();
        if name == "nearcast.toml" {
            t = t.replace(
                "/var/lib/nearcast/nearcast.db",
                &dir.join("state/nearcast.db").display().to_string(),
            );
        }
        std::fs::write(c.join(name), t).unwrap();
    }
    c
}

/// A copy of the example config with its customers imported into the
/// configured database.
fn config_with_customers(dir: &Path) -> PathBuf {
    let c = config_copy(dir);
    let csv = c.join("customers.csv");
    let import = nearcast(&[
        "customers",
        "import",
        csv.to_str().unwrap(),
        "--config",
        c.to_str().unwrap(),
    ]);
    assert!(import.status.success(), "{}", text(&import.stderr));
    c
}

#[test]
fn check_config_accepts_the_example_and_refuses_a_typo_with_its_position() {
    let ok = nearcast(&["check-config", "--config", example().to_str().unwrap()]);
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    assert!(text(&ok.stdout).contains("configuration OK: 3 scanners, 4 zones, 6 campaigns, 5 messages, channels mms, sms, whatsapp"));

    let dir = tempfile::tempdir().unwrap();
    let c = config_copy(dir.path());
    let zones = std::fs::read_to_string(c.join("zones.toml"))
        .unwrap()
        .replace("dwell = \"2m\"", "dwel = \"2m\"");
    std::fs::write(c.join("zones.toml"), &zones).unwrap();
    let line = zones.lines().position(|l| l.starts_with("dwel =")).unwrap() + 1;
    let bad = nearcast(&["check-config", "--config", c.to_str().unwrap()]);
    assert_eq!(bad.status.code(), Some(1));
    let err = text(&bad.stderr);
    assert!(
        err.contains(&format!("zones.toml:{line}:1: unknown field `dwel`")),
        "{err}"
    );
    assert!(err.contains("hint: "), "{err}");
}

/// The number at the start of the summary row after `label` in the demo's
/// "what happened" block (`               57  sent (…)` → 57).
fn demo_count(out: &str, label: &str) -> u64 {
    let story = out.split("── what happened ").nth(1).unwrap_or("");
    story
        .lines()
        .find_map(|l| {
            let t = l.trim_start();
            let (n, rest) = t.split_once("  ")?;
            rest.starts_with(label).then(|| n.trim().parse().ok())?
        })
        .unwrap_or_else(|| panic!("no `{label}` row in\n{out}"))
}

/// Checks that the demo's summary accounts for every message and every
/// held-back decision, and that the narrative shows each kind of
/// held-back decision once. Returns (queued, sent, failed).
fn demo_accounts(out: &str) -> (u64, u64, u64) {
    assert_eq!(
        out.matches("How to read it (times are store time):")
            .count(),
        1,
        "{out}"
    );
    assert!(
        out.contains("History on file before the hour: ")
            && out.contains(" so today is their fifth visit;"),
        "{out}"
    );
    let story = out.split("── what happened ").nth(1).unwrap();
    let field = |label: &str| -> u64 {
        let line = story.lines().find(|l| l.starts_with(label)).unwrap();
        line[label.len()..]
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    // Each kind of held-back decision once in the narrative, all counted below.
    let mut kinds = std::collections::BTreeSet::new();
    for l in out
        .lines()
        .filter(|l| l.get(8..).is_some_and(|r| r.starts_with("  · ")))
    {
        let campaign = l.split_whitespace().nth(3).unwrap();
        let reason = l.split('[').nth(1).unwrap().split(']').next().unwrap();
        assert!(
            kinds.insert((campaign.to_owned(), reason.to_owned())),
            "twice: {l}"
        );
        assert!(
            story.contains(&format!("  {campaign} ")) && story.contains(&format!("[{reason}]")),
            "{l} is not in the summary:\n{story}"
        );
    }
    let held: u64 = story
        .lines()
        .filter(|l| l.ends_with(']'))
        .map(|l| l.split_whitespace().next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(held, field("Held back"), "{story}");
    assert_eq!(
        story.lines().filter(|l| l.ends_with(']')).count(),
        kinds.len(),
        "{story}"
    );
    // Every message queued is sent, failed or expired (none pending here).
    let queued = field("Messages");
    let sent = demo_count(out, "sent (");
    let failed: u64 = story
        .lines()
        .filter(|l| {
            l.trim_start()
                .split_once("  ")
                .is_some_and(|(_, r)| r.starts_with("failed"))
        })
        .map(|l| l.split_whitespace().next().unwrap().parse::<u64>().unwrap())
        .sum();
    let expired = demo_count(out, "expired");
    assert_eq!(queued, sent + failed + expired, "{story}");
    // What a provider would bill: the sent messages by channel.
    let billed: u64 = story
        .split("by channel, as a provider bills them: ")
        .nth(1)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .split(", ")
        .map(|p| p.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(billed, sent, "{story}");
    // And what that would cost, at the prices the line names.
    let count = |channel: &str| {
        story
            .split("by channel, as a provider bills them: ")
            .nth(1)
            .and_then(|r| r.lines().next())
            .and_then(|r| {
                r.split(", ")
                    .find_map(|p| p.strip_prefix(&format!("{channel} ")))
            })
            .map_or(0, |n| n.parse::<u64>().unwrap())
    };
    let cents = 8 * count("sms") + 20 * count("mms") + 12 * count("whatsapp");
    assert!(
        story.contains(&format!(
            "costing about €{}.{:02} at indicative German list prices \
             (sms €0.08, mms €0.20, whatsapp marketing template €0.12 each)",
            cents / 100,
            cents % 100
        )),
        "{story}"
    );
    (queued, sent, failed)
}

#[test]
fn the_demo_is_deterministic_and_sums_up() {
    let a = Command::new(env!("CARGO_BIN_EXE_nearcast"))
        .args(["demo", "--speed", "0", "--minutes", "15", "--seed", "3"])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(a.status.success(), "{}", text(&a.stderr));
    assert_eq!(text(&a.stderr), "", "the narrative is the only output");
    let b = nearcast(&["demo", "--speed", "0", "--minutes", "15", "--seed", "3"]);
    assert_eq!(text(&a.stdout), text(&b.stdout));
    let out = text(&a.stdout);
    assert!(
        out.contains("Shoppers    30 came in over 15 minutes; "),
        "{out}"
    );
    let (queued, sent, failed) = demo_accounts(&out);
    assert!(sent > 0 && queued > 0, "{out}");
    // The console channel printed each message it sent, and only those;
    // a WhatsApp message without a template falls over, as for real.
    let printed = out
        .lines()
        .filter(|l| l.get(8..).is_some_and(|r| r.starts_with("  ✉ ")) && !l.contains("  ⇒ "))
        .count() as u64;
    assert_eq!(printed, sent, "{out}");
    for l in out
        .lines()
        .filter(|l| l.contains("  ⇒ falls") || l.contains("  ⇒ sent"))
    {
        assert!(
            l.contains("✉ whatsapp/") && l.ends_with("⇒ falls over: whatsapp: no approved template for this message, and free text reaches a customer only inside a 24-hour window they opened (allow_text = false)"),
            "{l}"
        );
    }
    if failed > 0 {
        assert!(
            out.contains("  failed: whatsapp: no approved template"),
            "{out}"
        );
    }
    let c = nearcast(&["demo", "--speed", "0", "--minutes", "15", "--seed", "4"]);
    assert_ne!(text(&a.stdout), text(&c.stdout));
}

#[test]
fn customers_import_list_show_opt_out_forget() {
    let dir = tempfile::tempdir().unwrap();
    let c = config_copy(dir.path());
    let cfg = c.to_str().unwrap();
    let csv = c.join("customers.csv");
    let ok = nearcast(&[
        "customers",
        "import",
        csv.to_str().unwrap(),
        "--config",
        cfg,
    ]);
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    assert!(
        text(&ok.stdout).contains("40 added, 0 updated"),
        "{}",
        text(&ok.stdout)
    );

    let bad = dir.path().join("bad.csv");
    std::fs::write(
        &bad,
        "id,first_name,phone,channels,consent_at,consent_source,identities,segments\n\
        x1,Xaver,+4915112340000,sms,2026-01-01T00:00:00Z,app,mac:00:11:22:33:44:55,\n\
        x2,Yvonne,+4915112340001,sms,,app,mac:00:11:22:33:44:56,\n",
    )
    .unwrap();
    let r = nearcast(&[
        "customers",
        "import",
        bad.to_str().unwrap(),
        "--config",
        cfg,
    ]);
    assert_eq!(r.status.code(), Some(1));
    assert!(
        text(&r.stderr).contains("bad.csv:line 3: `consent_at` is empty"),
        "{}",
        text(&r.stderr)
    );

    let list = text(&nearcast(&["customers", "list", "--config", cfg]).stdout);
    assert_eq!(list.lines().count(), 41, "{list}");
    assert!(!list.contains("x1"), "half of a bad file was imported");
    let show = text(&nearcast(&["customers", "show", "c-1001", "--config", cfg]).stdout);
    assert!(
        show.contains("first name      Anna")
            && show.contains("identities      ibeacon (stored as keyed hashes)"),
        "{show}"
    );

    assert!(
        nearcast(&["customers", "opt-out", "c-1001", "--config", cfg])
            .status
            .success()
    );
    let show = text(&nearcast(&["customers", "show", "c-1001", "--config", cfg]).stdout);
    assert!(show.contains("opted out       20"), "{show}");
    assert!(
        nearcast(&["customers", "forget", "c-1001", "--config", cfg])
            .status
            .success()
    );
    let gone = nearcast(&["customers", "show", "c-1001", "--config", cfg]);
    assert_eq!(gone.status.code(), Some(1));
    assert!(text(&gone.stderr).contains("no customer with id \"c-1001\""));
}

#[test]
fn record_then_replay_dry_run_as_json_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let c = config_copy(dir.path());
    let cfg = c.to_str().unwrap();
    let rec = dir.path().join("day.jsonl");
    let r = nearcast(&[
        "record",
        rec.to_str().unwrap(),
        "--sim",
        "--minutes",
        "20",
        "--config",
        cfg,
    ]);
    assert!(r.status.success(), "{}", text(&r.stderr));
    assert!(
        nearcast(&[
            "customers",
            "import",
            c.join("customers.csv").to_str().unwrap(),
            "--config",
            cfg
        ])
        .status
        .success()
    );
    let db = dir.path().join("state/nearcast.db");
    let before = std::fs::read(&db).unwrap();

    let run = |extra: &[&str]| {
        let mut args = vec![
            "replay",
            rec.to_str().unwrap(),
            "--dry-run",
            "--fast",
            "--json",
            "--config",
            cfg,
        ];
        args.extend_from_slice(extra);
        nearcast(&args)
    };
    let a = run(&[]);
    assert!(a.status.success(), "{}", text(&a.stderr));
    assert!(
        text(&a.stderr).contains("sightings/s"),
        "{}",
        text(&a.stderr)
    );
    let out = text(&a.stdout);
    let mut types = std::collections::BTreeSet::new();
    for line in out.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(v["t"].as_f64().unwrap() > 1.7e9);
        assert!(v["customer"].as_str().unwrap().starts_with("c-"));
        let ty = v["type"].as_str().unwrap().to_owned();
        match ty.as_str() {
            "decision" => assert!(v["campaign"].is_string()),
            "suppressed" => assert!(v["reason"].is_string() && v["campaign"].is_string()),
            _ => assert!(v["zone"].is_string()),
        }
        types.insert(ty);
    }
    for ty in ["arrived", "entered", "exited", "left", "decision"] {
        assert!(types.contains(ty), "no {ty} in {types:?}");
    }
    // Same input, same output; and the database file did not change.
    assert_eq!(text(&run(&[]).stdout), out);
    assert_eq!(std::fs::read(&db).unwrap(), before);

    // For real: the decisions land in the database and go out on the console.
    let real = nearcast(&["replay", rec.to_str().unwrap(), "--fast", "--config", cfg]);
    assert!(real.status.success(), "{}", text(&real.stderr));
    assert!(text(&real.stdout).contains("  ✉ "));
    let stats = nearcast(&["stats", "--json", "--config", cfg]);
    let v: serde_json::Value = serde_json::from_slice(&stats.stdout).unwrap();
    let decisions = out
        .lines()
        .filter(|l| l.contains("\"type\":\"decision\""))
        .count();
    assert_eq!(v["decisions_act"].as_u64().unwrap() as usize, decisions);
    let listed = text(&nearcast(&["outbox", "list", "--state", "sent", "--config", cfg]).stdout);
    assert!(listed.lines().count() > 1, "{listed}");
    // One convention, labelled: store time, as the narrative shows it.
    assert!(
        listed
            .lines()
            .next()
            .unwrap()
            .contains(" decided (store time) "),
        "{listed}"
    );
    for row in listed.lines().skip(1) {
        let when: Vec<&str> = row.split_whitespace().skip(1).take(3).collect();
        assert!(
            when.len() == 3 && (when[2] == "CET" || when[2] == "CEST"),
            "{row}"
        );
        let (hms, customer, campaign) = (when[1], cols(row, 4), cols(row, 5));
        let decided = format!("{hms}  ✓ {customer:<18} {campaign}: queued");
        assert!(
            text(&real.stdout).contains(&decided),
            "the narrative has no {decided:?} for {row}"
        );
    }
}

/// The `n`th whitespace-separated column of `row`.
fn cols(row: &str, n: usize) -> &str {
    row.split_whitespace().nth(n).unwrap_or("")
}

/// The summary line `name` of `nearcast broadcast`: its leading number.
fn summary_number(out: &str, name: &str) -> u64 {
    let line = out
        .lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("no `{name}` in {out}"));
    line[name.len()..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn broadcast_dry_run_then_for_real_through_the_console_channel() {
    let dir = tempfile::tempdir().unwrap();
    let c = config_copy(dir.path());
    // The wall clock decides (store hours, quiet hours); it need not be NTP-synced here.
    let daemon = std::fs::read_to_string(c.join("nearcast.toml"))
        .unwrap()
        .replace("require_sync = true", "require_sync = false");
    std::fs::write(c.join("nearcast.toml"), daemon).unwrap();
    let cfg = c.to_str().unwrap();
    let csv = c.join("customers.csv");
    let imported = nearcast(&[
        "customers",
        "import",
        csv.to_str().unwrap(),
        "--config",
        cfg,
    ]);
    assert!(imported.status.success(), "{}", text(&imported.stderr));

    let dry = nearcast(&[
        "broadcast",
        "--campaign",
        "flash-sale",
        "--dry-run",
        "--config",
        cfg,
    ]);
    assert!(dry.status.success(), "{}", text(&dry.stderr));
    let dry = text(&dry.stdout);
    assert!(
        dry.contains("(dry run: nothing written, nothing sent)"),
        "{dry}"
    );
    assert_eq!(summary_number(&dry, "customers considered"), 40, "{dry}");
    let would = summary_number(&dry, "would queue");
    assert_eq!(would + summary_number(&dry, "suppressed"), 40, "{dry}");

    let real = nearcast(&["broadcast", "--campaign", "flash-sale", "--config", cfg]);
    assert!(real.status.success(), "{}", text(&real.stderr));
    let out = text(&real.stdout);
    assert_eq!(summary_number(&out, "queued"), would, "{out}");
    assert_eq!(summary_number(&out, "sent"), would, "{out}");
    // The console channel printed each message once.
    assert_eq!(
        out.lines().filter(|l| l.contains("[flash-sale]")).count() as u64,
        would,
        "{out}"
    );

    // A presence campaign cannot be broadcast; the error names the ones that can.
    let wrong = nearcast(&["broadcast", "--campaign", "welcome", "--config", cfg]);
    assert_eq!(wrong.status.code(), Some(1));
    assert!(
        text(&wrong.stderr).contains("broadcast campaigns: flash-sale"),
        "{}",
        text(&wrong.stderr)
    );
}

#[test]
fn the_demo_delivers_over_http_to_the_stand_in() {
    use std::io::{BufRead, BufReader, Read};
    let mut stand_in = Command::new(env!("CARGO_BIN_EXE_nearcast"))
        .args(["stand-in", "--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(stand_in.stdout.take().unwrap());
    let mut first = String::new();
    reader.read_line(&mut first).unwrap();
    let url = first
        .split_whitespace()
        .find(|w| w.starts_with("http://127.0.0.1:"))
        .unwrap()
        .trim_end_matches(':')
        .to_owned();

    let demo = nearcast(&[
        "demo",
        "--provider",
        &url,
        "--speed",
        "0",
        "--minutes",
        "15",
        "--seed",
        "3",
    ]);
    stand_in.kill().unwrap();
    stand_in.wait().unwrap();
    let mut received = String::new();
    reader.read_to_string(&mut received).unwrap();
    assert!(demo.status.success(), "{}", text(&demo.stderr));
    let out = text(&demo.stdout);
    assert!(out.contains(&format!("providers' APIs at {url}")), "{out}");

    // Phone numbers by customer id, from the demo's customers.
    let csv = std::fs::read_to_string(example().join("customers.csv")).unwrap();
    let phone: std::collections::HashMap<&str, &str> = csv
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[0], f[2])
        })
        .collect();
    // What the demo says it sent, and to whom ...
    let mut sent: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("⇒ sent "))
        .map(|l| {
            let id = l.split(" (").nth(1).unwrap().split(')').next().unwrap();
            phone[id]
        })
        .collect();
    // ... is exactly what the stand-in received.
    let mut got: Vec<&str> = received
        .lines()
        .map(|l| l.split("→ ").nth(1).unwrap().split(' ').next().unwrap())
        .collect();
    sent.sort_unstable();
    got.sort_unstable();
    assert!(!sent.is_empty(), "{out}");
    assert_eq!(sent, got, "demo:\n{out}\nstand-in:\n{received}");
    assert!(received.contains("whatsapp → ") && received.contains("twilio   → "));
    // The summary counts them as sent, and accounts for the rest: the
    // same story as the console demo's.
    let (_, sent_total, _) = demo_accounts(&out);
    assert_eq!(sent_total as usize, got.len(), "{out}");
    let console = nearcast(&["demo", "--speed", "0", "--minutes", "15", "--seed", "3"]);
    let console = text(&console.stdout);
    let story = |o: &str| {
        o.split("── what happened ")
            .nth(1)
            .unwrap()
            .lines()
            .filter(|l| !l.contains(" sent ("))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(story(&out), story(&console));
    assert_eq!(demo_count(&console, "sent ("), sent_total);
}

fn nearcast_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nearcast"))
        .args(args)
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

#[test]
fn an_error_is_printed_once() {
    let dir = tempfile::tempdir().unwrap();
    let c = config_copy(dir.path());
    let zones = std::fs::read_to_string(c.join("zones.toml"))
        .unwrap()
        .replace("dwell = \"2m\"", "dwel = \"2m\"");
    std::fs::write(c.join("zones.toml"), zones).unwrap();
    let demo = nearcast(&["demo", "--config", c.to_str().unwrap()]);
    assert_eq!(demo.status.code(), Some(1));
    let err = text(&demo.stderr);
    assert_eq!(err.matches("unknown field `dwel`").count(), 1, "{err}");
    assert_eq!(err.matches("hint: ").count(), 1, "{err}");

    let missing = dir.path().join("missing.jsonl");
    let replay = nearcast(&[
        "replay",
        missing.to_str().unwrap(),
        "--config",
        example().to_str().unwrap(),
    ]);
    assert_eq!(replay.status.code(), Some(1));
    assert_eq!(
        text(&replay.stderr),
        format!(
            "nearcast: {}: No such file or directory (os error 2)\n",
            missing.display()
        )
    );
}

#[test]
fn only_commands_that_start_a_database_create_one() {
    let dir = tempfile::tempdir().unwrap();
    let c = config_copy(dir.path());
    let cfg = c.to_str().unwrap();
    let nowhere = dir.path().join("nowhere/x.db");
    let db = nowhere.to_str().unwrap();
    let refusal = format!(
        "nearcast: no database at {db} (nor does the directory {}): check --db or `[database] path` in \
         nearcast.toml; `nearcast customers import FILE` and `nearcast run` create one\n",
        dir.path().join("nowhere").display()
    );
    for args in [
        &["customers", "list"][..],
        &["customers", "show", "c-1001"],
        &["customers", "opt-out", "c-1001"],
        &["customers", "forget", "c-1001"],
        &["customers", "export", "c-1001"],
        &["outbox", "list"],
        &["stats"],
        &["broadcast", "--campaign", "flash-sale", "--dry-run"],
    ] {
        let mut all = args.to_vec();
        all.extend(["--db", db, "--config", cfg]);
        let out = nearcast(&all);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert_eq!(text(&out.stderr), refusal, "{args:?}");
        assert!(
            !dir.path().join("nowhere").exists(),
            "{args:?} created the directory"
        );
    }
    // The configured database, missing too: the same refusal, with its path.
    let stats = nearcast(&["stats", "--config", cfg]);
    assert_eq!(stats.status.code(), Some(1));
    assert!(
        text(&stats.stderr).contains(&format!(
            "no database at {}",
            dir.path().join("state/nearcast.db").display()
        )),
        "{}",
        text(&stats.stderr)
    );
    // Importing customers starts one, directory and secret included.
    let csv = c.join("customers.csv");
    let import = nearcast(&[
        "customers",
        "import",
        csv.to_str().unwrap(),
        "--db",
        db,
        "--config",
        cfg,
    ]);
    assert!(import.status.success(), "{}", text(&import.stderr));
    assert!(nowhere.exists() && dir.path().join("nowhere/secret.key").exists());
    let list = nearcast(&["customers", "list", "--db", db, "--config", cfg]);
    assert!(list.status.success(), "{}", text(&list.stderr));
    assert_eq!(text(&list.stdout).lines().count(), 41);
    // A database whose secret went missing is not given a new one.
    std::fs::remove_file(dir.path().join("nowhere/secret.key")).unwrap();
    let rec = dir.path().join("r.jsonl");
    std::fs::write(&rec, "").unwrap();
    let replay = nearcast(&["replay", rec.to_str().unwrap(), "--db", db, "--config", cfg]);
    assert_eq!(replay.status.code(), Some(1));
    assert!(
        text(&replay.stderr).contains("has no installation secret at"),
        "{}",
        text(&replay.stderr)
    );
    assert!(!dir.path().join("nowhere/secret.key").exists());
}

#[test]
fn a_replay_without_one_valid_line_fails() {
    let dir = tempfile::tempdir().unwrap();
    let c = config_with_customers(dir.path());
    let cfg = c.to_str().unwrap();
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "garbage\n{\"x\":1}\n").unwrap();
    for dry in [true, false] {
        let mut args = vec!["replay", bad.to_str().unwrap(), "--fast", "--config", cfg];
        if dry {
            args.push("--dry-run");
        }
        let out = nearcast(&args);
        assert_eq!(out.status.code(), Some(1), "dry {dry}");
        let err = text(&out.stderr);
        assert!(
            err.contains("line 1: not a single JSON object")
                && err.contains("line 2: missing `t`")
                && err.contains(&format!(
                    "nearcast: {}: not one line could be replayed",
                    bad.display()
                )),
            "{err}"
        );
    }
}

#[test]
fn scan_without_a_system_bus_fails_and_says_why() {
    let out = nearcast_env(
        &["scan", "--seconds", "2", "--json"],
        &[("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/bus")],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(
            "nearcast: scan: hci0 never started scanning (no D-Bus system bus): is bluetoothd \
             running and the adapter there (`bluetoothctl list`)?"
        ),
        "{err}"
    );
}

#[test]
fn typos_are_refused_with_what_was_meant() {
    let dir = tempfile::tempdir().unwrap();
    let c = config_with_customers(dir.path());
    let cfg = c.to_str().unwrap();
    let state = nearcast(&["outbox", "list", "--state", "snt", "--config", cfg]);
    assert_eq!(state.status.code(), Some(1));
    assert_eq!(
        text(&state.stderr),
        "nearcast: unknown state \"snt\" (did you mean `sent`? known: queued, sending, sent, \
         delivered, read, failed, expired, dead)\n"
    );
    let segment = nearcast(&[
        "broadcast",
        "--campaign",
        "flash-sale",
        "--segment",
        "gld",
        "--dry-run",
        "--config",
        cfg,
    ]);
    assert_eq!(segment.status.code(), Some(1));
    assert!(
        text(&segment.stderr)
            .starts_with("nearcast: --segment gld selects nobody: no customer on file is in it (did you mean `gold`?"),
        "{}",
        text(&segment.stderr)
    );
    // A consent time in the future is refused (it would outrank any opt-out).
    let future = dir.path().join("future.csv");
    std::fs::write(
        &future,
        "id,first_name,phone,channels,consent_at,consent_source,identities,segments\n\
         x1,Xaver,+4915112340000,sms,2099-03-01T10:00:00Z,app,mac:00:11:22:33:44:55,\n",
    )
    .unwrap();
    let r = nearcast(&[
        "customers",
        "import",
        future.to_str().unwrap(),
        "--config",
        cfg,
    ]);
    assert_eq!(r.status.code(), Some(1));
    let err = text(&r.stderr);
    assert!(
        err.contains("future.csv:line 2: `consent_at` 2099-03-01T10:00:00Z is in the future: give when the customer consented (did you mean 20")
            && err.contains("-03-01T10:00:00Z?)"),
        "{err}"
    );
}

/// The long options in a clap help text's `Options:` section, without the
/// global ones every command has.
fn help_options(help: &str) -> std::collections::BTreeSet<String> {
    help.split("Options:")
        .nth(1)
        .unwrap_or("")
        .lines()
        .filter_map(|l| {
            let l = l.trim_start();
            let l = l
                .strip_prefix("-h, ")
                .or(l.strip_prefix("-V, "))
                .unwrap_or(l);
            let name: String = l
                .strip_prefix("--")?
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            Some(format!("--{name}"))
        })
        .filter(|o| !["--config", "--help", "--version"].contains(&o.as_str()))
        .collect()
}

/// The subcommands in a clap help text's `Commands:` section.
fn help_commands(help: &str) -> Vec<String> {
    help.split("Commands:")
        .nth(1)
        .unwrap_or("")
        .lines()
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .filter(|c| c != "help")
        .collect()
}

#[test]
fn the_readme_commands_block_matches_the_help() {
    use std::collections::{BTreeMap, BTreeSet};
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let block = readme
        .split("## Commands\n\n```\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("README has a Commands block");
    // What README says: each command's options, and the subcommands of
    // the commands that have them.
    let mut said: BTreeMap<String, (BTreeSet<String>, BTreeSet<String>)> = BTreeMap::new();
    for line in block.lines() {
        let rest = line.strip_prefix("nearcast ").expect("a nearcast command");
        let (cmd, args) = rest.split_once(' ').unwrap_or((rest, ""));
        let entry = said.entry(cmd.to_owned()).or_default();
        for word in args.split_whitespace() {
            if let Some(at) = word.find("--") {
                let name: String = word[at + 2..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                    .collect();
                entry.0.insert(format!("--{name}"));
            }
        }
        if ["customers", "outbox"].contains(&cmd) {
            for part in args.split('|') {
                if let Some(sub) = part.split_whitespace().next() {
                    entry.1.insert(sub.to_owned());
                }
            }
        }
    }
    // What the binary says.
    let help = |args: &[&str]| {
        let mut all = args.to_vec();
        all.push("--help");
        let out = nearcast(&all);
        assert!(out.status.success(), "{args:?}");
        text(&out.stdout)
    };
    let commands = help_commands(&help(&[]));
    let mut told: BTreeMap<String, (BTreeSet<String>, BTreeSet<String>)> = BTreeMap::new();
    for cmd in &commands {
        let top = help(&[cmd]);
        let mut options = help_options(&top);
        let subs: BTreeSet<String> = help_commands(&top).into_iter().collect();
        for sub in &subs {
            options.extend(help_options(&help(&[cmd, sub])));
        }
        told.insert(cmd.clone(), (options, subs));
    }
    assert_eq!(
        said.keys().collect::<Vec<_>>(),
        told.keys().collect::<Vec<_>>(),
        "README's Commands block and `nearcast --help` list different commands"
    );
    for (cmd, (options, subs)) in &told {
        let (r_options, r_subs) = &said[cmd];
        assert_eq!(
            r_options, options,
            "`nearcast {cmd}`: README's options vs --help"
        );
        assert_eq!(
            r_subs, subs,
            "`nearcast {cmd}`: README's subcommands vs --help"
        );
    }
    // And the example store README describes is the one in config/.
    let ok = text(&nearcast(&["check-config", "--config", example().to_str().unwrap()]).stdout);
    let count = |what: &str| -> usize {
        let before = ok.split(&format!(" {what}")).next().unwrap();
        before.rsplit(' ').next().unwrap().parse().unwrap()
    };
    let words = [
        "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
    ];
    let flat = readme.split_whitespace().collect::<Vec<_>>().join(" ");
    let store = format!(
        "{} scanners, {} zones, {} campaigns",
        words[count("scanners,")],
        words[count("zones,")],
        words[count("campaigns,")]
    );
    assert!(
        flat.contains(&store),
        "README does not say {store:?} ({ok})"
    );
}

#[test]
fn record_whose_sources_never_start_fails_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let c = config_copy(dir.path());
    let mut daemon = std::fs::read_to_string(c.join("nearcast.toml")).unwrap();
    daemon.push_str("\n[[source]]\nkind = \"ble\"\nadapter = \"hci0\"\nscanner = \"door\"\n");
    std::fs::write(c.join("nearcast.toml"), daemon).unwrap();
    let file = dir.path().join("day.jsonl");
    let out = nearcast_env(
        &[
            "record",
            file.to_str().unwrap(),
            "--all",
            "--seconds",
            "2",
            "--config",
            c.to_str().unwrap(),
        ],
        &[("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/bus")],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("nearcast: record: ble:hci0 never started (no D-Bus system bus)\n")
            && err.contains("wrote 0 observations to ")
            && err.ends_with(
                "nearcast: record: no live source ever started, so nothing could be recorded: \
                 is bluetoothd (or hostapd, or the leases file) there?\n"
            ),
        "{err}"
    );
}

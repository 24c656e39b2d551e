//! `nearcast run` as a library call: the daemon on the simulator source, in
//! tokio's paused time (no waiting on the wall clock), with a test clock and
//! shutdown signal passed in.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nearcast::clock::Clock;
use nearcast::core::types::Timestamp;
use support::TestClock;

/// When the tests' customers were imported: after the example's last
/// consent (2026-10-20), as an import is.
const IMPORTED: Timestamp = Timestamp(1_793_000_000_000);

#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);
impl Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn example_config(dir: &Path) -> nearcast::config::Config {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    for name in [
        "nearcast.toml",
        "zones.toml",
        "campaigns.toml",
        "customers.csv",
    ] {
        let mut t = std::fs::read_to_string(example.join(name)).unwrap();
        if name == "nearcast.toml" {
            t = t.replace(
                "/var/lib/nearcast/nearcast.db",
                &dir.join("nearcast.db").display().to_string(),
            );
            t = t.replace("shoppers_per_hour = 120", "shoppers_per_hour = 240");
        }
        std::fs::write(dir.join(name), t).unwrap();
    }
    nearcast::config::load(dir).unwrap()
}

#[tokio::test(start_paused = true)]
async fn the_daemon_greets_simulated_shoppers_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let config = example_config(dir.path());
    let (mut store, hasher) = nearcast::app::open_database(&config, None).unwrap();
    store
        .import_customers(
            std::fs::read(dir.path().join("customers.csv"))
                .unwrap()
                .as_slice(),
            &hasher,
            IMPORTED,
        )
        .unwrap();
    drop(store);

    // Friday 2026-11-20, 10:00 Berlin.
    let clock = Arc::new(TestClock::ticking(Timestamp::from_secs(1_763_629_200)));
    let buf = Buf::default();
    let console: Arc<Mutex<dyn Write + Send>> = Arc::new(Mutex::new(buf.clone()));
    let shutdown = tokio::time::sleep(Duration::from_secs(40 * 60));
    nearcast::app::run::run(config.clone(), None, clock, console, shutdown)
        .await
        .unwrap();

    let (store, _) = nearcast::app::open_database(&config, None).unwrap();
    let stats = store.stats().unwrap();
    assert!(stats.visits > 0, "{stats:?}");
    let sent = stats
        .outbox
        .iter()
        .find(|(s, _)| s == "sent")
        .map_or(0, |(_, n)| *n);
    let queued = stats
        .outbox
        .iter()
        .find(|(s, _)| s == "queued")
        .map_or(0, |(_, n)| *n);
    assert!(sent > 0, "{stats:?}");
    assert_eq!(
        queued, 0,
        "everything due was sent before stopping: {stats:?}"
    );
    let printed = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    assert_eq!(
        printed.lines().filter(|l| l.contains("  ✉ ")).count() as i64,
        sent
    );
}

#[tokio::test(start_paused = true)]
async fn an_opt_out_from_the_cli_takes_effect_in_the_running_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let config = example_config(dir.path());
    let (mut store, hasher) = nearcast::app::open_database(&config, None).unwrap();
    store
        .import_customers(
            std::fs::read(dir.path().join("customers.csv"))
                .unwrap()
                .as_slice(),
            &hasher,
            IMPORTED,
        )
        .unwrap();
    // Everyone opts out one minute into the day, while the daemon runs.
    let ids: Vec<String> = store
        .customers()
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    let clock = Arc::new(TestClock::ticking(Timestamp::from_secs(1_763_629_200)));
    let opt_out_clock = clock.clone();
    let admin = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(60)).await;
        for id in &ids {
            store.opt_out(id, opt_out_clock.now()).unwrap();
        }
        opt_out_clock.now()
    });
    let buf = Buf::default();
    let console: Arc<Mutex<dyn Write + Send>> = Arc::new(Mutex::new(buf.clone()));
    nearcast::app::run::run(
        config.clone(),
        None,
        clock,
        console,
        tokio::time::sleep(Duration::from_secs(30 * 60)),
    )
    .await
    .unwrap();
    let opted_out_at = admin.await.unwrap();
    // After the opt-out (and the registry reload, within a second), no
    // visit starts and no message is queued.
    let conn = rusqlite::Connection::open(&config.daemon.database).unwrap();
    let late_visits: i64 = conn
        .query_row(
            "SELECT count(*) FROM visits WHERE arrived_at > ?1",
            [opted_out_at.0 + 1000],
            |r| r.get(0),
        )
        .unwrap();
    let late_messages: i64 = conn
        .query_row(
            "SELECT count(*) FROM outbox WHERE created_at > ?1",
            [opted_out_at.0 + 1000],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!((late_visits, late_messages), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn customers_imported_while_the_daemon_runs_are_recognised() {
    let dir = tempfile::tempdir().unwrap();
    let config = example_config(dir.path());
    let (mut store, hasher) = nearcast::app::open_database(&config, None).unwrap();
    // Friday 2026-11-20, 10:00 in Berlin: after every example consent.
    let clock = Arc::new(TestClock::ticking(Timestamp::from_secs(1_795_165_200)));
    let import_clock = clock.clone();
    let csv = std::fs::read(dir.path().join("customers.csv")).unwrap();
    let admin = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(120)).await;
        store
            .import_customers(csv.as_slice(), &hasher, import_clock.now())
            .unwrap();
        import_clock.now()
    });
    let console: Arc<Mutex<dyn Write + Send>> = Arc::new(Mutex::new(Buf::default()));
    nearcast::app::run::run(
        config.clone(),
        None,
        clock,
        console,
        tokio::time::sleep(Duration::from_secs(30 * 60)),
    )
    .await
    .unwrap();
    let imported_at = admin.await.unwrap();
    let conn = rusqlite::Connection::open(&config.daemon.database).unwrap();
    let (visits, first): (i64, Option<i64>) = conn
        .query_row("SELECT count(*), min(arrived_at) FROM visits", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert!(visits > 0);
    assert!(first.unwrap() >= imported_at.0, "a visit before the import");
}

async fn run_with(config: &nearcast::config::Config, clock: Arc<TestClock>, minutes: u64) {
    let console: Arc<Mutex<dyn Write + Send>> = Arc::new(Mutex::new(Buf::default()));
    nearcast::app::run::run(
        config.clone(),
        None,
        clock,
        console,
        tokio::time::sleep(Duration::from_secs(minutes * 60)),
    )
    .await
    .unwrap();
}

fn count(config: &nearcast::config::Config, sql: &str) -> i64 {
    rusqlite::Connection::open(&config.daemon.database)
        .unwrap()
        .query_row(sql, [], |r| r.get(0))
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn nothing_is_decided_or_sent_before_the_clock_is_synchronised() {
    let dir = tempfile::tempdir().unwrap();
    let config = example_config(dir.path());
    let (mut store, hasher) = nearcast::app::open_database(&config, None).unwrap();
    store
        .import_customers(
            std::fs::read(dir.path().join("customers.csv"))
                .unwrap()
                .as_slice(),
            &hasher,
            IMPORTED,
        )
        .unwrap();
    drop(store);
    // The box boots believing it is 1970; NTP sets the clock five minutes in.
    let clock = Arc::new(TestClock::ticking(Timestamp(30_000)));
    clock.set_synchronized(false);
    let ntp = clock.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(300)).await;
        // Friday 2026-11-20, 10:05 Berlin.
        ntp.set_start(Timestamp(1_763_629_500_000 - 300_000));
        ntp.set_synchronized(true);
    });
    run_with(&config, clock, 40).await;
    let year_2000 = 946_684_800_000i64;
    assert_eq!(
        count(
            &config,
            &format!("SELECT count(*) FROM visits WHERE arrived_at < {year_2000}")
        ),
        0
    );
    assert_eq!(
        count(
            &config,
            &format!("SELECT count(*) FROM decisions WHERE at < {year_2000}")
        ),
        0
    );
    assert_eq!(
        count(
            &config,
            &format!(
                "SELECT count(*) FROM outbox WHERE created_at < {year_2000} OR sent_at < {year_2000}"
            )
        ),
        0
    );
    // Decisions start once the clock has been steady for the settle time (60 s).
    let first = count(&config, "SELECT coalesce(min(at), 0) FROM decisions");
    assert!(
        first >= 1_763_629_500_000 + 60_000,
        "first decision at {first}"
    );
    assert!(count(&config, "SELECT count(*) FROM outbox WHERE state = 'sent'") > 0);
}

#[tokio::test(start_paused = true)]
async fn a_clock_jump_of_a_day_decides_nothing_in_the_wrong_time() {
    let dir = tempfile::tempdir().unwrap();
    let config = example_config(dir.path());
    let (mut store, hasher) = nearcast::app::open_database(&config, None).unwrap();
    store
        .import_customers(
            std::fs::read(dir.path().join("customers.csv"))
                .unwrap()
                .as_slice(),
            &hasher,
            IMPORTED,
        )
        .unwrap();
    drop(store);
    let start = 1_763_629_200_000i64; // Friday 10:00 Berlin
    let clock = Arc::new(TestClock::ticking(Timestamp(start)));
    let jumper = clock.clone();
    tokio::spawn(async move {
        // Ten minutes in, someone sets the clock a day ahead by hand (the
        // kernel then reports it unsynchronised); five minutes later NTP
        // steps it back and reports it synchronised again.
        tokio::time::sleep(Duration::from_secs(600)).await;
        jumper.step(86_400_000);
        jumper.set_synchronized(false);
        tokio::time::sleep(Duration::from_secs(300)).await;
        jumper.step(-86_400_000);
        jumper.set_synchronized(true);
    });
    run_with(&config, clock, 40).await;
    let jumped = start + 20 * 3_600_000;
    assert_eq!(
        count(
            &config,
            &format!("SELECT count(*) FROM visits WHERE arrived_at > {jumped}")
        ),
        0
    );
    assert_eq!(
        count(
            &config,
            &format!("SELECT count(*) FROM decisions WHERE at > {jumped}")
        ),
        0
    );
    assert_eq!(
        count(
            &config,
            &format!("SELECT count(*) FROM cooldowns WHERE last_at > {jumped}")
        ),
        0
    );
    assert_eq!(
        count(
            &config,
            &format!(
                "SELECT count(*) FROM outbox WHERE created_at > {jumped} OR sent_at > {jumped}"
            )
        ),
        0
    );
    // Before the jump and after the settle time, the store works normally.
    assert!(
        count(
            &config,
            &format!(
                "SELECT count(*) FROM decisions WHERE at < {}",
                start + 600_000
            )
        ) > 0
    );
    assert!(
        count(
            &config,
            &format!(
                "SELECT count(*) FROM decisions WHERE at > {}",
                start + 960_000
            )
        ) > 0
    );
}

#[tokio::test(start_paused = true)]
async fn reload_applies_a_good_config_and_keeps_the_last_good_one_on_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let config = example_config(dir.path());
    let (mut store, hasher) = nearcast::app::open_database(&config, None).unwrap();
    store
        .import_customers(
            std::fs::read(dir.path().join("customers.csv"))
                .unwrap()
                .as_slice(),
            &hasher,
            IMPORTED,
        )
        .unwrap();
    // Old visits: retention (180 days) deletes the one from a year ago at start.
    store
        .import_visit(
            "c-1001",
            Timestamp(1_731_000_000_000),
            Some(Timestamp(1_731_000_600_000)),
        )
        .unwrap();
    store
        .import_visit(
            "c-1002",
            Timestamp(1_760_000_000_000),
            Some(Timestamp(1_760_000_600_000)),
        )
        .unwrap();
    drop(store);
    let start = 1_763_629_200_000i64;
    let clock = Arc::new(TestClock::ticking(Timestamp(start)));
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let campaigns = dir.path().join("campaigns.toml");
    let good = std::fs::read_to_string(&campaigns).unwrap();
    let editor = {
        let campaigns = campaigns.clone();
        tokio::spawn(async move {
            // Ten minutes in: a broken edit (a typo'd key) is refused.
            tokio::time::sleep(Duration::from_secs(600)).await;
            std::fs::write(
                &campaigns,
                good.replace("first_visit_of_day = true", "first_visit_of_dya = true"),
            )
            .unwrap();
            tx.send(()).await.unwrap();
            // Twenty minutes in: a good edit limits the welcome to a segment nobody is in.
            tokio::time::sleep(Duration::from_secs(600)).await;
            std::fs::write(
                &campaigns,
                good.replace("exclude_segments = [\"staff\"]", "segments = [\"vip\"]"),
            )
            .unwrap();
            tx.send(()).await.unwrap();
            tx
        })
    };
    let console: Arc<Mutex<dyn Write + Send>> = Arc::new(Mutex::new(Buf::default()));
    nearcast::app::run::run_with_reload(
        config.clone(),
        None,
        clock,
        console,
        tokio::time::sleep(Duration::from_secs(40 * 60)),
        rx,
    )
    .await
    .unwrap();
    drop(editor.await.unwrap());
    let welcomes = |from: i64, to: i64, outcome: &str| {
        count(
            &config,
            &format!(
                "SELECT count(*) FROM decisions WHERE campaign = 'welcome' AND outcome = '{outcome}' AND at >= {from} AND at < {to}"
            ),
        )
    };
    let m = 60_000;
    assert!(
        welcomes(start, start + 20 * m, "act") > 0,
        "before the good reload, welcomes went out"
    );
    assert!(
        welcomes(start + 10 * m, start + 20 * m, "act") > 0,
        "the broken file did not stop the daemon or change its rules"
    );
    assert_eq!(
        welcomes(start + 21 * m, start + 40 * m, "act"),
        0,
        "after the good reload, only VIPs (none) are welcomed"
    );
    assert!(welcomes(start + 21 * m, start + 40 * m, "suppressed") > 0);
    // Retention ran: the year-old visit is gone, the recent one kept.
    assert_eq!(
        count(
            &config,
            "SELECT count(*) FROM visits WHERE arrived_at < 1740000000000"
        ),
        0
    );
    assert_eq!(
        count(
            &config,
            "SELECT count(*) FROM visits WHERE arrived_at = 1760000000000"
        ),
        1
    );
}

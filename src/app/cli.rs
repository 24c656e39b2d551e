//! The bodies of the `nearcast` commands: what each one loads, runs and
//! prints. `src/main.rs` parses the command line into these calls, sets up
//! logging and turns the result into an exit code; everything a command
//! does is here, where it can be called and tested as a library.
//!
//! Prints to standard output and standard error like the command line
//! always has; decides nothing itself (that is `core`'s) and holds no SQL.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::{
    Error, broadcast, demo, live, open_database, open_existing_store, record, replay, scan,
    stand_in,
};
use crate::clock::{Clock, SystemClock};
use crate::config::{self, Config};
use crate::core::types::Timestamp;
use crate::store::OutboxState;

/// Where the configuration is when `--config` is not given.
pub const DEFAULT_CONFIG: &str = "/etc/nearcast";

/// How a command ended when it did not fail outright.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// It did what was asked.
    Success,
    /// It refused, after saying why on standard error (exit code 1).
    Failure,
}

/// `customers …`
#[derive(Clone, Debug)]
pub enum CustomersAction {
    /// Import (add or update) customers from a CSV file; all or nothing.
    Import(PathBuf),
    /// List customers.
    List,
    /// Show one customer.
    Show(String),
    /// Opt a customer out at once.
    OptOut(String),
    /// Print everything stored about a customer, as JSON.
    Export(String),
    /// Erase everything about a customer.
    Forget(String),
}

/// `record …`
#[derive(Clone, Debug)]
pub struct RecordOptions {
    /// The file to write.
    pub file: PathBuf,
    /// The built-in simulator instead of live sources.
    pub sim: bool,
    /// Simulated minutes.
    pub minutes: u32,
    /// Simulated shoppers.
    pub shoppers: Option<u32>,
    /// Simulator seed.
    pub seed: Option<u64>,
    /// Live recording settings.
    pub live: record::LiveOptions,
}

/// Loads the configuration in `dir` (or [`DEFAULT_CONFIG`]).
///
/// # Errors
/// [`Error::Refused`] with every problem found.
pub fn load(dir: Option<&Path>) -> Result<Config, Error> {
    config::load(dir.unwrap_or(Path::new(DEFAULT_CONFIG))).map_err(Error::Refused)
}

fn stdout() -> Arc<Mutex<dyn Write + Send>> {
    Arc::new(Mutex::new(std::io::stdout()))
}

fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| Error::Context {
            what: "starting the runtime".into(),
            source,
        })
}

/// `check-config`: says what the configuration holds, or every problem.
#[must_use]
pub fn check_config(dir: Option<&Path>) -> Exit {
    let dir = dir.unwrap_or(Path::new(DEFAULT_CONFIG));
    match config::load(dir) {
        Ok(c) => {
            println!(
                "{}: configuration OK: {} scanners, {} zones, {} campaigns, {} messages, channels {}",
                dir.display(),
                c.layout.scanners.len(),
                c.layout.zones.len(),
                c.engine.campaigns.len(),
                c.engine.messages.len(),
                c.daemon
                    .channels
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            // Under systemd (ExecStartPre) the credentials are there to
            // check; by hand, a relative credential name cannot be, so
            // only the others are.
            let env = crate::credentials::ProcessEnv;
            let under_systemd =
                std::env::var_os(crate::credentials::CREDENTIALS_DIRECTORY).is_some();
            if let Some(w) = c
                .daemon
                .api
                .as_ref()
                .and_then(|a| crate::api::exposure_warning(a.bind))
            {
                eprintln!("warning: {w}");
            }
            for m in c.missing_secrets(&env) {
                if under_systemd || !m.contains("$CREDENTIALS_DIRECTORY is not set") {
                    eprintln!("warning: {m}");
                }
            }
            Exit::Success
        }
        Err(e) => {
            eprintln!("{e}");
            Exit::Failure
        }
    }
}

/// `demo`: an hour in the simulated store.
///
/// # Errors
/// What the demo ends with.
pub fn demo(opts: demo::DemoOptions) -> Result<Exit, Error> {
    runtime()?.block_on(demo::demo(opts, stdout()))?;
    Ok(Exit::Success)
}

/// `stand-in`: the providers' stand-in until Ctrl-C or SIGTERM.
///
/// # Errors
/// The address cannot be listened on.
pub fn stand_in(listen: SocketAddr) -> Result<Exit, Error> {
    runtime()?.block_on(async {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|source| Error::Context {
                what: format!("listening on {listen}"),
                source,
            })?;
        let addr = listener.local_addr().map_err(Error::Os)?;
        println!(
            "nearcast stand-in on http://{addr}: WhatsApp Cloud API, Twilio and Vonage Messages; \
             try `nearcast demo --provider http://{addr}` (Ctrl-C to stop)"
        );
        stand_in::serve(listener, stdout(), shutdown_signal())
            .await
            .map_err(Error::Os)
    })?;
    Ok(Exit::Success)
}

/// `broadcast`: one broadcast campaign to every consented customer.
///
/// # Errors
/// What the broadcast ends with.
pub fn broadcast(config: &Config, opts: &broadcast::BroadcastOptions) -> Result<Exit, Error> {
    let clock = SystemClock {
        require_sync: config.daemon.clock.require_sync,
    };
    let adapters = super::adapters(config, &stdout())?;
    let progress: Arc<Mutex<dyn Write + Send>> = Arc::new(Mutex::new(std::io::stderr()));
    let summary = runtime()?.block_on(broadcast::broadcast(
        config, opts, &clock, adapters, progress,
    ))?;
    print!("{}", summary.text());
    Ok(if summary.stopped.is_some() {
        Exit::Failure
    } else {
        Exit::Success
    })
}

/// `replay`: a recording through the pipeline.
///
/// # Errors
/// What the replay ends with.
pub fn replay(config: &Config, opts: &replay::ReplayOptions) -> Result<Exit, Error> {
    let out = Arc::new(Mutex::new(std::io::BufWriter::with_capacity(
        1 << 16,
        std::io::stdout(),
    )));
    let report = runtime()?.block_on(replay::replay(config, opts, out.clone()))?;
    if let Ok(mut o) = out.lock() {
        o.flush().map_err(Error::Os)?;
    }
    for bad in &report.stats.first_bad {
        eprintln!("{}: {bad}", opts.file.display());
    }
    if report.stats.skipped() > 0 {
        eprintln!("{} line(s) skipped", report.stats.skipped());
    }
    if opts.fast {
        eprintln!(
            "replayed {} observations in {:.3} s: {:.0} sightings/s",
            report.stats.observations(),
            report.elapsed.as_secs_f64(),
            report.rate()
        );
    }
    if report.stats.observations() == 0 && report.stats.skipped() > 0 {
        eprintln!(
            "nearcast: {}: not one line could be replayed; see docs/recordings.md for the format",
            opts.file.display()
        );
        return Ok(Exit::Failure);
    }
    Ok(Exit::Success)
}

/// `record`: the simulator, or the live sources until stopped.
///
/// # Errors
/// What the recording ends with.
pub fn record(config: &Config, opts: &RecordOptions) -> Result<Exit, Error> {
    let file = &opts.file;
    if opts.sim {
        let n = record::record_sim(config, file, opts.minutes, opts.shoppers, opts.seed)?;
        eprintln!("wrote {n} observations to {}", file.display());
        return Ok(Exit::Success);
    }
    let all = opts.live.all;
    if all {
        eprintln!(
            "nearcast: --all: {} will hold PERSONAL DATA: the addresses of every device heard, \
             including people who did not opt in. Keep it like customer data and delete it after use.",
            file.display()
        );
    }
    let clock: Arc<dyn Clock> = Arc::new(SystemClock {
        require_sync: false,
    });
    let report = runtime()?.block_on(record::record_live(
        config,
        file,
        &opts.live,
        clock,
        shutdown_signal(),
    ))?;
    for (source, why) in &report.never_started {
        eprintln!("nearcast: record: {source} never started ({why})");
    }
    if all {
        eprintln!(
            "wrote {} observations to {}",
            report.written,
            file.display()
        );
    } else {
        eprintln!(
            "wrote {} observations of enrolled customers to {} ({} of other devices not written)",
            report.written,
            file.display(),
            report.skipped
        );
    }
    if report.written + report.skipped == 0 && report.never_started.len() == report.sources {
        eprintln!(
            "nearcast: record: no live source ever started, so nothing could be recorded: is \
             bluetoothd (or hostapd, or the leases file) there?"
        );
        return Ok(Exit::Failure);
    }
    Ok(Exit::Success)
}

/// `scan`: the calibration table until stopped. The configuration is
/// optional: without one, the default radio model and no names.
///
/// # Errors
/// A configuration named with `--config` is refused, or the scan fails.
pub fn scan(config_dir: Option<&Path>, opts: &scan::ScanOptions) -> Result<Exit, Error> {
    let config = match load(config_dir) {
        Ok(c) => Some(c),
        Err(e) if config_dir.is_some() => return Err(e),
        Err(_) => None,
    };
    let clock: Arc<dyn Clock> = Arc::new(SystemClock {
        require_sync: false,
    });
    let mut out = std::io::stdout();
    let summary = runtime()?.block_on(scan::scan(
        config.as_ref(),
        opts,
        clock,
        &mut out,
        shutdown_signal(),
    ))?;
    eprintln!(
        "heard {} advertisements from {} devices",
        summary.sightings, summary.devices
    );
    if let Some(why) = &summary.never_scanned {
        eprintln!(
            "nearcast: scan: {} never started scanning ({why}): is bluetoothd running and the \
             adapter there (`bluetoothctl list`)?",
            opts.adapter
        );
        return Ok(Exit::Failure);
    }
    Ok(Exit::Success)
}

/// `run`: the daemon until SIGTERM or Ctrl-C.
///
/// # Errors
/// What the daemon ends with.
pub fn run(config: Config, db: Option<PathBuf>) -> Result<Exit, Error> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(Error::Os)?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock {
        require_sync: config.daemon.clock.require_sync,
    });
    rt.block_on(super::run::run(
        config,
        db,
        clock,
        stdout(),
        shutdown_signal(),
    ))?;
    Ok(Exit::Success)
}

/// `scanner …`: this box as a satellite of another.
#[derive(Clone, Debug)]
pub struct ScannerOptions {
    /// The broker, `mqtt://host:port` or `mqtts://…`.
    pub url: String,
    /// This scanner's name (its `node` in the main box's zones.toml).
    pub id: String,
    /// The store's id (the main box's `store_id`).
    pub store: String,
    /// The BlueZ adapter.
    pub adapter: String,
    /// Broker account.
    pub username: Option<String>,
    /// File with the broker password (a relative name is a systemd
    /// credential).
    pub password_file: Option<PathBuf>,
    /// CA certificate(s) for mqtts://.
    pub ca_file: Option<PathBuf>,
}

/// `scanner`: runs this box's BLE adapter and publishes every sighting
/// to the store's broker for the main box, until SIGINT/SIGTERM. Knows no
/// customer: identification is the main box's.
///
/// # Errors
/// A bad URL, id or option.
pub fn scanner(opts: &ScannerOptions) -> Result<Exit, Error> {
    use crate::source::mqtt::{self, Connection, Tls};
    let usage = |m: String| Err(Error::Usage(m));
    let topic_safe = |v: &str| {
        !v.is_empty()
            && v.len() <= 64
            && !v
                .chars()
                .any(|c| matches!(c, '/' | '+' | '#') || c.is_whitespace() || c.is_control())
    };
    if !topic_safe(&opts.id) {
        return usage(format!(
            "--id {:?}: up to 64 characters without `/`, `+`, `#` or spaces",
            opts.id
        ));
    }
    if !config::valid_id(&opts.store) {
        return usage(format!(
            "--store {:?}: the main box's store_id (lowercase letters, digits, `-`, `_`)",
            opts.store
        ));
    }
    let client_id = format!("nearcast-{}-{}", opts.store, opts.id);
    let mut conn = Connection::from_url(&opts.url, &client_id)
        .map_err(|e| Error::Usage(format!("--mqtt {:?}: {e}", opts.url)))?;
    conn.username.clone_from(&opts.username);
    conn.password = opts
        .password_file
        .clone()
        .map(crate::credentials::SecretRef::File);
    if let Some(ca) = &opts.ca_file {
        match &mut conn.tls {
            Some(t) => {
                *t = Tls {
                    ca_file: Some(ca.clone()),
                }
            }
            None => return usage("--ca-file needs an mqtts:// broker".into()),
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(Error::Os)?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock::default());
    rt.block_on(async move {
        let (tx, rx) = tokio::sync::mpsc::channel(4096);
        let ble_health = Arc::new(crate::source::health::Health::new(format!(
            "ble:{}",
            opts.adapter
        )));
        let feed = crate::source::Feed::new(tx, ble_health);
        let settings =
            crate::source::ble::BleSettings::new(&opts.adapter, crate::core::types::ScannerIdx(0));
        let ble = tokio::spawn(crate::source::ble::run(settings, clock, feed));
        let health = Arc::new(crate::source::health::Health::new("mqtt"));
        let publisher = tokio::spawn(mqtt::publish(
            conn,
            opts.store.clone(),
            opts.id.clone(),
            std::time::Duration::from_millis(100),
            rx,
            health,
            Arc::new(crate::credentials::ProcessEnv),
        ));
        shutdown_signal().await;
        // Closing the adapter's side lets the publisher say `offline` and leave.
        ble.abort();
        let _ = ble.await;
        let _ = publisher.await;
    });
    Ok(Exit::Success)
}

/// `customers …`
///
/// # Errors
/// Database failures, an unknown customer, a file that cannot be opened.
pub fn customers(
    config: &Config,
    db: Option<&Path>,
    action: CustomersAction,
) -> Result<Exit, Error> {
    let now = SystemClock::default().now();
    if let CustomersAction::Import(file) = &action {
        // Import is how a database starts: it may create one.
        let f = std::fs::File::open(file).map_err(|source| Error::Context {
            what: format!("opening {}", file.display()),
            source,
        })?;
        let (mut store, hasher) = open_database(config, db)?;
        match store.import_customers(std::io::BufReader::new(f), &hasher, now) {
            Ok(r) => println!(
                "imported {}: {} added, {} updated, {} identities (hashed)",
                file.display(),
                r.added,
                r.updated,
                r.identities
            ),
            Err(crate::store::Error::Import(rows)) => {
                for r in &rows {
                    eprintln!("{}:{r}", file.display());
                }
                eprintln!("{} bad row(s); nothing was imported", rows.len());
                return Ok(Exit::Failure);
            }
            Err(e) => return Err(e.into()),
        }
        return Ok(Exit::Success);
    }
    let mut store = open_existing_store(config, db)?;
    match action {
        CustomersAction::Import(_) => {}
        CustomersAction::List => {
            println!(
                "{:<12} {:<14} {:<22} {:<16} {:>6} {:>8}  status",
                "id", "first name", "channels", "segments", "visits", "points"
            );
            for c in store.customers()? {
                println!(
                    "{:<12} {:<14} {:<22} {:<16} {:>6} {:>8}  {}",
                    c.id,
                    c.first_name,
                    c.channels.join("|"),
                    c.segments.join(";"),
                    c.visits,
                    c.balance,
                    if c.opted_out_at.is_some() {
                        "opted out"
                    } else {
                        "opted in"
                    }
                );
            }
        }
        CustomersAction::Show(id) => {
            let c = store.customer(&id)?;
            println!("id              {}", c.id);
            println!("first name      {}", c.first_name);
            println!("phone           {}", c.phone.as_deref().unwrap_or("-"));
            println!("channels        {}", c.channels.join(" > "));
            println!("segments        {}", c.segments.join(", "));
            println!("consent         {} ({})", c.consent_at, c.consent_source);
            println!(
                "opted out       {}",
                c.opted_out_at
                    .map_or("no".into(), |t: Timestamp| t.to_string())
            );
            println!(
                "identities      {} (stored as keyed hashes)",
                c.identity_kinds.join(", ")
            );
            println!("visits          {}", c.visits);
            println!("points balance  {}", c.balance);
            println!("messages        {}", c.messages);
        }
        CustomersAction::OptOut(id) => {
            store.opt_out(&id, now)?;
            println!("{id} opted out: no further messages; device identities deleted");
        }
        CustomersAction::Export(id) => {
            println!("{}", serde_json::to_string_pretty(&store.export(&id)?)?);
        }
        CustomersAction::Forget(id) => match store.forget(&id) {
            Ok(f) => {
                println!(
                    "{id} erased: customer, identities, visits, points, decisions and messages"
                );
                if let Some(e) = f.not_compacted {
                    eprintln!(
                        "but the database could not be compacted ({e}): until it is, old copies of their values \
                         may remain in its free pages and its write-ahead log. Free some disk space, then run \
                         `nearcast customers forget {id}` again to finish."
                    );
                    return Ok(Exit::Failure);
                }
            }
            // Nobody to erase; an earlier erasure may still want its
            // compaction (see above), which this finishes.
            Err(crate::store::Error::NoSuchCustomer(_)) => {
                let compacted = store.compact();
                eprintln!("no customer with id {id:?}: nothing to erase");
                match compacted {
                    Ok(()) => eprintln!(
                        "the database is compacted: nothing is left of an earlier erasure"
                    ),
                    Err(e) => eprintln!("the database could not be compacted either: {e}"),
                }
                return Ok(Exit::Failure);
            }
            Err(e) => {
                eprintln!("{id} was not erased: {e}");
                return Ok(Exit::Failure);
            }
        },
    }
    Ok(Exit::Success)
}

/// `outbox list`: messages, newest first, optionally of one state.
///
/// # Errors
/// An unknown state, or database failures.
pub fn outbox_list(
    config: &Config,
    db: Option<&Path>,
    state: Option<&str>,
    limit: u32,
) -> Result<Exit, Error> {
    let store = open_existing_store(config, db)?;
    let state = match state {
        None => None,
        Some(s) => Some(OutboxState::parse(s).ok_or_else(|| {
            Error::Usage(format!(
                "unknown state {s:?} ({})",
                config::did_you_mean(s, OutboxState::ALL.iter().map(|s| s.name()))
            ))
        })?),
    };
    // Store time, like the demo's and the dry runs' narrative, with the
    // zone's abbreviation on every row.
    let tz = &config.engine.rules.tz;
    println!(
        "{:>6} {:<23} {:<12} {:<16} {:<14} {:<9} {:>3}  error",
        "id", "decided (store time)", "customer", "campaign", "channel", "state", "try"
    );
    for r in store.outbox_rows(state, limit)? {
        println!(
            "{:>6} {:<23} {:<12} {:<16} {:<14} {:<9} {:>3}  {}",
            r.id,
            store_time(r.created_at, tz),
            r.customer,
            r.campaign,
            format!("{}/{}", r.channel, r.variant.name()),
            if r.ambiguous {
                format!("{}?", r.state)
            } else {
                r.state.name().to_owned()
            },
            r.attempts,
            r.error.unwrap_or_default()
        );
    }
    Ok(Exit::Success)
}

/// `at` in the store's time zone, labelled: `2026-11-20 10:01:55 CET`.
fn store_time(at: Timestamp, tz: &jiff::tz::TimeZone) -> String {
    jiff::Timestamp::from_millisecond(at.0).map_or_else(
        |_| at.to_string(),
        |t| {
            t.to_zoned(tz.clone())
                .strftime("%Y-%m-%d %H:%M:%S %Z")
                .to_string()
        },
    )
}

/// `nearcast import-floorplan`: a suggested zones.toml from
/// ESPresense-companion's config.yaml, beside the live one.
///
/// # Errors
/// `out` is the live zones.toml; unreadable or invalid files.
pub fn import_floorplan(
    dir: Option<&Path>,
    file: &Path,
    floor: Option<&str>,
    out: &Path,
) -> Result<Exit, Error> {
    let dir = dir.unwrap_or(Path::new(DEFAULT_CONFIG));
    let plan = super::floorplan::import(dir, file, floor, out)?;
    println!(
        "{} nodes as ESPresense scanners, {} rooms as areas (floors: {}) -> {}",
        plan.scanners.len(),
        plan.areas.len(),
        plan.floors.join(", "),
        out.display()
    );
    for s in &plan.skipped {
        println!("left out: {s}");
    }
    println!(
        "review it, check it with `nearcast check-config`, then copy it over {}",
        dir.join(crate::config::ZONES_FILE).display()
    );
    Ok(Exit::Success)
}

/// `calibrate`: fits offsets to a marked walk and writes the suggestion.
///
/// # Errors
/// Unreadable files, bad marks or beacon, a suggestion that cannot be written.
pub fn calibrate(
    config: &Config,
    opts: &super::calibrate::CalibrateOptions,
) -> Result<Exit, Error> {
    let found = super::calibrate::calibrate(config, opts)?;
    let pct = |x: f64| x * 100.0;
    println!(
        "{} marked seconds; right area {:.1} % with the configured offsets, {:.1} % with the fitted ones",
        found.seconds,
        pct(found.before),
        pct(found.after)
    );
    println!(
        "held out: fitted on the first half of the walk, the second half goes {:.1} % -> {:.1} %",
        pct(found.held_out.0),
        pct(found.held_out.1)
    );
    for (id, was, now) in &found.offsets {
        let note = if (was - now).abs() < 0.25 {
            ""
        } else {
            "  (changed)"
        };
        println!("scanner {id:<12} rssi_offset {was:+.1} -> {now:+.1}{note}");
    }
    if !found.unfitted.is_empty() {
        println!(
            "not fitted, kept as configured: {} (no area walked for a minute depends on them)",
            found.unfitted.join(", ")
        );
    }
    match &found.verdict {
        super::calibrate::Verdict::Suggested => {}
        super::calibrate::Verdict::Unvisited(areas) => println!(
            "offsets kept: walk at least two areas for a minute each; these had less: {}",
            areas.join(", ")
        ),
        super::calibrate::Verdict::NotSupported => println!(
            "offsets kept: fitted on one half of the walk, the other half did not get better; the fit would follow this walk's noise, not the scanners"
        ),
    }
    super::calibrate::write_suggestion(&config.dir, &opts.out, &found, &opts.recording)?;
    println!(
        "wrote {} (review it, e.g. diff it with zones.toml, then copy it over)",
        opts.out.display()
    );
    Ok(Exit::Success)
}

/// `stats`: counts from the database, and the running daemon's live
/// sources and guards from its status file.
///
/// # Errors
/// Database failures.
pub fn stats(config: &Config, db: Option<&Path>, json: bool) -> Result<Exit, Error> {
    let store = open_existing_store(config, db)?;
    let s = store.stats()?;
    let live = live::Status::read(&live::status_path(&super::database_path(config, db)));
    if json {
        let pairs = |v: &[(String, i64)]| {
            v.iter()
                .cloned()
                .collect::<std::collections::BTreeMap<_, _>>()
        };
        println!(
            "{}",
            serde_json::json!({
                "customers": s.customers, "opted_out": s.opted_out, "identities": s.identities,
                "visits": s.visits, "points_awarded": s.points_awarded, "decisions_act": s.decisions_act,
                "suppressed": pairs(&s.suppressed), "outbox": pairs(&s.outbox), "messages_by_campaign": pairs(&s.by_campaign),
                "live": live,
            })
        );
    } else {
        let list = |v: &[(String, i64)]| {
            v.iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!(
            "customers        {} opted in, {} opted out ({} identities)",
            s.customers, s.opted_out, s.identities
        );
        println!("visits           {}", s.visits);
        println!("decisions        {} acted", s.decisions_act);
        println!("suppressed       {}", list(&s.suppressed));
        println!("outbox           {}", list(&s.outbox));
        println!("by campaign      {}", list(&s.by_campaign));
        println!("points awarded   {}", s.points_awarded);
        if let Some(l) = &live {
            print_live(l);
        }
    }
    Ok(Exit::Success)
}

/// The running daemon's live sources and guards (from its status file).
fn print_live(l: &live::Status) {
    if let Some(c) = &l.clock {
        if c.trusted {
            println!("clock            trusted");
        } else {
            println!("clock            {}: {}", c.state, c.detail);
        }
    }
    for s in &l.sources {
        println!(
            "source {:<10} {}{}: {} events, {} delivered, {} dropped (queue full), {} outages, {} recoveries",
            s.name,
            s.state,
            s.last_outage
                .as_deref()
                .map(|w| format!(" (last outage: {w})"))
                .unwrap_or_default(),
            s.events,
            s.delivered,
            s.queue_full,
            s.outages,
            s.recoveries
        );
    }
    for n in &l.remote {
        println!(
            "scanner {:<9} {} node `{}`: {}; {} sightings, dropped: {} malformed, {} oversized, {} over rate, {} unusable ids, {} for its clock{}",
            n.scanner,
            n.kind.name(),
            n.node,
            n.state,
            n.sightings,
            n.malformed,
            n.oversized,
            n.rate_limited,
            n.unusable,
            n.clock_refused,
            n.clock_offset_ms
                .map(|o| format!("; clock offset {o:+} ms"))
                .unwrap_or_default()
        );
    }
    if l.unknown_nodes > 0 {
        println!(
            "unknown nodes    {} messages from nodes zones.toml does not have (ignored)",
            l.unknown_nodes
        );
    }
    let p = &l.presence;
    println!(
        "presence         {} customers tracked, {} in an unknown zone; {} scanners silent{}",
        p.tracked,
        p.unknown,
        p.silent_scanners,
        if l.silent_scanners.is_empty() {
            String::new()
        } else {
            format!(" ({})", l.silent_scanners.join(", "))
        }
    );
    let h = &l.held;
    println!(
        "held decisions   {} waiting for the database; {} held since start: {} committed late ({} messages past their time to live, recorded expired), {} dropped",
        h.waiting, h.held, h.committed, h.expired, h.dropped
    );
    let g = &l.guard;
    println!(
        "guard            {} admitted; dropped: {} junk, {} address rate, {} identity rate, {} spoofing ({} addresses quarantined); {} evicted",
        g.admitted, g.junk, g.address_rate, g.identity_rate, g.spoofing, g.quarantined, g.evicted
    );
}

/// SIGTERM (systemd) or Ctrl-C.
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

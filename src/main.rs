//! The `nearcast` command line: argument parsing, logging setup and exit
//! codes. Everything else lives in the library.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use clap::{Parser, Subcommand};

use nearcast::app;
use nearcast::clock::{Clock, SystemClock};
use nearcast::config::{self, Config};
use nearcast::core::types::Timestamp;
use nearcast::store::OutboxState;

const DEFAULT_CONFIG: &str = "/etc/nearcast";

/// nearcast: greets opted-in customers in a store, by BLE and Wi-Fi presence.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Configuration directory (nearcast.toml, zones.toml, campaigns.toml).
    #[arg(long, global = true, value_name = "DIR")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon (systemd's ExecStart).
    Run {
        /// Database file, instead of the configured one.
        #[arg(long, value_name = "PATH")]
        db: Option<PathBuf>,
    },
    /// Simulate an hour in the example store: temporary database, console channel.
    Demo {
        /// Shoppers in the hour.
        #[arg(long)]
        shoppers: Option<u32>,
        /// Simulated seconds per real second (0: as fast as possible).
        #[arg(long, default_value_t = 300.0)]
        speed: f64,
        /// Random seed.
        #[arg(long)]
        seed: Option<u64>,
        /// Simulated minutes.
        #[arg(long, default_value_t = 60)]
        minutes: u32,
        /// Deliver over HTTP through the real WhatsApp and Twilio adapters to
        /// this base URL (a local stand-in: see `nearcast stand-in`).
        #[arg(long, value_name = "URL")]
        provider: Option<String>,
    },
    /// A local stand-in for the providers' APIs, for `demo --provider`.
    #[command(hide = true)]
    StandIn {
        /// Address to listen on (port 0: any free port, printed at start).
        #[arg(long, default_value = "127.0.0.1:4010")]
        listen: std::net::SocketAddr,
    },
    /// Send one `trigger = "broadcast"` campaign to every consented customer.
    Broadcast {
        /// The campaign's id in campaigns.toml.
        #[arg(long, value_name = "ID")]
        campaign: String,
        /// Only customers in this segment.
        #[arg(long, value_name = "S")]
        segment: Option<String>,
        /// Write and send nothing; report what would be queued and suppressed.
        #[arg(long)]
        dry_run: bool,
        /// Database file, instead of the configured one.
        #[arg(long, value_name = "PATH")]
        db: Option<PathBuf>,
    },
    /// Validate the configuration; exit 1 with precise errors.
    CheckConfig,
    /// Replay a recording (JSON Lines) through the pipeline.
    Replay {
        /// The recording.
        file: PathBuf,
        /// Read customers but write nothing (cooldowns and caps in memory).
        #[arg(long)]
        dry_run: bool,
        /// As fast as possible; print throughput at the end.
        #[arg(long)]
        fast: bool,
        /// One JSON object per line for every event and decision.
        #[arg(long)]
        json: bool,
        /// Recording seconds per real second when not --fast.
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
        /// Database file, instead of the configured one.
        #[arg(long, value_name = "PATH")]
        db: Option<PathBuf>,
    },
    /// Live table of what a BLE adapter hears, for calibrating zones.
    Scan {
        /// BlueZ adapter.
        #[arg(long, default_value = "hci0")]
        adapter: String,
        /// Stop after this many seconds (default: until Ctrl-C).
        #[arg(long)]
        seconds: Option<u64>,
        /// One JSON object per device and refresh, for scripts.
        #[arg(long)]
        json: bool,
        /// Database file (for enrolled customers' names), instead of the configured one.
        #[arg(long, value_name = "PATH")]
        db: Option<PathBuf>,
    },
    /// Write sightings to a recording (JSON Lines) from the configured live sources.
    Record {
        /// The file to write.
        file: PathBuf,
        /// Stop after this many seconds (default: until Ctrl-C or SIGTERM).
        #[arg(long)]
        seconds: Option<u64>,
        /// Write every device heard, not only enrolled customers' (personal data!).
        #[arg(long)]
        all: bool,
        /// Database file (for the enrolled customers), instead of the configured one.
        #[arg(long, value_name = "PATH")]
        db: Option<PathBuf>,
        /// Record the built-in simulator instead of live sources.
        #[arg(long)]
        sim: bool,
        /// Simulated minutes.
        #[arg(long, default_value_t = 60)]
        minutes: u32,
        /// Shoppers (default: the sim source's shoppers per hour, pro rata).
        #[arg(long)]
        shoppers: Option<u32>,
        /// Random seed.
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Manage customers and their consent.
    Customers {
        #[command(subcommand)]
        action: CustomersCmd,
        /// Database file, instead of the configured one.
        #[arg(long, global = true, value_name = "PATH")]
        db: Option<PathBuf>,
    },
    /// Inspect the outbox.
    Outbox {
        #[command(subcommand)]
        action: OutboxCmd,
        /// Database file, instead of the configured one.
        #[arg(long, global = true, value_name = "PATH")]
        db: Option<PathBuf>,
    },
    /// Counts: customers, visits, decisions, suppressions, outbox.
    Stats {
        /// Database file, instead of the configured one.
        #[arg(long, value_name = "PATH")]
        db: Option<PathBuf>,
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum CustomersCmd {
    /// Import (add or update) customers from a CSV file; all or nothing.
    Import {
        /// id,first_name,phone,channels,consent_at,consent_source,identities,segments
        file: PathBuf,
    },
    /// List customers.
    List,
    /// Show one customer.
    Show {
        /// Customer id.
        id: String,
    },
    /// Opt a customer out at once.
    OptOut {
        /// Customer id.
        id: String,
    },
    /// Print everything stored about a customer, as JSON (right of access).
    Export {
        /// Customer id.
        id: String,
    },
    /// Erase everything about a customer.
    Forget {
        /// Customer id.
        id: String,
    },
}

#[derive(Subcommand)]
enum OutboxCmd {
    /// List messages, newest first.
    List {
        /// Only this state (queued, sending, sent, delivered, read, failed, expired, dead).
        #[arg(long)]
        state: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let log = init_logging();
    match run(cli, &log) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("nearcast: {e:#}");
            ExitCode::FAILURE
        }
    }
}

type LogFilter =
    tracing_subscriber::reload::Handle<tracing_subscriber::EnvFilter, tracing_subscriber::Registry>;

/// Logs to standard error: human-readable on a terminal; under systemd
/// (`JOURNAL_STREAM` set) without timestamps or colours, since the journal
/// adds its own. `RUST_LOG` wins over the configured filter.
fn init_logging() -> LogFilter {
    use tracing_subscriber::prelude::*;
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "warn,nearcast=info".into());
    let (filter, handle) = tracing_subscriber::reload::Layer::new(
        tracing_subscriber::EnvFilter::try_new(&filter).unwrap_or_else(|_| "info".into()),
    );
    let journal = std::env::var_os("JOURNAL_STREAM").is_some();
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry().with(filter);
    if journal {
        registry
            .with(fmt.without_time().with_ansi(false).with_target(false))
            .init();
    } else {
        registry
            .with(fmt.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())))
            .init();
    }
    handle
}

/// Applies the configuration's `[log] filter` unless `RUST_LOG` is set.
fn apply_log_filter(log: &LogFilter, config: &Config) {
    if std::env::var_os("RUST_LOG").is_none()
        && let Ok(f) = tracing_subscriber::EnvFilter::try_new(&config.daemon.log_filter)
    {
        let _ = log.reload(f);
    }
}

fn load(dir: Option<&Path>) -> anyhow::Result<Config> {
    let dir = dir.unwrap_or(Path::new(DEFAULT_CONFIG));
    config::load(dir).map_err(|e| anyhow::anyhow!("configuration refused:\n{e}"))
}

fn stdout() -> Arc<Mutex<dyn Write + Send>> {
    Arc::new(Mutex::new(std::io::stdout()))
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")
}

#[allow(clippy::too_many_lines)]
fn run(cli: Cli, log: &LogFilter) -> anyhow::Result<ExitCode> {
    let config_dir = cli.config.as_deref();
    match cli.command {
        Command::CheckConfig => {
            let dir = config_dir.unwrap_or(Path::new(DEFAULT_CONFIG));
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
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("{e}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Command::Demo {
            shoppers,
            speed,
            seed,
            minutes,
            provider,
        } => {
            let opts = app::demo::DemoOptions {
                config: cli.config.clone(),
                shoppers,
                speed,
                seed,
                minutes,
                provider,
                ..app::demo::DemoOptions::default()
            };
            runtime()?.block_on(app::demo::demo(opts, stdout()))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::StandIn { listen } => {
            runtime()?.block_on(async {
                let listener = tokio::net::TcpListener::bind(listen)
                    .await
                    .with_context(|| format!("listening on {listen}"))?;
                let addr = listener.local_addr()?;
                println!(
                    "nearcast stand-in on http://{addr}: WhatsApp Cloud API, Twilio and Vonage Messages; \
                     try `nearcast demo --provider http://{addr}` (Ctrl-C to stop)"
                );
                app::stand_in::serve(listener, stdout(), shutdown_signal()).await?;
                anyhow::Ok(())
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Broadcast {
            campaign,
            segment,
            dry_run,
            db,
        } => {
            let config = load(config_dir)?;
            apply_log_filter(log, &config);
            let stderr_tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
            let opts = app::broadcast::BroadcastOptions {
                campaign,
                segment,
                dry_run,
                db,
                progress: if stderr_tty {
                    app::broadcast::ProgressStyle::Bar
                } else {
                    app::broadcast::ProgressStyle::Lines
                },
            };
            let clock = SystemClock {
                require_sync: config.daemon.clock.require_sync,
            };
            let adapters = app::adapters(&config, &stdout())?;
            let progress: Arc<Mutex<dyn Write + Send>> = Arc::new(Mutex::new(std::io::stderr()));
            let summary = runtime()?.block_on(app::broadcast::broadcast(
                &config, &opts, &clock, adapters, progress,
            ))?;
            print!("{}", summary.text());
            Ok(ExitCode::SUCCESS)
        }
        Command::Replay {
            file,
            dry_run,
            fast,
            json,
            speed,
            db,
        } => {
            let config = load(config_dir)?;
            let opts = app::replay::ReplayOptions {
                file,
                dry_run,
                fast,
                json,
                speed,
                db,
            };
            let out = Arc::new(Mutex::new(std::io::BufWriter::with_capacity(
                1 << 16,
                std::io::stdout(),
            )));
            let report = runtime()?.block_on(app::replay::replay(&config, &opts, out.clone()))?;
            if let Ok(mut o) = out.lock() {
                o.flush()?;
            }
            for bad in &report.stats.first_bad {
                eprintln!("{}: {bad}", opts.file.display());
            }
            if report.stats.skipped() > 0 {
                eprintln!("{} line(s) skipped", report.stats.skipped());
            }
            if fast {
                eprintln!(
                    "replayed {} observations in {:.3} s: {:.0} sightings/s",
                    report.stats.observations(),
                    report.elapsed.as_secs_f64(),
                    report.rate()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Record {
            file,
            seconds,
            all,
            db,
            sim,
            minutes,
            shoppers,
            seed,
        } => {
            let config = load(config_dir)?;
            if sim {
                let n = app::record::record_sim(&config, &file, minutes, shoppers, seed)?;
                eprintln!("wrote {n} observations to {}", file.display());
                return Ok(ExitCode::SUCCESS);
            }
            if all {
                eprintln!(
                    "nearcast: --all: {} will hold PERSONAL DATA: the addresses of every device heard, \
                     including people who did not opt in. Keep it like customer data and delete it after use.",
                    file.display()
                );
            }
            let opts = app::record::LiveOptions { seconds, all, db };
            let clock: Arc<dyn Clock> = Arc::new(SystemClock {
                require_sync: false,
            });
            let report = runtime()?.block_on(app::record::record_live(
                &config,
                &file,
                &opts,
                clock,
                shutdown_signal(),
            ))?;
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
            Ok(ExitCode::SUCCESS)
        }
        Command::Scan {
            adapter,
            seconds,
            json,
            db,
        } => {
            // The configuration is optional: without it, default radio model
            // and no customer names.
            let config = match load(config_dir) {
                Ok(c) => Some(c),
                Err(e) if config_dir.is_some() => return Err(e),
                Err(_) => None,
            };
            let opts = app::scan::ScanOptions {
                adapter,
                seconds,
                json,
                redraw: !json && std::io::IsTerminal::is_terminal(&std::io::stdout()),
                refresh: std::time::Duration::from_secs(1),
                db,
            };
            let clock: Arc<dyn Clock> = Arc::new(SystemClock {
                require_sync: false,
            });
            let mut out = std::io::stdout();
            let summary = runtime()?.block_on(app::scan::scan(
                config.as_ref(),
                &opts,
                clock,
                &mut out,
                shutdown_signal(),
            ))?;
            eprintln!(
                "heard {} advertisements from {} devices",
                summary.sightings, summary.devices
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Run { db } => {
            let config = load(config_dir)?;
            apply_log_filter(log, &config);
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let clock: Arc<dyn Clock> = Arc::new(SystemClock {
                require_sync: config.daemon.clock.require_sync,
            });
            rt.block_on(app::run::run(
                config,
                db,
                clock,
                stdout(),
                shutdown_signal(),
            ))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Customers { action, db } => {
            let config = load(config_dir)?;
            let (mut store, hasher) = app::open_database(&config, db.as_deref())?;
            let now = SystemClock::default().now();
            match action {
                CustomersCmd::Import { file } => {
                    let f = std::fs::File::open(&file)
                        .with_context(|| format!("opening {}", file.display()))?;
                    match store.import_customers(std::io::BufReader::new(f), &hasher, now) {
                        Ok(r) => println!(
                            "imported {}: {} added, {} updated, {} identities (hashed)",
                            file.display(),
                            r.added,
                            r.updated,
                            r.identities
                        ),
                        Err(nearcast::store::Error::Import(rows)) => {
                            for r in &rows {
                                eprintln!("{}:{r}", file.display());
                            }
                            eprintln!("{} bad row(s); nothing was imported", rows.len());
                            return Ok(ExitCode::FAILURE);
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                CustomersCmd::List => {
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
                CustomersCmd::Show { id } => {
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
                CustomersCmd::OptOut { id } => {
                    store.opt_out(&id, now)?;
                    println!("{id} opted out: no further messages; device identities deleted");
                }
                CustomersCmd::Export { id } => {
                    println!("{}", serde_json::to_string_pretty(&store.export(&id)?)?);
                }
                CustomersCmd::Forget { id } => {
                    store.forget(&id)?;
                    println!(
                        "{id} erased: customer, identities, visits, points, decisions and messages"
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Outbox {
            action: OutboxCmd::List { state, limit },
            db,
        } => {
            let config = load(config_dir)?;
            let (store, _) = app::open_database(&config, db.as_deref())?;
            let state = match state.as_deref() {
                None => None,
                Some(s) => {
                    Some(OutboxState::parse(s).with_context(|| format!("unknown state {s:?}"))?)
                }
            };
            println!(
                "{:>6} {:<20} {:<12} {:<16} {:<14} {:<9} {:>3}  error",
                "id", "decided", "customer", "campaign", "channel", "state", "try"
            );
            for r in store.outbox_rows(state, limit)? {
                println!(
                    "{:>6} {:<20} {:<12} {:<16} {:<14} {:<9} {:>3}  {}",
                    r.id,
                    r.created_at.to_string().get(..19).unwrap_or(""),
                    r.customer,
                    r.campaign,
                    format!("{}/{}", r.channel, r.variant),
                    if r.ambiguous {
                        format!("{}?", r.state)
                    } else {
                        r.state
                    },
                    r.attempts,
                    r.error.unwrap_or_default()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Stats { db, json } => {
            let config = load(config_dir)?;
            let (store, _) = app::open_database(&config, db.as_deref())?;
            let s = store.stats()?;
            let live = app::live::Status::read(&app::live::status_path(&app::database_path(
                &config,
                db.as_deref(),
            )));
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
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The running daemon's live sources and guards (from its status file).
fn print_live(l: &app::live::Status) {
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
    let g = &l.guard;
    println!(
        "guard            {} admitted; dropped: {} junk, {} address rate, {} identity rate, {} spoofing ({} addresses quarantined); {} evicted",
        g.admitted, g.junk, g.address_rate, g.identity_rate, g.spoofing, g.quarantined, g.evicted
    );
}

/// SIGTERM (systemd) or Ctrl-C.
async fn shutdown_signal() {
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

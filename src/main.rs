//! The `nearcast` command line: argument parsing, logging setup and exit
//! codes. Everything else lives in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use nearcast::app::cli::{self, CustomersAction, Exit, RecordOptions};
use nearcast::app::{broadcast, demo, record, replay, scan};
use nearcast::config::Config;

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
    /// Be a remote scanner of another box: publish this box's BLE sightings
    /// to the store's MQTT broker (knows no customer).
    Scanner {
        /// The broker: mqtt://host:port, or mqtts://host:port for TLS.
        #[arg(long, value_name = "URL")]
        mqtt: String,
        /// This scanner's name: its `node` in the main box's zones.toml.
        #[arg(long, value_name = "NAME")]
        id: String,
        /// The main box's store_id (default: zones.toml's, if --config has one).
        #[arg(long, value_name = "ID")]
        store: Option<String>,
        /// BlueZ adapter.
        #[arg(long, default_value = "hci0")]
        adapter: String,
        /// Broker account.
        #[arg(long)]
        username: Option<String>,
        /// File with the broker password (relative: a systemd credential).
        #[arg(long, value_name = "PATH")]
        password_file: Option<PathBuf>,
        /// CA certificate(s), PEM, for mqtts://.
        #[arg(long, value_name = "PATH")]
        ca_file: Option<PathBuf>,
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
    /// Fit the scanners' RSSI offsets to a walk with a test beacon whose
    /// areas are marked; write a suggested zones.toml for review.
    Calibrate {
        /// The walk, recorded with `nearcast record FILE --all`.
        recording: PathBuf,
        /// The test beacon, as in customers.csv (ibeacon:UUID:MAJOR:MINOR, mac:…).
        #[arg(long, value_name = "IDENTITY")]
        beacon: String,
        /// When the beacon entered each area: lines `TIME ZONE`
        /// (Unix seconds, RFC 3339 or HH:MM:SS store time; an area, `none` or `end`).
        #[arg(long, value_name = "FILE")]
        marks: Option<PathBuf>,
        /// One mark, `TIME=ZONE` (repeatable).
        #[arg(long = "mark", value_name = "TIME=ZONE")]
        mark: Vec<String>,
        /// Where to write the suggested zones.toml.
        #[arg(long, value_name = "FILE", default_value = "zones.suggested.toml")]
        out: PathBuf,
    },
    /// Suggest a zones.toml from an ESPresense-companion config.yaml (nodes, rooms).
    ImportFloorplan {
        /// ESPresense-companion's config.yaml.
        file: PathBuf,
        /// Import only this floor (its `id`); default: every floor, each its own group.
        #[arg(long, value_name = "ID")]
        floor: Option<String>,
        /// Where to write the suggested zones.toml.
        #[arg(long, value_name = "FILE", default_value = "zones.suggested.toml")]
        out: PathBuf,
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
        Ok(Exit::Success) => ExitCode::SUCCESS,
        Ok(Exit::Failure) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("nearcast: {}", once(&anyhow::Error::from(e)));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes on one line, each said once: many errors
/// already quote their cause, and printing the chain would repeat it.
fn once(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let t = cause.to_string();
        if t.is_empty() || text.contains(&t) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&t);
    }
    text
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

/// Hands each command to its body in `app::cli`.
fn run(cli: Cli, log: &LogFilter) -> Result<Exit, nearcast::app::Error> {
    let dir = cli.config.as_deref();
    let config = || {
        let c = cli::load(dir)?;
        apply_log_filter(log, &c);
        Ok::<_, nearcast::app::Error>(c)
    };
    match cli.command {
        Command::CheckConfig => Ok(cli::check_config(dir)),
        Command::Demo {
            shoppers,
            speed,
            seed,
            minutes,
            provider,
        } => {
            // The narrative and its summary tell what happened; the log's
            // routine lines (a secret created in the temporary directory,
            // each fall-over) would only interleave with it.
            if std::env::var_os("RUST_LOG").is_none() {
                let _ = log.reload(tracing_subscriber::EnvFilter::new("error"));
            }
            cli::demo(demo::DemoOptions {
                config: cli.config.clone(),
                shoppers,
                speed,
                seed,
                minutes,
                provider,
                ..demo::DemoOptions::default()
            })
        }
        Command::StandIn { listen } => cli::stand_in(listen),
        Command::Broadcast {
            campaign,
            segment,
            dry_run,
            db,
        } => {
            let progress = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
                broadcast::ProgressStyle::Bar
            } else {
                broadcast::ProgressStyle::Lines
            };
            let opts = broadcast::BroadcastOptions {
                campaign,
                segment,
                dry_run,
                db,
                progress,
            };
            cli::broadcast(&config()?, &opts)
        }
        Command::Replay {
            file,
            dry_run,
            fast,
            json,
            speed,
            db,
        } => {
            let opts = replay::ReplayOptions {
                file,
                dry_run,
                fast,
                json,
                speed,
                db,
                ticks: nearcast::app::Ticks::Jump,
            };
            cli::replay(&cli::load(dir)?, &opts)
        }
        Command::Calibrate {
            recording,
            beacon,
            marks,
            mark,
            out,
        } => cli::calibrate(
            &cli::load(dir)?,
            &nearcast::app::calibrate::CalibrateOptions {
                recording,
                beacon,
                marks_file: marks,
                marks: mark,
                out,
            },
        ),
        Command::ImportFloorplan { file, floor, out } => {
            cli::import_floorplan(dir, &file, floor.as_deref(), &out)
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
            let opts = RecordOptions {
                file,
                sim,
                minutes,
                shoppers,
                seed,
                live: record::LiveOptions { seconds, all, db },
            };
            cli::record(&cli::load(dir)?, &opts)
        }
        Command::Scan {
            adapter,
            seconds,
            json,
            db,
        } => {
            let opts = scan::ScanOptions {
                adapter,
                seconds,
                json,
                redraw: !json && std::io::IsTerminal::is_terminal(&std::io::stdout()),
                refresh: std::time::Duration::from_secs(1),
                db,
            };
            cli::scan(dir, &opts)
        }
        Command::Run { db } => cli::run(config()?, db),
        Command::Scanner {
            mqtt,
            id,
            store,
            adapter,
            username,
            password_file,
            ca_file,
        } => {
            let store = match store {
                Some(s) => s,
                None => cli::load(dir)?.store_id,
            };
            cli::scanner(&cli::ScannerOptions {
                url: mqtt,
                id,
                store,
                adapter,
                username,
                password_file,
                ca_file,
            })
        }
        Command::Customers { action, db } => {
            let action = match action {
                CustomersCmd::Import { file } => CustomersAction::Import(file),
                CustomersCmd::List => CustomersAction::List,
                CustomersCmd::Show { id } => CustomersAction::Show(id),
                CustomersCmd::OptOut { id } => CustomersAction::OptOut(id),
                CustomersCmd::Export { id } => CustomersAction::Export(id),
                CustomersCmd::Forget { id } => CustomersAction::Forget(id),
            };
            cli::customers(&cli::load(dir)?, db.as_deref(), action)
        }
        Command::Outbox {
            action: OutboxCmd::List { state, limit },
            db,
        } => cli::outbox_list(&cli::load(dir)?, db.as_deref(), state.as_deref(), limit),
        Command::Stats { db, json } => cli::stats(&cli::load(dir)?, db.as_deref(), json),
    }
}

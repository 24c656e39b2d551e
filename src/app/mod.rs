//! Wiring: builds the pipeline, the outbox worker and the sources from a
//! configuration, and runs them as the daemon, the demo or a replay.
//!
//! Owns no decisions (those are `core`'s) and no SQL (that is `store`'s);
//! reads the clock only through the `Clock` it is given.

pub mod broadcast;
pub mod calibrate;
pub mod cli;
pub mod demo;
pub mod floorplan;
pub mod live;
pub mod output;
pub mod pipeline;
pub mod record;
pub mod replay;
pub mod run;
pub mod scan;
pub mod sources;
pub mod stand_in;

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::channel::{Adapter, Worker, console::Console};
use crate::config::{self, Config};
use crate::core::identity::Hasher;
use crate::core::types::Timestamp;
use crate::store::{self, Store};

pub use pipeline::{Counters, Output, Pipeline};

/// Errors a command can end with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration was refused.
    #[error("{0}")]
    Config(#[from] config::Errors),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// Delivery failed.
    #[error(transparent)]
    Channel(#[from] crate::channel::Error),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What happened.
        source: std::io::Error,
    },
    /// A source could not start.
    #[error(transparent)]
    Source(#[from] crate::source::Error),
    /// Anything else a command refuses, with what to do.
    #[error("{0}")]
    Usage(String),
    /// The configuration a command needs was refused.
    #[error("configuration refused:\n{0}")]
    Refused(config::Errors),
    /// An operating-system call failed while doing `what`.
    #[error("{what}")]
    Context {
        /// What was being done.
        what: String,
        /// What happened.
        source: std::io::Error,
    },
    /// An operating-system call failed (the runtime, a socket, standard
    /// output).
    #[error(transparent)]
    Os(std::io::Error),
    /// JSON output could not be written.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

impl Error {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Error {
        Error::Io {
            path: path.to_owned(),
            source,
        }
    }
}

/// Refuses an `--out` that is the live `zones.toml` in `config_dir`:
/// `command` only writes a suggestion for staff to review.
pub(crate) fn refuse_live_zones(config_dir: &Path, out: &Path, command: &str) -> Result<(), Error> {
    let zones = config_dir.join(config::ZONES_FILE);
    if out
        .canonicalize()
        .ok()
        .is_some_and(|o| Some(o) == zones.canonicalize().ok())
    {
        return Err(Error::Usage(format!(
            "--out {} is the live zones.toml: {command} only writes a suggestion; choose another file and review it",
            out.display()
        )));
    }
    Ok(())
}

/// The database path: `--db` if given, else the configured one.
#[must_use]
pub fn database_path(config: &Config, db: Option<&Path>) -> PathBuf {
    db.map_or_else(|| config.daemon.database.clone(), Path::to_owned)
}

/// Opens the database and its installation secret.
///
/// # Errors
/// Database or secret failures.
pub fn open_database(config: &Config, db: Option<&Path>) -> Result<(Store, Hasher), Error> {
    let path = database_path(config, db);
    let store = Store::open(&path)?;
    let secret_path = match (db, &config.daemon.secret_file) {
        // A database given on the command line keeps its secret beside it.
        (Some(_), _) | (None, None) => config.daemon.secret_path(&path),
        (None, Some(p)) => p.clone(),
    };
    let secret = store::load_or_create_secret(&secret_path)?;
    Ok((store, Hasher::new(&secret)))
}

/// The registry snapshot a pipeline works from: opted-in customers by
/// identity hash, and the rotating ids valid around `now`.
pub struct Registry {
    /// Customers and their identity hashes.
    pub directory: Arc<crate::core::identity::Directory>,
    /// Rotating ids (Eddystone-EID, app tokens).
    pub rotating: crate::core::rotating::RotatingIndex,
}

/// Loads the registry snapshot from `store` at `now`.
///
/// # Errors
/// Database failures.
pub fn load_registry(store: &Store, config: &Config, now: Timestamp) -> Result<Registry, Error> {
    let directory = Arc::new(store.directory()?);
    let rotating = crate::core::rotating::RotatingIndex::build(
        config.daemon.privacy.app_token_slot,
        store.rotating_keys()?,
        now,
    );
    Ok(Registry {
        directory,
        rotating,
    })
}

/// A pipeline for `config` over `ledger`, working from `registry`.
pub fn pipeline<L: crate::core::campaign::Ledger>(
    config: &Config,
    hasher: Hasher,
    registry: Registry,
    ledger: L,
) -> Pipeline<L> {
    let mut p = Pipeline::new(
        config.layout.clone(),
        config.engine.clone(),
        hasher,
        registry.directory,
        ledger,
    )
    .with_guard(config.daemon.guard.clone());
    p.set_rotating(registry.rotating, config.daemon.privacy.app);
    p
}

/// Runs presence timers and the outbox worker in the observations' own
/// time, one tick per simulated second, from `*next_tick` through `until`.
///
/// # Errors
/// Ledger or database failures.
pub(crate) async fn tick_until<L: crate::core::campaign::Ledger>(
    pipeline: &mut Pipeline<L>,
    worker: &mut Worker,
    next_tick: &mut Timestamp,
    until: Timestamp,
    sink: &mut impl FnMut(Output<'_>),
) -> Result<(), Error>
where
    Error: From<L::Error>,
{
    while *next_tick <= until {
        pipeline.advance(*next_tick, sink)?;
        worker.run_once(*next_tick).await?;
        *next_tick = next_tick.saturating_add(std::time::Duration::from_secs(1));
    }
    Ok(())
}

/// An outbox worker with the configured channels, printing console
/// channels to `console`.
///
/// # Errors
/// Database failures.
pub fn worker(
    config: &Config,
    db: &Path,
    console: Arc<Mutex<dyn Write + Send>>,
) -> Result<Worker, Error> {
    Ok(Worker::new(
        Store::open(db)?,
        config.engine.clone(),
        config.layout.store_name.clone(),
        adapters(config, &console)?,
        config.daemon.outbox.lease,
        config.daemon.outbox.batch,
    )
    .with_policy(crate::channel::RetryPolicy::from(&config.daemon.outbox))
    .with_limits(limits(config)))
}

/// Each configured channel's pace.
#[must_use]
pub fn limits(config: &Config) -> HashMap<String, crate::channel::ChannelLimits> {
    config
        .daemon
        .channels
        .iter()
        .map(|c| (c.name.clone(), c.limits))
        .collect()
}

/// The configured channels' adapters; console channels print to `console`.
///
/// # Errors
/// The HTTP client for provider channels cannot be built.
pub fn adapters(
    config: &Config,
    console: &Arc<Mutex<dyn Write + Send>>,
) -> Result<HashMap<String, Adapter>, Error> {
    let mut adapters = HashMap::new();
    let mut providers = None;
    for c in &config.daemon.channels {
        let adapter = match &c.adapter {
            crate::channel::AdapterSettings::Console => Arc::new(Console::new(
                console.clone(),
                config.engine.rules.tz.clone(),
            )) as Adapter,
            provider => {
                let p = match &providers {
                    Some(p) => p,
                    None => providers.insert(crate::channel::Providers::new()?),
                };
                p.adapter(provider)
            }
        };
        adapters.insert(c.name.clone(), adapter);
    }
    Ok(adapters)
}

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

/// Opens the database and its installation secret, creating either (and
/// the directory) when missing: for the commands meant to start a database
/// (`run`, `customers import`, the demo).
///
/// # Errors
/// Database or secret failures.
pub fn open_database(config: &Config, db: Option<&Path>) -> Result<(Store, Hasher), Error> {
    let path = database_path(config, db);
    let store = Store::open(&path)?;
    let secret = store::load_or_create_secret(&secret_path(config, db, &path))?;
    Ok((store, Hasher::new(&secret)))
}

/// The installation secret's file for the database at `path`.
fn secret_path(config: &Config, db: Option<&Path>, path: &Path) -> PathBuf {
    match (db, &config.daemon.secret_file) {
        // A database given on the command line keeps its secret beside it.
        (Some(_), _) | (None, None) => config.daemon.secret_path(path),
        (None, Some(p)) => p.clone(),
    }
}

/// Refuses a database file that does not exist, saying which commands
/// create one: every other command works on a database that is there and
/// never leaves an empty one (or a new secret) behind a mistyped `--db`.
///
/// # Errors
/// [`Error::Usage`] when `path` does not exist.
pub fn require_database(path: &Path) -> Result<(), Error> {
    if path.exists() {
        return Ok(());
    }
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty() && !d.exists())
        .map(|d| format!(" (nor does the directory {})", d.display()))
        .unwrap_or_default();
    Err(Error::Usage(format!(
        "no database at {}{dir}: check --db or `[database] path` in nearcast.toml; \
         `nearcast customers import FILE` and `nearcast run` create one",
        path.display()
    )))
}

/// Opens a database that must already exist (its schema migrated if
/// needed), without its secret: for commands that only read or change
/// rows (`stats`, `outbox list`, `customers list` and the like).
///
/// # Errors
/// [`require_database`]'s refusal, or database failures.
pub fn open_existing_store(config: &Config, db: Option<&Path>) -> Result<Store, Error> {
    let path = database_path(config, db);
    require_database(&path)?;
    Ok(Store::open(&path)?)
}

/// Opens a database that must already exist, with its installation
/// secret, which must exist too: a new secret would silently stop every
/// stored identity from matching.
///
/// # Errors
/// A missing database or secret, or database failures.
pub fn open_existing_database(
    config: &Config,
    db: Option<&Path>,
) -> Result<(Store, Hasher), Error> {
    let path = database_path(config, db);
    require_database(&path)?;
    let secret_path = secret_path(config, db, &path);
    if !secret_path.exists() {
        return Err(Error::Usage(format!(
            "{} has no installation secret at {}: restore it from the backup you keep with the \
             database (without it, no stored identity matches)",
            path.display(),
            secret_path.display()
        )));
    }
    open_database(config, db)
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

/// How [`tick_until`] moves through time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Ticks {
    /// One tick per second where anything is due; idle time between is
    /// jumped over in one step.
    #[default]
    Jump,
    /// One tick per second, idle or not (the plain path the jumps are
    /// checked against).
    EverySecond,
}

/// Runs presence timers and the outbox worker in the observations' own
/// time, from `*next_tick` through `until`, on the grid of whole seconds
/// from the first tick: at every second something is due (a presence
/// timer, a row, a fallback, a follow-up), idle seconds jumped over in one
/// step, so a gap of a month in a recording costs one tick, not millions.
/// Returns the ticks run.
///
/// # Errors
/// Ledger or database failures.
pub(crate) async fn tick_until<L: crate::core::campaign::Ledger>(
    pipeline: &mut Pipeline<L>,
    worker: &mut Worker,
    next_tick: &mut Timestamp,
    until: Timestamp,
    ticks: Ticks,
    sink: &mut impl FnMut(Output<'_>),
) -> Result<u64, Error>
where
    Error: From<L::Error>,
{
    let mut n = 0;
    while *next_tick <= until {
        pipeline.advance(*next_tick, sink)?;
        worker.run_once(*next_tick).await?;
        n += 1;
        let wake = match ticks {
            Ticks::EverySecond => Some(*next_tick),
            Ticks::Jump => {
                let worker = worker.next_wake(*next_tick)?;
                match (pipeline.poll_timeout(), worker) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            }
        };
        let next = after_tick(*next_tick, wake, until);
        if next == *next_tick {
            break; // the end of representable time
        }
        *next_tick = next;
    }
    Ok(n)
}

/// The tick after `tick`: the first whole second from it at or after
/// `wake` (at least one second on), or past `until` when nothing wakes
/// before then.
fn after_tick(tick: Timestamp, wake: Option<Timestamp>, until: Timestamp) -> Timestamp {
    const SECOND: i64 = 1000;
    let beyond = until.saturating_add(std::time::Duration::from_millis(1));
    let target = wake.map_or(beyond, |w| w.min(beyond));
    let seconds = target
        .0
        .saturating_sub(tick.0)
        .saturating_add(SECOND - 1)
        .div_euclid(SECOND)
        .max(1);
    Timestamp(tick.0.saturating_add(seconds.saturating_mul(SECOND)))
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
    worker_with(config, db, adapters(config, &console)?)
}

/// An outbox worker with the configured limits and retries over
/// `adapters`.
///
/// # Errors
/// Database failures.
pub fn worker_with(
    config: &Config,
    db: &Path,
    adapters: HashMap<String, Adapter>,
) -> Result<Worker, Error> {
    Ok(Worker::new(
        Store::open(db)?,
        config.engine.clone(),
        config.layout.store_name.clone(),
        adapters,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_stay_on_the_grid_and_jump_to_what_wakes() {
        let t = |ms| Timestamp(ms);
        // Something due within the next second: the next second.
        assert_eq!(after_tick(t(5_000), Some(t(5_200)), t(99_000)), t(6_000));
        assert_eq!(after_tick(t(5_000), Some(t(1_000)), t(99_000)), t(6_000));
        // Due later: the first whole second at or after it.
        assert_eq!(after_tick(t(5_000), Some(t(9_000)), t(99_000)), t(9_000));
        assert_eq!(after_tick(t(5_000), Some(t(9_001)), t(99_000)), t(10_000));
        // Nothing before `until` (or nothing at all): past it, in one step.
        assert_eq!(after_tick(t(5_000), None, t(99_000)), t(100_000));
        assert_eq!(
            after_tick(t(5_000), Some(t(500_000)), t(99_500)),
            t(100_000)
        );
        // A month, or the end of representable time, is one step too.
        let month = 30 * 24 * 3_600_000;
        assert_eq!(after_tick(t(5_000), None, t(month)), t(month + 1_000));
        let end = t(i64::MAX);
        assert!(after_tick(t(5_000), None, end) > t(i64::MAX - 1_000));
        assert_eq!(after_tick(end, None, end), end);
    }
}

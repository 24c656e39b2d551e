//! `nearcast replay FILE`: a recording through the pipeline in its own
//! time: paced, or as fast as possible (`--fast`, with throughput), into the
//! database and channels, or `--dry-run` (customers read, nothing written,
//! cooldowns and caps kept in memory).

use std::fs::File;
use std::io::{BufReader, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Error, Output, Pipeline, database_path, open_existing_database, output, worker};
use crate::config::Config;
use crate::core::campaign::{Ledger, MemoryLedger};
use crate::core::identity::Hasher;
use crate::core::types::{Observation, Timestamp};
use crate::source::replay::{Reader, ReplayStats};
use crate::store::{self, Store};

/// Replay settings.
#[derive(Clone, Debug, Default)]
pub struct ReplayOptions {
    /// The recording.
    pub file: PathBuf,
    /// Write nothing; keep cooldowns and caps in memory.
    pub dry_run: bool,
    /// No pacing; report throughput.
    pub fast: bool,
    /// One JSON object per line instead of text.
    pub json: bool,
    /// Recording seconds per real second when paced (default 1).
    pub speed: f64,
    /// Database override.
    pub db: Option<PathBuf>,
    /// How idle time between observations is crossed: jumped over (the
    /// default), or a tick every second (the plain path, for comparison).
    pub ticks: super::Ticks,
}

/// What a replay did.
#[derive(Clone, Debug, Default)]
pub struct ReplayReport {
    /// The reader's counts (lines, skipped by reason, first bad lines).
    pub stats: ReplayStats,
    /// The pipeline's counts.
    pub counters: super::Counters,
    /// Wall time spent.
    pub elapsed: Duration,
    /// Ticks of presence timers and the outbox worker run (none in a dry
    /// run): one per recorded second where anything was due.
    pub ticks: u64,
}

impl ReplayReport {
    /// Observations per second of wall time.
    #[must_use]
    pub fn rate(&self) -> f64 {
        #[allow(clippy::cast_precision_loss)]
        let n = self.stats.observations() as f64;
        n / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Replays `opts.file` against `config`, printing events and decisions to `out`.
///
/// # Errors
/// Config, database or IO failures.
pub async fn replay(
    config: &Config,
    opts: &ReplayOptions,
    out: Arc<Mutex<dyn Write + Send>>,
) -> Result<ReplayReport, Error> {
    let file = File::open(&opts.file).map_err(|e| Error::io(&opts.file, e))?;
    let reader = Reader::new(BufReader::with_capacity(1 << 20, file), &config.layout);
    if opts.dry_run {
        let db = database_path(config, opts.db.as_deref());
        super::require_database(&db)?;
        let store = Store::open_read_only(&db)?;
        let secret_path = config.daemon.secret_path(&db);
        if !secret_path.exists() {
            return Err(Error::Usage(format!(
                "no installation secret at {}: a dry run needs the database's customers (import them first)",
                secret_path.display()
            )));
        }
        let hasher = Hasher::new(&store::load_or_create_secret(&secret_path)?);
        let registry = super::load_registry(&store, config, first_time(&opts.file)?)?;
        drop(store);
        let pipeline = super::pipeline(config, hasher, registry, MemoryLedger::new());
        drive(config, opts, reader, pipeline, None, out).await
    } else {
        let (store, hasher) = open_existing_database(config, opts.db.as_deref())?;
        let registry = super::load_registry(&store, config, first_time(&opts.file)?)?;
        let db = database_path(config, opts.db.as_deref());
        let w = worker(config, &db, out.clone())?;
        let pipeline = super::pipeline(config, hasher, registry, store);
        drive(config, opts, reader, pipeline, Some(w), out).await
    }
}

async fn drive<L: Ledger, R: std::io::BufRead>(
    config: &Config,
    opts: &ReplayOptions,
    mut reader: Reader<'_, R>,
    mut pipeline: Pipeline<L>,
    mut worker: Option<crate::channel::Worker>,
    out: Arc<Mutex<dyn Write + Send>>,
) -> Result<ReplayReport, Error>
where
    Error: From<L::Error>,
{
    let engine = config.engine.clone();
    let tz = engine.rules.tz.clone();
    let json = opts.json;
    let mut sink = |o: Output<'_>| {
        let line = if json {
            output::json(&o, &engine)
        } else {
            output::human(&o, &tz)
        };
        if let Ok(mut w) = out.lock() {
            let _ = w.write_all(line.as_bytes());
        }
    };
    let speed = if opts.speed > 0.0 { opts.speed } else { 1.0 };
    let started = Instant::now();
    let wall_start = tokio::time::Instant::now();
    let mut first: Option<Timestamp> = None;
    let mut last = Timestamp::MIN;
    let mut next_tick = Timestamp::MIN;
    let mut ticks = 0;
    for next in reader.by_ref() {
        let o: Observation =
            next.map_err(|e| Error::io(&opts.file, std::io::Error::other(e.to_string())))?;
        let o = &o;
        let at = o.at();
        let t0 = *first.get_or_insert(at);
        if !opts.fast {
            let ms = u64::try_from(at.0.saturating_sub(t0.0).max(0)).unwrap_or(0);
            #[allow(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                clippy::cast_precision_loss
            )]
            let real = Duration::from_micros((ms as f64 * 1000.0 / speed) as u64);
            tokio::time::sleep_until(wall_start + real).await;
        }
        if let Some(w) = worker.as_mut() {
            if next_tick == Timestamp::MIN {
                next_tick = at;
            }
            ticks += super::tick_until(&mut pipeline, w, &mut next_tick, at, opts.ticks, &mut sink)
                .await?;
        }
        pipeline.handle(o, &mut sink)?;
        last = last.max(at);
    }
    let elapsed = started.elapsed();
    // Let the presence timers and the outbox finish in recording time.
    if last != Timestamp::MIN {
        let until = last.saturating_add(Duration::from_secs(15 * 60));
        match worker.as_mut() {
            Some(w) => {
                ticks += super::tick_until(
                    &mut pipeline,
                    w,
                    &mut next_tick,
                    until,
                    opts.ticks,
                    &mut sink,
                )
                .await?;
            }
            None => pipeline.advance(until, &mut sink)?,
        }
    }
    Ok(ReplayReport {
        stats: reader.into_stats(),
        counters: pipeline.counters(),
        elapsed,
        ticks,
    })
}

/// The time of a recording's first observation (its rotating ids are
/// resolved from there), or the epoch for an empty or unreadable one.
fn first_time(file: &std::path::Path) -> Result<Timestamp, Error> {
    let f = File::open(file).map_err(|e| Error::io(file, e))?;
    let layout = crate::core::zones::Layout::single("", "local");
    let mut reader = Reader::new(BufReader::new(f), &layout);
    Ok(reader.find_map(Result::ok).map_or(Timestamp(0), |o| o.at()))
}

impl From<std::convert::Infallible> for Error {
    fn from(e: std::convert::Infallible) -> Error {
        match e {}
    }
}

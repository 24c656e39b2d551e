//! `nearcast record FILE`: writes observations as a recording
//! (`formats/replay.md`): from the configured live sources (BLE adapters,
//! Wi-Fi presence), so a store can capture a day and replay it against a
//! new config; or, with `--sim`, from the simulator, for benchmarks, tests
//! and trying a config change on a known day.
//!
//! A live recording holds only enrolled customers' sightings unless `--all`
//! is given: devices of people who did not opt in are identified in memory
//! and dropped, never written.

use std::future::Future;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use smallvec::SmallVec;
use tokio::sync::mpsc;

use super::{Error, database_path};
use crate::clock::Clock;
use crate::config::Config;
use crate::core::advert::{self, DecodeStats, Frame};
use crate::core::identity::{Hasher, Identity, Resolver};
use crate::core::types::{Observation, Timestamp};
use crate::source::replay::Writer;
use crate::source::sim::{SimConfig, Simulator};
use crate::store::{self, Store};

/// Records `minutes` of the configured simulator into `file`; returns the
/// number of observations written.
///
/// # Errors
/// A config without a sim source, or IO failures.
pub fn record_sim(
    config: &Config,
    file: &Path,
    minutes: u32,
    shoppers: Option<u32>,
    seed: Option<u64>,
) -> Result<u64, Error> {
    let Some(sim) = config.daemon.sim() else {
        return Err(Error::Usage(
            "the configuration has no [[source]] kind = \"sim\" to record".into(),
        ));
    };
    let customers = super::demo::sim_customers(&sim.customers)?
        .into_iter()
        .map(|(_, c)| c)
        .collect();
    let start = config
        .engine
        .rules
        .local(Timestamp::from_secs(1_763_629_200))
        .day_start
        .saturating_add(Duration::from_secs(10 * 3600));
    let cfg = SimConfig {
        seed: seed.unwrap_or(sim.seed),
        shoppers: shoppers.unwrap_or(sim.shoppers_per_hour.saturating_mul(minutes) / 60),
        start,
        duration: Duration::from_secs(u64::from(minutes) * 60),
        opted_in_share: sim.opted_in_share,
        ..SimConfig::default()
    };
    let f = std::fs::File::create(file).map_err(|e| Error::io(file, e))?;
    let mut w = Writer::new(BufWriter::with_capacity(1 << 20, f), &config.layout);
    let mut n = 0u64;
    for obs in Simulator::new(cfg, config.layout.clone(), customers)? {
        w.write(&obs)
            .map_err(|e| Error::io(file, std::io::Error::other(e.to_string())))?;
        n += 1;
    }
    w.flush()
        .map_err(|e| Error::io(file, std::io::Error::other(e.to_string())))?;
    Ok(n)
}

/// Settings of a live recording.
#[derive(Clone, Debug, Default)]
pub struct LiveOptions {
    /// Stop after this long (until the shutdown signal otherwise).
    pub seconds: Option<u64>,
    /// Write every device, not only enrolled customers' (personal data).
    pub all: bool,
    /// Database override (for the customers).
    pub db: Option<PathBuf>,
}

/// What a live recording wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LiveReport {
    /// Observations written.
    pub written: u64,
    /// Observations of devices not linked to an enrolled customer, dropped.
    pub skipped: u64,
    /// Live sources that never started (name, why), e.g. `ble:hci0` with
    /// no D-Bus: when every source is here, nothing could be recorded.
    pub never_started: Vec<(String, String)>,
    /// Live sources configured.
    pub sources: usize,
}

/// Keeps enrolled customers' observations only.
struct Filter {
    resolver: Resolver,
    store: Store,
    version: i64,
    decode: DecodeStats,
}

impl Filter {
    fn open(config: &Config, db: Option<&Path>) -> Result<Filter, Error> {
        let path = database_path(config, db);
        super::require_database(&path)?;
        let secret = config.daemon.secret_path(&path);
        if !secret.exists() {
            return Err(Error::Usage(format!(
                "no installation secret at {}: recording enrolled customers needs the database's customers (import them first, or pass --all)",
                secret.display()
            )));
        }
        let store = Store::open_read_only(&path)?;
        let hasher = Hasher::new(&store::load_or_create_secret(&secret)?);
        let version = store.registry_version()?;
        let directory = Arc::new(store.directory()?);
        Ok(Filter {
            resolver: Resolver::new(hasher, directory),
            store,
            version,
            decode: DecodeStats::default(),
        })
    }

    /// Picks up imports and opt-outs made while recording.
    fn reload(&mut self) {
        if let Ok(v) = self.store.registry_version()
            && v != self.version
            && let Ok(d) = self.store.directory()
        {
            self.resolver.set_directory(Arc::new(d));
            self.version = v;
        }
    }

    fn enrolled(&mut self, obs: &Observation) -> bool {
        match obs {
            Observation::Ble(s) => {
                let mut frames: SmallVec<[Frame; 2]> = SmallVec::new();
                advert::decode(s, &mut self.decode, |f| frames.push(f));
                self.resolver.identify(frames.iter(), s.addr).is_some()
            }
            Observation::Wifi(w) => self.resolver.resolve(&Identity::Mac(w.mac)).is_some(),
        }
    }
}

/// Records the configured live sources into `file` until `opts.seconds`
/// pass or `shutdown` completes.
///
/// # Errors
/// A config without live sources, a missing customer database (without
/// `--all`), or IO failures.
pub async fn record_live(
    config: &Config,
    file: &Path,
    opts: &LiveOptions,
    clock: Arc<dyn Clock>,
    shutdown: impl Future<Output = ()>,
) -> Result<LiveReport, Error> {
    let mut filter = if opts.all {
        None
    } else {
        Some(Filter::open(config, opts.db.as_deref())?)
    };
    let (tx, mut rx) = mpsc::channel::<Observation>(8192);
    let mut tasks = Vec::new();
    let mut healths = Vec::new();
    for s in config.daemon.sources.iter().filter(|s| s.is_live()) {
        let running = super::sources::spawn(s, &config.layout, clock.clone(), tx.clone())?;
        tasks.push(running.task);
        healths.extend(running.health);
    }
    drop(tx);
    if tasks.is_empty() {
        return Err(Error::Usage(
            "the configuration has no live source to record: add a [[source]] with kind = \"ble\" or \"wifi\" (or pass --sim)".into(),
        ));
    }
    let f = std::fs::File::create(file).map_err(|e| Error::io(file, e))?;
    let mut w = Writer::new(BufWriter::with_capacity(1 << 16, f), &config.layout);
    let werr = |e: crate::source::Error| Error::io(file, std::io::Error::other(e.to_string()));
    let deadline = opts
        .seconds
        .map(|s| tokio::time::Instant::now() + Duration::from_secs(s));
    let mut flush = tokio::time::interval(Duration::from_secs(1));
    tokio::pin!(shutdown);
    let mut report = LiveReport::default();
    let result = loop {
        let until_end = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = &mut shutdown => break Ok(()),
            () = until_end => break Ok(()),
            obs = rx.recv() => {
                let Some(obs) = obs else { break Ok(()) };
                if filter.as_mut().is_some_and(|f| !f.enrolled(&obs)) {
                    report.skipped += 1;
                    continue;
                }
                if let Err(e) = w.write(&obs) {
                    break Err(werr(e));
                }
                report.written += 1;
            }
            _ = flush.tick() => {
                // A capture cut short (power loss) keeps all but the last second.
                if let Err(e) = w.flush() {
                    break Err(werr(e));
                }
                if let Some(f) = filter.as_mut() {
                    f.reload();
                }
            }
        }
    };
    for t in tasks {
        t.abort();
    }
    report.sources = healths.len();
    report.never_started = healths
        .iter()
        .filter(|h| h.connects.load(std::sync::atomic::Ordering::Relaxed) == 0)
        .map(|h| {
            let why = h
                .snapshot()
                .last_outage
                .unwrap_or_else(|| "did not answer in time".to_owned());
            (h.name.clone(), why)
        })
        .collect();
    result?;
    w.flush().map_err(werr)?;
    Ok(report)
}

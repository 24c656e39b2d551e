//! `nearcast run`: the daemon. Sources feed a channel; one task owns the
//! pipeline (and the database's write connection) and the outbox worker,
//! sleeping until the next observation, presence timer or outbox due time.
//! Registry changes made by the CLI (import, opt-out, erasure) are picked
//! up within a second. The shutdown signal is passed in, so tests pass
//! their own.

use std::future::Future;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

use super::{Clock, Error, Output, Pipeline, database_path, open_database, worker};
use crate::config::{Config, SourceConfig};
use crate::core::campaign::Outcome;
use crate::core::types::{Observation, Timestamp};
use crate::source::sim::{SimConfig, SimCustomer, Simulator};

/// How many observations may wait between the sources and the pipeline;
/// beyond that, new ones are dropped and counted (the radio keeps talking).
const QUEUE: usize = 8192;

/// Runs the daemon until `shutdown` completes.
///
/// # Errors
/// Database failures at start; config or IO failures of a source.
pub async fn run(
    config: Config,
    db: Option<PathBuf>,
    clock: Arc<dyn Clock>,
    console: Arc<Mutex<dyn Write + Send>>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let (store, hasher) = open_database(&config, db.as_deref())?;
    let db = database_path(&config, db.as_deref());
    let mut registry = store.registry_version()?;
    let directory = Arc::new(store.directory()?);
    tracing::info!(customers = directory.len(), db = %db.display(), "starting");
    let mut pipeline = Pipeline::new(
        config.layout.clone(),
        config.engine.clone(),
        hasher,
        directory,
        store,
    )
    .with_guard(config.daemon.guard.clone());
    let mut worker = worker(&config, &db, console)?;
    let watcher = crate::store::Store::open(&db)?;

    let (tx, mut rx) = mpsc::channel::<Observation>(QUEUE);
    let mut sources = Vec::new();
    // Live sources (BLE, Wi-Fi) report their health through the status file.
    let mut healths = Vec::new();
    for s in &config.daemon.sources {
        if let Some((task, health)) = super::live::spawn(s, clock.clone(), tx.clone()) {
            sources.push(task);
            healths.push(health);
            continue;
        }
        sources.push(spawn_source(s.clone(), &config, clock.clone(), tx.clone())?);
    }
    drop(tx);
    let status_path = super::live::status_path(&db);
    let mut ticks = 0u64;

    let mut sink = |o: Output<'_>| log_output(&o);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    let mut sources_done = false;
    loop {
        let now = clock.now();
        let timer = pipeline.poll_timeout().map(|t| t.since(now));
        tokio::select! {
            () = &mut shutdown => break,
            obs = rx.recv(), if !sources_done => match obs {
                Some(obs) => {
                    if let Err(e) = pipeline.handle(&obs, &mut sink) {
                        tracing::error!(error = %e, "could not record decisions; the event is dropped");
                    }
                }
                None => sources_done = true,
            },
            () = tokio::time::sleep(timer.unwrap_or(Duration::from_secs(3600))), if timer.is_some() => {
                if let Err(e) = pipeline.advance(clock.now(), &mut sink) {
                    tracing::error!(error = %e, "could not record decisions; the event is dropped");
                }
            }
            _ = tick.tick() => {
                let now = clock.now();
                if let Err(e) = pipeline.advance(now, &mut sink) {
                    tracing::error!(error = %e, "could not record decisions; the event is dropped");
                }
                match watcher.registry_version() {
                    Ok(v) if v != registry => match watcher.directory() {
                        Ok(d) => {
                            tracing::info!(customers = d.len(), "customer registry changed; reloaded");
                            pipeline.set_directory(Arc::new(d));
                            registry = v;
                        }
                        Err(e) => tracing::error!(error = %e, "could not reload customers"),
                    },
                    Ok(_) => {}
                    Err(e) => tracing::error!(error = %e, "could not read the registry version"),
                }
                if let Err(e) = worker.run_once(now).await {
                    tracing::error!(error = %e, "outbox worker failed");
                }
                ticks += 1;
                if !healths.is_empty() && ticks % 5 == 0 {
                    let status = super::live::Status::new(now, &pipeline.counters(), &healths);
                    if let Err(e) = status.write(&status_path) {
                        tracing::debug!(error = %e, "could not write the status file");
                    }
                }
            }
        }
    }
    for s in sources {
        s.abort();
    }
    if !healths.is_empty() {
        let status = super::live::Status::new(clock.now(), &pipeline.counters(), &healths);
        if let Err(e) = status.write(&status_path) {
            tracing::debug!(error = %e, "could not write the status file");
        }
    }
    // Finish what is due, then leave the WAL checkpointed.
    let _ = worker.run_once(clock.now()).await;
    if let Err(e) = worker.store().checkpoint() {
        tracing::warn!(error = %e, "checkpoint at shutdown failed");
    }
    tracing::info!(sent = worker.totals.sent, "stopped");
    Ok(())
}

fn log_output(o: &Output<'_>) {
    match o {
        Output::Event {
            event,
            customer,
            zone,
        } => {
            tracing::info!(customer = %customer.id, zone, event = event.kind.name(), "presence");
        }
        Output::Decision {
            customer,
            committed,
            ..
        } => match &committed.decision.outcome {
            Outcome::Act(a) => tracing::info!(
                customer = %customer.id,
                campaign = %committed.decision.campaign_id,
                channel = a.channel.as_ref().map_or("-", |c| c.0.as_str()),
                points = a.points,
                "decision"
            ),
            Outcome::Suppressed(r) => tracing::info!(
                customer = %customer.id,
                campaign = %committed.decision.campaign_id,
                reason = r.name(),
                "suppressed"
            ),
        },
    }
}

/// Starts one source task feeding `tx`, paced by the wall clock.
fn spawn_source(
    source: SourceConfig,
    config: &Config,
    clock: Arc<dyn Clock>,
    tx: mpsc::Sender<Observation>,
) -> Result<tokio::task::JoinHandle<()>, Error> {
    let layout = config.layout.clone();
    match source {
        SourceConfig::Sim {
            shoppers_per_hour,
            seed,
            opted_in_share,
            customers,
        } => {
            let sim_customers = super::demo::sim_customers(&customers)?
                .into_iter()
                .map(|(_, c)| c)
                .collect::<Vec<SimCustomer>>();
            Ok(tokio::spawn(async move {
                let mut hour = 0u64;
                loop {
                    let start = clock.now();
                    let cfg = SimConfig {
                        seed: seed.wrapping_add(hour),
                        shoppers: shoppers_per_hour,
                        start,
                        duration: Duration::from_secs(3600),
                        opted_in_share,
                        ..SimConfig::default()
                    };
                    let sim = match Simulator::new(cfg, layout.clone(), sim_customers.clone()) {
                        Ok(sim) => sim,
                        Err(e) => {
                            tracing::error!(error = %e, "simulator source cannot start");
                            return;
                        }
                    };
                    for obs in sim {
                        if !pace_and_send(&*clock, obs.at(), obs, &tx).await {
                            return;
                        }
                        if clock.now().since(start) >= Duration::from_secs(3600) {
                            break;
                        }
                    }
                    hour += 1;
                }
            }))
        }
        SourceConfig::Replay { file } => {
            let f = std::fs::File::open(&file).map_err(|e| Error::io(&file, e))?;
            Ok(tokio::spawn(async move {
                let mut reader =
                    crate::source::replay::Reader::new(std::io::BufReader::new(f), &layout);
                let mut shift = None;
                while let Some(Ok(mut obs)) = reader.next() {
                    // A recording is replayed as if it started now.
                    let shift = *shift.get_or_insert_with(|| clock.now().0 - obs.at().0);
                    let at = Timestamp(obs.at().0 + shift);
                    match &mut obs {
                        Observation::Ble(s) => s.at = at,
                        Observation::Wifi(w) => w.at = at,
                    }
                    if !pace_and_send(&*clock, at, obs, &tx).await {
                        return;
                    }
                }
                tracing::info!(file = %file.display(), stats = ?reader.stats(), "replay source finished");
            }))
        }
        SourceConfig::Ble(_) | SourceConfig::Wifi(_) => {
            Err(Error::Usage("live sources are started by app::live".into()))
        }
    }
}

/// Sleeps until `at` on `clock`, then sends; false when the pipeline is gone.
async fn pace_and_send(
    clock: &dyn Clock,
    at: Timestamp,
    obs: Observation,
    tx: &mpsc::Sender<Observation>,
) -> bool {
    let wait = at.since(clock.now());
    if !wait.is_zero() {
        tokio::time::sleep(wait).await;
    }
    match tx.try_send(obs) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Full(_)) => {
            tracing::debug!("observation queue full; dropped one");
            true
        }
        Err(mpsc::error::TrySendError::Closed(_)) => false,
    }
}

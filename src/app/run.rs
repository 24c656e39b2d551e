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

use super::{Clock, Error, Output, database_path, open_database, worker};
use crate::config::{Config, SourceConfig};
use crate::core::campaign::Outcome;
use crate::core::clock_guard::{ClockGuard, Distrust};
use crate::core::types::Observation;
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
    let loaded = super::load_registry(&store, &config, clock.now())?;
    tracing::info!(customers = loaded.directory.len(), rotating = loaded.rotating.len(), db = %db.display(), "starting");
    let mut pipeline = super::pipeline(&config, hasher, loaded, store);
    let mut worker = worker(&config, &db, console)?;
    let watcher = crate::store::Store::open(&db)?;

    let (tx, mut rx) = mpsc::channel::<Observation>(QUEUE);
    let mut sources = Vec::new();
    for s in &config.daemon.sources {
        sources.push(spawn_source(s.clone(), &config, clock.clone(), tx.clone())?);
    }
    drop(tx);

    let mut sink = |o: Output<'_>| log_output(&o);
    let mut guard = ClockGuard::new(config.daemon.clock.max_jump, config.daemon.clock.settle);
    let mut trusted = check_clock(&mut guard, &*clock, None);
    pipeline.set_clock_trusted(trusted);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    let mut sources_done = false;
    loop {
        // Every turn, before anything can be decided: a jump must not slip
        // through between two ticks.
        let t = check_clock(&mut guard, &*clock, Some(trusted));
        if t != trusted {
            trusted = t;
            pipeline.set_clock_trusted(trusted);
        }
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
                    Ok(v) if v != registry => match super::load_registry(&watcher, &config, now) {
                        Ok(r) => {
                            tracing::info!(customers = r.directory.len(), "customer registry changed; reloaded");
                            pipeline.set_directory(r.directory);
                            pipeline.set_rotating(r.rotating, config.daemon.privacy.app);
                            registry = v;
                        }
                        Err(e) => tracing::error!(error = %e, "could not reload customers"),
                    },
                    Ok(_) => {}
                    Err(e) => tracing::error!(error = %e, "could not read the registry version"),
                }
                // Nothing goes out on an untrustworthy clock: the messages
                // wait, and their time to live is judged once it is right.
                if !trusted {
                    continue;
                }
                if let Err(e) = worker.run_once(now).await {
                    tracing::error!(error = %e, "outbox worker failed");
                }
            }
        }
    }
    for s in sources {
        s.abort();
    }
    // Finish what is due, then leave the WAL checkpointed.
    if trusted {
        let _ = worker.run_once(clock.now()).await;
    }
    if let Err(e) = worker.store().checkpoint() {
        tracing::warn!(error = %e, "checkpoint at shutdown failed");
    }
    tracing::info!(sent = worker.totals.sent, "stopped");
    Ok(())
}

/// Samples the clocks; logs when trust changes (once, not every second).
fn check_clock(guard: &mut ClockGuard, clock: &dyn Clock, was: Option<bool>) -> bool {
    match guard.observe(clock.sample()) {
        Ok(()) => {
            if was != Some(true) {
                tracing::info!("wall clock trusted; deciding and sending");
            }
            true
        }
        Err(why) => {
            if was != Some(false) {
                match why {
                    Distrust::Unsynchronized => {
                        tracing::warn!(
                            "wall clock not synchronised (NTP); holding decisions and messages"
                        );
                    }
                    Distrust::Jumped { by_ms } => {
                        tracing::warn!(
                            jump_s = by_ms / 1000,
                            "wall clock jumped; holding decisions and messages until it is steady"
                        );
                    }
                }
            }
            false
        }
    }
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
                    let mono = clock.monotonic();
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
                        let due = mono + obs.at().since(start);
                        if !pace_and_send(&*clock, due, obs, &tx).await {
                            return;
                        }
                        if clock.monotonic().saturating_sub(mono) >= Duration::from_secs(3600) {
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
                // A recording plays as if it started now, at its own pace.
                let mut first = None;
                let mono = clock.monotonic();
                while let Some(Ok(obs)) = reader.next() {
                    let t0 = *first.get_or_insert(obs.at());
                    if !pace_and_send(&*clock, mono + obs.at().since(t0), obs, &tx).await {
                        return;
                    }
                }
                tracing::info!(file = %file.display(), stats = ?reader.stats(), "replay source finished");
            }))
        }
    }
}

/// Sleeps until `due` on `clock`'s monotonic time, stamps the observation
/// with the wall clock as a radio would, then sends; false when the
/// pipeline is gone.
async fn pace_and_send(
    clock: &dyn Clock,
    due: Duration,
    mut obs: Observation,
    tx: &mpsc::Sender<Observation>,
) -> bool {
    let wait = due.saturating_sub(clock.monotonic());
    if !wait.is_zero() {
        tokio::time::sleep(wait).await;
    }
    let now = clock.now();
    match &mut obs {
        Observation::Ble(s) => s.at = now,
        Observation::Wifi(w) => w.at = now,
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

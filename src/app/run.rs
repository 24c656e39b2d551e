//! `nearcast run`: the daemon. Sources feed a channel; one task owns the
//! pipeline (and the database's write connection), sleeping until the next
//! observation or presence timer; the outbox worker is a task of its own
//! on its own connection, so a slow provider never holds up sensing. It
//! sleeps until its next due row, its channels' pace allows, the pipeline
//! queues something, or the clock becomes trustworthy.
//! Registry changes made by the CLI (import, opt-out, erasure) are picked
//! up within a second. The shutdown signal is passed in, so tests pass
//! their own.

use std::future::Future;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, mpsc, watch};

use super::{Error, Output, database_path, open_database, worker};
use crate::channel::ChannelLimits;
use crate::channel::{Adapter, Worker};
use crate::clock::{Clock, ClockStatus, SyncState};
use crate::config::Config;
use crate::core::campaign::Outcome;
use crate::core::clock_guard::{ClockGuard, Distrust};
use crate::core::types::Observation;

/// How many observations may wait between the sources and the pipeline;
/// beyond that, new ones are dropped and counted (the radio keeps talking).
const QUEUE: usize = 8192;

/// How many events may wait in memory while the database refuses writes
/// (a full disk), a few hundred bytes each; beyond that the oldest go.
pub const HOLD: usize = 4096;

/// First and longest wait between attempts to write to a database that
/// refuses (the held decisions, the outbox worker's rounds).
const STORAGE_RETRY: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(60));

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
    let (reload_tx, reload_rx) = mpsc::channel(4);
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(mut hup) => {
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    if reload_tx.send(()).await.is_err() {
                        break;
                    }
                }
            });
        }
        Err(e) => tracing::warn!(error = %e, "cannot listen for SIGHUP; reload needs a restart"),
    }
    run_with_reload(config, db, clock, console, shutdown, reload_rx).await
}

/// [`run`], reloading the configuration from `config.dir` whenever
/// `reloads` yields (SIGHUP in production; tests send their own).
///
/// # Errors
/// Database failures at start; config or IO failures of a source.
pub async fn run_with_reload(
    mut config: Config,
    db: Option<PathBuf>,
    clock: Arc<dyn Clock>,
    console: Arc<Mutex<dyn Write + Send>>,
    shutdown: impl Future<Output = ()>,
    mut reloads: mpsc::Receiver<()>,
) -> Result<(), Error> {
    let (store, hasher) = open_database(&config, db.as_deref())?;
    let db = database_path(&config, db.as_deref());
    let mut registry = store.registry_version()?;
    let loaded = super::load_registry(&store, &config, clock.now())?;
    tracing::info!(customers = loaded.directory.len(), rotating = loaded.rotating.len(), db = %db.display(), "starting");
    for m in config.missing_secrets(&crate::credentials::ProcessEnv) {
        tracing::error!("secret missing: {m}");
    }
    let api_hasher = hasher.clone();
    let mut pipeline = super::pipeline(&config, hasher, loaded, store).with_holding(HOLD);
    let mut held_retry = crate::source::health::Backoff::new(STORAGE_RETRY.0, STORAGE_RETRY.1);
    let mut next_held_retry = Duration::ZERO;
    let mut worker = worker(&config, &db, console.clone())?;
    let metrics = Arc::new(crate::metrics::Metrics::default());
    worker.metrics = metrics.clone();
    let mut watcher = crate::store::Store::open(&db)?;

    let (tx, mut rx) = mpsc::channel::<Observation>(QUEUE);
    let mut sources = Vec::new();
    // Live sources (BLE, Wi-Fi) report their health through the status file.
    let mut healths = Vec::new();
    let mut scanners_of = Vec::new();
    let mut remote = Vec::new();
    for s in &config.daemon.sources {
        let running = super::sources::spawn(s, &config.layout, clock.clone(), tx.clone())?;
        sources.push(running.task);
        scanners_of.extend(running.scanners);
        healths.extend(running.health);
        remote.extend(running.nodes);
    }
    drop(tx);
    let api = match &config.daemon.api {
        Some(api) => {
            Some(start_api(api, &config, &db, api_hasher, &clock, &metrics, &healths).await?)
        }
        None => None,
    };
    let status_path = super::live::status_path(&db);
    let mut ticks = 0u64;

    let mut sink = |o: Output<'_>| log_output(&o);
    let mut guard = ClockGuard::new(config.daemon.clock.max_jump, config.daemon.clock.settle);
    let mut clock_status = check_clock(&mut guard, &*clock, None);
    let mut trusted = clock_status.trusted;
    metrics.set_clock(clock_status.clone());
    pipeline.set_clock_trusted(trusted);
    let (trusted_tx, trusted_rx) = watch::channel(trusted);
    let (control, control_rx) = mpsc::channel(4);
    let queued = Arc::new(Notify::new());
    let mut messages = pipeline.counters().messages;
    let delivery = tokio::spawn(drive(
        worker,
        clock.clone(),
        config.daemon.outbox.poll,
        control_rx,
        queued.clone(),
        trusted_rx,
        metrics.clone(),
    ));
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    let mut sources_done = false;
    let mut reloads_open = true;
    let watchdog = sd_notify::watchdog_enabled().map(|d| d / 2);
    let mut last_ping = clock.monotonic();
    let mut last_purge: Option<Duration> = None;
    notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status("running"),
    ]);
    loop {
        // Every turn, before anything can be decided: a jump must not slip
        // through between two ticks.
        let c = check_clock(&mut guard, &*clock, Some(&clock_status));
        if c != clock_status {
            metrics.set_clock(c.clone());
            clock_status = c;
        }
        if clock_status.trusted != trusted {
            trusted = clock_status.trusted;
            pipeline.set_clock_trusted(trusted);
            trusted_tx.send_replace(trusted);
        }
        let m = pipeline.counters().messages;
        if m != messages {
            messages = m;
            queued.notify_one();
        }
        let now = clock.now();
        let timer = pipeline.poll_timeout().map(|t| t.since(now));
        tokio::select! {
            () = &mut shutdown => break,
            r = reloads.recv(), if reloads_open => match r {
                None => reloads_open = false,
                Some(()) => {
                    notify(&[sd_notify::NotifyState::Reloading]);
                    if let Ok(m) = sd_notify::NotifyState::monotonic_usec_now() {
                        notify(&[m]);
                    }
                    match crate::config::load(&config.dir) {
                        Ok(new) => {
                            if new.daemon.database != config.daemon.database || new.daemon.sources != config.daemon.sources {
                                tracing::warn!("the database and sources take effect at the next restart");
                            }
                            match super::adapters(&new, &console) {
                                Ok(adapters) => {
                                    let c = Control::Reconfigure(new.engine.clone(), new.layout.store_name.clone(), adapters, super::limits(&new));
                                    if control.send(c).await.is_err() {
                                        tracing::error!("the outbox worker has stopped");
                                    }
                                }
                                Err(e) => tracing::error!(error = %e, "channels could not be rebuilt; keeping the old ones"),
                            }
                            pipeline.reconfigure(new.layout.clone(), new.engine.clone());
                            tracing::info!(campaigns = new.engine.campaigns.len(), zones = new.layout.zones.len(), "configuration reloaded");
                            config = new;
                        }
                        Err(e) => {
                            tracing::error!("configuration refused; keeping the last good one:\n{e}");
                        }
                    }
                    notify(&[sd_notify::NotifyState::Ready]);
                }
            },
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
                // The watchdog is fed from this loop, so a stuck pipeline
                // stops feeding it and systemd restarts the daemon.
                let mono = clock.monotonic();
                if watchdog.is_some_and(|w| mono.saturating_sub(last_ping) >= w) {
                    notify(&[sd_notify::NotifyState::Watchdog]);
                    last_ping = mono;
                }
                if trusted && last_purge.is_none_or(|p| mono.saturating_sub(p) >= Duration::from_secs(3600)) {
                    last_purge = Some(mono);
                    match watcher.purge(now.saturating_sub(config.daemon.privacy.retention)) {
                        Ok(p) if p != crate::store::Purged::default() => {
                            tracing::info!(visits = p.visits, decisions = p.decisions, messages = p.messages, "retention: deleted old records");
                        }
                        Ok(_) => {}
                        Err(e) => tracing::error!(error = %e, "retention purge failed"),
                    }
                }
                // An adapter its source is recovering, a node offline or
                // behind an unreachable broker hears nothing: presence holds
                // the zones that depend on it instead of guessing.
                for (scanner, down) in &scanners_of {
                    pipeline.set_scanner_down(*scanner, down(), now);
                }
                if let Err(e) = pipeline.advance(now, &mut sink) {
                    tracing::error!(error = %e, "could not record decisions; the event is dropped");
                }
                // Decisions held while the database refused writes: tried
                // again with backoff (the pipeline logs the way back).
                if trusted && pipeline.held() > 0 && mono >= next_held_retry {
                    match pipeline.retry_held(now, &mut sink) {
                        Ok(()) => held_retry.reset(),
                        Err(e) => {
                            let wait = held_retry.next().unwrap_or(STORAGE_RETRY.1);
                            tracing::debug!(error = %e, held = pipeline.held(), retry_in_ms = crate::core::types::millis(wait), "held decisions still wait");
                            next_held_retry = mono.saturating_add(wait);
                        }
                    }
                }
                metrics.set_pipeline(&pipeline.counters());
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
                ticks += 1;
                if ticks % 5 == 0 {
                    write_status(&status_path, now, &pipeline, (&healths, &remote), &clock_status);
                }
            }
        }
    }
    notify(&[sd_notify::NotifyState::Stopping]);
    for s in sources {
        s.abort();
    }
    if trusted && pipeline.held() > 0 {
        let _ = pipeline.retry_held(clock.now(), &mut sink);
        if pipeline.held() > 0 {
            tracing::error!(
                held = pipeline.held(),
                "stopping with decisions the database never took: they are lost"
            );
        }
    }
    if let Some((stop, task)) = api {
        // Requests in flight finish; then the listener is gone.
        let _ = stop.send(());
        if let Err(e) = task.await {
            tracing::warn!(error = %e, "API task ended abnormally");
        }
    }
    write_status(
        &status_path,
        clock.now(),
        &pipeline,
        (&healths, &remote),
        &clock_status,
    );
    // The worker finishes what is in flight; then what is due goes out,
    // and the WAL is left checkpointed.
    drop(control);
    let mut worker = match delivery.await {
        Ok(w) => w,
        Err(e) => {
            tracing::error!(error = %e, "the outbox worker failed");
            return Ok(());
        }
    };
    if trusted && let Err(e) = worker.run_once(clock.now()).await {
        tracing::error!(error = %e, "outbox worker failed");
    }
    if let Err(e) = worker.store().checkpoint() {
        tracing::warn!(error = %e, "checkpoint at shutdown failed");
    }
    tracing::info!(sent = worker.totals.sent, "stopped");
    Ok(())
}

/// What the daemon tells its outbox worker.
enum Control {
    /// A reloaded configuration: campaigns and messages, the store's name,
    /// the channels' adapters and pace.
    Reconfigure(
        Arc<crate::core::campaign::Engine>,
        String,
        std::collections::HashMap<String, Adapter>,
        std::collections::HashMap<String, ChannelLimits>,
    ),
}

/// The outbox worker's task: sends whenever something is due and the
/// clock is trustworthy, until `control` closes; returns the worker. A
/// database that refuses (a full disk) is retried with backoff, logged
/// when it starts and when it ends, and counted in `metrics`.
async fn drive(
    mut worker: Worker,
    clock: Arc<dyn Clock>,
    poll: Duration,
    mut control: mpsc::Receiver<Control>,
    queued: Arc<Notify>,
    mut trusted: watch::Receiver<bool>,
    metrics: Arc<crate::metrics::Metrics>,
) -> Worker {
    let mut backoff = crate::source::health::Backoff::new(STORAGE_RETRY.0, STORAGE_RETRY.1);
    let mut failing = false;
    loop {
        let mut wait = poll;
        // Nothing goes out on an untrustworthy clock: the messages wait,
        // and their time to live is judged once it is right.
        if *trusted.borrow_and_update() {
            let round = async {
                worker.run_once(clock.now()).await?;
                let now = clock.now();
                Ok::<_, crate::channel::Error>(worker.next_due(now)?.map(|t| t.since(now)))
            };
            match round.await {
                Ok(next) => {
                    if failing {
                        failing = false;
                        backoff.reset();
                        tracing::info!("outbox: the database takes writes again; sending");
                    }
                    if let Some(next) = next {
                        wait = wait.min(next);
                    }
                }
                Err(e) => {
                    metrics.note_storage_failure();
                    wait = backoff.next().unwrap_or(STORAGE_RETRY.1);
                    if failing {
                        tracing::debug!(error = %e, retry_in_ms = crate::core::types::millis(wait), "outbox worker still failing");
                    } else {
                        failing = true;
                        tracing::error!(error = %e, "outbox worker cannot use the database; trying again with backoff (up to a minute)");
                    }
                }
            }
        }
        tokio::select! {
            c = control.recv() => match c {
                None => break,
                Some(Control::Reconfigure(engine, name, adapters, limits)) => {
                    worker.reconfigure(engine, name, adapters, limits);
                }
            },
            () = queued.notified(), if !failing => {}
            r = trusted.changed() => if r.is_err() { break },
            () = tokio::time::sleep(wait) => {}
        }
    }
    worker
}

/// Binds the local API and serves it on its own task until the returned
/// sender fires.
async fn start_api(
    settings: &crate::api::ApiSettings,
    config: &Config,
    db: &std::path::Path,
    hasher: crate::core::identity::Hasher,
    clock: &Arc<dyn Clock>,
    metrics: &Arc<crate::metrics::Metrics>,
    healths: &[Arc<crate::source::health::Health>],
) -> Result<
    (
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    ),
    Error,
> {
    let listener = crate::api::bind(settings.bind).await.map_err(|e| {
        Error::Usage(format!(
            "the local API cannot listen on {}: {e}; change [api] bind in nearcast.toml",
            settings.bind
        ))
    })?;
    if settings.token.is_none() {
        tracing::warn!("[api] has no token: the /v1 calls are refused");
    }
    if let Some(w) = crate::api::exposure_warning(settings.bind) {
        tracing::warn!("{w}");
    }
    let api = Arc::new(crate::api::Api::new(
        crate::store::Store::open(db)?,
        hasher,
        settings.clone(),
        config.daemon.channels.clone(),
        Arc::new(crate::credentials::ProcessEnv),
        clock.clone(),
        metrics.clone(),
        healths.to_vec(),
    ));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tracing::info!(bind = %settings.bind, "local API listening");
    let task = tokio::spawn(async move {
        let shutdown = async {
            let _ = stopped.await;
        };
        if let Err(e) = crate::api::serve(listener, api, shutdown).await {
            tracing::error!(error = %e, "local API stopped");
        }
    });
    Ok((stop, task))
}

/// Tells systemd (when started by it with `Type=notify`); a no-op otherwise.
/// Writes the status file `stats` reads; a failure only costs the next
/// `stats` its live part.
fn write_status<L: crate::core::campaign::Ledger>(
    path: &std::path::Path,
    now: crate::core::types::Timestamp,
    pipeline: &super::Pipeline<L>,
    (healths, remote): (
        &[Arc<crate::source::health::Health>],
        &[Arc<crate::source::mqtt::Nodes>],
    ),
    clock: &ClockStatus,
) {
    let mut status =
        super::live::Status::new(now, &pipeline.counters(), healths, Some(clock.clone()));
    status.silent_scanners = pipeline.silent_scanners();
    status.set_remote(remote);
    if let Err(e) = status.write(path) {
        tracing::debug!(error = %e, "could not write the status file");
    }
}

fn notify(states: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

/// Samples the clocks; logs when the verdict changes (once, not every
/// second), and says why the clock is not trusted in words that cannot be
/// misread: a probe the sandbox refuses is not "NTP unsynchronised".
fn check_clock(
    guard: &mut ClockGuard,
    clock: &dyn Clock,
    was: Option<&ClockStatus>,
) -> ClockStatus {
    let sync = clock.sync_state();
    let sample = crate::core::clock_guard::ClockSample {
        wall: clock.now(),
        monotonic: clock.monotonic(),
        synchronized: sync == SyncState::Synchronized,
    };
    let status = match (guard.observe(sample), sync) {
        (Ok(()), _) => ClockStatus {
            trusted: true,
            state: "trusted".into(),
            detail: String::new(),
        },
        (Err(Distrust::Unsynchronized), SyncState::Unreadable(e)) => ClockStatus {
            trusted: false,
            state: "unreadable".into(),
            detail: format!("cannot read clock sync: {e}"),
        },
        (Err(Distrust::Unsynchronized), _) => ClockStatus {
            trusted: false,
            state: "unsynchronised".into(),
            detail: "wall clock not synchronised (NTP)".into(),
        },
        (Err(Distrust::Jumped { by_ms }), _) => ClockStatus {
            trusted: false,
            state: "jumped".into(),
            detail: format!(
                "wall clock jumped by {} s; waiting until it is steady",
                by_ms / 1000
            ),
        },
    };
    if was.is_none_or(|w| w.state != status.state) {
        if status.trusted {
            tracing::info!("wall clock trusted; deciding and sending");
        } else if status.state == "unreadable" {
            tracing::error!("{}; holding decisions and messages", status.detail);
        } else {
            tracing::warn!("{}; holding decisions and messages", status.detail);
        }
    }
    status
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

//! Starting sources: the one way every kind of `[[source]]` becomes a task
//! feeding the pipeline's queue, for the daemon, `record` and `scan`. Live
//! sources (BLE, Wi-Fi, remote scanners over MQTT) stamp what they hear with
//! the clock and report their [`Health`] and which scanners are down; the simulator and recordings are played at their own
//! pace against the clock's monotonic time, stamped with its wall time as a
//! radio would.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::Error;
use crate::clock::Clock;
use crate::core::types::{Observation, ScannerIdx};
use crate::core::zones::Layout;
use crate::credentials::ProcessEnv;
use crate::source::health::{Health, State};
use crate::source::mqtt::{self, Nodes};
use crate::source::sim::{SimConfig, SimCustomer, Simulator};
use crate::source::{Feed, SimSettings, SourceSettings, ble, wifi};

/// Whether a scanner hears nothing usable now (its adapter is recovering,
/// its node is offline, the broker is unreachable).
pub type IsDown = Box<dyn Fn() -> bool + Send + Sync>;

/// A started source.
pub struct Running {
    /// Its task.
    pub task: JoinHandle<()>,
    /// Its counters, for a live source (the status file, `/metrics`).
    pub health: Option<Arc<Health>>,
    /// The scanners it is (a BLE adapter, remote nodes), each with whether
    /// it is down now: presence then holds what depends on it.
    pub scanners: Vec<(ScannerIdx, IsDown)>,
    /// Remote scanners' health, for the status file.
    pub nodes: Option<Arc<Nodes>>,
}

/// Starts `source` feeding `tx`, stamping observations with `clock`.
///
/// # Errors
/// A simulator's customers file or a recording cannot be read.
pub fn spawn(
    source: &SourceSettings,
    layout: &Arc<Layout>,
    clock: Arc<dyn Clock>,
    tx: mpsc::Sender<Observation>,
) -> Result<Running, Error> {
    let live = |name: String| {
        let health = Arc::new(Health::new(name));
        (Feed::new(tx.clone(), health.clone()), health)
    };
    Ok(match source {
        SourceSettings::Ble(b) => {
            let (feed, health) = live(format!("ble:{}", b.adapter));
            let h = health.clone();
            Running {
                task: tokio::spawn(ble::run(b.clone(), clock, feed)),
                health: Some(health),
                scanners: vec![(b.scanner, Box::new(move || h.state() == State::Recovering))],
                nodes: None,
            }
        }
        SourceSettings::Wifi(w) => {
            let (feed, health) = live(format!("wifi:{}", w.backend.name()));
            Running {
                task: tokio::spawn(wifi::run(w.clone(), clock, feed)),
                health: Some(health),
                scanners: Vec::new(),
                nodes: None,
            }
        }
        SourceSettings::Mqtt(m) => {
            let (feed, health) = live(format!("mqtt:{}:{}", m.connection.host, m.connection.port));
            let nodes = Arc::new(Nodes::new(m, layout));
            let scanners = m
                .nodes
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    let n = nodes.clone();
                    (r.scanner, Box::new(move || n.is_down(i)) as IsDown)
                })
                .collect();
            Running {
                task: tokio::spawn(mqtt::run(
                    m.clone(),
                    layout.radio.measured_power,
                    clock,
                    feed,
                    nodes.clone(),
                    Arc::new(ProcessEnv),
                )),
                health: Some(health),
                scanners,
                nodes: Some(nodes),
            }
        }
        played => Running {
            task: spawn_played(played.clone(), layout, clock, tx)?,
            health: None,
            scanners: Vec::new(),
            nodes: None,
        },
    })
}

/// Starts the simulator or a recording feeding `tx`, paced by the wall
/// clock.
fn spawn_played(
    source: SourceSettings,
    layout: &Arc<Layout>,
    clock: Arc<dyn Clock>,
    tx: mpsc::Sender<Observation>,
) -> Result<JoinHandle<()>, Error> {
    let layout = layout.clone();
    match source {
        SourceSettings::Sim(SimSettings {
            shoppers_per_hour,
            seed,
            opted_in_share,
            customers,
        }) => {
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
        SourceSettings::Replay { file } => {
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
        SourceSettings::Ble(_) | SourceSettings::Wifi(_) | SourceSettings::Mqtt(_) => {
            Err(Error::Usage("live sources are not played".into()))
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

//! The live BLE source: one BlueZ adapter through btleplug, turned into
//! [`Sighting`]s. The only module that imports btleplug; its types are
//! converted to nearcast's here and go no further.
//!
//! - Every advertisement event (RSSI, manufacturer data, service data,
//!   service UUIDs) becomes a sighting carrying the device's whole current
//!   advertisement: btleplug reports one property per event, so a small
//!   cache per device holds the rest. TX power and name raise no event;
//!   they are read with `properties()` when a device is first seen and
//!   refreshed now and then. Devices BlueZ knew before the scan started are
//!   picked up the same way (btleplug announces them as discovered).
//! - BlueZ never signals that a device went away: absence is the presence
//!   tracker's timeout, never an event from here.
//! - A watchdog restarts the scan, with backoff, when advertisements stop
//!   for `silence`, the adapter is powered off, stops discovering or
//!   disappears, or BlueZ's bus name changes owner (a restart) or vanishes.
//!   An outage is logged once, counted in [`Health`], and never ends the
//!   daemon. The bus is watched through a plain libdbus connection on its
//!   own thread, because btleplug does not expose name ownership.
//!
//! Never logs an address: almost every device heard belongs to someone who
//! did not opt in.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use btleplug::api::{Central, CentralEvent, CentralState, Manager as _, Peripheral as _};
use btleplug::api::{PeripheralProperties, ScanFilter};
use btleplug::platform::{Adapter, Manager, PeripheralId};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use smallvec::SmallVec;
use tokio::sync::mpsc;

use super::Feed;
use super::health::{Backoff, Health, State};
use crate::clock::Clock;
use crate::core::types::{
    BdAddr, ManufacturerData, Observation, Rssi, ScannerIdx, ServiceData, Sighting, Timestamp,
    Uuid128,
};

/// Settings of one adapter (`[[source]] kind = "ble"`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BleSettings {
    /// BlueZ adapter name (`hci0`).
    pub adapter: String,
    /// The scanner (in `zones.toml`) this adapter is.
    pub scanner: ScannerIdx,
    /// No advertisement for this long: restart discovery.
    pub silence: Duration,
    /// First retry delay after an outage.
    pub retry_min: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// How often BlueZ's bus name and the adapter are checked.
    pub probe_every: Duration,
}

impl BleSettings {
    /// Defaults for `adapter` as `scanner`.
    #[must_use]
    pub fn new(adapter: &str, scanner: ScannerIdx) -> BleSettings {
        BleSettings {
            adapter: adapter.to_owned(),
            scanner,
            silence: Duration::from_secs(60),
            retry_min: Duration::from_secs(1),
            retry_max: Duration::from_secs(30),
            probe_every: Duration::from_secs(1),
        }
    }
}

/// Devices cached at most; beyond that, the ones unheard longest go.
const MAX_DEVICES: usize = 8192;
/// How often a heard device's name and TX power are read again.
const REFRESH: Duration = Duration::from_secs(30);
/// Bound on one BlueZ round trip while (re)connecting.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// What nearcast keeps about one device between events: its current
/// advertisement, in nearcast's types.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Device {
    /// Address as reported.
    pub addr: BdAddr,
    /// Last RSSI, if any was reported.
    pub rssi: Option<i16>,
    /// Advertised TX power level.
    pub tx_power: Option<i8>,
    /// Local name.
    pub name: Option<Box<str>>,
    /// Manufacturer data, by company id.
    pub manufacturer_data: SmallVec<[ManufacturerData; 1]>,
    /// Service data, by UUID.
    pub service_data: SmallVec<[ServiceData; 1]>,
    /// Service UUIDs.
    pub service_uuids: SmallVec<[Uuid128; 1]>,
}

/// An advertisement property change, without btleplug's device id.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// New RSSI.
    Rssi(i16),
    /// The whole manufacturer data map.
    Manufacturer(HashMap<u16, Vec<u8>>),
    /// The whole service data map.
    Service(HashMap<uuid::Uuid, Vec<u8>>),
    /// The advertised services.
    Services(Vec<uuid::Uuid>),
}

fn mfg(map: &HashMap<u16, Vec<u8>>) -> SmallVec<[ManufacturerData; 1]> {
    let mut v: SmallVec<[ManufacturerData; 1]> = map
        .iter()
        .map(|(company, data)| ManufacturerData {
            company: *company,
            data: data.iter().copied().collect(),
        })
        .collect();
    v.sort_by_key(|m| m.company);
    v
}

fn svc(map: &HashMap<uuid::Uuid, Vec<u8>>) -> SmallVec<[ServiceData; 1]> {
    let mut v: SmallVec<[ServiceData; 1]> = map
        .iter()
        .map(|(uuid, data)| ServiceData {
            uuid: Uuid128(uuid.as_u128()),
            data: data.iter().copied().collect(),
        })
        .collect();
    v.sort_by_key(|s| s.uuid);
    v
}

impl Device {
    /// A device as BlueZ describes it (`properties()`).
    #[must_use]
    pub fn from_properties(p: &PeripheralProperties) -> Device {
        Device {
            addr: BdAddr(p.address.into_inner()),
            rssi: p.rssi,
            tx_power: p.tx_power_level.and_then(|t| i8::try_from(t).ok()),
            name: p.local_name.as_deref().map(Box::from),
            manufacturer_data: mfg(&p.manufacturer_data),
            service_data: svc(&p.service_data),
            service_uuids: p.services.iter().map(|u| Uuid128(u.as_u128())).collect(),
        }
    }

    /// Takes a newer name and TX power from `p`, keeping the advertisement.
    pub fn refresh(&mut self, p: &PeripheralProperties) {
        self.tx_power = p.tx_power_level.and_then(|t| i8::try_from(t).ok());
        self.name = p.local_name.as_deref().map(Box::from);
    }

    /// Applies one property change.
    pub fn apply(&mut self, change: &Change) {
        match change {
            Change::Rssi(r) => self.rssi = Some(*r),
            Change::Manufacturer(m) => self.manufacturer_data = mfg(m),
            Change::Service(s) => self.service_data = svc(s),
            Change::Services(u) => {
                self.service_uuids = u.iter().map(|u| Uuid128(u.as_u128())).collect();
            }
        }
    }

    /// The sighting this device's current advertisement makes, if an RSSI
    /// was ever reported (BlueZ keeps devices it has not heard lately,
    /// without one).
    #[must_use]
    pub fn sighting(&self, at: Timestamp, scanner: ScannerIdx) -> Option<Sighting> {
        let rssi = self.rssi?;
        Some(Sighting {
            at,
            scanner,
            addr: self.addr,
            rssi: Rssi(rssi),
            tx_power: self.tx_power,
            name: self.name.clone(),
            manufacturer_data: self.manufacturer_data.clone(),
            service_data: self.service_data.clone(),
            service_uuids: self.service_uuids.clone(),
        })
    }
}

/// What btleplug reported, sorted by what the source does with it.
enum Event {
    /// A device to (re)read with `properties()`.
    Discovered(PeripheralId),
    /// A property changed.
    Changed(PeripheralId, Change),
    /// The adapter was powered off.
    PoweredOff,
    /// Nothing for us (connections, power on).
    Other,
}

fn classify(ev: CentralEvent) -> Event {
    match ev {
        CentralEvent::DeviceDiscovered(id) | CentralEvent::DeviceUpdated(id) => {
            Event::Discovered(id)
        }
        CentralEvent::RssiUpdate { id, rssi } => Event::Changed(id, Change::Rssi(rssi)),
        CentralEvent::ManufacturerDataAdvertisement {
            id,
            manufacturer_data,
        } => Event::Changed(id, Change::Manufacturer(manufacturer_data)),
        CentralEvent::ServiceDataAdvertisement { id, service_data } => {
            Event::Changed(id, Change::Service(service_data))
        }
        CentralEvent::ServicesAdvertisement { id, services } => {
            Event::Changed(id, Change::Services(services))
        }
        CentralEvent::StateUpdate(CentralState::PoweredOff) => Event::PoweredOff,
        _ => Event::Other,
    }
}

/// What the bus watcher saw.
#[derive(Clone, Debug, PartialEq, Eq)]
struct BusState {
    /// When it looked.
    taken: Instant,
    /// The unique name owning `org.bluez`; `None` when BlueZ is not running
    /// (or the bus is unreachable).
    owner: Option<String>,
    /// `(Powered, Discovering)` of the adapter; `None` when it is gone.
    adapter: Option<(bool, bool)>,
}

/// Checks BlueZ and the adapter every `every` on its own thread (libdbus'
/// blocking API), until the receiver is dropped.
fn spawn_bus_watch(adapter: String, every: Duration) -> mpsc::Receiver<BusState> {
    let (tx, rx) = mpsc::channel(1);
    let spawned = std::thread::Builder::new()
        .name(format!("nearcast-bus-{adapter}"))
        .spawn(move || {
            let mut conn: Option<dbus::blocking::Connection> = None;
            loop {
                if conn.is_none() {
                    conn = dbus::blocking::Connection::new_system().ok();
                }
                let state = match &conn {
                    Some(c) => look(c, &adapter),
                    None => BusState {
                        taken: Instant::now(),
                        owner: None,
                        adapter: None,
                    },
                };
                if state.owner.is_none() {
                    // Maybe the bus itself went away: connect afresh next time.
                    conn = None;
                }
                if tx.blocking_send(state).is_err() {
                    return;
                }
                std::thread::sleep(every);
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the BlueZ watchdog thread");
    }
    rx
}

fn look(conn: &dbus::blocking::Connection, adapter: &str) -> BusState {
    use dbus::blocking::stdintf::org_freedesktop_dbus::Properties;
    let taken = Instant::now();
    let timeout = Duration::from_secs(2);
    let bus = conn.with_proxy("org.freedesktop.DBus", "/org/freedesktop/DBus", timeout);
    let owner: Option<String> = bus
        .method_call("org.freedesktop.DBus", "GetNameOwner", ("org.bluez",))
        .ok()
        .map(|(o,): (String,)| o);
    if owner.is_none() {
        return BusState {
            taken,
            owner,
            adapter: None,
        };
    }
    let path = format!("/org/bluez/{adapter}");
    let Ok(path) = dbus::Path::new(path) else {
        return BusState {
            taken,
            owner,
            adapter: None,
        };
    };
    let a = conn.with_proxy("org.bluez", path, timeout);
    let powered: Result<bool, _> = a.get("org.bluez.Adapter1", "Powered");
    let discovering: Result<bool, _> = a.get("org.bluez.Adapter1", "Discovering");
    BusState {
        taken,
        owner,
        adapter: powered.ok().map(|p| (p, discovering.unwrap_or(false))),
    }
}

/// Runs the source until the pipeline goes away. Never returns an error:
/// whatever happens to Bluetooth, it retries.
pub async fn run(settings: BleSettings, clock: Arc<dyn Clock>, feed: Feed) {
    let health = feed.health.clone();
    let mut backoff = Backoff::new(settings.retry_min, settings.retry_max);
    let mut bus = spawn_bus_watch(settings.adapter.clone(), settings.probe_every);
    let mut manager: Option<Manager> = None;
    let adapter_name = settings.adapter.as_str();
    loop {
        let attempt = tokio::time::timeout(CALL_TIMEOUT, connect(&mut manager, adapter_name)).await;
        let why = match attempt {
            Ok(Ok((adapter, events))) => {
                Health::bump(&health.connects);
                // "Back" is when advertisements flow again (see `scan`): a
                // scan restarted into silence is still the same outage.
                if health.state() == State::Starting {
                    tracing::info!(adapter = adapter_name, "scanning");
                } else {
                    tracing::debug!(adapter = adapter_name, "scan restarted");
                }
                let why = scan(
                    &settings,
                    &adapter,
                    events,
                    &mut bus,
                    &*clock,
                    &feed,
                    &mut backoff,
                )
                .await;
                // Best effort: BlueZ refuses a second StartDiscovery from a
                // client that is still discovering.
                let _ = tokio::time::timeout(Duration::from_secs(2), adapter.stop_scan()).await;
                why
            }
            Ok(Err(why)) => Some(why),
            Err(_) => Some("bluez did not answer"),
        };
        let Some(why) = why else {
            return; // the pipeline is gone
        };
        if health.down(why) {
            tracing::warn!(
                adapter = adapter_name,
                reason = why,
                "bluetooth lost; recovering"
            );
        } else {
            Health::bump(&health.failed_attempts);
            tracing::debug!(
                adapter = adapter_name,
                reason = why,
                "bluetooth still unavailable"
            );
        }
        let wait = backoff.next().unwrap_or(settings.retry_max);
        if feed.is_closed() {
            return;
        }
        tokio::time::sleep(wait).await;
    }
}

async fn connect(
    manager: &mut Option<Manager>,
    name: &str,
) -> Result<(Adapter, BoxStream<'static, CentralEvent>), &'static str> {
    let m = match manager {
        Some(m) => m.clone(),
        None => {
            let m = Manager::new().await.map_err(|_| "no D-Bus system bus")?;
            *manager = Some(m.clone());
            m
        }
    };
    let adapters = m.adapters().await.map_err(|_| "bluez unavailable")?;
    let mut found = None;
    for a in adapters {
        let info = a.adapter_info().await.unwrap_or_default();
        if info.split_whitespace().next() == Some(name) {
            found = Some(a);
            break;
        }
    }
    let adapter = found.ok_or("adapter missing")?;
    let events = adapter.events().await.map_err(|_| "cannot subscribe")?;
    adapter
        .start_scan(ScanFilter::default())
        .await
        .map_err(|_| "cannot start discovery")?;
    Ok((adapter, events))
}

/// Reads `properties()` of one device, bounded in time.
async fn properties(adapter: &Adapter, id: &PeripheralId) -> Option<PeripheralProperties> {
    let read = async {
        let p = adapter.peripheral(id).await.ok()?;
        p.properties().await.ok().flatten()
    };
    tokio::time::timeout(Duration::from_secs(2), read)
        .await
        .ok()
        .flatten()
}

struct Cached {
    device: Device,
    refreshed: Instant,
    heard: Instant,
}

/// Scans until something goes wrong (`Some(why)`) or the pipeline is gone
/// (`None`).
async fn scan(
    settings: &BleSettings,
    adapter: &Adapter,
    mut events: BoxStream<'static, CentralEvent>,
    bus: &mut mpsc::Receiver<BusState>,
    clock: &dyn Clock,
    feed: &Feed,
    backoff: &mut Backoff,
) -> Option<&'static str> {
    let started = Instant::now();
    let mut heard = false;
    let mut owner: Option<String> = None;
    let mut devices: HashMap<PeripheralId, Cached> = HashMap::new();
    let mut last_advert = tokio::time::Instant::now();
    loop {
        let silent_until = last_advert + settings.silence;
        tokio::select! {
            ev = events.next() => {
                let Some(ev) = ev else { return Some("event stream ended") };
                Health::bump(&feed.health.events);
                let (id, change) = match classify(ev) {
                    Event::Discovered(id) => (id, None),
                    Event::Changed(id, c) => (id, Some(c)),
                    Event::PoweredOff => return Some("adapter powered off"),
                    Event::Other => continue,
                };
                let t = Instant::now();
                let stale = devices.get(&id).is_none_or(|c| t.duration_since(c.refreshed) >= REFRESH);
                if change.is_none() || stale {
                    // First sight (or a while since): read what no event carries.
                    match properties(adapter, &id).await {
                        Some(p) => match devices.get_mut(&id) {
                            Some(c) if change.is_some() => {
                                c.device.refresh(&p);
                                c.refreshed = t;
                            }
                            _ => {
                                devices.insert(id.clone(), Cached {
                                    device: Device::from_properties(&p),
                                    refreshed: t,
                                    heard: t,
                                });
                            }
                        },
                        None if !devices.contains_key(&id) => continue,
                        None => {}
                    }
                }
                let Some(cached) = devices.get_mut(&id) else { continue };
                if let Some(c) = &change {
                    cached.device.apply(c);
                }
                cached.heard = t;
                if let Some(s) = cached.device.sighting(clock.now(), settings.scanner) {
                    // A device BlueZ already knew (announced when the scan
                    // starts) is picked up, but only a property change is an
                    // advertisement heard now: that alone feeds the silence
                    // watchdog and ends an outage.
                    let fresh = change.is_some();
                    if fresh {
                        last_advert = tokio::time::Instant::now();
                    }
                    if fresh && !heard {
                        heard = true;
                        backoff.reset();
                        if feed.health.running() {
                            tracing::info!(adapter = settings.adapter.as_str(), "bluetooth back; hearing advertisements again");
                        }
                    }
                    if !feed.send(Observation::Ble(s)) {
                        return None;
                    }
                }
                if devices.len() > MAX_DEVICES {
                    devices.retain(|_, c| t.duration_since(c.heard) < Duration::from_secs(60));
                    if devices.len() > MAX_DEVICES {
                        devices.clear();
                    }
                }
            }
            state = bus.recv() => {
                let Some(state) = state else { return Some("watchdog stopped") };
                if state.taken < started {
                    continue; // looked before this scan began
                }
                if let Some(why) = judge(&state, &mut owner) {
                    return Some(why);
                }
            }
            () = tokio::time::sleep_until(silent_until) => return Some("no advertisements"),
        }
        if feed.is_closed() {
            return None;
        }
    }
}

/// Whether the bus watcher's view means the scan is broken. Remembers the
/// first owner of `org.bluez` seen during this scan in `owner`.
fn judge(state: &BusState, owner: &mut Option<String>) -> Option<&'static str> {
    let Some(now_owner) = &state.owner else {
        return Some("bluez gone");
    };
    match owner {
        Some(o) if o != now_owner => return Some("bluez restarted"),
        Some(_) => {}
        None => *owner = Some(now_owner.clone()),
    }
    match state.adapter {
        None => Some("adapter removed"),
        Some((false, _)) => Some("adapter powered off"),
        Some((true, false)) => Some("discovery stopped"),
        Some((true, true)) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(owner: Option<&str>, adapter: Option<(bool, bool)>) -> BusState {
        BusState {
            taken: Instant::now(),
            owner: owner.map(str::to_owned),
            adapter,
        }
    }

    #[test]
    fn the_watchdog_names_what_broke() {
        let mut owner = None;
        assert_eq!(
            judge(&state(Some(":1.5"), Some((true, true))), &mut owner),
            None
        );
        assert_eq!(owner.as_deref(), Some(":1.5"));
        assert_eq!(
            judge(&state(Some(":1.9"), Some((true, true))), &mut owner),
            Some("bluez restarted")
        );
        assert_eq!(judge(&state(None, None), &mut owner), Some("bluez gone"));
        assert_eq!(
            judge(&state(Some(":1.5"), None), &mut owner),
            Some("adapter removed")
        );
        assert_eq!(
            judge(&state(Some(":1.5"), Some((false, false))), &mut owner),
            Some("adapter powered off")
        );
        assert_eq!(
            judge(&state(Some(":1.5"), Some((true, false))), &mut owner),
            Some("discovery stopped")
        );
    }

    #[test]
    fn events_update_the_cached_advertisement() {
        let mut p = PeripheralProperties {
            address: btleplug::api::BDAddr::from([0xC4, 0x7C, 0x8D, 0x6A, 0x11, 0x02]),
            tx_power_level: Some(-8),
            local_name: Some("tag".into()),
            ..PeripheralProperties::default()
        };
        p.manufacturer_data.insert(0x0118, vec![0xBE, 0xAC]);
        p.manufacturer_data.insert(76, vec![0x02, 0x15]);
        let mut d = Device::from_properties(&p);
        // No RSSI yet: BlueZ remembers the device but has not heard it.
        assert_eq!(d.sighting(Timestamp(5), ScannerIdx(1)), None);
        d.apply(&Change::Rssi(-61));
        let eddystone = uuid::Uuid::from_u128(Uuid128::EDDYSTONE.0);
        d.apply(&Change::Service(HashMap::from([(
            eddystone,
            vec![0x00, 0xE8],
        )])));
        d.apply(&Change::Services(vec![eddystone]));
        let s = d.sighting(Timestamp(5), ScannerIdx(1)).unwrap();
        assert_eq!(s.addr.to_string(), "C4:7C:8D:6A:11:02");
        assert_eq!(
            (s.rssi, s.tx_power, s.name.as_deref()),
            (Rssi(-61), Some(-8), Some("tag"))
        );
        let companies: Vec<u16> = s.manufacturer_data.iter().map(|m| m.company).collect();
        assert_eq!(companies, [76, 0x0118], "sorted by company id");
        assert_eq!(s.service_data[0].uuid, Uuid128::EDDYSTONE);
        assert_eq!(&s.service_data[0].data[..], [0x00, 0xE8]);
        assert_eq!(&s.service_uuids[..], [Uuid128::EDDYSTONE]);
        // A new manufacturer map replaces the old one whole.
        d.apply(&Change::Manufacturer(HashMap::from([(76, vec![0x12])])));
        let s = d.sighting(Timestamp(6), ScannerIdx(1)).unwrap();
        assert_eq!(s.manufacturer_data.len(), 1);
        assert_eq!(&s.manufacturer_data[0].data[..], [0x12]);
    }
}

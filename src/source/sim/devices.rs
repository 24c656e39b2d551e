//! What each simulated device advertises: opted-in phones showing an
//! identity, bystanders' phones and gadgets, the store's own beacons and
//! terminals, and broken frames; with the queue of their events. Beacon
//! frames are laid out by `core::advert`'s encoder.

use super::*;

/// An event in the simulation's queue; `seq` breaks ties in scheduling order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Due {
    pub(super) at: i64,
    pub(super) seq: u64,
    pub(super) device: usize,
    pub(super) what: What,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum What {
    Advert,
    Joined,
    Left,
}

#[derive(Clone, Copy, Debug)]
pub(super) enum Carrier {
    Fixed((f64, f64)),
    Shopper(usize),
}

/// The data sections of an advertisement.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct Sections {
    pub(super) mfg: SmallVec<[ManufacturerData; 1]>,
    pub(super) svc: SmallVec<[ServiceData; 1]>,
    pub(super) uuids: SmallVec<[Uuid128; 1]>,
    pub(super) tx_power: Option<i8>,
    pub(super) name: Option<Box<str>>,
}

impl Sections {
    /// Adds a beacon frame, laid out by `core::advert`.
    pub(super) fn add(&mut self, frame: &Frame) {
        match frame.encode() {
            Some(Section::Manufacturer(m)) => self.mfg.push(m),
            Some(Section::Service(d)) => {
                self.uuids.push(d.uuid);
                self.svc.push(d);
            }
            None => {}
        }
    }

    pub(super) fn fill(&self, s: &mut Sighting) {
        s.manufacturer_data.clone_from(&self.mfg);
        s.service_data.clone_from(&self.svc);
        s.service_uuids.clone_from(&self.uuids);
        s.tx_power = self.tx_power;
        s.name.clone_from(&self.name);
    }
}

/// What a device advertises.
#[derive(Clone, Debug)]
pub(super) enum Kind {
    /// An opted-in customer's phone showing one of their identities.
    Identity(Identity),
    /// Apple continuity messages, new with every address.
    Chatter(u8),
    /// The same sections every time (other apps' iBeacons, Fast Pair,
    /// Swift Pair, wearables).
    Static(Box<Sections>),
    /// An Eddystone tag interleaving URL and TLM frames.
    EddystoneTag,
    /// Truncated or nonsensical frames, different every time.
    Junk,
}

/// The address and interval of one of the store's own devices.
#[derive(Clone, Copy, Debug)]
pub(super) struct Fixed {
    pub(super) addr: BdAddr,
    pub(super) interval: i64,
}

pub(super) struct Device {
    pub(super) rng: Rng,
    pub(super) carrier: Carrier,
    pub(super) from: i64,
    pub(super) until: i64,
    pub(super) interval: i64,
    pub(super) addr: BdAddr,
    pub(super) next_rotation: Option<i64>,
    /// True RSSI at 1 m, dBm.
    pub(super) p1m: f64,
    pub(super) kind: Kind,
    pub(super) sections: Sections,
    pub(super) adv_count: u32,
    pub(super) cursor: usize,
    /// One per scanner, made at the first advertisement.
    pub(super) links: Vec<Link>,
}

impl Device {
    /// Prepares the sections of an advertisement at `at`.
    pub(super) fn advertise(&mut self, at: i64) {
        self.adv_count = self.adv_count.wrapping_add(1);
        if let Some(next) = self.next_rotation {
            if at >= next {
                self.addr = resolvable_address(&mut self.rng);
                let jitter = self.rng.i64(-60_000..=60_000);
                self.next_rotation = Some(next + ADDRESS_ROTATION_MS + jitter);
                if let Kind::Chatter(_) = self.kind {
                    self.refresh_sections();
                }
            }
        }
        match self.kind {
            Kind::Junk => self.sections = junk(&mut self.rng),
            Kind::EddystoneTag => self.eddystone_frame(at),
            Kind::Identity(_) | Kind::Chatter(_) | Kind::Static(_) => {}
        }
    }

    /// The URL and TLM frames alternate, as Eddystone beacons send them.
    pub(super) fn eddystone_frame(&mut self, at: i64) {
        #[allow(clippy::cast_possible_truncation)]
        let ranging = (self.p1m as i8).saturating_add(41);
        let frame = if self.adv_count % 2 == 0 {
            Frame::EddystoneUrl {
                ranging,
                url: "https://www.example.com/".into(),
            }
        } else {
            let uptime_ds = u32::try_from((at - self.from).max(0) / 100).unwrap_or(u32::MAX);
            Frame::EddystoneTlm {
                battery_mv: 3000,
                temperature: Some(23.5),
                adv_count: self.adv_count,
                uptime_ds,
            }
        };
        self.sections = Sections::default();
        self.sections.add(&frame);
    }

    pub(super) fn refresh_sections(&mut self) {
        #[allow(clippy::cast_possible_truncation)]
        let p1m = self.p1m as i8;
        self.sections = match &self.kind {
            Kind::Identity(identity) => identity_sections(identity, p1m),
            Kind::Chatter(kind) => continuity(&mut self.rng, *kind),
            Kind::Static(s) => (**s).clone(),
            Kind::EddystoneTag | Kind::Junk => Sections::default(),
        };
    }
}

/// The true RSSI at 1 m: what a beacon frame claims, else about −59 dBm.
pub(super) fn kind_p1m(kind: &Kind, rng: &mut Rng) -> i8 {
    match kind {
        Kind::Identity(Identity::Mac(_)) => DEFAULT_P1M,
        Kind::Identity(_) | Kind::Chatter(_) | Kind::EddystoneTag | Kind::Junk => rng.i8(-62..=-56),
        Kind::Static(s) => s
            .mfg
            .iter()
            .find_map(|m| match m.data.as_slice() {
                [0x02, 0x15, .., p] if m.company == APPLE && m.data.len() == 23 => {
                    Some(i8::from_ne_bytes([*p]))
                }
                _ => None,
            })
            .unwrap_or(DEFAULT_P1M),
    }
}

/// The sections an opted-in phone advertises for `identity`. A `Mac`
/// identity has none: the address itself is the identity.
pub(super) fn identity_sections(identity: &Identity, p1m: i8) -> Sections {
    let mut s = Sections::default();
    match *identity {
        Identity::IBeacon { uuid, major, minor } => s.add(&Frame::IBeacon {
            uuid,
            major,
            minor,
            measured_power: p1m,
        }),
        Identity::AltBeacon(id) => s.add(&Frame::AltBeacon {
            company: 0x0118,
            id,
            reference_rssi: p1m,
            reserved: 0,
        }),
        Identity::EddystoneUid {
            namespace,
            instance,
        } => s.add(&Frame::EddystoneUid {
            ranging: p1m.saturating_add(41),
            namespace,
            instance,
        }),
        Identity::Mac(_) => {}
    }
    s
}

/// What a bystander's phone or gadget advertises.
pub(super) fn noise_kind(rng: &mut Rng) -> Kind {
    let u = rng.f64();
    let mut s = Sections::default();
    if u < 0.50 {
        return Kind::Chatter(rng.u8(..));
    } else if u < 0.62 {
        // Google Fast Pair: a 3-byte model id under 0xFE2C.
        s.svc.push(ServiceData {
            uuid: Uuid128::from_u16(0xFE2C),
            data: random_payload(rng, 3),
        });
        s.uuids.push(Uuid128::from_u16(0xFE2C));
    } else if u < 0.70 {
        // Microsoft Swift Pair / CDP beacon under company 6.
        let mut data = Payload::from_slice(&[0x01, 0x09, 0x20, 0x02]);
        data.extend(random_payload(rng, 20));
        s.mfg.push(ManufacturerData { company: 6, data });
    } else if u < 0.80 {
        // Another app's iBeacon, with a UUID nobody here enrolled.
        let p1m = rng.i8(-62..=-56);
        s.add(&Frame::IBeacon {
            uuid: random_array(rng),
            major: rng.u16(..),
            minor: rng.u16(..),
            measured_power: p1m,
        });
    } else if u < 0.86 {
        return Kind::EddystoneTag;
    } else if u < 0.93 {
        // A wearable: a name, a service list and a TX power level.
        const NAMES: [&str; 4] = ["Charge 6", "Galaxy Watch", "JBL Flip 6", "HRM-Pro"];
        s.name = rng.choice(NAMES).map(Box::from);
        s.uuids.push(Uuid128::from_u16(0x180D));
        s.uuids.push(Uuid128::from_u16(0x180F));
        s.tx_power = Some(rng.i8(-20..=4));
    } else {
        return Kind::Junk;
    }
    Kind::Static(Box::new(s))
}

/// Apple continuity messages (Nearby Info, Handoff, Find My, proximity
/// pairing, Nearby Action): never `02 15`, so never an iBeacon.
pub(super) fn continuity(rng: &mut Rng, kind: u8) -> Sections {
    let (tag, len) = match kind % 5 {
        0 => (0x10, 5),
        1 => (0x0C, 14),
        2 => (0x12, 25),
        3 => (0x07, 25),
        _ => (0x0F, 5),
    };
    let mut data = Payload::from_slice(&[tag, len]);
    data.extend(random_payload(rng, usize::from(len)));
    let mut s = Sections::default();
    s.mfg.push(ManufacturerData {
        company: APPLE,
        data,
    });
    s
}

/// A broken advertisement: truncated beacon frames, an unknown Eddystone
/// type, a reserved company id with random bytes.
pub(super) fn junk(rng: &mut Rng) -> Sections {
    let mut s = Sections::default();
    match rng.u8(0..4) {
        0 => {
            let mut data = Payload::from_slice(&[0x02, 0x15]);
            let n = rng.usize(0..=19);
            data.extend(random_payload(rng, n));
            s.mfg.push(ManufacturerData {
                company: APPLE,
                data,
            });
        }
        1 => {
            let mut data = Payload::from_slice(&[0xBE, 0xAC]);
            let n = rng.usize(0..=20);
            data.extend(random_payload(rng, n));
            s.mfg.push(ManufacturerData {
                company: rng.u16(..),
                data,
            });
        }
        2 => {
            let mut data = Payload::from_slice(&[rng.choice([0x00, 0x40, 0x50]).unwrap_or(0x40)]);
            let n = rng.usize(0..=12);
            data.extend(random_payload(rng, n));
            s.svc.push(ServiceData {
                uuid: Uuid128::EDDYSTONE,
                data,
            });
        }
        _ => {
            let n = rng.usize(0..=27);
            s.mfg.push(ManufacturerData {
                company: 0xFFFF,
                data: random_payload(rng, n),
            });
        }
    }
    s
}

pub(super) fn random_payload(rng: &mut Rng, n: usize) -> Payload {
    (0..n).map(|_| rng.u8(..)).collect()
}

pub(super) fn random_array<const N: usize>(rng: &mut Rng) -> [u8; N] {
    let mut out = [0u8; N];
    rng.fill(&mut out);
    out
}

/// A resolvable private address: the two most significant bits are `01`.
pub(super) fn resolvable_address(rng: &mut Rng) -> BdAddr {
    let mut a: [u8; 6] = random_array(rng);
    a[0] = (a[0] & 0x3F) | 0x40;
    BdAddr(a)
}

/// A static random address: the two most significant bits are `11`.
pub(super) fn static_random_address(rng: &mut Rng) -> BdAddr {
    let mut a: [u8; 6] = random_array(rng);
    a[0] |= 0xC0;
    BdAddr(a)
}

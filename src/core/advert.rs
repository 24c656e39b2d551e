//! Beacon frame decoding: iBeacon, AltBeacon and Eddystone UID/URL/TLM/EID,
//! from a sighting's manufacturer and service data; and the inverse,
//! [`Frame::encode`], for the simulator, the tests and the benchmarks, so
//! every beacon byte nearcast makes is laid out here, next to its decoder
//! (a property test holds the two to each other).
//!
//! Pure functions of bytes. Layouts follow `formats/replay.md` (offsets are
//! within the manufacturer data after the company id, or within the Eddystone
//! service data). Anything shorter than its layout, longer than it, or with an
//! unknown prefix is counted in [`DecodeStats`] and skipped, never a panic.

use super::types::{ManufacturerData, Payload, ServiceData, Sighting, Uuid128};

/// Apple's company identifier, under which iBeacon frames are sent.
pub const APPLE: u16 = 0x004C;

/// A decoded beacon frame.
#[derive(Clone, Debug, PartialEq)]
pub enum Frame {
    /// Apple iBeacon.
    IBeacon {
        /// Proximity UUID.
        uuid: [u8; 16],
        /// Major.
        major: u16,
        /// Minor.
        minor: u16,
        /// Calibrated RSSI at 1 m, dBm.
        measured_power: i8,
    },
    /// AltBeacon (Radius Networks' open format).
    AltBeacon {
        /// The company id the frame was sent under.
        company: u16,
        /// 20-byte beacon id (usually a 16-byte UUID + 2 + 2).
        id: [u8; 20],
        /// Reference RSSI at 1 m, dBm.
        reference_rssi: i8,
        /// Manufacturer-reserved byte.
        reserved: u8,
    },
    /// Eddystone-UID.
    EddystoneUid {
        /// Calibrated TX power at 0 m, dBm.
        ranging: i8,
        /// 10-byte namespace.
        namespace: [u8; 10],
        /// 6-byte instance.
        instance: [u8; 6],
    },
    /// Eddystone-URL.
    EddystoneUrl {
        /// Calibrated TX power at 0 m, dBm.
        ranging: i8,
        /// The expanded URL.
        url: String,
    },
    /// Eddystone-TLM (unencrypted, version 0).
    EddystoneTlm {
        /// Battery voltage, mV (0 if not supported).
        battery_mv: u16,
        /// Beacon temperature in °C (8.8 fixed point), `None` if not supported (0x8000).
        temperature: Option<f32>,
        /// Advertising PDU count since boot.
        adv_count: u32,
        /// Time since boot in 0.1 s.
        uptime_ds: u32,
    },
    /// Eddystone-EID.
    EddystoneEid {
        /// Calibrated TX power at 0 m, dBm.
        ranging: i8,
        /// The 8-byte ephemeral id.
        eid: [u8; 8],
    },
}

/// The advertisement section a frame travels in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Section {
    /// Manufacturer-specific data (iBeacon, AltBeacon).
    Manufacturer(ManufacturerData),
    /// Service data under the Eddystone UUID.
    Service(ServiceData),
}

impl Section {
    /// Adds the section to `s`'s advertisement (an Eddystone frame also
    /// lists its service UUID, as beacons do).
    pub fn add_to(self, s: &mut Sighting) {
        match self {
            Section::Manufacturer(m) => s.manufacturer_data.push(m),
            Section::Service(d) => {
                if !s.service_uuids.contains(&d.uuid) {
                    s.service_uuids.push(d.uuid);
                }
                s.service_data.push(d);
            }
        }
    }
}

impl Frame {
    /// The bytes a beacon sends for this frame, laid out as [`decode`]
    /// reads them: `decode(encode(f)) == f`. `None` only for an
    /// Eddystone-URL whose URL the format cannot carry (an unknown scheme,
    /// a character outside printable ASCII, more than 17 encoded bytes).
    #[must_use]
    pub fn encode(&self) -> Option<Section> {
        let mfg = |company: u16, parts: &[&[u8]]| {
            Section::Manufacturer(ManufacturerData {
                company,
                data: parts.iter().flat_map(|p| p.iter().copied()).collect(),
            })
        };
        let eddystone = |parts: &[&[u8]]| {
            Section::Service(ServiceData {
                uuid: Uuid128::EDDYSTONE,
                data: parts.iter().flat_map(|p| p.iter().copied()).collect(),
            })
        };
        Some(match self {
            Frame::IBeacon {
                uuid,
                major,
                minor,
                measured_power,
            } => mfg(
                APPLE,
                &[
                    &[0x02, 0x15],
                    uuid,
                    &major.to_be_bytes(),
                    &minor.to_be_bytes(),
                    &measured_power.to_be_bytes(),
                ],
            ),
            Frame::AltBeacon {
                company,
                id,
                reference_rssi,
                reserved,
            } => mfg(
                *company,
                &[
                    &[0xBE, 0xAC],
                    id,
                    &reference_rssi.to_be_bytes(),
                    &[*reserved],
                ],
            ),
            Frame::EddystoneUid {
                ranging,
                namespace,
                instance,
            } => eddystone(&[
                &[0x00],
                &ranging.to_be_bytes(),
                namespace,
                instance,
                // The two reserved bytes the specification ends UID with.
                &[0x00, 0x00],
            ]),
            Frame::EddystoneUrl { ranging, url } => {
                let (scheme, body) = compress_url(url)?;
                eddystone(&[&[0x10], &ranging.to_be_bytes(), &[scheme], &body])
            }
            Frame::EddystoneTlm {
                battery_mv,
                temperature,
                adv_count,
                uptime_ds,
            } => {
                #[allow(clippy::cast_possible_truncation)]
                let temp = temperature.map_or(0x8000, |t| {
                    u16::from_be_bytes(((t * 256.0).round() as i16).to_be_bytes())
                });
                eddystone(&[
                    &[0x20, 0x00],
                    &battery_mv.to_be_bytes(),
                    &temp.to_be_bytes(),
                    &adv_count.to_be_bytes(),
                    &uptime_ds.to_be_bytes(),
                ])
            }
            Frame::EddystoneEid { ranging, eid } => {
                eddystone(&[&[0x30], &ranging.to_be_bytes(), eid])
            }
        })
    }

    /// The frame's calibrated RSSI at 1 m, when it carries one. Eddystone's
    /// ranging data is the power at 0 m; the spec puts 1 m about 41 dB lower.
    #[must_use]
    pub fn measured_power_1m(&self) -> Option<i8> {
        match *self {
            Frame::IBeacon { measured_power, .. } => Some(measured_power),
            Frame::AltBeacon { reference_rssi, .. } => Some(reference_rssi),
            Frame::EddystoneUid { ranging, .. }
            | Frame::EddystoneUrl { ranging, .. }
            | Frame::EddystoneEid { ranging, .. } => Some(ranging.saturating_sub(41)),
            Frame::EddystoneTlm { .. } => None,
        }
    }
}

/// Counts of what the decoder saw: decoded frames by kind, and rejects by why.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DecodeStats {
    /// iBeacon frames decoded.
    pub ibeacon: u64,
    /// AltBeacon frames decoded.
    pub altbeacon: u64,
    /// Eddystone frames (any type) decoded.
    pub eddystone: u64,
    /// Known prefix, fewer bytes than its layout.
    pub truncated: u64,
    /// Known prefix, more bytes than its layout.
    pub oversize: u64,
    /// A known prefix carrying an invalid value (reserved URL byte, TLM version).
    pub invalid: u64,
    /// A section with no known prefix (other manufacturers' data, continuity chatter).
    pub unknown: u64,
}

impl DecodeStats {
    /// Adds another set of counts to this one.
    pub fn merge(&mut self, o: &DecodeStats) {
        self.ibeacon += o.ibeacon;
        self.altbeacon += o.altbeacon;
        self.eddystone += o.eddystone;
        self.truncated += o.truncated;
        self.oversize += o.oversize;
        self.invalid += o.invalid;
        self.unknown += o.unknown;
    }

    /// Frames skipped for any reason.
    #[must_use]
    pub fn rejected(&self) -> u64 {
        self.truncated + self.oversize + self.invalid + self.unknown
    }
}

/// Why a section was not decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reject {
    Truncated,
    Oversize,
    Invalid,
    Unknown,
}

impl DecodeStats {
    fn count(&mut self, r: Result<&Frame, Reject>) {
        match r {
            Ok(Frame::IBeacon { .. }) => self.ibeacon += 1,
            Ok(Frame::AltBeacon { .. }) => self.altbeacon += 1,
            Ok(_) => self.eddystone += 1,
            Err(Reject::Truncated) => self.truncated += 1,
            Err(Reject::Oversize) => self.oversize += 1,
            Err(Reject::Invalid) => self.invalid += 1,
            Err(Reject::Unknown) => self.unknown += 1,
        }
    }
}

/// Decodes every frame in a sighting, calling `f` for each, and counts.
pub fn decode(sighting: &Sighting, stats: &mut DecodeStats, mut f: impl FnMut(Frame)) {
    for m in &sighting.manufacturer_data {
        let r = decode_manufacturer(m.company, &m.data);
        stats.count(r.as_ref().map_err(|e| *e));
        if let Ok(frame) = r {
            f(frame);
        }
    }
    for s in &sighting.service_data {
        if s.uuid != Uuid128::EDDYSTONE {
            stats.unknown += 1;
            continue;
        }
        let r = decode_eddystone(&s.data);
        stats.count(r.as_ref().map_err(|e| *e));
        if let Ok(frame) = r {
            f(frame);
        }
    }
}

fn exact<const N: usize>(data: &[u8]) -> Result<&[u8; N], Reject> {
    match data.len().cmp(&N) {
        std::cmp::Ordering::Less => Err(Reject::Truncated),
        std::cmp::Ordering::Greater => Err(Reject::Oversize),
        std::cmp::Ordering::Equal => data.try_into().map_err(|_| Reject::Truncated),
    }
}

fn array<const N: usize>(s: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&s[..N]);
    out
}

#[allow(clippy::cast_possible_wrap)]
const fn signed(b: u8) -> i8 {
    b as i8
}

/// Decodes manufacturer data (the bytes after the company id).
fn decode_manufacturer(company: u16, data: &[u8]) -> Result<Frame, Reject> {
    match data {
        [0x02, 0x15, ..] if company == APPLE => {
            let d = exact::<23>(data)?;
            Ok(Frame::IBeacon {
                uuid: array(&d[2..18]),
                major: u16::from_be_bytes([d[18], d[19]]),
                minor: u16::from_be_bytes([d[20], d[21]]),
                measured_power: signed(d[22]),
            })
        }
        [0xBE, 0xAC, ..] => {
            let d = exact::<24>(data)?;
            Ok(Frame::AltBeacon {
                company,
                id: array(&d[2..22]),
                reference_rssi: signed(d[22]),
                reserved: d[23],
            })
        }
        // A lone `02` or `BE` may be the start of a truncated frame.
        [0x02] if company == APPLE => Err(Reject::Truncated),
        [0xBE] => Err(Reject::Truncated),
        _ => Err(Reject::Unknown),
    }
}

/// Decodes Eddystone service data (first byte is the frame type).
fn decode_eddystone(data: &[u8]) -> Result<Frame, Reject> {
    let Some((&kind, rest)) = data.split_first() else {
        return Err(Reject::Truncated);
    };
    match kind {
        0x00 => {
            // UID: ranging + namespace(10) + instance(6), then 2 reserved bytes
            // that many beacons omit.
            if rest.len() < 17 {
                return Err(Reject::Truncated);
            }
            if rest.len() != 17 && rest.len() != 19 {
                return Err(Reject::Oversize);
            }
            Ok(Frame::EddystoneUid {
                ranging: signed(rest[0]),
                namespace: array(&rest[1..11]),
                instance: array(&rest[11..17]),
            })
        }
        0x10 => {
            // URL: ranging + scheme + at most 17 encoded bytes.
            if rest.len() < 2 {
                return Err(Reject::Truncated);
            }
            if rest.len() > 19 {
                return Err(Reject::Oversize);
            }
            let url = expand_url(rest[1], &rest[2..]).ok_or(Reject::Invalid)?;
            Ok(Frame::EddystoneUrl {
                ranging: signed(rest[0]),
                url,
            })
        }
        0x20 => {
            let d = exact::<13>(rest)?;
            if d[0] != 0x00 {
                // Version 1 is the encrypted TLM; nothing to read without the key.
                return Err(Reject::Invalid);
            }
            let raw_temp = u16::from_be_bytes([d[3], d[4]]);
            Ok(Frame::EddystoneTlm {
                battery_mv: u16::from_be_bytes([d[1], d[2]]),
                temperature: (raw_temp != 0x8000)
                    .then(|| f32::from(i16::from_be_bytes([d[3], d[4]])) / 256.0),
                adv_count: u32::from_be_bytes([d[5], d[6], d[7], d[8]]),
                uptime_ds: u32::from_be_bytes([d[9], d[10], d[11], d[12]]),
            })
        }
        0x30 => {
            let d = exact::<9>(rest)?;
            Ok(Frame::EddystoneEid {
                ranging: signed(d[0]),
                eid: array(&d[1..9]),
            })
        }
        _ => Err(Reject::Unknown),
    }
}

/// Eddystone-URL scheme prefixes, by their byte.
const SCHEMES: [&str; 4] = ["http://www.", "https://www.", "http://", "https://"];
/// Eddystone-URL text expansions, by their byte.
const EXPANSIONS: [&str; 14] = [
    ".com/", ".org/", ".edu/", ".net/", ".info/", ".biz/", ".gov/", ".com", ".org", ".edu", ".net",
    ".info", ".biz", ".gov",
];

/// The inverse of [`expand_url`]: the longest scheme and, at each place,
/// the longest expansion that matches.
fn compress_url(url: &str) -> Option<(u8, Payload)> {
    let (scheme, prefix) = (0u8..)
        .zip(SCHEMES)
        .filter(|(_, p)| url.starts_with(p))
        .max_by_key(|(_, p)| p.len())?;
    let mut rest = &url[prefix.len()..];
    let mut body = Payload::new();
    while !rest.is_empty() {
        let expansion = (0u8..)
            .zip(EXPANSIONS)
            .filter(|(_, e)| rest.starts_with(e))
            .max_by_key(|(_, e)| e.len());
        if let Some((code, e)) = expansion {
            body.push(code);
            rest = &rest[e.len()..];
        } else {
            let b = *rest.as_bytes().first()?;
            if !(0x21..=0x7E).contains(&b) {
                return None;
            }
            body.push(b);
            rest = &rest[1..];
        }
    }
    (body.len() <= 17).then_some((scheme, body))
}

/// Expands an Eddystone-URL scheme byte and encoded body.
fn expand_url(scheme: u8, body: &[u8]) -> Option<String> {
    let mut url = String::from(*SCHEMES.get(usize::from(scheme))?);
    for &b in body {
        match b {
            0x00..=0x0D => url.push_str(EXPANSIONS[usize::from(b)]),
            0x21..=0x7E => url.push(char::from(b)),
            _ => return None,
        }
    }
    Some(url)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::types::{BdAddr, ManufacturerData, Rssi, ScannerIdx, ServiceData, Timestamp};

    fn sighting(mfg: &[(u16, &str)], svc: &[&str]) -> Sighting {
        let mut s = Sighting::new(Timestamp(0), ScannerIdx(0), BdAddr::default(), Rssi(-60));
        for (company, hex) in mfg {
            s.manufacturer_data.push(ManufacturerData {
                company: *company,
                data: hex::decode(hex).unwrap().into_iter().collect(),
            });
        }
        for hex in svc {
            s.service_data.push(ServiceData {
                uuid: Uuid128::EDDYSTONE,
                data: hex::decode(hex).unwrap().into_iter().collect(),
            });
        }
        s
    }

    fn frames(s: &Sighting) -> (Vec<Frame>, DecodeStats) {
        let mut stats = DecodeStats::default();
        let mut out = Vec::new();
        decode(s, &mut stats, |f| out.push(f));
        (out, stats)
    }

    #[test]
    fn ibeacon_from_the_replay_format_example() {
        // `formats/replay.md`: Apple's sample UUID, major 1, minor 2, -59 dBm at 1 m.
        let (f, st) = frames(&sighting(
            &[(76, "0215e2c56db5dffb48d2b060d0f5a71096e000010002c5")],
            &[],
        ));
        assert_eq!(
            f,
            vec![Frame::IBeacon {
                uuid: Uuid128::parse("E2C56DB5-DFFB-48D2-B060-D0F5A71096E0")
                    .unwrap()
                    .to_bytes(),
                major: 1,
                minor: 2,
                measured_power: -59,
            }]
        );
        assert_eq!(st.ibeacon, 1);
        assert_eq!(st.rejected(), 0);
    }

    #[test]
    fn ibeacon_only_under_apple_and_exact_length() {
        let body = "0215e2c56db5dffb48d2b060d0f5a71096e000010002c5";
        // Under another company id the same bytes are nobody's iBeacon.
        let (f, st) = frames(&sighting(&[(280, body)], &[]));
        assert!(f.is_empty());
        assert_eq!(st.unknown, 1);
        // One byte short, one byte long, and a lone prefix byte.
        let (f, st) = frames(&sighting(&[(76, &body[..body.len() - 2])], &[]));
        assert!(f.is_empty());
        assert_eq!(st.truncated, 1);
        let (f, st) = frames(&sighting(&[(76, &format!("{body}00"))], &[]));
        assert!(f.is_empty());
        assert_eq!(st.oversize, 1);
        let (_, st) = frames(&sighting(&[(76, "02")], &[]));
        assert_eq!(st.truncated, 1);
        // Apple continuity chatter ("Nearby Info") is not a beacon.
        let (f, st) = frames(&sighting(&[(76, "1005031c2a7b3e")], &[]));
        assert!(f.is_empty());
        assert_eq!(st.unknown, 1);
    }

    #[test]
    fn altbeacon_per_the_published_layout() {
        // AltBeacon spec example: beacon id = 16-byte UUID + 0x0001 + 0x0002,
        // reference RSSI -59 (0xC5), manufacturer reserved 0x00, company 0x0118.
        let (f, st) = frames(&sighting(
            &[(0x0118, "beac2f234454cf6d4a0fadf2f4911ba9ffa600010002c500")],
            &[],
        ));
        let mut id = [0u8; 20];
        id.copy_from_slice(&hex::decode("2f234454cf6d4a0fadf2f4911ba9ffa600010002").unwrap());
        assert_eq!(
            f,
            vec![Frame::AltBeacon {
                company: 0x0118,
                id,
                reference_rssi: -59,
                reserved: 0
            }]
        );
        assert_eq!(st.altbeacon, 1);
        let (_, st) = frames(&sighting(
            &[(0x0118, "beac2f234454cf6d4a0fadf2f4911ba9ffa600010002c5")],
            &[],
        ));
        assert_eq!(st.truncated, 1);
    }

    #[test]
    fn eddystone_uid_with_and_without_reserved_bytes() {
        let expected = Frame::EddystoneUid {
            ranging: -24,
            namespace: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
            instance: [0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5],
        };
        let (f, _) = frames(&sighting(
            &[],
            &["00e80102030405060708090aa0a1a2a3a4a50000"],
        ));
        assert_eq!(f, vec![expected.clone()]);
        let (f, _) = frames(&sighting(&[], &["00e80102030405060708090aa0a1a2a3a4a5"]));
        assert_eq!(f, vec![expected]);
        assert_eq!(f[0].measured_power_1m(), Some(-65));
        let (f, st) = frames(&sighting(&[], &["00e80102030405060708090aa0a1a2a3a4"]));
        assert!(f.is_empty());
        assert_eq!(st.truncated, 1);
        let (_, st) = frames(&sighting(
            &[],
            &["00e80102030405060708090aa0a1a2a3a4a5000000"],
        ));
        assert_eq!(st.oversize, 1);
    }

    #[test]
    fn eddystone_url_expands_scheme_and_suffixes() {
        // The Eddystone spec's example: https://goo.gl/S6zT6P is 03 goo.gl/S6zT6P;
        // and "https://www." + "example" + ".com/".
        let (f, _) = frames(&sighting(&[], &["10eb03676f6f2e676c2f53367a543650"]));
        assert_eq!(
            f,
            vec![Frame::EddystoneUrl {
                ranging: -21,
                url: "https://goo.gl/S6zT6P".into()
            }]
        );
        let (f, _) = frames(&sighting(&[], &["10eb016578616d706c6500"]));
        assert_eq!(
            f,
            vec![Frame::EddystoneUrl {
                ranging: -21,
                url: "https://www.example.com/".into()
            }]
        );
        // Reserved scheme and reserved body byte are invalid, not a crash.
        let (f, st) = frames(&sighting(&[], &["10eb0461", "10eb0361ff"]));
        assert!(f.is_empty());
        assert_eq!(st.invalid, 2);
    }

    #[test]
    fn eddystone_tlm_fields() {
        // 3000 mV, 23.5 °C, 4660 PDUs, 120.0 s since boot.
        let (f, _) = frames(&sighting(&[], &["20000bb8178000001234000004b0"]));
        assert_eq!(
            f,
            vec![Frame::EddystoneTlm {
                battery_mv: 3000,
                temperature: Some(23.5),
                adv_count: 0x1234,
                uptime_ds: 1200
            }]
        );
        let (f, _) = frames(&sighting(&[], &["20000bb8800000001234000004b0"]));
        assert!(matches!(
            f[0],
            Frame::EddystoneTlm {
                temperature: None,
                ..
            }
        ));
        let (_, st) = frames(&sighting(&[], &["20010bb8178000001234000004b0"]));
        assert_eq!(st.invalid, 1);
    }

    #[test]
    fn eddystone_eid_and_unknown_types() {
        let (f, _) = frames(&sighting(&[], &["30f0a9b76a71c5f89290"]));
        assert_eq!(
            f,
            vec![Frame::EddystoneEid {
                ranging: -16,
                eid: [0xa9, 0xb7, 0x6a, 0x71, 0xc5, 0xf8, 0x92, 0x90]
            }]
        );
        let (f, st) = frames(&sighting(&[], &["", "40aabb", "30f0a9b76a71c5f892"]));
        assert!(f.is_empty());
        assert_eq!((st.truncated, st.unknown), (2, 1));
    }

    #[test]
    fn several_sections_in_one_sighting() {
        let (f, st) = frames(&sighting(
            &[
                (76, "0215e2c56db5dffb48d2b060d0f5a71096e000010002c5"),
                (6, "0109"),
            ],
            &["00e80102030405060708090aa0a1a2a3a4a5"],
        ));
        assert_eq!(f.len(), 2);
        assert_eq!((st.ibeacon, st.eddystone, st.unknown), (1, 1, 1));
    }

    fn round_trip(frame: &Frame) -> Vec<Frame> {
        let mut s = Sighting::new(Timestamp(0), ScannerIdx(0), BdAddr::default(), Rssi(-60));
        frame.encode().unwrap().add_to(&mut s);
        frames(&s).0
    }

    #[test]
    fn encoded_frames_have_the_published_layouts() {
        let f = Frame::IBeacon {
            uuid: Uuid128::parse("E2C56DB5-DFFB-48D2-B060-D0F5A71096E0")
                .unwrap()
                .to_bytes(),
            major: 1,
            minor: 2,
            measured_power: -59,
        };
        assert_eq!(
            f.encode(),
            Some(Section::Manufacturer(ManufacturerData {
                company: APPLE,
                data: hex::decode("0215e2c56db5dffb48d2b060d0f5a71096e000010002c5")
                    .unwrap()
                    .into_iter()
                    .collect(),
            }))
        );
        let url = Frame::EddystoneUrl {
            ranging: -18,
            url: "https://www.example.com/".into(),
        };
        let Some(Section::Service(d)) = url.encode() else {
            panic!("{url:?}")
        };
        assert_eq!(hex::encode(&d.data), "10ee016578616d706c6500");
        assert_eq!(round_trip(&url), [url]);
        for bad in [
            "ftp://x",
            "https://ünïcode",
            "https://www.a-very-long-host-name.com/",
        ] {
            let f = Frame::EddystoneUrl {
                ranging: 0,
                url: bad.into(),
            };
            assert_eq!(f.encode(), None, "{bad}");
        }
    }

    fn any_frame() -> impl proptest::strategy::Strategy<Value = Frame> {
        use proptest::prelude::*;
        prop_oneof![
            (any::<[u8; 16]>(), any::<u16>(), any::<u16>(), any::<i8>()).prop_map(
                |(uuid, major, minor, measured_power)| Frame::IBeacon {
                    uuid,
                    major,
                    minor,
                    measured_power
                }
            ),
            (any::<u16>(), any::<[u8; 20]>(), any::<i8>(), any::<u8>()).prop_map(
                |(company, id, reference_rssi, reserved)| Frame::AltBeacon {
                    company,
                    id,
                    reference_rssi,
                    reserved
                }
            ),
            (any::<i8>(), any::<[u8; 10]>(), any::<[u8; 6]>()).prop_map(
                |(ranging, namespace, instance)| Frame::EddystoneUid {
                    ranging,
                    namespace,
                    instance
                }
            ),
            (any::<i8>(), 0usize..4, "[a-z0-9.-]{0,12}").prop_map(|(ranging, s, host)| {
                Frame::EddystoneUrl {
                    ranging,
                    url: format!("{}{host}", SCHEMES[s]),
                }
            }),
            (
                any::<u16>(),
                proptest::option::of(
                    any::<i16>().prop_filter("0x8000 means none", |t| *t != i16::MIN)
                ),
                any::<u32>(),
                any::<u32>()
            )
                .prop_map(|(battery_mv, t, adv_count, uptime_ds)| {
                    Frame::EddystoneTlm {
                        battery_mv,
                        temperature: t.map(|t| f32::from(t) / 256.0),
                        adv_count,
                        uptime_ds,
                    }
                }),
            (any::<i8>(), any::<[u8; 8]>())
                .prop_map(|(ranging, eid)| Frame::EddystoneEid { ranging, eid }),
        ]
    }

    proptest::proptest! {
        #[test]
        fn every_encoded_frame_decodes_to_itself(frame in any_frame()) {
            proptest::prop_assert_eq!(round_trip(&frame), vec![frame]);
        }

        #[test]
        fn arbitrary_bytes_never_panic(company in 0u16..=0xFFFF, data in proptest::collection::vec(0u8..=255, 0..40)) {
            let hexed = hex::encode(&data);
            let s = sighting(&[(company, &hexed)], &[&hexed]);
            let (f, st) = frames(&s);
            proptest::prop_assert_eq!(f.len() as u64 + st.rejected(), 2);
        }
    }
}

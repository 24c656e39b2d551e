//! ESPresense nodes' wire format, as pure functions of topic and payload:
//! which topic is what ([`Topic`]), a device report (firmware v3 and v4
//! payloads) and its id mapped to what nearcast can recognise ([`Heard`]),
//! and a node's status.
//!
//! The device's `name` and every other field is ignored: nothing here keeps
//! or returns a device detail beyond what identity lookup needs, and a
//! report that cannot be one of an enrolled customer's identities (an IRK,
//! an alias without an address) is refused here, before any lookup.

use std::borrow::Cow;

use serde::Deserialize;

use crate::core::advert::Frame;
use crate::core::types::{BdAddr, Rssi, ScannerIdx, Sighting, Timestamp, Uuid128, hex_nibble};

/// ESPresense's fixed topic prefix (the firmware's `CHANNEL`).
pub const PREFIX: &str = "espresense";

/// The subscriptions a box needs for ESPresense nodes: device reports,
/// node status (online, or the `offline` last will) and telemetry.
pub const SUBSCRIPTIONS: [&str; 3] = [
    "espresense/devices/+/+",
    "espresense/rooms/+/status",
    "espresense/rooms/+/telemetry",
];

/// What an ESPresense topic carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Topic<'a> {
    /// `espresense/devices/<device>/<node>`: one device as a node hears it.
    Device {
        /// The node (room) id.
        node: &'a str,
    },
    /// `espresense/rooms/<node>/status`: `online`, or the last will
    /// `offline`.
    Status {
        /// The node id.
        node: &'a str,
    },
    /// `espresense/rooms/<node>/telemetry`: the node is alive.
    Telemetry {
        /// The node id.
        node: &'a str,
    },
}

impl<'a> Topic<'a> {
    /// Classifies a topic; `None` for one nearcast does not read.
    #[must_use]
    pub fn parse(topic: &'a str) -> Option<Topic<'a>> {
        let mut it = topic.split('/');
        if it.next()? != PREFIX {
            return None;
        }
        let t = match (it.next()?, it.next()?, it.next()?) {
            ("devices", _device, node) => Topic::Device { node },
            ("rooms", node, "status") => Topic::Status { node },
            ("rooms", node, "telemetry") => Topic::Telemetry { node },
            _ => return None,
        };
        if it.next().is_some() {
            return None;
        }
        Some(t)
    }
}

/// A node's status message: `Some(true)` for `online`, `Some(false)` for
/// `offline`, `None` for anything else.
#[must_use]
pub fn parse_status(payload: &[u8]) -> Option<bool> {
    match std::str::from_utf8(payload).map(str::trim) {
        Ok(s) if s.eq_ignore_ascii_case("online") => Some(true),
        Ok(s) if s.eq_ignore_ascii_case("offline") => Some(false),
        _ => None,
    }
}

/// The fields of a device report nearcast reads. v4 firmware sends `mac,
/// id, name, rssi@1m, rssi, rxAdj, rssiVar, distance, var, close, int`;
/// v3 sends `idType` and `raw` instead of `rxAdj`, `rssiVar` and `var`.
/// Unknown keys are ignored, so both parse alike.
#[derive(Deserialize)]
struct Payload<'a> {
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    mac: Option<Cow<'a, str>>,
    rssi: Option<f64>,
    #[serde(rename = "rssi@1m")]
    rssi_1m: Option<f64>,
}

/// Why a report is not used. Counted by kind, never kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// Not JSON, or not the shape of a report.
    Malformed,
    /// No usable RSSI (the firmware omits one that is not a number).
    NoRssi,
    /// An id nearcast cannot enrol (an `irk:`, an alias or a fingerprint
    /// without an address): it can belong to no customer.
    Unusable,
}

/// What the device is, as far as nearcast can recognise it.
#[derive(Clone, Debug, PartialEq)]
pub enum Device {
    /// A beacon frame (iBeacon, AltBeacon, Eddystone-UID) from its id.
    Beacon(Frame),
    /// Only its address (a public MAC, `known:<mac>`, or the report's
    /// `mac` behind an alias).
    Address,
}

/// One device report, as nearcast uses it.
#[derive(Clone, Debug, PartialEq)]
pub struct Heard {
    /// What the id says.
    pub device: Device,
    /// The address the node heard, or one derived from the id when the
    /// report has none (so that per-address guards still tell devices apart).
    pub addr: BdAddr,
    /// The RSSI the node reports, dBm: v4's is already filtered (median
    /// with outliers cut) and corrected by the node's `rxAdj`; v3's is the
    /// last raw reading.
    pub rssi: f64,
    /// The node's calibrated RSSI at 1 m for this device, if it says.
    pub rssi_1m: Option<f64>,
}

/// Parses a device report (`espresense/devices/…` payload).
///
/// # Errors
/// Why it is not used.
pub fn parse_report(payload: &[u8]) -> Result<Heard, Refused> {
    let p: Payload<'_> = serde_json::from_slice(payload).map_err(|_| Refused::Malformed)?;
    let id = p.id.as_deref().ok_or(Refused::Malformed)?;
    let rssi = p
        .rssi
        .filter(|r| r.is_finite() && (-130.0..=20.0).contains(r))
        .ok_or(Refused::NoRssi)?;
    let mac = p.mac.as_deref().and_then(parse_mac);
    let (device, id_addr) = map_id(id)?;
    let addr = match (mac, id_addr) {
        (_, Some(a)) => a,
        (Some(a), None) => a,
        (None, None) if matches!(device, Device::Beacon(_)) => pseudo_addr(id),
        (None, None) => return Err(Refused::Unusable),
    };
    Ok(Heard {
        device,
        addr,
        rssi,
        rssi_1m: p
            .rssi_1m
            .filter(|r| r.is_finite() && (-127.0..=20.0).contains(r)),
    })
}

/// Maps an ESPresense id to a beacon frame or an address. The forms are
/// the firmware's: `iBeacon:<uuid>-<major>-<minor>`,
/// `altBeacon:<uuid>-<major>-<minor>`, `eddy:<namespace>-<instance>`,
/// `known:<mac>`, a bare 12-digit MAC; anything else (`irk:…`, aliases
/// such as `watch:darrell`, fingerprints such as `apple:1005:9-26`) can
/// only be recognised by the report's `mac`.
fn map_id(id: &str) -> Result<(Device, Option<BdAddr>), Refused> {
    let (kind, rest) = id.split_once(':').unwrap_or(("", id));
    let beacon = |f: Option<Frame>| {
        f.map(|f| (Device::Beacon(f), None))
            .ok_or(Refused::Malformed)
    };
    match kind.to_ascii_lowercase().as_str() {
        "ibeacon" => beacon(
            uuid_major_minor(rest).map(|(uuid, major, minor)| Frame::IBeacon {
                uuid,
                major,
                minor,
                measured_power: 0,
            }),
        ),
        "altbeacon" => beacon(uuid_major_minor(rest).map(|(uuid, major, minor)| {
            let mut id = [0u8; 20];
            id[..16].copy_from_slice(&uuid);
            id[16..18].copy_from_slice(&major.to_be_bytes());
            id[18..].copy_from_slice(&minor.to_be_bytes());
            Frame::AltBeacon {
                company: 0x0118,
                id,
                reference_rssi: 0,
                reserved: 0,
            }
        })),
        "eddy" => beacon(
            eddystone_uid(rest).map(|(namespace, instance)| Frame::EddystoneUid {
                ranging: 0,
                namespace,
                instance,
            }),
        ),
        "known" => parse_mac(rest)
            .map(|a| (Device::Address, Some(a)))
            .ok_or(Refused::Malformed),
        "irk" => Err(Refused::Unusable),
        "" => Ok((Device::Address, parse_mac(id))),
        _ => Ok((Device::Address, None)),
    }
}

/// `<uuid>-<major>-<minor>` with the UUID in its 8-4-4-4-12 form.
fn uuid_major_minor(s: &str) -> Option<([u8; 16], u16, u16)> {
    let uuid = Uuid128::parse(s.get(..36)?)?.to_bytes();
    let (major, minor) = s.get(36..)?.strip_prefix('-')?.split_once('-')?;
    Some((uuid, major.parse().ok()?, minor.parse().ok()?))
}

/// `<namespace>-<instance>`. The firmware prints the namespace's fifth
/// byte twice (22 hex digits for 10 bytes); that form is read with the
/// repeat dropped, and the plain 20-digit one as it is.
fn eddystone_uid(s: &str) -> Option<([u8; 10], [u8; 6])> {
    let (ns, inst) = s.split_once('-')?;
    let mut instance = [0u8; 6];
    hex::decode_to_slice(inst, &mut instance).ok()?;
    let mut namespace = [0u8; 10];
    match ns.len() {
        20 => hex::decode_to_slice(ns, &mut namespace).ok()?,
        22 => {
            let mut raw = [0u8; 11];
            hex::decode_to_slice(ns, &mut raw).ok()?;
            if raw[4] != raw[5] {
                return None;
            }
            namespace[..5].copy_from_slice(&raw[..5]);
            namespace[5..].copy_from_slice(&raw[6..]);
        }
        _ => return None,
    }
    Some((namespace, instance))
}

/// A MAC as ESPresense writes it (12 hex digits), or with separators.
#[must_use]
pub fn parse_mac(s: &str) -> Option<BdAddr> {
    if s.len() == 12 {
        let b = s.as_bytes();
        let mut out = [0u8; 6];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = (hex_nibble(b[2 * i])? << 4) | hex_nibble(b[2 * i + 1])?;
        }
        return Some(BdAddr(out));
    }
    BdAddr::parse(s)
}

/// A locally administered address derived from a beacon id (FNV-1a), for
/// a report without `mac`: the guards limit per address, and beacons
/// without one must not share it. Kept in memory only, like the id.
fn pseudo_addr(id: &str) -> BdAddr {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    let mut a = [0u8; 6];
    a.copy_from_slice(&h.to_be_bytes()[..6]);
    a[0] = (a[0] & 0xFC) | 0x02;
    BdAddr(a)
}

impl Heard {
    /// The report as a sighting by `scanner` at `at`, ready for the same
    /// pipeline as a local adapter's.
    ///
    /// The node's `rssi@1m` is folded into the RSSI, so that nearcast's
    /// path-loss model (which takes `measured_power` from the frame, a
    /// `[[calibration]]` or `[radio]`) gives the distance the node's own
    /// calibration gives: `rssi + (measured_power − rssi@1m)`, with the
    /// frame claiming `measured_power`.
    #[must_use]
    pub fn to_sighting(&self, at: Timestamp, scanner: ScannerIdx, measured_power: i8) -> Sighting {
        let rssi = self.rssi + self.rssi_1m.map_or(0.0, |p| f64::from(measured_power) - p);
        #[allow(clippy::cast_possible_truncation)]
        let rssi = Rssi(rssi.round().clamp(-127.0, 19.0) as i16);
        let mut s = Sighting::new(at, scanner, self.addr, rssi);
        if let Device::Beacon(frame) = &self.device {
            let mut frame = frame.clone();
            match &mut frame {
                Frame::IBeacon {
                    measured_power: p, ..
                } => *p = measured_power,
                Frame::AltBeacon { reference_rssi, .. } => *reference_rssi = measured_power,
                // Eddystone states its power at 0 m, 41 dB above 1 m.
                Frame::EddystoneUid { ranging, .. } => *ranging = measured_power.saturating_add(41),
                _ => {}
            }
            if let Some(section) = frame.encode() {
                section.add_to(&mut s);
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::advert;

    /// The first line of ESPresense-companion's stationary capture (v3).
    const V3: &str = r#"{"mac":"58b1294494d3","id":"watch:darrell","name":"Darrell's Watch","idType":250,"rssi@1m":-64,"rssi":-86,"raw":5.24,"distance":5.89,"int":588}"#;

    /// A v4 report as `BleFingerprint::fill` writes one.
    const V4: &str = r#"{"mac":"d1e2f3a4b5c6","id":"iBeacon:e2c56db5-dffb-48d2-b060-d0f5a71096e0-1-2","name":"x","rssi@1m":-62,"rssi":-70.50,"rxAdj":0,"rssiVar":1.25,"distance":2.31,"var":0.12,"close":true,"int":1020}"#;

    #[test]
    fn topics() {
        assert_eq!(
            Topic::parse("espresense/devices/watch:darrell/office_alt"),
            Some(Topic::Device { node: "office_alt" })
        );
        assert_eq!(
            Topic::parse("espresense/rooms/kitchen/status"),
            Some(Topic::Status { node: "kitchen" })
        );
        assert_eq!(
            Topic::parse("espresense/rooms/kitchen/telemetry"),
            Some(Topic::Telemetry { node: "kitchen" })
        );
        for other in [
            "espresense/devices/x/kitchen/extra",
            "espresense/rooms/kitchen/max_distance",
            "espresense/settings/x/config",
            "other/devices/x/y",
            "espresense",
        ] {
            assert_eq!(Topic::parse(other), None, "{other}");
        }
    }

    #[test]
    fn v3_alias_is_recognised_by_its_mac() {
        let h = parse_report(V3.as_bytes()).unwrap();
        assert_eq!(h.device, Device::Address);
        assert_eq!(h.addr, BdAddr([0x58, 0xb1, 0x29, 0x44, 0x94, 0xd3]));
        assert_eq!((h.rssi, h.rssi_1m), (-86.0, Some(-64.0)));
        // rssi@1m folded in: -86 heard where 1 m is -64 is -81 where 1 m is -59.
        let s = h.to_sighting(Timestamp(5), ScannerIdx(3), -59);
        assert_eq!(
            (s.rssi, s.scanner, s.at),
            (Rssi(-81), ScannerIdx(3), Timestamp(5))
        );
        assert!(s.manufacturer_data.is_empty() && s.service_data.is_empty());
    }

    #[test]
    fn v4_ibeacon_becomes_the_frame_a_local_adapter_would_decode() {
        let h = parse_report(V4.as_bytes()).unwrap();
        let s = h.to_sighting(Timestamp(0), ScannerIdx(0), -59);
        assert_eq!(s.rssi, Rssi(-68)); // -70.5 - 62 + 59 = -67.5 → -68 (half away from zero)
        let mut frames = Vec::new();
        advert::decode(&s, &mut advert::DecodeStats::default(), |f| frames.push(f));
        assert_eq!(
            frames,
            [Frame::IBeacon {
                uuid: Uuid128::parse("e2c56db5-dffb-48d2-b060-d0f5a71096e0")
                    .unwrap()
                    .to_bytes(),
                major: 1,
                minor: 2,
                measured_power: -59
            }]
        );
        assert_eq!(s.addr, BdAddr([0xd1, 0xe2, 0xf3, 0xa4, 0xb5, 0xc6]));
    }

    #[test]
    fn every_id_form() {
        let report = |id: &str, mac: Option<&str>| {
            let mac = mac.map_or(String::new(), |m| format!(r#","mac":"{m}""#));
            parse_report(format!(r#"{{"id":"{id}","rssi":-60{mac}}}"#).as_bytes())
        };
        let alt = report("altBeacon:2f234454-cf6d-4a0f-adf2-f4911ba9ffa6-1-2", None).unwrap();
        let Device::Beacon(Frame::AltBeacon { id, .. }) = alt.device else {
            panic!("{alt:?}")
        };
        assert_eq!(hex::encode(id), "2f234454cf6d4a0fadf2f4911ba9ffa600010002");
        assert_eq!(alt.addr.0[0] & 0x03, 0x02, "a made-up address is local");
        // The firmware's doubled fifth namespace byte, and the plain form.
        for ns in ["01020304050506070809 0a", "0102030405060708090a"] {
            let ns = ns.replace(' ', "");
            let e = report(&format!("eddy:{ns}-a0a1a2a3a4a5"), None).unwrap();
            assert_eq!(
                e.device,
                Device::Beacon(Frame::EddystoneUid {
                    ranging: 0,
                    namespace: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
                    instance: [0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5]
                }),
                "{ns}"
            );
        }
        let known = report("known:c47c8d6a1102", Some("000000000001")).unwrap();
        assert_eq!(
            (known.device, known.addr),
            (
                Device::Address,
                BdAddr([0xc4, 0x7c, 0x8d, 0x6a, 0x11, 0x02])
            )
        );
        let bare = report("c47c8d6a1102", None).unwrap();
        assert_eq!(bare.addr, BdAddr([0xc4, 0x7c, 0x8d, 0x6a, 0x11, 0x02]));
        assert_eq!(
            report("irk:00112233445566778899aabbccddeeff", Some("4a0000000001")),
            Err(Refused::Unusable)
        );
        assert_eq!(report("phone:someone", None), Err(Refused::Unusable));
        assert_eq!(
            report("apple:1005:9-26", Some("4a0000000002"))
                .unwrap()
                .addr
                .0[5],
            2
        );
        assert_eq!(report("iBeacon:nope-1-2", None), Err(Refused::Malformed));
        assert_eq!(
            report("iBeacon:e2c56db5-dffb-48d2-b060-d0f5a71096e0-1-70000", None),
            Err(Refused::Malformed)
        );
        assert_eq!(
            report("eddy:0102-a0a1a2a3a4a5", None),
            Err(Refused::Malformed)
        );
    }

    #[test]
    fn malformed_reports_are_refused_not_guessed() {
        for (p, why) in [
            ("", Refused::Malformed),
            ("{", Refused::Malformed),
            ("[]", Refused::Malformed),
            (r#"{"rssi":-60}"#, Refused::Malformed),
            (r#"{"id":7,"rssi":-60}"#, Refused::Malformed),
            (r#"{"id":"c47c8d6a1102"}"#, Refused::NoRssi),
            (r#"{"id":"c47c8d6a1102","rssi":"loud"}"#, Refused::Malformed),
            (r#"{"id":"c47c8d6a1102","rssi":-400}"#, Refused::NoRssi),
            (r#"{"id":"c47c8d6a1102","rssi":1e999}"#, Refused::Malformed),
        ] {
            assert_eq!(parse_report(p.as_bytes()), Err(why), "{p}");
        }
        assert_eq!(parse_status(b"online"), Some(true));
        assert_eq!(parse_status(b"offline\n"), Some(false));
        assert_eq!(parse_status(b"{\"x\":1}"), None);
    }
}

//! Newtypes shared by every stage: time, radio units, addresses, ids, and the
//! `Sighting` / `WifiPresence` observations that sources produce.
//!
//! Pure data. Parsing helpers here take strings, never files or sockets.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use smallvec::SmallVec;

/// A point in time: milliseconds since the Unix epoch (UTC).
///
/// Time is always data in nearcast's core: the shell reads a clock (or a
/// recording) and passes the result in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// The earliest representable time; a neutral "never" for comparisons.
    pub const MIN: Timestamp = Timestamp(i64::MIN);

    /// From fractional Unix seconds, as in recordings (`"t": 1763712000.125`).
    /// Non-finite input maps to `None`.
    #[must_use]
    pub fn from_secs_f64(secs: f64) -> Option<Timestamp> {
        if !secs.is_finite() || secs.abs() > 9.0e15 {
            return None;
        }
        #[allow(clippy::cast_possible_truncation)]
        Some(Timestamp((secs * 1000.0).round() as i64))
    }

    /// From whole Unix seconds.
    #[must_use]
    pub const fn from_secs(secs: i64) -> Timestamp {
        Timestamp(secs.saturating_mul(1000))
    }

    /// Whole Unix seconds (floor).
    #[must_use]
    pub const fn as_secs(self) -> i64 {
        self.0.div_euclid(1000)
    }

    /// Fractional Unix seconds.
    #[must_use]
    #[allow(clippy::cast_precision_loss)]
    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / 1000.0
    }

    /// `self + d`, saturating instead of overflowing (cooldown arithmetic
    /// must never wrap, whatever the clock says).
    #[must_use]
    pub fn saturating_add(self, d: Duration) -> Timestamp {
        Timestamp(self.0.saturating_add(millis(d)))
    }

    /// `self - d`, saturating.
    #[must_use]
    pub fn saturating_sub(self, d: Duration) -> Timestamp {
        Timestamp(self.0.saturating_sub(millis(d)))
    }

    /// Time elapsed from `earlier` to `self`; zero if `earlier` is later.
    #[must_use]
    pub fn since(self, earlier: Timestamp) -> Duration {
        let ms = self.0.saturating_sub(earlier.0).max(0);
        Duration::from_millis(u64::try_from(ms).unwrap_or(0))
    }
}

/// A duration in whole milliseconds, saturating at `i64::MAX`.
#[must_use]
pub fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match jiff::Timestamp::from_millisecond(self.0) {
            Ok(ts) => write!(f, "{ts}"),
            Err(_) => write!(f, "@{}ms", self.0),
        }
    }
}

/// Received signal strength in dBm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rssi(pub i16);

impl Rssi {
    /// The median of a few RSSI samples in dBm (sorting them in place):
    /// one multipath spike or body-blocked dip in a handful does not move
    /// it. The mean of the middle two for an even count; `None` for none.
    #[must_use]
    pub fn median(samples: &mut [i16]) -> Option<f64> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        let mid = samples.len() / 2;
        Some(if samples.len() % 2 == 1 {
            f64::from(samples[mid])
        } else {
            (f64::from(samples[mid - 1]) + f64::from(samples[mid])) / 2.0
        })
    }
}

/// A 48-bit Bluetooth device address or Wi-Fi MAC, most significant byte first
/// (the order in which it is written `AA:BB:CC:DD:EE:FF`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct BdAddr(pub [u8; 6]);

impl BdAddr {
    /// Parses `AA:BB:CC:DD:EE:FF` (also accepts `-` separators, any case).
    #[must_use]
    pub fn parse(s: &str) -> Option<BdAddr> {
        let b = s.as_bytes();
        if b.len() != 17 {
            return None;
        }
        let mut out = [0u8; 6];
        for (i, byte) in out.iter_mut().enumerate() {
            let at = i * 3;
            if i > 0 && !matches!(b[at - 1], b':' | b'-') {
                return None;
            }
            *byte = (hex_nibble(b[at])? << 4) | hex_nibble(b[at + 1])?;
        }
        Some(BdAddr(out))
    }
}

impl fmt::Display for BdAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let a = self.0;
        write!(
            f,
            "{:02X}:{:02X}:{:02X}:{:02X}:{:02X}:{:02X}",
            a[0], a[1], a[2], a[3], a[4], a[5]
        )
    }
}

impl fmt::Debug for BdAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The value of one ASCII hex digit.
#[must_use]
pub const fn hex_nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// A 128-bit Bluetooth UUID.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Uuid128(pub u128);

impl Uuid128 {
    /// Eddystone's service UUID `0000feaa-0000-1000-8000-00805f9b34fb`.
    pub const EDDYSTONE: Uuid128 = Uuid128::from_u16(0xFEAA);

    /// Expands a 16-bit SIG-assigned UUID onto the Bluetooth base UUID.
    #[must_use]
    pub const fn from_u16(short: u16) -> Uuid128 {
        Uuid128(((short as u128) << 96) | 0x0000_0000_0000_1000_8000_0080_5f9b_34fb)
    }

    /// Parses the canonical 8-4-4-4-12 form (or 32 bare hex digits).
    #[must_use]
    pub fn parse(s: &str) -> Option<Uuid128> {
        let mut v: u128 = 0;
        let mut digits = 0;
        for (i, c) in s.bytes().enumerate() {
            if c == b'-' {
                if !matches!(i, 8 | 13 | 18 | 23) || s.len() != 36 {
                    return None;
                }
                continue;
            }
            v = (v << 4) | u128::from(hex_nibble(c)?);
            digits += 1;
        }
        (digits == 32).then_some(Uuid128(v))
    }

    /// The 16 bytes, most significant first.
    #[must_use]
    pub const fn to_bytes(self) -> [u8; 16] {
        self.0.to_be_bytes()
    }
}

impl fmt::Display for Uuid128 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.0;
        write!(
            f,
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            (v >> 96) as u32,
            (v >> 80) as u16,
            (v >> 64) as u16,
            (v >> 48) as u16,
            v & 0xFFFF_FFFF_FFFF
        )
    }
}

impl fmt::Debug for Uuid128 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Advertisement payloads up to a legacy advertising PDU fit inline.
pub type Payload = SmallVec<[u8; 28]>;

/// Manufacturer-specific data: company identifier and the bytes after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManufacturerData {
    /// Bluetooth SIG company identifier (76 = Apple).
    pub company: u16,
    /// Bytes following the company identifier.
    pub data: Payload,
}

/// Service data: the service's UUID and its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceData {
    /// 128-bit service UUID.
    pub uuid: Uuid128,
    /// The service data bytes.
    pub data: Payload,
}

/// Index of a scanner in the store layout (`zones.toml` order).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ScannerIdx(pub u16);

/// One BLE advertisement as heard by one scanner.
#[derive(Clone, Debug, PartialEq)]
pub struct Sighting {
    /// When it was heard.
    pub at: Timestamp,
    /// Which scanner heard it.
    pub scanner: ScannerIdx,
    /// The advertiser's address as reported (may be a random address).
    pub addr: BdAddr,
    /// Received signal strength.
    pub rssi: Rssi,
    /// Advertised TX power level, if any.
    pub tx_power: Option<i8>,
    /// Advertised local name, if any.
    pub name: Option<Box<str>>,
    /// Manufacturer-specific data sections.
    pub manufacturer_data: SmallVec<[ManufacturerData; 1]>,
    /// Service data sections.
    pub service_data: SmallVec<[ServiceData; 1]>,
    /// Advertised service UUIDs.
    pub service_uuids: SmallVec<[Uuid128; 1]>,
}

impl Sighting {
    /// A sighting with no payload; callers fill in what they have.
    #[must_use]
    pub fn new(at: Timestamp, scanner: ScannerIdx, addr: BdAddr, rssi: Rssi) -> Sighting {
        Sighting {
            at,
            scanner,
            addr,
            rssi,
            tx_power: None,
            name: None,
            manufacturer_data: SmallVec::new(),
            service_data: SmallVec::new(),
            service_uuids: SmallVec::new(),
        }
    }
}

/// What a Wi-Fi presence source reported about a station.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WifiKind {
    /// The station associated / appeared.
    Joined,
    /// The station is still there.
    Seen,
    /// The station disassociated / went away.
    Left,
}

/// A Wi-Fi presence report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WifiPresence {
    /// When it was reported.
    pub at: Timestamp,
    /// Which backend reported it (`hostapd`, `neighbours`, `leases`, …).
    pub source: Box<str>,
    /// The station's MAC address on the store network.
    pub mac: BdAddr,
    /// Joined, seen or left.
    pub kind: WifiKind,
}

/// Anything a source produces.
#[derive(Clone, Debug, PartialEq)]
#[allow(
    clippy::large_enum_variant,
    reason = "sightings are the hot path; boxing one would allocate per advertisement"
)]
pub enum Observation {
    /// A BLE advertisement.
    Ble(Sighting),
    /// A Wi-Fi presence report.
    Wifi(WifiPresence),
}

impl Observation {
    /// When it happened.
    #[must_use]
    pub fn at(&self) -> Timestamp {
        match self {
            Observation::Ble(s) => s.at,
            Observation::Wifi(w) => w.at,
        }
    }
}

/// What a customer consented to be contacted for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Purpose {
    /// Greetings on arrival.
    Welcome,
    /// Loyalty points and balance notices.
    Loyalty,
    /// Offers and marketing: needs a confirmed (double opt-in) consent.
    Offers,
}

impl Purpose {
    /// Every purpose.
    pub const ALL: [Purpose; 3] = [Purpose::Welcome, Purpose::Loyalty, Purpose::Offers];

    /// `welcome`, `loyalty` or `offers`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Purpose::Welcome => "welcome",
            Purpose::Loyalty => "loyalty",
            Purpose::Offers => "offers",
        }
    }

    /// Parses a purpose name.
    #[must_use]
    pub fn parse(s: &str) -> Option<Purpose> {
        Purpose::ALL.into_iter().find(|p| p.name() == s)
    }
}

impl fmt::Display for Purpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of purposes (a customer's usable consents on one channel).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Purposes(pub u8);

impl Purposes {
    /// All three.
    pub const ALL: Purposes = Purposes(0b111);

    /// Whether `p` is in the set.
    #[must_use]
    pub fn contains(self, p: Purpose) -> bool {
        self.0 & (1 << p as u8) != 0
    }

    /// The set with `p` added.
    #[must_use]
    pub fn with(self, p: Purpose) -> Purposes {
        Purposes(self.0 | (1 << p as u8))
    }
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub Arc<str>);

        impl $name {
            /// The id as a string slice.
            #[must_use]
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                $name(Arc::from(s))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:?}", &*self.0)
            }
        }
    };
}

string_id!(
    /// A customer's id as given by the retailer (CSV `id` column).
    CustomerId
);
string_id!(
    /// A zone's id from `zones.toml`.
    ZoneId
);
string_id!(
    /// A campaign's id from `campaigns.toml`.
    CampaignId
);
string_id!(
    /// A message's id from `campaigns.toml`.
    MessageId
);
string_id!(
    /// A delivery channel's name (`whatsapp`, `sms`, `mms`, …).
    ChannelName
);

/// A stable numeric key for a customer (the registry's row id), used on the
/// hot path instead of the retailer's string id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CustomerKey(pub u32);

/// Why an identity string (customers file, API enrolment) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The kind before the first `:` is not one nearcast knows.
    #[error("unknown identity kind `{0}` (expected ibeacon, altbeacon, eddystone-uid or mac)")]
    UnknownKind(String),
    /// The kind is known but the fields after it are malformed.
    #[error("malformed {kind} identity: expected `{expected}`")]
    Malformed {
        /// The identity kind.
        kind: &'static str,
        /// The form expected.
        expected: &'static str,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rssi_median_of_odd_even_and_no_samples() {
        assert_eq!(Rssi::median(&mut [-70, -40, -72]), Some(-70.0));
        assert_eq!(Rssi::median(&mut [-70, -60, -90, -65]), Some(-67.5));
        assert_eq!(Rssi::median(&mut []), None);
    }

    #[test]
    fn bdaddr_round_trips_and_rejects_junk() {
        let a = BdAddr::parse("c4:7c:8d:6a:11:02").unwrap();
        assert_eq!(a.0, [0xC4, 0x7C, 0x8D, 0x6A, 0x11, 0x02]);
        assert_eq!(a.to_string(), "C4:7C:8D:6A:11:02");
        for bad in [
            "",
            "C4:7C:8D:6A:11",
            "C4:7C:8D:6A:11:0G",
            "C47C8D6A1102xxxxx",
            "C4:7C:8D:6A:11:023",
        ] {
            assert_eq!(BdAddr::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn uuid_parses_and_prints_canonically() {
        let u = Uuid128::parse("0000FEAA-0000-1000-8000-00805f9b34fb").unwrap();
        assert_eq!(u, Uuid128::EDDYSTONE);
        assert_eq!(u.to_string(), "0000feaa-0000-1000-8000-00805f9b34fb");
        assert_eq!(Uuid128::parse("0000feaa00001000800000805f9b34fb"), Some(u));
        assert_eq!(Uuid128::parse("0000feaa-0000-1000-8000-00805f9b34f"), None);
        assert_eq!(Uuid128::parse("0000feaa-00001-000-8000-00805f9b34fb"), None);
    }

    #[test]
    fn timestamp_arithmetic_saturates() {
        let t = Timestamp::from_secs_f64(1_763_712_000.125).unwrap();
        assert_eq!(t.0, 1_763_712_000_125);
        assert_eq!(t.as_secs(), 1_763_712_000);
        assert_eq!(
            Timestamp(i64::MAX).saturating_add(Duration::from_secs(1)),
            Timestamp(i64::MAX)
        );
        assert_eq!(Timestamp(5).since(Timestamp(10)), Duration::ZERO);
        assert_eq!(Timestamp::from_secs_f64(f64::NAN), None);
    }
}

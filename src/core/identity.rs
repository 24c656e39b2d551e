//! Who is this device? Maps decoded beacon identities and addresses to
//! opted-in customers through a snapshot of the consent registry.
//!
//! Identifiers are compared as keyed hashes (HMAC-SHA256 with the
//! installation secret): the registry never holds a device id in clear, and
//! neither does this module beyond a bounded in-memory cache that lets a
//! device be recognised again without hashing every advertisement. Unknown
//! devices stop here; nothing about them leaves this module.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::advert::Frame;
use super::rotating::{Ephemeral, RotatingIndex};
use super::types::{BdAddr, ChannelName, CustomerId, Purposes, Uuid128};
pub use super::types::{CustomerKey, ParseError};

/// A device identity a customer can be recognised by.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub enum Identity {
    /// iBeacon proximity UUID, major and minor.
    IBeacon {
        /// Proximity UUID.
        uuid: [u8; 16],
        /// Major.
        major: u16,
        /// Minor.
        minor: u16,
    },
    /// AltBeacon 20-byte beacon id.
    AltBeacon([u8; 20]),
    /// Eddystone-UID namespace and instance.
    EddystoneUid {
        /// 10-byte namespace.
        namespace: [u8; 10],
        /// 6-byte instance.
        instance: [u8; 6],
    },
    /// A device address: a BLE public address or a Wi-Fi MAC.
    Mac(BdAddr),
}

fn hex_array<const N: usize>(s: &str) -> Option<[u8; N]> {
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

impl Identity {
    /// Parses the customers-file form, e.g.
    /// `ibeacon:E2C56DB5-DFFB-48D2-B060-D0F5A71096E0:1:2`,
    /// `altbeacon:<40 hex>`, `eddystone-uid:<20 hex>:<12 hex>`, `mac:C4:7C:8D:6A:11:02`.
    ///
    /// # Errors
    /// [`ParseError`] naming the expected form.
    pub fn parse(s: &str) -> Result<Identity, ParseError> {
        let s = s.trim();
        let (kind, rest) = s.split_once(':').unwrap_or((s, ""));
        match kind.to_ascii_lowercase().as_str() {
            "ibeacon" => {
                let bad = ParseError::Malformed {
                    kind: "ibeacon",
                    expected: "ibeacon:<uuid>:<major>:<minor>",
                };
                let mut it = rest.split(':');
                let (Some(u), Some(ma), Some(mi), None) =
                    (it.next(), it.next(), it.next(), it.next())
                else {
                    return Err(bad);
                };
                let uuid = Uuid128::parse(u).ok_or(bad.clone())?.to_bytes();
                let major = ma.parse().map_err(|_| bad.clone())?;
                let minor = mi.parse().map_err(|_| bad)?;
                Ok(Identity::IBeacon { uuid, major, minor })
            }
            "altbeacon" => hex_array(rest)
                .map(Identity::AltBeacon)
                .ok_or(ParseError::Malformed {
                    kind: "altbeacon",
                    expected: "altbeacon:<40 hex digits>",
                }),
            "eddystone-uid" => {
                let bad = ParseError::Malformed {
                    kind: "eddystone-uid",
                    expected: "eddystone-uid:<namespace, 20 hex>:<instance, 12 hex>",
                };
                let (ns, inst) = rest.split_once(':').ok_or(bad.clone())?;
                Ok(Identity::EddystoneUid {
                    namespace: hex_array(ns).ok_or(bad.clone())?,
                    instance: hex_array(inst).ok_or(bad)?,
                })
            }
            "mac" => BdAddr::parse(rest)
                .map(Identity::Mac)
                .ok_or(ParseError::Malformed {
                    kind: "mac",
                    expected: "mac:AA:BB:CC:DD:EE:FF",
                }),
            other => Err(ParseError::UnknownKind(other.to_owned())),
        }
    }

    /// The identity a beacon frame carries, if it carries a stable one.
    #[must_use]
    pub fn from_frame(frame: &Frame) -> Option<Identity> {
        match *frame {
            Frame::IBeacon {
                uuid, major, minor, ..
            } => Some(Identity::IBeacon { uuid, major, minor }),
            Frame::AltBeacon { id, .. } => Some(Identity::AltBeacon(id)),
            Frame::EddystoneUid {
                namespace,
                instance,
                ..
            } => Some(Identity::EddystoneUid {
                namespace,
                instance,
            }),
            Frame::EddystoneUrl { .. }
            | Frame::EddystoneTlm { .. }
            | Frame::EddystoneEid { .. } => None,
        }
    }

    /// A short kind name for logs and counts (never the value).
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Identity::IBeacon { .. } => "ibeacon",
            Identity::AltBeacon(_) => "altbeacon",
            Identity::EddystoneUid { .. } => "eddystone-uid",
            Identity::Mac(_) => "mac",
        }
    }

    /// Writes the canonical byte form (a kind tag and the raw bytes) that is
    /// hashed, so that `E2C5…` and `e2c5…` hash alike.
    fn canonical(&self, out: &mut [u8; 21]) -> usize {
        match self {
            Identity::IBeacon { uuid, major, minor } => {
                out[0] = 1;
                out[1..17].copy_from_slice(uuid);
                out[17..19].copy_from_slice(&major.to_be_bytes());
                out[19..21].copy_from_slice(&minor.to_be_bytes());
                21
            }
            Identity::AltBeacon(id) => {
                out[0] = 2;
                out[1..21].copy_from_slice(id);
                21
            }
            Identity::EddystoneUid {
                namespace,
                instance,
            } => {
                out[0] = 3;
                out[1..11].copy_from_slice(namespace);
                out[11..17].copy_from_slice(instance);
                17
            }
            Identity::Mac(a) => {
                out[0] = 4;
                out[1..7].copy_from_slice(&a.0);
                7
            }
        }
    }
}

/// Shows the kind only: identities are personal data and must not end up in
/// logs through a stray `{:?}`.
impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identity({}, …)", self.kind())
    }
}

/// The keyed hash of an identity, as stored in the registry.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdHash(pub [u8; 32]);

impl fmt::Debug for IdHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdHash({}…)", hex::encode(&self.0[..4]))
    }
}

/// HMAC-SHA256 keyed with the installation secret.
#[derive(Clone)]
pub struct Hasher {
    keyed: Hmac<Sha256>,
}

impl Hasher {
    /// A hasher for this installation's 32-byte secret.
    #[must_use]
    pub fn new(secret: &[u8; 32]) -> Hasher {
        // HMAC zero-pads keys shorter than the hash's 64-byte block, so this
        // is exactly HMAC-SHA256 keyed with `secret`, without a fallible path.
        let mut block = [0u8; 64];
        block[..32].copy_from_slice(secret);
        Hasher {
            keyed: <Hmac<Sha256> as KeyInit>::new(&block.into()),
        }
    }

    /// The keyed hash of `identity`.
    #[must_use]
    pub fn hash(&self, identity: &Identity) -> IdHash {
        let mut buf = [0u8; 21];
        let n = identity.canonical(&mut buf);
        let mut mac = self.keyed.clone();
        mac.update(&buf[..n]);
        IdHash(mac.finalize().into_bytes().into())
    }
}

/// Which beacons carry the retailer app's rotating tokens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AppBeacons {
    /// iBeacons with this proximity UUID carry a token in major and minor.
    pub ibeacon_uuid: Option<[u8; 16]>,
    /// Eddystone-UIDs with this namespace carry a token as their instance.
    pub eddystone_namespace: Option<[u8; 10]>,
}

/// What the decision stage needs to know about a customer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CustomerInfo {
    /// Stable key.
    pub key: CustomerKey,
    /// The retailer's id.
    pub id: CustomerId,
    /// Segments (`gold`, `staff`, …).
    pub segments: Box<[Arc<str>]>,
    /// The customer's channels in order of preference, each with the
    /// purposes it may be used for (given, not withdrawn and, for offers,
    /// confirmed).
    pub channels: Box<[(ChannelName, Purposes)]>,
}

/// A snapshot of the consent registry: opted-in customers and the hashes of
/// their identities. Opted-out and erased customers are not in it.
#[derive(Default, Debug)]
pub struct Directory {
    by_hash: HashMap<IdHash, CustomerKey, foldhash::fast::RandomState>,
    customers: HashMap<CustomerKey, Arc<CustomerInfo>, foldhash::fast::RandomState>,
}

impl Directory {
    /// An empty directory with room for this many customers and identities.
    #[must_use]
    pub fn with_capacity(customers: usize, identities: usize) -> Directory {
        Directory {
            by_hash: HashMap::with_capacity_and_hasher(
                identities,
                foldhash::fast::RandomState::default(),
            ),
            customers: HashMap::with_capacity_and_hasher(
                customers,
                foldhash::fast::RandomState::default(),
            ),
        }
    }

    /// Links one more identity hash to a customer.
    pub fn add_identity(&mut self, hash: IdHash, key: CustomerKey) {
        self.by_hash.insert(hash, key);
    }

    /// Adds a customer and the hashes of their identities.
    pub fn insert(&mut self, info: CustomerInfo, identities: impl IntoIterator<Item = IdHash>) {
        let key = info.key;
        for h in identities {
            self.by_hash.insert(h, key);
        }
        self.customers.insert(key, Arc::new(info));
    }

    /// The customer an identity hash belongs to.
    #[must_use]
    pub fn lookup(&self, hash: &IdHash) -> Option<CustomerKey> {
        self.by_hash.get(hash).copied()
    }

    /// A customer's details.
    #[must_use]
    pub fn customer(&self, key: CustomerKey) -> Option<&Arc<CustomerInfo>> {
        self.customers.get(&key)
    }

    /// Every customer's key.
    pub fn customers(&self) -> impl Iterator<Item = CustomerKey> + '_ {
        self.customers.keys().copied()
    }

    /// Number of customers.
    #[must_use]
    pub fn len(&self) -> usize {
        self.customers.len()
    }

    /// True when nobody is enrolled.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.customers.is_empty()
    }
}

/// Counts of identification outcomes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IdentifyStats {
    /// Observations matched to a customer.
    pub known: u64,
    /// Observations of devices not linked to a consenting customer.
    pub unknown: u64,
    /// Keyed hashes computed (cache misses).
    pub hashed: u64,
}

/// Resolves identities to customers, remembering recent answers.
pub struct Resolver {
    hasher: Hasher,
    directory: Arc<Directory>,
    rotating: RotatingIndex,
    app: AppBeacons,
    cache: HashMap<Identity, Option<CustomerKey>, foldhash::fast::RandomState>,
    cache_cap: usize,
    /// What this resolver has seen.
    pub stats: IdentifyStats,
}

impl Resolver {
    /// Default bound on remembered identities (known and unknown).
    pub const DEFAULT_CACHE: usize = 50_000;

    /// A resolver over `directory`.
    #[must_use]
    pub fn new(hasher: Hasher, directory: Arc<Directory>) -> Resolver {
        Resolver {
            hasher,
            directory,
            rotating: RotatingIndex::new(std::time::Duration::from_secs(900)),
            app: AppBeacons::default(),
            cache: HashMap::default(),
            cache_cap: Self::DEFAULT_CACHE,
            stats: IdentifyStats::default(),
        }
    }

    /// Replaces the registry snapshot (after an import, opt-out or erasure),
    /// forgetting every remembered answer so the change takes effect at once.
    pub fn set_directory(&mut self, directory: Arc<Directory>) {
        self.directory = directory;
        self.cache.clear();
    }

    /// The current snapshot.
    #[must_use]
    pub fn directory(&self) -> &Arc<Directory> {
        &self.directory
    }

    /// Sets the rotating-identity index and which beacons carry app tokens.
    pub fn set_rotating(&mut self, index: RotatingIndex, app: AppBeacons) {
        self.rotating = index;
        self.app = app;
    }

    /// The rotating-identity index.
    #[must_use]
    pub fn rotating(&self) -> &RotatingIndex {
        &self.rotating
    }

    /// Moves the rotating ids to the windows around `now` when they change.
    pub fn advance(&mut self, now: super::types::Timestamp) {
        if self.rotating.next_change().is_some_and(|t| t <= now) {
            self.rotating.advance(now);
        }
    }

    /// The customer behind a frame carrying a rotating id, if any.
    fn resolve_rotating(&self, frame: &Frame) -> Option<CustomerKey> {
        if self.rotating.is_empty() {
            return None;
        }
        let e = match *frame {
            Frame::EddystoneEid { eid, .. } => Ephemeral::Eid(eid),
            Frame::IBeacon {
                uuid, major, minor, ..
            } if self.app.ibeacon_uuid == Some(uuid) => {
                Ephemeral::IBeaconToken((u32::from(major) << 16) | u32::from(minor))
            }
            Frame::EddystoneUid {
                namespace,
                instance,
                ..
            } if self.app.eddystone_namespace == Some(namespace) => Ephemeral::UidToken(instance),
            _ => return None,
        };
        self.rotating.resolve(&e)
    }

    /// The customer `identity` belongs to, if any.
    pub fn resolve(&mut self, identity: &Identity) -> Option<CustomerKey> {
        if let Some(hit) = self.cache.get(identity) {
            return *hit;
        }
        let key = self.directory.lookup(&self.hasher.hash(identity));
        self.stats.hashed += 1;
        if self.cache.len() >= self.cache_cap {
            // Bounded memory under a flood of random addresses: start over
            // rather than track recency per entry.
            self.cache.clear();
        }
        self.cache.insert(*identity, key);
        key
    }

    /// Identifies a BLE advertisement from its decoded frames and address:
    /// the first frame identity that belongs to a customer, else the address.
    pub fn identify<'f>(
        &mut self,
        frames: impl IntoIterator<Item = &'f Frame>,
        addr: BdAddr,
    ) -> Option<CustomerKey> {
        // Rotating ids are looked up in the precomputed table, never cached:
        // they change with the window.
        let found = frames
            .into_iter()
            .find_map(|f| {
                self.resolve_rotating(f)
                    .or_else(|| Identity::from_frame(f).and_then(|id| self.resolve(&id)))
            })
            .or_else(|| self.resolve(&Identity::Mac(addr)));
        match found {
            Some(_) => self.stats.known += 1,
            None => self.stats.unknown += 1,
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(key: u32, id: &str) -> CustomerInfo {
        CustomerInfo {
            key: CustomerKey(key),
            id: id.into(),
            segments: Box::new([]),
            channels: Box::new([("sms".into(), Purposes::ALL)]),
        }
    }

    #[test]
    fn parses_every_documented_form() {
        let ib = Identity::parse("ibeacon:E2C56DB5-DFFB-48D2-B060-D0F5A71096E0:1:2").unwrap();
        assert_eq!(
            ib,
            Identity::IBeacon {
                uuid: Uuid128::parse("e2c56db5-dffb-48d2-b060-d0f5a71096e0")
                    .unwrap()
                    .to_bytes(),
                major: 1,
                minor: 2
            }
        );
        let ed = Identity::parse("eddystone-uid:0102030405060708090a:a0a1a2a3a4a5").unwrap();
        assert_eq!(
            ed,
            Identity::EddystoneUid {
                namespace: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
                instance: [0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5]
            }
        );
        assert_eq!(
            Identity::parse("mac:C4:7C:8D:6A:11:02").unwrap(),
            Identity::Mac(BdAddr([0xC4, 0x7C, 0x8D, 0x6A, 0x11, 0x02]))
        );
        assert!(matches!(
            Identity::parse("altbeacon:2f234454cf6d4a0fadf2f4911ba9ffa600010002"),
            Ok(Identity::AltBeacon(_))
        ));
    }

    #[test]
    fn rejects_malformed_forms_with_the_expected_shape() {
        for bad in [
            "ibeacon:E2C56DB5-DFFB-48D2-B060-D0F5A71096E0:1",
            "ibeacon:E2C56DB5-DFFB-48D2-B060-D0F5A71096E0:1:70000",
            "ibeacon:nope:1:2",
            "eddystone-uid:0102:a0a1a2a3a4a5",
            "mac:C4:7C:8D:6A:11",
            "altbeacon:00",
        ] {
            assert!(
                matches!(Identity::parse(bad), Err(ParseError::Malformed { .. })),
                "{bad}"
            );
        }
        assert_eq!(
            Identity::parse("bluetooth:x"),
            Err(ParseError::UnknownKind("bluetooth".into()))
        );
    }

    #[test]
    fn hashing_is_keyed_and_case_insensitive() {
        let a = Identity::parse("ibeacon:e2c56db5-dffb-48d2-b060-d0f5a71096e0:1:2").unwrap();
        let b = Identity::parse("IBEACON:E2C56DB5-DFFB-48D2-B060-D0F5A71096E0:1:2").unwrap();
        let h1 = Hasher::new(&[1; 32]);
        let h2 = Hasher::new(&[2; 32]);
        assert_eq!(h1.hash(&a), h1.hash(&b));
        assert_ne!(h1.hash(&a), h2.hash(&a));
        // Different kinds with the same bytes never collide through the tag.
        assert_ne!(
            h1.hash(&Identity::Mac(BdAddr([1, 2, 3, 4, 5, 6]))),
            h1.hash(&Identity::EddystoneUid {
                namespace: [0; 10],
                instance: [1, 2, 3, 4, 5, 6]
            })
        );
    }

    #[test]
    fn identify_prefers_frames_then_address_and_counts() {
        let hasher = Hasher::new(&[3; 32]);
        let beacon = Identity::parse("eddystone-uid:0102030405060708090a:a0a1a2a3a4a5").unwrap();
        let mac = BdAddr([0xC4, 0x7C, 0x8D, 0x6A, 0x11, 0x02]);
        let mut dir = Directory::default();
        dir.insert(info(1, "anna"), [hasher.hash(&beacon)]);
        dir.insert(info(2, "ben"), [hasher.hash(&Identity::Mac(mac))]);
        let mut r = Resolver::new(hasher, Arc::new(dir));
        let frame = Frame::EddystoneUid {
            ranging: -20,
            namespace: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
            instance: [0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5],
        };
        assert_eq!(r.identify([&frame], mac), Some(CustomerKey(1)));
        assert_eq!(r.identify([], mac), Some(CustomerKey(2)));
        assert_eq!(r.identify([], BdAddr([9; 6])), None);
        assert_eq!(r.identify([], BdAddr([9; 6])), None);
        assert_eq!(
            r.stats,
            IdentifyStats {
                known: 2,
                unknown: 2,
                hashed: 3
            }
        );
        // A new snapshot without ben takes effect immediately.
        r.set_directory(Arc::new(Directory::default()));
        assert_eq!(r.identify([], mac), None);
    }

    #[test]
    fn rotating_ids_resolve_through_the_index_not_the_hash_directory() {
        use crate::core::rotating::{RotatingKey, app_token, eid};
        use crate::core::types::Timestamp;
        let uuid = Uuid128::parse("e2c56db5-dffb-48d2-b060-d0f5a71096e0")
            .unwrap()
            .to_bytes();
        let ik = [7u8; 16];
        let now = Timestamp::from_secs(1_800_000_000);
        let index = RotatingIndex::build(
            std::time::Duration::from_secs(900),
            [
                (CustomerKey(1), RotatingKey::App { key: [5; 32] }),
                (
                    CustomerKey(2),
                    RotatingKey::Eid {
                        identity_key: ik,
                        exponent: 8,
                        epoch: 1_799_000_000,
                    },
                ),
            ],
            now,
        );
        let mut r = Resolver::new(Hasher::new(&[3; 32]), Arc::new(Directory::default()));
        r.set_rotating(
            index,
            AppBeacons {
                ibeacon_uuid: Some(uuid),
                eddystone_namespace: None,
            },
        );
        let t = app_token(&[5; 32], now.0 / 900_000);
        let ib = Frame::IBeacon {
            uuid,
            major: u16::from_be_bytes([t[0], t[1]]),
            minor: u16::from_be_bytes([t[2], t[3]]),
            measured_power: -59,
        };
        assert_eq!(r.identify([&ib], BdAddr([1; 6])), Some(CustomerKey(1)));
        let e = Frame::EddystoneEid {
            ranging: -20,
            eid: eid(&ik, 8, 1_000_000),
        };
        assert_eq!(r.identify([&e], BdAddr([2; 6])), Some(CustomerKey(2)));
        // The same token under another UUID is nobody's.
        let other = Frame::IBeacon {
            uuid: [9; 16],
            major: 1,
            minor: 2,
            measured_power: -59,
        };
        assert_eq!(r.identify([&other], BdAddr([3; 6])), None);
    }

    #[test]
    fn debug_output_never_shows_the_identifier() {
        let id = Identity::parse("mac:C4:7C:8D:6A:11:02").unwrap();
        assert_eq!(format!("{id:?}"), "Identity(mac, …)");
    }
}

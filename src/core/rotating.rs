//! Rotating identities that only this box can resolve: Eddystone-EID and
//! app tokens.
//!
//! A static beacon id lets anyone follow a phone and copy it to collect
//! someone else's points. Rotating ids change every few minutes and are
//! computed from a per-customer key the box holds. Resolution must cost the
//! same whatever the enrolment, so the box precomputes the ids valid now
//! (the current window and one either way, for clock skew) for every
//! customer, and looks sightings up in a table. Ids of older windows are
//! not in the table: a replayed id is worthless once its window has passed.
//!
//! Pure: time is an argument.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use aes::Aes128;
use aes::cipher::{Array, BlockCipherEncrypt, KeyInit};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::types::Timestamp;
use super::types::{CustomerKey, ParseError};

/// A customer's rotating-identity key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum RotatingKey {
    /// Eddystone-EID: the beacon's identity key, rotation exponent K (the id
    /// changes every 2^K seconds) and the Unix time at which the beacon's
    /// time counter was 0.
    Eid {
        /// AES-128 identity key.
        identity_key: [u8; 16],
        /// Rotation period exponent, 0..=15.
        exponent: u8,
        /// Unix seconds at beacon time 0.
        epoch: i64,
    },
    /// The retailer app's token key (see [`app_token`]).
    App {
        /// HMAC-SHA256 key.
        key: [u8; 32],
    },
}

impl std::fmt::Debug for RotatingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RotatingKey::Eid { exponent, .. } => write!(f, "RotatingKey::Eid(K={exponent}, …)"),
            RotatingKey::App { .. } => f.write_str("RotatingKey::App(…)"),
        }
    }
}

impl RotatingKey {
    /// Parses the customers-file forms
    /// `eddystone-eid:<identity key, 32 hex>:<rotation exponent K>:<Unix time of beacon time 0>`
    /// and `app:<token key, 64 hex>`. `None` when `s` is not a rotating kind.
    #[must_use]
    pub fn parse(s: &str) -> Option<Result<RotatingKey, ParseError>> {
        let s = s.trim();
        let (kind, rest) = s.split_once(':')?;
        match kind.to_ascii_lowercase().as_str() {
            "eddystone-eid" => Some((|| {
                let bad = ParseError::Malformed {
                    kind: "eddystone-eid",
                    expected: "eddystone-eid:<identity key, 32 hex>:<rotation exponent 0-15>:<Unix time of beacon time 0>",
                };
                let mut it = rest.split(':');
                let (Some(key), Some(k), Some(t0), None) =
                    (it.next(), it.next(), it.next(), it.next())
                else {
                    return Err(bad);
                };
                let mut identity_key = [0u8; 16];
                hex::decode_to_slice(key, &mut identity_key).map_err(|_| bad.clone())?;
                let exponent: u8 = k.parse().ok().filter(|k| *k <= 15).ok_or(bad.clone())?;
                let epoch: i64 = t0.parse().map_err(|_| bad)?;
                Ok(RotatingKey::Eid {
                    identity_key,
                    exponent,
                    epoch,
                })
            })()),
            "app" => Some({
                let mut key = [0u8; 32];
                hex::decode_to_slice(rest, &mut key)
                    .map(|()| RotatingKey::App { key })
                    .map_err(|_| ParseError::Malformed {
                        kind: "app",
                        expected: "app:<token key, 64 hex>",
                    })
            }),
            _ => None,
        }
    }

    /// `eddystone-eid` or `app`.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            RotatingKey::Eid { .. } => "eddystone-eid",
            RotatingKey::App { .. } => "app",
        }
    }
}

fn aes128(key: &[u8; 16], block: [u8; 16]) -> [u8; 16] {
    let cipher = Aes128::new(&Array::from(*key));
    let mut b = Array::from(block);
    cipher.encrypt_block(&mut b);
    b.into()
}

/// The Eddystone-EID for beacon time `counter` (seconds): AES-128 of the
/// identity key over the salted high half of the counter gives the temporary
/// key; AES-128 of that over K and the counter with its low K bits cleared,
/// first 8 bytes, is the EID.
#[must_use]
pub fn eid(identity_key: &[u8; 16], exponent: u8, counter: u32) -> [u8; 8] {
    let mut t = [0u8; 16];
    t[11] = 0xFF;
    t[14..16].copy_from_slice(&((counter >> 16) as u16).to_be_bytes());
    let temporary = aes128(identity_key, t);
    let k = exponent.min(31);
    let quantized = if k >= 32 { 0 } else { (counter >> k) << k };
    let mut d = [0u8; 16];
    d[11] = k;
    d[12..16].copy_from_slice(&quantized.to_be_bytes());
    let out = aes128(&temporary, d);
    let mut e = [0u8; 8];
    e.copy_from_slice(&out[..8]);
    e
}

/// The app token for time slot `slot`: the first bytes of
/// HMAC-SHA256(key, "nearcast-app-token/1" ‖ slot as 8 big-endian bytes).
/// An iBeacon carries the first 4 as major (2) and minor (2); an
/// Eddystone-UID carries the first 6 as its instance.
#[must_use]
pub fn app_token(key: &[u8; 32], slot: i64) -> [u8; 8] {
    let mut block = [0u8; 64];
    block[..32].copy_from_slice(key);
    let mut mac = <Hmac<Sha256> as KeyInit>::new(&block.into());
    mac.update(b"nearcast-app-token/1");
    mac.update(&slot.to_be_bytes());
    let full = mac.finalize().into_bytes();
    let mut t = [0u8; 8];
    t.copy_from_slice(&full[..8]);
    t
}

/// What a sighting may carry that the index can resolve.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ephemeral {
    /// An Eddystone-EID.
    Eid([u8; 8]),
    /// An iBeacon with the app's UUID: major and minor as one number.
    IBeaconToken(u32),
    /// An Eddystone-UID with the app's namespace: the 6-byte instance.
    UidToken([u8; 6]),
}

/// Counts of index maintenance.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RotatingStats {
    /// Ids computed.
    pub computed: u64,
    /// Ids that two customers share in one window (resolved to nobody).
    pub collisions: u64,
}

const AMBIGUOUS: u32 = u32::MAX;

type Table<K> = HashMap<K, u32, foldhash::fast::RandomState>;

/// One slot's app tokens: iBeacon major/minor and Eddystone-UID instance.
struct AppSlot {
    slot: i64,
    ibeacon: Table<u32>,
    uid: Table<[u8; 6]>,
}

/// The ids valid now, for every customer with a rotating key.
pub struct RotatingIndex {
    slot_ms: i64,
    /// App-token tables for slots `s-1, s, s+1` (by slot number).
    app_slots: Vec<AppSlot>,
    app_keys: Vec<(CustomerKey, [u8; 32])>,
    eids: HashMap<[u8; 8], u32, foldhash::fast::RandomState>,
    eid_keys: HashMap<CustomerKey, Vec<EidState>, foldhash::fast::RandomState>,
    eid_timers: BinaryHeap<Reverse<(i64, u32)>>,
    eid_count: usize,
    current_slot: Option<i64>,
    /// Maintenance counts.
    pub stats: RotatingStats,
}

struct EidState {
    identity_key: [u8; 16],
    exponent: u8,
    epoch: i64,
    /// The window (counter >> K) whose neighbourhood is in the table.
    window: i64,
    /// The ids in the table for it.
    ids: [[u8; 8]; 3],
}

impl RotatingIndex {
    /// An empty index; app tokens change every `slot`.
    #[must_use]
    pub fn new(slot: std::time::Duration) -> RotatingIndex {
        RotatingIndex {
            slot_ms: super::types::millis(slot).max(1000),
            app_slots: Vec::new(),
            app_keys: Vec::new(),
            eids: HashMap::default(),
            eid_keys: HashMap::default(),
            eid_timers: BinaryHeap::new(),
            eid_count: 0,
            current_slot: None,
            stats: RotatingStats::default(),
        }
    }

    /// Builds the index for `keys` at `now`.
    #[must_use]
    pub fn build(
        slot: std::time::Duration,
        keys: impl IntoIterator<Item = (CustomerKey, RotatingKey)>,
        now: Timestamp,
    ) -> RotatingIndex {
        let mut index = RotatingIndex::new(slot);
        for (customer, key) in keys {
            match key {
                RotatingKey::App { key } => index.app_keys.push((customer, key)),
                RotatingKey::Eid {
                    identity_key,
                    exponent,
                    epoch,
                } => {
                    index.add_eid(customer, identity_key, exponent, epoch, now);
                }
            }
        }
        index.advance(now);
        index
    }

    /// Customers with keys.
    #[must_use]
    pub fn len(&self) -> usize {
        self.app_keys.len() + self.eid_count
    }

    /// True when no customer has a rotating key (asked per sighting: O(1)).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.app_keys.is_empty() && self.eid_count == 0
    }

    /// When [`RotatingIndex::advance`] next has work.
    #[must_use]
    pub fn next_change(&self) -> Option<Timestamp> {
        let app = self
            .current_slot
            .filter(|_| !self.app_keys.is_empty())
            .map(|s| Timestamp((s + 1) * self.slot_ms));
        let eid = self.eid_timers.peek().map(|Reverse((t, _))| Timestamp(*t));
        match (app, eid) {
            (Some(a), Some(e)) => Some(a.min(e)),
            (a, e) => a.or(e),
        }
    }

    /// Moves every table to the windows around `now`.
    pub fn advance(&mut self, now: Timestamp) {
        let slot = now.0.div_euclid(self.slot_ms);
        if self.current_slot != Some(slot) && !self.app_keys.is_empty() {
            self.app_slots
                .retain(|a| (slot - 1..=slot + 1).contains(&a.slot));
            for s in slot - 1..=slot + 1 {
                if !self.app_slots.iter().any(|a| a.slot == s) {
                    let table = self.app_table(s);
                    self.app_slots.push(table);
                }
            }
        }
        self.current_slot = Some(slot);
        while let Some(&Reverse((t, customer))) = self.eid_timers.peek() {
            if t > now.0 {
                break;
            }
            self.eid_timers.pop();
            let Some(mut states) = self.eid_keys.remove(&CustomerKey(customer)) else {
                continue;
            };
            for st in &mut states {
                let window = eid_window(st.epoch, st.exponent, now);
                if window != st.window {
                    for id in st.ids {
                        if self.eids.get(&id) == Some(&customer) {
                            self.eids.remove(&id);
                        }
                    }
                    st.window = window;
                    st.ids = eid_ids(&st.identity_key, st.exponent, window);
                    self.stats.computed += 3;
                    for id in st.ids {
                        insert_unique(&mut self.eids, id, customer, &mut self.stats);
                    }
                }
                self.eid_timers.push(Reverse((
                    eid_window_start(st.epoch, st.exponent, window + 1),
                    customer,
                )));
            }
            self.eid_keys.insert(CustomerKey(customer), states);
        }
    }

    fn app_table(&mut self, slot: i64) -> AppSlot {
        let n = self.app_keys.len();
        let mut ib = HashMap::with_capacity_and_hasher(n, foldhash::fast::RandomState::default());
        let mut uid = HashMap::with_capacity_and_hasher(n, foldhash::fast::RandomState::default());
        for (customer, key) in &self.app_keys {
            let t = app_token(key, slot);
            insert_unique(
                &mut ib,
                u32::from_be_bytes([t[0], t[1], t[2], t[3]]),
                customer.0,
                &mut self.stats,
            );
            insert_unique(
                &mut uid,
                [t[0], t[1], t[2], t[3], t[4], t[5]],
                customer.0,
                &mut self.stats,
            );
        }
        self.stats.computed += n as u64;
        AppSlot {
            slot,
            ibeacon: ib,
            uid,
        }
    }

    fn add_eid(
        &mut self,
        customer: CustomerKey,
        identity_key: [u8; 16],
        exponent: u8,
        epoch: i64,
        now: Timestamp,
    ) {
        let window = eid_window(epoch, exponent, now);
        let ids = eid_ids(&identity_key, exponent, window);
        self.stats.computed += 3;
        for id in ids {
            insert_unique(&mut self.eids, id, customer.0, &mut self.stats);
        }
        self.eid_timers.push(Reverse((
            eid_window_start(epoch, exponent, window + 1),
            customer.0,
        )));
        self.eid_count += 1;
        self.eid_keys.entry(customer).or_default().push(EidState {
            identity_key,
            exponent,
            epoch,
            window,
            ids,
        });
    }

    /// The customer an ephemeral id belongs to in the current windows.
    #[must_use]
    pub fn resolve(&self, e: &Ephemeral) -> Option<CustomerKey> {
        let hit = match e {
            Ephemeral::Eid(id) => self.eids.get(id).copied(),
            Ephemeral::IBeaconToken(t) => self
                .app_slots
                .iter()
                .find_map(|a| a.ibeacon.get(t).copied()),
            Ephemeral::UidToken(t) => self.app_slots.iter().find_map(|a| a.uid.get(t).copied()),
        };
        hit.filter(|c| *c != AMBIGUOUS).map(CustomerKey)
    }
}

fn insert_unique<K: std::hash::Hash + Eq>(
    map: &mut HashMap<K, u32, foldhash::fast::RandomState>,
    key: K,
    customer: u32,
    stats: &mut RotatingStats,
) {
    match map.entry(key) {
        std::collections::hash_map::Entry::Vacant(v) => {
            v.insert(customer);
        }
        std::collections::hash_map::Entry::Occupied(mut o) => {
            if *o.get() != customer {
                // Two customers share this id in this window: recognising
                // either would credit the wrong one, so it resolves to nobody.
                stats.collisions += 1;
                o.insert(AMBIGUOUS);
            }
        }
    }
}

/// The EID window (beacon counter >> K) at `now`.
fn eid_window(epoch: i64, exponent: u8, now: Timestamp) -> i64 {
    let counter = now.as_secs().saturating_sub(epoch).max(0);
    counter >> exponent.min(31)
}

/// Unix milliseconds at which `window` starts.
fn eid_window_start(epoch: i64, exponent: u8, window: i64) -> i64 {
    epoch
        .saturating_add(window.saturating_mul(1i64 << exponent.min(31)))
        .saturating_mul(1000)
}

fn eid_ids(key: &[u8; 16], exponent: u8, window: i64) -> [[u8; 8]; 3] {
    let k = exponent.min(31);
    let counter = |w: i64| u32::try_from((w.max(0)) << k).unwrap_or(u32::MAX);
    [
        eid(key, k, counter(window - 1)),
        eid(key, k, counter(window)),
        eid(key, k, counter(window + 1)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const KEY: [u8; 16] = [
        1, 2, 3, 4, 5, 6, 7, 8, 9, 0x0a, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16,
    ];

    #[test]
    fn parses_the_customers_file_forms() {
        let k = RotatingKey::parse("eddystone-eid:0102030405060708090A111213141516:10:1700000000")
            .unwrap()
            .unwrap();
        assert!(
            k == RotatingKey::Eid {
                identity_key: KEY,
                exponent: 10,
                epoch: 1_700_000_000
            }
        );
        let a = RotatingKey::parse(&format!("app:{}", "ab".repeat(32)))
            .unwrap()
            .unwrap();
        assert!(a == RotatingKey::App { key: [0xab; 32] });
        assert!(
            RotatingKey::parse("eddystone-eid:0102:10:0")
                .unwrap()
                .is_err()
        );
        assert!(
            RotatingKey::parse("eddystone-eid:0102030405060708090A111213141516:16:0")
                .unwrap()
                .is_err()
        );
        assert!(RotatingKey::parse("app:00").unwrap().is_err());
        assert!(RotatingKey::parse("mac:00:11:22:33:44:55").is_none());
        assert_eq!(format!("{a:?}"), "RotatingKey::App(…)");
    }

    #[test]
    fn eid_matches_the_published_test_vectors() {
        // Identity key 0102030405060708090A111213141516, K = 10.
        assert_eq!(hex::encode_upper(eid(&KEY, 10, 0)), "A9B76A71C5F89290");
        assert_eq!(hex::encode_upper(eid(&KEY, 10, 2000)), "4144413E45FEFA58");
        // Within one 1024 s window the id does not change.
        assert_eq!(eid(&KEY, 10, 1024), eid(&KEY, 10, 2047));
        assert_eq!(eid(&KEY, 10, 2000), eid(&KEY, 10, 1024));
    }

    #[test]
    fn app_token_reference_vector() {
        // The vector the README gives app developers (computed independently
        // with Python's hmac module): key = bytes 0x00..0x1f, 15-minute slots,
        // slot 1_966_080 = 2026-01-27T00:00:00Z.
        let key: [u8; 32] = std::array::from_fn(|i| u8::try_from(i).unwrap());
        assert_eq!(hex::encode(app_token(&key, 1_966_080)), "d307dab62afc349d");
        assert_ne!(app_token(&key, 1_966_080), app_token(&key, 1_966_081));
    }

    /// Customer 7's EID beacon (`KEY`, exponent 10, from `epoch`), indexed at `now`.
    fn eid_index(epoch: i64, now: Timestamp) -> RotatingIndex {
        RotatingIndex::build(
            Duration::from_secs(900),
            [(
                CustomerKey(7),
                RotatingKey::Eid {
                    identity_key: KEY,
                    exponent: 10,
                    epoch,
                },
            )],
            now,
        )
    }

    #[test]
    fn eid_resolves_with_one_period_of_skew_and_never_an_old_window() {
        let epoch = 1_700_000_000;
        let now = Timestamp::from_secs(epoch + 10 * 1024 + 500); // window 10
        let index = eid_index(epoch, now);
        let at = |w: u32| Ephemeral::Eid(eid(&KEY, 10, w * 1024));
        assert_eq!(index.resolve(&at(10)), Some(CustomerKey(7)));
        assert_eq!(
            index.resolve(&at(9)),
            Some(CustomerKey(7)),
            "beacon clock one period behind"
        );
        assert_eq!(
            index.resolve(&at(11)),
            Some(CustomerKey(7)),
            "beacon clock one period ahead"
        );
        assert_eq!(
            index.resolve(&at(8)),
            None,
            "a replayed id from an old window"
        );
        assert_eq!(index.resolve(&at(12)), None);
    }

    #[test]
    fn the_index_follows_the_clock() {
        let epoch = 1_700_000_000;
        let start = Timestamp::from_secs(epoch + 10 * 1024);
        let mut index = eid_index(epoch, start);
        assert_eq!(
            index.next_change(),
            Some(Timestamp::from_secs(epoch + 11 * 1024))
        );
        let at = |w: u32| Ephemeral::Eid(eid(&KEY, 10, w * 1024));
        index.advance(Timestamp::from_secs(epoch + 12 * 1024 + 1));
        assert_eq!(index.resolve(&at(9)), None);
        assert_eq!(index.resolve(&at(10)), None);
        assert_eq!(index.resolve(&at(13)), Some(CustomerKey(7)));
    }

    #[test]
    fn app_tokens_change_with_the_slot_and_old_ones_are_refused() {
        let key: [u8; 32] = [9; 32];
        let slot = Duration::from_secs(900);
        let t = |s: i64| app_token(&key, s);
        let now = Timestamp(1_000 * 900_000 + 1000); // slot 1000
        let mut index =
            RotatingIndex::build(slot, [(CustomerKey(3), RotatingKey::App { key })], now);
        let ib =
            |s| Ephemeral::IBeaconToken(u32::from_be_bytes([t(s)[0], t(s)[1], t(s)[2], t(s)[3]]));
        let uid =
            |s: i64| Ephemeral::UidToken([t(s)[0], t(s)[1], t(s)[2], t(s)[3], t(s)[4], t(s)[5]]);
        for s in 999..=1001 {
            assert_eq!(index.resolve(&ib(s)), Some(CustomerKey(3)));
            assert_eq!(index.resolve(&uid(s)), Some(CustomerKey(3)));
        }
        assert_eq!(index.resolve(&ib(998)), None);
        // Two slots later, the tokens of slot 1000 are history.
        index.advance(Timestamp(1_002 * 900_000));
        assert_eq!(index.resolve(&ib(1000)), None);
        assert_eq!(index.resolve(&ib(1003)), Some(CustomerKey(3)));
        assert_eq!(index.next_change(), Some(Timestamp(1_003 * 900_000)));
    }

    #[test]
    fn a_token_two_customers_share_resolves_to_nobody() {
        let mut stats = RotatingStats::default();
        let mut m = HashMap::default();
        insert_unique(&mut m, 5u32, 1, &mut stats);
        insert_unique(&mut m, 5u32, 1, &mut stats);
        assert_eq!(stats.collisions, 0);
        insert_unique(&mut m, 5u32, 2, &mut stats);
        assert_eq!((m.get(&5).copied(), stats.collisions), (Some(AMBIGUOUS), 1));
    }
}

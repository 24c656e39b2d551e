//! Customers and consent: CSV import (all or nothing; each row checked by
//! `core::enrolment`, like an API enrolment), listing, opt-out, erasure,
//! and the registry snapshot the identity stage works from.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io::Read;
use std::sync::Arc;

use rusqlite::{OptionalExtension, params};

use super::{Error, Result, Store};
use crate::core::enrolment::{Enrolled, Enrolment};
use crate::core::identity::{CustomerInfo, CustomerKey, Directory, Hasher, IdHash};
use crate::core::rotating::RotatingKey;
use crate::core::types::{ChannelName, Purpose, Purposes, Timestamp};

/// The header a customers file must have.
pub const HEADER: [&str; 8] = [
    "id",
    "first_name",
    "phone",
    "channels",
    "consent_at",
    "consent_source",
    "identities",
    "segments",
];

/// What [`Store::forget`] did, beyond erasing the customer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Forgotten {
    /// Why the database could not be compacted afterwards, if it could
    /// not: until it is, old copies of the erased values may remain in its
    /// free pages and its write-ahead log.
    pub not_compacted: Option<String>,
}

/// A refused row of a customers file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RowError {
    /// 1-based line in the file (the header is line 1).
    pub line: u64,
    /// What is wrong (never echoes an identifier's value).
    pub message: String,
}

impl fmt::Display for RowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// What an import did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// New customers.
    pub added: usize,
    /// Existing customers updated.
    pub updated: usize,
    /// Identities stored (hashed).
    pub identities: usize,
}

/// Everything the database holds about a customer, for `customers show`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CustomerRecord {
    /// Stable key.
    pub key: i64,
    /// Retailer's id.
    pub id: String,
    /// First name.
    pub first_name: String,
    /// Phone (E.164), if any.
    pub phone: Option<String>,
    /// Channels in preference order.
    pub channels: Vec<String>,
    /// Segments.
    pub segments: Vec<String>,
    /// When consent was given.
    pub consent_at: Timestamp,
    /// Where consent was captured.
    pub consent_source: String,
    /// When the customer opted out, if they did.
    pub opted_out_at: Option<Timestamp>,
    /// Kinds of identities on file (`ibeacon`, `mac`, …); values are hashed.
    pub identity_kinds: Vec<String>,
    /// Visits recorded.
    pub visits: i64,
    /// Points balance.
    pub balance: i64,
    /// Messages queued (any state).
    pub messages: i64,
}

/// Optional columns after the required ones, by position in the file.
#[derive(Clone, Copy, Debug, Default)]
struct Extras {
    purposes: Option<usize>,
    consent_text: Option<usize>,
    confirmed_at: Option<usize>,
}

/// Optional columns a customers file may add after the required eight.
pub const OPTIONAL: [&str; 3] = ["purposes", "consent_text", "confirmed_at"];

/// A customers-file row as the enrolment it describes (each list field is
/// one element; the enrolment's checks split it).
fn enrolment(rec: &csv::StringRecord, extras: Extras) -> Enrolment {
    let field = |i: usize| rec.get(i).unwrap_or("").to_owned();
    let list = |i: usize| vec![field(i)];
    let optional = |i: Option<usize>| i.map(field);
    Enrolment {
        id: field(0),
        first_name: field(1),
        phone: Some(field(2)),
        channels: list(3),
        consent_at: field(4),
        consent_source: field(5),
        identities: list(6),
        segments: list(7),
        purposes: extras.purposes.map(list).unwrap_or_default(),
        consent_text: optional(extras.consent_text),
        confirmed_at: extras.confirmed_at.map(|i| Some(field(i))),
    }
}

fn rotating_bytes(k: &RotatingKey) -> Vec<u8> {
    match k {
        RotatingKey::Eid { identity_key, .. } => identity_key.to_vec(),
        RotatingKey::App { key } => key.to_vec(),
    }
}

fn rotating_key_owner(
    conn: &rusqlite::Connection,
) -> rusqlite::Result<rusqlite::CachedStatement<'_>> {
    conn.prepare_cached(
        "SELECT c.id FROM rotating_keys k JOIN customers c ON c.key = k.customer WHERE k.key = ?1",
    )
}

fn split(s: &str, sep: char) -> Vec<String> {
    s.split(sep)
        .filter(|x| !x.is_empty())
        .map(str::to_owned)
        .collect()
}

impl Store {
    /// Adds or updates one customer (the local API's `POST /v1/customers`)
    /// with the same checks and hashing as [`Store::import_customers`].
    ///
    /// # Errors
    /// [`Error::Import`] with what is wrong (line 2 is the customer), or
    /// SQLite errors.
    pub fn enrol(
        &mut self,
        e: &Enrolment,
        hasher: &Hasher,
        now: Timestamp,
    ) -> Result<ImportReport> {
        match e.check(hasher) {
            Ok(c) => self.store_customers(vec![(2, c)], Vec::new(), now),
            Err(message) => Err(Error::Import(vec![RowError { line: 2, message }])),
        }
    }

    /// Imports a customers CSV. Every row is checked first; if any is bad,
    /// nothing is imported and every bad row is reported by line. Existing
    /// customers (by id) are updated and their identities replaced; a newer
    /// consent than an opt-out re-enrols.
    ///
    /// # Errors
    /// [`Error::Import`] with the bad rows, or SQLite errors.
    pub fn import_customers(
        &mut self,
        input: impl Read,
        hasher: &Hasher,
        now: Timestamp,
    ) -> Result<ImportReport> {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(true)
            .from_reader(input);
        let header: Vec<String> = match reader.headers() {
            Ok(h) => h.iter().map(|s| s.trim().to_ascii_lowercase()).collect(),
            Err(e) => {
                return Err(Error::Import(vec![RowError {
                    line: 1,
                    message: format!("unreadable header: {e}"),
                }]));
            }
        };
        let mut extras = Extras::default();
        let mut extras_ok = header.len() >= HEADER.len() && header[..HEADER.len()] == HEADER;
        for (i, name) in header.iter().enumerate().skip(HEADER.len()) {
            let slot = match name.as_str() {
                "purposes" => &mut extras.purposes,
                "consent_text" => &mut extras.consent_text,
                "confirmed_at" => &mut extras.confirmed_at,
                _ => {
                    extras_ok = false;
                    continue;
                }
            };
            extras_ok &= slot.replace(i).is_none();
        }
        if !extras_ok {
            return Err(Error::Import(vec![RowError {
                line: 1,
                message: format!(
                    "the header must be `{}`, optionally followed by any of {}",
                    HEADER.join(","),
                    OPTIONAL.join(", ")
                ),
            }]));
        }
        let columns = header.len();
        let mut rows = Vec::new();
        let mut errors = Vec::new();
        let mut ids = HashSet::new();
        let mut owner: HashMap<IdHash, String> = HashMap::new();
        for rec in reader.records() {
            let rec = match rec {
                Ok(r) => r,
                Err(e) => {
                    let line = e.position().map_or(0, csv::Position::line);
                    errors.push(RowError {
                        line,
                        message: "unreadable row (check quoting)".into(),
                    });
                    continue;
                }
            };
            let line = rec.position().map_or(0, csv::Position::line);
            if rec.len() != columns {
                errors.push(RowError {
                    line,
                    message: format!("expected {columns} fields, found {}", rec.len()),
                });
                continue;
            }
            match enrolment(&rec, extras).check(hasher) {
                Err(message) => errors.push(RowError { line, message }),
                Ok(row) => {
                    if !ids.insert(row.id.clone()) {
                        errors.push(RowError {
                            line,
                            message: format!("customer {:?} appears twice in the file", row.id),
                        });
                        continue;
                    }
                    for (h, kind) in &row.identities {
                        if let Some(other) = owner.insert(*h, row.id.clone())
                            && other != row.id
                        {
                            errors.push(RowError {
                                line,
                                message: format!(
                                    "a {kind} identity is also given for customer {other:?}"
                                ),
                            });
                        }
                    }
                    rows.push((line, row));
                }
            }
        }
        self.store_customers(rows, errors, now)
    }

    /// Writes checked customers, all or nothing, after refusing identities
    /// and keys already enrolled for someone else; `errors` are the rows
    /// refused so far (then nothing is written).
    fn store_customers(
        &mut self,
        rows: Vec<(u64, Enrolled)>,
        mut errors: Vec<RowError>,
        now: Timestamp,
    ) -> Result<ImportReport> {
        for (line, row) in &rows {
            if let Err(message) = row.check_consent_time(now) {
                errors.push(RowError {
                    line: *line,
                    message,
                });
            }
        }
        let ids: HashSet<String> = rows.iter().map(|(_, r)| r.id.clone()).collect();
        // Identities already enrolled for someone not in this file.
        {
            let mut st = self.conn.prepare_cached(
                "SELECT c.id FROM identities i JOIN customers c ON c.key = i.customer WHERE i.hash = ?1",
            )?;
            let mut keys = rotating_key_owner(&self.conn)?;
            let mut seen_keys: HashMap<Vec<u8>, String> = HashMap::new();
            for (line, row) in &rows {
                for k in &row.rotating {
                    let bytes = rotating_bytes(k);
                    let other = match seen_keys.insert(bytes.clone(), row.id.clone()) {
                        Some(o) if o != row.id => Some(o),
                        _ => keys
                            .query_row([&bytes], |r| r.get::<_, String>(0))
                            .optional()?
                            .filter(|o| *o != row.id && !ids.contains(o)),
                    };
                    if let Some(other) = other {
                        errors.push(RowError {
                            line: *line,
                            message: format!(
                                "a {} key already belongs to customer {other:?}",
                                k.kind()
                            ),
                        });
                    }
                }
                for (h, kind) in &row.identities {
                    let other: Option<String> =
                        st.query_row([&h.0[..]], |r| r.get(0)).optional()?;
                    if let Some(other) = other.filter(|o| *o != row.id && !ids.contains(o)) {
                        errors.push(RowError {
                            line: *line,
                            message: format!(
                                "a {kind} identity already belongs to customer {other:?}"
                            ),
                        });
                    }
                }
            }
        }
        if !errors.is_empty() {
            errors.sort_by_key(|e| e.line);
            return Err(Error::Import(errors));
        }

        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut report = ImportReport::default();
        {
            let mut find =
                tx.prepare_cached("SELECT key, opted_out_at FROM customers WHERE id = ?1")?;
            let mut insert = tx.prepare_cached(
                "INSERT INTO customers (id, first_name, phone, channels, segments, consent_at, consent_source, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)",
            )?;
            let mut update = tx.prepare_cached(
                "UPDATE customers SET first_name = ?2, phone = ?3, channels = ?4, segments = ?5, consent_at = ?6,
                        consent_source = ?7, updated_at = ?8,
                        opted_out_at = CASE WHEN opted_out_at IS NOT NULL AND opted_out_at < ?6 THEN NULL ELSE opted_out_at END
                 WHERE id = ?1",
            )?;
            let mut clear = tx.prepare_cached("DELETE FROM identities WHERE customer = ?1")?;
            let mut add_identity = tx.prepare_cached(
                "INSERT INTO identities (hash, customer, kind) VALUES (?1, ?2, ?3)",
            )?;
            let mut clear_keys =
                tx.prepare_cached("DELETE FROM rotating_keys WHERE customer = ?1")?;
            let mut add_key = tx.prepare_cached(
                "INSERT INTO rotating_keys (customer, kind, key, exponent, epoch) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            let mut clear_consents =
                tx.prepare_cached("DELETE FROM consents WHERE customer = ?1")?;
            let mut add_consent = tx.prepare_cached(
                "INSERT INTO consents (customer, channel, purpose, given_at, source, text_version, confirmed_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            for (_, r) in &rows {
                let existing: Option<(i64, Option<i64>)> = find
                    .query_row([&r.id], |x| Ok((x.get(0)?, x.get(1)?)))
                    .optional()?;
                // The same values for a new customer and an update.
                let row = params![
                    r.id,
                    r.first_name,
                    r.phone,
                    r.channels.join("|"),
                    r.segments.join(";"),
                    r.consent_at.0,
                    r.consent_source,
                    now.0
                ];
                let key = if let Some((key, _)) = existing {
                    update.execute(row)?;
                    clear.execute([key])?;
                    clear_keys.execute([key])?;
                    clear_consents.execute([key])?;
                    report.updated += 1;
                    key
                } else {
                    insert.execute(row)?;
                    report.added += 1;
                    tx.last_insert_rowid()
                };
                // An opted-out customer's identities are not kept: they are
                // an unknown device until they consent again.
                let opted_out: bool = tx.query_row(
                    "SELECT opted_out_at IS NOT NULL FROM customers WHERE key = ?1",
                    [key],
                    |x| x.get(0),
                )?;
                if !opted_out {
                    for (h, kind) in &r.identities {
                        add_identity.execute(params![&h.0[..], key, kind])?;
                        report.identities += 1;
                    }
                    for k in &r.rotating {
                        let (exponent, epoch) = match k {
                            RotatingKey::Eid {
                                exponent, epoch, ..
                            } => (i64::from(*exponent), *epoch),
                            RotatingKey::App { .. } => (0, 0),
                        };
                        add_key.execute(params![
                            key,
                            k.kind(),
                            rotating_bytes(k),
                            exponent,
                            epoch
                        ])?;
                        report.identities += 1;
                    }
                    for channel in &r.channels {
                        for p in Purpose::ALL.into_iter().filter(|p| r.purposes.contains(*p)) {
                            add_consent.execute(params![
                                key,
                                channel,
                                p.name(),
                                r.consent_at.0,
                                r.consent_source,
                                r.consent_text,
                                r.confirmed_at.map(|t| t.0)
                            ])?;
                        }
                    }
                }
            }
        }
        tx.commit()?;
        Ok(report)
    }

    /// The registry snapshot: opted-in customers and their identity hashes.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn directory(&self) -> Result<Directory> {
        let (customers, identities): (i64, i64) = self.conn.query_row(
            "SELECT (SELECT count(*) FROM customers WHERE opted_out_at IS NULL), (SELECT count(*) FROM identities)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let mut dir = Directory::with_capacity(
            usize::try_from(customers).unwrap_or(0),
            usize::try_from(identities).unwrap_or(0),
        );
        // Identities of opted-out customers are deleted at opt-out, so every
        // stored identity belongs to a consenting customer.
        let mut st = self.conn.prepare_cached(
            "SELECT i.customer, i.hash FROM identities i JOIN customers c ON c.key = i.customer WHERE c.opted_out_at IS NULL",
        )?;
        let mut rows = st.query([])?;
        while let Some(r) = rows.next()? {
            let blob = r.get_ref(1)?.as_blob().map_err(rusqlite::Error::from)?;
            if let (Ok(h), Ok(k)) = (
                <[u8; 32]>::try_from(blob),
                u32::try_from(r.get::<_, i64>(0)?),
            ) {
                dir.add_identity(IdHash(h), CustomerKey(k));
            }
        }
        let mut names: HashMap<String, Arc<str>> = HashMap::new();
        // One row per customer, with the usable consents folded in as
        // `channel:purpose,…`: given, not withdrawn, and confirmed for offers.
        let mut st = self.conn.prepare_cached(
            "SELECT c.key, c.id, c.segments, c.channels,
                    (SELECT group_concat(s.channel || ':' || s.purpose, ',') FROM consents s
                     WHERE s.customer = c.key AND s.withdrawn_at IS NULL
                       AND (s.purpose <> 'offers' OR s.confirmed_at IS NOT NULL))
             FROM customers c WHERE c.opted_out_at IS NULL",
        )?;
        let mut rows = st.query([])?;
        while let Some(r) = rows.next()? {
            let key: i64 = r.get(0)?;
            let Ok(k) = u32::try_from(key) else { continue };
            let id: String = r.get(1)?;
            let segments: String = r.get(2)?;
            let channels: String = r.get(3)?;
            let consents: Option<String> = r.get(4)?;
            let purposes_of = |channel: &str| {
                consents.as_deref().unwrap_or("").split(',').fold(
                    Purposes::default(),
                    |acc, item| match item.split_once(':') {
                        Some((c, p)) if c == channel => {
                            Purpose::parse(p).map_or(acc, |p| acc.with(p))
                        }
                        _ => acc,
                    },
                )
            };
            // Channel and segment names repeat across customers: share one
            // allocation each (100,000 customers would otherwise hold
            // hundreds of thousands of copies of "sms").
            let mut intern = |name: &str| -> Arc<str> {
                if let Some(a) = names.get(name) {
                    return a.clone();
                }
                let a: Arc<str> = Arc::from(name);
                names.insert(name.to_owned(), a.clone());
                a
            };
            let info = CustomerInfo {
                key: CustomerKey(k),
                id: id.as_str().into(),
                segments: segments
                    .split(';')
                    .filter(|s| !s.is_empty())
                    .map(&mut intern)
                    .collect(),
                channels: channels
                    .split('|')
                    .filter(|s| !s.is_empty())
                    .map(|c| (ChannelName(intern(c)), purposes_of(c)))
                    .collect(),
            };
            dir.insert(info, []);
        }
        Ok(dir)
    }

    /// Rotating-identity keys of opted-in customers.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn rotating_keys(&self) -> Result<Vec<(CustomerKey, RotatingKey)>> {
        let mut st = self.conn.prepare_cached(
            "SELECT k.customer, k.kind, k.key, k.exponent, k.epoch FROM rotating_keys k
             JOIN customers c ON c.key = k.customer WHERE c.opted_out_at IS NULL",
        )?;
        let mut out = Vec::new();
        let mut rows = st.query([])?;
        while let Some(r) = rows.next()? {
            let Ok(customer) = u32::try_from(r.get::<_, i64>(0)?) else {
                continue;
            };
            let kind: String = r.get(1)?;
            let key = r.get_ref(2)?.as_blob().map_err(rusqlite::Error::from)?;
            let parsed = match kind.as_str() {
                "eddystone-eid" => {
                    <[u8; 16]>::try_from(key)
                        .ok()
                        .map(|identity_key| RotatingKey::Eid {
                            identity_key,
                            exponent: u8::try_from(r.get::<_, i64>(3).unwrap_or(0))
                                .unwrap_or(0)
                                .min(15),
                            epoch: r.get(4).unwrap_or(0),
                        })
                }
                "app" => <[u8; 32]>::try_from(key)
                    .ok()
                    .map(|key| RotatingKey::App { key }),
                _ => None,
            };
            if let Some(k) = parsed {
                out.push((CustomerKey(customer), k));
            }
        }
        Ok(out)
    }

    /// All customers, by id.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn customers(&self) -> Result<Vec<CustomerRecord>> {
        let ids: Vec<String> = {
            let mut st = self.conn.prepare("SELECT id FROM customers ORDER BY id")?;
            st.query_map([], |r| r.get(0))?
                .collect::<std::result::Result<_, _>>()?
        };
        ids.iter().map(|id| self.customer(id)).collect()
    }

    /// One customer.
    ///
    /// # Errors
    /// [`Error::NoSuchCustomer`] or SQLite errors.
    pub fn customer(&self, id: &str) -> Result<CustomerRecord> {
        let c = &self.conn;
        let rec = c
            .query_row(
                "SELECT key, id, first_name, phone, channels, segments, consent_at, consent_source, opted_out_at
                 FROM customers WHERE id = ?1",
                [id],
                |r| {
                    Ok(CustomerRecord {
                        key: r.get(0)?,
                        id: r.get(1)?,
                        first_name: r.get(2)?,
                        phone: r.get(3)?,
                        channels: split(&r.get::<_, String>(4)?, '|'),
                        segments: split(&r.get::<_, String>(5)?, ';'),
                        consent_at: Timestamp(r.get(6)?),
                        consent_source: r.get(7)?,
                        opted_out_at: r.get::<_, Option<i64>>(8)?.map(Timestamp),
                        identity_kinds: Vec::new(),
                        visits: 0,
                        balance: 0,
                        messages: 0,
                    })
                },
            )
            .optional()?;
        let Some(mut rec) = rec else {
            return Err(Error::NoSuchCustomer(id.to_owned()));
        };
        let mut st = c.prepare_cached(
            "SELECT kind FROM identities WHERE customer = ?1 UNION ALL SELECT kind FROM rotating_keys WHERE customer = ?1 ORDER BY kind",
        )?;
        rec.identity_kinds = st
            .query_map([rec.key], |r| r.get(0))?
            .collect::<std::result::Result<_, _>>()?;
        rec.visits = c.query_row(
            "SELECT count(*) FROM visits WHERE customer = ?1",
            [rec.key],
            |r| r.get(0),
        )?;
        rec.balance = c.query_row(
            "SELECT coalesce(sum(points), 0) FROM ledger WHERE customer = ?1",
            [rec.key],
            |r| r.get(0),
        )?;
        rec.messages = c.query_row(
            "SELECT count(*) FROM outbox WHERE customer = ?1",
            [rec.key],
            |r| r.get(0),
        )?;
        Ok(rec)
    }

    /// Opts a customer out at once: no further messages (queued ones are
    /// cancelled), and their device identities are deleted so the box no
    /// longer recognises them. The record of consent and opt-out stays.
    ///
    /// # Errors
    /// [`Error::NoSuchCustomer`] or SQLite errors.
    pub fn opt_out(&mut self, id: &str, now: Timestamp) -> Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let key: Option<i64> = tx
            .query_row("SELECT key FROM customers WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()?;
        let Some(key) = key else {
            return Err(Error::NoSuchCustomer(id.to_owned()));
        };
        tx.execute("UPDATE customers SET opted_out_at = coalesce(opted_out_at, ?2), updated_at = ?2 WHERE key = ?1", params![key, now.0])?;
        tx.execute("DELETE FROM identities WHERE customer = ?1", [key])?;
        tx.execute("DELETE FROM rotating_keys WHERE customer = ?1", [key])?;
        tx.execute(
            "UPDATE consents SET withdrawn_at = coalesce(withdrawn_at, ?2) WHERE customer = ?1",
            params![key, now.0],
        )?;
        tx.execute(
            "UPDATE outbox SET state = 'failed', error = 'opted_out', lease_until = NULL
             WHERE customer = ?1 AND state IN ('queued', 'sending')",
            [key],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Withdraws a customer's consent on one channel (every purpose), e.g.
    /// after a STOP on that channel. Messages already queued for it fall
    /// over to another consented channel or fail.
    ///
    /// # Errors
    /// [`Error::NoSuchCustomer`] or SQLite errors.
    pub fn withdraw_consent(&mut self, id: &str, channel: &str, now: Timestamp) -> Result<usize> {
        let key: Option<i64> = self
            .conn
            .query_row("SELECT key FROM customers WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()?;
        let Some(key) = key else {
            return Err(Error::NoSuchCustomer(id.to_owned()));
        };
        Ok(self.conn.execute(
            "UPDATE consents SET withdrawn_at = ?3 WHERE customer = ?1 AND channel = ?2 AND withdrawn_at IS NULL",
            params![key, channel, now.0],
        )?)
    }

    /// Records a past visit from the retailer's own history, so visit-count
    /// and win-back campaigns see customers' earlier visits.
    ///
    /// # Errors
    /// [`Error::NoSuchCustomer`] or SQLite errors.
    pub fn import_visit(
        &mut self,
        id: &str,
        arrived: Timestamp,
        left: Option<Timestamp>,
    ) -> Result<()> {
        let n = self.conn.prepare_cached(
            "INSERT INTO visits (customer, arrived_at, left_at) SELECT key, ?2, ?3 FROM customers WHERE id = ?1 AND opted_out_at IS NULL",
        )?.execute(params![id, arrived.0, left.map(|t| t.0)])?;
        if n == 0 {
            return Err(Error::NoSuchCustomer(id.to_owned()));
        }
        Ok(())
    }

    /// Erases a customer: every row that mentions them (visits, cooldowns,
    /// points, decisions, outbox) goes with the customer row, in one
    /// transaction; then the database is compacted ([`Store::compact`]) so
    /// the old pages do not linger in its free list or the WAL. The erasure
    /// stands even when the compaction cannot be done (a full disk): the
    /// result says so.
    ///
    /// # Errors
    /// [`Error::NoSuchCustomer`] or SQLite errors; then nothing was erased.
    pub fn forget(&mut self, id: &str) -> Result<Forgotten> {
        let n = self
            .conn
            .execute("DELETE FROM customers WHERE id = ?1", [id])?;
        if n == 0 {
            return Err(Error::NoSuchCustomer(id.to_owned()));
        }
        Ok(Forgotten {
            not_compacted: self.compact().err().map(|e| e.to_string()),
        })
    }

    /// Rewrites the database without free pages and empties the WAL:
    /// secure_delete has zeroed erased cells, the checkpoint moves that into
    /// the database file, VACUUM rebuilds it without the free pages, and
    /// the last checkpoint empties the WAL of the old page images. Needs
    /// free disk space about the database's size.
    ///
    /// # Errors
    /// SQLite errors (a full disk).
    pub fn compact(&mut self) -> Result<()> {
        self.checkpoint()?;
        self.conn.execute_batch("VACUUM")?;
        self.checkpoint()
    }

    /// Everything stored about a customer (the right of access), as JSON.
    /// Identifiers appear as stored: keyed hashes; rotating keys by kind and
    /// fingerprint.
    ///
    /// # Errors
    /// [`Error::NoSuchCustomer`] or SQLite errors.
    pub fn export(&self, id: &str) -> Result<serde_json::Value> {
        use serde_json::{Value, json};
        let c = self.customer(id)?;
        let key = c.key;
        let ts =
            |t: Option<i64>| t.map_or(Value::Null, |t| Value::String(Timestamp(t).to_string()));
        let rows = |sql: &str,
                    f: &dyn Fn(&rusqlite::Row<'_>) -> rusqlite::Result<Value>|
         -> Result<Vec<Value>> {
            let mut st = self.conn.prepare(sql)?;
            let v = st
                .query_map([key], |r| f(r))?
                .collect::<std::result::Result<Vec<_>, _>>()?;
            Ok(v)
        };
        let consents = rows(
            "SELECT channel, purpose, given_at, source, text_version, confirmed_at, withdrawn_at FROM consents WHERE customer = ?1 ORDER BY channel, purpose",
            &|r| {
                Ok(
                    json!({"channel": r.get::<_, String>(0)?, "purpose": r.get::<_, String>(1)?, "given_at": ts(r.get(2)?), "source": r.get::<_, String>(3)?, "text_version": r.get::<_, String>(4)?, "confirmed_at": ts(r.get(5)?), "withdrawn_at": ts(r.get(6)?)}),
                )
            },
        )?;
        let identities = rows(
            "SELECT kind, hash FROM identities WHERE customer = ?1 ORDER BY kind",
            &|r| {
                Ok(
                    json!({"kind": r.get::<_, String>(0)?, "hmac_sha256": hex::encode(r.get::<_, Vec<u8>>(1)?)}),
                )
            },
        )?;
        let keys = rows(
            "SELECT kind, key, exponent, epoch FROM rotating_keys WHERE customer = ?1 ORDER BY kind",
            &|r| {
                use sha2::Digest;
                let fp = sha2::Sha256::digest(r.get::<_, Vec<u8>>(1)?);
                Ok(
                    json!({"kind": r.get::<_, String>(0)?, "fingerprint": hex::encode(&fp[..8]), "exponent": r.get::<_, i64>(2)?, "epoch": r.get::<_, i64>(3)?}),
                )
            },
        )?;
        let visits = rows(
            "SELECT arrived_at, left_at FROM visits WHERE customer = ?1 ORDER BY arrived_at",
            &|r| Ok(json!({"arrived_at": ts(r.get(0)?), "left_at": ts(r.get(1)?)})),
        )?;
        let ledger = rows(
            "SELECT at, points, campaign FROM ledger WHERE customer = ?1 ORDER BY at",
            &|r| {
                Ok(
                    json!({"at": ts(r.get(0)?), "points": r.get::<_, i64>(1)?, "campaign": r.get::<_, Option<String>>(2)?}),
                )
            },
        )?;
        let decisions = rows(
            "SELECT at, campaign, event, zone, outcome, reason, channel FROM decisions WHERE customer = ?1 ORDER BY at, id",
            &|r| {
                Ok(
                    json!({"at": ts(r.get(0)?), "campaign": r.get::<_, String>(1)?, "event": r.get::<_, String>(2)?, "zone": r.get::<_, String>(3)?, "outcome": r.get::<_, String>(4)?, "reason": r.get::<_, Option<String>>(5)?, "channel": r.get::<_, Option<String>>(6)?}),
                )
            },
        )?;
        let messages = rows(
            "SELECT created_at, campaign, message, channel, variant, state, sent_at, points, balance FROM outbox WHERE customer = ?1 ORDER BY created_at, id",
            &|r| {
                Ok(
                    json!({"decided_at": ts(r.get(0)?), "campaign": r.get::<_, String>(1)?, "message": r.get::<_, String>(2)?, "channel": r.get::<_, String>(3)?, "variant": r.get::<_, String>(4)?, "state": r.get::<_, String>(5)?, "sent_at": ts(r.get(6)?), "points": r.get::<_, i64>(7)?, "balance": r.get::<_, i64>(8)?}),
                )
            },
        )?;
        let cooldowns = rows(
            "SELECT campaign, last_at FROM cooldowns WHERE customer = ?1 ORDER BY campaign",
            &|r| Ok(json!({"campaign": r.get::<_, String>(0)?, "last_at": ts(r.get(1)?)})),
        )?;
        Ok(json!({
            "customer": {
                "id": c.id, "first_name": c.first_name, "phone": c.phone, "channels": c.channels,
                "segments": c.segments, "consent_at": c.consent_at.to_string(), "consent_source": c.consent_source,
                "opted_out_at": c.opted_out_at.map(|t| t.to_string()), "points_balance": c.balance,
            },
            "consents": consents,
            "identities": identities,
            "rotating_keys": keys,
            "visits": visits,
            "points": ledger,
            "cooldowns": cooldowns,
            "decisions": decisions,
            "messages": messages,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::identity::Identity;

    const HEAD: &str =
        "id,first_name,phone,channels,consent_at,consent_source,identities,segments\n";

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("n.db")).unwrap();
        (dir, s)
    }

    fn hasher() -> Hasher {
        Hasher::new(&[9; 32])
    }

    fn import(s: &mut Store, body: &str) -> Result<ImportReport> {
        s.import_customers(
            format!("{HEAD}{body}").as_bytes(),
            &hasher(),
            Timestamp::from_secs(1_800_000_000),
        )
    }

    const ANNA: &str = "c1,Anna,+4915112345678,whatsapp|sms,2026-03-01T10:00:00Z,app,ibeacon:E2C56DB5-DFFB-48D2-B060-D0F5A71096E0:1:2;mac:C4:7C:8D:6A:11:02,gold\n";

    #[test]
    fn imports_and_shows_a_customer() {
        let (_d, mut s) = store();
        let r = import(&mut s, ANNA).unwrap();
        assert_eq!(
            r,
            ImportReport {
                added: 1,
                updated: 0,
                identities: 2
            }
        );
        let c = s.customer("c1").unwrap();
        assert_eq!(c.first_name, "Anna");
        assert_eq!(c.channels, ["whatsapp", "sms"]);
        assert_eq!(c.segments, ["gold"]);
        assert_eq!(c.identity_kinds, ["ibeacon", "mac"]);
        assert_eq!(c.consent_at, Timestamp::from_secs(1_772_359_200));
        let dir = s.directory().unwrap();
        assert_eq!(dir.len(), 1);
        let id = Identity::parse("mac:c4:7c:8d:6a:11:02").unwrap();
        assert_eq!(
            dir.lookup(&hasher().hash(&id)),
            Some(CustomerKey(u32::try_from(c.key).unwrap()))
        );
        // Re-import updates in place.
        let r = import(&mut s, &ANNA.replace("Anna", "Anne")).unwrap();
        assert_eq!(
            r,
            ImportReport {
                added: 0,
                updated: 1,
                identities: 2
            }
        );
        assert_eq!(s.customer("c1").unwrap().first_name, "Anne");
    }

    #[test]
    fn a_bad_file_imports_nothing_and_names_every_bad_line() {
        let (_d, mut s) = store();
        let body = format!(
            "{ANNA}c2,Ben,+4915112345679,sms,,app,mac:00:11:22:33:44:55,\n\
             c3,Clara,0151 234,sms,2026-03-01T10:00:00Z,app,mac:00:11:22:33:44:56,\n\
             c4,Dora,+4915112345670,sms,2026-03-01T10:00:00Z,app,ibeacon:nope,\n\
             c5,Emil,+4915112345671,sms,2026-03-01T10:00:00Z,app,mac:C4:7C:8D:6A:11:02,\n\
             c1,Anna,+4915112345678,sms,2026-03-01T10:00:00Z,app,mac:00:11:22:33:44:57,\n\
             c6,Fritz,+4915112345672\n"
        );
        let Err(Error::Import(errors)) = import(&mut s, &body) else {
            panic!("accepted a bad file")
        };
        let got: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            got,
            [
                "line 3: `consent_at` is empty: only customers who opted in can be enrolled",
                "line 4: `phone` must be in international form, e.g. +4915112345678",
                "line 5: identity 1: malformed ibeacon identity: expected `ibeacon:<uuid>:<major>:<minor>`",
                "line 6: a mac identity is also given for customer \"c1\"",
                "line 7: customer \"c1\" appears twice in the file",
                "line 8: expected 8 fields, found 3",
            ]
        );
        assert_eq!(s.stats().unwrap().customers, 0);
        // No identifier's value appears in any message.
        assert!(
            got.iter()
                .all(|m| !m.contains("C4:7C") && !m.contains("E2C56DB5"))
        );
    }

    #[test]
    fn header_must_match() {
        let (_d, mut s) = store();
        let e = s
            .import_customers("id,name\nc1,Anna\n".as_bytes(), &hasher(), Timestamp(0))
            .unwrap_err();
        assert!(e.to_string().contains("1 bad row"));
    }

    #[test]
    fn opt_out_removes_identities_and_cancels_queued_messages() {
        let (_d, mut s) = store();
        import(&mut s, ANNA).unwrap();
        s.opt_out("c1", Timestamp::from_secs(1_800_000_100))
            .unwrap();
        let c = s.customer("c1").unwrap();
        assert_eq!(c.opted_out_at, Some(Timestamp::from_secs(1_800_000_100)));
        assert!(c.identity_kinds.is_empty());
        assert!(s.directory().unwrap().is_empty());
        // Re-importing with the old consent does not re-enrol; a newer one does.
        import(&mut s, ANNA).unwrap();
        assert!(s.directory().unwrap().is_empty());
        // (A consent after the opt-out, and not after the import.)
        import(
            &mut s,
            &ANNA.replace("2026-03-01T10:00:00Z", "2027-01-15T08:30:00Z"),
        )
        .unwrap();
        assert_eq!(s.directory().unwrap().len(), 1);
        assert!(matches!(
            s.opt_out("nobody", Timestamp(0)),
            Err(Error::NoSuchCustomer(_))
        ));
    }
}

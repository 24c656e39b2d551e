//! Customers and consent: CSV import (all or nothing), listing, opt-out,
//! erasure, and the registry snapshot the identity stage works from.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io::Read;
use std::sync::Arc;

use rusqlite::{OptionalExtension, params};

use super::{Error, Result, Store};
use crate::core::identity::{CustomerInfo, CustomerKey, Directory, Hasher, IdHash, Identity};
use crate::core::types::Timestamp;

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

struct Row {
    line: u64,
    id: String,
    first_name: String,
    phone: Option<String>,
    channels: String,
    segments: String,
    consent_at: Timestamp,
    consent_source: String,
    identities: Vec<(IdHash, &'static str)>,
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// E.164: `+`, then 8 to 15 digits, no leading zero.
fn valid_phone(s: &str) -> bool {
    let Some(digits) = s.strip_prefix('+') else {
        return false;
    };
    (8..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}

fn parse_row(
    line: u64,
    rec: &csv::StringRecord,
    hasher: &Hasher,
) -> std::result::Result<Row, String> {
    let field = |i: usize| rec.get(i).unwrap_or("").trim();
    let id = field(0);
    if id.is_empty() || id.len() > 64 || id.chars().any(char::is_control) {
        return Err("`id` must be 1 to 64 printable characters".into());
    }
    let first_name = field(1);
    if first_name.chars().count() > 64 || first_name.chars().any(char::is_control) {
        return Err("`first_name` must be at most 64 printable characters".into());
    }
    let phone = match field(2) {
        "" => None,
        p => {
            let p: String = p
                .chars()
                .filter(|c| !matches!(c, ' ' | '-' | '(' | ')'))
                .collect();
            if !valid_phone(&p) {
                return Err("`phone` must be in international form, e.g. +4915112345678".into());
            }
            Some(p)
        }
    };
    let channels: Vec<&str> = field(3)
        .split('|')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    if let Some(bad) = channels.iter().find(|c| !valid_name(c)) {
        return Err(format!(
            "channel {bad:?} must be lowercase letters, digits, `-` or `_` (separate channels with |)"
        ));
    }
    if !channels.is_empty() && phone.is_none() {
        return Err("`phone` is needed to reach the customer on their channels".into());
    }
    let consent_at = match field(4) {
        "" => {
            return Err(
                "`consent_at` is empty: only customers who opted in can be enrolled".into(),
            );
        }
        t => t
            .parse::<jiff::Timestamp>()
            .map(|ts| Timestamp(ts.as_millisecond()))
            .map_err(|_| {
                "`consent_at` must be an RFC 3339 time, e.g. 2026-03-01T10:00:00Z".to_owned()
            })?,
    };
    let consent_source = field(5);
    if consent_source.is_empty() {
        return Err("`consent_source` is empty: say where consent was captured (app, captive-portal, kiosk, …)".into());
    }
    let mut identities = Vec::new();
    for (i, text) in field(6)
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .enumerate()
    {
        let identity = Identity::parse(text).map_err(|e| format!("identity {}: {e}", i + 1))?;
        identities.push((hasher.hash(&identity), identity.kind()));
    }
    if identities.is_empty() {
        return Err(
            "`identities` is empty: give at least one, e.g. ibeacon:<uuid>:<major>:<minor>".into(),
        );
    }
    let segments: Vec<&str> = field(7)
        .split([';', '|'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if let Some(bad) = segments.iter().find(|s| !valid_name(s)) {
        return Err(format!(
            "segment {bad:?} must be lowercase letters, digits, `-` or `_`"
        ));
    }
    Ok(Row {
        line,
        id: id.to_owned(),
        first_name: first_name.to_owned(),
        phone,
        channels: channels.join("|"),
        segments: segments.join(";"),
        consent_at,
        consent_source: consent_source.to_owned(),
        identities,
    })
}

fn split(s: &str, sep: char) -> Vec<String> {
    s.split(sep)
        .filter(|x| !x.is_empty())
        .map(str::to_owned)
        .collect()
}

impl Store {
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
        if header != HEADER {
            return Err(Error::Import(vec![RowError {
                line: 1,
                message: format!("the header must be exactly `{}`", HEADER.join(",")),
            }]));
        }
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
            if rec.len() != HEADER.len() {
                errors.push(RowError {
                    line,
                    message: format!("expected {} fields, found {}", HEADER.len(), rec.len()),
                });
                continue;
            }
            match parse_row(line, &rec, hasher) {
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
                    rows.push(row);
                }
            }
        }
        // Identities already enrolled for someone not in this file.
        {
            let mut st = self.conn.prepare_cached(
                "SELECT c.id FROM identities i JOIN customers c ON c.key = i.customer WHERE i.hash = ?1",
            )?;
            for row in &rows {
                for (h, kind) in &row.identities {
                    let other: Option<String> =
                        st.query_row([&h.0[..]], |r| r.get(0)).optional()?;
                    if let Some(other) = other.filter(|o| *o != row.id && !ids.contains(o)) {
                        errors.push(RowError {
                            line: row.line,
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
                 WHERE key = ?1",
            )?;
            let mut clear = tx.prepare_cached("DELETE FROM identities WHERE customer = ?1")?;
            let mut add_identity = tx.prepare_cached(
                "INSERT INTO identities (hash, customer, kind) VALUES (?1, ?2, ?3)",
            )?;
            for r in &rows {
                let existing: Option<(i64, Option<i64>)> = find
                    .query_row([&r.id], |x| Ok((x.get(0)?, x.get(1)?)))
                    .optional()?;
                let key = if let Some((key, _)) = existing {
                    update.execute(params![
                        key,
                        r.first_name,
                        r.phone,
                        r.channels,
                        r.segments,
                        r.consent_at.0,
                        r.consent_source,
                        now.0
                    ])?;
                    clear.execute([key])?;
                    report.updated += 1;
                    key
                } else {
                    insert.execute(params![
                        r.id,
                        r.first_name,
                        r.phone,
                        r.channels,
                        r.segments,
                        r.consent_at.0,
                        r.consent_source,
                        now.0
                    ])?;
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
        let mut dir = Directory::default();
        let mut hashes: HashMap<i64, Vec<IdHash>> = HashMap::new();
        let mut st = self.conn.prepare_cached(
            "SELECT i.customer, i.hash FROM identities i JOIN customers c ON c.key = i.customer WHERE c.opted_out_at IS NULL",
        )?;
        let mut rows = st.query([])?;
        while let Some(r) = rows.next()? {
            let blob: Vec<u8> = r.get(1)?;
            if let Ok(h) = <[u8; 32]>::try_from(blob.as_slice()) {
                hashes.entry(r.get(0)?).or_default().push(IdHash(h));
            }
        }
        let mut st = self.conn.prepare_cached(
            "SELECT key, id, segments, channels FROM customers WHERE opted_out_at IS NULL",
        )?;
        let mut rows = st.query([])?;
        while let Some(r) = rows.next()? {
            let key: i64 = r.get(0)?;
            let Ok(k) = u32::try_from(key) else { continue };
            let id: String = r.get(1)?;
            let segments: String = r.get(2)?;
            let channels: String = r.get(3)?;
            let info = CustomerInfo {
                key: CustomerKey(k),
                id: id.as_str().into(),
                segments: segments
                    .split(';')
                    .filter(|s| !s.is_empty())
                    .map(Arc::from)
                    .collect(),
                channels: channels
                    .split('|')
                    .filter(|s| !s.is_empty())
                    .map(Into::into)
                    .collect(),
            };
            dir.insert(info, hashes.remove(&key).unwrap_or_default());
        }
        Ok(dir)
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
        let mut st =
            c.prepare_cached("SELECT kind FROM identities WHERE customer = ?1 ORDER BY kind")?;
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
        tx.execute(
            "UPDATE outbox SET state = 'failed', error = 'opted_out', lease_until = NULL
             WHERE customer = ?1 AND state IN ('queued', 'sending')",
            [key],
        )?;
        tx.commit()?;
        Ok(())
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
    /// points, decisions, outbox) goes with the customer row, and the WAL is
    /// checkpointed so the old pages do not linger there.
    ///
    /// # Errors
    /// [`Error::NoSuchCustomer`] or SQLite errors.
    pub fn forget(&mut self, id: &str) -> Result<()> {
        let n = self
            .conn
            .execute("DELETE FROM customers WHERE id = ?1", [id])?;
        if n == 0 {
            return Err(Error::NoSuchCustomer(id.to_owned()));
        }
        self.checkpoint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        import(&mut s, &ANNA.replace("2026-03-01", "2027-03-01")).unwrap();
        assert_eq!(s.directory().unwrap().len(), 1);
        assert!(matches!(
            s.opt_out("nobody", Timestamp(0)),
            Err(Error::NoSuchCustomer(_))
        ));
    }
}

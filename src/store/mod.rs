//! The database: the only module with SQL.
//!
//! SQLite in WAL mode (checked, not assumed), numbered migrations in
//! `store/migrations/`, and a database newer than this binary is refused.
//! Owns customers and consent, hashed identities, visits, cooldowns, the
//! points ledger, the decision audit trail and the outbox. Time is always a
//! bound parameter, never SQLite's clock.

mod broadcast;
mod customers;
mod inbound;
mod ledger;
mod outbox;
mod retention;
mod secret;

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use rusqlite_migration::{M, Migrations, SchemaVersion};

pub use broadcast::BROADCAST_EVENT;
pub use customers::{CustomerRecord, Forgotten, ImportReport, RowError};
pub use inbound::{Conversion, ConversionOutcome, DeliveryStatus, PhoneMatch, StatusOutcome};
pub use outbox::{Claim, DueFallback, FollowUpResult, OutboxItem, OutboxRow, OutboxState};
pub use retention::Purged;
pub use secret::load_or_create_secret;

/// Database errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// SQLite said no.
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A schema migration failed.
    #[error("database migration: {0}")]
    Migration(#[from] rusqlite_migration::Error),
    /// The database was written by a newer nearcast.
    #[error(
        "database {path} has schema version {found}, newer than this nearcast understands ({known}); upgrade nearcast or restore a backup"
    )]
    TooNew {
        /// The file.
        path: PathBuf,
        /// Its schema version.
        found: usize,
        /// The newest version this binary knows.
        known: usize,
    },
    /// A read-only open found an older schema it may not migrate.
    #[error(
        "database {path} has schema version {found}, older than this nearcast's {known}; run `nearcast stats --db {path}` once to migrate it"
    )]
    NeedsMigration {
        /// The file.
        path: PathBuf,
        /// Its schema version.
        found: usize,
        /// The version this binary writes.
        known: usize,
    },
    /// A pragma did not take effect.
    #[error("database {path}: PRAGMA {pragma} is {got:?}, expected {want:?}")]
    Pragma {
        /// The file.
        path: PathBuf,
        /// Which pragma.
        pragma: &'static str,
        /// What SQLite reports.
        got: String,
        /// What was asked for.
        want: &'static str,
    },
    /// The installation secret could not be read or created.
    #[error("installation secret {path}: {reason}")]
    Secret {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The database file itself could not be prepared.
    #[error("database {path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A customers file was refused; nothing of it was imported.
    #[error("{} bad row(s); nothing was imported", .0.len())]
    Import(Vec<RowError>),
    /// No customer with that id.
    #[error("no customer with id {0:?}")]
    NoSuchCustomer(String),
}

/// Result alias.
pub type Result<T> = std::result::Result<T, Error>;

fn migrations() -> Migrations<'static> {
    Migrations::new(vec![
        M::up(include_str!("migrations/0001_init.sql")),
        M::up(include_str!(
            "migrations/0002_consent_and_rotating_keys.sql"
        )),
        M::up(include_str!("migrations/0003_delivery.sql")),
    ])
}

/// The number of schema versions this binary knows.
#[must_use]
pub fn schema_version() -> usize {
    3
}

/// A connection to the nearcast database.
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

impl Store {
    /// Opens (creating if needed) and migrates the database at `path`.
    ///
    /// # Errors
    /// SQLite errors, a failed pragma, a failed migration, or
    /// [`Error::TooNew`].
    pub fn open(path: &Path) -> Result<Store> {
        Store::open_with(path, false)
    }

    /// Opens an existing database without writing to it (dry runs): no
    /// migration, no file created.
    ///
    /// # Errors
    /// SQLite errors, or [`Error::TooNew`] / a schema older than this binary.
    pub fn open_read_only(path: &Path) -> Result<Store> {
        Store::open_with(path, true)
    }

    fn open_with(path: &Path, read_only: bool) -> Result<Store> {
        if read_only {
            let conn = Connection::open_with_flags(
                path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            conn.busy_timeout(Duration::from_secs(5))?;
            let version = migrations().current_version(&conn)?;
            let v: usize = (&version).into();
            if v > schema_version() {
                return Err(Error::TooNew {
                    path: path.to_owned(),
                    found: v,
                    known: schema_version(),
                });
            }
            if v < schema_version() {
                return Err(Error::NeedsMigration {
                    path: path.to_owned(),
                    found: v,
                    known: schema_version(),
                });
            }
            return Ok(Store {
                conn,
                path: path.to_owned(),
            });
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            let _ = std::fs::create_dir_all(dir);
        }
        let mut conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        let path = path.to_owned();
        // The database holds consent records and the keys of rotating
        // identities: owner-only, like the installation secret. SQLite
        // gives its WAL and shared-memory files the database's mode.
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .map_err(|e| Error::File {
                path: path.clone(),
                reason: format!("cannot make it owner-only: {e}"),
            })?;
        // Pragmas are set outside any transaction and read back: SQLite
        // silently ignores a misspelt or inapplicable pragma.
        check_pragma(&conn, &path, "journal_mode", "wal")?;
        check_pragma(&conn, &path, "synchronous", "1")?; // NORMAL: durable at checkpoints, safe with WAL; outbox claims are FULL
        check_pragma(&conn, &path, "foreign_keys", "1")?;
        check_pragma(&conn, &path, "secure_delete", "1")?; // erased rows are overwritten, not just unlinked
        conn.busy_timeout(Duration::from_secs(5))?;

        let m = migrations();
        if let SchemaVersion::Outside(v) = m.current_version(&conn)? {
            return Err(Error::TooNew {
                path,
                found: v.get(),
                known: schema_version(),
            });
        }
        m.to_latest(&mut conn)?;
        Ok(Store { conn, path })
    }

    /// The database file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Copies the WAL into the database and truncates it (at shutdown and
    /// after erasure).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn checkpoint(&self) -> Result<()> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(())
    }

    /// A number that changes whenever customers or identities change.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn registry_version(&self) -> Result<i64> {
        Ok(self
            .conn
            .prepare_cached("SELECT value FROM meta WHERE name = 'registry'")?
            .query_row([], |r| r.get(0))?)
    }

    /// Messages accepted by a channel, by campaign.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn sent_by_campaign(&self) -> Result<Vec<(String, i64)>> {
        let mut st = self.conn.prepare_cached(
            "SELECT campaign, count(*) FROM outbox WHERE state IN ('sent', 'delivered', 'read') GROUP BY campaign ORDER BY campaign",
        )?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    /// Counts for `nearcast stats`.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn stats(&self) -> Result<Stats> {
        let c = &self.conn;
        let one = |sql: &str| c.query_row(sql, [], |r| r.get::<_, i64>(0));
        let pairs = |sql: &str| -> Result<Vec<(String, i64)>> {
            let mut st = c.prepare(sql)?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<std::result::Result<_, _>>()?)
        };
        Ok(Stats {
            customers: one("SELECT count(*) FROM customers WHERE opted_out_at IS NULL")?,
            opted_out: one("SELECT count(*) FROM customers WHERE opted_out_at IS NOT NULL")?,
            identities: one("SELECT count(*) FROM identities")?,
            visits: one("SELECT count(*) FROM visits")?,
            points_awarded: one("SELECT coalesce(sum(points), 0) FROM ledger WHERE points > 0")?,
            decisions_act: one("SELECT count(*) FROM decisions WHERE outcome = 'act'")?,
            suppressed: pairs(
                "SELECT reason, count(*) FROM decisions WHERE outcome = 'suppressed' GROUP BY reason ORDER BY reason",
            )?,
            outbox: pairs("SELECT state, count(*) FROM outbox GROUP BY state ORDER BY state")?,
            by_campaign: pairs(
                "SELECT campaign, count(*) FROM outbox GROUP BY campaign ORDER BY campaign",
            )?,
        })
    }
}

fn check_pragma(
    conn: &Connection,
    path: &Path,
    pragma: &'static str,
    want: &'static str,
) -> Result<()> {
    // `journal_mode` answers the update with the new mode; the others answer
    // nothing, so every pragma is read back with a query of its own.
    let value = if pragma == "journal_mode" {
        "WAL"
    } else {
        want
    };
    if pragma == "journal_mode" {
        conn.query_row(&format!("PRAGMA journal_mode = {value}"), [], |_| Ok(()))?;
    } else {
        conn.pragma_update(None, pragma, value)?;
    }
    let got: String = conn.pragma_query_value(None, pragma, |r| {
        r.get::<_, rusqlite::types::Value>(0).map(|v| match v {
            rusqlite::types::Value::Integer(i) => i.to_string(),
            rusqlite::types::Value::Text(t) => t.to_ascii_lowercase(),
            other => format!("{other:?}"),
        })
    })?;
    if got == want {
        Ok(())
    } else {
        Err(Error::Pragma {
            path: path.to_owned(),
            pragma,
            got,
            want,
        })
    }
}

/// Database-wide counts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Opted-in customers.
    pub customers: i64,
    /// Customers who opted out.
    pub opted_out: i64,
    /// Hashed identities.
    pub identities: i64,
    /// Visits recorded.
    pub visits: i64,
    /// Points awarded in total.
    pub points_awarded: i64,
    /// Decisions that acted.
    pub decisions_act: i64,
    /// Suppressed decisions by reason.
    pub suppressed: Vec<(String, i64)>,
    /// Outbox rows by state.
    pub outbox: Vec<(String, i64)>,
    /// Outbox rows by campaign.
    pub by_campaign: Vec<(String, i64)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_validate() {
        migrations().validate().unwrap();
        assert_eq!(migrations_count(), schema_version());
    }

    fn migrations_count() -> usize {
        let mut conn = Connection::open_in_memory().unwrap();
        migrations().to_latest(&mut conn).unwrap();
        conn.pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))
            .map(|v| usize::try_from(v).unwrap())
            .unwrap()
    }

    #[test]
    fn opens_in_wal_mode_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n.db");
        drop(Store::open(&path).unwrap());
        let s = Store::open(&path).unwrap();
        let mode: String = s
            .conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        assert!(dir.path().join("n.db-wal").exists());
    }

    #[test]
    fn the_database_and_its_wal_are_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n.db");
        let s = Store::open(&path).unwrap();
        s.registry_version().unwrap();
        for p in [path.clone(), dir.path().join("n.db-wal")] {
            assert_eq!(
                std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
                0o600,
                "{}",
                p.display()
            );
        }
    }

    #[test]
    fn refuses_a_database_from_a_newer_nearcast() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n.db");
        drop(Store::open(&path).unwrap());
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 7)
            .unwrap();
        match Store::open(&path) {
            Err(Error::TooNew {
                found: 7, known: 3, ..
            }) => {}
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("a newer database was accepted"),
        }
    }
}

-- nearcast schema, version 1.
-- Times are Unix milliseconds (UTC). Device identifiers are stored only as
-- HMAC-SHA256 hashes keyed with the installation secret. Every table that
-- mentions a customer cascades from `customers`, so erasure is one DELETE.

CREATE TABLE customers (
    key            INTEGER PRIMARY KEY,
    id             TEXT NOT NULL UNIQUE,
    first_name     TEXT NOT NULL,
    phone          TEXT,
    channels       TEXT NOT NULL,           -- preference order: 'whatsapp|sms'
    segments       TEXT NOT NULL DEFAULT '',-- 'gold;newsletter'
    consent_at     INTEGER NOT NULL,
    consent_source TEXT NOT NULL,
    opted_out_at   INTEGER,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL
) STRICT;

CREATE TABLE identities (
    hash     BLOB PRIMARY KEY,
    customer INTEGER NOT NULL REFERENCES customers(key) ON DELETE CASCADE,
    kind     TEXT NOT NULL
) STRICT, WITHOUT ROWID;
CREATE INDEX identities_customer ON identities(customer);

CREATE TABLE visits (
    id         INTEGER PRIMARY KEY,
    customer   INTEGER NOT NULL REFERENCES customers(key) ON DELETE CASCADE,
    arrived_at INTEGER NOT NULL,
    left_at    INTEGER
) STRICT;
CREATE INDEX visits_customer ON visits(customer, arrived_at);

CREATE TABLE cooldowns (
    customer INTEGER NOT NULL REFERENCES customers(key) ON DELETE CASCADE,
    campaign TEXT NOT NULL,
    last_at  INTEGER NOT NULL,
    PRIMARY KEY (customer, campaign)
) STRICT, WITHOUT ROWID;

CREATE TABLE ledger (
    id       INTEGER PRIMARY KEY,
    customer INTEGER NOT NULL REFERENCES customers(key) ON DELETE CASCADE,
    at       INTEGER NOT NULL,
    points   INTEGER NOT NULL,
    campaign TEXT
) STRICT;
CREATE INDEX ledger_customer ON ledger(customer, at);

CREATE TABLE outbox (
    id          INTEGER PRIMARY KEY,
    key         TEXT NOT NULL UNIQUE,       -- idempotency key
    customer    INTEGER NOT NULL REFERENCES customers(key) ON DELETE CASCADE,
    campaign    TEXT NOT NULL,
    message     TEXT NOT NULL,
    channel     TEXT NOT NULL,
    variant     TEXT NOT NULL,
    points      INTEGER NOT NULL,
    balance     INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    due_at      INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    state       TEXT NOT NULL CHECK (state IN
                  ('queued', 'sending', 'sent', 'delivered', 'read', 'failed', 'expired', 'dead')),
    lease_until INTEGER,
    attempts    INTEGER NOT NULL DEFAULT 0,
    sent_at     INTEGER,
    provider_id TEXT,
    error       TEXT
) STRICT;
CREATE INDEX outbox_due ON outbox(state, due_at);
CREATE INDEX outbox_customer ON outbox(customer, created_at);

CREATE TABLE decisions (
    id       INTEGER PRIMARY KEY,
    at       INTEGER NOT NULL,
    customer INTEGER NOT NULL REFERENCES customers(key) ON DELETE CASCADE,
    campaign TEXT NOT NULL,
    event    TEXT NOT NULL,
    zone     TEXT NOT NULL,
    outcome  TEXT NOT NULL CHECK (outcome IN ('act', 'suppressed')),
    reason   TEXT,
    channel  TEXT,
    outbox   INTEGER
) STRICT;
CREATE INDEX decisions_customer ON decisions(customer);
CREATE INDEX decisions_at ON decisions(at);

-- A counter bumped by every change to the registry (customers, identities),
-- so a running daemon notices an import, opt-out or erasure made by the CLI
-- and reloads its snapshot at once.
CREATE TABLE meta (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
INSERT INTO meta (name, value) VALUES ('registry', 0);

CREATE TRIGGER customers_ins AFTER INSERT ON customers BEGIN UPDATE meta SET value = value + 1 WHERE name = 'registry'; END;
CREATE TRIGGER customers_upd AFTER UPDATE ON customers BEGIN UPDATE meta SET value = value + 1 WHERE name = 'registry'; END;
CREATE TRIGGER customers_del AFTER DELETE ON customers BEGIN UPDATE meta SET value = value + 1 WHERE name = 'registry'; END;
CREATE TRIGGER identities_ins AFTER INSERT ON identities BEGIN UPDATE meta SET value = value + 1 WHERE name = 'registry'; END;
CREATE TRIGGER identities_del AFTER DELETE ON identities BEGIN UPDATE meta SET value = value + 1 WHERE name = 'registry'; END;

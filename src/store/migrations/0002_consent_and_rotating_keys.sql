-- nearcast schema, version 2: consent per channel and purpose, and the keys
-- of rotating identities (Eddystone-EID, app tokens).

-- One row per customer, channel and purpose (welcome, loyalty, offers):
-- when and where consent was captured, the text version shown, the double
-- opt-in confirmation where the channel needs one, and its withdrawal.
CREATE TABLE consents (
    customer     INTEGER NOT NULL REFERENCES customers(key) ON DELETE CASCADE,
    channel      TEXT NOT NULL,
    purpose      TEXT NOT NULL CHECK (purpose IN ('welcome', 'loyalty', 'offers')),
    given_at     INTEGER NOT NULL,
    source       TEXT NOT NULL,
    text_version TEXT NOT NULL,
    confirmed_at INTEGER,
    withdrawn_at INTEGER,
    PRIMARY KEY (customer, channel, purpose)
) STRICT, WITHOUT ROWID;

-- Customers enrolled before version 2 consented to everything on each of
-- their channels, confirmed by the retailer's own system.
WITH RECURSIVE split(customer, rest, channel) AS (
    SELECT key, channels || '|', '' FROM customers
    UNION ALL
    SELECT customer, substr(rest, instr(rest, '|') + 1), substr(rest, 1, instr(rest, '|') - 1)
    FROM split WHERE rest <> ''
)
INSERT INTO consents (customer, channel, purpose, given_at, source, text_version, confirmed_at)
SELECT s.customer, s.channel, p.purpose, c.consent_at, c.consent_source, 'v1', c.consent_at
FROM split s
JOIN customers c ON c.key = s.customer
CROSS JOIN (SELECT 'welcome' AS purpose UNION ALL SELECT 'loyalty' UNION ALL SELECT 'offers') p
WHERE s.channel <> '';

-- Keys only this box may hold: they are needed in clear to compute the
-- ids a phone will broadcast. The database file is mode 0600.
CREATE TABLE rotating_keys (
    customer INTEGER NOT NULL REFERENCES customers(key) ON DELETE CASCADE,
    kind     TEXT NOT NULL CHECK (kind IN ('eddystone-eid', 'app')),
    key      BLOB NOT NULL UNIQUE,
    exponent INTEGER NOT NULL DEFAULT 0,
    epoch    INTEGER NOT NULL DEFAULT 0
) STRICT;
CREATE INDEX rotating_keys_customer ON rotating_keys(customer);

CREATE TRIGGER consents_ins AFTER INSERT ON consents BEGIN UPDATE meta SET value = value + 1 WHERE name = 'registry'; END;
CREATE TRIGGER consents_upd AFTER UPDATE ON consents BEGIN UPDATE meta SET value = value + 1 WHERE name = 'registry'; END;
CREATE TRIGGER consents_del AFTER DELETE ON consents BEGIN UPDATE meta SET value = value + 1 WHERE name = 'registry'; END;
CREATE TRIGGER rotating_keys_ins AFTER INSERT ON rotating_keys BEGIN UPDATE meta SET value = value + 1 WHERE name = 'registry'; END;
CREATE TRIGGER rotating_keys_del AFTER DELETE ON rotating_keys BEGIN UPDATE meta SET value = value + 1 WHERE name = 'registry'; END;

-- The purpose each queued message serves, so delivery re-checks consent for
-- it (and failover only picks channels consented for it).
ALTER TABLE outbox ADD COLUMN purpose TEXT NOT NULL DEFAULT 'welcome';

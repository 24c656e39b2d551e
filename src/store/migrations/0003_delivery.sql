-- nearcast schema, version 3: delivery tracking, reconciliation, chained
-- messages (delivery-timeout fallback, follow-up) and conversions.

-- Status reported by the provider's webhooks (delivered, read), matched by
-- the provider's message id.
ALTER TABLE outbox ADD COLUMN delivered_at INTEGER;
ALTER TABLE outbox ADD COLUMN read_at INTEGER;
CREATE INDEX outbox_provider ON outbox(provider_id) WHERE provider_id IS NOT NULL;

-- A send interrupted between the request and its result (a crash, a power
-- cut) to a provider that cannot deduplicate by our key is not sent again:
-- it is marked ambiguous (it may or may not have reached the customer).
ALTER TABLE outbox ADD COLUMN ambiguous INTEGER NOT NULL DEFAULT 0;

-- Delivery-timeout fallback: if the message is not delivered (or read) by
-- `fallback_at`, its plain variant goes out on `fallback_channel`; the new
-- row names its origin in `parent` with `relation` 'fallback'. A follow-up
-- (read, no conversion within the campaign's window) is a row with
-- relation 'follow_up'.
ALTER TABLE outbox ADD COLUMN fallback_at INTEGER;
ALTER TABLE outbox ADD COLUMN fallback_channel TEXT;
ALTER TABLE outbox ADD COLUMN fallback_on TEXT CHECK (fallback_on IN ('delivered', 'read'));
ALTER TABLE outbox ADD COLUMN parent INTEGER REFERENCES outbox(id) ON DELETE SET NULL;
ALTER TABLE outbox ADD COLUMN relation TEXT CHECK (relation IN ('fallback', 'follow_up'));
CREATE INDEX outbox_fallback ON outbox(fallback_at) WHERE fallback_at IS NOT NULL;
CREATE INDEX outbox_parent ON outbox(parent) WHERE parent IS NOT NULL;

-- Purchases reported by the POS or CRM, attributed to campaigns by time.
CREATE TABLE conversions (
    id           INTEGER PRIMARY KEY,
    customer     INTEGER NOT NULL REFERENCES customers(key) ON DELETE CASCADE,
    at           INTEGER NOT NULL,
    amount_cents INTEGER NOT NULL,
    currency     TEXT NOT NULL,
    reference    TEXT NOT NULL UNIQUE,
    received_at  INTEGER NOT NULL
) STRICT;
CREATE INDEX conversions_customer ON conversions(customer, at);

-- Inbound messages from customers open a chat window (WhatsApp: 24 hours
-- of free text); only the time of the last one per channel is kept.
CREATE TABLE inbound (
    customer INTEGER NOT NULL REFERENCES customers(key) ON DELETE CASCADE,
    channel  TEXT NOT NULL,
    last_at  INTEGER NOT NULL,
    PRIMARY KEY (customer, channel)
) STRICT, WITHOUT ROWID;

-- The worker claims per channel, oldest decision first, and asks each
-- channel when its next row is due: both without scanning the backlog.
CREATE INDEX outbox_channel ON outbox(channel, state, created_at);
CREATE INDEX outbox_queued ON outbox(channel, due_at) WHERE state = 'queued';
CREATE INDEX outbox_sending ON outbox(channel, lease_until) WHERE state = 'sending';

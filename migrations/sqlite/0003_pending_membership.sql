-- A membership that is not mailable now but is no opt-out either (issue 18): Mailchimp
-- `pending`, Shopify `not_subscribed`. It becomes `active` when the service says
-- subscribed; `unsubscribed` stays final. SQLite cannot alter a CHECK constraint, so the
-- table is rebuilt with its rows (nothing references memberships).

CREATE TABLE memberships_new (
    list_id         INTEGER NOT NULL REFERENCES lists (id) ON DELETE CASCADE,
    contact_id      INTEGER NOT NULL REFERENCES contacts (id) ON DELETE CASCADE,
    status          TEXT NOT NULL CHECK (status IN ('active', 'pending', 'unsubscribed')),
    origin          TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    subscribed_at   TEXT,
    unsubscribed_at TEXT,
    updated_at      TEXT NOT NULL,
    PRIMARY KEY (list_id, contact_id)
) WITHOUT ROWID;

INSERT INTO memberships_new
    (list_id, contact_id, status, origin, created_at, subscribed_at, unsubscribed_at, updated_at)
SELECT list_id, contact_id, status, origin, created_at, subscribed_at, unsubscribed_at, updated_at
FROM memberships;

DROP TABLE memberships;
ALTER TABLE memberships_new RENAME TO memberships;
CREATE INDEX memberships_contact ON memberships (contact_id);

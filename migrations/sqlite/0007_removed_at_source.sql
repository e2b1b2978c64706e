-- Deletions at the source (issue 17): a membership whose record the service deleted (or
-- that a complete full pass no longer returned, for importers that opt in, or whose
-- record moved to another address) becomes `removed`: not mailable, and no opt-out
-- either, so it becomes `active` again if the record comes back. SQLite cannot alter a
-- CHECK constraint, so the table is rebuilt with its rows (nothing references
-- memberships). `seen_pass` is the start of the last full pass that returned the
-- source's record, stamped only for importers with `gone_after_full_pass`.

CREATE TABLE memberships_new (
    list_id         INTEGER NOT NULL REFERENCES lists (id) ON DELETE CASCADE,
    contact_id      INTEGER NOT NULL REFERENCES contacts (id) ON DELETE CASCADE,
    status          TEXT NOT NULL CHECK (status IN ('active', 'pending', 'unsubscribed', 'removed')),
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

ALTER TABLE contact_sources ADD COLUMN seen_pass TEXT;

-- Tributary store, SQLite. Times are UTC text `YYYY-MM-DDTHH:MM:SS.ffffffZ` (fixed width,
-- so text order is time order). Booleans are 0/1.

CREATE TABLE contacts (
    id                INTEGER PRIMARY KEY,
    email             TEXT NOT NULL UNIQUE,
    first_name        TEXT,
    last_name         TEXT,
    phone             TEXT,
    organization      TEXT,
    status            TEXT NOT NULL DEFAULT 'normal'
                      CHECK (status IN ('normal', 'bounced', 'unsubscribed')),
    status_changed_at TEXT,
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL
);

CREATE TABLE lists (
    id         INTEGER PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL
);

CREATE TABLE memberships (
    list_id         INTEGER NOT NULL REFERENCES lists (id) ON DELETE CASCADE,
    contact_id      INTEGER NOT NULL REFERENCES contacts (id) ON DELETE CASCADE,
    status          TEXT NOT NULL CHECK (status IN ('active', 'unsubscribed')),
    origin          TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    subscribed_at   TEXT,
    unsubscribed_at TEXT,
    updated_at      TEXT NOT NULL,
    PRIMARY KEY (list_id, contact_id)
) WITHOUT ROWID;

CREATE INDEX memberships_contact ON memberships (contact_id);

CREATE TABLE custom_fields (
    id         INTEGER PRIMARY KEY,
    tag        TEXT NOT NULL UNIQUE,
    label      TEXT NOT NULL,
    field_type TEXT NOT NULL CHECK (field_type IN ('text', 'number', 'date', 'list')),
    origin     TEXT NOT NULL CHECK (origin IN ('person', 'import')),
    service    TEXT,
    locked     INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE TABLE field_values (
    contact_id INTEGER NOT NULL REFERENCES contacts (id) ON DELETE CASCADE,
    field_id   INTEGER NOT NULL REFERENCES custom_fields (id) ON DELETE CASCADE,
    value      TEXT NOT NULL,
    importer   TEXT,
    run_id     INTEGER,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (contact_id, field_id)
) WITHOUT ROWID;

CREATE TABLE contact_sources (
    importer      TEXT NOT NULL,
    contact_id    INTEGER NOT NULL REFERENCES contacts (id) ON DELETE CASCADE,
    external_id   TEXT,
    content_hash  TEXT NOT NULL,
    list_id       INTEGER,
    run_id        INTEGER,
    first_seen_at TEXT NOT NULL,
    written_at    TEXT NOT NULL,
    deleted_at    TEXT,
    PRIMARY KEY (importer, contact_id)
) WITHOUT ROWID;

CREATE INDEX contact_sources_external ON contact_sources (importer, external_id);
CREATE INDEX contact_sources_contact ON contact_sources (contact_id);

CREATE TABLE importer_state (
    importer              TEXT PRIMARY KEY,
    watermark             TEXT,
    position              TEXT,
    pass_high_water       TEXT,
    fingerprint           TEXT,
    full_refresh          INTEGER NOT NULL DEFAULT 0,
    pass_started_at       TEXT,
    last_full_refresh     TEXT,
    phase                 TEXT NOT NULL DEFAULT 'idle',
    last_run_at           TEXT,
    next_run_at           TEXT,
    last_error            TEXT,
    needs_new_credentials INTEGER NOT NULL DEFAULT 0,
    updated_at            TEXT NOT NULL
);

CREATE TABLE runs (
    id             INTEGER PRIMARY KEY,
    importer       TEXT NOT NULL,
    started_at     TEXT NOT NULL,
    finished_at    TEXT,
    outcome        TEXT,
    pages          INTEGER NOT NULL DEFAULT 0,
    fetched        INTEGER NOT NULL DEFAULT 0,
    created        INTEGER NOT NULL DEFAULT 0,
    updated        INTEGER NOT NULL DEFAULT 0,
    unchanged      INTEGER NOT NULL DEFAULT 0,
    skipped        INTEGER NOT NULL DEFAULT 0,
    field_failures INTEGER NOT NULL DEFAULT 0,
    deleted        INTEGER NOT NULL DEFAULT 0,
    error          TEXT
);

CREATE INDEX runs_importer ON runs (importer, id);
CREATE INDEX runs_started ON runs (started_at);

CREATE TABLE leases (
    importer      TEXT PRIMARY KEY,
    owner         TEXT NOT NULL,
    fencing_token INTEGER NOT NULL,
    expires_at    TEXT NOT NULL,
    acquired_at   TEXT NOT NULL
);

CREATE TABLE tokens (
    name       TEXT PRIMARY KEY,
    sealed     BLOB NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE TABLE change_events (
    id         INTEGER PRIMARY KEY,
    at         TEXT NOT NULL,
    kind       TEXT NOT NULL,
    contact_id INTEGER NOT NULL,
    email      TEXT NOT NULL,
    list_id    INTEGER,
    origin     TEXT NOT NULL,
    notify     INTEGER NOT NULL,
    importer   TEXT,
    run_id     INTEGER,
    changes    TEXT NOT NULL
);

CREATE INDEX change_events_at ON change_events (at);

-- Tributary store, PostgreSQL. Same model as the SQLite schema.

CREATE TABLE contacts (
    id                BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email             TEXT NOT NULL UNIQUE,
    first_name        TEXT,
    last_name         TEXT,
    phone             TEXT,
    organization      TEXT,
    status            TEXT NOT NULL DEFAULT 'normal'
                      CHECK (status IN ('normal', 'bounced', 'unsubscribed')),
    status_changed_at TIMESTAMPTZ,
    created_at        TIMESTAMPTZ NOT NULL,
    updated_at        TIMESTAMPTZ NOT NULL
);

CREATE TABLE lists (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    created_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE memberships (
    list_id         BIGINT NOT NULL,
    contact_id      BIGINT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('active', 'unsubscribed')),
    origin          TEXT NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL,
    subscribed_at   TIMESTAMPTZ,
    unsubscribed_at TIMESTAMPTZ,
    updated_at      TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (list_id, contact_id)
);

CREATE INDEX memberships_contact ON memberships (contact_id);

CREATE TABLE custom_fields (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tag        TEXT NOT NULL UNIQUE,
    label      TEXT NOT NULL,
    field_type TEXT NOT NULL CHECK (field_type IN ('text', 'number', 'date', 'list')),
    origin     TEXT NOT NULL CHECK (origin IN ('person', 'import')),
    service    TEXT,
    locked     BOOLEAN NOT NULL DEFAULT FALSE,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE field_values (
    contact_id BIGINT NOT NULL,
    field_id   BIGINT NOT NULL,
    value      TEXT NOT NULL,
    importer   TEXT,
    run_id     BIGINT,
    updated_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (contact_id, field_id)
);

CREATE TABLE contact_sources (
    importer      TEXT NOT NULL,
    contact_id    BIGINT NOT NULL,
    external_id   TEXT,
    content_hash  TEXT NOT NULL,
    list_id       BIGINT,
    run_id        BIGINT,
    first_seen_at TIMESTAMPTZ NOT NULL,
    written_at    TIMESTAMPTZ NOT NULL,
    deleted_at    TIMESTAMPTZ,
    PRIMARY KEY (importer, contact_id)
);

CREATE INDEX contact_sources_external ON contact_sources (importer, external_id);
CREATE INDEX contact_sources_contact ON contact_sources (contact_id);

CREATE TABLE importer_state (
    importer              TEXT PRIMARY KEY,
    watermark             TIMESTAMPTZ,
    position              JSONB,
    pass_high_water       TIMESTAMPTZ,
    fingerprint           TEXT,
    full_refresh          BOOLEAN NOT NULL DEFAULT FALSE,
    pass_started_at       TIMESTAMPTZ,
    last_full_refresh     TIMESTAMPTZ,
    phase                 TEXT NOT NULL DEFAULT 'idle',
    last_run_at           TIMESTAMPTZ,
    next_run_at           TIMESTAMPTZ,
    last_error            TEXT,
    needs_new_credentials BOOLEAN NOT NULL DEFAULT FALSE,
    updated_at            TIMESTAMPTZ NOT NULL
);

CREATE TABLE runs (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    importer       TEXT NOT NULL,
    started_at     TIMESTAMPTZ NOT NULL,
    finished_at    TIMESTAMPTZ,
    outcome        TEXT,
    pages          BIGINT NOT NULL DEFAULT 0,
    fetched        BIGINT NOT NULL DEFAULT 0,
    created        BIGINT NOT NULL DEFAULT 0,
    updated        BIGINT NOT NULL DEFAULT 0,
    unchanged      BIGINT NOT NULL DEFAULT 0,
    skipped        BIGINT NOT NULL DEFAULT 0,
    field_failures BIGINT NOT NULL DEFAULT 0,
    deleted        BIGINT NOT NULL DEFAULT 0,
    error          TEXT
);

CREATE INDEX runs_importer ON runs (importer, id);
CREATE INDEX runs_started ON runs (started_at);

CREATE TABLE leases (
    importer      TEXT PRIMARY KEY,
    owner         TEXT NOT NULL,
    fencing_token BIGINT NOT NULL,
    expires_at    TIMESTAMPTZ NOT NULL,
    acquired_at   TIMESTAMPTZ NOT NULL
);

CREATE TABLE tokens (
    name       TEXT PRIMARY KEY,
    sealed     BYTEA NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE change_events (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at         TIMESTAMPTZ NOT NULL,
    kind       TEXT NOT NULL,
    contact_id BIGINT NOT NULL,
    email      TEXT NOT NULL,
    list_id    BIGINT,
    origin     TEXT NOT NULL,
    notify     BOOLEAN NOT NULL,
    importer   TEXT,
    run_id     BIGINT,
    changes    JSONB NOT NULL
);

CREATE INDEX change_events_at ON change_events (at);

-- memberships, field_values and contact_sources have no foreign keys: page writes check
-- the parents of the rows they write once per write, not once per row.
--
-- A foreign key costs PostgreSQL one trigger and one index probe under a row lock per
-- child row: about 1.3 million of them for a first import of 100,000 contacts (five
-- custom field values, a membership and a source each), which was half of the import's
-- time. Tributary writes these three tables only inside page writes and person commands
-- that hold the parents they name: a page write takes its list and custom fields
-- `FOR KEY SHARE` once, and existing contacts it writes children for in one statement;
-- contacts it creates are its own until it commits. So the checks go, and the one thing
-- they did beyond checking, deleting children with their parent, is kept by triggers
-- that delete per statement, not per row. Nothing in Tributary deletes contacts, lists
-- or fields; the triggers are for an operator's own `DELETE`.

CREATE FUNCTION tributary_contacts_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM memberships m USING deleted_rows d WHERE m.contact_id = d.id;
    DELETE FROM field_values v USING deleted_rows d WHERE v.contact_id = d.id;
    DELETE FROM contact_sources s USING deleted_rows d WHERE s.contact_id = d.id;
    RETURN NULL;
END $$;

CREATE FUNCTION tributary_lists_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM memberships m USING deleted_rows d WHERE m.list_id = d.id;
    RETURN NULL;
END $$;

CREATE FUNCTION tributary_custom_fields_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM field_values v USING deleted_rows d WHERE v.field_id = d.id;
    RETURN NULL;
END $$;

CREATE TRIGGER contacts_delete_children AFTER DELETE ON contacts
    REFERENCING OLD TABLE AS deleted_rows
    FOR EACH STATEMENT EXECUTE FUNCTION tributary_contacts_deleted();
CREATE TRIGGER lists_delete_children AFTER DELETE ON lists
    REFERENCING OLD TABLE AS deleted_rows
    FOR EACH STATEMENT EXECUTE FUNCTION tributary_lists_deleted();
CREATE TRIGGER custom_fields_delete_children AFTER DELETE ON custom_fields
    REFERENCING OLD TABLE AS deleted_rows
    FOR EACH STATEMENT EXECUTE FUNCTION tributary_custom_fields_deleted();

-- A foreign key also refused `TRUNCATE` of a parent alone; without them, truncating a
-- parent truncates what hangs off it.
CREATE FUNCTION tributary_contacts_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    TRUNCATE memberships, field_values, contact_sources;
    RETURN NULL;
END $$;

CREATE FUNCTION tributary_lists_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    TRUNCATE memberships;
    RETURN NULL;
END $$;

CREATE FUNCTION tributary_custom_fields_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    TRUNCATE field_values;
    RETURN NULL;
END $$;

CREATE TRIGGER contacts_truncate_children AFTER TRUNCATE ON contacts
    FOR EACH STATEMENT EXECUTE FUNCTION tributary_contacts_truncated();
CREATE TRIGGER lists_truncate_children AFTER TRUNCATE ON lists
    FOR EACH STATEMENT EXECUTE FUNCTION tributary_lists_truncated();
CREATE TRIGGER custom_fields_truncate_children AFTER TRUNCATE ON custom_fields
    FOR EACH STATEMENT EXECUTE FUNCTION tributary_custom_fields_truncated();

-- The last good version of each connector and importer file the daemon ran (issue 15):
-- when a merge breaks a file, the version that last validated keeps running, also after a
-- restart, until the file is fixed. Keyed by the file's path as the daemon reads it.

CREATE TABLE config_last_good (
    path     TEXT PRIMARY KEY,
    sha256   TEXT NOT NULL,
    content  TEXT NOT NULL,
    saved_at TIMESTAMPTZ NOT NULL
);

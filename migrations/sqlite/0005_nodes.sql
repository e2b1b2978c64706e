-- Several nodes on one database (issue 20): every committed page (or checkpoint) is
-- recorded with the node and the fencing token it was checked against, and each run
-- names the node that ran it. Additive only, like the PostgreSQL migration (an SQLite
-- store has one daemon, but both backends keep the same schema).

CREATE TABLE page_commits (
    id            INTEGER PRIMARY KEY,
    importer      TEXT NOT NULL,
    run_id        INTEGER,
    node          TEXT NOT NULL,
    fencing_token INTEGER NOT NULL,
    committed_at  TEXT NOT NULL
);
CREATE INDEX page_commits_importer ON page_commits (importer, id);
CREATE INDEX page_commits_committed_at ON page_commits (committed_at);

ALTER TABLE runs ADD COLUMN node TEXT;

-- Several nodes on one database (issue 20): every committed page (or checkpoint) is
-- recorded with the node and the fencing token it was checked against, and each run
-- names the node that ran it. Additive only, so nodes of the previous release keep
-- working beside upgraded ones during a rolling upgrade.

CREATE TABLE page_commits (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    importer      TEXT NOT NULL,
    run_id        BIGINT,
    node          TEXT NOT NULL,
    fencing_token BIGINT NOT NULL,
    committed_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX page_commits_importer ON page_commits (importer, id);
CREATE INDEX page_commits_committed_at ON page_commits (committed_at);

ALTER TABLE runs ADD COLUMN node TEXT;

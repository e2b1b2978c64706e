-- Re-normalizing stored emails when the normalization changes (issue 11): which version
-- of `model::normalize_email` every contact's email is in, and the contacts the step
-- could not re-normalize because another contact already holds the new spelling. Those
-- are reported, never merged: merging two people is a person's decision.

CREATE TABLE email_normalization (
    version    INTEGER PRIMARY KEY,
    applied_at TEXT NOT NULL
);

CREATE TABLE email_collisions (
    contact_id          INTEGER PRIMARY KEY,
    email               TEXT NOT NULL,
    normalized          TEXT NOT NULL,
    existing_contact_id INTEGER NOT NULL,
    found_at            TEXT NOT NULL
);

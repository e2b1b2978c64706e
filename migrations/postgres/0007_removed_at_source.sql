-- Deletions at the source (issue 17): a membership whose record the service deleted (or
-- that a complete full pass no longer returned, for importers that opt in, or whose
-- record moved to another address) becomes `removed`: not mailable, and no opt-out
-- either, so it becomes `active` again if the record comes back. `seen_pass` is the
-- start of the last full pass that returned the source's record, stamped only for
-- importers with `gone_after_full_pass`. Additive: nodes of the previous release keep
-- writing beside upgraded ones (they read a `removed` membership as unknown).

ALTER TABLE memberships DROP CONSTRAINT memberships_status_check;
ALTER TABLE memberships ADD CONSTRAINT memberships_status_check
    CHECK (status IN ('active', 'pending', 'unsubscribed', 'removed'));

ALTER TABLE contact_sources ADD COLUMN seen_pass TIMESTAMPTZ;

-- The change token a complete pass ended with (issue 17, `sync.mode: change_token`:
-- Google People `nextSyncToken`, Microsoft Graph `@odata.deltaLink`), sent by the next
-- pass to receive only what changed since. Not a secret: it works only with the
-- importer's credentials.
ALTER TABLE importer_state ADD COLUMN change_token TEXT;

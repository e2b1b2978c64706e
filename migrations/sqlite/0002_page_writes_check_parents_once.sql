-- Version 2 changed PostgreSQL only (its per-row foreign keys on memberships,
-- field_values and contact_sources became one check per page write). SQLite keeps its
-- foreign keys and switches them off inside page writes instead (see
-- `SqliteStore::write_page`), so its schema is unchanged; this keeps both at one version.
SELECT 1;

-- Page writes check the parents of the rows they write once per write, not once per row.
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

ALTER TABLE memberships
    DROP CONSTRAINT memberships_list_id_fkey,
    DROP CONSTRAINT memberships_contact_id_fkey;
ALTER TABLE field_values
    DROP CONSTRAINT field_values_contact_id_fkey,
    DROP CONSTRAINT field_values_field_id_fkey;
ALTER TABLE contact_sources
    DROP CONSTRAINT contact_sources_contact_id_fkey;

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

-- keyserver schema version 1 (applied once, in one transaction, under the
-- migration advisory lock; see backends/postgres.rs).

-- Wrapped-DEK records, in docs/FORMAT.md's record encoding (checksummed).
CREATE TABLE keyserver_records (
    key_id bytea PRIMARY KEY CHECK (octet_length(key_id) = 32),
    record bytea NOT NULL
);

-- Lifecycle metadata (docs/FORMAT.md's key metadata), one row per key that
-- has any; it outlives the record (a destroyed key's tombstone).
CREATE TABLE keyserver_meta (
    key_id bytea PRIMARY KEY CHECK (octet_length(key_id) = 32),
    meta bytea NOT NULL
);

-- Records are create-only, in the database as on disk.
CREATE FUNCTION keyserver_records_create_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'keyserver records are create-only (key %)', encode(OLD.key_id, 'hex');
END
$$;
CREATE TRIGGER keyserver_records_create_only
    BEFORE UPDATE ON keyserver_records
    FOR EACH ROW EXECUTE FUNCTION keyserver_records_create_only();

-- Every change of a key's metadata, and every deleted record, is announced
-- (at commit) to the servers listening on keyserver_keys: they forget the
-- key from their record caches.
CREATE FUNCTION keyserver_announce() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('keyserver_keys', encode(OLD.key_id, 'hex'));
    ELSE
        PERFORM pg_notify('keyserver_keys', encode(NEW.key_id, 'hex'));
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER keyserver_meta_announce
    AFTER INSERT OR UPDATE OR DELETE ON keyserver_meta
    FOR EACH ROW EXECUTE FUNCTION keyserver_announce();
CREATE TRIGGER keyserver_records_announce
    AFTER DELETE ON keyserver_records
    FOR EACH ROW EXECUTE FUNCTION keyserver_announce();

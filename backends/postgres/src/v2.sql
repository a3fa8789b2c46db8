-- keyserver schema version 2: a record may be replaced by another form of
-- itself (sealed under a master key, under another one, or unsealed again:
-- `keyserver reseal`), never by a record of other metadata. The magic, the
-- wrap and DEK algorithms, the creation time, the key id and the KEK size
-- (bytes 0-3, 5-6 and 8-49 of the record encoding, docs/FORMAT.md) must
-- stay; the version, the seal byte and the wrapped part may change. No
-- UPDATE can bring back a deleted record. A replaced record is announced,
-- so other servers' caches forget its old form.

CREATE OR REPLACE FUNCTION keyserver_records_create_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.key_id = OLD.key_id
       AND octet_length(NEW.record) >= 52
       AND substring(NEW.record from 1 for 4) = substring(OLD.record from 1 for 4)
       AND substring(NEW.record from 6 for 2) = substring(OLD.record from 6 for 2)
       AND substring(NEW.record from 9 for 42) = substring(OLD.record from 9 for 42) THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'keyserver records are create-only; only another form of the same record may replace one (key %)', encode(OLD.key_id, 'hex');
END
$$;

DROP TRIGGER keyserver_records_announce ON keyserver_records;
CREATE TRIGGER keyserver_records_announce
    AFTER UPDATE OR DELETE ON keyserver_records
    FOR EACH ROW EXECUTE FUNCTION keyserver_announce();

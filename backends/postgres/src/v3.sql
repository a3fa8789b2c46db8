-- keyserver schema version 3: what the servers of a cluster need to agree
-- on without reading every key.
--
-- * Each metadata row carries its owner, whether the key is live (not
--   destroyed) and when the sweeper has work with it (`sweep_at`: the
--   destruction time of a destroy-pending key; the time of destruction of
--   a destroyed key whose record is still stored). The database derives
--   them from the metadata itself (docs/FORMAT.md), whoever writes it.
-- * keyserver_owners counts each owner's live keys, kept by a trigger in
--   the transaction that changes the metadata: `keyserver_put_new` checks
--   the quota against it under the owner's row lock, so `max_keys` is exact
--   across any number of servers.
-- * keyserver_meta_due indexes the keys with sweeper work: the sweep reads
--   the due keys, not every key; keyserver_meta_owner an owner's keys, for
--   list_keys by owner.
-- * keyserver_servers: each server's heartbeat, so that the servers know
--   how many of them share the rate limits.

ALTER TABLE keyserver_meta
    ADD COLUMN owner text,
    ADD COLUMN live boolean NOT NULL DEFAULT true,
    ADD COLUMN sweep_at bigint;

CREATE TABLE keyserver_owners (
    owner text PRIMARY KEY,
    live bigint NOT NULL CHECK (live >= 0)
);

-- The derived columns, from the metadata's bytes: JSON, a newline, the
-- SHA-256 of the JSON in hex. Metadata that does not check out (or names
-- another key) counts for nobody and is never due (the servers report it
-- damaged when they read it). A time past PostgreSQL's bigint is taken as
-- the largest: never due in practice, and the owner still counted.
--
-- Every function here runs with its caller's rights (none is SECURITY
-- DEFINER: no role gains a right by calling one). The roles that may
-- write keyserver_meta are given the same rights on the two new tables,
-- at the end of this migration.
CREATE FUNCTION keyserver_meta_fields() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    text_form text;
    body text;
    j jsonb;
BEGIN
    NEW.owner := NULL;
    NEW.live := true;
    NEW.sweep_at := NULL;
    BEGIN
        text_form := convert_from(NEW.meta, 'UTF8');
        body := split_part(text_form, E'\n', 1);
        IF encode(sha256(convert_to(body, 'UTF8')), 'hex') <> split_part(text_form, E'\n', 2) THEN
            RETURN NEW;
        END IF;
        j := body::jsonb;
    EXCEPTION WHEN others THEN
        RETURN NEW;
    END;
    IF jsonb_typeof(j) <> 'object' OR j->>'key_id' IS DISTINCT FROM encode(NEW.key_id, 'hex') THEN
        RETURN NEW;
    END IF;
    NEW.owner := j->>'owner';
    NEW.live := coalesce(j->>'state', '') <> 'destroyed';
    BEGIN
        IF j->>'state' = 'destroy-pending' THEN
            NEW.sweep_at := LEAST((j->>'destroy_at')::numeric, 9223372036854775807)::bigint;
        ELSIF j->>'state' = 'destroyed'
              AND EXISTS (SELECT 1 FROM keyserver_records r WHERE r.key_id = NEW.key_id) THEN
            NEW.sweep_at := coalesce(LEAST((j->>'changed')::numeric, 9223372036854775807)::bigint, 0);
        END IF;
    EXCEPTION WHEN others THEN
        NEW.sweep_at := NULL;
    END;
    RETURN NEW;
END
$$;
CREATE TRIGGER keyserver_meta_fields
    BEFORE INSERT OR UPDATE ON keyserver_meta
    FOR EACH ROW EXECUTE FUNCTION keyserver_meta_fields();

-- The owners' counts follow every change of metadata.
CREATE FUNCTION keyserver_count_owners() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.owner IS NOT DISTINCT FROM NEW.owner AND OLD.live = NEW.live THEN
        RETURN NULL;
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.owner IS NOT NULL AND OLD.live THEN
        UPDATE keyserver_owners SET live = GREATEST(live - 1, 0) WHERE owner = OLD.owner;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') AND NEW.owner IS NOT NULL AND NEW.live THEN
        INSERT INTO keyserver_owners (owner, live) VALUES (NEW.owner, 1)
        ON CONFLICT (owner) DO UPDATE SET live = keyserver_owners.live + 1;
    END IF;
    RETURN NULL;
END
$$;

-- A destroyed key's record gone: nothing left for the sweeper.
CREATE FUNCTION keyserver_record_gone() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE keyserver_meta SET sweep_at = NULL
    WHERE key_id = OLD.key_id AND sweep_at IS NOT NULL AND NOT live;
    RETURN NULL;
END
$$;
CREATE TRIGGER keyserver_record_gone
    AFTER DELETE ON keyserver_records
    FOR EACH ROW EXECUTE FUNCTION keyserver_record_gone();

-- The existing metadata, derived (without announcing: no key changed),
-- then counted in one pass; from then on the trigger counts every change.
ALTER TABLE keyserver_meta DISABLE TRIGGER keyserver_meta_announce;
UPDATE keyserver_meta SET meta = meta;
ALTER TABLE keyserver_meta ENABLE TRIGGER keyserver_meta_announce;
INSERT INTO keyserver_owners (owner, live)
SELECT owner, count(*) FROM keyserver_meta WHERE owner IS NOT NULL AND live GROUP BY owner;
CREATE TRIGGER keyserver_count_owners
    AFTER INSERT OR UPDATE OR DELETE ON keyserver_meta
    FOR EACH ROW EXECUTE FUNCTION keyserver_count_owners();

CREATE INDEX keyserver_meta_due ON keyserver_meta (sweep_at, key_id)
    WHERE sweep_at IS NOT NULL;
-- An owner's keys, for list_keys filtered by owner.
CREATE INDEX keyserver_meta_owner ON keyserver_meta (owner, key_id)
    WHERE owner IS NOT NULL;

-- A new key, its record and its metadata in one transaction, within its
-- owner's quota when `p_max` is given: 0 stored, 1 over the quota (nothing
-- stored), 2 a record of that id exists (nothing stored).
CREATE FUNCTION keyserver_put_new(p_key bytea, p_record bytea, p_meta bytea, p_owner text, p_max bigint)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    n bigint;
BEGIN
    IF p_owner IS NOT NULL AND p_max IS NOT NULL THEN
        INSERT INTO keyserver_owners (owner, live) VALUES (p_owner, 0)
        ON CONFLICT (owner) DO NOTHING;
        SELECT live INTO n FROM keyserver_owners WHERE owner = p_owner FOR UPDATE;
        IF n >= p_max THEN
            RETURN 1;
        END IF;
    END IF;
    INSERT INTO keyserver_records (key_id, record) VALUES (p_key, p_record)
    ON CONFLICT (key_id) DO NOTHING;
    IF NOT FOUND THEN
        RETURN 2;
    END IF;
    IF p_meta IS NOT NULL THEN
        INSERT INTO keyserver_meta (key_id, meta) VALUES (p_key, p_meta)
        ON CONFLICT (key_id) DO UPDATE SET meta = EXCLUDED.meta;
    END IF;
    RETURN 0;
END
$$;

CREATE TABLE keyserver_servers (
    id text PRIMARY KEY,
    seen timestamptz NOT NULL
);

-- A server checks in (`p_id`, its random id) and learns how many others
-- checked in within 15 s; check-ins older than an hour are forgotten.
CREATE FUNCTION keyserver_check_in(p_id text) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    n bigint;
BEGIN
    INSERT INTO keyserver_servers (id, seen) VALUES (p_id, now())
    ON CONFLICT (id) DO UPDATE SET seen = now();
    DELETE FROM keyserver_servers WHERE seen < now() - interval '1 hour';
    SELECT count(*) INTO n FROM keyserver_servers
    WHERE id <> p_id AND seen > now() - interval '15 seconds';
    RETURN n;
END
$$;

-- For a DBA: the owners' counts made again from the metadata (after a
-- restore that ran with the triggers off, say). Run it alone.
CREATE FUNCTION keyserver_recount_owners() RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    LOCK TABLE keyserver_owners IN EXCLUSIVE MODE;
    UPDATE keyserver_owners SET live = 0;
    INSERT INTO keyserver_owners (owner, live)
    SELECT owner, count(*) FROM keyserver_meta WHERE owner IS NOT NULL AND live GROUP BY owner
    ON CONFLICT (owner) DO UPDATE SET live = EXCLUDED.live;
END
$$;

-- The roles that could write keyserver_meta (the servers' roles) may now
-- write what its triggers and the servers write: a server upgraded from
-- version 2 needs no new GRANT.
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT DISTINCT a.grantee::regrole::text AS who
        FROM pg_class c, aclexplode(c.relacl) a
        WHERE c.oid = 'keyserver_meta'::regclass
          AND a.privilege_type = 'UPDATE'
          AND a.grantee <> 0
          AND a.grantee <> c.relowner
    LOOP
        EXECUTE format(
            'GRANT SELECT, INSERT, UPDATE, DELETE ON keyserver_owners, keyserver_servers TO %s',
            r.who);
    END LOOP;
END
$$;

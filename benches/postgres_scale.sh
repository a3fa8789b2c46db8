#!/usr/bin/env bash
# PostgreSQL at scale, one sitting, for BENCHMARKS.md ("PostgreSQL with ten
# million keys"): N keys bulk-loaded (examples/postgres_scale.rs says how),
# then the server's reads, new keys, list_keys and the sweep measured on
# them, with the peer baselines on a table of the same size in the same
# cluster: pgbench -S (primary-key lookups of pgbench_accounts at scale
# N/100,000) and a bare INSERT of a row of the same size; then a backup and
# restore of the whole database with pg_dump and pg_restore, and
# `keyserver backup` of a tenth of it (it reads key by key).
#
#   cargo build --release -p keyserver-cli
#   cargo build --release --example postgres_scale --features storage-postgres,cipher-rustcrypto
#   bash benches/postgres_scale.sh [N] 2>&1 | tee scale.log
#
# N defaults to 10,000,000 (about 7 GB of disk for the keys, as much again
# for the dump and pgbench's table; some 25 minutes here). Nothing here is a
# test: the load and the database share the machine's two cores.
set -euo pipefail
N=${1:-10000000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
B=$ROOT/target/release/keyserver
EX=$ROOT/target/release/examples/postgres_scale
PGDIR=$(mktemp -d /tmp/keyserver-scale-pg.XXXXXX)
W=$(mktemp -d /tmp/keyserver-scale.XXXXXX)
chmod 755 "$W"
cleanup() {
  "$ROOT/scripts/pg-cluster" stop "$PGDIR" >/dev/null 2>&1 || true
  rm -rf "$PGDIR" "$W"
}
trap cleanup EXIT
PGPORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
DB=$("$ROOT/scripts/pg-cluster" start "$PGDIR" "$PGPORT")
PGBIN=$(cat "$PGDIR/bindir")
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
psql_() { "$PGBIN/psql" -h 127.0.0.1 -p "$PGPORT" -U keyserver -qAt "$@"; }
say() { printf '\n### %s\n' "$*"; }

say "PostgreSQL $(psql_ -d keyserver -c 'SHOW server_version'), shared_buffers $(psql_ -d keyserver -c 'SHOW shared_buffers'), default settings otherwise"
say "keyserver: $N keys"
/usr/bin/time -f "elapsed %e s, max RSS %M KB" "$EX" "$DB" "$N"
psql_ -d keyserver -c "SELECT 'database on disk: ' || pg_size_pretty(pg_database_size('keyserver'))"

say "peer baseline: pgbench -S on pgbench_accounts of $N rows (scale $((N / 100000))), 8 clients, 2 threads, 3 x 10 s"
psql_ -d postgres -c "CREATE DATABASE bench"
as_pg "$PGBIN/pgbench" -h 127.0.0.1 -p "$PGPORT" -U keyserver -i -q -s $((N / 100000)) bench 2>&1 | tail -1
for _ in 1 2 3; do
  as_pg "$PGBIN/pgbench" -h 127.0.0.1 -p "$PGPORT" -U keyserver -S -M prepared -c 8 -j 2 -T 10 bench 2>/dev/null |
    grep -E "^tps" | sed 's/^/  /'
done
say "peer baseline: a bare INSERT of a 500-byte row with a 32-byte key (one per transaction, synchronous_commit on), 1 client, 10 s"
psql_ -d bench -c "CREATE TABLE ins (k bytea PRIMARY KEY, v bytea NOT NULL)"
cat > "$W/insert.sql" <<'EOF'
INSERT INTO ins VALUES (decode(md5(random()::text) || md5(random()::text), 'hex'), convert_to(repeat('x', 500), 'UTF8'));
EOF
as_pg "$PGBIN/pgbench" -h 127.0.0.1 -p "$PGPORT" -U keyserver -n -f "$W/insert.sql" -c 1 -T 10 bench 2>/dev/null |
  grep -E "^tps|latency average" | sed 's/^/  /'
psql_ -d postgres -c "DROP DATABASE bench"

say "backup and restore of the whole store: pg_dump -Fc, pg_restore into a new database"
start=$(date +%s.%N)
"$PGBIN/pg_dump" -h 127.0.0.1 -p "$PGPORT" -U keyserver -Fc -f "$W/keys.dump" keyserver
end=$(date +%s.%N)
echo "  pg_dump: $(python3 -c "print(round($end - $start, 1))") s, $(du -h "$W/keys.dump" | cut -f1)"
psql_ -d postgres -c "CREATE DATABASE restored"
start=$(date +%s.%N)
"$PGBIN/pg_restore" -h 127.0.0.1 -p "$PGPORT" -U keyserver -d restored -j 2 "$W/keys.dump"
end=$(date +%s.%N)
echo "  pg_restore (2 jobs): $(python3 -c "print(round($end - $start, 1))") s, $(psql_ -d restored -c 'SELECT count(*) FROM keyserver_records') records"
rm -f "$W/keys.dump"
psql_ -d postgres -c "DROP DATABASE restored"

TENTH=$((N / 10))
say "$TENTH keys (a database of its own, loaded and measured the same way), and keyserver backup of it"
psql_ -d postgres -c "CREATE DATABASE tenth"
TDB="${DB%/*}/tenth"
"$EX" "$TDB" "$TENTH"
start=$(date +%s.%N)
"$B" backup --storage "$TDB" --out "$W/tenth.backup"
end=$(date +%s.%N)
echo "  keyserver backup: $(python3 -c "print(round($end - $start, 1))") s, $(du -h "$W/tenth.backup" | cut -f1)"

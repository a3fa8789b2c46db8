#!/usr/bin/env bash
# The PostgreSQL storage's uncached read against the database's own limit,
# one sitting, for BENCHMARKS.md: N keys bulk-loaded (examples/postgres_scale.rs),
# then `get` and `get_with_meta` (the record and the key's state in one
# query: what get_wrapped and get_key read) at random keys, 8 at once, in
# process through PostgresStorage, three rounds each; then pgbench -S
# (prepared, 8 clients, 2 threads) on pgbench_accounts of the same number
# of rows in the same cluster, three rounds of 10 s.
#
#   cargo build --release --example postgres_scale --features storage-postgres,cipher-rustcrypto
#   bash benches/postgres_reads.sh [N] 2>&1 | tee reads.log
#
# N defaults to 1,000,000 (about 1.3 GB of disk; some 4 minutes here).
# Nothing here is a test: the load and the database share two cores.
set -euo pipefail
N=${1:-1000000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
EX=$ROOT/target/release/examples/postgres_scale
PGDIR=$(mktemp -d /tmp/keyserver-reads-pg.XXXXXX)
cleanup() {
  "$ROOT/scripts/pg-cluster" stop "$PGDIR" >/dev/null 2>&1 || true
  rm -rf "$PGDIR"
}
trap cleanup EXIT
PGPORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
DB=$("$ROOT/scripts/pg-cluster" start "$PGDIR" "$PGPORT")
PGBIN=$(cat "$PGDIR/bindir")
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
psql_() { "$PGBIN/psql" -h 127.0.0.1 -p "$PGPORT" -U keyserver -qAt "$@"; }
say() { printf '\n### %s\n' "$*"; }

say "machine"
lscpu | grep -E "Model name|^CPU\(s\)"; date -u
say "PostgreSQL $(psql_ -d keyserver -c 'SHOW server_version'), default settings"
say "keyserver storage: $N keys, uncached reads, 8 at once, 5 s each"
"$EX" "$DB" "$N" --reads-only
say "peer: pgbench -S -M prepared on pgbench_accounts of $N rows, 8 clients, 2 threads, 3 x 10 s"
psql_ -d postgres -c "CREATE DATABASE bench"
as_pg "$PGBIN/pgbench" -h 127.0.0.1 -p "$PGPORT" -U keyserver -i -q -s $((N / 100000)) bench 2>&1 | tail -1
for _ in 1 2 3; do
  as_pg "$PGBIN/pgbench" -h 127.0.0.1 -p "$PGPORT" -U keyserver -S -M prepared -c 8 -j 2 -T 10 bench 2>/dev/null |
    grep -E "^tps" | sed 's/^/  /'
done

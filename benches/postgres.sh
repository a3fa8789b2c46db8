#!/usr/bin/env bash
# One benchmark sitting for BENCHMARKS.md ("PostgreSQL: one and three
# servers"): get_wrapped, get_key and durable generate through one and three
# `keyserver serve` processes on one PostgreSQL database, against the file
# store, with pgbench -S (the database's own primary-key lookups) as its
# limit, all in one run on this machine.
#
#   cargo build --release --all-features
#   bash benches/postgres.sh 2>&1 | tee postgres.log
#
# Needs Debian's PostgreSQL 15 (scripts/pg-cluster installs it) with pgbench,
# python3. Takes about six minutes. Nothing here is a test: the load
# generator, the servers and the database share the machine's cores, so
# read ratios measured close together, not absolutes.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
B=$ROOT/target/release/keyserver
W=$(mktemp -d /tmp/keyserver-pgbench.XXXXXX)
# The cluster's directory is its own (owned by the user PostgreSQL runs as).
PGDIR=$(mktemp -d /tmp/keyserver-pgbench-pg.XXXXXX)
# pgbench, run as that user, reads its script from here.
chmod 755 "$W"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  "$ROOT/scripts/pg-cluster" stop "$PGDIR" >/dev/null 2>&1 || true
  rm -rf "$W" "$PGDIR"
}
trap cleanup EXIT
PGPORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
DB=$("$ROOT/scripts/pg-cluster" start "$PGDIR" "$PGPORT")
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | tail -1)
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

say() { printf '\n### %s\n' "$*"; }
# serve PORT STORAGE POOL [extra...]: a server, its pid in PIDS.
serve() {
  local port=$1 storage=$2 pool=$3
  shift 3
  "$B" serve --listen "127.0.0.1:$port" --storage "$storage" --kek-pool "$pool" \
    --kek-workers 2 "$@" > "$W/serve-$port.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && return
    sleep 0.1
  done
  echo "server on $port did not start" >&2; cat "$W/serve-$port.log" >&2; exit 1
}
# pool_full PORT N: waits until the server's KEK pool holds N keys.
pool_full() {
  for _ in $(seq 1200); do
    local ready
    ready=$(curl -s "http://127.0.0.1:$1/metrics" | awk '/^keyserver_kek_pool_ready /{print $2}')
    [ "${ready%.*}" -ge "$2" ] 2>/dev/null && return
    sleep 0.5
  done
  echo "the pool of $1 never filled" >&2; exit 1
}
stop_all() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  PIDS=()
}
bench() { # URLS OP CLIENTS [extra...]
  local urls=$1 op=$2 clients=$3
  shift 3
  "$B" bench --server "$urls" --transport jsonrpc --op "$op" --clients "$clients" "$@" 2>&1 | tail -1
}
# reads URLS: get_wrapped and get_key, 16 clients, 5 s each.
reads() {
  bench "$1" get-wrapped 16 --duration 5
  bench "$1" get-key 16 --duration 5
}

say machine
lscpu | grep -E "Model name|^CPU\(s\)"; "$PGBIN/postgres" --version; date -u

say "baseline: pgbench -S (primary-key SELECTs), scale 10, 16 clients, 2 threads, 10 s"
as_pg "$PGBIN/pgbench" -h 127.0.0.1 -p "$PGPORT" -U keyserver -i -s 10 -q keyserver 2>&1 | tail -1
as_pg "$PGBIN/pgbench" -h 127.0.0.1 -p "$PGPORT" -U keyserver -S -c 16 -j 2 -T 10 keyserver 2>&1 \
  | grep -E "^tps|latency average"
say "baseline: pgbench, one INSERT per transaction (durable commits), 8 clients, 10 s"
echo "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (1, 1, 1, 1, now());" > "$W/insert.sql"
chmod 644 "$W/insert.sql"
as_pg "$PGBIN/pgbench" -h 127.0.0.1 -p "$PGPORT" -U keyserver -n -f "$W/insert.sql" -c 8 -j 2 -T 10 keyserver 2>&1 \
  | grep -E "^tps|latency average"

for setup in file pg1 pg3; do
  case $setup in
    file) serve 8801 "file:$W/data" 480; URLS=http://127.0.0.1:8801; pool_full 8801 480 ;;
    pg1) serve 8801 "$DB" 480; URLS=http://127.0.0.1:8801; pool_full 8801 480 ;;
    pg3)
      for port in 8801 8802 8803; do serve "$port" "$DB" 160; done
      for port in 8801 8802 8803; do pool_full "$port" 160; done
      URLS=http://127.0.0.1:8801,http://127.0.0.1:8802,http://127.0.0.1:8803 ;;
  esac
  say "$setup: generate with a warm pool (448 calls, 8 clients): the durable write"
  bench "$URLS" generate 8 --requests 56 --duration 60
  say "$setup: reads of hot keys (record cache on)"
  reads "$URLS"
  stop_all
done

say "pg1 and file with --cache-records 0: every read goes to the storage"
serve 8801 "file:$W/data" 0 --cache-records 0
reads http://127.0.0.1:8801
stop_all
serve 8801 "$DB" 0 --cache-records 0
reads http://127.0.0.1:8801
stop_all

#!/usr/bin/env bash
# The cost of the binary's wiping allocator (BENCHMARKS.md, "The wiping
# allocator"). Usage: benches/alloc_cost.sh BINARY LABEL
# Build BINARY twice from the same commit: as it is, and with the
# `#[global_allocator]` line of src/main.rs commented out; run this for each,
# alternating, in one sitting.
set -euo pipefail
BIN=$1; LABEL=$2
dir=$(mktemp -d)
"$BIN" serve --listen 127.0.0.1:0 --storage "file:$dir/data" --kek-pool 0 > "$dir/out" 2>/dev/null &
pid=$!
for _ in $(seq 50); do grep -q http "$dir/out" 2>/dev/null && break; sleep 0.1; done
url=$(grep -o 'http://[0-9.:]*' "$dir/out" | head -1)
for op in get-wrapped status; do
  for t in jsonrpc xmlrpc; do
    echo "$LABEL $op $t: $("$BIN" bench --server "$url" --transport "$t" --op "$op" --clients 16 --duration 4 | tr '\n' ' ')"
  done
done
echo "$LABEL encrypt 16 KiB: $("$BIN" bench --server "$url" --transport jsonrpc --op encrypt --clients 1 --size 16384 --duration 4 | tr '\n' ' ')"
kill -TERM "$pid"; wait "$pid" 2>/dev/null || true; rm -rf "$dir"

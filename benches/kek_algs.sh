#!/usr/bin/env bash
# One benchmark sitting for BENCHMARKS.md ("KEK algorithms"): what each KEK
# algorithm and strength costs, generate (pool off) and get_key, beside the
# openssl baselines of the same machine and hour.
#
#   cargo build --release --all-features
#   bash benches/kek_algs.sh 2>&1 | tee kek_algs.log
#
# Needs: openssl (command line), bc. Takes about six minutes, most of it the
# two large RSA keys made once each by `openssl genpkey`. Nothing here is a
# test: read ratios measured close together, not absolutes.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
B=$ROOT/target/release/keyserver
W=$(mktemp -d /tmp/keyserver-kek-algs.XXXXXX)
trap 'kill $SERVER 2>/dev/null || true; rm -rf "$W"' EXIT
SERVER=
PORT=8810
export KEYSERVER_URL=http://127.0.0.1:$PORT
cd "$W"

say() { printf '\n### %s\n' "$*"; }
serve() { # suite alg strength
  "$B" serve --storage memory --suite "$1" --kek-alg "$2" --strength "$3" --kek-pool 0 \
    --generate-workers 2 --generate-queue 64 --listen 127.0.0.1:$PORT > "$W/serve.log" 2>&1 &
  SERVER=$!
  sleep 0.5
}
stop() { kill -TERM "$SERVER"; wait "$SERVER" 2>/dev/null || true; SERVER=; }
bench() { # op seconds [clients]
  "$B" bench --op "$1" --duration "$2" --clients "${3:-2}" --transport jsonrpc
}
time_genpkey() { # openssl genpkey args, n keys
  local n=$1; shift
  local s e
  s=$(date +%s.%N)
  for _ in $(seq "$n"); do openssl genpkey "$@" -out /dev/null 2>/dev/null; done
  e=$(date +%s.%N)
  echo "openssl genpkey $*: $(echo "$n / ($e - $s)" | bc -l | cut -c1-8) keys/s ($n keys)"
}

say machine
lscpu | grep -E "Model name|^CPU\(s\)"; openssl version; date -u

say "baseline: openssl speed ecdh (1 core): op/s"
openssl speed -seconds 3 ecdhp256 ecdhp384 ecdhp521 2>/dev/null | grep -E "^ *[0-9]+ +bits ecdh"
say "baseline: openssl speed rsa3072 (1 core; the private operation is get_key's)"
openssl speed -seconds 3 rsa3072 2>/dev/null | grep -E "^rsa 3072"
say "baseline: openssl genpkey (1 process)"
time_genpkey 100 -algorithm EC -pkeyopt ec_paramgen_curve:P-256
time_genpkey 100 -algorithm EC -pkeyopt ec_paramgen_curve:P-521
time_genpkey 10 -algorithm RSA -pkeyopt rsa_keygen_bits:3072
time_genpkey 1 -algorithm RSA -pkeyopt rsa_keygen_bits:7680
time_genpkey 1 -algorithm RSA -pkeyopt rsa_keygen_bits:15360

for suite in rustcrypto openssl; do
  for spec in "ec 128" "ec 192" "ec 256" "rsa 128"; do
    set -- $spec
    say "$suite $1 strength $2: generate (pool off, 2 clients), get_key (2 clients)"
    serve "$suite" "$1" "$2"
    bench generate 5
    bench get-key 5
    stop
  done
done
for strength in 128 192 256; do
  say "rustcrypto hybrid-pq strength $strength: generate (pool off, 2 clients), get_key (2 clients)"
  serve rustcrypto hybrid-pq "$strength"
  bench generate 5
  bench get-key 5
  stop
done
say "rustcrypto rsa strength 192: generate, one key"
serve rustcrypto rsa 192
"$B" bench --op generate --requests 1 --clients 1 --transport jsonrpc --duration 600
stop

#!/usr/bin/env bash
# One sitting for BENCHMARKS.md, "The production configuration": `serve`
# as it runs in production (HTTPS, a token on every call checked against an
# auth file, the audit log, a durable file store, /metrics scraped every
# second) against its limits, each measured in this run:
#
# - get_wrapped: the same reply bytes from a bare axum handler over the very
#   same TLS configuration (benches/bare_axum.rs --tls), wrk on both;
# - get_key, RSA-3072 and P-256 KEKs: the fresh-key unwrap limit of AWS-LC
#   (aws-lc-rs parses the PKCS#8 KEK, then one RSA-OAEP decryption or one
#   ECDH) on both cores: two criterion processes at once (data_path bench);
# - generate, warm KEK pool, 8 clients: the same server without --audit-log.
#
#   cargo build --release -p keyserver-cli
#   cargo build --release --features full --bench data_path --example bare_axum
#   bash benches/production.sh 2>&1 | tee production.log
#
# Needs wrk, curl, openssl, python3. Takes about eight minutes. The load
# generator shares the two cores with the server: read ratios measured close
# together, not absolutes. Nothing here is a test.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
B=$ROOT/target/release/keyserver
BARE=$ROOT/target/release/examples/bare_axum
BENCH=$(ls -t "$ROOT"/target/release/deps/data_path-* | grep -v '\.d$' | head -1)
W=$(mktemp -d /tmp/keyserver-production.XXXXXX)
SERVER=
SCRAPER=
stop() {
  [ -n "$SCRAPER" ] && { kill "$SCRAPER" 2>/dev/null || true; wait "$SCRAPER" 2>/dev/null || true; }
  [ -n "$SERVER" ] && { kill -TERM "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; }
  SERVER= SCRAPER=
}
trap 'stop; rm -rf "$W"' EXIT
PORT=8830
URL=https://127.0.0.1:$PORT
RUNS=${RUNS:-3}
cd "$W"

say() { printf '\n### %s\n' "$*"; }
median() { python3 -c 'import statistics, sys; print(statistics.median(float(x) for x in sys.argv[1:]))' "$@"; }

# A certificate for 127.0.0.1, a token and its auth file, an audit key.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -keyout ca-key.pem -out ca.pem -subj "/CN=bench CA" 2>/dev/null
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -keyout key.pem -out server.csr -subj /CN=localhost 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=critical,CA:FALSE\n' > ext.cnf
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 2 \
  -extfile ext.cnf -out cert.pem 2>/dev/null
TOKEN=$(openssl rand -hex 32)
cat > auth.toml <<EOF
[[principal]]
name = "bench"
token_sha256 = "$(printf %s "$TOKEN" | sha256sum | cut -d' ' -f1)"
methods = ["generate", "get_key", "get_wrapped", "status", "metrics"]
EOF
"$B" audit new-key --out audit.key > /dev/null 2>&1
export KEYSERVER_URL=$URL KEYSERVER_CA_CERT=$W/ca.pem KEYSERVER_TOKEN=$TOKEN KEYSERVER_TRANSPORT=jsonrpc
CURL=(curl -sf --cacert "$W/ca.pem" -H "Authorization: Bearer $TOKEN")

# serve NAME [extra...]: the production server (TLS, auth, a durable file
# store; the audit log unless NAME is "no-audit"), /metrics scraped every
# second while it runs.
serve() {
  local name=$1
  shift
  local audit=(--audit-log "$W/audit-$name/audit.log" --audit-key "$W/audit.key")
  [ "$name" = no-audit ] && audit=()
  rm -rf "$W/store-$name" "$W/audit-$name"
  mkdir -p "$W/audit-$name"
  "$B" serve --listen "127.0.0.1:$PORT" --storage "file:$W/store-$name" --suite awslc \
    --tls-cert cert.pem --tls-key key.pem --auth auth.toml --allow-kek-algs rsa,ec \
    "${audit[@]}" "$@" > "$W/serve-$name.log" 2>&1 &
  SERVER=$!
  for _ in $(seq 100); do
    "${CURL[@]}" "$URL/readyz" > /dev/null 2>&1 && break
    sleep 0.1
  done
  "${CURL[@]}" "$URL/readyz" > /dev/null || { cat "$W/serve-$name.log" >&2; exit 1; }
  # Measured once the KEK pool is full: its refill threads (RSA key
  # generation) would otherwise share the cores with what is measured.
  local want
  want=$(printf '%s\n' "$@" | awk 'p {print; exit} /^--kek-pool$/ {p = 1}')
  want=${want:-8}
  for _ in $(seq 1200); do
    ready=$(metric keyserver_kek_pool_ready)
    [ "${ready%.*}" -ge "$want" ] 2>/dev/null && break
    sleep 0.5
  done
  (while sleep 1; do "${CURL[@]}" "$URL/metrics" > /dev/null || true; done) &
  SCRAPER=$!
}
bare() {
  "$BARE" 127.0.0.1:$PORT reply.json --tls cert.pem key.pem > /dev/null &
  SERVER=$!
  sleep 0.5
}
lua_body() { # file body
  printf 'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\nwrk.headers["Authorization"] = "Bearer %s"\nwrk.body = [==[%s]==]\n' "$TOKEN" "$2" > "$1"
}
wrk_rate() { # lua-file connections seconds: requests/s
  wrk -t2 -c"$2" -d"$3s" -s "$1" "$URL/jsonrpc" | awk '/Requests\/sec/{print $2}'
}
metric() { # name: its value from /metrics
  "${CURL[@]}" "$URL/metrics" | awk -v m="$1" '$1 == m {print $2}'
}

say machine
lscpu | grep -E "Model name|^CPU\(s\)"
openssl version; "$B" --version; date -u

say "limits: AWS-LC fresh-key unwrap, two criterion processes at once (one per core)"
for i in 1 2; do
  "$BENCH" --bench "rsa3072-fresh-key/aws-lc-rs-parse|p256-fresh-key/aws-lc-rs" \
    --warm-up-time 1 --measurement-time 4 --noplot 2>&1 | grep -E "^(rsa|p256)|time:" > "limit-$i.txt" &
done
wait
cat limit-1.txt limit-2.txt
limit() { # group: both processes' median op time in seconds, summed as a rate
  python3 - "$1" limit-1.txt limit-2.txt <<'EOF'
import re, sys
rate = 0.0
for path in sys.argv[2:]:
    lines = open(path).read().splitlines()
    i = next(i for i, l in enumerate(lines) if l.startswith(sys.argv[1]))
    j = next(j for j in range(i, len(lines)) if "time:" in lines[j])
    m = re.search(r"\[\S+ \S+ (\S+) (\S+) ", lines[j])
    value, unit = float(m.group(1)), m.group(2)
    rate += 1 / (value * {"ns": 1e-9, "µs": 1e-6, "ms": 1e-3, "s": 1.0}[unit])
print(f"{rate:.0f}")
EOF
}
RSA_LIMIT=$(limit rsa3072-fresh-key)
P256_LIMIT=$(limit p256-fresh-key)
echo "limit on 2 cores: RSA-3072 $RSA_LIMIT/s, P-256 $P256_LIMIT/s"

say "get_wrapped, wrk 2 threads 16 connections 8 s: production serve against bare axum over the same TLS, $RUNS rounds"
ours=() theirs=()
for round in $(seq "$RUNS"); do
  serve audit
  rm -f kek.pem
  kid=$("$B" generate --out kek.pem 2>&1 | grep -o "key id: [0-9a-f]*" | cut -d' ' -f3)
  request="{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"get_wrapped\",\"params\":[\"$kid\"]}"
  lua_body gw.lua "$request"
  "${CURL[@]}" -H 'Content-Type: application/json' -d "$request" "$URL/jsonrpc" > reply.json
  [ "$round" = 1 ] && echo "reply: $(wc -c < reply.json) bytes, the same from both servers"
  wrk_rate gw.lua 16 1 > /dev/null
  r=$(wrk_rate gw.lua 16 8); ours+=("$r")
  echo "round $round keyserver: $r/s (audit lines $(metric keyserver_audit_lines_total), syncs $(metric keyserver_audit_sync_duration_seconds_count))"
  stop
  bare
  wrk_rate gw.lua 16 1 > /dev/null
  r=$(wrk_rate gw.lua 16 8); theirs+=("$r")
  echo "round $round bare axum + rustls: $r/s"
  stop
done
mo=$(median "${ours[@]}") mt=$(median "${theirs[@]}")
echo "get_wrapped median: $mo/s against $mt/s: $(python3 -c "print(f'{$mo / $mt:.2f}x')")"

# 16 connections: a get_key is answered once its audit line is on disk, so
# a connection waits for a sync after each; with 4 the cores sat idle.
say "get_key, wrk 2 threads 16 connections 8 s, RSA-3072 and P-256 KEKs, $RUNS runs each"
serve audit
"$B" generate --alg rsa --out kek-rsa.pem > /dev/null 2>&1
"$B" generate --alg ec --out kek-ec.pem > /dev/null 2>&1
for alg in rsa ec; do
  body=$(python3 -c 'import json,sys; print(json.dumps({"jsonrpc":"2.0","id":1,"method":"get_key","params":{"kek":open(sys.argv[1]).read()}}))' "kek-$alg.pem")
  lua_body "gk-$alg.lua" "$body"
  "${CURL[@]}" -H 'Content-Type: application/json' -d "$body" "$URL/jsonrpc" | grep -q '"result"'
  wrk_rate "gk-$alg.lua" 16 1 > /dev/null
  rates=()
  for run in $(seq "$RUNS"); do
    r=$(wrk_rate "gk-$alg.lua" 16 8); rates+=("$r")
    echo "$alg run $run: $r/s"
  done
  m=$(median "${rates[@]}")
  if [ "$alg" = rsa ]; then l=$RSA_LIMIT; else l=$P256_LIMIT; fi
  echo "get_key $alg median: $m/s against the limit $l/s: $(python3 -c "print(f'{$m / $l:.2f}x')")"
done
echo "audit lines $(metric keyserver_audit_lines_total), syncs $(metric keyserver_audit_sync_duration_seconds_count)"
stop

say "generate, RSA-3072, a warm pool of 480 keys, 8 clients of 56 calls each (448, all from the pool): with and without the audit log, alternating, $RUNS runs each"
with=() without=()
for run in $(seq "$RUNS"); do
  for name in audit no-audit; do
    serve "$name" --kek-pool 480 --kek-workers 2
    out=$("$B" bench --op generate --clients 8 --requests 56 2>&1)
    r=$(echo "$out" | grep -o -E "[0-9.,]+ ops/s" | head -1 | tr -d ', ops/')
    echo "run $run $name: $r/s; $(echo "$out" | grep -o -E "p50 [^,]*" | head -1)"
    if [ "$name" = audit ]; then
      with+=("$r")
      echo "  audit lines $(metric keyserver_audit_lines_total), syncs $(metric keyserver_audit_sync_duration_seconds_count)"
    else
      without+=("$r")
    fi
    stop
  done
done
mw=$(median "${with[@]}") mn=$(median "${without[@]}")
echo "generate median: with the audit log $mw/s, without $mn/s: $(python3 -c "print(f'{$mw / $mn:.2f}x')")"

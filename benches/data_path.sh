#!/usr/bin/env bash
# One sitting for BENCHMARKS.md, "The data path at the CPU's limit (issue
# 18)": the limit (aws-lc-rs's raw AES-GCM seal, measured here), our
# envelope and client on each suite, streaming, get_key and get_wrapped
# against their baselines, and the peers (Tink, the AWS Encryption SDK).
#
#   cargo build --release --features full --examples --bench data_path
#   bash benches/data_path.sh 2>&1 | tee data_path.log
#
# Needs: wrk, python3 with venv and pip (the peers are installed from PyPI
# into a temporary virtualenv), curl. Takes about 10 minutes and 2 GiB of
# temporary disk. Nothing here is a test: read ratios measured close
# together, not absolutes.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
B=$ROOT/target/release/keyserver
BARE=$ROOT/target/release/examples/bare_axum
W=$(mktemp -d /tmp/keyserver-data-path.XXXXXX)
SERVER=
trap 'kill $SERVER 2>/dev/null || true; rm -rf "$W"' EXIT
PORT=8810
export KEYSERVER_URL=http://127.0.0.1:$PORT
cd "$W"

say() { printf '\n### %s\n' "$*"; }
serve() { # suite
  "$B" serve --storage memory --suite "$1" --kek-pool 0 --listen 127.0.0.1:$PORT \
    > "$W/serve.log" 2>&1 &
  SERVER=$!
  sleep 1
}
stop() { kill -TERM "$SERVER"; wait "$SERVER" 2>/dev/null || true; SERVER=; }
lua_body() { # file content-type body
  printf 'wrk.method = "POST"\nwrk.headers["Content-Type"] = "%s"\nwrk.body = [==[%s]==]\n' "$2" "$3" > "$1"
}
wrk_post() { # lua-file connections seconds
  wrk -t2 -c"$2" -d"$3s" -s "$1" "http://127.0.0.1:$PORT/jsonrpc" | grep -E "Requests/sec"
}
mbs() { # bytes seconds
  python3 -c "import sys; print(f'{int(sys.argv[1]) / float(sys.argv[2]) / 1e6:,.0f} MB/s')" "$1" "$2"
}
timed() { # command...: prints seconds
  local s e
  s=$(date +%s.%N); "$@"; e=$(date +%s.%N)
  python3 -c "import sys; print(float(sys.argv[2]) - float(sys.argv[1]))" "$s" "$e"
}

say machine
lscpu | grep -E "Model name|^CPU\(s\)"
grep -o -w -E "aes|vaes|vpclmulqdq|avx512f|avx512ifma|sha_ni" /proc/cpuinfo | sort -u | tr '\n' ' '; echo
openssl version; date -u

say "criterion (benches/data_path.rs): limit, envelope, client, RSA-3072 fresh key"
(cd "$ROOT" && cargo bench --quiet --features full --bench data_path -- --noplot --warm-up-time 1 --measurement-time 3 2>/dev/null |
  grep -E "^(limit|per-message|envelope|client|rsa3072)|time:|thrpt:")

say "RSA-3072 fresh-key limit on both cores at once: two processes of the same criterion bench"
BENCH=$(ls -t "$ROOT"/target/release/deps/data_path-* | grep -v '\.d$' | head -1)
for i in 1 2; do
  "$BENCH" --bench "rsa3072-fresh-key/aws-lc-rs" --warm-up-time 1 --measurement-time 4 --noplot 2>&1 | grep "time:" &
done
wait

say "peers from Python: Tink (AES128_GCM) and the AWS Encryption SDK (raw AES keyring)"
python3 -m venv "$W/venv"
"$W/venv/bin/pip" install --quiet tink aws-encryption-sdk
"$W/venv/bin/python" "$ROOT/benches/peers.py"

say "streaming 1 GiB (page cache) to /dev/null: keyserver encrypt / decrypt, two runs each"
head -c 1073741824 /dev/urandom > big
# The other limit of a stream from the page cache: reading it at all.
cat big > /dev/null
for run in 1 2; do
  t=$(timed dd if=big of=/dev/null bs=64K status=none)
  echo "dd read (64 KiB blocks) run $run: $(mbs 1073741824 "$t")"
done
serve awslc
"$B" generate --out kek.pem > /dev/null 2>&1
for suite in awslc openssl rustcrypto; do
  "$B" encrypt --suite "$suite" --kek kek.pem --in big --out sealed
  for run in 1 2; do
    t=$(timed "$B" encrypt --suite "$suite" --kek kek.pem --in big --out /dev/null)
    echo "$suite encrypt run $run: $(mbs 1073741824 "$t")"
    t=$(timed "$B" decrypt --suite "$suite" --kek kek.pem --in sealed --out /dev/null)
    echo "$suite decrypt run $run: $(mbs 1073741824 "$t")"
  done
done
rm -f big sealed
stop

say "get_key/s, JSON-RPC, wrk 4 connections, server per suite (limit: criterion's rsa3072-fresh-key, per core x 2)"
for suite in awslc openssl rustcrypto; do
  serve "$suite"
  "$B" generate --out "kek-$suite.pem" > /dev/null 2>&1
  body=$(python3 -c 'import json,sys; print(json.dumps({"jsonrpc":"2.0","id":1,"method":"get_key","params":{"kek":open(sys.argv[1]).read()}}))' "kek-$suite.pem")
  lua_body gk.lua application/json "$body"
  echo "$suite: $(wrk_post gk.lua 4 10)"
  stop
done

say "get_wrapped, JSON-RPC, wrk 16 connections: serve (awslc) against a bare axum handler answering the same bytes, three rounds"
for round in 1 2 3; do
  # A memory store is new per process: make a key, ask for its record.
  serve awslc
  rm -f kek.pem
  kid=$("$B" generate --out kek.pem 2>&1 | grep -o "key id: [0-9a-f]*" | cut -d' ' -f3)
  request="{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"get_wrapped\",\"params\":[\"$kid\"]}"
  lua_body gw.lua application/json "$request"
  curl -s -H 'Content-Type: application/json' -d "$request" "$KEYSERVER_URL/jsonrpc" > reply.json
  [ "$round" = 1 ] && echo "reply: $(wc -c < reply.json) bytes, the same from both servers"
  wrk_post gw.lua 16 1 > /dev/null
  echo "round $round keyserver: $(wrk_post gw.lua 16 8)"
  stop
  "$BARE" 127.0.0.1:$PORT reply.json > /dev/null &
  SERVER=$!
  sleep 0.5
  wrk_post gw.lua 16 1 > /dev/null
  echo "round $round bare axum: $(wrk_post gw.lua 16 8)"
  stop
done

#!/usr/bin/env bash
# One benchmark sitting for BENCHMARKS.md ("The server against its limits"):
# every baseline and every figure of ours, in one run, on this machine.
#
#   cargo build --release --all-features
#   bash benches/sitting.sh 2>&1 | tee sitting.log
#
# Needs: openssl (command line), gcc and libssl-dev (for the fresh-key
# baseline), wrk (a second, lighter load generator), python3, bc. Takes about
# eight minutes and 3 GiB of temporary disk. Nothing here is a test: the
# machine is noisy, so read ratios measured close together, not absolutes.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
B=$ROOT/target/release/keyserver
W=$(mktemp -d /tmp/keyserver-sitting.XXXXXX)
trap 'kill $SERVER 2>/dev/null || true; rm -rf "$W"' EXIT
SERVER=
PORT=8800
export KEYSERVER_URL=http://127.0.0.1:$PORT
cd "$W"

say() { printf '\n### %s\n' "$*"; }
serve() { # suite pool
  "$B" serve --storage "file:$W/data-$1-$2" --suite "$1" --kek-pool "$2" --kek-workers 2 \
    --listen 127.0.0.1:$PORT > "$W/serve.log" 2>&1 &
  SERVER=$!
  sleep 1
}
stop() { kill -TERM "$SERVER"; wait "$SERVER" 2>/dev/null || true; SERVER=; }
wrk_post() { # lua-file path
  wrk -t2 -c"${3:-16}" -d"${4:-8}s" -s "$1" "http://127.0.0.1:$PORT$2" | grep -E "Requests/sec|Latency"
}
lua_body() { # file content-type body
  printf 'wrk.method = "POST"\nwrk.headers["Content-Type"] = "%s"\nwrk.body = [==[%s]==]\n' "$2" "$3" > "$1"
}

say machine
lscpu | grep -E "Model name|^CPU\(s\)"; openssl version; date -u

say "baseline: openssl speed rsa3072 (1 core, then 2 processes)"
openssl speed -seconds 5 rsa3072 2>/dev/null | grep -E "^rsa 3072"
openssl speed -multi 2 -seconds 5 rsa3072 2>/dev/null | grep -E "^rsa 3072"
say "baseline: openssl speed -evp aes-128-gcm (1 core; columns 16 B .. 16 KiB)"
openssl speed -seconds 3 -evp aes-128-gcm 2>/dev/null | grep -E "^AES-128-GCM"
say "baseline: openssl genpkey rsa3072 loop (1 process, 10 keys)"
s=$(date +%s.%N)
for _ in $(seq 10); do openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:3072 -out /dev/null 2>/dev/null; done
e=$(date +%s.%N)
echo "genpkey: $(echo "10 / ($e - $s)" | bc -l | cut -c1-6) keys/s"

for suite in openssl rustcrypto; do
  say "suite $suite, pool off: generate, get_key"
  serve "$suite" 0
  "$B" bench --op generate --clients 2 --duration 15
  "$B" generate --out "kek-$suite.pem" 2>/dev/null
  if [ "$suite" = openssl ]; then
    say "baseline: OpenSSL alone, OAEP-SHA256 decrypt, 1 core (benches/c/openssl_fresh_key.c)"
    gcc -O2 -Wno-deprecated-declarations "$ROOT/benches/c/openssl_fresh_key.c" -o fresh_key -lcrypto
    ./fresh_key "kek-$suite.pem" 5
  fi
  body=$(python3 -c 'import json,sys; print(json.dumps({"jsonrpc":"2.0","id":1,"method":"get_key","params":{"kek":open(sys.argv[1]).read()}}))' "kek-$suite.pem")
  lua_body gk.lua application/json "$body"
  echo "wrk, JSON-RPC get_key, 4 connections:"
  wrk_post gk.lua /jsonrpc 4 10
  "$B" bench --op get-key --clients 4 --duration 10 --transport jsonrpc
  "$B" bench --op get-key --clients 4 --duration 10 --transport xmlrpc
  stop
done

say "warm pool (rustcrypto, 64 keys, 2 workers): generate while the pool lasts"
serve rustcrypto 64
sleep 30
"$B" bench --op generate --clients 1 --requests 50 --duration 30
stop

say "get_wrapped and status per transport (rustcrypto suite, file storage)"
serve rustcrypto 0
kid=$("$B" generate --out kek.pem 2>&1 | grep -o "key id: [0-9a-f]*" | cut -d' ' -f3)
lua_body gw.lua application/json "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"get_wrapped\",\"params\":[\"$kid\"]}"
lua_body gwx.lua text/xml "<?xml version=\"1.0\"?><methodCall><methodName>get_wrapped</methodName><params><param><value><string>$kid</string></value></param></params></methodCall>"
lua_body st.lua application/json '{"jsonrpc":"2.0","id":1,"method":"status","params":[]}'
lua_body stx.lua text/xml '<?xml version="1.0"?><methodCall><methodName>status</methodName><params/></methodCall>'
for t in jsonrpc xmlrpc; do
  for op in get-wrapped status; do
    "$B" bench --op $op --clients 16 --duration 8 --transport $t
  done
done
echo "wrk get_wrapped JSON-RPC / XML-RPC, status JSON-RPC / XML-RPC:"
wrk_post gw.lua /jsonrpc; wrk_post gwx.lua /RPC2; wrk_post st.lua /jsonrpc; wrk_post stx.lua /RPC2

say "client-side encrypt/decrypt with a cached DEK (1 client = 1 core)"
for suite in rustcrypto openssl; do
  for size in 1024 16384 1048576; do
    "$B" bench --op encrypt --clients 1 --duration 4 --size $size --suite $suite
  done
  for size in 16384 1048576; do
    "$B" bench --op decrypt --clients 1 --duration 4 --size $size --suite $suite
  done
done

say "streaming 1 GiB file (page cache) to /dev/null, each suite"
head -c 1073741824 /dev/urandom > big.bin
cat big.bin > /dev/null
per_gib() { # label command...: runs the command on 1 GiB and prints MB/s
  local label=$1 s e
  shift
  s=$(date +%s.%N)
  KEYSERVER_REPORT_PEAK_RSS=1 "$@"
  e=$(date +%s.%N)
  echo "$label 1 GiB: $(echo "1073.741824 / ($e - $s)" | bc -l | cut -c1-7) MB/s"
}
for suite in rustcrypto openssl; do
  for _ in 1 2; do
    per_gib "$suite encrypt" "$B" encrypt --suite $suite --kek kek.pem --in big.bin --out /dev/null
  done
done
"$B" encrypt --kek kek.pem --in big.bin --out big.kss
for suite in rustcrypto openssl; do
  per_gib "$suite decrypt" "$B" decrypt --suite $suite --kek kek.pem --in big.kss --out /dev/null
done
stop
say done

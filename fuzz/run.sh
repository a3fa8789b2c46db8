#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 60), one after the other,
# on one core, with its seed corpus. Needs cargo-fuzz (`cargo install
# cargo-fuzz`); the stable toolchain runs it with RUSTC_BOOTSTRAP=1.
# A crash leaves its input in fuzz/artifacts/TARGET/ and fails the script.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-60}"
# AddressSanitizer by default; FUZZ_SANITIZER=none for quick runs (the
# fuzzed code is mostly safe Rust: a panic or an abort is the finding, which
# libFuzzer catches without ASan, and the build takes a fraction of the time).
sanitizer="${FUZZ_SANITIZER:-address}"
export RUSTC_BOOTSTRAP=1
targets=(record envelope stream kek xmlrpc_request jsonrpc_request)
cargo fuzz build -O -s "$sanitizer"
status=0
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  echo "==> $t for ${seconds}s"
  if ! cargo fuzz run -O -s "$sanitizer" "$t" "corpus/$t" "seeds/$t" -- \
      -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
      2> "logs-$t.txt"; then
    echo "!! $t failed: see fuzz/logs-$t.txt and fuzz/artifacts/$t/"
    status=1
  fi
  grep -E "^(#[0-9]+.*DONE|stat::number_of_executed_units|stat::peak_rss_mb|Done )" "logs-$t.txt" || tail -3 "logs-$t.txt"
  grep -E "cov: [0-9]+" "logs-$t.txt" | tail -1 || true
done
exit "$status"

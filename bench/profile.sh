#!/usr/bin/env bash
# Where proxlet's time goes under load: `perf record` of proxlet (pinned to
# core 0, plugins' code named through a perf map) while oha (core 1) fetches
# a 1 KiB file through it, keep-alive, c=16; prints the top of `perf report`
# by symbol (self time) and, with CALLERS=1, by caller too.
#   bench/profile.sh [SECONDS] [https|http] [PROXLET ARGS…]
#   e.g. bench/profile.sh 8 http --plugin none
#        bench/profile.sh 8 https --plugin plugins/target/…/rust_hello.wasm
# PERF_OUT=FILE keeps perf.data. Needs `perf` (apt-get install linux-perf).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-8}; scheme=${2:-https}; shift 2 || true
conc=${CONC:-16}
command -v perf >/dev/null || { apt-get update -qq; apt-get install -y -qq linux-perf; }
command -v oha >/dev/null || cargo install oha --locked
[ -n "${PROXLET_BIN:-}" ] || cargo build --release --quiet --bin proxlet
. bench/lib.sh
export PROXLET_PERF_MAP=1
start_proxlet 18290 "$@"
case $scheme in
  https) url=https://127.0.0.1:18443/1k ;;
  http) url=http://127.0.0.1:18480/1k ;;
  *) echo "scheme: https or http" >&2; exit 2 ;;
esac
# Warm up (compiled code, pooled instances, TLS sessions), then record.
taskset -c 1 oha --no-tui -z 1s -c "$conc" --insecure -x http://127.0.0.1:18290 "$url" >/dev/null
taskset -c 1 oha --no-tui --output-format json -z "$((secs + 2))s" -c "$conc" --insecure \
  -x http://127.0.0.1:18290 "$url" > "$work/out.json" &
load=$!
sleep 1
data=${PERF_OUT:-$work/perf.data}
perf record -q -F 2000 -g -p "$proxlet_pid" -o "$data" -- sleep "$secs" 2>/dev/null
wait $load
python3 -c 'import json,sys; print("req/s %.0f" % json.load(open(sys.argv[1]))["summary"]["requestsPerSec"])' "$work/out.json"
perf report -i "$data" --no-children --percent-limit 0.7 --stdio -g none --sort dso,symbol 2>/dev/null \
  | grep -v '^#' | grep -v '^$' | sed -E 's/ +/ /g' | cut -c1-150 | head -60
if [ -n "${CALLERS:-}" ]; then
  perf report -i "$data" --children --percent-limit 2 --stdio -g none --sort symbol 2>/dev/null \
    | grep -v '^#' | grep -v '^$' | sed -E 's/ +/ /g' | cut -c1-150 | head -60
fi
kill "$proxlet_pid"

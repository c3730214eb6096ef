#!/usr/bin/env bash
# Two proxlet binaries side by side in one run (proxy on core 0, nginx and
# oha on core 1): HTTPS 1 KiB keep-alive with no plugin, and 1 KiB / 1 MiB
# cache hits, each row for OLD then NEW, so a change is judged by ratios
# measured together.
#   bench/compare.sh OLD_BINARY NEW_BINARY [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
old=$(realpath "$1") new=$(realpath "$2") secs=${3:-10}
conc=${CONC:-16}
command -v nginx >/dev/null || { apt-get update -qq; apt-get install -y -qq nginx-light; }
command -v oha >/dev/null || cargo install oha --locked

. bench/lib.sh

echo "| scenario (c=$conc, ${secs}s) | req/s | p50 ms | p99 ms | success | statuses |"
echo "|---|---|---|---|---|---|"
run "direct https 1 KiB" --insecure https://127.0.0.1:18443/1k
port=18100
for round in 1 2; do
  for which in old new; do
    PROXLET_BIN=${!which}
    port=$((port + 1))
    start_proxlet $port --plugin none
    run "$which: no plugin, https 1 KiB (round $round)" --insecure -x http://127.0.0.1:$port https://127.0.0.1:18443/1k
    kill $proxlet_pid; wait $proxlet_pid 2>/dev/null || true
    port=$((port + 1))
    start_proxlet $port --plugin cache --cache-dir "$work/cache-$which"
    for f in 1k 1m; do
      curl -s -x http://127.0.0.1:$port --cacert "$work/home/ca.pem" -o /dev/null https://127.0.0.1:18443/$f
    done
    run "$which: cache hit https 1 KiB (round $round)" --insecure -x http://127.0.0.1:$port https://127.0.0.1:18443/1k
    run "$which: cache hit https 1 MiB (round $round)" --insecure -x http://127.0.0.1:$port https://127.0.0.1:18443/1m
    kill $proxlet_pid; wait $proxlet_pid 2>/dev/null || true
  done
done

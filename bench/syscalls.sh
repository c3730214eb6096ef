#!/usr/bin/env bash
# Syscalls a 1 KiB HTTPS cache hit costs, for each binary given: proxlet
# with the cache plugin, one warm-up fill, then `strace -c -f` attached
# while oha makes 4000 hits (c=4). Counts, unlike timings, compare exactly.
#   bench/syscalls.sh BINARY [BINARY…]
set -euo pipefail
cd "$(dirname "$0")/.."
command -v nginx >/dev/null || { apt-get update -qq; apt-get install -y -qq nginx-light; }
command -v strace >/dev/null || { apt-get update -qq; apt-get install -y -qq strace; }
command -v oha >/dev/null || cargo install oha --locked
. bench/lib.sh
port=19190
for bin in "$@"; do
  port=$((port + 1))
  PROXLET_BIN=$(realpath "$bin")
  start_proxlet $port --plugin cache --cache-dir "$work/cache-$port"
  curl -s -x http://127.0.0.1:$port --cacert "$work/home/ca.pem" -o /dev/null https://127.0.0.1:18443/1k
  strace -c -f -p "$proxlet_pid" -o "$work/strace-$port" 2>/dev/null &
  tracer=$!
  sleep 1
  oha --no-tui -n 4000 -c 4 --insecure -x http://127.0.0.1:$port https://127.0.0.1:18443/1k >/dev/null
  kill -INT $tracer; wait $tracer 2>/dev/null || true
  kill $proxlet_pid; wait $proxlet_pid 2>/dev/null || true
  echo "== $bin (4000 hits)"
  grep -v -e clock_nanosleep -e epoll_wait -e futex "$work/strace-$port" | head -20
done

#!/usr/bin/env bash
# What flow capture costs and how fast flow files are, beside mitmproxy in
# the same run (proxy on core 0, nginx and oha on core 1):
#   - HTTPS 1 KiB keep-alive: no capture, in-memory store, --save, both,
#     and mitmdump without and with -w. Each proxlet row is measured in the
#     steady state, after 110 000 requests have filled the store (every
#     proxlet row gets the same warm-up); the store's filling is a row of
#     its own;
#   - peak RSS with 100 000 flows in the store against its bound;
#   - writing flows (proxlet convert .flows → .flows), listing + filtering a
#     1 GB flow file (time, peak RSS), HAR export of 10 000 flows; beside
#     them mitmdump -nr of a dump of the same 10 000 flows.
#   bench/flows.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
conc=${CONC:-16}
peers=${XDG_CACHE_HOME:-$HOME/.cache}/proxlet-bench
command -v nginx >/dev/null || { apt-get update -qq; apt-get install -y -qq nginx-light; }
command -v oha >/dev/null || cargo install oha --locked
if [ ! -x "$peers/mitmproxy/bin/mitmdump" ]; then
  # mitmproxy 11.0 is the newest that runs on Python 3.11.
  python3 -m venv "$peers/mitmproxy"
  "$peers/mitmproxy/bin/pip" install -q mitmproxy==11.0.2
fi
cargo build --release --quiet --bin proxlet
bin=./target/release/proxlet

. bench/lib.sh
wait_port() {
  for _ in $(seq 300); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
}
peak_rss() { awk '/VmHWM/ {printf "%.0f MiB", $2 / 1024}' "/proc/$1/status"; }

echo "| scenario (c=$conc, ${secs}s, HTTPS 1 KiB keep-alive) | req/s | p50 ms | p99 ms | success | statuses |"
echo "|---|---|---|---|---|---|"
url=https://127.0.0.1:18443/1k
port=18200
warm() { taskset -c 1 oha --no-tui -n 110000 -c "$conc" --insecure -x http://127.0.0.1:$port $url >/dev/null; }
for round in 1 2; do
  port=$((port + 1)); start_proxlet $port --plugin none
  warm
  run "proxlet, no capture (round $round)" --insecure -x http://127.0.0.1:$port $url
  kill $proxlet_pid; wait $proxlet_pid 2>/dev/null || true

  port=$((port + 1)); start_proxlet $port --plugin none --flows-max 100000,256M
  run "proxlet, in-memory store filling from empty (round $round)" --insecure -x http://127.0.0.1:$port $url
  warm
  run "proxlet, in-memory store (round $round)" --insecure -x http://127.0.0.1:$port $url
  store_rss=$(peak_rss $proxlet_pid)
  kill $proxlet_pid; wait $proxlet_pid 2>/dev/null || true

  port=$((port + 1)); rm -f "$work/saved.flows"
  start_proxlet $port --plugin none --save "$work/saved.flows"
  warm
  run "proxlet, --save (round $round)" --insecure -x http://127.0.0.1:$port $url
  kill $proxlet_pid; wait $proxlet_pid 2>/dev/null || true
  saved=$($bin flows "$work/saved.flows" | wc -l)

  port=$((port + 1)); rm -f "$work/both.flows"
  start_proxlet $port --plugin none --flows-max 100000,256M --save "$work/both.flows"
  warm
  run "proxlet, store and --save (round $round)" --insecure -x http://127.0.0.1:$port $url
  kill $proxlet_pid; wait $proxlet_pid 2>/dev/null || true

  for w in "" "-w $work/mitm.dump"; do
    port=$((port + 1)); mkdir -p "$work/mitm"
    # shellcheck disable=SC2086
    taskset -c 0 "$peers/mitmproxy/bin/mitmdump" -q --listen-host 127.0.0.1 -p $port \
      --set confdir="$work/mitm" --set ssl_verify_upstream_trusted_ca="$work/ca.pem" $w \
      >"$work/mitmproxy.log" 2>&1 &
    mitm=$!; wait_port $port
    run "mitmdump ${w:+-w} (round $round)" --insecure -x http://127.0.0.1:$port $url
    kill $mitm; wait $mitm 2>/dev/null || true
  done
done
echo
echo "- in-memory store (--flows-max 100000,256M): peak RSS $store_rss"
echo "- --save wrote $saved flows in the warm-up and ${secs} s ($(du -h "$work/saved.flows" | cut -f1))"

# Save latency: a finished flow in the file (idle proxy).
port=$((port + 1)); rm -f "$work/latency.flows"
start_proxlet $port --plugin none --save "$work/latency.flows"
lat=$(python3 - "$port" "$work/ca.pem" "$bin" "$work/latency.flows" <<'PY'
import subprocess, sys, time
port, ca, binary, path = sys.argv[1:]
worst = 0.0
for i in range(1, 11):
    subprocess.run(["curl", "-s", "-o", "/dev/null", "--cacert", f"{sys.argv[2]}", "-k",
                    "-x", f"http://127.0.0.1:{port}", "https://127.0.0.1:18443/1k"], check=True)
    done = time.monotonic()
    while subprocess.run([binary, "flows", path], capture_output=True).stdout.count(b"\n") < i:
        time.sleep(0.005)
    worst = max(worst, time.monotonic() - done)
print(f"{worst * 1000:.0f} ms")
PY
)
echo "- a finished flow is listed from the --save file within $lat (worst of 10, idle proxy)"
kill $proxlet_pid; wait $proxlet_pid 2>/dev/null || true

# 100 000 flows in the store: RSS against the bound (bodies 1 KiB each).
port=$((port + 1)); start_proxlet $port --plugin none --flows-max 100000,64M
taskset -c 1 oha --no-tui -n 110000 -c "$conc" --insecure -x http://127.0.0.1:$port $url >/dev/null
echo "- 110 000 requests with --flows-max 100000,64M: peak RSS $(peak_rss $proxlet_pid)"
kill $proxlet_pid; wait $proxlet_pid 2>/dev/null || true
port=$((port + 1)); start_proxlet $port --plugin none
taskset -c 1 oha --no-tui -n 110000 -c "$conc" --insecure -x http://127.0.0.1:$port $url >/dev/null
echo "- the same without capture: peak RSS $(peak_rss $proxlet_pid)"
kill $proxlet_pid; wait $proxlet_pid 2>/dev/null || true

# Files: a 1 GB flow file (4 KiB bodies) and 10 000 small flows.
timed() { /usr/bin/time -f "%e s, peak RSS %M KiB" "$@" 2>&1 >/dev/null | tail -1; }
python3 bench/gen_flows.py 250000 4096 "$work/big.flows"
python3 bench/gen_flows.py 200000 100 "$work/small.flows"
python3 bench/gen_flows.py 10000 1024 "$work/10k.flows"
echo
echo "| file operation | result |"
echo "|---|---|"
echo "| list + filter \`~c 404 & ~u /pkg/\` of a $(du -h "$work/big.flows" | cut -f1) file (250 000 flows) | $(timed $bin flows "$work/big.flows" '~c 404 & ~u /pkg/') |"
echo "| list all of it | $(timed $bin flows "$work/big.flows") |"
start=$(date +%s.%N)
$bin convert "$work/small.flows" "$work/copy.flows" 2>/dev/null
end=$(date +%s.%N)
echo "| read + write 200 000 small flows (convert .flows → .flows) | $(python3 -c "print(f'{$end - $start:.2f} s, {200000 / ($end - $start):.0f} flows/s')") |"
echo "| HAR export of 10 000 flows | $(timed $bin flows "$work/10k.flows" --har "$work/10k.har") |"
$bin convert "$work/10k.flows" "$work/10k.mitm" 2>/dev/null
echo "| mitmdump -nr of the same 10 000 flows (.mitm) | $(timed "$peers/mitmproxy/bin/mitmdump" -q -nr "$work/10k.mitm") |"
echo "| proxlet flows of the same 10 000 flows (.mitm) | $(timed $bin flows "$work/10k.mitm") |"

#!/usr/bin/env bash
# proxlet beside the proxies users would pick instead — mitmproxy, Squid
# with ssl-bump, and a no-op MITM proxy on the hudsucker crate — on the same
# nginx origin and scenarios. Every proxy runs pinned to core 0 (Squid with
# one worker, mitmproxy as one process), nginx and the load generator (oha,
# curl) to core 1; each scenario starts a fresh proxy, so its peak RSS is
# that scenario's.
#   bench/peers.sh [SECONDS]          markdown tables on stdout
#   ONLY=plugins ROUNDS=3 bench/peers.sh  the keep-alive rows of proxlet
#     (no plugin, each example) and hudsucker alone, ROUNDS times in turn
#     (none, rust, c…, none, rust…); ratios use each row's median, which
#     keeps a noisy machine's drift out of them, and a last table pairs
#     each plugin with the no-plugin run of its own round.
# Scenarios: HTTPS 1 KiB GET keep-alive (c16) and with a new connection per
# request, plain HTTP 1 KiB GET (c16), a 100 MiB HTTPS download (one stream),
# and cache hits of a 1 KiB and a 1 MiB file over HTTPS and plain HTTP
# (proxlet's cache plugin vs Squid's memory cache; ONLY=cache runs just
# these). proxlet runs with no plugin and with each language's example
# plugin: Rust (rust-hello, on-response adds a header), C (inject-error,
# on-request reads the URL), Python and JavaScript (json-field, on-response
# reads content-type); the C and JavaScript rows need their toolchains
# (./test.sh installs them) and are skipped with a line on stderr without.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
conc=${CONC:-16}
peers=${XDG_CACHE_HOME:-$HOME/.cache}/proxlet-bench

# --- peers and tools, installed when missing --------------------------------
need=()
command -v nginx >/dev/null || need+=(nginx-light)
[ -x /usr/sbin/squid ] && squid -v | grep -q -- --with-openssl || need+=(squid-openssl)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi
# Debian starts a squid service on install; the bench runs its own.
pkill -x squid 2>/dev/null || true
command -v oha >/dev/null || cargo install oha --locked
if [ ! -x "$peers/mitmproxy/bin/mitmdump" ]; then
  # mitmproxy 11.0 is the newest that runs on Python 3.11.
  python3 -m venv "$peers/mitmproxy"
  "$peers/mitmproxy/bin/pip" install -q mitmproxy==11.0.2
fi
command -v componentize-py >/dev/null || python3 -m pip install -q componentize-py==0.25.1
cargo build --release --quiet --bin proxlet
cargo build --release --quiet --manifest-path bench/hudsucker/Cargo.toml
(cd plugins && cargo build --release --quiet --target wasm32-wasip2 -p rust-hello)
hello=plugins/target/wasm32-wasip2/release/rust_hello.wasm

. bench/lib.sh
export BENCH_LOG=warn
python_plugin=$work/json-field.wasm
plugins/examples/python/build.sh "$python_plugin" >/dev/null
js_plugin=$work/json-field-js.wasm
c_plugin=$work/inject-error.wasm
langs="rust python"
if [ -d plugins/examples/js/node_modules/@bytecodealliance/componentize-js ]; then
  node plugins/examples/js/build.mjs plugins/examples/js/app.js wit "$js_plugin" >/dev/null
  langs+=" js"
else
  echo "peers.sh: no JavaScript row (plugins/examples/js needs npm ci; ./test.sh runs it)" >&2
fi
if plugins/examples/c/build.sh "$c_plugin" >/dev/null 2>"$work/c-build.log"; then
  langs+=" c"
else
  echo "peers.sh: no C row (its toolchain is missing; ./test.sh installs it): $(tail -1 "$work/c-build.log")" >&2
fi
# Compile each once (start_proxlet waits until proxlet listens), so every
# start below loads it from the compiled-code cache.
for plugin in "$python_plugin" "$js_plugin" "$c_plugin"; do
  [ -f "$plugin" ] || continue
  start_proxlet 18299 --plugin "$plugin"; kill $proxlet_pid; wait $proxlet_pid 2>/dev/null || true
done

# A CA for the peers (proxlet makes its own in its home).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj /CN=peer-ca -keyout "$work/peer-ca.key" -out "$work/peer-ca.pem" 2>/dev/null

# --- proxies: start_<name> PORT sets $pid ---------------------------------------
wait_port() {
  for _ in $(seq 300); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on $1" >&2; return 1
}
start_proxlet_none() { start_proxlet "$1" --plugin none; pid=$proxlet_pid; }
start_proxlet_rust() { start_proxlet "$1" --plugin "$hello"; pid=$proxlet_pid; }
start_proxlet_python() { start_proxlet "$1" --plugin "$python_plugin"; pid=$proxlet_pid; }
start_proxlet_js() { start_proxlet "$1" --plugin "$js_plugin"; pid=$proxlet_pid; }
start_proxlet_c() { start_proxlet "$1" --plugin "$c_plugin"; pid=$proxlet_pid; }
start_proxlet_cache() {
  rm -rf "$work/cache"
  start_proxlet "$1" --plugin cache --cache-dir "$work/cache"; pid=$proxlet_pid
}
start_hudsucker() {
  taskset -c 0 bench/hudsucker/target/release/hudsucker-noop "$1" "$work/peer-ca.pem" \
    "$work/peer-ca.key" "$work/ca.pem" 2>"$work/hudsucker.log" &
  pid=$!; wait_port "$1"
}
start_mitmproxy() {
  mkdir -p "$work/mitm"
  taskset -c 0 "$peers/mitmproxy/bin/mitmdump" -q --listen-host 127.0.0.1 -p "$1" \
    --set confdir="$work/mitm" --set ssl_verify_upstream_trusted_ca="$work/ca.pem" \
    >"$work/mitmproxy.log" 2>&1 &
  pid=$!; wait_port "$1"
}
# Squid 5 with ssl-bump: certificates minted by security_file_certgen (kept
# in memory after the first), one worker, no access log; cache off unless
# $squid_cache is set (then a memory cache sized for the files).
start_squid() {
  local port=$1 dir=$work/squid-$1
  mkdir -p "$dir"
  /usr/lib/squid/security_file_certgen -c -s "$dir/ssl_db" -M 16MB >/dev/null
  cp "$work/peer-ca.pem" "$work/peer-ca.key" "$dir/"
  cat > "$dir/squid.conf" <<CONF
http_port 127.0.0.1:$port ssl-bump generate-host-certificates=on dynamic_cert_mem_cache_size=16MB tls-cert=$dir/peer-ca.pem tls-key=$dir/peer-ca.key
sslcrtd_program /usr/lib/squid/security_file_certgen -s $dir/ssl_db -M 16MB
sslcrtd_children 4 startup=1 idle=1
acl step1 at_step SslBump1
ssl_bump peek step1
ssl_bump bump all
tls_outgoing_options cafile=$work/ca.pem
http_access allow all
workers 1
access_log none
cache_log $dir/cache.log
pid_filename $dir/squid.pid
coredump_dir $dir
shutdown_lifetime 1 seconds
max_filedescriptors 8192
$( if [ -n "${squid_cache:-}" ]; then
  echo "cache_mem 256 MB"
  echo "maximum_object_size_in_memory 4 MB"
  echo "refresh_pattern . 1440 100% 10080"
else
  echo "cache deny all"
fi )
CONF
  chown -R proxy:proxy "$dir"
  taskset -c 0 squid -N -f "$dir/squid.conf" 2>"$dir/stderr.log" &
  pid=$!; wait_port "$port"
}

# --- scenarios ----------------------------------------------------------------
results=$work/results.tsv
: > "$results"
record() { printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >> "$results"; }
rss_mib() { awk '/VmHWM/ {printf "%.1f", $2/1024}' "/proc/$1/status" 2>/dev/null || echo "?"; }
stop() { kill "$1" 2>/dev/null; wait "$1" 2>/dev/null || true; }

# measure SCENARIO PROXY URL [OHA ARGS…]: oha through the proxy running as
# $pid on $port, recorded with its peak RSS; then the proxy is stopped.
measure() {
  local scenario=$1 proxy=$2 url=$3; shift 3
  taskset -c 1 oha --no-tui --output-format json -z "${secs}s" -c "$conc" --insecure \
    -x "http://127.0.0.1:$port" "$@" "$url" > "$work/out.json" || true
  local rss; rss=$(rss_mib $pid)
  stop $pid
  python3 - "$scenario" "$proxy" "$rss" "$work/out.json" >> "$results" <<'PY'
import json, sys
scenario, proxy, rss, path = sys.argv[1:]
d = json.load(open(path))
s, p = d["summary"], d["latencyPercentiles"]
codes = d.get("statusCodeDistribution", {})
ok = sum(v for k, v in codes.items() if k.startswith("2"))
total = sum(codes.values()) + sum(d.get("errorDistribution", {}).values())
print(f"{scenario}\t{proxy}\t{s['requestsPerSec']:.0f}\t{(p['p50'] or 0)*1000:.2f}\t{(p['p99'] or 0)*1000:.2f}\t\t{rss}\t{ok}/{total}")
PY
}

# load SCENARIO PROXY URL [OHA ARGS…]: measure through a fresh proxy.
port=18200
load() {
  port=$((port + 1))
  "start_$2" $port
  measure "$@"
}

# download PROXY: 100 MiB over one HTTPS stream through a fresh proxy.
download() {
  local proxy=$1 start end bytes rss
  port=$((port + 1))
  "start_$proxy" $port
  start=$(date +%s.%N)
  bytes=$(taskset -c 1 curl -s -k -x "http://127.0.0.1:$port" -o /dev/null -w '%{size_download}' \
    https://127.0.0.1:18443/100m || echo 0)
  end=$(date +%s.%N)
  rss=$(rss_mib $pid)
  stop $pid
  record "100 MiB download" "$proxy" "" "" "" \
    "$(python3 -c "print(f'{$bytes/($end-$start)/1e6:.0f}')")" "$rss" "$bytes B"
}

# cache_hits PROXY: fill the 1 KiB and 1 MiB files once, over HTTPS and
# plain HTTP, then measure hits.
cache_hits() {
  local proxy=$1 scheme url
  for scheme in https http; do
    for f in 1k 1m; do
      port=$((port + 1))
      "start_$proxy" $port
      if [ $scheme = https ]; then url=https://127.0.0.1:18443/$f; else url=http://127.0.0.1:18480/$f; fi
      for _ in 1 2; do  # Squid caches on the second sighting of some objects
        taskset -c 1 curl -s -k -x "http://127.0.0.1:$port" -o /dev/null "$url"
      done
      sleep 0.5
      measure "cache hit $scheme $f" "$proxy" "$url"
    done
  done
}

# The origin alone, for reference.
taskset -c 1 oha --no-tui --output-format json -z "${secs}s" -c "$conc" --insecure \
  https://127.0.0.1:18443/1k > "$work/out.json"
record "https 1 KiB keep-alive" direct "$(python3 -c 'import json,sys; print(round(json.load(open(sys.argv[1]))["summary"]["requestsPerSec"]))' "$work/out.json")" "" "" "" "" ""

# proxlet with each example plugin that was built.
plugged=$(for l in $langs; do printf 'proxlet_%s ' "$l"; done)
# ONLY=plugins: the keep-alive rows of the plugins and hudsucker, in turns.
if [ "${ONLY:-}" = plugins ]; then
  for _ in $(seq "${ROUNDS:-1}"); do
    for scheme in https http; do
      if [ $scheme = https ]; then url=https://127.0.0.1:18443/1k; else url=http://127.0.0.1:18480/1k; fi
      for proxy in proxlet_none $plugged hudsucker; do
        load "$scheme 1 KiB keep-alive" $proxy $url
      done
    done
  done
# ONLY=cache runs the cache hit rows alone.
elif [ "${ONLY:-}" != cache ]; then
  all="proxlet_none proxlet_rust proxlet_python hudsucker squid mitmproxy"
  for proxy in proxlet_none $plugged hudsucker squid mitmproxy; do
    load "https 1 KiB keep-alive" $proxy https://127.0.0.1:18443/1k
  done
  for proxy in $all; do load "https 1 KiB new connection" $proxy https://127.0.0.1:18443/1k --disable-keepalive; done
  for proxy in proxlet_none $plugged hudsucker squid mitmproxy; do
    load "http 1 KiB keep-alive" $proxy http://127.0.0.1:18480/1k
  done
  for proxy in $all; do download $proxy; done
fi
if [ "${ONLY:-}" != plugins ]; then
  cache_hits proxlet_cache
  squid_cache=1 cache_hits squid
  squid_cache=
fi

# --- report -------------------------------------------------------------------
python3 - "$results" "$secs" "$conc" <<'PY'
import sys, collections, statistics
path, secs, conc = sys.argv[1:]
rows = [l.rstrip("\n").split("\t") for l in open(path) if l.strip()]
print(f"| scenario | proxy | req/s | p50 ms | p99 ms | MB/s | peak RSS MiB | ok |")
print("|---|---|---|---|---|---|---|---|")
for r in rows:
    print("| " + " | ".join(r) + " |")
# A row measured more than once (ROUNDS) counts with its median.
runs = collections.defaultdict(list)
for scenario, proxy, rps, p50, p99, mbs, rss, ok in rows:
    runs[scenario, proxy].append((float(rps) if rps else None, float(mbs) if mbs else None, rss))
median = lambda xs: statistics.median(xs) if None not in xs else None
val = collections.defaultdict(dict)
for (scenario, proxy), rs in runs.items():
    val[scenario][proxy] = (median([r[0] for r in rs]), median([r[1] for r in rs]), rs[-1][2])
def ratio(scenario, a, b, i=0):
    x, y = val[scenario].get(a, (None,)*3)[i], val[scenario].get(b, (None,)*3)[i]
    return f"{x/y:.2f}×" if x and y else "n/a"
print()
print(f"Targets (c={conc}, {secs} s per run):")
print()
print("| scenario | no plugin ÷ hudsucker | no plugin ÷ Squid | Rust plugin ÷ no plugin | Python plugin ÷ no plugin |")
print("|---|---|---|---|---|")
for s in ["https 1 KiB keep-alive", "https 1 KiB new connection", "http 1 KiB keep-alive"]:
    print(f"| {s} | {ratio(s,'proxlet_none','hudsucker')} | {ratio(s,'proxlet_none','squid')} | {ratio(s,'proxlet_rust','proxlet_none')} | {ratio(s,'proxlet_python','proxlet_none')} |")
s = "100 MiB download"
print(f"| {s} (MB/s) | {ratio(s,'proxlet_none','hudsucker',1)} | {ratio(s,'proxlet_none','squid',1)} | {ratio(s,'proxlet_rust','proxlet_none',1)} | {ratio(s,'proxlet_python','proxlet_none',1)} |")
for scheme in ["https", "http"]:
    for f in ["1k", "1m"]:
        s = f"cache hit {scheme} {f}"
        print(f"| {s}: proxlet cache ÷ Squid memory hit | {ratio(s,'proxlet_cache','squid')} | | | |")
print()
print("One example plugin per language (keep-alive, 1 KiB; µs a request over no plugin")
print("at the proxy's one core, from the req/s of the same run):")
print()
print("| plugin | https req/s | ÷ no plugin | µs/request | http req/s | ÷ no plugin | µs/request |")
print("|---|---|---|---|---|---|---|")
langs = ["rust", "c", "python", "js"]
for lang in langs:
    cells = []
    for s in ["https 1 KiB keep-alive", "http 1 KiB keep-alive"]:
        x, none = val[s].get(f"proxlet_{lang}", (None,))[0], val[s].get("proxlet_none", (None,))[0]
        if x and none:
            cells += [f"{x:.0f}", f"{x/none:.2f}×", f"{1e6/x - 1e6/none:.1f}"]
        else:
            cells += ["n/a"] * 3
    print(f"| {lang} | " + " | ".join(cells) + " |")
# With ROUNDS, each plugin's req/s ÷ no plugin's of the same round: a
# machine whose speed drifts moves both alike.
rounds = len(runs.get(("https 1 KiB keep-alive", "proxlet_none"), []))
if rounds > 1:
    print()
    print("Paired by round: each round's plugged req/s ÷ the same round's no plugin")
    print(f"(median of {rounds} rounds, lowest–highest):")
    print()
    print("| ratio | https | http |")
    print("|---|---|---|")
    pairs = [(f"{l} ÷ no plugin", "proxlet_none", f"proxlet_{l}") for l in langs]
    pairs.append(("no plugin ÷ hudsucker", "hudsucker", "proxlet_none"))
    for label, below, above in pairs:
        cells = []
        for s in ["https 1 KiB keep-alive", "http 1 KiB keep-alive"]:
            xs, ys = runs.get((s, above), []), runs.get((s, below), [])
            ratios = sorted(x[0] / y[0] for x, y in zip(xs, ys) if x[0] and y[0])
            cells.append(f"{statistics.median(ratios):.2f}× ({ratios[0]:.2f}–{ratios[-1]:.2f})" if ratios else "n/a")
        print(f"| {label} | " + " | ".join(cells) + " |")
PY

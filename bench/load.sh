#!/usr/bin/env bash
# HTTPS GETs on loopback, keep-alive, 16 connections: direct to nginx vs
# through proxlet (no plugin, the Rust example plugin, cache hits of 1 KiB and
# 1 MiB files), a 100 MiB download, and pip install wall time through the
# cache (cold, warm, offline). proxlet is pinned to core 0, nginx and the load
# generator (oha, installed here if missing) to core 1.
#   bench/load.sh [SECONDS]        results are printed as a markdown table
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
conc=${CONC:-16}

command -v nginx >/dev/null || { apt-get update -qq; apt-get install -y -qq nginx-light; }
command -v oha >/dev/null || cargo install oha --locked
cargo build --release --quiet --bin proxlet
(cd plugins && cargo build --release --quiet --target wasm32-wasip2 -p rust-hello)
hello=plugins/target/wasm32-wasip2/release/rust_hello.wasm

. bench/lib.sh

echo "| scenario (c=$conc, ${secs}s) | req/s | p50 ms | p99 ms | success | statuses |"
echo "|---|---|---|---|---|---|"
run "direct https 1 KiB" --insecure https://127.0.0.1:18443/1k
start_proxlet 18081 --plugin "$hello"
run "proxlet + rust-hello plugin https 1 KiB" --insecure -x http://127.0.0.1:18081 https://127.0.0.1:18443/1k
hello_rss=$(grep VmHWM /proc/$proxlet_pid/status | awk '{print $2, $3}')
kill $proxlet_pid
start_proxlet 18082 --plugin cache --cache-dir "$work/cache"
for f in 1k 1m; do
  curl -s -x http://127.0.0.1:18082 --cacert "$work/home/ca.pem" -o /dev/null https://127.0.0.1:18443/$f   # fill
done
run "proxlet cache hit https 1 KiB" --insecure -x http://127.0.0.1:18082 https://127.0.0.1:18443/1k
run "proxlet cache hit https 1 MiB" --insecure -x http://127.0.0.1:18082 https://127.0.0.1:18443/1m
cache_rss=$(grep VmHWM /proc/$proxlet_pid/status | awk '{print $2, $3}')
kill $proxlet_pid
run "direct https 1 MiB" --insecure https://127.0.0.1:18443/1m
start_proxlet 18080 --plugin none
run "proxlet https 1 KiB" --insecure -x http://127.0.0.1:18080 https://127.0.0.1:18443/1k
echo
echo "proxlet peak RSS: $(grep VmHWM /proc/$proxlet_pid/status | awk '{print $2, $3}') (with rust-hello: $hello_rss; cache hits: $cache_rss)"

# 100 MiB download through proxlet, single stream, curl on core 1.
for proto in --http1.1 --http2; do
  start=$(date +%s.%N)
  bytes=$(taskset -c 1 curl -s $proto -x http://127.0.0.1:18080 --cacert "$work/home/ca.pem" -o /dev/null -w '%{size_download}' https://127.0.0.1:18443/100m)
  end=$(date +%s.%N)
  python3 -c "print(f'100 MiB download through proxlet ($proto to proxlet): {$bytes/($end-$start)/1e6:.0f} MB/s')"
done
direct_start=$(date +%s.%N)
curl -s --cacert "$work/ca.pem" -o /dev/null https://127.0.0.1:18443/100m
direct_end=$(date +%s.%N)
python3 -c "print(f'100 MiB download direct: {$bytes/($direct_end-$direct_start)/1e6:.0f} MB/s')"
echo "proxlet peak RSS after download: $(grep VmHWM /proc/$proxlet_pid/status | awk '{print $2, $3}')"

# pip install of the test package set (tests/fixtures/packages.py: pkg-a
# depending on pkg-b) from nginx through the caching stack.
python3 tests/fixtures/packages.py "$work/pkgs" https://127.0.0.1:18443/ >/dev/null
while IFS=$'\t' read -r path kind file; do
  case "$kind" in
    application/vnd.pypi.simple.v1+json) continue ;;
    text/html) dest="$work/www${path}index.html" ;;
    *) dest="$work/www$path" ;;
  esac
  mkdir -p "$(dirname "$dest")"; chmod -R a+rX "$work/www"
  cp "$work/pkgs/$file" "$dest"; chmod 644 "$dest"
done < "$work/pkgs/manifest"
printf '[[plugin]]\nname = "pypi-slash"\n[[plugin]]\nname = "error-links"\n[[plugin]]\nname = "cache"\nconfig = { offline = true }\n' > "$work/offline.toml"
pip_install() {
  local port=$1 target=$2
  local start=$(date +%s.%N)
  env -u REQUESTS_CA_BUNDLE -u CURL_CA_BUNDLE -u PIP_FIND_LINKS -u PIP_CERT PIP_CONFIG_FILE=/dev/null \
    taskset -c 1 python3 -m pip install -q --no-cache-dir --disable-pip-version-check \
    --index-url https://127.0.0.1:18443/simple/ --proxy http://127.0.0.1:$port \
    --cert "$work/home/ca.pem" --target "$target" pkg-a
  local end=$(date +%s.%N)
  python3 -c "print(f'{$end - $start:.2f} s')"
}
start_proxlet 18090 --cache-dir "$work/pipcache"
cold=$(pip_install 18090 "$work/t1")
warm=$(pip_install 18090 "$work/t2")
kill $proxlet_pid
nginx -s stop -c "$work/nginx.conf" 2>/dev/null || kill "$(cat "$work/nginx.pid")"
start_proxlet 18091 --cache-dir "$work/pipcache" --config "$work/offline.toml"
offline=$(pip_install 18091 "$work/t3")
echo "pip install pkg-a (+pkg-b) through proxlet's cache: cold $cold, warm $warm, offline (nginx stopped) $offline"

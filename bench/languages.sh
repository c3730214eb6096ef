#!/usr/bin/env bash
# Plugins in Rust, Python (componentize-py), JavaScript (componentize-js) and
# C (wit-bindgen + clang + wasm-tools, see plugins/examples/c/README.md):
# component size, compile time cold and from the compiled-code cache, reload
# latency (file saved → new version serving; cold and cached), and HTTPS
# 1 KiB keep-alive req/s with each plugin vs none, from which the cost of a
# hook call follows. proxlet on core 0; nginx, oha, curl on core 1.
#   bench/languages.sh [SECONDS]
# RELOAD_ONLY=1 measures only reloads after an edit, proxlet unpinned (its
# compile uses both cores), for the languages in LANGS (default "python js"),
# with each proxlet binary in BINS ("label=path ...", default the release
# build): first load (cold), edit → v2 (cold: v2 never compiled, the caches
# hold v1), back to v1 (cached), and after a restart an edit → v3 (cold, the
# caches read from disk). A proxlet that serves Winch's code first
# ("baseline compiler" in its load line) is given the time to put
# cranelift's in place before each next step, and the "optimised" columns
# say when that happened, counted from the save.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
conc=${CONC:-16}

command -v nginx >/dev/null || { apt-get update -qq; apt-get install -y -qq nginx-light; }
command -v oha >/dev/null || cargo install oha --locked
command -v componentize-py >/dev/null || python3 -m pip install -q componentize-py==0.25.1
[ -d plugins/examples/js/node_modules ] || (cd plugins/examples/js && npm ci --no-audit --no-fund)
[ -n "${PROXLET_BIN:-}${BINS:-}" ] || cargo build --release --quiet --bin proxlet
. bench/lib.sh
# Load times are INFO lines of proxlet::plugin; the access log stays off.
export BENCH_LOG=warn,proxlet::plugin=info

# Two versions of each plugin: v1 as in the repository, v2 saying "v2"
# (and for RELOAD_ONLY a v3 of Python and JavaScript, saying "v3").
mkdir -p "$work/v1" "$work/v2" "$work/v3" "$work/src"
if [ -n "${RELOAD_ONLY:-}" ]; then
  langs=${LANGS:-python js}
  case " $langs " in *" rust "*|*" c "*) echo "RELOAD_ONLY measures python and js" >&2; exit 2 ;; esac
else
  langs="rust python js c"
fi
for v in v1 v2; do
  case " $langs " in *" rust "*) ;; *) break ;; esac
  greeting=$([ $v = v2 ] && echo v2 || echo world)
  (cd plugins && PROXLET_HELLO_GREETING=$greeting cargo build --release --quiet --target wasm32-wasip2 -p rust-hello)
  cp plugins/target/wasm32-wasip2/release/rust_hello.wasm "$work/$v/rust.wasm"
done
plugins/examples/python/build.sh "$work/v1/python.wasm" >/dev/null
node plugins/examples/js/build.mjs plugins/examples/js/app.js wit "$work/v1/js.wasm" >/dev/null
for v in v2 v3; do
  [ $v = v3 ] && [ -z "${RELOAD_ONLY:-}" ] && break
  cp plugins/examples/python/*.py "$work/src/"
  sed -i "s/\"was here\"/\"$v\"/" "$work/src/app.py"
  (cd "$work/src" && componentize-py -d "$OLDPWD/wit" -w plugin componentize app -o "$work/$v/python.wasm" >/dev/null)
  sed "s/'js was here'/'$v'/" plugins/examples/js/app.js > "$work/src/app.js"
  cp plugins/examples/js/proxlet.js "$work/src/"
  node plugins/examples/js/build.mjs "$work/src/app.js" wit "$work/$v/js.wasm" >/dev/null
done
if [ -n "${RELOAD_ONLY:-}" ]; then :; else
plugins/examples/c/build.sh "$work/v1/c.wasm" >/dev/null 2>&1
mkdir -p "$work/c-src" && cp plugins/examples/c/{app.c,proxlet.h,build.sh} "$work/c-src/"
sed -i 's/ by the c example/ by the v2 c example/' "$work/c-src/app.c"
PROXLET_WIT=$PWD/wit "$work/c-src/build.sh" "$work/v2/c.wasm" >/dev/null 2>&1
fi

# ms in the last "loaded plugin" line of a proxlet log.
load_ms() { grep -o 'loaded plugin .* in [0-9]* ms' "$1" | tail -1 | grep -o '[0-9]* ms$'; }

# Does the plugin in front of port $1 show version $2 (v1/v2)?
shows() {
  local out path=/data.json
  [ "$lang" = c ] && path=/inject-error/
  out=$(taskset -c 1 curl -s -D - -x "http://127.0.0.1:$1" --cacert "$PROXLET_BENCH_HOME/ca.pem" "https://127.0.0.1:18443$path")
  case "$lang:$2" in
    rust:v1) grep -q 'x-hello: world' <<<"$out" ;;
    rust:v2) grep -q 'x-hello: v2' <<<"$out" ;;
    python:v1) grep -q '"was here"' <<<"$out" ;;
    js:v1) grep -q '"js was here"' <<<"$out" ;;
    c:v1) grep -q ' by the c example' <<<"$out" ;;
    c:v2) grep -q ' by the v2 c example' <<<"$out" ;;
    *:v[23]) grep -q "\"$2\"" <<<"$out" ;;
  esac
}

# Milliseconds from saving $2 (rename over the watched file) to version $3
# serving; the save's time (ns) goes to $work/saved.
reload_ms() {
  local port=$1 file=$2 version=$3 start end
  cp "$work/$version/$lang.wasm" "$work/watch/.$lang.tmp"
  start=$(date +%s%N)
  echo "$start" > "$work/saved"
  mv "$work/watch/.$lang.tmp" "$work/watch/$lang.wasm"
  for _ in $(seq 6000); do shows "$port" "$version" && break; sleep 0.005; done
  end=$(date +%s%N)
  echo $(( (end - start) / 1000000 ))
}

# When proxlet's log $1 has its $2-th "optimised code in use" line, the ms
# since the last save (or since $3, ns); "—" when the last load or reload
# line says no Winch step was taken, or after five minutes.
optimised_ms() {
  local log=$1 nth=$2 since=${3:-$(cat "$work/saved")}
  grep -E '(re)?loaded plugin' "$log" | tail -1 | grep -q 'baseline compiler' || { echo "—"; return; }
  for _ in $(seq 6000); do
    [ "$(grep -c 'optimised code in use' "$log")" -ge "$nth" ] && { echo "$(( ($(date +%s%N) - since) / 1000000 )) ms"; return; }
    sleep 0.05
  done
  echo "—"
}

if [ -n "${RELOAD_ONLY:-}" ]; then
  mkdir -p "$work/watch"
  port=18101
  echo "| proxlet | plugin | size | first load cold | optimised | reload cold (v1 → v2) | optimised | reload cached (→ v1) | restart, reload cold (→ v3) | optimised |"
  echo "|---|---|---|---|---|---|---|---|---|---|"
  for bin in ${BINS:-release=${PROXLET_BIN:-./target/release/proxlet}}; do
    for lang in $langs; do
      export PROXLET_BENCH_HOME=$work/home-${bin%%=*}-$lang
      cp "$work/v1/$lang.wasm" "$work/watch/$lang.wasm"
      run_unpinned() {
        started=$(date +%s%N)
        RUST_LOG=$BENCH_LOG "${bin#*=}" --listen 127.0.0.1:$port --home "$PROXLET_BENCH_HOME" \
          --upstream-ca "$work/ca.pem" --plugin "$work/watch/$lang.wasm" 2>"$work/proxlet-$port.log" &
        proxlet_pid=$!
        for _ in $(seq 1200); do grep -q "listening on" "$work/proxlet-$port.log" && break; sleep 0.1; done
      }
      run_unpinned
      log=$work/proxlet-$port.log
      first=$(load_ms "$log")
      first_opt=$(optimised_ms "$log" 1 "$started")
      reload_cold=$(reload_ms $port "$work/watch/$lang.wasm" v2)
      reload_opt=$(optimised_ms "$log" 2)
      reload_cached=$(reload_ms $port "$work/watch/$lang.wasm" v1)
      kill $proxlet_pid; wait $proxlet_pid 2>/dev/null || true
      port=$((port + 1))
      run_unpinned
      log=$work/proxlet-$port.log
      restart_cold=$(reload_ms $port "$work/watch/$lang.wasm" v3)
      restart_opt=$(optimised_ms "$log" 1)
      kill $proxlet_pid; wait $proxlet_pid 2>/dev/null || true
      port=$((port + 1))
      echo "| ${bin%%=*} | $lang | $(du -h "$work/v1/$lang.wasm" | cut -f1) | $first | $first_opt | $reload_cold ms | $reload_opt | $reload_cached ms | $restart_cold ms | $restart_opt |"
    done
  done
  echo
  echo "Reload times include the 50 ms debounce and the polling client (5 ms steps);"
  echo "\"optimised\" counts from the save (first load: from the start of proxlet)."
  exit 0
fi

echo "| plugin | size | compile cold | from cache | reload cold | reload cached | req/s 1 KiB | p99 ms | µs/request over none | peak RSS |"
echo "|---|---|---|---|---|---|---|---|---|---|"
PROXLET_BENCH_HOME=$work/home-none start_proxlet 18100 --plugin none
none=$(taskset -c 1 oha --no-tui --output-format json -z "${secs}s" -c "$conc" --insecure -x http://127.0.0.1:18100 https://127.0.0.1:18443/1k)
none_rps=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["summary"]["requestsPerSec"])' "$none")
kill $proxlet_pid
echo "| none | — | — | — | — | — | $(printf %.0f "$none_rps") | $(python3 -c 'import json,sys; print(round(json.loads(sys.argv[1])["latencyPercentiles"]["p99"]*1000,2))' "$none") | — | |"

port=18101
mkdir -p "$work/watch"
for lang in rust python js c; do
  export PROXLET_BENCH_HOME=$work/home-$lang
  cp "$work/v1/$lang.wasm" "$work/watch/$lang.wasm"
  start_proxlet $port --plugin "$work/watch/$lang.wasm"
  for _ in $(seq 600); do grep -q "listening on" "$work/proxlet-$port.log" && break; sleep 0.1; done
  cold=$(load_ms "$work/proxlet-$port.log"); kill $proxlet_pid; wait $proxlet_pid 2>/dev/null || true
  port=$((port + 1))
  start_proxlet $port --plugin "$work/watch/$lang.wasm"
  cached=$(load_ms "$work/proxlet-$port.log")
  result=$(taskset -c 1 oha --no-tui --output-format json -z "${secs}s" -c "$conc" --insecure -x http://127.0.0.1:$port https://127.0.0.1:18443/1k)
  read -r rps p99 <<<"$(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(d["summary"]["requestsPerSec"], round(d["latencyPercentiles"]["p99"]*1000,2))' "$result")"
  rss=$(grep VmHWM /proc/$proxlet_pid/status | awk '{print $2/1024 " MiB"}')
  reload_cold=$(reload_ms $port "$work/watch/$lang.wasm" v2)
  reload_cached=$(reload_ms $port "$work/watch/$lang.wasm" v1)
  kill $proxlet_pid; wait $proxlet_pid 2>/dev/null || true
  port=$((port + 1))
  size=$(du -h "$work/v1/$lang.wasm" | cut -f1)
  extra=$(python3 -c "print(round((1/$rps - 1/$none_rps)*1e6, 1))")
  echo "| $lang | $size | $cold | $cached | ${reload_cold} ms | ${reload_cached} ms | $(printf %.0f "$rps") | $p99 | $extra | $rss |"
done
echo
echo "Reload times include the 50 ms debounce and the polling client (5 ms steps)."

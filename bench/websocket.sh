#!/usr/bin/env bash
# WebSocket echo through proxlet and mitmproxy beside the same echo without
# a proxy, in one run. The client is the `websockets` package (PyPI, the
# venv test.sh installs) driven by bench/ws_echo.py; the echo server is
# bench/ws-echo (Rust, tokio-tungstenite; ECHO=python uses the test
# fixture tests/fixtures/websockets_echo.py instead). Proxies run pinned to
# core 0, the client and the echo server to core 1; each row starts a fresh
# proxy, so its peak RSS is that row's.
#   bench/websocket.sh [SECONDS]        markdown tables on stdout
# Rows: wss:// (TLS intercepted, each proxy trusting the echo server's CA
# and the client trusting the proxy's) and ws:// (through CONNECT as the
# client sends it), messages of $SIZES bytes (default 16, 1 KiB, 64 KiB):
#   rate     $CONNS connections (default 4), each with $WINDOW messages in
#            flight (default 16): echoed messages/s
#   latency  one connection, one message in flight: round trip p50/p99
# Each row counts SECONDS (default 10) after a one-second warm-up.
# PROXIES picks the columns (default: direct proxlet_none mitmproxy); also
# proxlet_watch (a message plugin, tests/guests/sandbox in `websocket`
# mode: every message held, handed to it and re-framed) and
# proxlet_capture (--flows-max: every message parsed and recorded).
# KINDS (rate latency) and SCHEMES (wss ws) pick the rows.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
conns=${CONNS:-4}
window=${WINDOW:-16}
sizes=${SIZES:-16 1024 65536}
tools=${PROXLET_TEST_TOOLS:-$HOME/.cache/proxlet-test}

# --- tools, installed when missing (as test.sh does) ---------------------------
if ! "$tools/mitmproxy/bin/mitmdump" --version 2>/dev/null | grep -q "Mitmproxy: 11.0.2"; then
  # mitmproxy 11.0 is the newest that runs on Python 3.11.
  python3 -m venv "$tools/mitmproxy"
  "$tools/mitmproxy/bin/python" -m pip install -q mitmproxy==11.0.2
fi
if ! "$tools/py/bin/python" -c 'import websockets, sys; sys.exit(websockets.__version__ != "17.4")' 2>/dev/null; then
  python3 -m venv "$tools/py"
  "$tools/py/bin/python" -m pip install -q websockets==17.4
fi
python=$tools/py/bin/python
cargo build --release --quiet --bin proxlet
cargo build --release --quiet --manifest-path bench/ws-echo/Cargo.toml
echo_bin=${CARGO_TARGET_DIR:-bench/ws-echo/target}/release/ws-echo
case "${PROXIES:-}" in *proxlet_watch*)
  rustup target add wasm32-wasip2 >/dev/null 2>&1 || true
  cargo build --release --quiet --target wasm32-wasip2 --manifest-path tests/guests/Cargo.toml -p sandbox
  sandbox=$PWD/${CARGO_TARGET_DIR:-tests/guests/target}/wasm32-wasip2/release/sandbox.wasm ;;
esac

. bench/lib.sh
export BENCH_LOG=warn

# --- the echo server, on core 1 -------------------------------------------------
if [ "${ECHO:-rust}" = python ]; then
  taskset -c 1 "$python" tests/fixtures/websockets_echo.py serve "$work/origin.pem" "$work/origin.key" \
    > "$work/echo.ports" 2>"$work/echo.log" &
else
  taskset -c 1 "$echo_bin" "$work/origin.pem" "$work/origin.key" > "$work/echo.ports" 2>"$work/echo.log" &
fi
echo_pid=$!
for _ in $(seq 100); do [ -s "$work/echo.ports" ] && break; sleep 0.1; done
read -r ws_port wss_port < "$work/echo.ports"

# --- proxies: start_<name> PORT sets $pid, $proxy_url and $ca ------------------------
wait_port() {
  for _ in $(seq 300); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on $1" >&2; return 1
}
start_direct() { pid=""; proxy_url=-; ca=$work/ca.pem; }
start_proxlet_none() {
  start_proxlet "$1" --plugin none
  pid=$proxlet_pid; proxy_url=http://127.0.0.1:$1; ca=${PROXLET_BENCH_HOME:-$work/home}/ca.pem
}
start_proxlet_capture() {
  start_proxlet "$1" --plugin none --flows-max 1000
  pid=$proxlet_pid; proxy_url=http://127.0.0.1:$1; ca=${PROXLET_BENCH_HOME:-$work/home}/ca.pem
}
start_proxlet_watch() {
  printf '[[plugin]]\nname = "sandbox"\npath = "%s"\nconfig = { mode = "websocket" }\n' \
    "$sandbox" > "$work/watch.toml"
  start_proxlet "$1" --config "$work/watch.toml"
  pid=$proxlet_pid; proxy_url=http://127.0.0.1:$1; ca=${PROXLET_BENCH_HOME:-$work/home}/ca.pem
}
start_mitmproxy() {
  mkdir -p "$work/mitm"
  taskset -c 0 "$tools/mitmproxy/bin/mitmdump" -q --listen-host 127.0.0.1 -p "$1" \
    --set confdir="$work/mitm" --set ssl_verify_upstream_trusted_ca="$work/ca.pem" \
    >"$work/mitmproxy.log" 2>&1 &
  pid=$!; wait_port "$1"
  proxy_url=http://127.0.0.1:$1; ca=$work/mitm/mitmproxy-ca-cert.pem
}
stop() { [ -z "$1" ] || { kill "$1" 2>/dev/null; wait "$1" 2>/dev/null || true; }; }
rss_mib() { awk '/VmHWM/ {printf "%.0f", $2/1024}' "/proc/$1/status" 2>/dev/null || echo "?"; }

# --- rows -----------------------------------------------------------------------------
results=$work/results.jsonl
: > "$results"
port=18600
# row PROXY KIND SCHEME SIZE: one measurement through a fresh proxy.
row() {
  local proxy=$1 kind=$2 scheme=$3 size=$4 url watch rss
  port=$((port + 1))
  "start_$proxy" $port
  if [ "$scheme" = wss ]; then url=wss://127.0.0.1:$wss_port/; else url=ws://127.0.0.1:$ws_port/; fi
  watch="echo:$echo_pid"; [ -z "$pid" ] || watch="$watch proxy:$pid"
  local cafile=$ca; [ "$scheme" = wss ] || cafile=-
  if [ "$kind" = rate ]; then
    set -- rate "$url" "$proxy_url" "$cafile" "$size" "$conns" "$window" "$secs"
  else
    set -- latency "$url" "$proxy_url" "$cafile" "$size" "$secs"
  fi
  WATCH=$watch taskset -c 1 "$python" bench/ws_echo.py "$@" > "$work/out.json" 2>"$work/client.log" \
    || echo '{"error": "client exited"}' > "$work/out.json"
  rss=""; [ -z "$pid" ] || rss=$(rss_mib "$pid")
  stop "$pid"
  python3 - "$proxy" "$kind" "$scheme" "$size" "$rss" "$work/out.json" >> "$results" <<'PY'
import json, sys
proxy, kind, scheme, size, rss, path = sys.argv[1:]
text = open(path).read().strip() or '{"error": "no output"}'
d = json.loads(text.splitlines()[-1])
d.update(proxy=proxy, kind=kind, scheme=scheme, size=int(size), rss=rss)
print(json.dumps(d))
PY
}

proxies=${PROXIES:-direct proxlet_none mitmproxy}
for kind in ${KINDS:-rate latency}; do
  for scheme in ${SCHEMES:-wss ws}; do
    for size in $sizes; do
      for proxy in $proxies; do row $proxy $kind $scheme "$size"; done
    done
  done
done

# --- report ---------------------------------------------------------------------------
python3 - "$results" "$secs" "$conns" "$window" "${ECHO:-rust}" <<'PY'
import json, sys
path, secs, conns, window, echo = sys.argv[1:]
rows = [json.loads(l) for l in open(path) if l.strip()]
names = {"direct": "direct", "proxlet_none": "proxlet", "proxlet_watch": "proxlet + message plugin",
         "proxlet_capture": "proxlet capturing", "mitmproxy": "mitmproxy"}
# The proxies measured, in the order of `names`.
others = [p for p in names if p != "direct" and any(r["proxy"] == p for r in rows)]
by = {(r["kind"], r["scheme"], r["size"], r["proxy"]): r for r in rows}
keys = sorted({(r["scheme"], r["size"]) for r in rows}, key=lambda k: (k[0] != "wss", k[1]))

def size(n):
    return f"{n // 1024} KiB" if n >= 1024 else f"{n} B"

def num(x):
    return f"{x:,.0f}".replace(",", " ")

def get(kind, scheme, n, proxy):
    r = by.get((kind, scheme, n, proxy))
    return None if r is None or "error" in r else r

def cpu_per_msg(r, who):
    c = r.get("cpu", {}).get(who)
    return f"{c / r['messages'] * 1e6:.1f}" if c is not None and r["messages"] else ""

def busy(r, *who):
    c = sum(r.get("cpu", {}).get(w, 0) for w in who)
    return f"{c / r['seconds'] * 100:.0f}%"

print(f"Echo rate: {conns} connections × {window} messages in flight, {secs} s a row; echo server: {echo}.")
print()
print("| scheme | message | direct msg/s | " + " | ".join(f"{names[p]} msg/s | ÷ direct" for p in others) + " |")
print("|---|---|---|" + "---|---|" * len(others))
for scheme, n in keys:
    d = get("rate", scheme, n, "direct")
    cells = [num(d["rate"]) if d else "failed"]
    for p in others:
        r = get("rate", scheme, n, p)
        if r is None:
            err = by.get(("rate", scheme, n, p), {}).get("error", "not run")
            cells += [f"failed: {err}", ""]
        else:
            cells += [num(r["rate"]), f"{r['rate'] / d['rate']:.2f}" if d else ""]
    print(f"| {scheme} | {size(n)} | " + " | ".join(cells) + " |")

print()
print("Where the CPU went in the rate rows (CPU µs per echoed message; core busy = CPU s ÷ wall s):")
print()
print("| scheme | message | proxy | proxy µs/msg | core 0 busy (proxy) | client µs/msg | echo µs/msg | core 1 busy (client + echo) | proxy peak RSS MiB |")
print("|---|---|---|---|---|---|---|---|---|")
for scheme, n in keys:
    for p in ["direct"] + others:
        r = get("rate", scheme, n, p)
        if r is None:
            continue
        proxy_cells = [cpu_per_msg(r, "proxy"), busy(r, "proxy")] if p != "direct" else ["", ""]
        print(f"| {scheme} | {size(n)} | {names[p]} | " + " | ".join(proxy_cells + [
            cpu_per_msg(r, "client"), cpu_per_msg(r, "echo"), busy(r, "client", "echo"), r["rss"] or ""]) + " |")

if any(r["kind"] == "latency" for r in rows):
    print()
    print(f"Round trip, one connection, one message in flight, {secs} s a row (µs):")
    print()
    print("| scheme | message | direct p50 | p99 | " + " | ".join(f"{names[p]} p50 | p99 | + p50" for p in others) + " |")
    print("|---|---|---|---|" + "---|---|---|" * len(others))
    for scheme, n in keys:
        d = get("latency", scheme, n, "direct")
        cells = [f"{d['p50_us']:.0f}", f"{d['p99_us']:.0f}"] if d else ["failed", ""]
        for p in others:
            r = get("latency", scheme, n, p)
            if r is None:
                cells += ["failed", "", ""]
            else:
                cells += [f"{r['p50_us']:.0f}", f"{r['p99_us']:.0f}", f"{r['p50_us'] - d['p50_us']:.0f}" if d else ""]
        print(f"| {scheme} | {size(n)} | " + " | ".join(cells) + " |")
errors = [r for r in rows if "error" in r]
if errors:
    print()
    for r in errors:
        print(f"- {r['kind']} {r['scheme']} {size(r['size'])} {names[r['proxy']]}: {r['error']}")
PY

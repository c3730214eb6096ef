# Shared by the bench scripts (sourced, with `set -euo pipefail` and the
# repository root as working directory): a work dir, a throwaway CA, nginx
# with TLS on 127.0.0.1:18443 and plain HTTP on 127.0.0.1:18480 serving
# $work/www (1k, 1m, 100m and data.json)
# pinned to core 1, and helpers to start proxlet on core 0 and run oha.
work=$(mktemp -d)
chmod 755 "$work"   # nginx workers read the files
# `set +e` first: under `set -e` a `kill` with no jobs left would end the
# trap before nginx is stopped and the work dir removed.
trap 'set +e; kill $(jobs -p) 2>/dev/null; [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null; rm -rf "$work"' EXIT

# A throwaway origin CA and certificate for 127.0.0.1.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj /CN=bench-ca -keyout "$work/ca.key" -out "$work/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=127.0.0.1 \
  -keyout "$work/origin.key" -out "$work/origin.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\n' > "$work/ext"
openssl x509 -req -in "$work/origin.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" \
  -CAcreateserial -days 2 -extfile "$work/ext" -out "$work/origin.pem" 2>/dev/null
mkdir -p "$work/www"; chmod 755 "$work/www"
head -c 1024 /dev/urandom > "$work/www/1k"
printf '{"a": 1, "items": [1, 2, 3]}\n' > "$work/www/data.json"
head -c $((1024 * 1024)) /dev/urandom > "$work/www/1m"
head -c $((100 * 1024 * 1024)) /dev/urandom > "$work/www/100m"
chmod 644 "$work/www/"*

cat > "$work/nginx.conf" <<CONF
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  types { application/json json; text/html html; }
  default_type application/octet-stream;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:18443 ssl http2;
    listen 127.0.0.1:18480;
    ssl_certificate $work/origin.pem;
    ssl_certificate_key $work/origin.key;
    root $work/www;
  }
}
CONF
taskset -c 1 nginx -c "$work/nginx.conf"

# start_proxlet PORT ARGS…: proxlet pinned to core 0; sets $proxlet_pid.
start_proxlet() {
  local port=$1; shift
  RUST_LOG=${BENCH_LOG:-warn} taskset -c 0 "${PROXLET_BIN:-${CARGO_TARGET_DIR:-target}/release/proxlet}" --listen 127.0.0.1:$port --home "${PROXLET_BENCH_HOME:-$work/home}" \
    --upstream-ca "$work/ca.pem" "$@" 2>"$work/proxlet-$port.log" &
  proxlet_pid=$!
  # Up to two minutes: a large plugin compiles before proxlet listens.
  for _ in $(seq 1200); do grep -q "listening on" "$work/proxlet-$port.log" && break; sleep 0.1; done
}

# oha prints JSON; rps, p50/p99 in ms.
run() {
  local label=$1; shift
  taskset -c 1 oha --no-tui --output-format json -z "${secs}s" -c "$conc" "$@" > "$work/out.json"
  python3 - "$label" "$work/out.json" <<'PY'
import json, sys
label, path = sys.argv[1], sys.argv[2]
d = json.load(open(path))
s = d["summary"]; p = d["latencyPercentiles"]
codes = d.get("statusCodeDistribution", {})
print(f"| {label} | {s['requestsPerSec']:.0f} | {p['p50']*1000:.2f} | {p['p99']*1000:.2f} | {s['successRate']*100:.1f}% | {codes} |")
PY
}


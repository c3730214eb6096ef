#!/usr/bin/env bash
# Soak: MINUTES (default 10) of mixed traffic through one proxlet — cache
# hits and misses (built-in cache), a Rust plugin in a --plugin-dir replaced
# every 10 s, clients killed mid-download, and an origin that resets
# connections mid-body — then checks what must hold afterwards:
#   - every flow that should succeed did (hits, misses: 2xx only);
#   - proxlet's open fds and RSS stay bounded (sampled every 10 s);
#   - the cache dir holds no temporary or partial file (every cached file is
#     byte-identical to the origin's);
#   - proxlet is still serving and reloaded the plugin each time.
# proxlet on core 0, origins and clients on core 1.
#   bench/soak.sh [MINUTES]
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${1:-10}
secs=$((minutes * 60))

command -v nginx >/dev/null || { apt-get update -qq; apt-get install -y -qq nginx-light; }
command -v oha >/dev/null || cargo install oha --locked
cargo build --release --quiet --bin proxlet
for greeting in world v2; do
  (cd plugins && PROXLET_HELLO_GREETING=$greeting cargo build --release --quiet --target wasm32-wasip2 -p rust-hello)
  cp plugins/target/wasm32-wasip2/release/rust_hello.wasm "/tmp/proxlet-soak-hello-$greeting.wasm"
done

. bench/lib.sh
mv /tmp/proxlet-soak-hello-*.wasm "$work/"
# 200 files of 1–64 KiB for hits, and a 20 MiB one for aborted downloads.
mkdir -p "$work/www/f"
for i in $(seq -w 0 199); do head -c $(( (RANDOM % 64 + 1) * 1024 )) /dev/urandom > "$work/www/f/$i"; done
head -c $((20 * 1024 * 1024)) /dev/urandom > "$work/www/big"
chmod -R a+rX "$work/www"

# An origin that sends half a response, then resets the connection.
cat > "$work/reset.py" <<'PY'
import socket, struct, sys, threading
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", int(sys.argv[1]))); srv.listen(128)
def serve(c):
    try:
        c.recv(65536)
        c.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 1048576\r\n\r\n" + b"x" * 65536)
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    finally:
        c.close()
while True:
    c, _ = srv.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
PY
taskset -c 1 python3 "$work/reset.py" 18482 &

mkdir -p "$work/plugins" "$work/cache"
cp "$work/proxlet-soak-hello-world.wasm" "$work/plugins/hello.wasm"
BENCH_LOG=warn,proxlet::plugin=info start_proxlet 18300 --plugin cache --cache-dir "$work/cache" --plugin-dir "$work/plugins"
pid=$proxlet_pid
proxy=http://127.0.0.1:18300

fds() { ls "/proc/$pid/fd" | wc -l; }
rss() { awk '/VmRSS/ {print int($2/1024)}' "/proc/$pid/status"; }
samples=$work/samples.tsv
echo -e "t\tfds\trss_mib" > "$samples"

deadline=$(( $(date +%s) + secs ))
# 1. Cache traffic: hits over 200 files, and a slow stream of misses (new
#    query strings, each stored as a new file).
taskset -c 1 oha --no-tui --output-format json -z "${secs}s" -c 8 --insecure -x "$proxy" \
  --rand-regex-url 'https://127.0.0.1:18443/f/[01][0-9][0-9]' > "$work/hits.json" &
hits=$!
taskset -c 1 oha --no-tui --output-format json -z "${secs}s" -c 2 -q 20 --insecure -x "$proxy" \
  --rand-regex-url 'https://127.0.0.1:18443/1k\?m=[0-9]{8}' > "$work/misses.json" &
misses=$!
# 2. Clients killed mid-download (through the cache: nothing partial may land).
(
  n=0
  while [ "$(date +%s)" -lt "$deadline" ]; do
    timeout -s KILL 0.$((RANDOM % 9 + 1)) taskset -c 1 curl -s -k -x "$proxy" -o /dev/null \
      "https://127.0.0.1:18443/big?abort=$((n % 5))" || true
    n=$((n + 1)); sleep 0.2
  done
  echo "$n" > "$work/aborts"
) 2>/dev/null &
aborts=$!
# 3. Upstream resets mid-body.
(
  n=0
  while [ "$(date +%s)" -lt "$deadline" ]; do
    taskset -c 1 curl -s -x "$proxy" -o /dev/null --max-time 5 "http://127.0.0.1:18482/reset/$n" || true
    n=$((n + 1)); sleep 0.5
  done
  echo "$n" > "$work/resets"
) &
resets=$!
# 4. The plugin replaced every 10 s; fds and RSS sampled.
reloads=0
start=$(date +%s)
while [ "$(date +%s)" -lt "$deadline" ]; do
  sleep 10
  version=$([ $((reloads % 2)) -eq 0 ] && echo v2 || echo world)
  cp "$work/proxlet-soak-hello-$version.wasm" "$work/plugins/.hello.tmp"
  mv "$work/plugins/.hello.tmp" "$work/plugins/hello.wasm"
  reloads=$((reloads + 1))
  echo -e "$(( $(date +%s) - start ))\t$(fds)\t$(rss)" >> "$samples"
done
wait $hits $misses $aborts $resets
sleep 2   # let in-flight stores finish

# --- checks ---------------------------------------------------------------------
fail=0
check() { if eval "$2"; then echo "PASS  $1"; else echo "FAIL  $1"; fail=1; fi; }
summary() {
  python3 - "$1" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
codes = d.get("statusCodeDistribution", {})
errors = d.get("errorDistribution", {})
ok = sum(v for k, v in codes.items() if k.startswith("2"))
bad = sum(v for k, v in codes.items() if not k.startswith("2"))
# oha cuts the requests in flight when its time is up: not proxy failures.
cut = sum(v for k, v in errors.items() if "aborted due to deadline" in k)
print(ok, bad, sum(errors.values()) - cut, round(d["summary"]["requestsPerSec"]))
if bad or sum(errors.values()) - cut:
    print("statuses", codes, "errors", errors, file=sys.stderr)
PY
}
read -r hit_ok hit_bad hit_err hit_rps <<<"$(summary "$work/hits.json")"
read -r miss_ok miss_bad miss_err miss_rps <<<"$(summary "$work/misses.json")"
echo "cache hits: $hit_ok ok, $hit_bad non-2xx, $hit_err errors ($hit_rps req/s)"
echo "cache misses: $miss_ok ok, $miss_bad non-2xx, $miss_err errors ($miss_rps req/s)"
echo "clients killed mid-download: $(cat "$work/aborts"); upstream resets: $(cat "$work/resets"); plugin replacements: $reloads"
column -t "$samples" | sed -n '1p;2p;$p'
read -r fd_first rss_first <<<"$(awk 'NR==2 {print $2, $3}' "$samples")"
read -r fd_max rss_max <<<"$(awk 'NR>1 {if ($2>f) f=$2; if ($3>r) r=$3} END {print f, r}' "$samples")"
fd_end=$(fds); rss_end=$(rss)
echo "fds: first sample $fd_first, max $fd_max, end $fd_end; RSS MiB: first $rss_first, max $rss_max, end $rss_end"
check "no failed hit or miss" '[ "$hit_bad" -eq 0 ] && [ "$hit_err" -eq 0 ] && [ "$miss_bad" -eq 0 ] && [ "$miss_err" -eq 0 ]'
check "fds bounded (max ≤ first + 64, end ≤ first + 16)" '[ "$fd_max" -le $((fd_first + 64)) ] && [ "$fd_end" -le $((fd_first + 16)) ]'
check "RSS bounded (max ≤ 2 × first sample + 32 MiB)" '[ "$rss_max" -le $((rss_first * 2 + 32)) ]'
temps=$(find "$work/cache" -name '*.tmp' | wc -l)
check "no temporary files left in the cache ($temps)" '[ "$temps" -eq 0 ]'
mismatched=0; compared=0
while IFS= read -r -d '' file; do
  rel=${file#"$work/cache/127.0.0.1_18443/"}
  origin_file=$work/www/${rel%%\?*}
  [ -f "$origin_file" ] || continue
  compared=$((compared + 1))
  cmp -s "$file" "$origin_file" || { echo "partial or wrong: $file"; mismatched=$((mismatched + 1)); }
done < <(find "$work/cache/127.0.0.1_18443" -type f -print0)
check "every cached file equals the origin's ($compared compared)" '[ "$mismatched" -eq 0 ] && [ "$compared" -gt 0 ]'
reloaded=$(grep -cE "reloaded (plugin|the plugin chain)" "$work/proxlet-18300.log" || true)
check "plugin reloaded each time ($reloaded of $reloads)" '[ "$reloaded" -ge "$reloads" ]'
check "still serving" 'curl -s -k -x "$proxy" -o /dev/null -w "%{http_code}" https://127.0.0.1:18443/1k | grep -q 200'
panics=$(grep -ci "panicked" "$work/proxlet-18300.log" || true)
check "no panic in the log ($panics)" '[ "$panics" -eq 0 ]'
exit $fail

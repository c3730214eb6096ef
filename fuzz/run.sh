#!/usr/bin/env bash
# Runs the fuzz targets, each for SECONDS (default 600), one after another,
# in a network namespace that has only loopback: the request-head target
# starts proxlet and a loopback origin in-process, and nothing it does can
# reach another host. Needs root (unshare) and cargo-fuzz.
#   fuzz/run.sh [SECONDS] [TARGET…]
# Findings land in fuzz/artifacts/TARGET/; the corpus grows in
# fuzz/corpus/TARGET/ (not committed; fuzz/seeds/ holds the small seeds).
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-600}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(cachepath filter config request_head)
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
# libFuzzer's instrumentation flags need the nightly-only -Z options that
# cargo-fuzz passes; RUSTC_BOOTSTRAP lets the stable toolchain accept them.
export RUSTC_BOOTSTRAP=1
cargo fuzz build -O
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  echo "== $t: ${secs}s"
  unshare --net bash -c "ip link set lo up; cargo fuzz run -O $t corpus/$t seeds/$t -- -max_total_time=$secs -timeout=30 -rss_limit_mb=4096 -print_final_stats=1" 2>&1 |
    tee "corpus/$t.log" | grep -E "^(#[0-9]+ +DONE|stat::number_of_executed_units|==[0-9]+==|SUMMARY|panicked)" || true
done

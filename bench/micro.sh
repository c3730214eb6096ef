#!/usr/bin/env bash
# µs per plugin hook call (criterion): bench/micro.sh
set -euo pipefail
cd "$(dirname "$0")/.."
(cd plugins && cargo build --release --quiet --target wasm32-wasip2 -p rust-hello)
export PROXLET_BENCH_PLUGIN=$PWD/plugins/target/wasm32-wasip2/release/rust_hello.wasm
cd bench/micro && cargo bench --bench hook_call -- --noplot

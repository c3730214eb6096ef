#!/usr/bin/env bash
# µs per plugin hook call: bench/micro.sh (criterion, the Rust example vs
# no plugin), or bench/micro.sh A.wasm B.wasm … to compare components in
# alternating short rounds (hook_ab; `none` is no plugin, ROUNDS=40).
set -euo pipefail
cd "$(dirname "$0")/.."
(cd plugins && cargo build --release --quiet --target wasm32-wasip2 -p rust-hello)
hello=$PWD/plugins/target/wasm32-wasip2/release/rust_hello.wasm
if [ $# -gt 0 ]; then
  list=none
  for plugin in "$@"; do
    case $plugin in none) ;; /*) list+=":$plugin" ;; *) list+=":$PWD/$plugin" ;; esac
  done
  cd bench/micro && PROXLET_AB_PLUGINS=$list cargo bench --quiet --bench hook_ab
else
  export PROXLET_BENCH_PLUGIN=$hello
  cd bench/micro && cargo bench --bench hook_call -- --noplot
fi

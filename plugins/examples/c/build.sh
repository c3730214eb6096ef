#!/usr/bin/env bash
# Builds app.c (with the kit proxlet.h beside it) into a proxlet plugin
# component: ./build.sh [OUT.wasm]
# Needs clang, lld and wasi-libc (Debian: clang-14 lld-14 wasi-libc
# libclang-rt-14-dev-wasm32), wit-bindgen and wasm-tools (cargo install
# wit-bindgen-cli wasm-tools).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
wit=${PROXLET_WIT:-$here/../../../wit}
out=${1:-$here/inject-error.wasm}
clang=${CC:-$(command -v clang-14 || command -v clang)}
# clang finds wasm-ld beside itself; Debian keeps it under llvm-14/bin.
export PATH="/usr/lib/llvm-14/bin:$PATH"
cd "$here"
wit-bindgen c "$wit" --world plugin --out-dir gen >/dev/null
"$clang" --target=wasm32-wasi -mexec-model=reactor -O2 -Wall -Werror \
  -o gen/module.wasm app.c gen/plugin.c gen/plugin_component_type.o
wasm-tools component new gen/module.wasm -o "$out"
echo "built $out"

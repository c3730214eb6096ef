#!/usr/bin/env bash
# README's test command: installs what the tests need (skipping whatever is
# already there, so a second run goes straight to the tests), then runs
# `cargo test --workspace`. Extra arguments go to cargo test, e.g.
# `./test.sh --test home` or `./test.sh -- --test-threads 2`.
set -euo pipefail
cd "$(dirname "$0")"

say() { echo "test.sh: $*" >&2; }

# The tests drive real clients: curl, pip (python3 -m pip), npm, cargo, go
# and mvn (with Java's keytool for its trust store); the C plugin example
# needs Debian's clang 14, wasm-ld and wasi-libc.
missing=()
command -v curl >/dev/null 2>&1 || missing+=(curl ca-certificates)
python3 -m pip --version >/dev/null 2>&1 || missing+=(python3 python3-pip)
python3 -c 'import ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v go >/dev/null 2>&1 || missing+=(golang)
command -v mvn >/dev/null 2>&1 || missing+=(maven)
command -v keytool >/dev/null 2>&1 || missing+=(default-jre-headless)
command -v clang-14 >/dev/null 2>&1 || missing+=(clang-14)
# Transparent mode's test: network namespaces, a veth pair, iptables REDIRECT.
PATH=$PATH:/usr/sbin:/sbin command -v ip >/dev/null 2>&1 || missing+=(iproute2)
PATH=$PATH:/usr/sbin:/sbin command -v iptables >/dev/null 2>&1 || missing+=(iptables)
[ -x /usr/lib/llvm-14/bin/wasm-ld ] || missing+=(lld-14)
[ -f /usr/include/wasm32-wasi/stdlib.h ] || missing+=(wasi-libc)
[ -f /usr/lib/llvm-14/lib/clang/14.0.6/lib/wasi/libclang_rt.builtins-wasm32.a ] ||
  missing+=(libclang-rt-14-dev-wasm32)
if [ ${#missing[@]} -gt 0 ]; then
  if ! command -v apt-get >/dev/null 2>&1; then
    say "missing system packages (Debian names): ${missing[*]}; install them and run ./test.sh again"
    exit 1
  fi
  sudo=()
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null 2>&1 || {
      say "installing ${missing[*]} needs root: run as root or install sudo"
      exit 1
    }
    sudo=(sudo)
  fi
  say "installing ${missing[*]}"
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

# Plugins are built for this target (rust-toolchain.toml names it, but
# rustup adds it only when it installs the toolchain; the build scripts
# add it too).
if command -v rustup >/dev/null 2>&1 &&
  ! rustup target list --installed | grep -qx wasm32-wasip2; then
  rustup target add wasm32-wasip2
fi

# The Python and JavaScript plugin examples are built from source by the tests.
if ! command -v componentize-py >/dev/null 2>&1 &&
  ! [ -x "$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')/componentize-py" ]; then
  say "installing componentize-py"
  python3 -m pip install -q componentize-py==0.25.1 ||
    python3 -m pip install -q --break-system-packages componentize-py==0.25.1
fi
js=plugins/examples/js
if ! [ -d $js/node_modules/@bytecodealliance/componentize-js ] ||
  ! [ $js/node_modules/.package-lock.json -nt $js/package-lock.json ]; then
  say "installing the JavaScript example's packages (npm ci)"
  (cd $js && npm ci --no-audit --no-fund --loglevel=error)
fi
# The web UI's browser tests (tests/web) drive Chromium with playwright-core.
web=tests/web
if ! [ -d $web/node_modules/playwright-core ] ||
  ! [ $web/node_modules/.package-lock.json -nt $web/package-lock.json ]; then
  say "installing the browser tests' packages (npm ci)"
  (cd $web && npm ci --no-audit --no-fund --loglevel=error)
fi
# The C example: bindings generator and component wrapper, with only the
# features it uses (each builds in about two minutes, once).
if ! wit-bindgen --version 2>/dev/null | grep -q "0.46.0"; then
  say "installing wit-bindgen 0.46.0"
  cargo install --locked -q wit-bindgen-cli --version 0.46.0 --no-default-features --features c
fi
if ! wasm-tools --version 2>/dev/null | grep -q "1.263.0"; then
  say "installing wasm-tools 1.263.0"
  cargo install --locked -q wasm-tools --version 1.263.0 --no-default-features --features component
fi

# The interop tests (tests/tests/interop.rs) run real mitmproxy from PyPI,
# in its own venv, and the npm HAR 1.2 validator, both kept under
# $PROXLET_TEST_TOOLS. mitmproxy 11.0.2 is the newest that runs on Python
# 3.11 (12 needs 3.12); its flow format (21) is the one 12 writes too.
export PROXLET_TEST_TOOLS="${PROXLET_TEST_TOOLS:-$HOME/.cache/proxlet-test}"
tools=$PROXLET_TEST_TOOLS
mitmproxy_version=11.0.2
if ! "$tools/mitmproxy/bin/mitmdump" --version 2>/dev/null | grep -q "Mitmproxy: $mitmproxy_version"; then
  say "installing mitmproxy $mitmproxy_version into $tools/mitmproxy"
  python3 -m venv "$tools/mitmproxy"
  "$tools/mitmproxy/bin/python" -m pip install -q "mitmproxy==$mitmproxy_version"
fi
# The metrics test parses /metrics with the reference Prometheus client's
# parsers, and the WebSocket tests talk through the proxy with the
# `websockets` package (one venv for both).
py_packages="prometheus-client==0.26.0 websockets==17.4"
if ! "$tools/py/bin/python" -c "
import importlib.metadata as m, sys
sys.exit(any(m.version(n) != v for n, v in (p.split('==') for p in sys.argv[1:])))
" $py_packages 2>/dev/null; then
  say "installing $py_packages into $tools/py"
  python3 -m venv "$tools/py"
  "$tools/py/bin/python" -m pip install -q $py_packages
fi
if ! [ -f "$tools/har/node_modules/har-validator/package.json" ]; then
  say "installing har-validator into $tools/har"
  mkdir -p "$tools/har"
  npm install --prefix "$tools/har" --no-audit --no-fund --loglevel=error har-validator@5.1.5
fi

# A full run builds the proxlet binary the tests run in the same cargo run
# as the tests (in parallel with them; the same command the tests' helper
# runs, tests/src/proxlet.rs), not in the first test binary that needs it
# while all its tests wait.
[ $# -gt 0 ] || cargo build --workspace --bins --tests
# Every test binary runs even when one fails, so one run shows all failures.
exec cargo test --workspace --no-fail-fast "$@"

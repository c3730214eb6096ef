#!/usr/bin/env bash
# Builds app.py into a proxlet plugin component: ./build.sh [OUT.wasm]
# Needs componentize-py (pip install componentize-py==0.25.1).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
wit=${PROXLET_WIT:-$here/../../../wit}
out=${1:-$here/json-field.wasm}
cd "$here"
componentize-py -d "$wit" -w plugin componentize app -o "$out"

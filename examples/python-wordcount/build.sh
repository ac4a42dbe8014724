#!/usr/bin/env bash
# Builds wordcount.wasm from app.py with componentize-py (pip install componentize-py==0.25.1),
# against the vendored wasi:messaging WIT and its `messaging-core` world. Prints the path.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
out="../target/python/wordcount.wasm"
mkdir -p "$(dirname "$out")"
if [[ ! "$out" -nt app.py ]]; then
    componentize-py -d ../../wit/deps/messaging -w messaging-core componentize app -o "$out" >&2
fi
echo "$PWD/$out"

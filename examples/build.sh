#!/usr/bin/env bash
# Builds the example guest components (target wasm32-wasip2, see
# .cargo/config.toml) and prints the paths of the .wasm files.
# Works from any directory; exits non-zero on failure.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"
out="$PWD/target/wasm32-wasip2/release"

cargo build --release --locked --target wasm32-wasip2 --target-dir "$PWD/target"

for name in transform publisher responder requester relay; do
    wasm="$out/$name.wasm"
    if [[ ! -f "$wasm" ]]; then
        echo "build.sh: $wasm was not built" >&2
        exit 1
    fi
    echo "$wasm"
done

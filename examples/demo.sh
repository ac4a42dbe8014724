#!/usr/bin/env bash
# The whole product in one command, on a fresh machine, with no broker:
# install what is missing, build msgplug and the `transform` example app, compose the app
# with the embedded `local` backend, and run the result on stock wasmtime.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

source .ci/setup

echo "==> building msgplug and the example apps" >&2
cargo build --locked --quiet
examples/build.sh >/dev/null
app=examples/target/wasm32-wasip2/release/transform.wasm
out=target/demo/transform.composed.wasm
mkdir -p target/demo

echo "==> msgplug compose $app -o $out" >&2
target/debug/msgplug compose "$app" -o "$out"

input='{"topic":"orders","data":"hello","metadata":{"id":"1"}}
{"topic":"orders.eu","data":"bonjour","content_type":"text/plain"}
{"topic":"audit","data_base64":"//79"}'
echo "==> messages in (stdin):" >&2
echo "$input" >&2
echo "==> wasmtime run $out  (messages out on stdout, errors on stderr)" >&2
status=0
wasmtime run "$out" <<<"$input" || status=$?
echo "==> exit status $status (1 = some handler failed: the last line is not UTF-8 text, on purpose)" >&2

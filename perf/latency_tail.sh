#!/usr/bin/env bash
# The e2e latency tail at 100k msgs/s (issue 17): 100 B records produced at a fixed rate and read by a
# consumer waiting at the tail, quiet and with one core busy with another process (a shell busy loop
# pinned to core 0), each round on a fresh broker. With OLD=<weir binary> that binary runs in turn
# with this one (old, new, old, new, ...); FLAGS are extra `weir serve` flags for this one (e.g.
# FLAGS=--realtime-shards, or OLD=target/release/weir FLAGS=--realtime-shards for ordinary vs real-time shards). Per run: p50/p99/p99.9 of the e2e latency and the CPU
# pressure the run saw (/proc/pressure/cpu "some": the share of time a runnable task waited for a
# CPU) and the share of the CPUs' time the hypervisor took (steal in /proc/stat: a vCPU not running
# at all, which no priority inside the machine helps). Medians per binary and condition; outputs in perf/out-latency/.
#
#   perf/latency_tail.sh                       # RUNS=3 SECONDS_PER_RUN=8
#   OLD=/tmp/weir-before perf/latency_tail.sh
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
SECS=${SECONDS_PER_RUN:-8}
OUT=perf/out-latency
PORT=${PORT:-19692}
BOOT=127.0.0.1:$PORT
rm -rf "$OUT" && mkdir -p "$OUT"
cargo build --release -q
cp ./target/release/weir "$OUT/weir-new"
BENCH=./target/release/weir-bench
bins=(new)
[ -n "${OLD:-}" ] && cp "$OLD" "$OUT/weir-old" && bins=(old new)

broker= hog=
cleanup() { kill $broker $hog 2>/dev/null || true; }
trap cleanup EXIT
pressure() { awk '/^some/ {split($5, t, "="); print t[2]}' /proc/pressure/cpu; }
steal() { awk '/^cpu / {print $9}' /proc/stat; }

run() { # BIN-NAME CONDITION N
    rm -rf "$OUT/data"
    local flags=(--listen "$BOOT" --data-dir "$OUT/data" --shards 2)
    # A binary from before the metrics endpoint has no --metrics-listen.
    "$OUT/weir-$1" serve --help | grep -q -- --metrics-listen && flags+=(--metrics-listen off)
    # shellcheck disable=SC2206
    [ "$1" = new ] && flags+=(${FLAGS:-})
    "$OUT/weir-$1" serve "${flags[@]}" >> "$OUT/broker.log" 2>&1 &
    broker=$!
    for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.1; done
    hog=
    if [ "$2" = busy ]; then taskset -c 0 sh -c 'while :; do :; done' & hog=$!; fi
    local before=$(pressure) stolen=$(steal)
    $BENCH e2e --bootstrap "$BOOT" --topic lat --msg-size 100 --rate 100000 --linger-ms 0.1 --warmup 1s \
        --duration "${SECS}s" --no-pin --json "$OUT/$1-$2-$3.json" > /dev/null
    echo $(( $(pressure) - before )) > "$OUT/$1-$2-$3.pressure-us"
    echo $(( $(steal) - stolen )) > "$OUT/$1-$2-$3.steal-ticks"
    [ -n "$hog" ] && kill $hog && wait $hog 2>/dev/null || true
    kill $broker && wait $broker 2>/dev/null || true
}

for n in $(seq "$RUNS"); do
    for cond in quiet busy; do
        for b in "${bins[@]}"; do run "$b" "$cond" "$n"; done
    done
done
rm -rf "$OUT/data"

python3 - "$OUT" "$RUNS" "$SECS" "${bins[@]}" <<'PY'
import json, os, statistics, sys
out, runs, secs, bins = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4:]
for cond in ("quiet", "busy"):
    for b in bins:
        rows = []
        for n in range(1, runs + 1):
            lat = json.load(open(f"{out}/{b}-{cond}-{n}.json"))["latency"]
            stall = int(open(f"{out}/{b}-{cond}-{n}.pressure-us").read()) / 1e6 / (secs + 1)
            stolen = int(open(f"{out}/{b}-{cond}-{n}.steal-ticks").read()) / os.sysconf("SC_CLK_TCK")
            rows.append((lat["p50_us"], lat["p99_us"], lat["p99_9_us"], stall, stolen / (secs + 1) / os.cpu_count()))
        med = [statistics.median(r[i] for r in rows) for i in range(5)]
        runs_txt = " ".join(f"{r[1] / 1000:.2f}" for r in rows)
        print(f"{cond:5} {b:3}  p50 {med[0] / 1000:.2f} ms  p99 {med[1] / 1000:.2f} ms  p99.9 {med[2] / 1000:.2f} ms"
              f"  (p99 per run: {runs_txt}; CPU pressure 'some' {med[3] * 100:.0f}%; steal {med[4] * 100:.0f}%)")
PY

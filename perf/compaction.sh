#!/usr/bin/env bash
# Log compaction (issue 14): the cleaner's throughput against the disk's read ceiling, and the e2e
# latency of a topic at 100k msgs/s while the cleaner works beside it, against the same run with the
# cleaner idle. One sitting, runs alternating; results in perf/out-compaction/.
#
#   perf/compaction.sh                  # RUNS=3, 3 GB of keyed 1 KiB records per run (a pass of several s)
#   RUNS=1 MESSAGES=300000 perf/compaction.sh
#   IO_LIMIT=1.7976931348623157E308 perf/compaction.sh   # the cleaner unthrottled (Kafka's default;
#                                       # log.cleaner.io.max.bytes.per.second, Weir's is 100 MB/s)
#
# Throughput: a broker whose cleaner sleeps is filled with MESSAGES records of 1 KiB, each batch of
# 1,000 holding keys key-0..key-999 (a topic updated over and over), stopped, and started again with a cleaner that wakes at once:
# its first pass reads the whole log twice (the key map, then the rewrite) and writes what stays;
# the broker logs the pass's seconds and MB/s of log processed. The ceiling is fio reading a file
# of the same size with O_DIRECT in 1 MiB blocks at queue depth 1, as the cleaner reads.
#
# Latency: `weir-bench e2e --rate 100000` on a 2-partition topic (one partition per shard) for
# E2E_SECONDS, once while a pass over the big topic runs (started with it) and once with no pass.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
MESSAGES=${MESSAGES:-3000000}
E2E_SECONDS=${E2E_SECONDS:-5}
# log.cleaner.io.max.bytes.per.second for the cleaning runs (empty: the broker's default).
IO_LIMIT=${IO_LIMIT:-}
OUT=perf/out-compaction
PORT=${PORT:-19392}
BOOT=127.0.0.1:$PORT
rm -rf "$OUT" && mkdir -p "$OUT"
command -v fio >/dev/null || { apt-get update -qq && apt-get install -y -qq fio >/dev/null; }
cargo build --release -q
BENCH=./target/release/weir-bench
BROKER=

start() { # data dir, log file, extra flags
    local data=$1 log=$2
    shift 2
    ./target/release/weir serve --listen "$BOOT" --data-dir "$data" --shards 2 "$@" >> "$log" 2>&1 &
    BROKER=$!
    for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && return; sleep 0.1; done
    echo "broker did not start" >&2; exit 1
}
stop() { kill "$BROKER"; wait "$BROKER" 2>/dev/null || true; }
trap 'kill $BROKER 2>/dev/null || true' EXIT

fill() { # data dir, log file: a full, never cleaned compacted topic `big`
    start "$1" "$2" --log-cleaner-backoff-ms 3600000
    $BENCH produce --bootstrap "$BOOT" --topic big --partitions 1 --msg-size 1024 --messages "$MESSAGES" --keys 1000 \
        --topic-config cleanup.policy=compact --topic-config min.cleanable.dirty.ratio=0.01 \
        --topic-config segment.bytes=33554432 --no-pin > /dev/null
    stop
}

wait_cleaned() { # log file
    for _ in $(seq 1200); do grep -q "log cleaned" "$1" && return; sleep 0.1; done
    echo "no cleaning pass in $1" >&2; exit 1
}

e2e() { # output json
    $BENCH e2e --bootstrap "$BOOT" --topic "lat-$RANDOM$RANDOM" --partitions 2 --msg-size 100 --rate 100000 \
        --duration "${E2E_SECONDS}s" --warmup 1s --no-pin --json "$1" > /dev/null
}

for run in $(seq "$RUNS"); do
    echo "== run $run"
    size=$((MESSAGES * 1100))
    fio --name=r --ioengine=io_uring --direct=1 --bs=1M --iodepth=1 --rw=read --size="$size" --filename="$OUT/fio.test" \
        --output-format=json > "$OUT/fio-read-$run.json"
    rm -f "$OUT/fio.test"
    # Throughput, and the latency with a pass running beside.
    fill "$OUT/data-$run" "$OUT/broker-$run.log"
    # What fio and the fill wrote is flushed first (the disk's cache holds it otherwise, and the pass's
    # first fsync would pay for all of it): the pass's flushes then cost what a pass costs.
    sync
    start "$OUT/data-$run" "$OUT/broker-$run.log" --log-cleaner-backoff-ms 100 --retention-check-interval-ms 100 \
        ${IO_LIMIT:+--log-cleaner-io-max-bytes-per-second "$IO_LIMIT"}
    e2e "$OUT/e2e-cleaning-$run.json"
    grep -q "log cleaned" "$OUT/broker-$run.log" && echo "   (the pass ended before the e2e run did)"
    wait_cleaned "$OUT/broker-$run.log"
    stop
    # The same e2e run with the cleaner idle (the log is clean now).
    start "$OUT/data-$run" "$OUT/broker-idle-$run.log" --log-cleaner-backoff-ms 100
    e2e "$OUT/e2e-idle-$run.json"
    stop
    rm -rf "$OUT/data-$run"
done

python3 - "$OUT" "$RUNS" <<'EOF'
import json, re, statistics, sys
out, runs = sys.argv[1], int(sys.argv[2])
def med(xs): return statistics.median(xs)
fio = [json.load(open(f"{out}/fio-read-{r}.json"))["jobs"][0]["read"]["bw_bytes"] / 1e6 for r in range(1, runs + 1)]
passes = []
for r in range(1, runs + 1):
    line = [l for l in open(f"{out}/broker-{r}.log") if "log cleaned" in l][0]
    line = re.sub(r"\x1b\[[0-9;]*m", "", line)
    field = lambda name: float(re.search(name + r'="?([0-9.]+)', line).group(1))
    passes.append((field(" secs"), field("mb_per_s"), field("swap_secs")))
lat = lambda kind, key: [json.load(open(f"{out}/e2e-{kind}-{r}.json"))["latency"][key] for r in range(1, runs + 1)]
print(f"fio O_DIRECT read, 1 MiB, qd1: {[round(x) for x in fio]} MB/s, median {med(fio):.0f}")
print(f"cleaner first pass: {[p[1] for p in passes]} MB/s of log ({[p[0] for p in passes]} s), median {med([p[1] for p in passes]):.0f} MB/s")
print(f"  = {med([p[1] for p in passes]) / med(fio):.2f} of the read ceiling (a pass reads the log twice: 0.50 is the ceiling's share)")
print(f"  putting cleaned segments in place (fsyncs, renames): {[p[2] for p in passes]} s")
for key in ("p50_us", "p99_us", "p99_9_us"):
    c, i = lat("cleaning", key), lat("idle", key)
    print(f"e2e 100 B at 100k msgs/s {key}: cleaning {c} idle {i}; medians {med(c)} vs {med(i)} ({med(c) / max(med(i), 1):.2f}x)")
EOF

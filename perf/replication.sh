#!/usr/bin/env bash
# Replication across shards (issue 15): produce 1 KiB with acks=all to a topic of one replica and to
# one of two (leader and follower on the two shards), and e2e latency at 100k msgs/s for both, runs
# alternating R=1 / R=2 on one broker in one sitting; medians printed, outputs in perf/out-replication/.
#
#   perf/replication.sh                   # RUNS=5, 500,000 messages per produce run, 5 s e2e runs
#   RUNS=3 MESSAGES=200000 perf/replication.sh
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-5}
MESSAGES=${MESSAGES:-500000}
E2E_SECONDS=${E2E_SECONDS:-5}
OUT=perf/out-replication
PORT=${PORT:-19492}
BOOT=127.0.0.1:$PORT
rm -rf "$OUT" && mkdir -p "$OUT"
cargo build --release -q
BENCH=./target/release/weir-bench
./target/release/weir serve --listen "$BOOT" --data-dir "$OUT/data" --shards 2 > "$OUT/broker.log" 2>&1 &
BROKER=$!
trap 'kill $BROKER 2>/dev/null || true' EXIT
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.1; done

for run in $(seq "$RUNS"); do
    for r in 1 2; do
        $BENCH produce --bootstrap "$BOOT" --topic "p$r-$run" --partitions 1 --replication-factor $r --msg-size 1024 \
            --messages "$MESSAGES" --acks -1 --no-pin --json "$OUT/produce-r$r-$run.json" > /dev/null
        $BENCH e2e --bootstrap "$BOOT" --topic "e$r-$run" --partitions 2 --replication-factor $r --msg-size 100 \
            --rate 100000 --duration "${E2E_SECONDS}s" --warmup 1s --no-pin --json "$OUT/e2e-r$r-$run.json" > /dev/null
    done
done

python3 - "$OUT" "$RUNS" <<'EOF'
import json, statistics, sys
out, runs = sys.argv[1], int(sys.argv[2])
load = lambda kind, r, run: json.load(open(f"{out}/{kind}-r{r}-{run}.json"))
rate = {r: [load("produce", r, n)["msgs_per_sec"] for n in range(1, runs + 1)] for r in (1, 2)}
ratios = [b / a for a, b in zip(rate[1], rate[2])]
print(f"produce 1 KiB acks=all msgs/s: R=1 {[round(x) for x in rate[1]]}, R=2 {[round(x) for x in rate[2]]}")
print(f"  R=2/R=1 per run {[round(x, 2) for x in ratios]}, median {statistics.median(ratios):.2f}")
for key in ("p50_us", "p99_us", "p99_9_us"):
    lat = {r: [load("e2e", r, n)["latency"][key] for n in range(1, runs + 1)] for r in (1, 2)}
    print(f"e2e 100 B at 100k msgs/s {key}: R=1 {lat[1]} R=2 {lat[2]}; medians {statistics.median(lat[1])} vs {statistics.median(lat[2])}")
EOF

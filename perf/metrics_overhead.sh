#!/usr/bin/env bash
# What the metrics cost (issue 16): produce 100 B and 1 KiB throughput and e2e latency at 100k msgs/s
# against three brokers, in turn in one sitting, a fresh broker per run:
#   old  — a binary built before the metrics (OLD=path; recording absent),
#   off  — this binary with --metrics-listen off (recording on, nobody scrapes),
#   on   — this binary with its listener scraped every SCRAPE_EVERY seconds during the run (default
#          5: three times as often as the usual 15 s Prometheus scrape interval).
# Medians and per-run ratios printed; outputs in perf/out-metrics/. Takes ~40 s a round.
#
#   git worktree add ../weir-before 4b87161 && (cd ../weir-before && cargo build --release)
#   OLD=../weir-before/target/release/weir perf/metrics_overhead.sh     # RUNS=5 SCRAPE_EVERY=5
set -euo pipefail
cd "$(dirname "$0")/.."
: "${OLD:?OLD=path to a weir binary built before the metrics}"
RUNS=${RUNS:-5}
SCRAPE_EVERY=${SCRAPE_EVERY:-5}
OUT=perf/out-metrics
PORT=${PORT:-19592}
MPORT=${MPORT:-19644}
BOOT=127.0.0.1:$PORT
rm -rf "$OUT" && mkdir -p "$OUT"
cargo build --release -q
NEW=./target/release/weir
BENCH=./target/release/weir-bench

run() { # variant run
    local variant=$1 n=$2 bin=$NEW flags=(--metrics-listen off)
    [ "$variant" = old ] && bin=$OLD && flags=()
    [ "$variant" = on ] && flags=(--metrics-listen "127.0.0.1:$MPORT")
    rm -rf "$OUT/data" && sync
    "$bin" serve --listen "$BOOT" --data-dir "$OUT/data" --shards 2 "${flags[@]}" > "$OUT/broker-$variant-$n.log" 2>&1 &
    local broker=$! scraper=
    for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.1; done
    if [ "$variant" = on ]; then
        (while sleep "$SCRAPE_EVERY"; do curl -s -o /dev/null "127.0.0.1:$MPORT/metrics" || true; done) &
        scraper=$!
    fi
    $BENCH produce --bootstrap "$BOOT" --topic p100 --msg-size 100 --messages 3000000 --no-pin --json "$OUT/p100-$variant-$n.json" > /dev/null
    $BENCH produce --bootstrap "$BOOT" --topic p1k --msg-size 1024 --messages 600000 --no-pin --json "$OUT/p1k-$variant-$n.json" > /dev/null
    $BENCH e2e --bootstrap "$BOOT" --topic e2e --partitions 2 --msg-size 100 --rate 100000 --duration 5s --warmup 1s --no-pin \
        --json "$OUT/e2e-$variant-$n.json" > /dev/null
    [ -n "$scraper" ] && kill "$scraper"
    kill "$broker" && wait "$broker" 2>/dev/null || true
}

# The order turns each round, so that no variant always follows the same one (the previous run's
# deleted data and dirty pages cost the next one something).
orders=("old off on" "off on old" "on old off")
for n in $(seq "$RUNS"); do
    for variant in ${orders[$(( (n - 1) % 3 ))]}; do
        run "$variant" "$n"
    done
done

python3 - "$OUT" "$RUNS" <<'PY'
import json, statistics, sys
out, runs = sys.argv[1], int(sys.argv[2])
load = lambda kind, v, n: json.load(open(f"{out}/{kind}-{v}-{n}.json"))
for kind, key, label in (("p100", "msgs_per_sec", "produce 100 B msgs/s"), ("p1k", "msgs_per_sec", "produce 1 KiB msgs/s")):
    got = {v: [load(kind, v, n)[key] for n in range(1, runs + 1)] for v in ("old", "off", "on")}
    print(label + ": " + ", ".join(f"{v} median {statistics.median(x):,.0f}" for v, x in got.items()))
    for v in ("off", "on"):
        ratios = [b / a for a, b in zip(got["old"], got[v])]
        print(f"  {v}/old per run {[round(r, 3) for r in ratios]}, median {statistics.median(ratios):.3f}")
for key in ("p50_us", "p99_us", "p99_9_us"):
    got = {v: [load("e2e", v, n)["latency"][key] for n in range(1, runs + 1)] for v in ("old", "off", "on")}
    print(f"e2e 100 B at 100k msgs/s {key}: " + ", ".join(f"{v} {x} (median {statistics.median(x)})" for v, x in got.items()))
PY

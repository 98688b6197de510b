#!/usr/bin/env bash
# The broker's memory stays within its batch cache budget plus 256 MiB (issue 17): produce and
# consume together for MINUTES (default 10) with the cache budget at BUDGET bytes (default 2 GiB),
# sampling the broker's RSS twice a second. Retention keeps the disk in bounds (RETENTION bytes per
# partition, checked every 5 s). Prints the peak RSS against the bound; outputs in perf/out-rss/.
#
#   perf/rss_bound.sh            # MINUTES=10 BUDGET=2147483648 RATE=300000 MSG=1024 PARTITIONS=4
set -euo pipefail
cd "$(dirname "$0")/.."
MINUTES=${MINUTES:-10}
BUDGET=${BUDGET:-2147483648}
RATE=${RATE:-300000}
MSG=${MSG:-1024}
PARTITIONS=${PARTITIONS:-4}
RETENTION=${RETENTION:-4294967296}
OUT=perf/out-rss
PORT=${PORT:-19892}
BOOT=127.0.0.1:$PORT
rm -rf "$OUT" && mkdir -p "$OUT"
cargo build --release -q

./target/release/weir serve --listen "$BOOT" --data-dir "$OUT/data" --shards 2 --metrics-listen off \
    --log-cache-max-bytes "$BUDGET" --retention-bytes "$RETENTION" --retention-check-interval-ms 5000 > "$OUT/broker.log" 2>&1 &
BROKER=$!
trap 'kill $BROKER 2>/dev/null || true; wait $BROKER 2>/dev/null || true; rm -rf "$OUT/data"' EXIT
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.1; done
(while kill -0 $BROKER 2>/dev/null; do
    awk '/VmRSS/ {print $2}' /proc/$BROKER/status >> "$OUT/rss-kib.txt" 2>/dev/null || true
    sleep 0.5
done) &
./target/release/weir-bench e2e --bootstrap "$BOOT" --topic rss --partitions "$PARTITIONS" --msg-size "$MSG" --rate "$RATE" \
    --duration "${MINUTES}m" --no-pin --json "$OUT/e2e.json" > "$OUT/e2e.txt"
python3 - "$OUT" "$BUDGET" <<'PY'
import json, sys
out, budget = sys.argv[1], int(sys.argv[2])
rss = [int(l) * 1024 for l in open(f"{out}/rss-kib.txt") if l.strip()]
bound = budget + (256 << 20)
e2e = json.load(open(f"{out}/e2e.json"))
print(f"{len(rss)} samples; peak RSS {max(rss) / 2**20:,.0f} MiB; budget {budget / 2**20:,.0f} MiB + 256 MiB = {bound / 2**20:,.0f} MiB: "
      + ("within" if max(rss) <= bound else "OVER"))
print(f"e2e: {e2e['msgs_per_sec']:,.0f} msgs/s, latency p99 {e2e['latency']['p99_us']} µs")
PY

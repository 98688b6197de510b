#!/usr/bin/env bash
# Weir against any broker that speaks Kafka (Apache Kafka, Redpanda, another Weir), measured with one
# and the same client, librdkafka, so that a comparison does not rest on two different benches.
#
#   perf/side_by_side.sh NAME=HOST:PORT [NAME=HOST:PORT ...]
#   e.g. perf/side_by_side.sh weir=127.0.0.1:9092 redpanda=127.0.0.1:19092
#
# The brokers must be running (each on its own port; give every broker the same disk and flush
# settings to compare like with like). Each round, brokers in turn (the order turns every round),
# on a fresh one-partition topic per broker and size: librdkafka's producer at full speed for
# SECONDS_PER_RUN (acks=1, batches of BATCH messages), then librdkafka's consumer reading the topic from its
# start to its end. Sizes 100 B and 1 KiB. Medians, and each broker's ratio to the first one named,
# round by round. Outputs in perf/out-side-by-side/.
#
#   RUNS=3 SECONDS_PER_RUN=5 BATCH=1000 perf/side_by_side.sh ...
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { sed -n 2,16p "$0"; exit 2; }
RUNS=${RUNS:-3}
SECS=${SECONDS_PER_RUN:-5}
BATCH=${BATCH:-1000}
OUT=perf/out-side-by-side
rm -rf "$OUT" && mkdir -p "$OUT"
[ -f /usr/include/librdkafka/rdkafka.h ] || { apt-get update -qq && apt-get install -y -qq librdkafka-dev >/dev/null; }
python3 -c "import confluent_kafka" 2>/dev/null || pip install -q confluent-kafka
gcc -O2 -o "$OUT/rdkafka_produce" perf/rdkafka_produce.c -lrdkafka
gcc -O2 -o "$OUT/rdkafka_consume" perf/rdkafka_consume.c -lrdkafka

topic() { # create|delete BOOTSTRAP TOPIC
    python3 - "$@" <<'PY'
import sys
from confluent_kafka.admin import AdminClient, NewTopic
action, bootstrap, name = sys.argv[1:]
admin = AdminClient({"bootstrap.servers": bootstrap})
if action == "create":
    admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)])[name].result(30)
else:
    try:
        admin.delete_topics([name])[name].result(30)
    except Exception:
        pass
PY
}

names=()
for arg in "$@"; do names+=("${arg%%=*}"); done
for n in $(seq "$RUNS"); do
    # Turn the order each round, so that no broker always runs first (or after the same one).
    shift_by=$(( (n - 1) % $# ))
    order=("${@:shift_by+1}" "${@:1:shift_by}")
    for arg in "${order[@]}"; do
        name=${arg%%=*} boot=${arg#*=}
        for size in 100 1024; do
            t="side-$size-$n-$RANDOM"
            topic create "$boot" "$t"
            "$OUT/rdkafka_produce" "$boot" "$t" "$size" "$SECS" "$BATCH" > "$OUT/produce-$name-$size-$n.txt"
            "$OUT/rdkafka_consume" "$boot" "$t" > "$OUT/consume-$name-$size-$n.txt"
            topic delete "$boot" "$t"
        done
    done
done

python3 - "$OUT" "$RUNS" "${names[@]}" <<'PY'
import statistics, sys
out, runs, names = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
rate = lambda kind, name, size, n: float(open(f"{out}/{kind}-{name}-{size}-{n}.txt").read().split()[2])
print("| workload | " + " | ".join(f"{n} msgs/s (median; runs)" for n in names) + " | " + " | ".join(f"{n}/{names[0]} (median; per round)" for n in names[1:]) + " |")
print("|---" * (1 + 2 * len(names) - 1) + "|")
for kind in ("produce", "consume"):
    for size in (100, 1024):
        got = {n: [rate(kind, n, size, r) for r in range(1, runs + 1)] for n in names}
        cells = [f"{statistics.median(x):,.0f}; {', '.join(f'{v / 1e6:.2f}M' for v in x)}" for x in got.values()]
        ratios = []
        for n in names[1:]:
            per = [b / a for a, b in zip(got[names[0]], got[n])]
            ratios.append(f"{statistics.median(per):.2f}; {', '.join(f'{r:.2f}' for r in per)}")
        label = f"{kind} {'100 B' if size == 100 else '1 KiB'}"
        print(f"| {label} | " + " | ".join(cells + ratios) + " |")
PY

#!/usr/bin/env bash
# The standard performance suite: measures this machine's ceilings (loopback TCP with iperf3,
# sequential O_DIRECT writes with fio) and then Weir on a fresh broker with weir-bench, three runs
# per workload, and prints each median beside its target and its ceiling.
#
#   perf/run.sh              # full suite (~5 minutes); results in perf/out/
#   RUNS=1 SECONDS_PER_RUN=3 perf/run.sh   # a quick pass
#
# Needs root for apt-get (iperf3, fio, librdkafka-dev) the first time.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
SECS=${SECONDS_PER_RUN:-5}
OUT=perf/out
PORT=${PORT:-19092}
BOOT=127.0.0.1:$PORT
rm -rf "$OUT" && mkdir -p "$OUT"

need=()
command -v iperf3 >/dev/null || need+=(iperf3)
command -v fio >/dev/null || need+=(fio)
[ -f /usr/include/librdkafka/rdkafka.h ] || need+=(librdkafka-dev)
if [ ${#need[@]} -gt 0 ]; then apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null; fi
cargo build --release -q
gcc -O2 -o "$OUT/rdkafka_produce" perf/rdkafka_produce.c -lrdkafka

echo "== ceilings"
iperf3 -s -1 -p 5299 >/dev/null 2>&1 &
sleep 0.5
iperf3 -c 127.0.0.1 -p 5299 -t 5 -J > "$OUT/iperf3.json"
fio --name=w --ioengine=io_uring --direct=1 --bs=1M --rw=write --size=2G --filename="$OUT/fio.test" --output-format=json > "$OUT/fio.json"
# Cold consumes read the disk (O_DIRECT writes leave the page cache empty): measure its read ceiling.
fio --name=r --ioengine=io_uring --direct=1 --bs=8M --rw=read --size=2G --filename="$OUT/fio.test" --output-format=json > "$OUT/fio-read.json"
rm -f "$OUT/fio.test"

echo "== broker"
./target/release/weir serve --listen "$BOOT" --data-dir "$OUT/data" > "$OUT/broker.log" 2>&1 &
BROKER=$!
trap 'kill $BROKER 2>/dev/null || true; wait $BROKER 2>/dev/null || true' EXIT
sleep 1
(while kill -0 $BROKER 2>/dev/null; do ps -o rss= -p $BROKER >> "$OUT/rss.txt" || true; sleep 0.5; done) &

W="./target/release/weir"
B="./target/release/weir-bench --bootstrap $BOOT --no-pin"
fresh() { # topic [configs...]
    local t=$1; shift
    $W topic delete "$t" --bootstrap "$BOOT" >/dev/null 2>&1 || true
    $W topic create "$t" --bootstrap "$BOOT" "$@" >/dev/null
}
for size in 100 1024; do
    for i in $(seq 1 "$RUNS"); do
        fresh "p$size"
        $B produce --topic "p$size" --msg-size $size --duration "${SECS}s" --json "$OUT/produce-$size-$i.json" > /dev/null
        $B consume --topic "p$size" --json "$OUT/consume-$size-$i.json" > /dev/null
        # Weir writes with O_DIRECT: the data above was read from the disk. Put it in the page cache
        # and consume again: the broker then sends it with sendfile (zero-copy).
        cat "$OUT"/data/p$size-*/*.log > /dev/null
        $B consume --topic "p$size" --json "$OUT/reread-$size-$i.json" > /dev/null
    done
    $W topic delete "p$size" --bootstrap "$BOOT" >/dev/null
    for i in $(seq 1 "$RUNS"); do
        fresh "f$size" --config flush.messages=1
        $B produce --topic "f$size" --msg-size $size --acks -1 --duration "${SECS}s" --json "$OUT/produce-fsync-$size-$i.json" > /dev/null
    done
    $W topic delete "f$size" --bootstrap "$BOOT" >/dev/null
done
for i in $(seq 1 "$RUNS"); do
    fresh both
    $B e2e --topic both --msg-size 1024 --duration "${SECS}s" --json "$OUT/both-1024-$i.json" > /dev/null
    fresh lat
    $B e2e --topic lat --msg-size 100 --rate 100000 --linger-ms 0.1 --warmup 1s --duration "${SECS}s" --json "$OUT/e2e-100k-$i.json" > /dev/null
    fresh rdk
    "$OUT/rdkafka_produce" "$BOOT" rdk 100 "$SECS" 1000 > "$OUT/rdkafka-100-$i.txt"
    fresh wb
    $B produce --topic wb --msg-size 100 --duration "${SECS}s" --json "$OUT/weirbench-100-$i.json" > /dev/null
done
$W topic delete both --bootstrap "$BOOT" >/dev/null
kill $BROKER; wait $BROKER 2>/dev/null || true
trap - EXIT
python3 perf/summarize.py "$OUT" | tee "$OUT/summary.md"

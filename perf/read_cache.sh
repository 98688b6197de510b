#!/usr/bin/env bash
# Reading a topic written moments before and larger than 4 GiB (issue 17): 1 KiB records, one
# partition, consumed from its start from each place a fetch can find them, in one sitting:
#   memory    — right after the produce: the batch cache (this binary's default budget);
#   disk      — the same data after a restart (the cache starts empty, and O_DIRECT writes left the
#               page cache empty): one O_DIRECT read per fetch, the path for data behind the cache;
#   pagecache — after `cat` put the segments in the page cache: sendfile.
# Each round also measures the transport both paths share, one loopback TCP stream (iperf3, 5 s,
# 1 MiB writes), twice: sent from memory with copying writes (the ceiling of the memory path) and
# sent from a file in the page cache with sendfile (iperf3 -Z, the page-cache path's ceiling). Their
# ratio is what the transport itself gives memory over the page cache. And the share of the two CPUs
# the hypervisor took (steal, /proc/stat) while each consume ran.
# Each round produces a fresh topic of GIB GiB (default 4.5). Medians and per-round ratios printed;
# outputs in perf/out-read-cache/. About a minute a round.
#
#   perf/read_cache.sh            # RUNS=3 GIB=4.5
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
GIB=${GIB:-4.5}
OUT=perf/out-read-cache
PORT=${PORT:-19792}
BOOT=127.0.0.1:$PORT
rm -rf "$OUT" && mkdir -p "$OUT"
cargo build --release -q
WEIR=./target/release/weir
BENCH="./target/release/weir-bench --bootstrap $BOOT --no-pin"
MSGS=$(python3 -c "print(int($GIB * 2**30 / 1024))")

broker=
start() {
    "$WEIR" serve --listen "$BOOT" --data-dir "$OUT/data" --shards 2 --metrics-listen off >> "$OUT/broker.log" 2>&1 &
    broker=$!
    for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && return; sleep 0.1; done
    echo "broker did not start" >&2
    exit 1
}
stop() { kill "$broker" && wait "$broker" 2>/dev/null || true; }
steal() { awk '/^cpu / {print $9}' /proc/stat; }
consume() { # KIND N
    local before=$(steal) t0=$(date +%s%N)
    $BENCH consume --topic big --messages "$MSGS" --json "$OUT/$1-$2.json" > /dev/null
    echo "$(( $(steal) - before )) $(( ($(date +%s%N) - t0) / 10000000 ))" > "$OUT/$1-$2.steal"
}
trap 'kill $broker 2>/dev/null || true' EXIT

for n in $(seq "$RUNS"); do
    rm -rf "$OUT/data" && sync && echo 1 > /proc/sys/vm/drop_caches
    start
    $BENCH produce --topic big --msg-size 1024 --messages "$MSGS" --json "$OUT/produce-$n.json" > /dev/null
    consume memory "$n"
    awk '/VmHWM/ {print $2}' /proc/$broker/status > "$OUT/hwm-kib-$n.txt"
    stop
    start
    consume disk "$n"
    cat "$OUT"/data/big-0/*.log > /dev/null
    consume pagecache "$n"
    stop
    for how in copy sendfile; do
        iperf3 -s -1 -p $((PORT + 7)) > /dev/null 2>&1 &
        for _ in $(seq 100); do ss -ltn | grep -q ":$((PORT + 7)) " && break; sleep 0.1; done
        iperf3 -c 127.0.0.1 -p $((PORT + 7)) -t 5 -l 1M $([ $how = sendfile ] && echo -Z) -J > "$OUT/iperf3-$how-$n.json"
    done
done
rm -rf "$OUT/data"

python3 - "$OUT" "$RUNS" <<'PY'
import json, os, statistics, sys
out, runs = sys.argv[1], int(sys.argv[2])
rate = lambda kind, n: json.load(open(f"{out}/{kind}-{n}.json"))["msgs_per_sec"]
got = {k: [rate(k, n) for n in range(1, runs + 1)] for k in ("produce", "memory", "disk", "pagecache")}
for k, x in got.items():
    print(f"{k:10} msgs/s {[round(v) for v in x]}, median {statistics.median(x):,.0f} ({statistics.median(x) * 1024 / 1e6:,.0f} MB/s)")
for other in ("disk", "pagecache"):
    ratios = [m / o for m, o in zip(got["memory"], got[other])]
    print(f"memory/{other} per round {[round(r, 2) for r in ratios]}, median {statistics.median(ratios):.2f}")
tcp = {how: [json.load(open(f"{out}/iperf3-{how}-{n}.json"))["end"]["sum_received"]["bits_per_second"] / 8
              for n in range(1, runs + 1)] for how in ("copy", "sendfile")}
for how, path in (("copy", "memory"), ("sendfile", "pagecache")):
    print(f"loopback TCP by {how:8} (iperf3) MB/s {[round(t / 1e6) for t in tcp[how]]}; {path}/it per round "
          f"{[round(m * 1024 / t, 2) for m, t in zip(got[path], tcp[how])]}")
ceiling = [c / s for c, s in zip(tcp["copy"], tcp["sendfile"])]
print(f"transport's own copy/sendfile per round {[round(r, 2) for r in ceiling]}, median {statistics.median(ceiling):.2f}")
for k in ("memory", "disk", "pagecache"):
    shares = []
    for n in range(1, runs + 1):
        stolen, wall = map(int, open(f"{out}/{k}-{n}.steal").read().split())
        shares.append(round(100 * stolen / (os.cpu_count() * max(wall, 1))))
    print(f"CPU time the hypervisor took (steal, % of all CPUs) while {k} ran: {shares}")
hwm = [int(open(f"{out}/hwm-kib-{n}.txt").read()) * 1024 for n in range(1, runs + 1)]
print(f"broker peak RSS after produce + memory consume: {[round(h / 2**20) for h in hwm]} MiB")
PY

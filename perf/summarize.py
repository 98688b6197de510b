"""Prints perf/run.sh's results as a Markdown table: median of the runs, target, ratio to ceiling."""

import glob
import json
import os
import statistics
import sys

out = sys.argv[1]


def runs(pattern, key):
    values = []
    for path in sorted(glob.glob(os.path.join(out, pattern))):
        with open(path) as f:
            data = json.load(f)
        values.append(data[key] if key in data else data["latency"][key])
    return values


def med(values):
    return statistics.median(values) if values else float("nan")


iperf = json.load(open(os.path.join(out, "iperf3.json")))
net_bytes = iperf["end"]["sum_received"]["bits_per_second"] / 8
fio = json.load(open(os.path.join(out, "fio.json")))
disk_bytes = fio["jobs"][0]["write"]["bw_bytes"]
read_path = os.path.join(out, "fio-read.json")
disk_read_bytes = json.load(open(read_path))["jobs"][0]["read"]["bw_bytes"] if os.path.exists(read_path) else float("nan")
rss = [int(x) for x in open(os.path.join(out, "rss.txt")).read().split()] if os.path.exists(os.path.join(out, "rss.txt")) else [0]
rdk = [float(open(p).read().split()[2]) for p in sorted(glob.glob(os.path.join(out, "rdkafka-100-*.txt")))]

print(f"Ceilings: loopback TCP {net_bytes / 1e6:.0f} MB/s (iperf3), sequential O_DIRECT write {disk_bytes / 1e6:.0f} MB/s (fio, 1 MiB, QD1), sequential O_DIRECT read {disk_read_bytes / 1e6:.0f} MB/s (fio, 8 MiB, QD1)\n")
print("| workload | runs (msgs/s) | median msgs/s | MB/s | target | vs target | MB/s vs ceiling |")
print("|---|---|---|---|---|---|---|")
rows = [
    ("produce 100 B, no fsync", "produce-100-*.json", 4.5e6, disk_bytes, "disk"),
    ("produce 1 KiB, no fsync", "produce-1024-*.json", 950e3, disk_bytes, "disk"),
    ("consume 100 B (cold, O_DIRECT read)", "consume-100-*.json", 7e6, disk_read_bytes, "disk read"),
    ("consume 1 KiB (cold, O_DIRECT read)", "consume-1024-*.json", 2e6, disk_read_bytes, "disk read"),
    ("consume 100 B (in page cache, sendfile)", "reread-100-*.json", 7e6, net_bytes, "net"),
    ("consume 1 KiB (in page cache, sendfile)", "reread-1024-*.json", 2e6, net_bytes, "net"),
    ("produce 1 KiB, fsync every batch", "produce-fsync-1024-*.json", 500e3, disk_bytes, "disk"),
    ("produce 100 B, fsync every batch", "produce-fsync-100-*.json", 1.5e6, disk_bytes, "disk"),
    ("produce + consume 1 KiB (consumer side)", "both-1024-*.json", 700e3, net_bytes, "net"),
]
for name, pattern, target, ceiling, which in rows:
    msgs = runs(pattern, "msgs_per_sec")
    mb = runs(pattern, "mb_per_sec")
    m = med(msgs)
    print(f"| {name} | {', '.join(f'{v / 1e6:.2f}M' for v in msgs)} | {m / 1e6:.2f}M | {med(mb):.0f} | {target / 1e6:.2f}M | {m / target:.2f}x | {med(mb) * 1e6 / ceiling:.0%} of {which} |")
p99 = runs("e2e-100k-*.json", "p99_us")
p999 = runs("e2e-100k-*.json", "p99_9_us")
p50 = runs("e2e-100k-*.json", "p50_us")
print()
print(f"e2e at 100,000 msgs/s (100 B): p50 {med(p50):.0f} us, p99 {med(p99):.0f} us (target 1000), p99.9 {med(p999):.0f} us (target 3000); runs p99 {p99}, p99.9 {p999}")
print(f"broker RSS max {max(rss) / 1024:.0f} MiB (target 256 MiB)")
wb = runs("weirbench-100-*.json", "msgs_per_sec")
print(f"trust the bench, produce 100 B: weir-bench {med(wb) / 1e6:.2f}M msgs/s vs librdkafka {med(rdk) / 1e6:.2f}M msgs/s (runs {[round(v) for v in rdk]})")

#!/usr/bin/env python3
"""A consumer of 1,000 mostly idle partitions, with and without incremental fetch sessions (KIP-227):
request and response bytes per fetch, and the broker's CPU time, measured by kafka-python's own client
metrics and /proc/<pid>/stat. Alternates the two settings (A B A B) in one sitting. Without sessions
means `--max-incremental-fetch-session-cache-slots 0`: the broker opens none, the client falls back
to full fetches, as it would with a broker that has no sessions.

    python3 perf/fetch_sessions.py [--weir target/release/weir] [--seconds 20] [--rounds 2]
"""

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import warnings

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "clients"))
from conftest import wait_listening  # noqa: E402

warnings.filterwarnings("ignore", category=DeprecationWarning)


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(weir, slots, seconds, partitions):
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic
    from kafka import KafkaConsumer, TopicPartition

    port = random.randrange(20000, 60000)
    data = tempfile.mkdtemp(prefix="weir-fs-")
    proc = subprocess.Popen(
        [weir, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", data, "--shards", "1",
         "--max-incremental-fetch-session-cache-slots", str(slots)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_listening(port)
        bootstrap = f"127.0.0.1:{port}"
        admin = AdminClient({"bootstrap.servers": bootstrap})
        admin.create_topics([NewTopic("idle", partitions, 1)])["idle"].result(30)
        c = KafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="latest", enable_auto_commit=False, fetch_max_wait_ms=100)
        c.assign([TopicPartition("idle", p) for p in range(partitions)])
        for _ in range(20):  # positions known, sessions opened
            c.poll(timeout_ms=100)
        stop = threading.Event()

        def trickle():  # 20 records a second into random partitions: "mostly idle"
            p = Producer({"bootstrap.servers": bootstrap})
            while not stop.is_set():
                p.produce("idle", value=b"x" * 100, partition=random.randrange(partitions))
                p.poll(0)
                time.sleep(0.05)
            p.flush(5)

        t = threading.Thread(target=trickle)
        t.start()
        before_cpu = cpu_seconds(proc.pid)
        start = time.time()
        got = 0
        while time.time() - start < seconds:
            got += sum(len(v) for v in c.poll(timeout_ms=100).values())
        elapsed = time.time() - start
        cpu = cpu_seconds(proc.pid) - before_cpu
        # kafka-python's per-broker metrics (a 30 s window): nearly every request is a fetch.
        node = c.metrics()["consumer-node-metrics.node-0"]
        stop.set()
        t.join()
        c.close()
        return {
            "fetches_per_s": node["response-rate"],
            "request_bytes_per_fetch": node["request-size-avg"],
            "response_bytes_per_fetch": node["incoming-byte-rate"] / max(node["response-rate"], 1e-9),
            "broker_cpu_ms_per_s": 1000 * cpu / elapsed,
            "records": got,
        }
    finally:
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(data, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--weir", default="target/release/weir")
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--partitions", type=int, default=1000)
    args = ap.parse_args()
    rows = []
    for r in range(args.rounds):
        for label, slots in (("sessions", 1000), ("sessionless", 0)):
            res = run(args.weir, slots, args.seconds, args.partitions)
            rows.append((label, r, res))
            print(f"{label:12} round {r}: " + ", ".join(f"{k} {v:,.1f}" for k, v in res.items()), flush=True)


if __name__ == "__main__":
    main()

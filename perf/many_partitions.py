#!/usr/bin/env python3
"""Many idle partitions: memory, open files, disk, restart and Metadata time.

Starts `target/release/weir` (2 shards), creates TOPICS topics of PER_TOPIC partitions, writes one
100-byte record to each partition, then prints the broker's RSS, open files and data-directory size,
the time of a full Metadata request, and after a SIGTERM restart: the time until the ports listen and
a full Metadata answers, the open files then, and the time a ListOffsets of every partition takes
(which opens every partition).

    python3 perf/many_partitions.py [--topics 20] [--per-topic 1000]
"""

import argparse
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from kafka.protocol.consumer.offsets import ListOffsetsRequest, ListOffsetsResponse
from kafka.protocol.metadata import MetadataRequest, MetadataResponse

import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "clients"))
from kafka_wire import Connection, build  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def status(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1])
    return 0


def listening(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


def du_mib(path):
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            total += os.stat(os.path.join(dirpath, f)).st_blocks * 512
    return total / (1 << 20)


def metadata_ms(port):
    """The broker's time for a full Metadata: request sent to last response byte received (the
    Python client's decoding of 20,000 partitions, which takes longer, is not counted)."""
    conn = Connection(port)
    req = build(MetadataRequest, 1, topics=None)
    req.with_header(correlation_id=1, client_id="perf")
    t0 = time.perf_counter()
    conn.sock.sendall(req.encode(header=True, framed=True))
    size = struct.unpack(">i", conn.recv(4))[0]
    body = conn.recv(size)
    ms = (time.perf_counter() - t0) * 1000
    conn.close()
    r = MetadataResponse.decode(body, version=1, header=True)
    return ms, sum(len(t.partitions) for t in r.topics)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--topics", type=int, default=20)
    ap.add_argument("--per-topic", type=int, default=1000)
    ap.add_argument("--port", type=int, default=39192)
    ap.add_argument("--weir", default=os.path.join(ROOT, "target", "release", "weir"))
    ap.add_argument("--drop-caches", action="store_true", help="drop the page cache before the restart (root): a cold start")
    args = ap.parse_args()
    data = tempfile.mkdtemp(prefix="weir-many-", dir=os.path.join(ROOT, "target"))
    cmd = [args.weir, "serve", "--listen", f"127.0.0.1:{args.port}", "--data-dir", data, "--shards", "2"]
    log = open(data + ".log", "wb")
    broker = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        while not (listening(args.port) and listening(args.port + 1)):
            time.sleep(0.05)
        bootstrap = f"127.0.0.1:{args.port}"
        admin = AdminClient({"bootstrap.servers": bootstrap})
        names = [f"many-{i}" for i in range(args.topics)]
        t0 = time.time()
        for name in names:
            admin.create_topics([NewTopic(name, args.per_topic)])[name].result(600)
        created_s = time.time() - t0
        p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
        for name in names:
            for i in range(args.per_topic):
                p.produce(name, value=b"x" * 100, partition=i)
            p.poll(0)
        assert p.flush(600) == 0
        total = args.topics * args.per_topic
        time.sleep(7)  # the writers' idle trim (5 s) gives preallocated zeros back
        print(f"partitions: {total}, each with one 100-byte record; created in {created_s:.1f} s")
        print(f"running: RSS {status(broker.pid, 'VmRSS:') / 1024:.0f} MiB, open files {len(os.listdir(f'/proc/{broker.pid}/fd'))}, "
              f"disk {du_mib(data):.0f} MiB")
        ms, n = metadata_ms(args.port)
        print(f"full Metadata: {ms:.1f} ms for {n} partitions")
        broker.send_signal(signal.SIGTERM)
        broker.wait(120)
        if args.drop_caches:
            os.sync()
            with open("/proc/sys/vm/drop_caches", "w") as f:
                f.write("3")
        t0 = started = time.perf_counter()
        broker = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        while not (listening(args.port) and listening(args.port + 1)):
            time.sleep(0.01)
        up = time.perf_counter() - t0
        ms, n = metadata_ms(args.port)
        print(f"restart: listening after {up:.2f} s; full Metadata then {ms:.1f} ms ({n} partitions); "
              f"open files {len(os.listdir(f'/proc/{broker.pid}/fd'))}, RSS {status(broker.pid, 'VmRSS:') / 1024:.0f} MiB")
        conn = Connection(args.port)
        t0 = time.perf_counter()
        ok = 0
        for name in names:
            parts = [{"partition_index": i, "timestamp": -1} for i in range(args.per_topic)]
            r = conn.call(build(ListOffsetsRequest, 1, replica_id=-1, topics=[{"name": name, "partitions": parts}]), ListOffsetsResponse)
            ok += sum(1 for x in r.topics[0].partitions if x.error_code == 0 and x.offset == 1)
        conn.close()
        print(f"ListOffsets of every partition after the restart (opens each): {time.perf_counter() - t0:.1f} s "
              f"({time.perf_counter() - started:.1f} s from the restart), "
              f"{ok} of {total} answered offset 1; open files then {len(os.listdir(f'/proc/{broker.pid}/fd'))}")
    finally:
        broker.terminate()
        broker.wait(120)
        log.close()
        shutil.rmtree(data, ignore_errors=True)
        os.remove(data + ".log")


if __name__ == "__main__":
    main()

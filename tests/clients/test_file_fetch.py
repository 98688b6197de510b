"""Fetches of older data, served from the segment files: with sendfile when the page cache holds the
range, else from one O_DIRECT read.

The broker runs with a 1 MiB cache per shard and is restarted after producing, so that every fetch
below is served from files. Its writes are O_DIRECT, so the data starts out of the page cache; the
tests read the segment files to put it there and check, through /proc/<pid>/io, which path was taken.
"""

import glob
import os

import socket
import struct
import subprocess
import time

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import Broker, unique
from test_robustness import frame, produce_consume_ok, recv_exact

SMALL_CACHE = ["--log-cache-max-bytes", str(2 << 20), "--segment-bytes", str(1 << 20)]


def disk_read_bytes(broker):
    """Bytes the broker process has read from storage (its O_DIRECT reads; never sendfile of cached pages)."""
    with open(f"/proc/{broker.proc.pid}/io") as f:
        return int(next(line for line in f if line.startswith("read_bytes:")).split()[1])


def cache_segments(broker):
    """Reads every segment file once, which leaves it in the page cache; returns its total size."""
    total = 0
    for path in glob.glob(os.path.join(broker.data_dir, "*", "*.log")):
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                total += len(chunk)
    return total


def fill(bootstrap, topic, partitions, per_partition, size=1000, **conf):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=partitions)])[topic].result(10)
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, **conf})
    for i in range(per_partition):
        for part in range(partitions):
            p.produce(topic, value=b"%d:%d:" % (part, i) + b"x" * size, partition=part)
        if i % 1000 == 0:
            p.poll(0)
    assert p.flush(30) == 0


def consume_all(bootstrap, topic, partitions, per_partition, **conf):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": unique("g"), "auto.offset.reset": "earliest", "enable.partition.eof": True, **conf})
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    seen = {p: [] for p in range(partitions)}
    eof = set()
    deadline = time.time() + 60
    while len(eof) < partitions and time.time() < deadline:
        m = c.poll(0.5)
        if m is None:
            continue
        if m.error():
            assert m.error().code() == KafkaError._PARTITION_EOF, m.error()
            eof.add(m.partition())
            continue
        part, i, _ = m.value().split(b":", 2)
        assert int(part) == m.partition()
        assert m.offset() == int(i), "offset and content agree"
        seen[m.partition()].append(int(i))
    c.close()
    for p in range(partitions):
        assert seen[p] == list(range(per_partition)), f"partition {p}: every message, in order"


def test_older_data_comes_whole_and_in_order_from_segment_files():
    b = Broker(extra=SMALL_CACHE)
    try:
        topic = unique("files")
        fill(b.bootstrap, topic, 4, 5000)
        lz4 = unique("files-lz4")
        fill(b.bootstrap, lz4, 1, 5000, **{"compression.type": "lz4"})
        b.restart()
        # Not in the page cache: read from the disk (~20 MB; the tail may be cached or in memory), with
        # O_DIRECT, which leaves the page cache as it was: a second pass reads the disk again.
        for _ in range(2):
            before = disk_read_bytes(b)
            consume_all(b.bootstrap, topic, 4, 5000)
            consume_all(b.bootstrap, lz4, 1, 5000)
            assert disk_read_bytes(b) - before >= 10_000_000
        size = cache_segments(b)
        before = disk_read_bytes(b)
        consume_all(b.bootstrap, topic, 4, 5000)
        consume_all(b.bootstrap, lz4, 1, 5000)
        assert disk_read_bytes(b) - before < size // 10, "cached ranges go out with sendfile, not read again"
        # Start in the middle of a batch: the broker sends the batch holding it, the client skips ahead.
        out = subprocess.run(
            ["kcat", "-C", "-b", b.bootstrap, "-t", topic, "-p", "2", "-o", "3333", "-c", "5", "-f", "%o %s\n", "-e"],
            capture_output=True,
            timeout=60,
            check=True,
        ).stdout.decode()
        lines = out.splitlines()
        assert [int(line.split()[0]) for line in lines] == list(range(3333, 3338))
        assert all(line.split()[1].startswith("2:%d:" % int(line.split()[0])) for line in lines)
    finally:
        b.close()


def test_large_batches_round_trip_through_recycled_request_buffers():
    """~1 MB batches to one partition: the broker keeps each by reference to the request it came in,
    whose buffer goes back to a pool once the 1 MiB cache lets go of it, and is read into again. The
    consumer checks every batch's CRC: a buffer reused too early would show as a bad CRC or a gap."""
    b = Broker(shards=1, extra=SMALL_CACHE)
    try:
        topic = unique("large")
        fill(b.bootstrap, topic, 1, 20000, **{"linger.ms": 50, "batch.size": 1_000_000})
        consume_all(b.bootstrap, topic, 1, 20000, **{"check.crcs": True})
        b.restart()
        consume_all(b.bootstrap, topic, 1, 20000, **{"check.crcs": True})
    finally:
        b.close()


def fetch_v4(topic, partition, offset, max_bytes, correlation=1):
    t = topic.encode()
    body = struct.pack(">iiiib", -1, 500, 1, max_bytes, 0)
    body += struct.pack(">ih", 1, len(t)) + t + struct.pack(">iiqi", 1, partition, offset, max_bytes)
    return frame(1, 4, correlation, body)


def batches_in(records):
    """(base offset, last offset) of each batch in a record set that holds whole batches only."""
    out, at = [], 0
    while at < len(records):
        base, length = struct.unpack_from(">qi", records, at)
        assert at + 12 + length <= len(records), "the response ends on a batch boundary"
        last_delta = struct.unpack_from(">i", records, at + 23)[0]
        out.append((base, base + last_delta))
        at += 12 + length
    return out


@pytest.mark.parametrize("cached", [False, True], ids=["direct-read", "sendfile"])
def test_a_consumer_that_stops_reading_holds_up_no_one(cached):
    # One big segment, so that each stalled response (8 MiB) is more than the socket buffers hold.
    b = Broker(shards=1, extra=["--log-cache-max-bytes", str(1 << 20)])
    try:
        topic = unique("stall")
        fill(b.bootstrap, topic, 1, 12000)
        b.restart()
        if cached:
            cache_segments(b)
        # Several stalled fetches, more than the broker has threads for sends from files.
        stalled = []
        for n in range(6):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.connect(("127.0.0.1", b.port))
            s.sendall(fetch_v4(topic, 0, n * 100, 8 << 20, correlation=n))
            stalled.append(s)
        time.sleep(1)
        started = time.time()
        consume_all(b.bootstrap, topic, 1, 12000)
        assert time.time() - started < 30
        assert produce_consume_ok(b.bootstrap)
        # The stalled consumers get their whole, well-formed responses once they read.
        for n, s in enumerate(stalled):
            s.settimeout(30)
            size = struct.unpack(">i", recv_exact(s, 4))[0]
            body = recv_exact(s, size)
            correlation, _throttle, topics = struct.unpack_from(">iii", body)
            assert (correlation, topics) == (n, 1)
            at = 12 + 2 + len(topic) + 4
            partition, error, hw = struct.unpack_from(">ihq", body, at)
            assert (partition, error, hw) == (0, 0, 12000)
            records_len = struct.unpack_from(">i", body, at + 4 + 2 + 8 + 8 + 4)[0]
            records = body[at + 30 :]
            assert len(records) == records_len > 4 << 20
            got = batches_in(records)
            assert got[0][0] <= n * 100 <= got[0][1]
            assert all(nxt[0] == prev[1] + 1 for prev, nxt in zip(got, got[1:])), "contiguous batches"
            s.close()
        assert b.alive()
    finally:
        b.close()

"""Topics created and deleted over and over under the same names while producers write to them,
through both shards' ports: the broker stays up (a log's writer once opened its file in a
directory being deleted, and glommio panicked), and a topic created after the churn starts empty
(a partition opened while its topic was being deleted outlived it, and the next topic of that name
took it over, old records and all)."""

import socket
import struct
import threading
import time
import warnings

from conftest import Broker
from test_robustness import frame, read_frame

warnings.filterwarnings("ignore", category=DeprecationWarning)

from kafka.record.util import calc_crc32c  # noqa: E402

TOPICS = ["churn-0", "churn-1", "churn-2"]
CHURN_SECONDS = 15


def call(sock, key, version, body):
    sock.sendall(frame(key, version, 1, body))
    return read_frame(sock)


def name(t):
    return struct.pack(">h", len(t)) + t.encode()


ONE_RECORD = b"\xd6\x01" + b"\x00\x00\x00\x01\xc8\x01" + b"x" * 100 + b"\x00"  # 107 bytes after its length


def batch(records=ONE_RECORD, count=1, attributes=0):
    """A record batch (magic 2, valid CRC) around `records`, its header saying `count` records."""
    ts = int(time.time() * 1000)
    tail = struct.pack(">hiqqqhii", attributes, count - 1, ts, ts, -1, -1, -1, count) + records
    return struct.pack(">qi", 0, 9 + len(tail)) + struct.pack(">ibI", -1, 2, calc_crc32c(tail)) + tail


def create(t):  # CreateTopics v0: 1 partition, replication factor 1
    return struct.pack(">i", 1) + name(t) + struct.pack(">ihii", 1, 1, 0, 0) + struct.pack(">i", 5000)


def delete(t):  # DeleteTopics v0
    return struct.pack(">i", 1) + name(t) + struct.pack(">i", 5000)


def produce(t, acks):  # Produce v3, partition 0
    b = batch()
    return struct.pack(">hhi", -1, acks, 5000) + struct.pack(">i", 1) + name(t) + struct.pack(">iii", 1, 0, len(b)) + b


def produce_answer(raw):
    """(error code, base offset) of a Produce v3 answer for one partition: they come before its
    log append time and the answer's throttle time."""
    error, base = struct.unpack(">hq", raw[-22:-12])
    return error, base


def test_topics_deleted_and_created_while_written_to():
    b = Broker()
    stop = threading.Event()

    def admin(port, i):
        with socket.create_connection(("127.0.0.1", port)) as s:
            while not stop.is_set():
                t = TOPICS[i % len(TOPICS)]
                i += 1
                call(s, 19, 0, create(t))
                call(s, 20, 0, delete(t))

    def producer(port, i, acks):
        with socket.create_connection(("127.0.0.1", port)) as s:
            while not stop.is_set():
                t = TOPICS[i % len(TOPICS)]
                i += 1
                s.sendall(frame(0, 3, 1, produce(t, acks)) * 5)
                for _ in range(5):
                    read_frame(s)

    try:
        threads = [threading.Thread(target=admin, args=(b.port + i, i), daemon=True) for i in range(2)]
        threads += [threading.Thread(target=producer, args=(b.port + i % 2, i, (1, -1)[i % 2]), daemon=True) for i in range(6)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + CHURN_SECONDS
        while time.monotonic() < deadline and b.alive():
            time.sleep(0.2)
        stop.set()
        for t in threads:
            t.join(30)
        assert b.alive(), "the broker stopped during the churn"

        with socket.create_connection(("127.0.0.1", b.port), timeout=15) as s:
            for t in TOPICS:
                call(s, 20, 0, delete(t))
                assert struct.unpack(">h", call(s, 19, 0, create(t))[-2:])[0] == 0
                error, base = produce_answer(call(s, 0, 3, produce(t, -1)))
                assert (error, base) == (0, 0), f"{t}: a new topic's first record went to offset {base} (error {error})"
                assert produce_answer(call(s, 0, 3, produce(t, -1))) == (0, 1), "the answer is read where it is"
    finally:
        stop.set()
        b.close()

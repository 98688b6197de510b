"""weir-bench's idempotent and transactional producer and its read_committed consumer against the
real broker, checked by confluent-kafka: what it commits is there, once, and what another producer
aborted is not counted."""

import os
import re
import subprocess
import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition

from conftest import ROOT, unique

BENCH = os.path.join(os.path.dirname(os.environ.get("WEIR_BIN", os.path.join(ROOT, "target", "release", "weir"))), "weir-bench")


def bench(*args):
    done = subprocess.run([BENCH, *args, "--no-pin"], capture_output=True, timeout=120, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


def messages(out):
    return int(re.search(r"(\d+) messages", out).group(1))


def count_committed(bootstrap, topic, partitions):
    """How many records a read_committed confluent consumer reads to the end of every partition."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": unique("g"), "enable.partition.eof": True, "isolation.level": "read_committed"})
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    n, ended = 0, set()
    deadline = time.time() + 60
    try:
        while len(ended) < partitions:
            assert time.time() < deadline, f"no end of every partition; read {n}"
            for m in c.consume(10000, 5):
                if m.error():
                    assert m.error().code() == KafkaError._PARTITION_EOF, m.error()
                    ended.add(m.partition())
                else:
                    n += 1
    finally:
        c.close()
    return n


def test_transactional_bench_commits_what_it_counts(shared_broker):
    b = shared_broker.bootstrap
    topic = unique("bench-txn")
    out = bench("produce", "-b", b, "-t", topic, "--partitions", "2", "--msg-size", "200", "--messages", "30000",
                "--acks", "-1", "--transactional-id", unique("tid"), "--txn-ms", "20")
    sent = messages(out)
    committed = int(re.search(r"(\d+) transactions committed", out).group(1))
    assert sent >= 30000 and committed >= 1, out
    assert count_committed(b, topic, 2) == sent
    # Another producer's aborted transaction: read_committed does not count it, read_uncommitted
    # does; neither counts markers.
    p = Producer({"bootstrap.servers": b, "transactional.id": unique("tid")})
    p.init_transactions(30)
    p.begin_transaction()
    for i in range(500):
        p.produce(topic, value=b"aborted", partition=i % 2)
    p.flush(30)
    p.abort_transaction(30)
    assert messages(bench("consume", "-b", b, "-t", topic, "--read-committed")) == sent
    assert messages(bench("consume", "-b", b, "-t", topic)) == sent + 500


def test_idempotent_bench_needs_acks_all_and_writes_once(shared_broker):
    b = shared_broker.bootstrap
    topic = unique("bench-idem")
    refused = subprocess.run([BENCH, "produce", "-b", b, "-t", topic, "--idempotent", "--messages", "10"], capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and "--acks -1" in refused.stderr
    sent = messages(bench("produce", "-b", b, "-t", topic, "--msg-size", "100", "--messages", "20000", "--acks", "-1", "--idempotent"))
    assert count_committed(b, topic, 1) == sent

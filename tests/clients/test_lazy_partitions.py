"""After a restart partitions open on first use: start-up holds no files for partitions nobody uses,
and every partition serves its data when asked. Partitions in use hold their files; idle ones close
them."""

import os
import signal
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import Broker, unique

PARTITIONS = 400


def open_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def fill(bootstrap, topic):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, PARTITIONS)])[topic].result(60)
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": "all"})
    for i in range(PARTITIONS):
        p.produce(topic, value=f"v{i}".encode(), partition=i)
    assert p.flush(60) == 0


def read_all(bootstrap, topic):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": unique("g"), "enable.auto.commit": False})
    c.assign([TopicPartition(topic, i, 0) for i in range(PARTITIONS)])
    got = {}
    deadline = time.time() + 60
    while len(got) < PARTITIONS and time.time() < deadline:
        m = c.poll(0.5)
        if m is not None and not m.error():
            got[m.partition()] = m.value()
    c.close()
    return got


def wait_for_idle_files(pid):
    deadline = time.time() + 60
    while open_fds(pid) >= 200:
        assert time.time() < deadline, f"{open_fds(pid)} files still open with every partition idle"
        time.sleep(0.2)


def test_a_restarted_broker_opens_partitions_on_first_use():
    b = Broker(shards=2)
    try:
        topic = unique("lazy")
        fill(b.bootstrap, topic)
        assert open_fds(b.proc.pid) > 2 * PARTITIONS, "partitions just written hold their files"
        wait_for_idle_files(b.proc.pid)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            b.restart(sig)
            # Metadata does not need the logs: the topic is listed whole, nothing is opened.
            md = AdminClient({"bootstrap.servers": b.bootstrap}).list_topics(topic, timeout=15)
            assert len(md.topics[topic].partitions) == PARTITIONS
            idle = open_fds(b.proc.pid)
            assert idle < 200, f"{idle} files open before any partition is used"
            got = read_all(b.bootstrap, topic)
            assert got == {i: f"v{i}".encode() for i in range(PARTITIONS)}, f"after {sig!r}: {len(got)} partitions read"
            assert open_fds(b.proc.pid) > 2 * PARTITIONS, "reading opened them"
            wait_for_idle_files(b.proc.pid)
    finally:
        assert b.alive()
        b.close()

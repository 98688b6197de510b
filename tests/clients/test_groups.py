"""Consumer groups through librdkafka: assignment, rebalance on leave and on silence, commits."""

import subprocess
import sys
import threading
import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import unique


def make_topic(bootstrap, partitions, messages):
    topic = unique("grp")
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])[topic].result(10)
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for i in range(messages):
        p.produce(topic, value=str(i).encode(), partition=i % partitions)
    assert p.flush(30) == 0
    return topic


def consumer(bootstrap, group, strategy, **extra):
    conf = {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "partition.assignment.strategy": strategy,
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 500,
    }
    conf.update(extra)
    return Consumer(conf)


def poll_count(c, n, timeout=30):
    """Polls until `n` messages arrived or `timeout` passed; returns how many arrived."""
    got = 0
    deadline = time.time() + timeout
    while got < n and time.time() < deadline:
        m = c.poll(0.2)
        if m is not None and not m.error():
            got += 1
    return got


def wait_assigned(consumers, partitions, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        for c in consumers:
            c.poll(0.1)
        assigned = [set((tp.topic, tp.partition) for tp in c.assignment()) for c in consumers]
        if sum(len(a) for a in assigned) == partitions and all(assigned) and len(set().union(*assigned)) == partitions:
            return assigned
    raise AssertionError(f"assignment never settled: {[c.assignment() for c in consumers]}")


@pytest.mark.parametrize("strategy", ["range", "roundrobin", "cooperative-sticky"])
def test_partitions_split_and_member_leaving(shared_broker, strategy):
    topic = make_topic(shared_broker.bootstrap, 4, 40)
    group = unique("g")
    a, b = consumer(shared_broker.bootstrap, group, strategy), consumer(shared_broker.bootstrap, group, strategy)
    a.subscribe([topic])
    b.subscribe([topic])
    assigned = wait_assigned([a, b], 4)
    assert all(len(x) == 2 for x in assigned), assigned
    b.close()  # LeaveGroup
    assert len(wait_assigned([a], 4)[0]) == 4
    a.close()


MEMBER_SCRIPT = """
import sys, time
from confluent_kafka import Consumer
c = Consumer({"bootstrap.servers": sys.argv[1], "group.id": sys.argv[2], "session.timeout.ms": 6000,
              "heartbeat.interval.ms": 500, "partition.assignment.strategy": "range"})
c.subscribe([sys.argv[3]])
while True:
    c.poll(0.1)
    if c.assignment():
        print("assigned", flush=True)
"""


def test_silent_member_loses_partitions_within_session_timeout(shared_broker):
    topic = make_topic(shared_broker.bootstrap, 2, 10)
    group = unique("g")
    a = consumer(shared_broker.bootstrap, group, "range")
    a.subscribe([topic])
    member = subprocess.Popen([sys.executable, "-c", MEMBER_SCRIPT, shared_broker.bootstrap, group, topic], stdout=subprocess.PIPE)
    try:
        wait_assigned([a], 1)
        deadline = time.time() + 30
        while time.time() < deadline and len(a.assignment()) != 1:
            a.poll(0.1)
        assert len(a.assignment()) == 1, "the other member holds one partition"
        member.kill()  # no LeaveGroup: the broker must notice the silence
        killed = time.time()
        assert len(wait_assigned([a], 2, timeout=20)[0]) == 2
        assert time.time() - killed < 6 + 4, "reassigned within the session timeout (plus a rebalance)"
    finally:
        member.kill()
        member.wait()
        a.close()


def test_exactly_once_consumption_across_rebalance_with_commits(shared_broker):
    topic = make_topic(shared_broker.bootstrap, 4, 2000)
    group = unique("g")
    seen = []
    lock = threading.Lock()

    def run(stop_after):
        c = consumer(shared_broker.bootstrap, group, "range")
        c.subscribe([topic])
        count = 0
        deadline = time.time() + 40
        while time.time() < deadline and count < stop_after:
            m = c.poll(0.2)
            if m is None or m.error():
                with lock:
                    if len(seen) >= 2000:
                        break
                continue
            with lock:
                seen.append((m.partition(), m.offset()))
            c.commit(message=m, asynchronous=False)
            count += 1
        c.close()

    first = threading.Thread(target=run, args=(700,))
    first.start()
    deadline = time.time() + 30
    while time.time() < deadline and not seen:  # the second member joins once the first consumes
        time.sleep(0.05)
    second = threading.Thread(target=run, args=(10**9,))
    second.start()
    first.join()
    second.join()
    if len(seen) < 2000:
        run(10**9)
    assert len(seen) == len(set(seen)), "no message consumed twice"
    assert len(set(seen)) == 2000, "every message consumed"


def test_commit_restart_resume(broker):
    topic = make_topic(broker.bootstrap, 2, 100)
    group = unique("g")
    c = consumer(broker.bootstrap, group, "range")
    c.subscribe([topic])
    assert poll_count(c, 60) == 60
    c.commit(asynchronous=False)
    committed = c.committed([TopicPartition(topic, 0), TopicPartition(topic, 1)], timeout=10)
    c.close()
    total = sum(tp.offset for tp in committed)
    assert total == 60
    broker.restart()
    c = consumer(broker.bootstrap, group, "range")
    again = c.committed([TopicPartition(topic, 0), TopicPartition(topic, 1)], timeout=10)
    assert [tp.offset for tp in again] == [tp.offset for tp in committed]
    c.subscribe([topic])
    rest = poll_count(c, 40)
    c.close()
    assert rest == 40


def test_two_groups_progress_independently(shared_broker):
    topic = make_topic(shared_broker.bootstrap, 1, 50)
    g1, g2 = unique("g"), unique("g")
    for group, n in [(g1, 50), (g2, 20)]:
        c = consumer(shared_broker.bootstrap, group, "range")
        c.subscribe([topic])
        assert poll_count(c, n) == n
        c.commit(asynchronous=False)
        c.close()
    c = Consumer({"bootstrap.servers": shared_broker.bootstrap, "group.id": g1})
    assert c.committed([TopicPartition(topic, 0)], timeout=10)[0].offset == 50
    c.close()
    c = Consumer({"bootstrap.servers": shared_broker.bootstrap, "group.id": g2})
    assert c.committed([TopicPartition(topic, 0)], timeout=10)[0].offset == 20
    c.close()


def test_static_member_keeps_its_partitions_across_a_restart(shared_broker):
    topic = make_topic(shared_broker.bootstrap, 4, 8)
    group = unique("g")
    a = consumer(shared_broker.bootstrap, group, "range", **{"group.instance.id": "a"})
    b = consumer(shared_broker.bootstrap, group, "range", **{"group.instance.id": "b"})
    a.subscribe([topic])
    b.subscribe([topic])
    before = wait_assigned([a, b], 4)
    # A static member that goes away without LeaveGroup (close() of a static member does not leave)
    # and comes back with the same instance id takes its old place.
    b.close()
    b = consumer(shared_broker.bootstrap, group, "range", **{"group.instance.id": "b"})
    b.subscribe([topic])
    after = wait_assigned([a, b], 4)
    assert after == before
    a.close()
    b.close()


def join_group_v0(port, group, protocol):
    """A bare JoinGroup v0 (no KIP-394 round trip); returns its error code."""
    import socket
    import struct

    def string(x):
        return struct.pack(">h", len(x)) + x

    body = string(group.encode()) + struct.pack(">i", 10000) + string(b"") + string(b"consumer")
    body += struct.pack(">i", 1) + string(protocol.encode()) + struct.pack(">i", 0)
    header = struct.pack(">hhi", 11, 0, 1) + string(b"raw")
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(struct.pack(">i", len(header) + len(body)) + header + body)
        s.settimeout(15)
        size = struct.unpack(">i", s.recv(4))[0]
        data = b""
        while len(data) < size:
            data += s.recv(size - len(data))
    return struct.unpack(">h", data[4:6])[0]


def test_inconsistent_protocols_are_refused(shared_broker):
    topic = make_topic(shared_broker.bootstrap, 2, 2)
    group = unique("g")
    # A session long enough that a loaded machine does not expire the member meanwhile: an empty
    # group takes any protocol, and the bare join then waits for a rebalance (timed out once under load).
    a = consumer(shared_broker.bootstrap, group, "range", **{"session.timeout.ms": 30000, "heartbeat.interval.ms": 1000})
    a.subscribe([topic])
    wait_assigned([a], 2)
    assert join_group_v0(shared_broker.port, group, "my-own-assignor") == 23  # INCONSISTENT_GROUP_PROTOCOL
    a.poll(0.5)
    assert len(a.assignment()) == 2, "the consistent member keeps the group"
    a.close()


def test_list_delete_groups_and_offsets(shared_broker):
    from confluent_kafka.admin import AdminClient

    topic = make_topic(shared_broker.bootstrap, 1, 10)
    group = unique("g")
    c = consumer(shared_broker.bootstrap, group, "range")
    c.subscribe([topic])
    assert poll_count(c, 10) == 10
    c.commit(asynchronous=False)
    c.close()
    admin = AdminClient({"bootstrap.servers": shared_broker.bootstrap})
    listed = admin.list_consumer_groups().result(10)
    assert group in [g.group_id for g in listed.valid]
    futures = admin.delete_consumer_groups([group])
    futures[group].result(10)
    listed = admin.list_consumer_groups().result(10)
    assert group not in [g.group_id for g in listed.valid]
    check = Consumer({"bootstrap.servers": shared_broker.bootstrap, "group.id": group})
    assert check.committed([TopicPartition(topic, 0)], timeout=10)[0].offset < 0, "offsets went with the group"
    check.close()

"""Incremental fetch sessions (KIP-227, issue 10 item 4): at the protocol level with kafka-python's
codec, and end to end with kafka-python's consumer, which keeps a session per broker."""

import time
import warnings

import pytest

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import Broker, unique
from kafka_wire import Connection, build

warnings.filterwarnings("ignore", category=DeprecationWarning)

from kafka.protocol.consumer.fetch import FetchRequest, FetchResponse  # noqa: E402

FETCH_SESSION_ID_NOT_FOUND = 70
INVALID_FETCH_SESSION_EPOCH = 71


def topic_on_one_shard(bootstrap, partitions):
    """A topic and the partitions of it that shard 0 leads (fetched from shard 0's port)."""
    topic = unique("fs")
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(10)
    meta = admin.list_topics(topic, timeout=10).topics[topic].partitions
    return topic, sorted(p for p, m in meta.items() if m.leader == 0)


def fetch(conn, topic, session_id, epoch, parts=(), forgotten=(), min_bytes=0):
    req = build(
        FetchRequest,
        11,
        replica_id=-1, max_wait_ms=50, min_bytes=min_bytes, max_bytes=1 << 20, isolation_level=0,
        session_id=session_id, session_epoch=epoch,
        topics=[{"topic": topic, "partitions": [{"partition": p, "fetch_offset": o, "log_start_offset": -1, "partition_max_bytes": 1 << 16,
                                                 "current_leader_epoch": -1} for p, o in parts]}] if parts else [],
        forgotten_topics_data=[{"topic": topic, "partitions": list(forgotten)}] if forgotten else [],
        rack_id="",
    )
    return conn.call(req, FetchResponse)


def answered(r):
    return {p.partition_index: p for t in r.responses for p in t.partitions}


def test_a_session_answers_only_partitions_with_news(shared_broker):
    topic, mine = topic_on_one_shard(shared_broker.bootstrap, 40)
    assert len(mine) >= 10
    conn = Connection(shared_broker.port)
    try:
        full = fetch(conn, topic, 0, 0, [(p, 0) for p in mine])
        assert full.error_code == 0 and full.session_id != 0, "a full fetch at epoch 0 opens a session"
        assert set(answered(full)) == set(mine)
        sid = full.session_id
        quiet = fetch(conn, topic, sid, 1)
        assert (quiet.error_code, quiet.session_id, answered(quiet)) == (0, sid, {}), "nothing new: nothing sent"
        p = Producer({"bootstrap.servers": shared_broker.bootstrap})
        p.produce(topic, value=b"news", partition=mine[3])
        assert p.flush(10) == 0
        news = fetch(conn, topic, sid, 2)
        got = answered(news)
        assert list(got) == [mine[3]], "only the partition with a record"
        assert got[mine[3]].high_watermark == 1 and len(bytes(got[mine[3]].records)) > 0
        # The client moves on to offset 1 and forgets another partition.
        moved = fetch(conn, topic, sid, 3, parts=[(mine[3], 1)], forgotten=[mine[0]])
        assert answered(moved) == {}, "the high watermark was already sent; offset 1 has nothing"
        assert fetch(conn, topic, sid, 3).error_code == INVALID_FETCH_SESSION_EPOCH, "epoch 3 is spent"
        assert fetch(conn, topic, sid + 1, 1).error_code == FETCH_SESSION_ID_NOT_FOUND
        closed = fetch(conn, topic, sid, -1, [(mine[1], 0)])
        assert closed.session_id == 0 and set(answered(closed)) == {mine[1]}, "epoch -1: sessionless, and the session closes"
        assert fetch(conn, topic, sid, 4).error_code == FETCH_SESSION_ID_NOT_FOUND
    finally:
        conn.close()


def test_no_slots_means_no_sessions_and_full_answers():
    b = Broker(extra=["--max-incremental-fetch-session-cache-slots", "0"])
    try:
        topic, mine = topic_on_one_shard(b.bootstrap, 4)
        conn = Connection(b.port)
        try:
            r = fetch(conn, topic, 0, 0, [(p, 0) for p in mine])
            assert r.session_id == 0 and set(answered(r)) == set(mine)
        finally:
            conn.close()
    finally:
        b.close()


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) // 1024


def test_a_long_name_over_many_partitions_is_held_once_and_partitions_are_bounded():
    """A 32 KB topic name (no such topic) over 20,000 partitions, three sessions of it: the broker
    holds the name once a request, not once a partition (it held 300 MB a session, and a
    sessionless 3 MB request took it to 6.7 GB). A Fetch naming more partitions than max.partitions
    closes its connection; the broker serves on."""
    b = Broker(extra=["--max-partitions", "30000"])
    try:
        conn = Connection(b.port)
        name = "n" * 32000
        before = rss_mib(b.proc.pid)
        for _ in range(3):
            r = fetch(conn, name, 0, 0, [(p, 0) for p in range(20000)])
            assert r.error_code == 0 and r.session_id != 0
            parts = answered(r)
            assert len(parts) == 20000 and all(p.error_code != 0 for p in parts.values())
        grown = rss_mib(b.proc.pid) - before
        assert grown < 150, f"three sessions of 20,000 partitions took {grown} MiB"
        with pytest.raises((AssertionError, OSError)):
            fetch(conn, name, 0, -1, [(p, 0) for p in range(30001)])
        conn.close()
        other = Connection(b.port)
        try:
            assert fetch(other, name, 0, -1, [(0, 0)]).error_code == 0
        finally:
            other.close()
    finally:
        b.close()


def test_kafka_python_consumer_of_many_partitions_reads_everything(shared_broker):
    from kafka import KafkaConsumer, TopicPartition

    topic = unique("fsc")
    admin = AdminClient({"bootstrap.servers": shared_broker.bootstrap})
    admin.create_topics([NewTopic(topic, 200, 1)])[topic].result(10)
    c = KafkaConsumer(bootstrap_servers=shared_broker.bootstrap, auto_offset_reset="earliest", enable_auto_commit=False, fetch_max_wait_ms=100)
    c.assign([TopicPartition(topic, p) for p in range(200)])
    p = Producer({"bootstrap.servers": shared_broker.bootstrap})
    sent = []
    got = []
    deadline = time.time() + 60
    for round_ in range(5):
        for i in range(20):
            part = (round_ * 37 + i * 11) % 200
            value = f"{round_}-{i}".encode()
            p.produce(topic, value=value, partition=part)
            sent.append((part, value))
        assert p.flush(10) == 0
        while len(got) < len(sent) and time.time() < deadline:
            for records in c.poll(timeout_ms=200).values():
                got.extend((r.partition, r.value) for r in records)
    c.close()
    assert sorted(got) == sorted(sent), "every record once, through incremental sessions"

"""Partition admission: topics beyond what the broker can hold are refused whole, with a clear error,
and the broker keeps serving and restarting."""

import os
import shutil
import time

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic

from conftest import Broker, unique
from test_robustness import produce_consume_ok


def described(bootstrap):
    """{topic: partition count} as the broker's Metadata lists them."""
    md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=15)
    return {name: len(t.partitions) for name, t in md.topics.items()}


def create(admin, name, partitions):
    """None if created, else the KafkaError."""
    try:
        admin.create_topics([NewTopic(name, partitions)], operation_timeout=15)[name].result(30)
        return None
    except KafkaException as e:
        return e.args[0]


def produce_one_each(bootstrap, topics, partitions):
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for name in topics:
        for i in range(partitions):
            p.produce(name, value=f"{name}/{i}".encode(), partition=i)
    assert p.flush(60) == 0


def read_one_each(bootstrap, topics, partitions):
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": unique("g"), "enable.auto.commit": False})
    c.assign([TopicPartition(name, i, 0) for name in topics for i in range(partitions)])
    got = set()
    deadline = time.time() + 90
    while len(got) < len(topics) * partitions and time.time() < deadline:
        m = c.poll(0.5)
        if m is not None and not m.error():
            got.add(m.value())
    c.close()
    return got


def test_more_partitions_than_open_files_allow_are_served_by_closing_idle_files():
    if not shutil.which("prlimit"):
        pytest.skip("prlimit (util-linux) not installed")
    # 1,400 open files, 700 kept for connections: room for the files of ~130 partitions; 300 exist.
    b = Broker(shards=2, prefix=["prlimit", "--nofile=1400:1400"], extra=["--max-partitions", "300"])
    try:
        admin = AdminClient({"bootstrap.servers": b.bootstrap})
        created = [unique("adm") for _ in range(30)]
        for name in created:
            assert create(admin, name, 10) is None
        # max.partitions refuses the next topic and growth, whole.
        refusal = create(admin, unique("adm"), 10)
        assert refusal is not None and refusal.code() == KafkaError.POLICY_VIOLATION, refusal
        assert "max.partitions (300)" in refusal.str(), refusal.str()
        grown = admin.create_partitions([NewPartitions(created[0], 11)])[created[0]]
        with pytest.raises(KafkaException) as e:
            grown.result(30)
        assert e.value.args[0].code() == KafkaError.POLICY_VIOLATION
        topics = described(b.bootstrap)
        assert all(topics.get(name) == 10 for name in created)
        assert len([n for n in topics if n.startswith("adm-")]) == 30, "no refused topic is listed"
        produce_one_each(b.bootstrap, created, 10)
        expected = {f"{name}/{i}".encode() for name in created for i in range(10)}
        assert read_one_each(b.bootstrap, created, 10) == expected
        assert len(os.listdir(f"/proc/{b.proc.pid}/fd")) < 1400
        b.restart()
        assert read_one_each(b.bootstrap, created, 10) == expected, "every record is back after a restart"
        assert b"cannot be opened" not in open(b.log_path, "rb").read()
    finally:
        assert b.alive()
        b.close()


def test_auto_created_topics_stop_at_max_partitions_with_a_clear_error():
    b = Broker(shards=2, extra=["--max-partitions", "40"])
    try:
        p = Producer({"bootstrap.servers": b.bootstrap, "message.timeout.ms": 5000})
        errors = []
        for i in range(60):
            name = unique("auto")
            md = p.list_topics(topic=name, timeout=15)
            err = md.topics[name].error
            if err is not None:
                errors.append(err)
        assert len(errors) >= 20, f"only {len(errors)} of 60 auto-creations refused"
        assert all(e.code() == KafkaError.POLICY_VIOLATION for e in errors), errors[:3]
        # A record for a refused topic is not delivered (librdkafka retries the metadata until the
        # record times out, as with Kafka's own auto-create failures).
        delivered = []
        p.produce(unique("auto"), b"x", on_delivery=lambda err, msg: delivered.append(err))
        p.flush(30)
        assert delivered and delivered[0] is not None, delivered
        assert sum(n for name, n in described(b.bootstrap).items() if name.startswith("auto-")) == 40
        b.restart()
        assert sum(n for name, n in described(b.bootstrap).items() if name.startswith("auto-")) == 40
    finally:
        assert b.alive()
        b.close()


def test_auto_creation_is_rate_limited_and_clients_retry_into_it():
    import sys

    sys.path.insert(0, os.path.dirname(__file__))
    from kafka.protocol.metadata import MetadataRequest, MetadataResponse
    from kafka_wire import Connection, build

    b = Broker(shards=2, extra=["--auto-create-topics-rate", "5"])
    try:
        names = [unique("burst") for _ in range(50)]
        conn = Connection(b.port)
        r = conn.call(build(MetadataRequest, 1, topics=[{"name": n} for n in names]), MetadataResponse)
        codes = [t.error_code for t in r.topics]
        created = codes.count(0)
        assert 1 <= created <= 10, f"{created} of 50 topics created in one burst at 5 a second"
        assert set(codes) <= {0, 5}, f"over the rate: LEADER_NOT_AVAILABLE, retriable ({set(codes)})"
        assert len([n for n in described(b.bootstrap) if n.startswith("burst-")]) == created
        # Asking again, as clients do, creates the rest at the rate.
        deadline = time.time() + 60
        while True:
            r = conn.call(build(MetadataRequest, 1, topics=[{"name": n} for n in names]), MetadataResponse)
            if all(t.error_code == 0 for t in r.topics):
                break
            assert time.time() < deadline, "auto-creation did not catch up"
            time.sleep(0.5)
        conn.close()
        # A producer to a new topic gets through the same way.
        p = Producer({"bootstrap.servers": b.bootstrap})
        p.produce(unique("burst"), b"x")
        assert p.flush(30) == 0
    finally:
        assert b.alive()
        b.close()


def test_a_partition_that_cannot_open_is_offline_and_comes_back_without_a_restart():
    """One partition's directory replaced by a file: that partition answers KAFKA_STORAGE_ERROR, the
    others serve; once the directory is back it opens on the next request (tried every 5 s)."""
    from kafka.protocol.consumer.offsets import ListOffsetsRequest, ListOffsetsResponse

    from kafka_wire import Connection, build

    b = Broker(shards=1)
    try:
        topic = unique("off")
        assert create(AdminClient({"bootstrap.servers": b.bootstrap}), topic, 4) is None
        produce_one_each(b.bootstrap, [topic], 4)
        b.stop()
        broken = os.path.join(b.data_dir, f"{topic}-2")
        os.rename(broken, broken + ".aside")
        open(broken, "w").close()
        b.start()

        def codes():
            conn = Connection(b.port)
            parts = [{"partition_index": p, "timestamp": -1} for p in range(4)]
            r = conn.call(build(ListOffsetsRequest, 1, replica_id=-1, topics=[{"name": topic, "partitions": parts}]), ListOffsetsResponse)
            conn.close()
            return [(p.error_code, p.offset) for p in r.topics[0].partitions]

        assert codes() == [(0, 1), (0, 1), (KafkaError.KAFKA_STORAGE_ERROR, -1), (0, 1)]
        assert b"partition offline" in open(b.log_path, "rb").read()
        os.remove(broken)
        os.rename(broken + ".aside", broken)
        deadline = time.time() + 30
        while codes()[2] != (0, 1):
            assert time.time() < deadline, "the partition opens again once it can"
            time.sleep(0.5)
        assert read_one_each(b.bootstrap, [topic], 4) == {f"{topic}/{i}".encode() for i in range(4)}
    finally:
        assert b.alive()
        b.close()

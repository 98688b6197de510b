"""Partition admission: topics beyond what the broker can hold are refused whole, with a clear error,
and the broker keeps serving and restarting."""

import shutil

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


def test_creation_beyond_the_open_files_limit_is_refused_whole_and_the_broker_restarts():
    if not shutil.which("prlimit"):
        pytest.skip("prlimit (util-linux) not installed")
    # 1,400 open files: after the 1,024 kept for connections, room for some tens of partitions.
    b = Broker(shards=2, prefix=["prlimit", "--nofile=1400:1400"])
    try:
        admin = AdminClient({"bootstrap.servers": b.bootstrap})
        created, refusal = [], None
        for _ in range(60):
            name = unique("adm")
            err = create(admin, name, 10)
            if err is not None:
                refusal = err
                break
            created.append(name)
        assert refusal is not None, "the open-files limit refuses topics at some point"
        assert refusal.code() == KafkaError.POLICY_VIOLATION, refusal
        assert "file descriptors" in refusal.str(), refusal.str()
        assert len(created) >= 2
        # Growing a topic meets the same bound, and the topic keeps its partitions.
        grown = admin.create_partitions([NewPartitions(created[0], 400)])[created[0]]
        with pytest.raises(KafkaException) as e:
            grown.result(30)
        assert e.value.args[0].code() == KafkaError.POLICY_VIOLATION
        topics = described(b.bootstrap)
        assert all(topics.get(name) == 10 for name in created), "every admitted topic has all its partitions"
        assert not any(name.startswith("adm-") and name not in created for name in topics), "no refused topic is listed"
        assert produce_consume_ok(b.bootstrap)
        b.restart()
        topics = described(b.bootstrap)
        assert all(topics.get(name) == 10 for name in created), "every topic is back whole after a restart"
        assert produce_consume_ok(b.bootstrap)
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


def test_restarted_under_a_lower_open_files_limit_the_broker_serves_what_it_can_open():
    """Partitions that do not fit the limit stay offline (KAFKA_STORAGE_ERROR), the others serve."""
    if not shutil.which("prlimit"):
        pytest.skip("prlimit (util-linux) not installed")
    from kafka.protocol.consumer.offsets import ListOffsetsRequest, ListOffsetsResponse

    from kafka_wire import Connection, build

    b = Broker(shards=1)
    try:
        topic = unique("many")
        assert create(AdminClient({"bootstrap.servers": b.bootstrap}), topic, 120) is None
        b.stop()
        # 700 files: 350 kept for connections, room for some tens of the 120 partitions.
        b.prefix = ["prlimit", "--nofile=700:700"]
        b.start()
        conn = Connection(b.port)
        parts = [{"partition_index": p, "timestamp": -1} for p in range(120)]
        r = conn.call(build(ListOffsetsRequest, 1, replica_id=-1, topics=[{"name": topic, "partitions": parts}]), ListOffsetsResponse)
        codes = [p.error_code for p in r.topics[0].partitions]
        assert set(codes) == {0, KafkaError.KAFKA_STORAGE_ERROR}, sorted(set(codes))
        assert codes.count(0) >= 20
        assert b"partition offline" in open(b.log_path, "rb").read()
        # Still room for connections and for the partitions that opened.
        online = codes.index(0)
        p = Producer({"bootstrap.servers": b.bootstrap})
        delivered = []
        p.produce(topic, b"served", partition=online, on_delivery=lambda err, msg: delivered.append(err))
        p.flush(30)
        assert delivered == [None]
        conn.close()
        # With the limit back, every partition opens again.
        b.stop()
        b.prefix = []
        b.start()
        conn = Connection(b.port)
        r = conn.call(build(ListOffsetsRequest, 1, replica_id=-1, topics=[{"name": topic, "partitions": parts}]), ListOffsetsResponse)
        assert {p.error_code for p in r.topics[0].partitions} == {0}
        conn.close()
    finally:
        assert b.alive()
        b.close()

"""librdkafka (through confluent-kafka) against the real broker."""

import time

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import unique


def create(bootstrap, topic, partitions):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    futures[topic].result(10)
    return admin


def consume_all(bootstrap, topic, expected, group=None, timeout=30, **extra):
    conf = {"bootstrap.servers": bootstrap, "group.id": group or unique("g"), "auto.offset.reset": "earliest", "enable.auto.commit": False}
    conf.update(extra)
    c = Consumer(conf)
    c.subscribe([topic])
    got = []
    deadline = time.time() + timeout
    while len(got) < expected and time.time() < deadline:
        m = c.poll(0.5)
        if m is None:
            continue
        assert m.error() is None or m.error().code() == KafkaError._PARTITION_EOF, m.error()
        if m.error() is None:
            got.append(m)
    c.close()
    return got


def test_multi_partition_order_and_placement(shared_broker):
    topic = unique("orders")
    admin = create(shared_broker.bootstrap, topic, 4)
    md = admin.list_topics(topic, timeout=10)
    leaders = {p.leader for p in md.topics[topic].partitions.values()}
    assert leaders == {0, 1}, "partitions spread over both shards' brokers"
    p = Producer({"bootstrap.servers": shared_broker.bootstrap, "linger.ms": 5})
    for i in range(4000):
        p.produce(topic, key=str(i % 40).encode(), value=str(i).encode())
    assert p.flush(30) == 0
    got = consume_all(shared_broker.bootstrap, topic, 4000)
    assert len(got) == 4000
    by_key = {}
    for m in got:
        by_key.setdefault(m.key(), []).append(int(m.value()))
    for key, values in by_key.items():
        assert values == sorted(values), f"per-key (so per-partition) order for {key}"
    per_partition = {}
    for m in got:
        per_partition.setdefault(m.partition(), []).append(m.offset())
    for offsets in per_partition.values():
        assert offsets == list(range(len(offsets))), "offsets contiguous from 0"


def test_compression_codecs_and_headers(shared_broker):
    for codec in ["gzip", "snappy", "lz4", "zstd", "none"]:
        topic = unique(f"codec-{codec}")
        p = Producer({"bootstrap.servers": shared_broker.bootstrap, "compression.type": codec, "linger.ms": 10})
        for i in range(500):
            p.produce(topic, value=(f"{codec}-{i}-" + "x" * 100).encode(), headers=[("h", str(i).encode())])
        assert p.flush(30) == 0
        got = consume_all(shared_broker.bootstrap, topic, 500)
        assert [m.value().decode().split("-")[1] for m in got] == [str(i) for i in range(500)]
        assert [dict(m.headers())["h"] for m in got] == [str(i).encode() for i in range(500)]


def test_one_megabyte_message(shared_broker):
    topic = unique("big")
    value = bytes(range(256)) * 4096  # 1 MiB
    p = Producer({"bootstrap.servers": shared_broker.bootstrap, "message.max.bytes": 2_000_000})
    p.produce(topic, value=value[: 1_000_000])
    assert p.flush(30) == 0
    got = consume_all(shared_broker.bootstrap, topic, 1, **{"fetch.max.bytes": 2_000_000})
    assert got[0].value() == value[: 1_000_000]


def test_acks_levels(shared_broker):
    for acks in ["0", "1", "all"]:
        topic = unique(f"acks{acks}")
        reports = []
        p = Producer({"bootstrap.servers": shared_broker.bootstrap, "acks": acks})
        for i in range(100):
            p.produce(topic, value=str(i).encode(), on_delivery=lambda err, msg: reports.append(err))
        assert p.flush(30) == 0
        assert reports == [None] * 100
        assert len(consume_all(shared_broker.bootstrap, topic, 100)) == 100


def test_idempotent_producer(shared_broker):
    topic = unique("idem")
    p = Producer({"bootstrap.servers": shared_broker.bootstrap, "enable.idempotence": True})
    for i in range(1000):
        p.produce(topic, value=str(i).encode())
    assert p.flush(30) == 0
    got = consume_all(shared_broker.bootstrap, topic, 1000)
    assert [int(m.value()) for m in got] == list(range(1000))


def test_auto_create_and_list_offsets(shared_broker):
    topic = unique("auto")
    p = Producer({"bootstrap.servers": shared_broker.bootstrap})
    for i in range(10):
        p.produce(topic, value=b"v")
    assert p.flush(30) == 0
    c = Consumer({"bootstrap.servers": shared_broker.bootstrap, "group.id": unique("g")})
    lo, hi = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    assert (lo, hi) == (0, 10)
    c.close()


def test_restart_keeps_data(broker):
    topic = unique("durable")
    p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all"})
    for i in range(300):
        p.produce(topic, value=str(i).encode())
    assert p.flush(30) == 0
    broker.restart()
    got = consume_all(broker.bootstrap, topic, 300)
    assert [int(m.value()) for m in got] == list(range(300))


def test_legacy_alter_configs_replaces_the_set(shared_broker):
    from confluent_kafka.admin import ConfigResource

    topic = unique("cfg")
    admin = AdminClient({"bootstrap.servers": shared_broker.bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1, config={"segment.bytes": "1048576"})])[topic].result(10)
    resource = ConfigResource("topic", topic, set_config={"retention.ms": "60000"})
    for f in admin.alter_configs([resource]).values():
        f.result(10)
    configs = list(admin.describe_configs([ConfigResource("topic", topic)]).values())[0].result(10)
    assert configs["retention.ms"].value == "60000"
    assert configs["segment.bytes"].value == str(1 << 30), "AlterConfigs replaces the whole set: back to the default"

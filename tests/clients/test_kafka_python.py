"""kafka-python (3.x: idempotent producer by default) against the real broker."""

import threading
import time

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

from conftest import unique


def test_produce_consume_group_commit(shared_broker):
    topic = unique("kp")
    admin = KafkaAdminClient(bootstrap_servers=shared_broker.bootstrap)
    admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
    assert topic in admin.list_topics()
    producer = KafkaProducer(bootstrap_servers=shared_broker.bootstrap, acks="all", compression_type="gzip")
    futures = [producer.send(topic, key=str(i % 3).encode(), value=str(i).encode()) for i in range(300)]
    producer.flush(30)
    offsets = [f.get(10) for f in futures]
    assert {o.partition for o in offsets} <= {0, 1, 2}
    producer.close()
    group = unique("g")
    consumer = KafkaConsumer(topic, bootstrap_servers=shared_broker.bootstrap, group_id=group, auto_offset_reset="earliest", enable_auto_commit=False, consumer_timeout_ms=15000)
    got = []
    for m in consumer:
        got.append(int(m.value))
        if len(got) == 300:
            break
    consumer.commit()
    assert sorted(got) == list(range(300))
    committed = sum(consumer.committed(TopicPartition(topic, p)) or 0 for p in range(3))
    assert committed == 300
    consumer.close()
    admin.delete_topics([topic])
    deadline = time.time() + 10
    while topic in admin.list_topics() and time.time() < deadline:
        time.sleep(0.1)
    assert topic not in admin.list_topics()
    admin.close()


def test_two_kafka_python_members_split_partitions(shared_broker):
    topic = unique("kp2")
    admin = KafkaAdminClient(bootstrap_servers=shared_broker.bootstrap)
    admin.create_topics([NewTopic(topic, num_partitions=4, replication_factor=1)])
    admin.close()
    group = unique("g")
    stop = threading.Event()
    members = [KafkaConsumer(bootstrap_servers=shared_broker.bootstrap, group_id=group, client_id=f"m{i}", heartbeat_interval_ms=300, session_timeout_ms=6000) for i in range(2)]
    # kafka-python 3.0.12 can stall for good when its leader gets the topic's metadata while its
    # SyncGroup is in flight (seen here: the sync response is logged, the heartbeat never restarts,
    # the broker rightly expires it). Fetching metadata before subscribing keeps the test on the
    # broker's behaviour, not on that client race.
    for c in members:
        assert c.partitions_for_topic(topic) == {0, 1, 2, 3}
        c.subscribe([topic])

    def run(c):
        while not stop.is_set():
            c.poll(100)

    threads = [threading.Thread(target=run, args=(c,)) for c in members]
    for t in threads:
        t.start()
    try:
        deadline = time.time() + 30
        while time.time() < deadline:
            sizes = [len(c.assignment()) for c in members]
            if sizes == [2, 2]:
                break
            time.sleep(0.2)
        assert sizes == [2, 2]
    finally:
        stop.set()
        for t in threads:
            t.join()
        for c in members:
            c.close()


def test_alter_and_describe_configs(shared_broker):
    from kafka.admin import ConfigResource, ConfigResourceType

    topic = unique("cfg")
    admin = KafkaAdminClient(bootstrap_servers=shared_broker.bootstrap)
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1, topic_configs={"segment.bytes": "1048576"})])
    admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs={"retention.ms": "60000"})])
    described = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    text = str(described)
    assert "retention.ms" in text and "60000" in text
    # kafka-python 3 sends IncrementalAlterConfigs: segment.bytes is kept.
    assert "1048576" in text
    admin.close()


def test_transactions_and_read_committed(shared_broker):
    """kafka-python's transactional producer: commit, abort (sent data), commit; its read_committed
    consumer skips the aborted record, its read_uncommitted one does not."""
    topic = unique("kp-txn")
    p = KafkaProducer(bootstrap_servers=shared_broker.bootstrap, transactional_id=unique("tid"))
    p.init_transactions()
    p.begin_transaction()
    p.send(topic, b"c0")
    p.send(topic, b"c1")
    p.commit_transaction()
    p.begin_transaction()
    p.send(topic, b"a0")
    p.flush()
    p.abort_transaction()
    p.begin_transaction()
    p.send(topic, b"c2")
    p.commit_transaction()
    p.close()

    def read(isolation):
        c = KafkaConsumer(bootstrap_servers=shared_broker.bootstrap, isolation_level=isolation, consumer_timeout_ms=15000)
        c.assign([TopicPartition(topic, 0)])
        c.seek_to_beginning()
        got = []
        for m in c:  # ends at c2 (offset 5), the last record; a timeout ends it otherwise
            got.append((m.offset, m.value))
            if m.value == b"c2":
                break
        c.close()
        return got

    assert read("read_uncommitted") == [(0, b"c0"), (1, b"c1"), (3, b"a0"), (5, b"c2")]
    assert read("read_committed") == [(0, b"c0"), (1, b"c1"), (5, b"c2")]

"""Log compaction (issue 14) with confluent-kafka and kafka-python against the real broker: the
cleaner leaves exactly the latest value of each key at its offset and the log shrinks; tombstones
stay for delete.retention.ms, then go; retention deletes only under `delete` (`compact,delete`
does both); records without a key are refused by a compacted topic, also after APPEND/SUBTRACT of
the policy at runtime; a broker killed in the middle of a cleaning pass loses nothing and finishes
the job after its restart."""

import glob
import os
import signal
import time

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, NewTopic
from kafka import KafkaConsumer, KafkaProducer
from kafka import TopicPartition as KafkaTopicPartition

from conftest import Broker, read_to_end, unique

FAST_CLEANER = ["--log-cleaner-backoff-ms", "100", "--retention-check-interval-ms", "200"]
# Small segments so that a few hundred KB make many closed ones (only closed segments are cleaned).
SMALL_SEGMENTS = {"segment.bytes": "16384", "min.cleanable.dirty.ratio": "0.01"}


@pytest.fixture(scope="module")
def cleaning_broker():
    b = Broker(extra=FAST_CLEANER)
    yield b
    assert b.alive(), "broker died during the tests"
    b.close()


def create(b, **configs):
    topic = unique("compacted")
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1, config=configs)])[topic].result(10)
    return topic


def produce(b, topic, records):
    """Sends (key, value) pairs in order; returns (offset, key, value) of each, as acknowledged."""
    # Batches of 100 records at most: a batch is never split, so small ones make many segments.
    p = Producer({"bootstrap.servers": b.bootstrap, "linger.ms": 5, "batch.num.messages": 100})
    done = []

    def report(err, msg):
        assert err is None, err
        done.append((msg.offset(), msg.key(), msg.value()))

    for key, value in records:
        p.produce(topic, key=key, value=value, on_delivery=report)
        p.poll(0)
    assert p.flush(30) == 0
    return sorted(done)


def read_all(b, topic):
    """(offset, key, value) of every record a fresh consumer reads from the start to the end."""
    return read_to_end(b.bootstrap, topic)


def latest(written):
    """The latest (offset, key, value) of each key."""
    last = {}
    for offset, key, value in written:
        last[key] = (offset, key, value)
    return sorted(last.values())


def log_bytes(b, topic):
    return sum(os.path.getsize(f) for f in glob.glob(os.path.join(b.data_dir, f"{topic}-0", "*.log")))


def filler(b, topic, n=120):
    """Records of one key after the test's, enough to roll the segment holding the test's."""
    produce(b, topic, [(b"filler", b"f" * 300)] * n)


def wait_until(what, check, timeout=60):
    deadline = time.time() + timeout
    while True:
        result = check()
        if result:
            return result
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def updates(keys, versions, pad=40):
    """`versions` values of each of `keys` keys, interleaved."""
    return [(f"k{i % keys}".encode(), f"v{i}-".encode() + b"x" * pad) for i in range(keys * versions)]


def test_the_cleaner_keeps_the_latest_value_of_each_key_at_its_offset(cleaning_broker):
    b = cleaning_broker
    topic = create(b, **{"cleanup.policy": "compact", **SMALL_SEGMENTS})
    records = updates(keys=40, versions=60) + [(f"k{i}".encode(), None) for i in range(5)]
    written = produce(b, topic, records)
    filler(b, topic)
    before = log_bytes(b, topic)
    expected = latest(written)

    def cleaned():
        got = [r for r in read_all(b, topic) if r[1] != b"filler"]
        return got if got == expected else None

    wait_until("the test's records cleaned to one per key", cleaned)
    # (The five tombstones are in `expected`: they stay, delete.retention.ms being a day.)
    assert log_bytes(b, topic) < before / 3, (log_bytes(b, topic), before)


def test_tombstones_go_after_delete_retention_ms(cleaning_broker):
    b = cleaning_broker
    topic = create(b, **{"cleanup.policy": "compact", "delete.retention.ms": "500", **SMALL_SEGMENTS})
    p = KafkaProducer(bootstrap_servers=b.bootstrap)
    for v in range(30):
        for k in range(10):
            p.send(topic, key=f"k{k}".encode(), value=f"{k}-{v}".encode() + b"x" * 40)
    for k in range(5):
        p.send(topic, key=f"k{k}".encode(), value=None)
    p.flush(30)
    p.close()

    def read_kafka_python():
        c = KafkaConsumer(bootstrap_servers=b.bootstrap, auto_offset_reset="earliest", enable_auto_commit=False, consumer_timeout_ms=2000)
        tp = KafkaTopicPartition(topic, 0)
        c.assign([tp])
        c.seek_to_beginning(tp)
        end = c.end_offsets([tp])[tp]
        got = []
        deadline = time.time() + 30
        while c.position(tp) < end:
            assert time.time() < deadline, "kafka-python did not reach the end"
            for records in c.poll(timeout_ms=500).values():
                got.extend((r.key, r.value) for r in records if r.key != b"filler")
        c.close()
        return got

    def tombstones_gone():
        # Each round rolls a segment: new dirty data, so the cleaner passes again; tombstones that
        # were in the clean part and are older than delete.retention.ms go then.
        filler(b, topic, n=60)
        got = read_kafka_python()
        return got if got == [(f"k{k}".encode(), f"{k}-29".encode() + b"x" * 40) for k in range(5, 10)] else None

    wait_until("the tombstones and every value of their keys gone", tombstones_gone, timeout=90)


def low_watermark(b, topic):
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": unique("g")})
    try:
        return c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[0]
    finally:
        c.close()


def test_retention_deletes_only_under_the_delete_policy(cleaning_broker):
    b = cleaning_broker
    compact_only = create(b, **{"cleanup.policy": "compact", "retention.ms": "1", **SMALL_SEGMENTS})
    both = create(b, **{"cleanup.policy": "compact,delete", "retention.ms": "1", **SMALL_SEGMENTS})
    expected = {}
    for topic in (compact_only, both):
        expected[topic] = latest(produce(b, topic, updates(keys=20, versions=40)))
        filler(b, topic)
    wait_until("retention on compact,delete", lambda: low_watermark(b, both) > 0)

    def compacted():
        got = [r for r in read_all(b, compact_only) if r[1] != b"filler"]
        return got == expected[compact_only]

    wait_until("the compact-only topic cleaned", compacted)
    assert low_watermark(b, compact_only) == 0, "retention.ms does not apply without delete"


def test_records_without_a_key_are_refused_by_a_compacted_topic(cleaning_broker):
    b = cleaning_broker
    topic = create(b, **{"cleanup.policy": "delete"})
    admin = AdminClient({"bootstrap.servers": b.bootstrap})

    def policy(op):
        r = ConfigResource(
            ConfigResource.Type.TOPIC, topic, incremental_configs=[ConfigEntry("cleanup.policy", "compact", incremental_operation=op)]
        )
        admin.incremental_alter_configs([r])[r].result(10)

    def send(keys):
        p = Producer({"bootstrap.servers": b.bootstrap, "linger.ms": 50, "retries": 0})
        errors = []
        for k in keys:
            p.produce(topic, key=k, value=b"v", on_delivery=lambda err, msg: errors.append(err and err.code()))
        assert p.flush(30) == 0
        return errors

    assert send([None]) == [None], "a delete topic takes keyless records"
    policy(AlterConfigOpType.APPEND)
    # One batch: the keyless records fail with INVALID_RECORD, their batch-mates with librdkafka's
    # _INVALID_DIFFERENT_RECORD (the broker names the culprits in record_errors; with one culprit
    # librdkafka gives every record the partition's error).
    got = send([b"a", None, b"b", None])
    different, invalid = KafkaError._INVALID_DIFFERENT_RECORD, KafkaError.INVALID_RECORD
    assert got == [different, invalid, different, invalid], got
    assert send([b"a", b"b"]) == [None, None]
    policy(AlterConfigOpType.SUBTRACT)
    assert send([None]) == [None], "keyless records again once compact is subtracted"


def test_a_broker_killed_while_cleaning_loses_nothing():
    # A slow cleaner (100 KB/s per shard), so that the kill lands inside a pass.
    b = Broker(extra=FAST_CLEANER + ["--log-cleaner-io-max-bytes-per-second", "200000"])
    try:
        topic = create(b, **{"cleanup.policy": "compact", "segment.bytes": "32768", "min.cleanable.dirty.ratio": "0.01"})
        written = produce(b, topic, updates(keys=50, versions=40, pad=60))
        filler(b, topic)
        expected = latest(written)
        part = os.path.join(b.data_dir, f"{topic}-0")
        wait_until("a segment being cleaned", lambda: glob.glob(os.path.join(part, "*.log.cleaned")), timeout=60)
        # Back without a cleaner first, to see what recovery made of the pass's files.
        cleaner_flags = b.extra
        b.extra = cleaner_flags + ["--no-log-cleaner"]
        b.restart(signal.SIGKILL)
        got = [r for r in read_all(b, topic) if r[1] != b"filler"]
        assert not glob.glob(os.path.join(part, "*.log.cleaned")), "recovery (at the partition's first use) removes what the pass left"
        assert set(expected) <= set(got), "the latest value of every key survives the kill"
        assert set(got) <= set(written), "nothing but what was written"
        b.extra = cleaner_flags
        b.restart()

        def cleaned():
            return [r for r in read_all(b, topic) if r[1] != b"filler"] == expected

        wait_until("the cleaning finished after the restart", cleaned, timeout=120)
    finally:
        b.close()

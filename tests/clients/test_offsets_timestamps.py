"""Offsets and timestamps as Kafka answers them (issue 10, item 2): ListOffsets by time finds the
record, not its batch, in every codec; MAX_TIMESTAMP; DeleteRecords moves the log start durably."""

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec

from conftest import unique

T0 = 1_700_000_000_000


def produce_one_batch(bootstrap, topic, codec, timestamps):
    """All records in one batch (one flush, generous linger), with the given timestamps."""
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 1000, "compression.type": codec, "batch.num.messages": 10000})
    for i, ts in enumerate(timestamps):
        p.produce(topic, value=f"v{i}".encode(), partition=0, timestamp=ts)
    assert p.flush(30) == 0


def new_topic(bootstrap):
    topic = unique("ts")
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(10)
    return topic


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_offsets_for_times_finds_the_record_inside_the_batch(shared_broker, codec):
    topic = new_topic(shared_broker.bootstrap)
    timestamps = [T0 + i * 1000 for i in range(100)]
    timestamps[57] = T0 + 500_000  # out of order: the greatest timestamp sits in the middle
    produce_one_batch(shared_broker.bootstrap, topic, codec, timestamps)
    c = Consumer({"bootstrap.servers": shared_broker.bootstrap, "group.id": unique("g")})
    found = c.offsets_for_times([TopicPartition(topic, 0, T0 + 42_000)], timeout=10)
    between = c.offsets_for_times([TopicPartition(topic, 0, T0 + 41_500)], timeout=10)
    past = c.offsets_for_times([TopicPartition(topic, 0, T0 + 600_000)], timeout=10)
    c.close()
    assert found[0].offset == 42, "the first record at or after the time, not the batch's base offset"
    assert between[0].offset == 42
    assert past[0].offset == -1, "no record that late: the end"
    admin = AdminClient({"bootstrap.servers": shared_broker.bootstrap})
    tp = TopicPartition(topic, 0)
    result = admin.list_offsets({tp: OffsetSpec.max_timestamp()})[tp].result(10)
    assert (result.offset, result.timestamp) == (57, T0 + 500_000)
    result = admin.list_offsets({tp: OffsetSpec.for_timestamp(T0 + 42_000)})[tp].result(10)
    assert (result.offset, result.timestamp) == (42, T0 + 42_000), "the record's own timestamp"


def test_delete_records_moves_the_log_start_durably(broker):
    topic = new_topic(broker.bootstrap)
    produce_one_batch(broker.bootstrap, topic, "none", [T0 + i for i in range(100)])
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    tp = TopicPartition(topic, 0, 30)
    assert admin.delete_records([tp])[tp].result(10).low_watermark == 30
    too_far = TopicPartition(topic, 0, 101)
    with pytest.raises(Exception) as refused:
        admin.delete_records([too_far])[too_far].result(10)
    assert "OFFSET_OUT_OF_RANGE" in str(refused.value)

    def earliest():
        t = TopicPartition(topic, 0)
        return admin.list_offsets({t: OffsetSpec.earliest()})[t].result(10).offset

    assert earliest() == 30
    # A consumer asking for offset 10 is out of range and resets to the new start.
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": unique("g"), "auto.offset.reset": "earliest"})
    c.assign([TopicPartition(topic, 0, 10)])
    first = None
    for _ in range(100):
        m = c.poll(0.2)
        if m is not None and not m.error():
            first = m.offset()
            break
    c.close()
    assert first == 30
    broker.restart()
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    assert earliest() == 30, "the log start survives a restart"
    everything = TopicPartition(topic, 0, -1)
    assert admin.delete_records([everything])[everything].result(10).low_watermark == 100
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": unique("g")})
    low, high = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    c.close()
    assert (low, high) == (100, 100)


def test_list_offsets_refuses_repeated_partitions_and_timestamps_its_version_lacks(broker):
    """Kafka's checks before any lookup: each copy of a partition named twice → INVALID_REQUEST; a
    special timestamp older than the version that defined it (−3 max timestamp from v7, −4 from
    v8, −5 from v9), or one Kafka does not define, → UNSUPPORTED_VERSION."""
    import warnings

    from kafka_wire import build
    from test_idempotence import open_leader

    warnings.filterwarnings("ignore", category=DeprecationWarning)
    from kafka.protocol.consumer.offsets import ListOffsetsRequest, ListOffsetsResponse

    topic = unique("lo-checks")
    conn = open_leader(broker, topic)
    try:
        def ask(partitions):
            req = build(ListOffsetsRequest, 1, replica_id=-1,
                        topics=[{"name": topic, "partitions": [{"partition_index": p, "timestamp": t} for p, t in partitions]}])
            r = conn.call(req, ListOffsetsResponse)
            return [(p.partition_index, p.error_code) for t in r.topics for p in t.partitions]

        assert ask([(0, -1)]) == [(0, 0)]
        assert ask([(0, -1), (0, -2)]) == [(0, 42), (0, 42)], "both copies INVALID_REQUEST"
        assert ask([(0, -3)]) == [(0, 35)], "max timestamp needs v7"
        assert ask([(0, -4)]) == [(0, 35)] and ask([(0, -6)]) == [(0, 35)]
    finally:
        conn.close()

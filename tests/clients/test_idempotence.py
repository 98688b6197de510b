"""Idempotent producers across restarts (issue 12): a retry of a batch already in the log is
answered with its first offset and not appended again, before and after a restart (the producer
state is rebuilt from the log and its snapshots), a gap in sequences is refused with
OUT_OF_ORDER_SEQUENCE_NUMBER, an old epoch with INVALID_PRODUCER_EPOCH. Batches are built and
requests encoded by kafka-python's protocol classes, so that the same sequence can be sent twice."""

import signal
import time
import warnings

import pytest

from conftest import Broker, unique
from kafka_wire import Connection, build

warnings.filterwarnings("ignore", category=DeprecationWarning)

from kafka.protocol.metadata import MetadataRequest, MetadataResponse  # noqa: E402
from kafka.protocol.producer.produce import ProduceRequest, ProduceResponse  # noqa: E402
from kafka.protocol.producer.transaction import InitProducerIdRequest, InitProducerIdResponse  # noqa: E402
from kafka.record.default_records import DefaultRecordBatchBuilder  # noqa: E402

OUT_OF_ORDER_SEQUENCE_NUMBER = 45
INVALID_PRODUCER_EPOCH = 47


def batch(pid, epoch, seq, values, timestamp_ms=1_700_000_000_000):
    b = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=0, producer_id=pid, producer_epoch=epoch, base_sequence=seq, batch_size=1 << 20)
    for i, v in enumerate(values):
        b.append(i, timestamp=timestamp_ms + i, key=None, value=v, headers=[])
    return bytes(b.build())


def produce(conn, topic, records):
    """(error code, base offset) of one acks=all Produce v7 of `records` to partition 0."""
    req = build(ProduceRequest, 7, transactional_id=None, acks=-1, timeout_ms=10_000, topic_data=[{"name": topic, "partition_data": [{"index": 0, "records": records}]}])
    r = conn.call(req, ProduceResponse)
    p = r.responses[0].partition_responses[0]
    return p.error_code, p.base_offset


def leader_port(conn, topic, base_port):
    md = conn.call(build(MetadataRequest, 4, topics=[{"name": topic}], allow_auto_topic_creation=True), MetadataResponse)
    return base_port + md.topics[0].partitions[0].leader_id


def open_leader(b, topic):
    """A connection to the shard leading partition 0 of `topic` (auto-created), once there is one."""
    boot = Connection(b.port)
    try:
        deadline = time.time() + 15
        while time.time() < deadline:
            port = leader_port(boot, topic, b.port)
            if port >= b.port:
                return Connection(port)
            time.sleep(0.1)
        raise AssertionError("no leader for the topic")
    finally:
        boot.close()


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGKILL])
def test_a_retried_batch_is_not_appended_again_after_a_restart(stop_signal):
    b = Broker(extra=["--flush-messages", "1"])
    try:
        topic = unique("idem-restart")
        conn = open_leader(b, topic)
        init = conn.call(build(InitProducerIdRequest, 0, transactional_id=None, transaction_timeout_ms=60_000), InitProducerIdResponse)
        assert init.error_code == 0
        pid, epoch = init.producer_id, init.producer_epoch
        first = batch(pid, epoch, 0, [b"a", b"b", b"c"])
        assert produce(conn, topic, first) == (0, 0)
        assert produce(conn, topic, first) == (0, 0), "a retry before the restart gets its offset back"
        second = batch(pid, epoch, 3, [b"d"])
        assert produce(conn, topic, second) == (0, 3)
        conn.close()

        b.restart(stop_signal)

        conn = open_leader(b, topic)
        assert produce(conn, topic, second) == (0, 3), "a retry after the restart gets its offset back"
        assert produce(conn, topic, first) == (0, 0), "an older batch among the last five too"
        assert produce(conn, topic, batch(pid, epoch, 9, [b"x"]))[0] == OUT_OF_ORDER_SEQUENCE_NUMBER, "a gap is refused"
        assert produce(conn, topic, batch(pid, epoch, 4, [b"e"])) == (0, 4), "the next sequence goes on"
        conn.close()

        from confluent_kafka import Consumer, KafkaError

        c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": unique("g"), "auto.offset.reset": "earliest", "enable.partition.eof": True})
        c.subscribe([topic])
        got = []
        while True:
            m = c.poll(15)
            assert m is not None, f"no end of partition reached; read {got}"
            if m.error():
                assert m.error().code() == KafkaError._PARTITION_EOF, m.error()
                break
            got.append(m.value())
        c.close()
        assert got == [b"a", b"b", b"c", b"d", b"e"], "each record once"
    finally:
        b.close()


def test_an_old_epoch_is_refused():
    b = Broker()
    try:
        topic = unique("idem-epoch")
        conn = open_leader(b, topic)
        init = conn.call(build(InitProducerIdRequest, 0, transactional_id=None, transaction_timeout_ms=60_000), InitProducerIdResponse)
        pid = init.producer_id
        assert produce(conn, topic, batch(pid, 3, 0, [b"a"])) == (0, 0)
        assert produce(conn, topic, batch(pid, 2, 1, [b"b"]))[0] == INVALID_PRODUCER_EPOCH
        assert produce(conn, topic, batch(pid, 4, 5, [b"b"]))[0] == OUT_OF_ORDER_SEQUENCE_NUMBER, "a new epoch starts at 0"
        assert produce(conn, topic, batch(pid, 4, 0, [b"b"])) == (0, 1)
        conn.close()
    finally:
        b.close()


def test_an_idle_producer_expires_after_producer_id_expiration_ms():
    """producer.id.expiration.ms: a producer whose last batch is older is forgotten, so a retry of
    that batch is then taken as new (Kafka's behaviour: the bound on the producer state's size)."""
    b = Broker(extra=["--producer-id-expiration-ms", "1500", "--retention-check-interval-ms", "200"])
    try:
        topic = unique("idem-expiry")
        conn = open_leader(b, topic)
        pid = conn.call(build(InitProducerIdRequest, 0, transactional_id=None, transaction_timeout_ms=60_000), InitProducerIdResponse).producer_id
        first = batch(pid, 0, 0, [b"a"], timestamp_ms=int(time.time() * 1000))
        assert produce(conn, topic, first) == (0, 0)
        assert produce(conn, topic, first) == (0, 0), "a retry right away is a duplicate"
        # Retried until the producer is forgotten: the same batch is then appended as a new one.
        deadline = time.time() + 30
        while (answer := produce(conn, topic, first)) == (0, 0):
            assert time.time() < deadline, "the producer never expired"
            time.sleep(0.1)
        assert answer == (0, 1), answer
        conn.close()
    finally:
        b.close()

"""Transactions (issue 13) with confluent-kafka's transactional producer against the real broker:
what a read_committed and a read_uncommitted consumer see, record by record, after commits and
aborts; a read_committed consumer held at the last stable offset while a transaction is open; a
zombie fenced by a new instance with the same transactional.id; a restart between the last send
and the commit; a transaction past its timeout aborted by the coordinator."""

import signal
import time

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition

from conftest import Broker, read_to_end, unique


def producer(b, txn_id, **extra):
    p = Producer({"bootstrap.servers": b.bootstrap, "transactional.id": txn_id, **extra})
    p.init_transactions(30)
    return p


def send(p, topic, values):
    for v in values:
        p.produce(topic, value=v)
    p.flush(30)


def read_all(b, topic, isolation, timeout=20):
    """(offset, value) of every record a fresh consumer with `isolation` reads to the end."""
    return [(offset, value) for offset, _, value in read_to_end(b.bootstrap, topic, timeout, **{"isolation.level": isolation})]


def test_committed_and_aborted_records_as_each_isolation_sees_them(shared_broker):
    b = shared_broker
    topic = unique("txn")
    p = producer(b, unique("tid"))
    p.begin_transaction()
    send(p, topic, [b"c0", b"c1"])
    p.commit_transaction(30)
    p.begin_transaction()
    send(p, topic, [b"a0", b"a1", b"a2"])
    p.abort_transaction(30)
    p.begin_transaction()
    send(p, topic, [b"c2"])
    p.commit_transaction(30)
    # Offsets: c0 c1 | commit marker | a0 a1 a2 | abort marker | c2 | commit marker.
    assert read_all(b, topic, "read_uncommitted") == [(0, b"c0"), (1, b"c1"), (3, b"a0"), (4, b"a1"), (5, b"a2"), (7, b"c2")]
    assert read_all(b, topic, "read_committed") == [(0, b"c0"), (1, b"c1"), (7, b"c2")]


def test_a_read_committed_consumer_stops_at_an_open_transaction(shared_broker):
    b = shared_broker
    topic = unique("txn-open")
    p = producer(b, unique("tid"))
    p.begin_transaction()
    send(p, topic, [b"c0"])
    p.commit_transaction(30)
    p.begin_transaction()
    send(p, topic, [b"open0", b"open1"])
    other = Producer({"bootstrap.servers": b.bootstrap})
    other.produce(topic, value=b"plain")
    other.flush(30)
    committed = Consumer({"bootstrap.servers": b.bootstrap, "group.id": unique("g"), "isolation.level": "read_committed"})
    low, high = committed.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    assert (low, high) == (0, 2), "ListOffsets latest under read_committed is the last stable offset"
    committed.close()
    assert read_all(b, topic, "read_committed") == [(0, b"c0")], "held at the open transaction"
    assert [v for _, v in read_all(b, topic, "read_uncommitted")] == [b"c0", b"open0", b"open1", b"plain"]
    p.commit_transaction(30)
    assert [v for _, v in read_all(b, topic, "read_committed")] == [b"c0", b"open0", b"open1", b"plain"]


def test_a_zombie_is_fenced_by_a_new_instance(shared_broker):
    b = shared_broker
    topic = unique("txn-zombie")
    txn_id = unique("tid")
    zombie = producer(b, txn_id)
    zombie.begin_transaction()
    send(zombie, topic, [b"zombie"])
    fresh = producer(b, txn_id)  # aborts the zombie's open transaction and fences it
    fresh.begin_transaction()
    send(fresh, topic, [b"fresh"])
    fresh.commit_transaction(30)
    with pytest.raises(KafkaException) as fenced:
        zombie.commit_transaction(30)
    assert fenced.value.args[0].fatal() or "fenced" in str(fenced.value).lower(), fenced.value
    assert [v for _, v in read_all(b, topic, "read_committed")] == [b"fresh"]


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGKILL])
def test_a_restart_between_the_last_send_and_the_commit(stop_signal):
    b = Broker()
    try:
        topic = unique("txn-restart")
        p = producer(b, unique("tid"))
        p.begin_transaction()
        send(p, topic, [b"r0", b"r1"])
        b.restart(stop_signal)
        p.commit_transaction(60)
        assert [v for _, v in read_all(b, topic, "read_committed")] == [b"r0", b"r1"]
    finally:
        b.close()


def test_a_transaction_past_its_timeout_is_aborted_by_the_coordinator(shared_broker):
    b = shared_broker
    topic = unique("txn-timeout")
    p = producer(b, unique("tid"), **{"transaction.timeout.ms": 2000})
    p.begin_transaction()
    send(p, topic, [b"late"])
    # The coordinator aborts it (and fences the producer) once 2 s have passed: its abort marker
    # at offset 1 ends it, and the last stable offset moves past it.
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": unique("g"), "isolation.level": "read_committed"})
    deadline = time.time() + 30
    while c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[1] != 2:
        assert time.time() < deadline, "the transaction was never aborted"
        time.sleep(0.2)
    c.close()
    with pytest.raises(KafkaException):
        p.commit_transaction(30)
    assert read_all(b, topic, "read_committed") == []


def test_consume_transform_produce_commits_offsets_with_the_transaction(shared_broker):
    b = shared_broker
    src, dst, group = unique("src"), unique("dst"), unique("g")
    plain = Producer({"bootstrap.servers": b.bootstrap})
    for i in range(10):
        plain.produce(src, value=b"%d" % i)
    plain.flush(30)
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": group, "enable.auto.commit": False, "isolation.level": "read_committed"})
    c.assign([TopicPartition(src, 0, OFFSET_BEGINNING)])
    p = producer(b, unique("tid"))

    def committed():
        return c.committed([TopicPartition(src, 0)], timeout=10)[0].offset

    def process(n, commit):
        got = []
        while len(got) < n:
            m = c.poll(10)
            assert m is not None and not m.error(), m and m.error()
            got.append(m)
        p.begin_transaction()
        send(p, dst, [b"out-" + m.value() for m in got])
        p.send_offsets_to_transaction([TopicPartition(src, 0, got[-1].offset() + 1)], c.consumer_group_metadata(), 30)
        (p.commit_transaction if commit else p.abort_transaction)(30)

    process(5, commit=True)
    assert committed() == 5, "the offsets committed with the transaction"
    process(5, commit=False)
    assert committed() == 5, "an aborted transaction's offsets are dropped"
    c.close()
    assert [v for _, v in read_all(b, dst, "read_committed")] == [b"out-%d" % i for i in range(5)]


def test_operators_describe_list_and_see_producers(shared_broker):
    """KIP-664 through kafka-python's admin client: DescribeTransactions, ListTransactions (with a
    state filter) and DescribeProducers while a transaction is open, then after its commit."""
    from kafka import KafkaAdminClient
    from kafka import TopicPartition as KTopicPartition

    b = shared_broker
    topic, txn_id = unique("txn-admin"), unique("tid")
    p = producer(b, txn_id)
    p.begin_transaction()
    send(p, topic, [b"x", b"y"])
    admin = KafkaAdminClient(bootstrap_servers=b.bootstrap)
    d = admin.describe_transactions([txn_id])[txn_id]
    assert d.state.value == "Ongoing" and d.topic_partitions == {KTopicPartition(topic, 0)}, d
    listed = [t for per_broker in admin.list_transactions(state_filters=["Ongoing"]).values() for t in per_broker]
    assert [(t.transactional_id, t.producer_id) for t in listed if t.transactional_id == txn_id] == [(txn_id, d.producer_id)]
    producers = admin.describe_producers([KTopicPartition(topic, 0)])[KTopicPartition(topic, 0)].active_producers
    assert [(s.producer_id, s.producer_epoch, s.last_sequence, s.current_transaction_start_offset) for s in producers] == [(d.producer_id, d.producer_epoch, 1, 0)]
    p.commit_transaction(30)
    assert admin.describe_transactions([txn_id])[txn_id].state.value == "CompleteCommit"
    listed = [t for per_broker in admin.list_transactions(state_filters=["Ongoing"]).values() for t in per_broker]
    assert txn_id not in [t.transactional_id for t in listed]
    producers = admin.describe_producers([KTopicPartition(topic, 0)])[KTopicPartition(topic, 0)].active_producers
    assert producers[0].current_transaction_start_offset == -1, "no transaction open after the commit"
    admin.close()


def test_an_idle_transactional_id_expires_durably():
    """transactional.id.expiration.ms: an id with no transaction open is forgotten once idle that
    long (DescribeTransactions: TRANSACTIONAL_ID_NOT_FOUND), and stays forgotten after a restart."""
    from kafka import KafkaAdminClient
    from kafka.errors import TransactionalIdNotFoundError

    b = Broker(extra=["--transactional-id-expiration-ms", "4000"])
    try:
        txn_id = unique("tid")
        p = producer(b, txn_id)
        p.begin_transaction()
        send(p, unique("txn-exp"), [b"x"])
        p.commit_transaction(30)
        admin = KafkaAdminClient(bootstrap_servers=b.bootstrap)
        assert admin.describe_transactions([txn_id])[txn_id].state.value == "CompleteCommit", "known right after"
        deadline = time.time() + 30
        while True:
            try:
                admin.describe_transactions([txn_id])
            except TransactionalIdNotFoundError:
                break
            assert time.time() < deadline, "the transactional id never expired"
            time.sleep(0.2)
        admin.close()
        b.restart()
        admin = KafkaAdminClient(bootstrap_servers=b.bootstrap)
        with pytest.raises(TransactionalIdNotFoundError):
            admin.describe_transactions([txn_id])
        admin.close()
    finally:
        b.close()


def test_an_operator_aborts_an_open_transaction_in_a_partition(shared_broker):
    """kafka-transactions.sh abort (KIP-664): WriteTxnMarkers from the admin client, with the
    producer's id and epoch from DescribeProducers, ends the transaction in that partition; the
    last stable offset moves on and read_committed consumers never see its records."""
    from kafka import KafkaAdminClient
    from kafka import TopicPartition as KTopicPartition
    from kafka.admin import AbortTransactionSpec

    b = shared_broker
    topic = unique("txn-abort")
    p = producer(b, unique("tid"))
    p.begin_transaction()
    send(p, topic, [b"hanging"])
    plain = Producer({"bootstrap.servers": b.bootstrap})
    plain.produce(topic, value=b"after")
    plain.flush(30)
    tp = KTopicPartition(topic, 0)
    admin = KafkaAdminClient(bootstrap_servers=b.bootstrap)
    (s,) = admin.describe_producers([tp])[tp].active_producers
    assert s.current_transaction_start_offset == 0
    admin.abort_transaction(AbortTransactionSpec(tp, s.producer_id, s.producer_epoch, s.coordinator_epoch))
    (s,) = admin.describe_producers([tp])[tp].active_producers
    assert s.current_transaction_start_offset == -1, "no transaction open here any more"
    admin.close()
    assert [v for _, v in read_all(b, topic, "read_committed")] == [b"after"]


def test_add_partitions_v4_batches_and_verify_only_as_brokers_send_them(shared_broker):
    """AddPartitionsToTxn v4+ (KIP-890): a batch of transactions, each added or, with verify_only,
    asked whether its partitions are already in it; encoded by kafka-python's schema classes."""
    from kafka.protocol.producer.transaction import (
        AddPartitionsToTxnRequest,
        AddPartitionsToTxnResponse,
        EndTxnRequest,
        EndTxnResponse,
        InitProducerIdRequest,
        InitProducerIdResponse,
    )
    from kafka_wire import Connection, build
    from test_groups import make_topic

    topic = make_topic(shared_broker.bootstrap, 2, 0)
    conn = Connection(shared_broker.port)
    try:
        ids = [unique("tid"), unique("tid")]
        producers = []
        for tid in ids:
            r = conn.call(build(InitProducerIdRequest, 2, transactional_id=tid, transaction_timeout_ms=60000), InitProducerIdResponse)
            assert r.error_code == 0
            producers.append((r.producer_id, r.producer_epoch))

        def call(version, verify_only, parts_by_txn):
            txns = [
                {"transactional_id": tid, "producer_id": pid, "producer_epoch": epoch, "verify_only": verify_only, "topics": [{"name": t, "partitions": ps} for t, ps in parts]}
                for (tid, (pid, epoch)), parts in zip(zip(ids, producers), parts_by_txn)
            ]
            r = conn.call(build(AddPartitionsToTxnRequest, version, transactions=txns), AddPartitionsToTxnResponse)
            assert r.error_code == 0
            return {
                res.transactional_id: {(t.name, p.partition_index): p.partition_error_code for t in res.topic_results for p in t.results_by_partition}
                for res in r.results_by_transaction
            }

        # The first transaction takes partition 0; the second names an unknown topic: not attempted.
        added = call(4, False, [[(topic, [0])], [(topic, [1]), ("no-such-topic", [0])]])
        assert added[ids[0]] == {(topic, 0): 0}
        assert added[ids[1]] == {(topic, 1): 55, ("no-such-topic", 0): 3}  # OPERATION_NOT_ATTEMPTED, UNKNOWN_TOPIC_OR_PARTITION

        verified = call(5, True, [[(topic, [0, 1])], [(topic, [1])]])
        assert verified[ids[0]] == {(topic, 0): 0, (topic, 1): 48}  # partition 1 is not in it: INVALID_TXN_STATE
        assert verified[ids[1]] == {(topic, 1): 48}  # nothing was added to the second

        pid, epoch = producers[0]
        r = conn.call(build(EndTxnRequest, 2, transactional_id=ids[0], producer_id=pid, producer_epoch=epoch, committed=False), EndTxnResponse)
        assert r.error_code == 0
        verified = call(5, True, [[(topic, [0])], []])
        assert verified[ids[0]] == {(topic, 0): 48}  # ended: no longer in a transaction
    finally:
        conn.close()


def test_a_batch_at_another_epoch_cannot_take_over_an_open_transaction(shared_broker):
    """A transactional batch at a higher epoch than the open transaction's, from a client that
    knows only the producer id (DescribeProducers shows it), was appended unchecked and took the
    partition's epoch; the coordinator's commit marker at the real epoch was then refused as stale
    and the transaction never ended here (read_committed readers stopped for good). Now it is
    checked with the coordinator like a transaction's first batch, and refused."""
    from kafka import KafkaAdminClient
    from kafka import TopicPartition as KTopicPartition
    from kafka.record.default_records import DefaultRecordBatchBuilder

    from kafka_wire import Connection
    from test_idempotence import open_leader, produce

    b = shared_broker
    topic = unique("txn-epoch")
    p = producer(b, unique("tid"))
    p.begin_transaction()
    send(p, topic, [b"victim"])
    tp = KTopicPartition(topic, 0)
    admin = KafkaAdminClient(bootstrap_servers=b.bootstrap)
    (s,) = admin.describe_producers([tp])[tp].active_producers
    admin.close()
    forged = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=1, producer_id=s.producer_id,
                                       producer_epoch=s.producer_epoch + 5, base_sequence=0, batch_size=1 << 20)
    forged.append(0, timestamp=int(time.time() * 1000), key=None, value=b"forged", headers=[])
    conn: Connection = open_leader(b, topic)
    try:
        assert produce(conn, topic, bytes(forged.build()))[0] != 0, "the forged batch is refused"
    finally:
        conn.close()
    p.commit_transaction(30)
    plain = Producer({"bootstrap.servers": b.bootstrap})
    plain.produce(topic, value=b"after")
    plain.flush(30)
    assert [v for _, v in read_all(b, topic, "read_committed")] == [b"victim", b"after"]

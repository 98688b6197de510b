"""Produce requests pipelined on one connection (issue 17): once a produce request's batches are
queued, the broker reads the connection's next request while the first one's write completes, so
the batches of requests sent back to back share writes; answers still come in request order, acks=0
requests get none, the records keep the order they were sent in, and any other request waits for
the produces before it."""

import socket
import struct
import time
import warnings

from conftest import read_to_end, unique
from kafka_wire import build
from test_idempotence import open_leader
from test_read_cache import scrape, total

warnings.filterwarnings("ignore", category=DeprecationWarning)

from kafka.protocol.consumer.offsets import ListOffsetsRequest, ListOffsetsResponse  # noqa: E402
from kafka.protocol.producer.produce import ProduceRequest, ProduceResponse  # noqa: E402
from kafka.record.default_records import DefaultRecordBatchBuilder  # noqa: E402

RECORDS_PER_REQUEST = 10


def records(first):
    b = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=0, producer_id=-1, producer_epoch=-1, base_sequence=-1, batch_size=1 << 20)
    for i in range(RECORDS_PER_REQUEST):
        b.append(i, timestamp=1_700_000_000_000, key=None, value=b"v%06d" % (first + i), headers=[])
    return bytes(b.build())


def produce_frame(correlation, topic, acks, first):
    req = build(ProduceRequest, 7, transactional_id=None, acks=acks, timeout_ms=10_000, topic_data=[{"name": topic, "partition_data": [{"index": 0, "records": records(first)}]}])
    req.with_header(correlation_id=correlation, client_id="pipelining")
    return req.encode(header=True, framed=True)


def read_response(conn, response_class, version):
    size = struct.unpack(">i", conn.recv(4))[0]
    body = conn.recv(size)
    return struct.unpack(">i", body[:4])[0], response_class.decode(body, version=version, header=True)


def writes(broker):
    figures = scrape(broker.metrics_port)
    return total(figures, "weir_storage_group_commit_batches_count"), total(figures, "weir_storage_group_commit_batches_sum")


def test_pipelined_produces_share_writes_answer_in_order_and_keep_record_order(broker):
    topic = unique("pipelined")
    conn = open_leader(broker, topic)
    requests = 48
    # Every fourth request is acks=0: it gets no answer, and its records still land in order.
    acks = [0 if i % 4 == 3 else 1 for i in range(requests)]
    writes_before, batches_before = writes(broker)
    conn.sock.sendall(b"".join(produce_frame(i + 1, topic, acks[i], i * RECORDS_PER_REQUEST) for i in range(requests)))
    answered = [read_response(conn, ProduceResponse, 7) for i in range(requests) if acks[i]]
    assert [c for c, _ in answered] == [i + 1 for i in range(requests) if acks[i]], "answers in request order, none for acks=0"
    offsets = [(r.responses[0].partition_responses[0].error_code, r.responses[0].partition_responses[0].base_offset) for _, r in answered]
    assert offsets == [(0, i * RECORDS_PER_REQUEST) for i in range(requests) if acks[i]], "each request's batch right after the one before"
    # The endpoint reuses a scrape for a second: wait for one made after the writes.
    deadline = time.time() + 15
    while True:
        writes_after, batches_after = writes(broker)
        if batches_after - batches_before == requests:
            break
        assert time.time() < deadline, f"{batches_after - batches_before} of {requests} batches counted as written"
        time.sleep(0.2)
    writes_made = writes_after - writes_before
    # One request at a time, every batch would be a write of its own.
    assert writes_made <= requests / 3, f"{requests} batches sent back to back took {writes_made} writes"
    conn.close()
    got = read_to_end(broker.bootstrap, topic)
    assert [v for _, _, v in got] == [b"v%06d" % i for i in range(requests * RECORDS_PER_REQUEST)]


def test_a_request_after_pipelined_produces_sees_all_of_them(broker):
    topic = unique("pipelined-then-list")
    conn = open_leader(broker, topic)
    requests = 24
    frames = [produce_frame(i + 1, topic, 1, i * RECORDS_PER_REQUEST) for i in range(requests)]
    latest = build(ListOffsetsRequest, 1, replica_id=-1, topics=[{"name": topic, "partitions": [{"partition_index": 0, "timestamp": -1}]}])
    latest.with_header(correlation_id=requests + 1, client_id="pipelining")
    conn.sock.sendall(b"".join(frames) + latest.encode(header=True, framed=True))
    for i in range(requests):
        correlation, r = read_response(conn, ProduceResponse, 7)
        assert (correlation, r.responses[0].partition_responses[0].error_code) == (i + 1, 0)
    correlation, r = read_response(conn, ListOffsetsResponse, 1)
    assert correlation == requests + 1
    assert (r.topics[0].partitions[0].error_code, r.topics[0].partitions[0].offset) == (0, requests * RECORDS_PER_REQUEST)
    conn.close()


def test_produces_sent_before_the_client_closes_its_side_are_answered(broker):
    topic = unique("pipelined-half-close")
    conn = open_leader(broker, topic)
    requests = 8
    conn.sock.sendall(b"".join(produce_frame(i + 1, topic, 1, i * RECORDS_PER_REQUEST) for i in range(requests)))
    conn.sock.shutdown(socket.SHUT_WR)
    for i in range(requests):
        correlation, r = read_response(conn, ProduceResponse, 7)
        assert (correlation, r.responses[0].partition_responses[0].error_code) == (i + 1, 0)
    conn.close()


def test_a_failed_acks0_produce_closes_its_connection_as_kafka_does(broker):
    """Kafka closes the connection when an acks=0 produce fails in a partition (the producer can be
    told no other way, and reconnecting makes it refresh its metadata); one that succeeds keeps it."""
    topic = unique("acks0")
    conn = open_leader(broker, topic)
    conn.sock.sendall(produce_frame(1, topic, 0, 0) + produce_frame(2, topic, 1, RECORDS_PER_REQUEST))
    correlation, r = read_response(conn, ProduceResponse, 7)
    p = r.responses[0].partition_responses[0]
    assert (correlation, p.error_code, p.base_offset) == (2, 0, RECORDS_PER_REQUEST), "open after a good acks=0 produce"
    bad = build(ProduceRequest, 7, transactional_id=None, acks=0, timeout_ms=10_000,
                topic_data=[{"name": topic, "partition_data": [{"index": 7, "records": records(0)}]}])
    bad.with_header(correlation_id=3, client_id="pipelining")
    conn.sock.sendall(bad.encode(header=True, framed=True))
    conn.sock.settimeout(15)
    try:
        closed = conn.sock.recv(1) == b""
    except ConnectionResetError:
        closed = True
    assert closed, "an acks=0 produce to a partition the topic does not have closes the connection"
    conn.close()

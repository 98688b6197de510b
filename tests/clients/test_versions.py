"""Old request versions that clients in use still send (issue 10, item 5), encoded and decoded by
kafka-python's protocol classes (generated from Kafka's own JSON schemas), not by us: Sarama's
OffsetCommit v1, Metadata v0, Burrow's ListOffsets v0, DescribeConfigs v0, CreateTopics v0-1,
DeleteTopics v0; Produce v0-2 and Fetch v0-3 are answered UNSUPPORTED_VERSION, the connection
stays up; zstd needs Produce v7; internal topic names are reserved."""

import struct
import warnings

import pytest
from confluent_kafka import Consumer, TopicPartition

from conftest import unique
from kafka_wire import Connection, build
from test_groups import make_topic

warnings.filterwarnings("ignore", category=DeprecationWarning)

from kafka.protocol.admin.configs import DescribeConfigsRequest, DescribeConfigsResponse  # noqa: E402
from kafka.protocol.admin.topics import (  # noqa: E402
    CreateTopicsRequest,
    CreateTopicsResponse,
    DeleteTopicsRequest,
    DeleteTopicsResponse,
)
from kafka.protocol.consumer.fetch import FetchRequest, FetchResponse  # noqa: E402
from kafka.protocol.consumer.group import OffsetCommitRequest, OffsetCommitResponse  # noqa: E402
from kafka.protocol.consumer.offsets import ListOffsetsRequest, ListOffsetsResponse  # noqa: E402
from kafka.protocol.metadata import MetadataRequest, MetadataResponse  # noqa: E402
from kafka.protocol.producer import ProduceRequest, ProduceResponse  # noqa: E402

UNSUPPORTED_VERSION = 35
UNSUPPORTED_COMPRESSION_TYPE = 76


@pytest.fixture
def conn(shared_broker):
    c = Connection(shared_broker.port)
    yield c
    c.close()


def test_metadata_v0_lists_every_topic_for_an_empty_list(shared_broker, conn):
    topic = make_topic(shared_broker.bootstrap, 1, 1)
    r = conn.call(build(MetadataRequest, 0, topics=[]), MetadataResponse)
    assert len(r.brokers) == 2
    assert topic in [t.name for t in r.topics]


@pytest.mark.parametrize("version", [0, 1])
def test_offset_commit_v0_and_v1_as_sarama_sends_them(shared_broker, conn, version):
    topic = make_topic(shared_broker.bootstrap, 2, 1)
    group = unique("g")
    fields = {"group_id": group, "topics": [{"name": topic, "partitions": [{"partition_index": 1, "committed_offset": 17, "committed_metadata": "m"}]}]}
    if version == 1:
        fields.update(generation_id_or_member_epoch=-1, member_id="")
        fields["topics"][0]["partitions"][0]["commit_timestamp"] = -1
    r = conn.call(build(OffsetCommitRequest, version, **fields), OffsetCommitResponse)
    assert [(p.partition_index, p.error_code) for p in r.topics[0].partitions] == [(1, 0)]
    c = Consumer({"bootstrap.servers": shared_broker.bootstrap, "group.id": group})
    committed = c.committed([TopicPartition(topic, 1)], timeout=10)
    c.close()
    assert committed[0].offset == 17


def test_list_offsets_v0_as_burrow_sends_it(shared_broker, conn):
    topic = make_topic(shared_broker.bootstrap, 1, 25)
    parts = lambda ts: [{"partition_index": 0, "timestamp": ts, "max_num_offsets": 1}]  # noqa: E731
    latest = conn.call(build(ListOffsetsRequest, 0, replica_id=-1, topics=[{"name": topic, "partitions": parts(-1)}]), ListOffsetsResponse)
    earliest = conn.call(build(ListOffsetsRequest, 0, replica_id=-1, topics=[{"name": topic, "partitions": parts(-2)}]), ListOffsetsResponse)
    assert latest.topics[0].partitions[0].error_code == 0
    assert list(latest.topics[0].partitions[0].old_style_offsets) == [25]
    assert list(earliest.topics[0].partitions[0].old_style_offsets) == [0]


def test_describe_configs_v0(shared_broker, conn):
    topic = make_topic(shared_broker.bootstrap, 1, 1)
    req = build(DescribeConfigsRequest, 0, resources=[{"resource_type": 2, "resource_name": topic, "configuration_keys": ["retention.ms"]}])
    r = conn.call(req, DescribeConfigsResponse)
    res = r.results[0]
    assert res.error_code == 0
    assert [(c.name, c.value, c.is_default) for c in res.configs] == [("retention.ms", "604800000", True)]


@pytest.mark.parametrize("version", [0, 1])
def test_create_topics_v0_v1_and_delete_topics_v0(shared_broker, conn, version):
    name = unique("old")
    topic = {"name": name, "num_partitions": 3, "replication_factor": 1, "assignments": [], "configs": []}
    fields = {"topics": [topic], "timeout_ms": 10000}
    if version == 1:
        fields["validate_only"] = False
    r = conn.call(build(CreateTopicsRequest, version, **fields), CreateTopicsResponse)
    assert [(t.name, t.error_code) for t in r.topics] == [(name, 0)]
    again = conn.call(build(CreateTopicsRequest, version, **fields), CreateTopicsResponse)
    assert again.topics[0].error_code == 36, "TOPIC_ALREADY_EXISTS"
    meta = conn.call(build(MetadataRequest, 0, topics=[{"name": name}]), MetadataResponse)
    assert len(meta.topics[0].partitions) == 3
    gone = conn.call(build(DeleteTopicsRequest, 0, topic_names=[name], timeout_ms=10000), DeleteTopicsResponse)
    assert [(x.name, x.error_code) for x in gone.responses] == [(name, 0)]


def test_record_format_v0_v1_versions_get_unsupported_version_and_the_connection_stays(shared_broker, conn):
    topic = make_topic(shared_broker.bootstrap, 1, 3)
    produce = build(ProduceRequest, 2, acks=1, timeout_ms=1000, topic_data=[{"name": topic, "partition_data": [{"index": 0, "records": b"\0" * 40}]}])
    r = conn.call(produce, ProduceResponse)
    assert [(p.index, p.error_code) for p in r.responses[0].partition_responses] == [(0, UNSUPPORTED_VERSION)]
    fetch = build(
        FetchRequest,
        3,
        replica_id=-1, max_wait_ms=100, min_bytes=1, max_bytes=1 << 20,
        topics=[{"topic": topic, "partitions": [{"partition": 0, "fetch_offset": 0, "partition_max_bytes": 1 << 20}]}],
    )
    r = conn.call(fetch, FetchResponse)
    assert [(p.partition_index, p.error_code) for p in r.responses[0].partitions] == [(0, UNSUPPORTED_VERSION)]
    # The same connection still serves supported versions.
    assert topic in [t.name for t in conn.call(build(MetadataRequest, 0, topics=[]), MetadataResponse).topics]


def crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


# One record of 6 bytes: no key, no value, no headers.
ONE_RECORD = b"\x0c\x00\x00\x00\x01\x01\x00"


def zstd_frame(data):
    """`data` as a zstd frame of one raw (stored) block: what a zstd reader inflates, no encoder needed."""
    header = b"\x28\xb5\x2f\xfd" + bytes([0x20, len(data)])  # single segment, 1-byte content size
    return header + ((len(data) << 3) | 1).to_bytes(3, "little") + data  # last block, raw


def batch_with_codec(codec):
    """A well-formed v2 batch of one record, compressed as `codec` (0 none, 4 zstd) says."""
    payload = {0: ONE_RECORD, 4: zstd_frame(ONE_RECORD)}[codec]
    after_crc = struct.pack(">hiqqqhii", codec, 0, 0, 0, -1, -1, -1, 1) + payload
    crc = crc32c(after_crc)
    body = struct.pack(">ibI", -1, 2, crc) + after_crc
    return struct.pack(">qi", 0, len(body)) + body


@pytest.mark.parametrize("version,expected", [(6, UNSUPPORTED_COMPRESSION_TYPE), (7, 0)])
def test_zstd_needs_produce_v7(shared_broker, conn, version, expected):
    topic = make_topic(shared_broker.bootstrap, 1, 0)
    records = batch_with_codec(4)
    req = build(ProduceRequest, version, transactional_id=None, acks=1, timeout_ms=5000, topic_data=[{"name": topic, "partition_data": [{"index": 0, "records": records}]}])
    r = conn.call(req, ProduceResponse)
    assert r.responses[0].partition_responses[0].error_code == expected


@pytest.mark.parametrize("name", ["__consumer_offsets", "__transaction_state"])
def test_internal_topic_names_are_never_auto_created(shared_broker, conn, name):
    r = conn.call(build(MetadataRequest, 1, topics=[{"name": name}]), MetadataResponse)
    assert r.topics[0].error_code == 3, "UNKNOWN_TOPIC_OR_PARTITION, not an ordinary empty topic"
    listed = conn.call(build(MetadataRequest, 1, topics=None), MetadataResponse)
    assert name not in [t.name for t in listed.topics]
    topic = {"name": name, "num_partitions": 1, "replication_factor": 1, "assignments": [], "configs": []}
    created = conn.call(build(CreateTopicsRequest, 2, topics=[topic], timeout_ms=10000, validate_only=False), CreateTopicsResponse)
    assert created.topics[0].error_code == 17, "INVALID_TOPIC_EXCEPTION: reserved"


def test_newer_produce_and_list_offsets_versions(shared_broker, conn):
    """Produce v10-11 (Kafka 3.9's newest with topic names) and ListOffsets v8-9 (-4 earliest
    local, -5 latest tiered)."""
    topic = make_topic(shared_broker.bootstrap, 1, 0)
    leader_conn = Connection(shared_broker.port + leader_of(shared_broker.bootstrap, topic))
    try:
        for version in (10, 11):
            req = build(ProduceRequest, version, transactional_id=None, acks=1, timeout_ms=5000,
                        topic_data=[{"name": topic, "partition_data": [{"index": 0, "records": batch_with_codec(0)}]}])
            r = leader_conn.call(req, ProduceResponse)
            assert r.responses[0].partition_responses[0].error_code == 0
        parts = lambda ts: [{"partition_index": 0, "timestamp": ts, "current_leader_epoch": -1}]  # noqa: E731
        for version, ts, expected in ((8, -4, 0), (9, -5, -1), (9, -1, 2)):
            req = build(ListOffsetsRequest, version, replica_id=-1, isolation_level=0, topics=[{"name": topic, "partitions": parts(ts)}])
            p = leader_conn.call(req, ListOffsetsResponse).topics[0].partitions[0]
            assert (p.error_code, p.offset) == (0, expected), (version, ts)
    finally:
        leader_conn.close()


def leader_of(bootstrap, topic):
    from confluent_kafka.admin import AdminClient

    return AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=10).topics[topic].partitions[0].leader


def test_fetch_v13_to_v16_name_topics_by_id(shared_broker):
    import uuid

    topic = make_topic(shared_broker.bootstrap, 1, 7)
    conn = Connection(shared_broker.port + leader_of(shared_broker.bootstrap, topic))
    try:
        meta = conn.call(build(MetadataRequest, 12, topics=[{"name": topic}], allow_auto_topic_creation=False,
                               include_topic_authorized_operations=False), MetadataResponse)
        topic_id = meta.topics[0].topic_id
        assert topic_id != uuid.UUID(int=0)
        for version in (13, 16):
            for tid, expected in ((topic_id, 0), (uuid.UUID(int=12345), 100)):  # 100: UNKNOWN_TOPIC_ID
                req = build(
                    FetchRequest,
                    version,
                    replica_id=-1, max_wait_ms=10, min_bytes=0, max_bytes=1 << 20, isolation_level=0, session_id=0, session_epoch=-1,
                    topics=[{"topic_id": tid, "partitions": [{"partition": 0, "fetch_offset": 0, "partition_max_bytes": 1 << 20,
                                                              "current_leader_epoch": -1, "log_start_offset": -1}]}],
                    forgotten_topics_data=[], rack_id="",
                )
                r = conn.call(req, FetchResponse)
                (t,) = r.responses
                p = t.partitions[0]
                assert (t.topic_id, p.error_code) == (tid, expected), (version, tid)
                if expected == 0:
                    assert p.high_watermark == 7 and len(bytes(p.records)) > 0
    finally:
        conn.close()

"""Configs as Kafka names them (issue 10, item 3), through confluent-kafka's admin client: every
topic config a Kafka client may send, described with sources and synonyms; compression.type
recompresses; LogAppendTime stamps; timestamp bounds refuse; APPEND/SUBTRACT on list configs;
broker configs described and altered at runtime, persisted across a restart; zstd topics refused to
Fetch < v10."""

import time
import warnings

import pytest
from confluent_kafka import TIMESTAMP_LOG_APPEND_TIME, Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, ConfigSource, NewTopic

from conftest import Broker, unique
from test_robustness import produce_consume_ok
from kafka_wire import Connection, build

warnings.filterwarnings("ignore", category=DeprecationWarning)

from kafka.protocol.consumer.fetch import FetchRequest, FetchResponse  # noqa: E402

UNSUPPORTED_COMPRESSION_TYPE = 76

# What Kafka's own tools and clients send: Kafka's defaults, deprecated names included.
KAFKA_TOPIC_DEFAULTS = {
    "cleanup.policy": "delete",
    "compression.type": "producer",
    "delete.retention.ms": "86400000",
    "file.delete.delay.ms": "60000",
    "flush.messages": "9223372036854775807",
    "flush.ms": "9223372036854775807",
    "follower.replication.throttled.replicas": "",
    "index.interval.bytes": "4096",
    "leader.replication.throttled.replicas": "",
    "max.compaction.lag.ms": "9223372036854775807",
    "max.message.bytes": "1048588",
    "message.downconversion.enable": "true",
    "message.format.version": "3.0-IV1",
    "message.timestamp.difference.max.ms": "9223372036854775807",
    "message.timestamp.type": "CreateTime",
    "min.cleanable.dirty.ratio": "0.5",
    "min.compaction.lag.ms": "0",
    "min.insync.replicas": "1",
    "preallocate": "false",
    "retention.bytes": "-1",
    "retention.ms": "604800000",
    "segment.bytes": "1073741824",
    "segment.index.bytes": "10485760",
    "segment.jitter.ms": "0",
    "segment.ms": "604800000",
    "unclean.leader.election.enable": "false",
}


def create(admin, partitions=1, **configs):
    topic = unique("cfg")
    admin.create_topics([NewTopic(topic, partitions, 1, config=configs)])[topic].result(10)
    return topic


def described(admin, resource):
    return admin.describe_configs([resource])[resource].result(10)


def consume_all(bootstrap, topic, n):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": unique("g"), "auto.offset.reset": "earliest"})
    c.assign([TopicPartition(topic, 0, 0)])
    out = []
    deadline = time.time() + 30
    while len(out) < n and time.time() < deadline:
        m = c.poll(0.2)
        if m is not None and not m.error():
            out.append(m)
    c.close()
    return out


def test_every_kafka_topic_config_is_accepted_and_described(shared_broker):
    admin = AdminClient({"bootstrap.servers": shared_broker.bootstrap})
    topic = create(admin, **{**KAFKA_TOPIC_DEFAULTS, "retention.ms": "3600000"})
    configs = described(admin, ConfigResource(ConfigResource.Type.TOPIC, topic))
    missing = set(KAFKA_TOPIC_DEFAULTS) - set(configs)
    assert not missing, f"not described: {missing}"
    retention = configs["retention.ms"]
    assert (retention.value, retention.source) == ("3600000", ConfigSource.DYNAMIC_TOPIC_CONFIG.value)
    synonyms = [(s.name, s.source) for s in retention.synonyms.values()]
    assert synonyms[0] == ("retention.ms", ConfigSource.DYNAMIC_TOPIC_CONFIG.value)
    assert synonyms[-1] == ("log.retention.ms", ConfigSource.DEFAULT_CONFIG.value)
    assert configs["compression.gzip.level"].source == ConfigSource.DEFAULT_CONFIG.value, "a config the client did not set"
    with pytest.raises(Exception) as refused:
        create(admin, **{"compression.type": "brotli"})
    assert "INVALID_CONFIG" in str(refused.value)


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd", "uncompressed"])
def test_compression_type_recompresses_what_producers_send(shared_broker, codec):
    admin = AdminClient({"bootstrap.servers": shared_broker.bootstrap})
    topic = create(admin, **{"compression.type": codec})
    sent = "gzip" if codec == "uncompressed" else "none"
    p = Producer({"bootstrap.servers": shared_broker.bootstrap, "compression.type": sent, "linger.ms": 50})
    for i in range(200):
        p.produce(topic, value=f"value-{i}".encode() * 10, partition=0)
    assert p.flush(30) == 0
    got = consume_all(shared_broker.bootstrap, topic, 200)
    assert [m.value() for m in got] == [f"value-{i}".encode() * 10 for i in range(200)]
    # The stored batches carry the topic's codec: read them raw from the partition's leader.
    leader = admin.list_topics(topic, timeout=10).topics[topic].partitions[0].leader
    conn = Connection(shared_broker.port + leader)
    try:
        req = build(
            FetchRequest,
            11,
            replica_id=-1, max_wait_ms=100, min_bytes=1, max_bytes=1 << 20, isolation_level=0, session_id=0, session_epoch=-1,
            topics=[{"topic": topic, "partitions": [{"partition": 0, "fetch_offset": 0, "partition_max_bytes": 1 << 20}]}],
        )
        raw = bytes(conn.call(req, FetchResponse).responses[0].partitions[0].records)
    finally:
        conn.close()
    assert len(raw) > 61, "records came back"
    attributes = int.from_bytes(raw[21:23], "big")
    expected = {"uncompressed": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}[codec]
    assert attributes & 7 == expected


def test_log_append_time_stamps_records(shared_broker):
    admin = AdminClient({"bootstrap.servers": shared_broker.bootstrap})
    topic = create(admin, **{"message.timestamp.type": "LogAppendTime"})
    p = Producer({"bootstrap.servers": shared_broker.bootstrap})
    before = int(time.time() * 1000)
    p.produce(topic, value=b"x", partition=0, timestamp=1_000_000)
    assert p.flush(30) == 0
    after = int(time.time() * 1000)
    (m,) = consume_all(shared_broker.bootstrap, topic, 1)
    kind, ts = m.timestamp()
    assert kind == TIMESTAMP_LOG_APPEND_TIME
    assert before - 1000 <= ts <= after + 1000, "the broker's clock, not the producer's 1,000,000"


def test_create_times_beyond_the_bounds_are_refused(shared_broker):
    admin = AdminClient({"bootstrap.servers": shared_broker.bootstrap})
    topic = create(admin, **{"message.timestamp.before.max.ms": "60000"})
    errors = []
    p = Producer({"bootstrap.servers": shared_broker.bootstrap, "retries": 0})
    p.produce(topic, value=b"old", partition=0, timestamp=int(time.time() * 1000) - 3_600_000, on_delivery=lambda e, m: errors.append(e))
    assert p.flush(30) == 0
    p.produce(topic, value=b"now", partition=0, on_delivery=lambda e, m: errors.append(e))
    assert p.flush(30) == 0
    assert errors[0] is not None and errors[0].code() == KafkaError.INVALID_TIMESTAMP
    assert errors[1] is None


def test_append_and_subtract_on_list_configs(shared_broker):
    admin = AdminClient({"bootstrap.servers": shared_broker.bootstrap})
    topic = create(admin)
    res = ConfigResource(ConfigResource.Type.TOPIC, topic)
    name = "leader.replication.throttled.replicas"

    def alter(op, value, config=name):
        r = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[ConfigEntry(config, value, incremental_operation=op)])
        admin.incremental_alter_configs([r])[r].result(10)

    alter(AlterConfigOpType.APPEND, "0:0,1:0")
    alter(AlterConfigOpType.APPEND, "1:0,2:0")
    assert described(admin, res)[name].value == "0:0,1:0,2:0"
    alter(AlterConfigOpType.SUBTRACT, "1:0")
    assert described(admin, res)[name].value == "0:0,2:0"
    with pytest.raises(Exception) as refused:
        alter(AlterConfigOpType.APPEND, "5", config="retention.ms")
    assert "INVALID_REQUEST" in str(refused.value) or "append" in str(refused.value).lower()


def test_broker_configs_are_described_and_altered_at_runtime(broker):
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    topic = create(admin)
    brk = ConfigResource(ConfigResource.Type.BROKER, "0")
    configs = described(admin, brk)
    for name in ["log.retention.ms", "num.partitions", "auto.create.topics.enable", "log.segment.bytes", "compression.type"]:
        assert name in configs, name
    assert configs["num.partitions"].is_read_only
    assert not configs["log.retention.ms"].is_read_only
    change = ConfigResource(
        ConfigResource.Type.BROKER, "0", incremental_configs=[ConfigEntry("log.retention.ms", "3600000", incremental_operation=AlterConfigOpType.SET)]
    )
    admin.incremental_alter_configs([change])[change].result(10)
    tres = ConfigResource(ConfigResource.Type.TOPIC, topic)
    retention = described(admin, tres)["retention.ms"]
    assert (retention.value, retention.source) == ("3600000", ConfigSource.DYNAMIC_BROKER_CONFIG.value)
    fixed = ConfigResource(
        ConfigResource.Type.BROKER, "0", incremental_configs=[ConfigEntry("num.partitions", "8", incremental_operation=AlterConfigOpType.SET)]
    )
    with pytest.raises(Exception):
        admin.incremental_alter_configs([fixed])[fixed].result(10)
    broker.restart()
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    assert described(admin, tres)["retention.ms"].value == "3600000", "dynamic broker configs survive a restart"
    assert described(admin, ConfigResource(ConfigResource.Type.BROKER, "1"))["log.retention.ms"].value == "3600000", "every shard"
    # The cluster default (the empty name) is the dynamic configs alone, as Kafka's.
    from kafka.protocol.admin import DescribeConfigsRequest, DescribeConfigsResponse

    conn = Connection(broker.port)
    try:
        req = build(DescribeConfigsRequest, 4, resources=[{"resource_type": 4, "resource_name": "", "configuration_keys": None}], include_synonyms=False, include_documentation=False)
        [res] = conn.call(req, DescribeConfigsResponse).results
        assert [(c.name, c.value, c.config_source, c.documentation) for c in res.configs] == [("log.retention.ms", "3600000", 3, None)]
    finally:
        conn.close()


def test_zstd_topics_are_refused_to_fetch_before_v10(shared_broker):
    admin = AdminClient({"bootstrap.servers": shared_broker.bootstrap})
    topic = create(admin, **{"compression.type": "zstd"})
    leader = admin.list_topics(topic, timeout=10).topics[topic].partitions[0].leader
    conn = Connection(shared_broker.port + leader)
    try:
        codes = {}
        for version in (9, 10):
            req = build(
                FetchRequest,
                version,
                replica_id=-1, max_wait_ms=10, min_bytes=0, max_bytes=1 << 20, isolation_level=0, session_id=0, session_epoch=-1,
                topics=[{"topic": topic, "partitions": [{"partition": 0, "fetch_offset": 0, "partition_max_bytes": 1 << 20}]}],
            )
            codes[version] = conn.call(req, FetchResponse).responses[0].partitions[0].error_code
    finally:
        conn.close()
    assert codes == {9: UNSUPPORTED_COMPRESSION_TYPE, 10: 0}


def test_broker_loggers_are_described_and_their_levels_changed_at_runtime():
    """kafka-configs --entity-type broker-loggers: DescribeConfigs and IncrementalAlterConfigs on
    BROKER_LOGGER (8), checked as Kafka's RuntimeLoggerManager; a level set takes effect at once."""
    from kafka.protocol.admin import DescribeConfigsRequest, DescribeConfigsResponse, IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse

    b = Broker(shards=1)
    conn = Connection(b.port)
    try:

        def describe():
            r = conn.call(build(DescribeConfigsRequest, 4, resources=[{"resource_type": 8, "resource_name": "0", "configuration_keys": None}], include_synonyms=False, include_documentation=False), DescribeConfigsResponse)
            [res] = r.results
            assert res.error_code == 0, res.error_message
            assert all(c.config_source == 6 for c in res.configs), "DYNAMIC_BROKER_LOGGER_CONFIG"
            return {c.name: c.value for c in res.configs}

        def alter(*configs, validate_only=False, name="0"):
            r = conn.call(build(IncrementalAlterConfigsRequest, 1, resources=[{"resource_type": 8, "resource_name": name, "configs": [{"name": n, "config_operation": op, "value": v} for n, op, v in configs]}], validate_only=validate_only), IncrementalAlterConfigsResponse)
            return r.responses[0].error_code

        levels = describe()
        root = levels["root"]
        assert root in ("TRACE", "DEBUG", "INFO", "WARN", "ERROR") and levels["weir::broker"] == root
        before = open(b.log_path).read().count("DEBUG")
        assert alter(("weir::broker", 0, "DEBUG"), validate_only=True) == 0
        assert describe()["weir::broker"] == root, "validate_only changes nothing"
        assert alter(("weir::broker", 0, "DEBUG")) == 0
        levels = describe()
        assert (levels["weir::broker"], levels["weir::storage"], levels["root"]) == ("DEBUG", root, root), levels
        assert produce_consume_ok(b.bootstrap)
        assert open(b.log_path).read().count("DEBUG") > before, "the broker logs at debug at once"
        assert alter(("weir::broker", 1, None)) == 0
        assert describe()["weir::broker"] == root
        # Kafka's refusals.
        assert alter(("root", 1, None)) == 42
        assert alter(("kafka.server", 0, "DEBUG")) == 40
        assert alter(("weir::broker", 0, "LOUD")) == 40
        assert alter(("weir::broker", 2, "DEBUG")) == 42
        assert alter(("weir::broker", 0, "DEBUG"), name="77") == 42
    finally:
        conn.close()
        b.close()

"""Topic admin requests checked as Kafka's controller checks them, through kafka-python's protocol
classes (raw requests: the high-level clients key by name and never repeat one): topics by id
(Metadata v12, DeleteTopics v6), names repeated in a request, null config values, the configs a
CreateTopics answers with, names that collide in '.' against '_', and DeleteRecords on a compacted
topic."""

import uuid
import warnings

from confluent_kafka import Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import unique
from kafka_wire import Connection, build

warnings.filterwarnings("ignore", category=DeprecationWarning)

from kafka.protocol.admin import (  # noqa: E402
    AlterConfigsRequest,
    AlterConfigsResponse,
    CreatePartitionsRequest,
    CreatePartitionsResponse,
    CreateTopicsRequest,
    CreateTopicsResponse,
    DeleteTopicsRequest,
    DeleteTopicsResponse,
    IncrementalAlterConfigsRequest,
    IncrementalAlterConfigsResponse,
)
from kafka.protocol.metadata import MetadataRequest, MetadataResponse  # noqa: E402

INVALID_TOPIC_EXCEPTION = 17
INVALID_CONFIG = 40
INVALID_REQUEST = 42
POLICY_VIOLATION = 44
UNKNOWN_TOPIC_ID = 100
TOPIC = 2


def create(conn, *topics, validate_only=False, version=7):
    """CreateTopics of (name, [(config, value)]) pairs: the response's topics."""
    entries = [
        {"name": name, "num_partitions": 2, "replication_factor": 1, "assignments": [], "configs": [{"name": k, "value": v} for k, v in configs]}
        for name, configs in topics
    ]
    return conn.call(build(CreateTopicsRequest, version, topics=entries, timeout_ms=10_000, validate_only=validate_only), CreateTopicsResponse).topics


def names(conn):
    md = conn.call(build(MetadataRequest, 12, topics=None, allow_auto_topic_creation=False, include_topic_authorized_operations=False), MetadataResponse)
    return {t.name: t.topic_id for t in md.topics}


def test_topics_by_id_are_described_and_deleted_and_unknown_ids_answered(shared_broker):
    conn = Connection(shared_broker.port)
    try:
        name = unique("byid")
        [created] = create(conn, (name, []))
        assert created.error_code == 0
        topic_id = created.topic_id
        assert topic_id not in (None, uuid.UUID(int=0))
        stranger = uuid.uuid4()
        md = conn.call(
            build(MetadataRequest, 12, topics=[{"topic_id": topic_id, "name": None}, {"topic_id": stranger, "name": None}], allow_auto_topic_creation=False, include_topic_authorized_operations=False),
            MetadataResponse,
        )
        by_id = {t.topic_id: t for t in md.topics}
        assert (by_id[topic_id].error_code, by_id[topic_id].name, len(by_id[topic_id].partitions)) == (0, name, 2)
        assert (by_id[stranger].error_code, by_id[stranger].name) == (UNKNOWN_TOPIC_ID, None)
        deleted = conn.call(build(DeleteTopicsRequest, 6, topics=[{"name": None, "topic_id": topic_id}, {"name": None, "topic_id": stranger}], timeout_ms=10_000), DeleteTopicsResponse)
        results = {r.topic_id: r for r in deleted.responses}
        assert (results[topic_id].error_code, results[topic_id].name) == (0, name)
        assert results[stranger].error_code == UNKNOWN_TOPIC_ID
        assert name not in names(conn)
        # Both a name and an id, or neither: INVALID_REQUEST.
        other = unique("byid")
        create(conn, (other, []))
        bad = conn.call(build(DeleteTopicsRequest, 6, topics=[{"name": other, "topic_id": stranger}], timeout_ms=10_000), DeleteTopicsResponse)
        assert [r.error_code for r in bad.responses] == [INVALID_REQUEST]
        assert other in names(conn)
        # The same topic by name and by id: neither deletes it.
        other_id = names(conn)[other]
        both = conn.call(build(DeleteTopicsRequest, 6, topics=[{"name": None, "topic_id": other_id}, {"name": other, "topic_id": None}], timeout_ms=10_000), DeleteTopicsResponse)
        assert [r.error_code for r in both.responses] == [INVALID_REQUEST]
        assert other in names(conn)
        # An existing topic is TOPIC_ALREADY_EXISTS before anything else the entry gets wrong.
        entry = {"name": other, "num_partitions": 1, "replication_factor": 99, "assignments": [], "configs": [{"name": "retention.ms", "value": None}]}
        [exists] = conn.call(build(CreateTopicsRequest, 7, topics=[entry], timeout_ms=10_000, validate_only=False), CreateTopicsResponse).topics
        assert exists.error_code == 36
    finally:
        conn.close()


def test_a_name_twice_in_one_request_is_refused_and_nothing_done_for_it(shared_broker):
    conn = Connection(shared_broker.port)
    try:
        twice, once = unique("twice"), unique("once")
        answers = create(conn, (twice, []), (once, []), (twice, []))
        assert {(t.name, t.error_code) for t in answers} == {(twice, INVALID_REQUEST), (once, 0)}
        assert len(answers) == 2, "one answer for the repeated name"
        assert twice not in names(conn) and once in names(conn)
        grow = [{"name": once, "count": 4, "assignments": None}, {"name": once, "count": 3, "assignments": None}]
        r = conn.call(build(CreatePartitionsRequest, 1, topics=grow, timeout_ms=10_000, validate_only=False), CreatePartitionsResponse)
        assert [x.error_code for x in r.results] == [INVALID_REQUEST]
        # Configs: a resource twice, a key twice, a null value.
        res = lambda configs: {"resource_type": TOPIC, "resource_name": once, "configs": configs}  # noqa: E731
        inc = lambda name, value: {"name": name, "config_operation": 0, "value": value}  # noqa: E731
        r = conn.call(build(IncrementalAlterConfigsRequest, 1, resources=[res([inc("retention.ms", "1000")]), res([inc("segment.ms", "100000")])], validate_only=False), IncrementalAlterConfigsResponse)
        assert [x.error_code for x in r.responses] == [INVALID_REQUEST, INVALID_REQUEST]
        r = conn.call(build(IncrementalAlterConfigsRequest, 1, resources=[res([inc("retention.ms", "1"), inc("retention.ms", "2")])], validate_only=False), IncrementalAlterConfigsResponse)
        assert [x.error_code for x in r.responses] == [INVALID_REQUEST]
        r = conn.call(build(AlterConfigsRequest, 1, resources=[res([{"name": "retention.ms", "value": None}])], validate_only=False), AlterConfigsResponse)
        assert [(x.error_code, x.error_message) for x in r.responses] == [(INVALID_REQUEST, "Null value not supported for : retention.ms")]
        [null] = create(conn, (unique("nullcfg"), [("retention.ms", None)]))
        assert null.error_code == INVALID_CONFIG
        deleted = conn.call(build(DeleteTopicsRequest, 5, topic_names=[once, once], timeout_ms=10_000), DeleteTopicsResponse)
        assert [x.error_code for x in deleted.responses] == [INVALID_REQUEST]
        assert once in names(conn), "not deleted"
    finally:
        conn.close()


def test_create_topics_answers_every_effective_config_and_refuses_colliding_names(shared_broker):
    conn = Connection(shared_broker.port)
    try:
        name = unique("cfg") + ".dotted"
        for validate_only in (True, False):
            [t] = create(conn, (name, [("retention.ms", "1234")]), validate_only=validate_only)
            assert t.error_code == 0, t.error_message
            configs = {c.name: (c.value, c.config_source) for c in t.configs}
            assert configs["retention.ms"] == ("1234", 1), "the topic's own config"
            assert configs["cleanup.policy"] == ("delete", 5), "a default"
            assert len(configs) > 20
        [again] = create(conn, (name, []), validate_only=True)
        assert again.error_code == 36, "validate-only sees the topic exists"
        for validate_only in (True, False):
            [clash] = create(conn, (name.replace(".", "_"), []), validate_only=validate_only)
            assert clash.error_code == INVALID_TOPIC_EXCEPTION
            assert "collides with existing topic" in clash.error_message
    finally:
        conn.close()


def test_delete_records_on_a_compacted_topic_is_a_policy_violation(shared_broker):
    admin = AdminClient({"bootstrap.servers": shared_broker.bootstrap})
    compacted, both = unique("compact"), unique("compact-delete")
    futures = admin.create_topics([NewTopic(compacted, 1, config={"cleanup.policy": "compact"}), NewTopic(both, 1, config={"cleanup.policy": "compact,delete"})])
    for f in futures.values():
        f.result(10)
    p = Producer({"bootstrap.servers": shared_broker.bootstrap})
    for topic in (compacted, both):
        for i in range(5):
            p.produce(topic, key=b"k%d" % i, value=b"v")
    assert p.flush(15) == 0
    refused = admin.delete_records([TopicPartition(compacted, 0, 2)])[TopicPartition(compacted, 0, 2)]
    try:
        refused.result(10)
        raise AssertionError("records of a compact-only topic were deleted")
    except Exception as e:  # noqa: BLE001 - the KafkaException carries the code
        assert e.args[0].code() == POLICY_VIOLATION, e
    done = admin.delete_records([TopicPartition(both, 0, 2)])[TopicPartition(both, 0, 2)].result(10)
    assert done.low_watermark == 2, "compact,delete takes it"


def test_acl_calls_answer_security_disabled_as_a_kafka_broker_without_an_authorizer(shared_broker):
    from confluent_kafka.admin import AclBinding, AclBindingFilter, AclOperation, AclPermissionType, ResourcePatternType, ResourceType
    from kafka.admin import ACLFilter, ACLOperation, ACLPermissionType, ACLResourcePatternType, KafkaAdminClient, ResourcePatternFilter
    from kafka.admin import ResourceType as KResourceType
    from kafka.errors import SecurityDisabledError

    admin = AdminClient({"bootstrap.servers": shared_broker.bootstrap})
    binding = AclBinding(ResourceType.TOPIC, "t", ResourcePatternType.LITERAL, "User:x", "*", AclOperation.READ, AclPermissionType.ALLOW)
    everything = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None, AclOperation.ANY, AclPermissionType.ANY)
    for future in list(admin.create_acls([binding]).values()) + list(admin.delete_acls([everything]).values()):
        try:
            future.result(10)
            raise AssertionError("an ACL call succeeded")
        except Exception as e:  # noqa: BLE001 - the KafkaException carries the code
            assert e.args[0].code() == 54 and "No Authorizer" in e.args[0].str(), e
    k = KafkaAdminClient(bootstrap_servers=shared_broker.bootstrap)
    try:
        k.describe_acls(ACLFilter(principal=None, host="*", operation=ACLOperation.ANY, permission_type=ACLPermissionType.ANY, resource_pattern=ResourcePatternFilter(KResourceType.ANY, None, ACLResourcePatternType.ANY)))
        raise AssertionError("DescribeAcls succeeded")
    except SecurityDisabledError:
        pass
    finally:
        k.close()

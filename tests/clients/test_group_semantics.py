"""Group coordinator semantics as Kafka's, seen through real clients (issue 10, item 1).

Each test would fail on the behaviour that was seen failing: commits refused while a group prepares a
rebalance (records read twice), no initial rebalance delay, static members rebalancing the group,
every shard listing every group, OffsetDelete deleting the offsets of a topic being consumed.
"""

import threading
import time

import pytest

from confluent_kafka import (
    Consumer,
    ConsumerGroupState,
    ConsumerGroupType,
    KafkaError,
    KafkaException,
    TopicCollection,
    TopicPartition,
)
from confluent_kafka.admin import AclOperation, AdminClient

from conftest import unique
from test_groups import consumer, make_topic, wait_assigned


def wait_for(condition, what, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def group_state(admin, group):
    return admin.describe_consumer_groups([group])[group].result(10).state


def test_commit_in_revoke_callback_survives_the_rebalance(shared_broker):
    """Java's default consumer (eager range assignor, auto-commit) commits in onJoinPrepare, while
    the group is PreparingRebalance. librdkafka's revoke callback commits at the same moment."""
    topic = make_topic(shared_broker.bootstrap, 4, 4000)
    group = unique("g")
    seen = []
    lock = threading.Lock()
    commit_errors = []

    def on_revoke(c, partitions):
        try:
            c.commit(asynchronous=False)
        except KafkaException as e:
            if e.args[0].code() != KafkaError._NO_OFFSET:  # nothing consumed since the last commit
                commit_errors.append(e)

    a = consumer(shared_broker.bootstrap, group, "range")
    # librdkafka keeps a partition paused across assignments: what A gets back, it reads.
    a.subscribe([topic], on_revoke=on_revoke, on_assign=lambda c, parts: c.resume(parts))
    # A reads 1000 records, then holds still (paused) so the rebalance finds uncommitted progress.
    while len(seen) < 1000:
        m = a.poll(0.2)
        if m is not None and not m.error():
            seen.append((m.partition(), m.offset()))
    a.pause(a.assignment())
    stop = threading.Event()

    def run_b():
        b = consumer(shared_broker.bootstrap, group, "range")
        b.subscribe([topic], on_revoke=on_revoke)
        while not stop.is_set():
            m = b.poll(0.1)
            if m is not None and not m.error():
                with lock:
                    seen.append((m.partition(), m.offset()))
        b.close()

    tb = threading.Thread(target=run_b)
    tb.start()
    try:
        deadline = time.time() + 60
        while time.time() < deadline and len(set(seen)) < 4000:
            m = a.poll(0.1)
            if m is not None and not m.error():
                with lock:
                    seen.append((m.partition(), m.offset()))
    finally:
        stop.set()
        tb.join()
        a.close()
    assert not commit_errors, f"commits during the rebalance were refused: {commit_errors}"
    assert len(set(seen)) == 4000, "every record consumed"
    assert len(seen) == len(set(seen)), f"{len(seen) - len(set(seen))} records delivered twice"


def test_first_rebalance_waits_for_more_members(shared_broker):
    """group.initial.rebalance.delay.ms: the first member of a new group does not get every
    partition alone only to lose half a moment later."""
    topic = make_topic(shared_broker.bootstrap, 4, 4)
    group = unique("g")
    admin = AdminClient({"bootstrap.servers": shared_broker.bootstrap})
    history = {"a": [], "b": []}

    def recorder(name):
        return lambda c, parts: history[name].append(len(parts))

    a = consumer(shared_broker.bootstrap, group, "range")
    a.subscribe([topic], on_assign=recorder("a"))
    a.poll(0.1)
    # A's JoinGroup waits in PreparingRebalance; without the delay it would complete at once.
    wait_for(lambda: group_state(admin, group) == ConsumerGroupState.PREPARING_REBALANCING, "A's join to wait")
    b = consumer(shared_broker.bootstrap, group, "range")
    b.subscribe([topic], on_assign=recorder("b"))
    assigned = wait_assigned([a, b], 4)
    a.close()
    b.close()
    assert [len(x) for x in assigned] == [2, 2]
    assert history["a"][0] == 2, f"A's first assignment held {history['a'][0]} partitions"


def test_static_member_restart_does_not_rebalance_the_others(shared_broker):
    topic = make_topic(shared_broker.bootstrap, 4, 4)
    group = unique("g")
    revoked = []
    a = consumer(shared_broker.bootstrap, group, "range", **{"group.instance.id": "a"})
    a.subscribe([topic], on_revoke=lambda c, parts: revoked.append(len(parts)))
    b = consumer(shared_broker.bootstrap, group, "range", **{"group.instance.id": "b"})
    b.subscribe([topic])
    before = wait_assigned([a, b], 4)
    revoked_before = len(revoked)
    b.close()  # a static member leaves no LeaveGroup behind
    b = consumer(shared_broker.bootstrap, group, "range", **{"group.instance.id": "b"})
    b.subscribe([topic])
    after = wait_assigned([a, b], 4)
    for _ in range(10):  # a rebalance, had there been one, would reach A's callbacks within these polls
        a.poll(0.1)
        b.poll(0.1)
    revoked_meanwhile = revoked[revoked_before:]
    a.close()  # (close revokes: look before)
    b.close()
    assert after == before, "the static member got its old partitions back"
    assert revoked_meanwhile == [], "the other member was not rebalanced"


def committed_groups(bootstrap, topic, n):
    groups = [unique("lg") for _ in range(n)]
    for g in groups:
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": g})
        c.commit(offsets=[TopicPartition(topic, 0, 1)], asynchronous=False)
        c.close()
    return groups


def test_each_group_is_listed_by_its_coordinator_only(shared_broker):
    from kafka.admin import KafkaAdminClient

    topic = make_topic(shared_broker.bootstrap, 1, 1)
    groups = committed_groups(shared_broker.bootstrap, topic, 6)
    admin = AdminClient({"bootstrap.servers": shared_broker.bootstrap})

    def listed():
        ids = [g.group_id for g in admin.list_consumer_groups().result(10).valid]
        return ids if set(groups) <= set(ids) else None

    ids = wait_for(listed, "every group listed")
    assert all(ids.count(g) == 1 for g in groups), "librdkafka asks every broker: each group once"
    kp = KafkaAdminClient(bootstrap_servers=shared_broker.bootstrap)
    try:
        per_broker = [{g["group_id"] for g in kp.list_groups(broker_ids=[b])} & set(groups) for b in (0, 1)]
    finally:
        kp.close()
    # Each group is listed by its coordinator (FindCoordinator's answer) and by no other broker. Where
    # the six land is up to their names' hashes (all on one shard once in 32 runs).
    coordinator = {g: f.result(10).coordinator.id for g, f in admin.describe_consumer_groups(groups).items()}
    assert per_broker == [{g for g in groups if coordinator[g] == b} for b in (0, 1)], (per_broker, coordinator)


def test_list_groups_by_type_and_describe_with_authorized_operations(shared_broker):
    topic = make_topic(shared_broker.bootstrap, 1, 1)
    (group,) = committed_groups(shared_broker.bootstrap, topic, 1)
    admin = AdminClient({"bootstrap.servers": shared_broker.bootstrap})
    classic = admin.list_consumer_groups(types={ConsumerGroupType.CLASSIC}).result(10).valid
    assert group in [g.group_id for g in classic]
    assert [g.type for g in classic if g.group_id == group] == [ConsumerGroupType.CLASSIC]
    modern = admin.list_consumer_groups(types={ConsumerGroupType.CONSUMER}).result(10).valid
    assert group not in [g.group_id for g in modern], "no KIP-848 groups here"
    described = admin.describe_consumer_groups([group], include_authorized_operations=True)[group].result(10)
    assert set(described.authorized_operations) == {AclOperation.READ, AclOperation.DESCRIBE, AclOperation.DELETE}
    assert admin.describe_consumer_groups([group])[group].result(10).authorized_operations is None
    t = admin.describe_topics(TopicCollection([topic]), include_authorized_operations=True)[topic].result(10)
    assert {AclOperation.READ, AclOperation.WRITE, AclOperation.DESCRIBE_CONFIGS} <= set(t.authorized_operations)
    cluster = admin.describe_cluster(include_authorized_operations=True).result(10)
    assert {AclOperation.ALTER, AclOperation.IDEMPOTENT_WRITE, AclOperation.CLUSTER_ACTION} <= set(cluster.authorized_operations)


def test_offset_delete_refuses_topics_the_group_consumes(shared_broker):
    from kafka.admin import KafkaAdminClient
    from kafka.structs import TopicPartition as KTP

    consumed = make_topic(shared_broker.bootstrap, 1, 10)
    other = make_topic(shared_broker.bootstrap, 1, 10)
    group = unique("g")
    c = consumer(shared_broker.bootstrap, group, "range")
    c.subscribe([consumed])
    wait_assigned([c], 1)
    c.commit(offsets=[TopicPartition(consumed, 0, 3), TopicPartition(other, 0, 4)], asynchronous=False)
    kp = KafkaAdminClient(bootstrap_servers=shared_broker.bootstrap)
    try:
        result = kp.delete_group_offsets(group, [KTP(consumed, 0), KTP(other, 0), KTP("no-such-topic", 0)])
    finally:
        kp.close()
    errors = {tp.topic: err.__name__ for tp, err in result.items()}
    assert errors[consumed] == "GroupSubscribedToTopicError"
    assert errors[other] == "NoError"
    assert errors["no-such-topic"] == "UnknownTopicOrPartitionError"
    left = c.committed([TopicPartition(consumed, 0), TopicPartition(other, 0)], timeout=10)
    c.close()
    assert [tp.offset for tp in left] == [3, -1001], "only the unconsumed topic's offset went"


def test_commit_to_a_missing_topic_or_partition_is_refused(shared_broker):
    topic = make_topic(shared_broker.bootstrap, 2, 2)
    c = Consumer({"bootstrap.servers": shared_broker.bootstrap, "group.id": unique("g")})
    offsets = [TopicPartition(topic, 0, 1), TopicPartition(topic, 7, 1), TopicPartition("missing-topic", 0, 1)]
    with pytest.raises(KafkaException) as refused:
        c.commit(offsets=offsets, asynchronous=False)
    assert refused.value.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART
    committed = c.committed([TopicPartition(topic, 0)], timeout=10)
    c.close()
    assert committed[0].offset == 1, "the partition that exists is committed"

"""Requests whose cost the client chooses, against the real broker: a name repeated in one request
is described once (a 600-byte DescribeGroups naming a group of 80 MB of member metadata 100 times
once made an 8 GB response), and long lists a client sends (JoinGroup protocols, a list config's
APPEND) cost linear time, not list against list (the coordinator or controller shard once answered
nobody for minutes). Found by a hostile-client campaign."""

import socket
import struct
import time
import warnings

from conftest import unique
from kafka_wire import Connection, build
from test_robustness import frame, read_frame

warnings.filterwarnings("ignore", category=DeprecationWarning)

from kafka.protocol.admin import (  # noqa: E402
    DescribeConfigsRequest,
    DescribeConfigsResponse,
    DescribeGroupsRequest,
    DescribeGroupsResponse,
    IncrementalAlterConfigsRequest,
    IncrementalAlterConfigsResponse,
)

INVALID_REQUEST = 42
INCONSISTENT_GROUP_PROTOCOL = 23
# Far more than the linear work needs on a loaded machine; list against list took minutes here.
DEADLINE_S = 30


def test_a_name_repeated_in_one_request_is_described_once(shared_broker):
    from confluent_kafka import Producer

    topic = unique("twice")
    p = Producer({"bootstrap.servers": shared_broker.bootstrap})
    p.produce(topic, value=b"x")
    assert p.flush(10) == 0
    conn = Connection(shared_broker.port)
    try:
        r = conn.call(build(DescribeGroupsRequest, 0, groups=["g-twice", "g-twice", "g-other"]), DescribeGroupsResponse)
        assert [g.error_code for g in r.groups] == [0, INVALID_REQUEST, 0]
        resource = {"resource_type": 2, "resource_name": topic, "configuration_keys": None}
        r = conn.call(build(DescribeConfigsRequest, 1, resources=[resource, resource], include_synonyms=False), DescribeConfigsResponse)
        assert [x.error_code for x in r.results] == [0, INVALID_REQUEST]
        assert len(r.results[0].configs) > 10 and r.results[1].configs == []
    finally:
        conn.close()


def s16(b):
    return struct.pack(">h", len(b)) + b


def join(group, names):  # JoinGroup v3: no member id yet, the consumer protocol type
    body = s16(group) + struct.pack(">ii", 30_000, 30_000) + s16(b"") + s16(b"consumer") + struct.pack(">i", len(names))
    return body + b"".join(s16(n) + struct.pack(">i", 0) for n in names)


def timed_call(port, api, version, body):
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.settimeout(DEADLINE_S + 60)
        start = time.monotonic()
        s.sendall(frame(api, version, 1, body))
        answer = read_frame(s)
        return answer, time.monotonic() - start


def test_long_lists_from_a_client_cost_linear_time(shared_broker):
    b = shared_broker
    group = unique("many-protocols").encode()
    conn = Connection(b.port)
    try:
        port = None
        deadline = time.monotonic() + 15
        while port is None and time.monotonic() < deadline:  # FindCoordinator v0: error, node, host, port
            answer, _ = timed_call(b.port, 10, 0, s16(group))
            if struct.unpack(">h", answer[4:6])[0] == 0:
                host_len = struct.unpack(">h", answer[10:12])[0]
                port = struct.unpack(">i", answer[12 + host_len : 16 + host_len])[0]
        assert port, "no coordinator"
        n = 60_000
        # The first member's join ends (after the initial rebalance delay) in choosing a protocol;
        # a second member naming none of them is refused after comparing the lists.
        answer, _ = timed_call(port, 11, 3, join(group, [b"p-%d" % i for i in range(n)]))
        assert struct.unpack(">h", answer[8:10])[0] == 0
        answer, took = timed_call(port, 11, 3, join(group, [b"q-%d" % i for i in range(n)]))
        assert struct.unpack(">h", answer[8:10])[0] == INCONSISTENT_GROUP_PROTOCOL
        assert took < DEADLINE_S, f"a JoinGroup of {n} protocols took {took:.1f} s"

        topic = unique("long-list")
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient({"bootstrap.servers": b.bootstrap})
        admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(10)

        def alter(op, value):
            config = {"name": "leader.replication.throttled.replicas", "config_operation": op, "value": value}
            req = build(IncrementalAlterConfigsRequest, 1, validate_only=False, resources=[{"resource_type": 2, "resource_name": topic, "configs": [config]}])
            start = time.monotonic()
            r = conn.call(req, IncrementalAlterConfigsResponse)
            return r.responses[0].error_code, time.monotonic() - start

        assert alter(0, ",".join(f"{i}:0" for i in range(n)))[0] == 0  # SET
        code, took = alter(2, ",".join(f"{i}:1" for i in range(n)))  # APPEND
        assert code == 0 and took < DEADLINE_S, f"an APPEND of {n} items took {took:.1f} s"
    finally:
        conn.close()

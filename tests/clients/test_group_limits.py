"""group.metadata.max.bytes against the real broker: members' protocol metadata and assignments,
whose size a client chooses, are bounded; joins and assignments past the bound are refused, and
bytes given back by members that leave can be taken again."""

import socket
import struct

from conftest import Broker, unique
from test_robustness import frame, read_frame, produce_consume_ok

GROUP_MAX_SIZE_REACHED = 81
UNKNOWN_SERVER_ERROR = -1


def string(s):
    return struct.pack(">h", len(s)) + s


def connect(broker):
    s = socket.create_connection(("127.0.0.1", int(broker.bootstrap.rsplit(":", 1)[1])))
    s.settimeout(30)
    return s


def join(sock, group, metadata, member_id=b"", correlation=1):
    """JoinGroup v1 (no MEMBER_ID_REQUIRED round): its answer's error code, generation and member id."""
    body = string(group) + struct.pack(">ii", 10000, 10000) + string(member_id) + string(b"consumer")
    body += struct.pack(">i", 1) + string(b"range") + struct.pack(">i", len(metadata)) + metadata
    sock.sendall(frame(11, 1, correlation, body))
    answer = read_frame(sock)[4:]
    error, generation = struct.unpack(">hi", answer[:6])
    at = 6
    for _ in range(2):  # protocol, leader
        at += 2 + max(0, struct.unpack(">h", answer[at : at + 2])[0])
    n = struct.unpack(">h", answer[at : at + 2])[0]
    return error, generation, answer[at + 2 : at + 2 + max(0, n)]


def sync(sock, group, generation, member_id, assignments, correlation=2):
    """SyncGroup v0: its answer's error code."""
    body = string(group) + struct.pack(">i", generation) + string(member_id) + struct.pack(">i", len(assignments))
    for member, assignment in assignments:
        body += string(member) + struct.pack(">i", len(assignment)) + assignment
    sock.sendall(frame(14, 0, correlation, body))
    return struct.unpack(">h", read_frame(sock)[4:6])[0]


def leave(sock, group, member_id, correlation=3):
    sock.sendall(frame(13, 0, correlation, string(group) + string(member_id)))
    return struct.unpack(">h", read_frame(sock)[4:6])[0]


def test_member_metadata_and_assignments_past_the_bound_are_refused():
    mib = 1 << 20
    b = Broker(shards=1, extra=["--group-metadata-max-bytes", str(3 * mib), "--group-initial-rebalance-delay-ms", "0"])
    socks = []
    try:
        big = unique("big").encode()
        # Two members of 1 MiB each fit (one group each: each join is answered at once).
        members = []
        for i in range(2):
            s = connect(b)
            socks.append(s)
            error, generation, member = join(s, big + b"%d" % i, b"m" * mib)
            assert error == 0, error
            members.append((s, big + b"%d" % i, member))
        # A third does not; nor does a rejoin that grows a member past the bound.
        s = connect(b)
        socks.append(s)
        assert join(s, big + b"x", b"m" * mib)[0] == GROUP_MAX_SIZE_REACHED
        s0, g0, m0 = members[0]
        assert join(s0, g0, b"m" * (2 * mib), member_id=m0)[0] == GROUP_MAX_SIZE_REACHED
        # Small members still join: real consumers go on working.
        assert produce_consume_ok(b.bootstrap)
        # A leader's assignment that would pass the bound: UNKNOWN_SERVER_ERROR, as Kafka answers an
        # assignment too large to store.
        assert sync(s0, g0, 1, m0, [(m0, b"a" * (2 * mib))]) == UNKNOWN_SERVER_ERROR
        # Bytes given back by a member that leaves are taken again.
        s1, g1, m1 = members[1]
        assert leave(s1, g1, m1) == 0
        assert join(s, big + b"x", b"m" * mib)[0] == 0
    finally:
        for s in socks:
            s.close()
        b.close()

"""A Fetch that finds nothing waits on the append itself, not on a polling timer: it is answered
with the records once they are written, or empty at max_wait_ms. Asked through the port of the
shard that leads the partition or of another (whose Fetch then reads and waits on the leading
shard, one round trip in all)."""

import threading
import time
import warnings

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import unique
from kafka_wire import Connection, build

warnings.filterwarnings("ignore", category=DeprecationWarning)

from kafka.protocol.consumer.fetch import FetchRequest, FetchResponse  # noqa: E402
from kafka.record import MemoryRecords  # noqa: E402

LONG_WAIT_MS = 30_000


def fetch(conn, topic, max_wait_ms):
    """Fetch v11 of partition 0 from offset 0, min_bytes 1; (seconds it took, record values)."""
    req = build(
        FetchRequest,
        11,
        replica_id=-1, max_wait_ms=max_wait_ms, min_bytes=1, max_bytes=1 << 20, isolation_level=0,
        session_id=0, session_epoch=-1,
        topics=[{"topic": topic, "partitions": [{"partition": 0, "fetch_offset": 0, "log_start_offset": -1,
                                                 "partition_max_bytes": 1 << 20, "current_leader_epoch": -1}]}],
        forgotten_topics_data=[], rack_id="",
    )
    start = time.monotonic()
    r = conn.call(req, FetchResponse)
    took = time.monotonic() - start
    [p] = [p for t in r.responses for p in t.partitions]
    assert p.error_code == 0
    values, records = [], MemoryRecords(p.records or b"")
    while (batch := records.next_batch()) is not None:
        values += [rec.value for rec in batch]
    return took, values


@pytest.mark.parametrize("through", ["leader", "other shard"])
def test_a_waiting_fetch_is_answered_by_the_append(shared_broker, through):
    topic = unique("poll")
    admin = AdminClient({"bootstrap.servers": shared_broker.bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(10)
    leader = admin.list_topics(topic, timeout=10).topics[topic].partitions[0].leader
    shard = leader if through == "leader" else 1 - leader
    conn = Connection(shared_broker.port + shard)
    conn.sock.settimeout(LONG_WAIT_MS / 1000 + 30)
    try:
        took, values = fetch(conn, topic, 300)
        assert values == [] and took >= 0.25, f"an empty partition is answered at max_wait_ms (after {took:.3f} s)"

        got = []
        waiter = threading.Thread(target=lambda: got.append(fetch(conn, topic, LONG_WAIT_MS)))
        waiter.start()
        # The producer's bootstrap takes longer than the fetch needs to reach its wait.
        p = Producer({"bootstrap.servers": shared_broker.bootstrap, "linger.ms": 0})
        p.produce(topic, value=b"woken", partition=0)
        assert p.flush(15) == 0
        waiter.join(LONG_WAIT_MS / 1000 + 30)
        assert got, "the fetch was not answered"
        took, values = got[0]
        assert values == [b"woken"]
        assert took < LONG_WAIT_MS / 1000 / 2, f"answered at the timer ({took:.1f} s), not by the append"
    finally:
        conn.close()

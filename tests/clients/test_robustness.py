"""Bad input, crashes and the single-port mode, against the real broker."""

import gzip
import signal
import socket
import struct
import time

from confluent_kafka import Consumer, KafkaError, Producer

from conftest import Broker, unique


def frame(api_key, version, correlation, body=b"", client_id=b"raw"):
    header = struct.pack(">hhih", api_key, version, correlation, len(client_id)) + client_id
    payload = header + body
    return struct.pack(">i", len(payload)) + payload


def read_frame(sock):
    size = struct.unpack(">i", recv_exact(sock, 4))[0]
    return recv_exact(sock, size)


def recv_exact(sock, n):
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise ConnectionError("closed")
        out += chunk
    return out


def closed_by_peer(sock):
    sock.settimeout(5)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def produce_consume_ok(bootstrap):
    topic = unique("alive")
    p = Producer({"bootstrap.servers": bootstrap})
    p.produce(topic, value=b"still here")
    assert p.flush(15) == 0
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": unique("g"), "auto.offset.reset": "earliest"})
    c.subscribe([topic])
    deadline = time.time() + 15
    while time.time() < deadline:
        m = c.poll(0.2)
        if m is not None and not m.error():
            c.close()
            return m.value() == b"still here"
    c.close()
    return False


def test_garbage_truncated_and_oversized_frames_close_only_that_connection(shared_broker):
    bystander = socket.create_connection(("127.0.0.1", shared_broker.port))
    bystander.sendall(frame(18, 0, 1))
    assert read_frame(bystander)[:4] == struct.pack(">i", 1)
    cases = [
        struct.pack(">i", 200 * 1024 * 1024) + b"x" * 10,  # over socket.request.max.bytes
        struct.pack(">i", -5),  # negative size
        struct.pack(">i", 3) + b"abc",  # header too short
        frame(999, 0, 7),  # unknown API key
        frame(0, 99, 7),  # unsupported Produce version
        frame(3, 9, 7, b"\xff" * 3),  # Metadata with a garbage body
        struct.pack(">i", 50) + b"\x00" * 20,  # truncated frame, then the client goes away
    ]
    for data in cases:
        s = socket.create_connection(("127.0.0.1", shared_broker.port))
        s.sendall(data)
        if data.startswith(struct.pack(">i", 50)):
            s.close()
            continue
        assert closed_by_peer(s), data[:16]
        s.close()
    bystander.sendall(frame(18, 0, 2))
    assert read_frame(bystander)[:4] == struct.pack(">i", 2), "other connections carry on"
    bystander.close()
    assert shared_broker.alive()
    assert produce_consume_ok(shared_broker.bootstrap)


def test_api_versions_unsupported_version_gets_error_and_list(shared_broker):
    s = socket.create_connection(("127.0.0.1", shared_broker.port))
    s.sendall(frame(18, 42, 9))
    body = read_frame(s)
    correlation, error = struct.unpack(">ih", body[:6])
    assert correlation == 9 and error == 35  # UNSUPPORTED_VERSION, KIP-511
    count = struct.unpack(">i", body[6:10])[0]
    assert count > 10
    s.close()


def test_corrupt_batch_fails_that_partition_only(shared_broker):
    # Produce v3 with one partition holding a batch whose CRC is wrong.
    topic = unique("corrupt").encode()
    p = Producer({"bootstrap.servers": shared_broker.bootstrap})
    p.produce(topic.decode(), value=b"create")
    assert p.flush(10) == 0
    batch = bytearray(61 + 8)
    struct.pack_into(">qiibIhiqqqhii", batch, 0, 0, 61 + 8 - 12, -1, 2, 0xDEADBEEF, 0, 0, 0, 0, -1, -1, -1, 1)
    body = struct.pack(">hhi", -1, 1, 5000)  # transactional id null, acks 1, timeout
    body += struct.pack(">i", 1) + struct.pack(">h", len(topic)) + topic
    body += struct.pack(">i", 1) + struct.pack(">ii", 0, len(batch)) + bytes(batch)
    s = socket.create_connection(("127.0.0.1", shared_broker.port))
    s.sendall(frame(0, 3, 11, body))
    resp = read_frame(s)
    # correlation, [topics: name, [partitions: index, error, ...]]
    off = 4 + 4
    name_len = struct.unpack(">h", resp[off : off + 2])[0]
    off += 2 + name_len + 4
    index, error = struct.unpack(">ih", resp[off : off + 6])
    assert (index, error) == (0, 2)  # CORRUPT_MESSAGE
    s.sendall(frame(18, 0, 12))
    assert read_frame(s)[:4] == struct.pack(">i", 12), "connection stays up"
    s.close()


def test_batches_that_do_not_read_as_they_say_are_refused(shared_broker):
    """Kafka's rule since Produce v3: exactly one batch per partition, else INVALID_RECORD. A second
    batch was once appended, unchecked by what checks the first (a transactional one of a made-up
    producer opened a transaction no coordinator knew, and read_committed readers stopped there).
    And a batch's records must read as its header says, inflated if compressed, with a codec Kafka
    defines."""
    from test_topic_churn import ONE_RECORD, batch

    topic = unique("twobatch").encode()
    p = Producer({"bootstrap.servers": shared_broker.bootstrap})
    p.produce(topic.decode(), value=b"create")
    assert p.flush(10) == 0

    def produce(correlation, records):
        body = struct.pack(">hhi", -1, 1, 5000) + struct.pack(">i", 1) + struct.pack(">h", len(topic)) + topic
        body += struct.pack(">i", 1) + struct.pack(">ii", 0, len(records)) + records
        s.sendall(frame(0, 3, correlation, body))
        resp = read_frame(s)
        off = 4 + 4 + 2 + len(topic) + 4
        return struct.unpack(">ihq", resp[off : off + 14])[1:]

    s = socket.create_connection(("127.0.0.1", shared_broker.port))
    try:
        assert produce(1, batch() + batch())[0] == 87  # INVALID_RECORD
        assert produce(2, b"")[0] == 87, "no batch at all"
        assert produce(3, batch()) == (0, 1), "nothing of the refused requests was appended"
        # Records that do not read as the header says (the CRC is right): consumers stopped at them.
        record = ONE_RECORD[2:]
        unreadable = {
            "garbage": b"\x07" * 40,
            "offset delta 5": b"\xd6\x01" + record[:2] + b"\x0a" + record[3:],
            "two records, count 1": ONE_RECORD + ONE_RECORD,
            "count 2, one record": None,
            "length 0": b"\x00" + record,
            "length past the batch": b"\xd8\x01" + record,
        }
        for n, (what, records) in enumerate(unreadable.items()):
            raw = batch(ONE_RECORD, count=2) if records is None else batch(records)
            assert produce(10 + n, raw)[0] == 87, what
        assert produce(30, batch(attributes=7))[0] == 76, "codec 7: UNSUPPORTED_COMPRESSION_TYPE"
        # Compressed, the records are inflated to be checked, as Kafka does.
        assert produce(31, batch(gzip.compress(b"\x07" * 40), attributes=1))[0] == 87, "gzip of garbage"
        assert produce(32, batch(gzip.compress(ONE_RECORD), count=2, attributes=1))[0] == 87, "gzip, count 2"
        assert produce(33, batch(b"\x1f\x8b" + b"\x07" * 40, attributes=1))[0] == 2, "not gzip: CORRUPT_MESSAGE"
        assert produce(34, batch(gzip.compress(ONE_RECORD), attributes=1)) == (0, 2), "sound gzip"
        assert produce(35, batch()) == (0, 3), "nothing of the refused requests was appended"
    finally:
        s.close()


def test_kill_9_keeps_every_acks_all_message():
    b = Broker(extra=["--flush-messages", "1"])
    try:
        topic = unique("crash")
        acked = []
        p = Producer({"bootstrap.servers": b.bootstrap, "acks": "all", "linger.ms": 1})
        for i in range(2000):
            p.produce(topic, value=str(i).encode(), on_delivery=lambda err, m: err is None and acked.append(int(m.value())))
            if i % 200 == 0:
                p.poll(0)
        p.flush(15)
        assert len(acked) == 2000
        for i in range(2000, 4000):
            p.produce(topic, value=str(i).encode(), on_delivery=lambda err, m: err is None and acked.append(int(m.value())))
        p.poll(0.05)
        b.proc.send_signal(signal.SIGKILL)
        b.proc.wait()
        p.flush(2)
        # Unacknowledged messages must not be resent to the new broker (that would be a retry of a
        # non-idempotent producer, a legitimate duplicate): drop them before it starts.
        p.purge()
        p.flush(0)
        del p
        b.start()
        c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": unique("g"), "auto.offset.reset": "earliest", "enable.partition.eof": True})
        c.subscribe([topic])
        got, errors = [], []
        deadline = time.time() + 30
        while time.time() < deadline:
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    break
                errors.append(str(m.error()))
                continue
            got.append(int(m.value()))
        c.close()
        assert set(acked) <= set(got), f"lost {len(set(acked) - set(got))} acknowledged messages (consumer errors: {errors[:3]})"
        assert got == list(range(len(got))), "a contiguous prefix survives, in order"
    finally:
        b.close()


def test_single_port_mode_forwards_between_shards():
    b = Broker(extra=["--single-port"])
    try:
        topic = unique("single")
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient({"bootstrap.servers": b.bootstrap})
        admin.create_topics([NewTopic(topic, num_partitions=4, replication_factor=1)])[topic].result(10)
        md = admin.list_topics(topic, timeout=10)
        assert len(md.brokers) == 1
        p = Producer({"bootstrap.servers": b.bootstrap})
        for i in range(400):
            p.produce(topic, value=str(i).encode(), partition=i % 4)
        assert p.flush(15) == 0
        c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": unique("g"), "auto.offset.reset": "earliest"})
        c.subscribe([topic])
        got = []
        deadline = time.time() + 30
        while len(got) < 400 and time.time() < deadline:
            m = c.poll(0.2)
            if m is not None and not m.error():
                got.append(int(m.value()))
        c.close()
        assert sorted(got) == list(range(400))
    finally:
        b.close()


def test_fetch_responses_are_bounded_whatever_max_bytes_says():
    """max_bytes <= 0 was read as unlimited, and a response past 2 GiB ended the broker: now
    Kafka's min(max_bytes, fetch.max.bytes = 55 MiB), with KIP-74's first batch always allowed."""
    import warnings

    from confluent_kafka.admin import AdminClient, NewTopic

    from kafka_wire import Connection, build

    warnings.filterwarnings("ignore", category=DeprecationWarning)
    from kafka.protocol.consumer.fetch import FetchRequest, FetchResponse

    b = Broker(shards=1)
    try:
        topic = unique("bound")
        admin = AdminClient({"bootstrap.servers": b.bootstrap})
        admin.create_topics([NewTopic(topic, 4, 1, config={"max.message.bytes": str(4 << 20)})])[topic].result(10)
        p = Producer({"bootstrap.servers": b.bootstrap, "message.max.bytes": 4 << 20, "linger.ms": 0, "batch.num.messages": 1})
        for i in range(24):  # 4 partitions x 6 batches of 3 MiB: 72 MiB, more than one response may carry
            p.produce(topic, value=bytes([i]) * (3 << 20), partition=i % 4)
            p.poll(0)
        assert p.flush(60) == 0
        conn = Connection(b.port)
        try:
            for max_bytes in (-1, 0, (1 << 31) - 1):
                req = build(
                    FetchRequest,
                    11,
                    replica_id=-1, max_wait_ms=10, min_bytes=0, max_bytes=max_bytes, isolation_level=0, session_id=0, session_epoch=-1,
                    topics=[{"topic": topic, "partitions": [{"partition": q, "fetch_offset": 0, "partition_max_bytes": (1 << 31) - 1,
                                                             "current_leader_epoch": -1, "log_start_offset": -1} for q in range(4)]}],
                    forgotten_topics_data=[], rack_id="",
                )
                r = conn.call(req, FetchResponse)
                assert all(q.error_code == 0 for t in r.responses for q in t.partitions)
                total = sum(len(bytes(q.records or b"")) for t in r.responses for q in t.partitions)
                if max_bytes <= 0:
                    assert 3 << 20 < total < 4 << 20, f"max_bytes {max_bytes}: the first batch only, got {total}"
                else:
                    assert 48 << 20 < total <= 57_671_680 + (4 << 20), f"max_bytes 2 GiB: capped at fetch.max.bytes, got {total}"
        finally:
            conn.close()
        assert b.alive()
    finally:
        b.close()


def test_out_of_file_descriptors_the_broker_waits_quietly_and_recovers():
    """With every fd taken by idle connections, accept fails: the broker backs off (no busy loop, no
    log flood) and serves again once connections go."""
    import os
    import shutil
    import subprocess

    from conftest import WEIR, ports_free, wait_listening

    if not shutil.which("prlimit"):
        import pytest

        pytest.skip("prlimit (util-linux) not installed")
    data = os.path.join(os.path.dirname(WEIR), "..", unique("weir-fds"))
    port = 41000
    while not ports_free(port, 1):
        port += 7
    log_path = data + ".log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            ["prlimit", "--nofile=160:160", WEIR, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", data, "--shards", "1"],
            stdout=log, stderr=subprocess.STDOUT,
        )
    held = []
    try:
        wait_listening(port)
        # Connect until the broker stops answering: its fds are spent.
        for _ in range(400):
            s = socket.create_connection(("127.0.0.1", port))
            held.append(s)
        deadline = time.time() + 30
        while time.time() < deadline and b"accept failed" not in open(log_path, "rb").read():
            time.sleep(0.05)
        assert b"accept failed" in open(log_path, "rb").read(), "the fds ran out"
        time.sleep(3)  # a quiet broker logs at most one line per 10 s while out of fds
        lines = open(log_path, "rb").read().count(b"accept failed")
        assert lines <= 2, f"{lines} 'accept failed' lines in about 3 s"
        for s in held:
            s.close()
        held.clear()
        deadline = time.time() + 30
        answered = False
        while time.time() < deadline and not answered:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                    s.settimeout(5)
                    s.sendall(frame(18, 0, 12))
                    answered = read_frame(s)[:4] == struct.pack(">i", 12)
            except OSError:
                time.sleep(0.1)
        assert answered, "the broker serves again once connections are gone"
        assert proc.poll() is None
    finally:
        for s in held:
            s.close()
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(data, ignore_errors=True)
        os.remove(log_path)

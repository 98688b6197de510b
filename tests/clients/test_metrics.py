"""The metrics listener, scraped while real clients work: Prometheus' and OpenMetrics' text formats
(checked by promtool and by the Prometheus Python client's parsers, not by our code), figures that
match what the clients did, health endpoints through start-up and shutdown, and a listener that a
crowd of idle connections cannot take over."""

import http.client
import os
import signal
import socket
import subprocess
import tempfile
import time
import shutil

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import ROOT, WEIR, free_port, ports_free, unique


def get(port, path, headers=None, timeout=10):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        r = conn.getresponse()
        return r.status, r.getheader("Content-Type"), r.read().decode()
    finally:
        conn.close()


def samples(text):
    """{(name, ((label, value), ...)): value} by the Prometheus client's own text parser."""
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(figures, name, **labels):
    return figures.get((name, tuple(sorted(labels.items()))))


def promtool_check(text):
    if shutil.which("promtool") is None:
        pytest.skip("promtool not installed (Debian package prometheus)")
    r = subprocess.run(["promtool", "check", "metrics"], input=text.encode(), capture_output=True, timeout=60)
    assert r.returncode == 0, (r.stdout + r.stderr).decode()


def test_a_scrape_matches_what_the_clients_did(broker):
    topic, group = unique("metrics"), unique("g")
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])[topic].result(30)
    delivered = {0: 0, 1: 0, 2: 0}

    def on_delivery(err, msg):
        assert err is None, err
        delivered[msg.partition()] += 1

    p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "linger.ms": 5, "enable.idempotence": True})
    n = 3000
    for i in range(n):
        p.produce(topic, key=str(i).encode(), value=b"v" * 100, on_delivery=on_delivery)
    assert p.flush(60) == 0
    assert sum(delivered.values()) == n and all(delivered.values())

    def read_to_end(starts):
        """Records a consumer gets from each partition's start offset to its end."""
        c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group, "enable.auto.commit": False, "enable.partition.eof": True})
        c.assign([TopicPartition(topic, q, o) for q, o in starts.items()])
        received, ended, deadline = {q: 0 for q in starts}, set(), time.time() + 60
        while len(ended) < len(starts):
            assert time.time() < deadline, "did not reach the end of every partition"
            m = c.poll(1)
            if m is None:
                continue
            if m.error():
                assert m.error().code() == KafkaError._PARTITION_EOF, m.error()
                ended.add(m.partition())
            else:
                received[m.partition()] += 1
        return c, received

    # Read everything, then commit half of each partition: the lag is the other half.
    c, received = read_to_end({0: 0, 1: 0, 2: 0})
    assert received == delivered
    committed = {q: delivered[q] // 2 for q in range(3)}
    c.commit(offsets=[TopicPartition(topic, q, committed[q]) for q in range(3)], asynchronous=False)
    c.close()
    # Partition 0 again from its middle, most likely inside a batch: records out count from there.
    c, again = read_to_end({0: committed[0]})
    c.close()
    assert again == {0: delivered[0] - committed[0]}
    received[0] += again[0]

    status, content_type, text = get(broker.metrics_port, "/metrics")
    assert status == 200 and content_type.startswith("text/plain; version=0.0.4"), content_type
    promtool_check(text)
    f = samples(text)
    for q in range(3):
        tp = {"topic": topic, "partition": str(q)}
        assert value(f, "weir_partition_records_in_total", **tp) == delivered[q]
        assert value(f, "weir_partition_log_end_offset", **tp) == delivered[q]
        assert value(f, "weir_partition_high_watermark", **tp) == delivered[q]
        assert value(f, "weir_partition_records_out_total", **tp) == received[q]
        # Each batch went out once (from the batch holding partition 0's middle on, twice).
        bytes_in, bytes_out = value(f, "weir_partition_bytes_in_total", **tp), value(f, "weir_partition_bytes_out_total", **tp)
        assert (bytes_out == bytes_in if q else bytes_in < bytes_out <= 2 * bytes_in), (q, bytes_in, bytes_out)
        assert value(f, "weir_partition_size_bytes", **tp) >= value(f, "weir_partition_bytes_in_total", **tp) > 100 * delivered[q]
        assert value(f, "weir_group_committed_offset", group=group, **tp) == committed[q]
        assert value(f, "weir_group_lag", group=group, **tp) == delivered[q] - committed[q]
    assert value(f, "weir_group_total_lag", group=group) == n - sum(committed.values())
    produces = value(f, "weir_requests_total", api="Produce")
    assert produces >= 1
    assert value(f, "weir_request_time_seconds_count", api="Produce", stage="total") == produces
    assert value(f, "weir_request_time_seconds_bucket", api="Produce", stage="total", le="+Inf") == produces
    assert value(f, "weir_request_time_seconds_count", api="Fetch", stage="send") >= 1
    assert value(f, "weir_connections_accepted_total") >= 2
    assert value(f, "weir_shard_serving", shard="0") == 1 and value(f, "weir_shard_serving", shard="1") == 1
    assert value(f, "weir_storage_written_batches_total") >= 1
    assert value(f, "weir_limit", limit="max.connections") == 10000
    assert value(f, "process_resident_memory_bytes") > 0

    # The same figures in OpenMetrics, when asked, by the strict OpenMetrics parser.
    from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics

    status, content_type, text = get(broker.metrics_port, "/metrics", {"Accept": "application/openmetrics-text;version=1.0.0"})
    assert status == 200 and content_type.startswith("application/openmetrics-text"), content_type
    families = {fam.name: fam for fam in openmetrics(text)}
    records_in = families["weir_partition_records_in"]
    assert records_in.type == "counter"
    assert sum(s.value for s in records_in.samples if s.labels.get("topic") == topic and s.name.endswith("_total")) == n


def test_errors_are_counted_by_api_and_code(broker):
    topic = unique("oor")
    p = Producer({"bootstrap.servers": broker.bootstrap})
    p.produce(topic, b"one")
    assert p.flush(30) == 0
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": unique("g"), "auto.offset.reset": "error"})
    c.assign([TopicPartition(topic, 0, 1_000_000)])
    deadline = time.time() + 30
    try:
        while True:
            assert time.time() < deadline, "no offset-out-of-range error"
            m = c.poll(1)
            if m is not None and m.error():
                assert m.error().code() == KafkaError._AUTO_OFFSET_RESET, m.error()
                break
    finally:
        c.close()
    # An error in a control API's response, counted from the response itself.
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    with pytest.raises(Exception, match="TOPIC_ALREADY_EXISTS"):
        admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result(30)
    f = samples(get(broker.metrics_port, "/metrics")[2])
    assert value(f, "weir_request_errors_total", api="Fetch", error="OFFSET_OUT_OF_RANGE") >= 1
    assert value(f, "weir_request_errors_total", api="CreateTopics", error="TOPIC_ALREADY_EXISTS") == 1
    assert value(f, "weir_request_errors_total", api="Produce", error="NONE") is None, "NONE is not an error"


def test_health_endpoints_through_start_up_and_shutdown():
    # Something else accepts on the broker's port: weir waits for it (up to 10 s) before it binds,
    # and meanwhile its metrics listener already answers: live, not ready.
    while True:
        port = free_port()
        if port < 65000 and ports_free(port, 2):
            break
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.bind(("127.0.0.1", port))
    holder.listen(16)
    metrics = free_port()
    data = tempfile.mkdtemp(prefix="weir-health-", dir=os.path.join(ROOT, "target"))
    log = open(os.path.join(data, "..", os.path.basename(data) + ".log"), "wb")
    proc = subprocess.Popen(
        [WEIR, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", data, "--shards", "2", "--metrics-listen", f"127.0.0.1:{metrics}"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.time() + 8
        while True:
            assert time.time() < deadline, "metrics listener did not answer during start-up"
            try:
                if get(metrics, "/health/live", timeout=1)[0] == 200:
                    break
            except OSError:
                time.sleep(0.05)
        status, _, body = get(metrics, "/health/ready")
        assert status == 503 and "starting" in body, (status, body)
        holder.close()
        deadline = time.time() + 30
        while get(metrics, "/health/ready")[0] != 200:
            assert proc.poll() is None, "broker exited"
            assert time.time() < deadline, "never ready"
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        # From the signal on, nothing may call it ready.
        while proc.poll() is None:
            try:
                status, _, body = get(metrics, "/health/ready", timeout=2)
            except (OSError, http.client.HTTPException):
                # The process ended, perhaps in the middle of an answer.
                break
            assert status == 503, "ready after SIGTERM"
        assert proc.wait(30) == 0
    finally:
        holder.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(data, ignore_errors=True)


def test_idle_connections_cannot_take_over_the_listener(broker):
    port = broker.metrics_port
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(40)]
    try:
        # Every connection thread is taken: a scrape is refused at once, not kept waiting, and a
        # liveness probe is still answered.
        started = time.time()
        status, _, _ = get(port, "/metrics", timeout=5)
        assert status in (200, 503) and time.time() - started < 4
        assert get(port, "/health/live", timeout=5)[:1] == (200,)
        # The broker itself does not care.
        p = Producer({"bootstrap.servers": broker.bootstrap})
        p.produce(unique("t"), b"x")
        assert p.flush(30) == 0
    finally:
        for s in idle:
            s.close()
    deadline = time.time() + 15
    while get(port, "/metrics")[0] != 200:
        assert time.time() < deadline, "listener did not recover"
        time.sleep(0.1)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 400")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 20000)
        assert s.recv(100).startswith(b"HTTP/1.1 431")
    assert get(port, "/nowhere")[0] == 404


def test_a_taken_metrics_port_stops_start_up_only_when_chosen():
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    data = tempfile.mkdtemp(prefix="weir-mport-", dir=os.path.join(ROOT, "target"))
    try:
        r = subprocess.run(
            [WEIR, "serve", "--listen", f"127.0.0.1:{free_port()}", "--data-dir", data, "--shards", "1",
             "--metrics-listen", f"127.0.0.1:{taken.getsockname()[1]}"],
            capture_output=True,
            timeout=30,
        )
        assert r.returncode != 0 and b"--metrics-listen" in r.stderr, r.stderr
    finally:
        taken.close()
        shutil.rmtree(data, ignore_errors=True)

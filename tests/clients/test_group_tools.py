"""`weir group` (Kafka's kafka-consumer-groups), `weir consume` over every partition and `weir top`,
against groups and traffic made by a real client (confluent-kafka)."""

import subprocess
import time

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from conftest import WEIR, unique


def weir(*args, check=True):
    return subprocess.run([WEIR, *args], capture_output=True, timeout=60, check=check, text=True)


def produce(bootstrap, topic, counts):
    """Writes counts[p] records `p-i` to each partition p; returns them."""
    p = Producer({"bootstrap.servers": bootstrap})
    sent = []
    for part, n in enumerate(counts):
        for i in range(n):
            p.produce(topic, f"{part}-{i}".encode(), partition=part)
            sent.append(f"{part}-{i}")
    assert p.flush(30) == 0
    return sent


def table(out):
    """Rows of a `weir group lag|describe` table after its header, as dicts."""
    lines = out.splitlines()
    start = next(i for i, l in enumerate(lines) if l.startswith("GROUP "))
    header = lines[start].split()
    rows = []
    for line in lines[start + 1:]:
        if line.startswith("TOTAL LAG") or not line.strip():
            break
        rows.append(dict(zip(header, line.split())))
    return rows


def test_group_describe_lag_and_reset_follow_a_real_consumer(broker):
    b = ["--bootstrap", broker.bootstrap]
    topic, group = unique("gt"), unique("g")
    weir("topic", "create", topic, "-p", "3", *b)
    produce(broker.bootstrap, topic, [10, 20, 30])

    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group, "enable.auto.commit": False,
                  "auto.offset.reset": "earliest", "client.id": "lag-test"})
    c.subscribe([topic])
    deadline = time.time() + 60
    while not c.assignment():
        assert time.time() < deadline, "no assignment"
        c.poll(0.5)
    c.commit(offsets=[TopicPartition(topic, 0, 4), TopicPartition(topic, 1, 20), TopicPartition(topic, 2, 5)], asynchronous=False)
    try:
        listed = weir("group", "list", *b).stdout
        assert any(l.split()[:2] == [group, "Stable"] for l in listed.splitlines()), listed
        described = weir("group", "describe", group, *b).stdout
        assert "state Stable" in described and "1 members" in described, described
        rows = {int(r["PARTITION"]): r for r in table(described)}
        assert {p: (int(r["CURRENT-OFFSET"]), int(r["LOG-END-OFFSET"]), int(r["LAG"])) for p, r in rows.items()} == {
            0: (4, 10, 6), 1: (20, 20, 0), 2: (5, 30, 25)}
        assert all(r["CLIENT-ID"] == "lag-test" for r in rows.values()), described
        assert "TOTAL LAG 31" in weir("group", "lag", group, *b).stdout
        refused = weir("group", "reset-offsets", group, "--to-earliest", "--execute", *b, check=False)
        assert refused.returncode == 1 and "inactive" in refused.stderr, refused.stderr
    finally:
        c.close()

    # Inactive now: a dry run changes nothing, --execute does, and the consumer resumes there.
    plan = weir("group", "reset-offsets", group, "--shift-by", "-3", *b).stdout
    assert "dry run" in plan
    assert "TOTAL LAG 31" in weir("group", "lag", group, *b).stdout
    weir("group", "reset-offsets", group, "--topic", topic, "--shift-by", "-3", "--execute", *b)
    rows = {int(r["PARTITION"]): int(r["CURRENT-OFFSET"]) for r in table(weir("group", "lag", group, *b).stdout)}
    assert rows == {0: 1, 1: 17, 2: 2}
    weir("group", "reset-offsets", group, "--to-offset", "25", "--execute", *b)
    rows = {int(r["PARTITION"]): int(r["CURRENT-OFFSET"]) for r in table(weir("group", "lag", group, *b).stdout)}
    assert rows == {0: 10, 1: 20, 2: 25}, "clamped to each partition's end"
    weir("group", "reset-offsets", group, "--to-timestamp", "0", "--execute", *b)
    rows = {int(r["PARTITION"]): int(r["CURRENT-OFFSET"]) for r in table(weir("group", "lag", group, *b).stdout)}
    assert rows == {0: 0, 1: 0, 2: 0}, "every record is newer than the epoch"
    weir("group", "reset-offsets", group, "--to-timestamp", str(int(time.time() * 1000) + 3_600_000), "--execute", *b)
    rows = {int(r["PARTITION"]): int(r["CURRENT-OFFSET"]) for r in table(weir("group", "lag", group, *b).stdout)}
    assert rows == {0: 10, 1: 20, 2: 30}, "no record is an hour ahead: the end"
    weir("group", "reset-offsets", group, "--to-earliest", "--execute", *b)
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group, "enable.partition.eof": True})
    c.subscribe([topic])
    got, ended, deadline = [], set(), time.time() + 60
    try:
        while len(ended) < 3:
            assert time.time() < deadline
            m = c.poll(1)
            if m is None:
                continue
            if m.error():
                assert m.error().code() == KafkaError._PARTITION_EOF
                ended.add(m.partition())
            else:
                got.append(m.value().decode())
    finally:
        c.close()
    assert len(got) == 60, "the group reads everything again from the earliest offsets"


def test_consume_reads_every_partition(broker):
    b = ["--bootstrap", broker.bootstrap]
    topic = unique("all")
    weir("topic", "create", topic, "-p", "4", *b)
    sent = produce(broker.bootstrap, topic, [5, 0, 7, 3])
    out = weir("consume", topic, "-e", *b).stdout.split()
    assert sorted(out) == sorted(sent)
    for part in range(4):
        mine = [v for v in out if v.startswith(f"{part}-")]
        assert mine == sorted(mine, key=lambda v: int(v.split("-")[1])), "in order within a partition"
    assert weir("consume", topic, "-e", "-p", "2", *b).stdout.split() == [f"2-{i}" for i in range(7)]
    assert weir("consume", topic, "-e", "-o", "1", *b, check=False).returncode != 0, "--offset needs --partition"


def test_top_shows_live_throughput_and_latency(broker):
    topic = unique("top")
    bench = subprocess.Popen(
        [WEIR + "-bench", "e2e", "--bootstrap", broker.bootstrap, "--topic", topic, "--msg-size", "100",
         "--rate", "50000", "--duration", "30s", "--no-pin"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 30
        while True:
            out = weir("top", "-m", f"127.0.0.1:{broker.metrics_port}", "-n", "1", "-d", "1").stdout
            row = next((l.split() for l in out.splitlines() if l.startswith(topic)), None)
            produce_row = next((l.split() for l in out.splitlines() if l.startswith("Produce ")), None)
            # Records in and out per second (columns 1 and 3) while the bench produces and consumes.
            if row and float(row[1]) > 1000 and float(row[3]) > 1000 and produce_row and produce_row[3] != "-":
                break
            assert time.time() < deadline, out
        assert float(produce_row[1]) > 0 and float(produce_row[3]) > 0, out
    finally:
        bench.kill()
        bench.wait()

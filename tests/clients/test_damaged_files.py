"""Damaged files found at restart (issue 12): what recovery keeps, what it reports, and that a real
client then gets its data or an error it surfaces, never a silent stall."""

import os
import struct
import time

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import Broker, read_to_end, unique


def committed(bootstrap, group, topic):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        return c.committed([TopicPartition(topic, 0)], timeout=15)[0].offset
    finally:
        c.close()


def commit(bootstrap, group, topic, offset):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        c.commit(offsets=[TopicPartition(topic, 0, offset)], asynchronous=False)
    finally:
        c.close()


def topic_with_a_record(b, prefix):
    topic = unique(prefix)
    p = Producer({"bootstrap.servers": b.bootstrap})
    p.produce(topic, value=b"x")
    assert p.flush(15) == 0
    return topic


def offsets_files(data_dir):
    d = os.path.join(data_dir, "__consumer_offsets")
    return [os.path.join(d, f) for f in os.listdir(d) if os.path.getsize(os.path.join(d, f)) > 0]


def test_a_damaged_commit_record_loses_only_itself():
    """Groups sharing an offsets file: one commit record damaged in the middle of the file must not
    take the later commits of the other groups with it (replay used to stop and cut there)."""
    b = Broker(shards=1)
    try:
        topic = topic_with_a_record(b, "offs")
        # 40 groups over 16 offsets files: some file holds several, in commit order.
        groups = [unique(f"g{i}") for i in range(40)]
        for i, g in enumerate(groups):
            commit(b.bootstrap, g, topic, 100 + i)
        b.stop()
        path = max(offsets_files(b.data_dir), key=os.path.getsize)
        data = bytearray(open(path, "rb").read())
        # The first record's payload starts after its length and CRC: damage its group name.
        data[8 + 3] ^= 0xFF
        open(path, "wb").write(bytes(data))
        b.start()
        survivors = [committed(b.bootstrap, g, topic) for g in groups]
        lost = [g for g, o in zip(groups, survivors) if o < 0]
        assert len(lost) == 1, f"{len(lost)} groups lost their commit; only the damaged record's one may"
        assert all(o == 100 + i for i, o in enumerate(survivors) if groups[i] not in lost)
        # The file was rewritten without the damage: a commit now lands and survives a restart.
        commit(b.bootstrap, lost[0], topic, 7)
        b.restart()
        assert committed(b.bootstrap, lost[0], topic) == 7
    finally:
        b.close()


def test_a_commit_file_cut_mid_record_keeps_the_commits_before():
    b = Broker(shards=1)
    try:
        topic = topic_with_a_record(b, "offs-cut")
        group = unique("g")
        for offset in (1, 2, 3):
            commit(b.bootstrap, group, topic, offset)
        b.stop()
        (path,) = offsets_files(b.data_dir)
        size = os.path.getsize(path)
        os.truncate(path, size - 5)
        b.start()
        assert committed(b.bootstrap, group, topic) == 2, "the torn last commit is gone, the one before stays"
        commit(b.bootstrap, group, topic, 4)
        b.restart()
        assert committed(b.bootstrap, group, topic) == 4
    finally:
        b.close()


def segment_files(data_dir, topic):
    d = os.path.join(data_dir, f"{topic}-0")
    return sorted(os.path.join(d, f) for f in os.listdir(d) if f.endswith(".log"))


def batch_positions(path):
    """(position, base offset, length) of each batch in a segment file."""
    data = open(path, "rb").read()
    out, at = [], 0
    while at + 12 <= len(data):
        base, length = struct.unpack(">qi", data[at : at + 12])
        if length <= 0:
            break
        out.append((at, base, 12 + length))
        at += 12 + length
    return out


def consume_to_end(bootstrap, topic, deadline_s=60):
    """Every value a consumer reads from partition 0 to its end, and the errors it was given; on an
    error naming an offset it moves past it, as an application that skips damage would."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": unique("g"), "auto.offset.reset": "earliest", "enable.partition.eof": True, "fetch.wait.max.ms": 100})
    c.assign([TopicPartition(topic, 0, 0)])
    got, errors = [], []
    deadline = time.time() + deadline_s
    try:
        while time.time() < deadline:
            m = c.poll(1)
            if m is None:
                continue
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    return got, errors
                errors.append((m.error().code(), m.offset()))
                if m.offset() is not None and m.offset() >= 0:
                    # Assign again rather than seek: a seek racing the fetcher's own retry of the
                    # failed offset can be lost.
                    c.assign([TopicPartition(topic, 0, m.offset() + 1)])
                continue
            got.append(m.value())
        raise AssertionError(f"the consumer never reached the end: read {len(got)}, errors {errors[:5]}")
    finally:
        c.close()


@pytest.mark.parametrize("damage", ["body", "body-and-index", "length-and-index"])
def test_a_consumer_reaches_the_end_past_a_damaged_batch(damage):
    b = Broker(shards=1, extra=["--flush-messages", "1"])
    try:
        topic = unique("seg-damage")
        admin = AdminClient({"bootstrap.servers": b.bootstrap})
        admin.create_topics([NewTopic(topic, 1, 1, config={"segment.bytes": "65536"})])[topic].result(15)
        p = Producer({"bootstrap.servers": b.bootstrap, "linger.ms": 0, "batch.num.messages": 1})
        values = [b"%05d" % i + b"x" * 500 for i in range(600)]
        for v in values:
            p.produce(topic, value=v)
            p.poll(0)
        assert p.flush(30) == 0
        b.stop()
        segments = segment_files(b.data_dir, topic)
        assert len(segments) >= 3
        path = segments[1]
        at, base, length = batch_positions(path)[10]
        data = bytearray(open(path, "rb").read())
        where = at + 8 if damage.startswith("length") else at + length // 2
        for i in range(where, where + 4):
            data[i] ^= 0x5A
        open(path, "wb").write(bytes(data))
        if damage.endswith("index"):
            open(path[: -len(".log")] + ".index", "wb").write(b"\x01\x02\x03")
        b.start()
        got, errors = consume_to_end(b.bootstrap, topic)
        assert got[-1] == values[-1], "the consumer read to the end"
        assert len(got) >= len(values) - 1, f"{len(values) - len(got)} records missing: only the damaged one may be"
        assert set(got) - set(values) <= {g for g in got if g[:5] == b"%05d" % base}, "only the damaged record may differ"
    finally:
        b.close()


def test_a_lost_topic_catalog_never_removes_records():
    """topics.meta lost: the broker starts knowing no topics, warns of the partition directories it
    does not name, and a produce that auto-creates the topic again moves the old directory aside
    instead of removing it (it used to remove every record the lost catalog named)."""
    b = Broker(shards=1)
    try:
        topic = unique("lost-catalog")
        p = Producer({"bootstrap.servers": b.bootstrap, "acks": "all"})
        for i in range(1000):
            p.produce(topic, value=b"v%d" % i)
        assert p.flush(30) == 0
        b.stop()
        old_dir = os.path.join(b.data_dir, f"{topic}-0")
        old_bytes = sum(os.path.getsize(os.path.join(old_dir, f)) for f in os.listdir(old_dir) if f.endswith(".log"))
        assert old_bytes > 1000 * 2
        open(os.path.join(b.data_dir, "topics.meta"), "wb").close()
        b.start()
        p = Producer({"bootstrap.servers": b.bootstrap, "acks": "all"})
        p.produce(topic, value=b"after")
        assert p.flush(30) == 0
        log = open(b.log_path, errors="replace").read()
        assert "topics.meta does not name" in log and f"{topic}-0" in log
        aside = [d for d in os.listdir(b.data_dir) if d.startswith(f"{topic}-0.") and d.endswith(".orphaned")]
        assert len(aside) == 1, os.listdir(b.data_dir)
        kept = os.path.join(b.data_dir, aside[0])
        assert sum(os.path.getsize(os.path.join(kept, f)) for f in os.listdir(kept) if f.endswith(".log")) == old_bytes
        # The recreated topic holds only the new record; the moved directory is not read as a topic.
        assert [v for _, _, v in read_to_end(b.bootstrap, topic)] == [b"after"]
        b.restart()
        assert [v for _, _, v in read_to_end(b.bootstrap, topic)] == [b"after"]
    finally:
        b.close()

"""Damaged files found at restart (issue 12): what recovery keeps, what it reports, and that a real
client then gets its data or an error it surfaces, never a silent stall."""

import os

from confluent_kafka import Consumer, Producer, TopicPartition

from conftest import Broker, unique


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


def offsets_files(data_dir):
    d = os.path.join(data_dir, "__consumer_offsets")
    return [os.path.join(d, f) for f in os.listdir(d) if os.path.getsize(os.path.join(d, f)) > 0]


def test_a_damaged_commit_record_loses_only_itself():
    """Groups sharing an offsets file: one commit record damaged in the middle of the file must not
    take the later commits of the other groups with it (replay used to stop and cut there)."""
    b = Broker(shards=1)
    try:
        topic = unique("offs")
        p = Producer({"bootstrap.servers": b.bootstrap})
        p.produce(topic, value=b"x")
        assert p.flush(15) == 0
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
        topic = unique("offs-cut")
        p = Producer({"bootstrap.servers": b.bootstrap})
        p.produce(topic, value=b"x")
        assert p.flush(15) == 0
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

"""A full disk: appends fail with KAFKA_STORAGE_ERROR and nothing acknowledged is lost; freeing space
lets a partition that ran out append again without a restart; the broker starts on a full disk, serves
reads, and deletes topics to free space. Runs on a small loop-mounted filesystem (root only)."""

import os
import shutil
import subprocess
import tempfile
import time

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import ROOT, Broker, unique

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small filesystem needs root")

VALUE = b"v" * (64 << 10)


@pytest.fixture
def small_fs():
    mount = tempfile.mkdtemp(prefix="weir-full-", dir=os.path.join(ROOT, "target"))
    image = mount + ".img"
    subprocess.run(["truncate", "-s", "48M", image], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "0", image], check=True)
    subprocess.run(["mount", "-o", "loop", image, mount], check=True)
    try:
        yield os.path.join(mount, "data")
    finally:
        subprocess.run(["umount", "-l", mount], check=False)
        os.remove(image)
        shutil.rmtree(mount, ignore_errors=True)


def produce_until_full(bootstrap, topic, limit=2000):
    """Produces 64 KiB records one at a time until one is refused; returns how many were acknowledged."""
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "retries": 0, "message.timeout.ms": 10000, "linger.ms": 0})
    acked = 0
    for _ in range(limit):
        errors = []
        p.produce(topic, value=VALUE, partition=0, on_delivery=lambda err, msg: errors.append(err))
        p.flush(15)
        assert errors, "no delivery report"
        if errors[0] is not None:
            assert errors[0].code() == KafkaError.KAFKA_STORAGE_ERROR, errors[0]
            return acked
        acked += 1
    pytest.fail(f"{limit} records of 64 KiB fit a 48 MiB filesystem")


def fill_the_rest(path):
    """Takes every byte left on the filesystem: not a block free."""
    with open(os.path.join(path, "ballast"), "wb", buffering=0) as f:
        for size in (1 << 20, 4096, 1):
            try:
                while True:
                    f.write(b"b" * size)
            except OSError:
                pass
    assert os.statvfs(path).f_bavail == 0


def count_records(bootstrap, topic):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": unique("g"), "enable.auto.commit": False})
    c.assign([TopicPartition(topic, 0, 0)])
    n, deadline, quiet_since = 0, time.time() + 60, time.time()
    while time.time() < deadline and time.time() - quiet_since < 3:
        m = c.poll(0.5)
        if m is not None and not m.error():
            assert m.value() == VALUE
            n, quiet_since = n + 1, time.time()
    c.close()
    return n


def produce_one_eventually(bootstrap, topic, deadline_s=60):
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "retries": 0, "message.timeout.ms": 10000})
    deadline = time.time() + deadline_s
    while True:
        errors = []
        p.produce(topic, value=VALUE, partition=0, on_delivery=lambda err, msg: errors.append(err))
        p.flush(15)
        if errors and errors[0] is None:
            return
        assert time.time() < deadline, f"appends still refused: {errors}"
        time.sleep(0.5)


def two_topics(bootstrap):
    """Creates a topic to fill the disk with (1 MiB segments) and one to write to: (admin client,
    filler, main)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    filler, main = unique("filler"), unique("main")
    admin.create_topics([NewTopic(filler, 1, config={"segment.bytes": str(1 << 20)})])[filler].result(30)
    admin.create_topics([NewTopic(main, 1)])[main].result(30)
    return admin, filler, main


def test_a_full_disk_refuses_appends_then_recovers_without_a_restart(small_fs):
    b = Broker(data_dir=small_fs)
    try:
        admin, filler, main = two_topics(b.bootstrap)
        p = Producer({"bootstrap.servers": b.bootstrap, "acks": "all"})
        for _ in range(300):
            p.produce(filler, value=VALUE, partition=0)
        assert p.flush(60) == 0
        acked = produce_until_full(b.bootstrap, main)
        assert b.alive()
        assert count_records(b.bootstrap, main) == acked, "every acknowledged record reads back"
        # Space freed: the partition that ran out appends again, no restart.
        admin.delete_topics([filler])[filler].result(30)
        produce_one_eventually(b.bootstrap, main)
        assert count_records(b.bootstrap, main) == acked + 1
    finally:
        assert b.alive()
        b.close()


def test_the_broker_starts_on_a_full_disk_and_delete_records_and_topics_free_it(small_fs):
    b = Broker(data_dir=small_fs)
    try:
        _, filler, main = two_topics(b.bootstrap)
        acked = produce_until_full(b.bootstrap, filler)
        b.stop()
        fill_the_rest(os.path.dirname(small_fs))
        b.start()
        assert count_records(b.bootstrap, filler) == acked, "reads are served on a full disk"
        admin = AdminClient({"bootstrap.servers": b.bootstrap})
        # DeleteRecords drops the filler's closed segments, which frees the disk.
        [deleted] = admin.delete_records([TopicPartition(filler, 0, acked)]).values()
        assert deleted.result(30).low_watermark == acked
        produce_one_eventually(b.bootstrap, main)
        assert count_records(b.bootstrap, main) == 1
        admin.delete_topics([filler])[filler].result(30)
        produce_one_eventually(b.bootstrap, main)
        assert count_records(b.bootstrap, main) == 2
    finally:
        assert b.alive()
        b.close()

"""Replication across shards: topics with replicas on several shards, acks=all waiting for the
in-sync replicas, min.insync.replicas, a follower that fails leaving the ISR and one that restarts
catching up. Every copy is checked byte for byte against its leader's."""

import glob
import os
import signal
import subprocess
import time

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from conftest import Broker, read_to_end, unique


def create(bootstrap, name, partitions, replication, **configs):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    topic = NewTopic(name, partitions, replication, config={k.replace("_", "."): str(v) for k, v in configs.items()})
    admin.create_topics([topic])[name].result(30)
    return admin


def partitions_of(admin, topic):
    return sorted(admin.list_topics(topic, timeout=10).topics[topic].partitions.values(), key=lambda p: p.id)


def wait_for(what, check, timeout=30):
    deadline = time.time() + timeout
    while not check():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def copies(data_dir, topic, p):
    """The leader's and each follower's log bytes of partition p (zeros after the last batch cut)."""

    def content(d):
        return b"".join(open(f, "rb").read().rstrip(b"\0") for f in sorted(glob.glob(os.path.join(d, "*.log"))))

    leader = content(os.path.join(data_dir, f"{topic}-{p}"))
    followers = [content(d) for d in sorted(glob.glob(os.path.join(data_dir, f"{topic}-{p}.replica-*")))]
    return leader, followers


def produce(bootstrap, topic, n, acks="all", partition=None, **config):
    p = Producer({"bootstrap.servers": bootstrap, "acks": acks, "linger.ms": 5, **{k.replace("_", "."): v for k, v in config.items()}})
    errors = []
    for i in range(n):
        kwargs = {} if partition is None else {"partition": partition}
        p.produce(topic, key=b"k%d" % i, value=b"v%d" % i, on_delivery=lambda e, m: e and errors.append(e), **kwargs)
        if i % 5000 == 0:
            p.poll(0)
    assert p.flush(60) == 0
    return errors


def test_placement_metadata_and_refusals():
    b = Broker(shards=2, extra=["--default-replication-factor", "2"])
    try:
        name = unique("placed")
        admin = create(b.bootstrap, name, 4, 2)
        parts = partitions_of(admin, name)
        leaders = set()
        for p in parts:
            assert sorted(p.replicas) == [0, 1] and p.leader == p.replicas[0] and sorted(p.isrs) == [0, 1], p
            leaders.add(p.leader)
        assert leaders == {0, 1}, "leaders spread over the shards"
        # -1: default.replication.factor, here 2 (auto-created topics too).
        defaulted = unique("defaulted")
        create(b.bootstrap, defaulted, 1, -1)
        assert len(partitions_of(admin, defaulted)[0].replicas) == 2
        for r, code in ((3, KafkaError.INVALID_REPLICATION_FACTOR), (0, KafkaError.INVALID_REPLICATION_FACTOR)):
            with pytest.raises(KafkaException) as e:
                create(b.bootstrap, unique("bad"), 1, r)
            assert e.value.args[0].code() == code, e.value
    finally:
        b.close()


def test_manual_assignment_refused():
    b = Broker(shards=2)
    try:
        admin = AdminClient({"bootstrap.servers": b.bootstrap})
        name = unique("assigned")
        with pytest.raises(KafkaException) as e:
            admin.create_topics([NewTopic(name, 1, replica_assignment=[[1, 0]])])[name].result(30)
        assert e.value.args[0].code() == KafkaError.INVALID_REPLICA_ASSIGNMENT, e.value
    finally:
        b.close()


def test_single_port_is_one_broker():
    b = Broker(shards=2, extra=["--single-port"])
    try:
        with pytest.raises(KafkaException) as e:
            create(b.bootstrap, unique("one"), 1, 2)
        assert e.value.args[0].code() == KafkaError.INVALID_REPLICATION_FACTOR
    finally:
        b.close()


def test_acks_all_copies_every_record_to_every_replica():
    b = Broker(shards=2)
    try:
        name = unique("copied")
        create(b.bootstrap, name, 2, 2, min_insync_replicas=2)
        assert produce(b.bootstrap, name, 20000, partition=0) == []
        assert produce(b.bootstrap, name, 2000, partition=1, compression_type="lz4") == []
        got = read_to_end(b.bootstrap, name)
        assert [v for _, _, v in got] == [b"v%d" % i for i in range(20000)]
        b.stop()
        for p in (0, 1):
            leader, followers = copies(b.data_dir, name, p)
            assert len(leader) > 0 and followers == [leader], f"partition {p}: the follower's copy differs"
    finally:
        b.close()


def test_kafka_python_acks_all_on_replicated_topic():
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import KafkaAdminClient, NewTopic as KpNewTopic

    b = Broker(shards=2)
    try:
        name = unique("kp")
        admin = KafkaAdminClient(bootstrap_servers=b.bootstrap)
        admin.create_topics([KpNewTopic(name, 1, 2, topic_configs={"min.insync.replicas": "2"})])
        admin.close()
        p = KafkaProducer(bootstrap_servers=b.bootstrap, acks="all")
        futures = [p.send(name, value=b"x%d" % i, partition=0) for i in range(500)]
        offsets = [f.get(timeout=30).offset for f in futures]
        assert offsets == list(range(500))
        p.close()
        c = KafkaConsumer(bootstrap_servers=b.bootstrap, auto_offset_reset="earliest", consumer_timeout_ms=10000)
        c.assign([TopicPartition(name, 0)])
        assert [m.value for m in c][:500] == [b"x%d" % i for i in range(500)]
        c.close()
        b.stop()
        leader, followers = copies(b.data_dir, name, 0)
        assert followers == [leader] and leader
    finally:
        b.close()


def test_restarted_follower_catches_up():
    b = Broker(shards=2)
    try:
        name = unique("restart")
        create(b.bootstrap, name, 1, 2)
        assert produce(b.bootstrap, name, 5000, acks="1") == []
        b.restart(signal.SIGKILL)
        assert produce(b.bootstrap, name, 5000, acks="all") == []
        got = read_to_end(b.bootstrap, name)
        assert len(got) == 10000 and [o for o, _, _ in got] == list(range(10000))
        b.stop()
        leader, followers = copies(b.data_dir, name, 0)
        assert followers == [leader]
    finally:
        b.close()


def offline_replicas(bootstrap, topic):
    """Partition 0's offline replicas, from a Metadata v9 response (confluent-kafka does not show them)."""
    from kafka.protocol.metadata import MetadataRequest, MetadataResponse

    from kafka_wire import Connection, build

    conn = Connection(int(bootstrap.split(":")[1]))
    try:
        req = build(MetadataRequest, 9, topics=[{"name": topic}], allow_auto_topic_creation=False,
                    include_topic_authorized_operations=False)
        resp = conn.call(req, MetadataResponse)
        return list(resp.topics[0].partitions[0].offline_replicas)
    finally:
        conn.close()


def min_isr_one(topic):
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry

    entry = ConfigEntry("min.insync.replicas", "1", incremental_operation=AlterConfigOpType.SET)
    return ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[entry])


def can_make_immutable(path):
    probe = os.path.join(path, "probe")
    open(probe, "wb").close()
    try:
        ok = subprocess.run(["chattr", "+i", probe], capture_output=True).returncode == 0
        if ok:
            subprocess.run(["chattr", "-i", probe], check=True)
        return ok
    except FileNotFoundError:
        return False
    finally:
        os.remove(probe)


@pytest.mark.skipif(os.geteuid() != 0, reason="making a follower's file immutable needs root")
def test_failed_follower_leaves_isr_and_min_insync_replicas():
    b = Broker(shards=2, extra=["--replica-lag-time-max-ms", "1500"])
    try:
        if not can_make_immutable(b.data_dir):
            pytest.skip("chattr +i does not work here")
        name = unique("isr")
        admin = create(b.bootstrap, name, 1, 2, min_insync_replicas=2)
        assert produce(b.bootstrap, name, 100) == []
        part = partitions_of(admin, name)[0]
        follower = [r for r in part.replicas if r != part.leader][0]
        segment = glob.glob(os.path.join(b.data_dir, f"{name}-0.replica-{follower}", "*.log"))[0]
        # The follower's disk fails: its writes are refused from now on.
        subprocess.run(["chattr", "+i", segment], check=True)
        try:
            # Written by the leader, never copied: not acknowledged under acks=all with min.insync.replicas=2.
            errors = produce(b.bootstrap, name, 1, message_timeout_ms=6000, request_timeout_ms=5000)
            assert [e.code() for e in errors] in ([KafkaError._MSG_TIMED_OUT], [KafkaError.REQUEST_TIMED_OUT], [KafkaError.NOT_ENOUGH_REPLICAS]), errors
            wait_for("the follower to leave the ISR", lambda: partitions_of(admin, name)[0].isrs == [part.leader])
            errors = produce(b.bootstrap, name, 1, retries=0)
            assert [e.code() for e in errors] == [KafkaError.NOT_ENOUGH_REPLICAS], errors
            admin.incremental_alter_configs([min_isr_one(name)])[
                ConfigResource(ConfigResource.Type.TOPIC, name)
            ].result(30)
            wait_for("acks=all to go through with one in-sync replica", lambda: produce(b.bootstrap, name, 1, retries=0) == [])
            got = read_to_end(b.bootstrap, name)
            assert [v for _, _, v in got][:100] == [b"v%d" % i for i in range(100)] and len(got) >= 102
        finally:
            subprocess.run(["chattr", "-i", segment], check=True)
        # Repaired and restarted: the follower copies what it missed and joins the ISR again.
        b.restart()
        wait_for("the follower to rejoin the ISR", lambda: sorted(partitions_of(admin, name)[0].isrs) == sorted(part.replicas))
        b.stop()
        leader, followers = copies(b.data_dir, name, 0)
        assert followers == [leader]
    finally:
        b.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="making a leader's file immutable needs root")
def test_leader_failure_moves_leadership_and_the_old_leader_rejoins():
    b = Broker(shards=2, extra=["--leader-imbalance-check-interval-seconds", "1"])
    try:
        if not can_make_immutable(b.data_dir):
            pytest.skip("chattr +i does not work here")
        name = unique("failover")
        admin = create(b.bootstrap, name, 1, 2)
        p = Producer({"bootstrap.servers": b.bootstrap, "acks": "all", "enable.idempotence": True, "linger.ms": 5})
        errors = []

        def send(start, count):
            for i in range(start, start + count):
                p.produce(name, value=b"v%d" % i, partition=0, on_delivery=lambda e, m: e and errors.append(e))
            assert p.flush(60) == 0

        send(0, 1000)
        before = partitions_of(admin, name)[0]
        old, new = before.leader, [r for r in before.replicas if r != before.leader][0]
        segment = glob.glob(os.path.join(b.data_dir, f"{name}-0", "*.log"))[0]
        subprocess.run(["chattr", "+i", segment], check=True)
        try:
            # The leader's disk fails under the producer: it retries on the new leader, in order.
            send(1000, 1000)
            after = partitions_of(admin, name)[0]
            assert (after.leader, after.isrs) == (new, [new]), after
            assert offline_replicas(b.bootstrap, name) == [old]
            values = [v for _, _, v in read_to_end(b.bootstrap, name)]
            assert values == [b"v%d" % i for i in range(2000)] and errors == []
        finally:
            subprocess.run(["chattr", "-i", segment], check=True)
        # Repaired and restarted: the old leader follows, catches up, and is in sync again.
        b.restart()
        send(2000, 500)
        wait_for(
            "the old leader to rejoin",
            lambda: sorted(partitions_of(admin, name)[0].isrs) == [0, 1] and offline_replicas(b.bootstrap, name) == [],
        )
        # In sync again, the preferred replica leads again (auto.leader.rebalance.enable).
        wait_for("leadership back on the preferred replica", lambda: partitions_of(admin, name)[0].leader == old)
        send(2500, 500)
        assert [v for _, _, v in read_to_end(b.bootstrap, name)] == [b"v%d" % i for i in range(3000)] and errors == []
        b.stop()
        leader, followers = copies(b.data_dir, name, 0)
        assert followers == [leader]
    finally:
        b.close()


def test_elect_leaders():
    from confluent_kafka import ElectionType, TopicPartition

    b = Broker(shards=2, extra=["--no-auto-leader-rebalance", "--replica-lag-time-max-ms", "1000"])
    try:
        name = unique("elect")
        admin = create(b.bootstrap, name, 2, 2)
        assert produce(b.bootstrap, name, 100) == []
        tps = [TopicPartition(name, 0), TopicPartition(name, 1)]

        def elect(kind):
            result = admin.elect_leaders(kind, tps).result(30)
            return {tp.partition: (err.code() if err else 0) for tp, err in result.items()}

        # Every partition leads on its preferred replica already; none lacks a leader.
        assert elect(ElectionType.PREFERRED) == {0: KafkaError.ELECTION_NOT_NEEDED, 1: KafkaError.ELECTION_NOT_NEEDED}
        assert elect(ElectionType.UNCLEAN) == {0: KafkaError.ELECTION_NOT_NEEDED, 1: KafkaError.ELECTION_NOT_NEEDED}
        missing = admin.elect_leaders(ElectionType.PREFERRED, [TopicPartition(name, 7)]).result(30)
        assert [e.code() for e in missing.values()] == [KafkaError.UNKNOWN_TOPIC_OR_PART]
    finally:
        b.close()


def test_offset_for_leader_epoch_and_epoch_fencing():
    from kafka.protocol.consumer.offsets import OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse

    from kafka_wire import Connection, build

    b = Broker(shards=2)
    try:
        replicated, single = unique("epochs"), unique("single")
        admin = create(b.bootstrap, replicated, 1, 2)
        create(b.bootstrap, single, 1, 1)
        assert produce(b.bootstrap, replicated, 10, partition=0) == [] and produce(b.bootstrap, single, 7, partition=0) == []

        def ask(topic, epoch, current):
            leader = partitions_of(admin, topic)[0].leader
            conn = Connection(b.port + leader)
            try:
                req = build(OffsetForLeaderEpochRequest, 4, replica_id=-1,
                            topics=[{"topic": topic, "partitions": [{"partition": 0, "current_leader_epoch": current, "leader_epoch": epoch}]}])
                p = conn.call(req, OffsetForLeaderEpochResponse).topics[0].partitions[0]
                return p.error_code, p.leader_epoch, p.end_offset
            finally:
                conn.close()

        assert ask(replicated, 0, 0) == (0, 0, 10)
        assert ask(replicated, 0, -1) == (0, 0, 10)
        assert ask(replicated, 3, 0) == (0, -1, -1), "no epoch at or above 3"
        assert ask(replicated, 0, 1)[0] == 75, "UNKNOWN_LEADER_EPOCH: newer than the partition's"
        assert ask(single, 0, 0) == (0, 0, 7), "a topic of one replica leads in epoch 0"
        b.stop()
        checkpoints = sorted(glob.glob(os.path.join(b.data_dir, f"{replicated}-0*", "leader-epoch-checkpoint")))
        assert len(checkpoints) == 2 and all(open(c).read() == "0\n1\n0 0\n" for c in checkpoints)
        # A restarted broker's leaders lead in a new epoch (a follower then cuts what the leader lost
        # in a crash instead of keeping it under offsets the leader gives to other records).
        b.start()
        assert ask(replicated, 0, 1) == (0, 0, 10), "epoch 0 ended at 10"
        assert ask(replicated, 1, 1) == (0, 1, 10)
        assert ask(replicated, 0, 0)[0] == 74, "FENCED_LEADER_EPOCH: the epoch before the restart"
        assert ask(single, 0, 0) == (0, 0, 7), "a topic of one replica keeps epoch 0"
    finally:
        b.close()


def test_a_shard_count_change_with_replicated_topics_is_refused():
    from conftest import WEIR

    b = Broker(shards=2)
    try:
        name = unique("placed")
        create(b.bootstrap, name, 2, 2)
        assert produce(b.bootstrap, name, 10) == []
        b.stop()
        # Replicas are placed by the shard count: three shards would look for them elsewhere.
        refused = subprocess.run([WEIR, "serve", "--listen", b.bootstrap, "--data-dir", b.data_dir, "--shards", "3"],
                                 capture_output=True, text=True, timeout=60)
        assert refused.returncode != 0 and "start with --shards 2" in refused.stderr, refused.stderr
        b.start()
        assert sum(1 for _ in read_to_end(b.bootstrap, name, partition=0)) + sum(1 for _ in read_to_end(b.bootstrap, name, partition=1)) == 10
    finally:
        b.close()


@pytest.fixture
def failing_disk():
    """A small loop-mounted ext4 filesystem (errors=remount-ro) that can be made to fail — ext4's
    own error path, as on a disk error: writes get EROFS from then on — and repaired (fsck, mount
    again); yields (mount point, fail, repair). Root only."""
    if os.geteuid() != 0:
        pytest.skip("mounting a filesystem needs root")
    import tempfile

    from conftest import ROOT

    mnt = tempfile.mkdtemp(prefix="weir-disk-", dir=os.path.join(ROOT, "target"))
    image = mnt + ".img"
    subprocess.run(["truncate", "-s", "128M", image], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", image], check=True)

    def mount():
        subprocess.run(["mount", "-o", "loop,errors=remount-ro", image, mnt], check=True)
        dev = os.path.basename(subprocess.run(["findmnt", "-n", "-o", "SOURCE", mnt], check=True, capture_output=True, text=True).stdout.strip())
        return f"/sys/fs/ext4/{dev}/trigger_fs_error"

    trigger = [mount()]
    if not os.path.exists(trigger[0]):
        subprocess.run(["umount", "-l", mnt], check=False)
        pytest.skip("this kernel's ext4 has no trigger_fs_error")

    def fail():
        with open(trigger[0], "w") as f:
            f.write("weir test: the disk fails\n")

    def repair():
        subprocess.run(["umount", mnt], check=True)
        subprocess.run(["e2fsck", "-fy", image], capture_output=True)
        trigger[0] = mount()

    try:
        yield mnt, fail, repair
    finally:
        subprocess.run(["umount", "-l", mnt], check=False)
        os.remove(image)
        os.rmdir(mnt)


def describe_log_dir(port):
    from kafka.protocol.admin import DescribeLogDirsRequest, DescribeLogDirsResponse

    from kafka_wire import Connection, build

    conn = Connection(port)
    try:
        return conn.call(build(DescribeLogDirsRequest, 4, topics=None), DescribeLogDirsResponse).results[0]
    finally:
        conn.close()


def test_a_failed_shard_directory_moves_leadership_and_rejoins_after_repair(failing_disk):
    import tempfile

    from conftest import ROOT

    mnt, fail, repair = failing_disk
    base = tempfile.mkdtemp(prefix="weir-it-", dir=os.path.join(ROOT, "target"))
    b = Broker(shards=2, data_dir=f"{base},{mnt}/data")
    try:
        name = unique("disk")
        admin = create(b.bootstrap, name, 2, 2)
        assert {p.leader for p in partitions_of(admin, name)} == {0, 1}
        p = Producer({"bootstrap.servers": b.bootstrap, "acks": "all", "enable.idempotence": True, "linger.ms": 5})
        errors = []

        def send(start, count):
            for i in range(start, start + count):
                for part in (0, 1):
                    p.produce(name, value=b"v%d" % i, partition=part, on_delivery=lambda e, m: e and errors.append(e))
            assert p.flush(60) == 0

        send(0, 2000)
        dirs = {r.log_dir: r for r in (describe_log_dir(b.port), describe_log_dir(b.port + 1))}
        assert set(dirs) == {base, f"{mnt}/data"} and all(r.error_code == 0 for r in dirs.values())
        ours = dirs[f"{mnt}/data"]
        assert ours.total_bytes > 0 and sum(q.partition_size for t in ours.topics for q in t.partitions) > 0
        # Shard 1's filesystem fails: its writes get EROFS from now on.
        fail()
        send(2000, 2000)
        assert errors == []
        wait_for("both partitions led from shard 0", lambda: [q.leader for q in partitions_of(admin, name)] == [0, 0])
        assert [q.isrs for q in partitions_of(admin, name)] == [[0], [0]]
        wait_for("shard 1 offline", lambda: offline_replicas(b.bootstrap, name) == [1])
        assert describe_log_dir(b.port + 1).error_code == 56, "KAFKA_STORAGE_ERROR for the failed directory"
        for part in (0, 1):
            assert [v for _, _, v in read_to_end(b.bootstrap, name, partition=part)] == [b"v%d" % i for i in range(4000)]
        # Repaired (the broker stopped, the filesystem checked and mounted again): shard 1's replicas
        # catch up from shard 0 and are in sync again.
        b.stop(signal.SIGKILL)
        repair()
        b.start()
        send(4000, 100)
        wait_for("shard 1 back in sync", lambda: [sorted(q.isrs) for q in partitions_of(admin, name)] == [[0, 1], [0, 1]], timeout=60)
        p.flush(30)
        for part in (0, 1):
            assert [v for _, _, v in read_to_end(b.bootstrap, name, partition=part)] == [b"v%d" % i for i in range(4100)]
        assert errors == []
    finally:
        b.close()
        import shutil

        shutil.rmtree(base, ignore_errors=True)


def test_kill_during_replication_loses_nothing_acknowledged():
    import threading

    b = Broker(shards=2, extra=["--flush-messages", "1"])
    try:
        name = unique("killed")
        create(b.bootstrap, name, 2, 2, min_insync_replicas=2)
        acked, stop = {0: set(), 1: set()}, threading.Event()

        def run():
            p = Producer({"bootstrap.servers": b.bootstrap, "acks": "all", "linger.ms": 2, "message.timeout.ms": 20000})

            def done(err, msg):
                if err is None:
                    acked[msg.partition()].add(msg.value())

            i = 0
            while not stop.is_set():
                p.produce(name, value=b"v%d" % i, partition=i % 2, on_delivery=done)
                p.poll(0)
                i += 1
                if i % 200 == 0:
                    time.sleep(0.005)
            p.flush(30)

        t = threading.Thread(target=run)
        t.start()
        wait_for("records acknowledged on both partitions", lambda: min(len(acked[0]), len(acked[1])) > 500)
        b.restart(signal.SIGKILL)
        stop.set()
        t.join(60)
        assert len(acked[0]) + len(acked[1]) > 1000
        for part in (0, 1):
            got = {v for _, _, v in read_to_end(b.bootstrap, name, partition=part)}
            assert acked[part] <= got, f"partition {part}: {len(acked[part] - got)} acknowledged records lost"
        wait_for("both replicas in sync after the restart", lambda: all(sorted(q.isrs) == [0, 1] for q in partitions_of(AdminClient({"bootstrap.servers": b.bootstrap}), name)))
    finally:
        b.close()

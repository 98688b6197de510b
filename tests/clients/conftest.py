"""Fixtures that start the real `weir` release binary on free ports with a temporary data dir."""

import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WEIR = os.environ.get("WEIR_BIN", os.path.join(ROOT, "target", "release", "weir"))


def ports_free(base, count):
    for port in range(base, base + count):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port, timeout=15):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"broker did not listen on {port}")


def wait_refused(port, timeout=15):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                time.sleep(0.05)
        except OSError:
            return
    raise RuntimeError(f"port {port} still accepts connections after the broker ended")


class Broker:
    """A running weir broker; `restart()` keeps the data directory."""

    def __init__(self, shards=2, extra=(), prefix=(), data_dir=None):
        self.shards = shards
        self.extra = list(extra)
        # A command the broker runs under, e.g. `prlimit --as=...` for a resource limit.
        self.prefix = list(prefix)
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="weir-it-", dir=os.path.join(ROOT, "target"))
        while True:
            self.port = random.randrange(20000, 60000)
            if ports_free(self.port, shards):
                break
        # Its own metrics port (the default, 9644, is one per machine).
        self.metrics_port = None
        if not any(a.startswith("--metrics-listen") for a in self.extra):
            self.metrics_port = free_port()
            self.extra += ["--metrics-listen", f"127.0.0.1:{self.metrics_port}"]
        self.proc = None
        self.log_path = os.path.join(ROOT, "target", os.path.basename(self.data_dir) + f"-{self.port}.log")
        self.start()

    @property
    def bootstrap(self):
        return f"127.0.0.1:{self.port}"

    def start(self):
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self.prefix + [WEIR, "serve", "--listen", self.bootstrap, "--data-dir", self.data_dir, "--shards", str(self.shards)] + self.extra,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        ports = 1 if "--single-port" in self.extra else self.shards
        for i in range(ports):
            wait_listening(self.port + i)

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)
            # A killed process's listening sockets outlive it while the kernel tears down its
            # io_uring (a pending accept holds them), and may accept a connection meanwhile, then
            # reset it: wait until they refuse.
            ports = 1 if "--single-port" in self.extra else self.shards
            for i in range(ports):
                wait_refused(self.port + i)
        self.log.close()

    def restart(self, sig=signal.SIGTERM):
        self.stop(sig)
        self.start()

    def alive(self):
        return self.proc.poll() is None

    def close(self):
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)
        try:
            os.remove(self.log_path)
        except OSError:
            pass


@pytest.fixture
def broker():
    b = Broker()
    yield b
    assert b.alive(), "broker died during the test"
    b.close()


@pytest.fixture(scope="module")
def shared_broker():
    b = Broker()
    yield b
    assert b.alive(), "broker died during the tests"
    b.close()


def read_to_end(bootstrap, topic, timeout=30, partition=0, **config):
    """Messages (offset, key, value) a fresh confluent-kafka consumer reads from the start of
    `partition` of `topic` to its end, with extra consumer `config`; fails after `timeout` s."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": unique("g"), "enable.partition.eof": True, **config})
    c.assign([TopicPartition(topic, partition, OFFSET_BEGINNING)])
    got = []
    deadline = time.time() + timeout
    try:
        while True:
            assert time.time() < deadline, f"{config}: no end of partition; read {len(got)} records"
            m = c.poll(1)
            if m is None:
                continue
            if m.error():
                assert m.error().code() == KafkaError._PARTITION_EOF, m.error()
                return got
            got.append((m.offset(), m.key(), m.value()))
    finally:
        c.close()


def unique(name):
    return f"{name}-{random.randrange(1 << 30):x}"

"""kcat (Debian's, on librdkafka 2.0.2) and weir's own tools against the real broker."""

import shutil
import subprocess

import pytest

from conftest import unique

KCAT = shutil.which("kcat") or shutil.which("kafkacat")
pytestmark = pytest.mark.skipif(KCAT is None, reason="kcat is installed by scripts/install-test-deps.sh (Debian package kcat)")


def kcat(*args, stdin=None):
    return subprocess.run([KCAT, *args], input=stdin, capture_output=True, timeout=30, check=True).stdout


def test_kcat_round_trip(shared_broker):
    topic = unique("kc")
    lines = "".join(f"k{i}:v{i}\n" for i in range(100)).encode()
    kcat("-P", "-b", shared_broker.bootstrap, "-t", topic, "-K:", "-z", "snappy", stdin=lines)
    out = kcat("-C", "-b", shared_broker.bootstrap, "-t", topic, "-e", "-q", "-f", "%k=%s %o\n")
    assert out.decode().splitlines() == [f"k{i}=v{i} {i}" for i in range(100)]
    meta = kcat("-L", "-b", shared_broker.bootstrap).decode()
    assert "2 brokers" in meta and topic in meta


def test_kcat_group_consumer(shared_broker):
    topic = unique("kcg")
    kcat("-P", "-b", shared_broker.bootstrap, "-t", topic, stdin=b"a\nb\nc\n")
    out = kcat("-b", shared_broker.bootstrap, "-G", unique("g"), "-o", "beginning", "-e", "-q", topic)
    assert sorted(out.decode().split()) == ["a", "b", "c"]

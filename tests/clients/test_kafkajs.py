"""kafkajs 2.x (Node.js) against the real broker; the script lives in tests/clients/kafkajs."""

import os
import shutil
import subprocess

import pytest

from conftest import unique

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kafkajs")
pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or not os.path.isdir(os.path.join(HERE, "node_modules", "kafkajs")),
    reason="node and kafkajs are installed by scripts/install-test-deps.sh",
)


def test_kafkajs_round_trip_and_group(shared_broker):
    out = subprocess.run(["node", "roundtrip.js", shared_broker.bootstrap, unique("kjs")], cwd=HERE, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr + out.stdout
    assert out.stdout.strip() == "ok 600"


def test_kafkajs_transactions(shared_broker):
    out = subprocess.run(["node", "transactions.js", shared_broker.bootstrap, unique("kjs-txn")], cwd=HERE, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr + out.stdout
    assert out.stdout.strip() == "ok 3"

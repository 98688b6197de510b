"""Where shards run: pinned, shard N and its blocking threads on core N (the default); with
--floating-shards, on any core the kernel picks (for hosts whose cores other processes keep busy)."""

import os

import pytest

from conftest import Broker
from test_robustness import produce_consume_ok

pytestmark = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two cores")


def shard_cpus(pid):
    """{thread name: set of the CPU sets its threads may run on} for the broker's shard threads."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/comm") as f:
            name = f.read().strip()
        if name.startswith("weir-shard-"):
            out.setdefault(name, set()).add(frozenset(os.sched_getaffinity(int(tid))))
    return out


def test_shards_are_pinned_by_default():
    b = Broker(shards=2)
    try:
        cpus = shard_cpus(b.proc.pid)
        assert len(cpus) == 2, cpus
        for name, sets in cpus.items():
            assert sets == {frozenset([int(name.split("-")[2])])}, f"{name} and its blocking threads on its own core: {sets}"
        assert produce_consume_ok(b.bootstrap)
    finally:
        b.close()


def test_floating_shards_may_run_on_any_core():
    b = Broker(shards=2, extra=["--floating-shards"])
    try:
        everywhere = frozenset(os.sched_getaffinity(b.proc.pid))
        cpus = shard_cpus(b.proc.pid)
        assert len(cpus) == 2, cpus
        for name, sets in cpus.items():
            assert sets == {everywhere}, f"{name}: {sets}"
        assert produce_consume_ok(b.bootstrap)
    finally:
        b.close()

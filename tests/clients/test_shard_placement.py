"""Where shards run: pinned, shard N and its blocking threads on core N (the default); with
--floating-shards, on any core the kernel picks (for hosts whose cores other processes keep busy).
And at what priority: every thread ordinary by default; with --realtime-shards a shard that uses little
of its core runs SCHED_FIFO (its wake-ups preempt other processes), its blocking threads and io_uring
workers do not."""

import os
import subprocess
import sys
import time

import pytest

from conftest import Broker
from test_metrics import get, samples, value
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


def threads(pid):
    """[(name, tid)] of the broker's threads."""
    out = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                out.append((f.read().strip(), int(tid)))
        except FileNotFoundError:
            pass  # an io_uring worker that ended
    return out


def policy(tid):
    try:
        return os.sched_getscheduler(tid) & ~os.SCHED_RESET_ON_FORK
    except (ProcessLookupError, OSError):
        return None


def may_be_realtime():
    """Whether a process started here may take real-time priority (root in a container may not)."""
    probe = "import os; os.sched_setscheduler(0, os.SCHED_FIFO | os.SCHED_RESET_ON_FORK, os.sched_param(2))"
    return subprocess.run([sys.executable, "-c", probe], capture_output=True).returncode == 0


REALTIME = ["weir-priority", "weir-shard-0-2", "weir-shard-1-3"]


def test_realtime_shards_when_idle_run_realtime_and_nothing_else_of_the_broker_does():
    if not may_be_realtime():
        pytest.skip("real-time priority not permitted here")
    b = Broker(shards=2, extra=["--realtime-shards"])
    try:
        def realtime():
            return sorted(name for name, tid in threads(b.proc.pid) if policy(tid) == os.SCHED_FIFO)

        def wait_realtime():
            deadline = time.time() + 20
            while realtime() != REALTIME and time.time() < deadline:
                time.sleep(0.05)
            with open(b.log_path, errors="replace") as f:
                log = f.read()
            if "keep ordinary priority" in log and ("cpu.max" in log or "RLIMIT_RTTIME" in log):
                pytest.skip("this process's CPU limits keep the shards ordinary")
            # One thread per shard (its executor; the blocking threads share its name) and the watcher.
            assert realtime() == REALTIME, threads(b.proc.pid)

        wait_realtime()
        assert produce_consume_ok(b.bootstrap)
        # Neither the threads started since (io_uring workers among them) nor the others are.
        wait_realtime()
        _, _, text = get(b.metrics_port, "/metrics")
        figures = samples(text)
        for shard in ("0", "1"):
            assert value(figures, "weir_shard_realtime", shard=shard) == 1, text
            assert value(figures, "weir_shard_realtime_demotions_total", shard=shard) is not None
    finally:
        b.close()


def test_every_thread_is_ordinary_by_default():
    b = Broker(shards=2)
    try:
        assert produce_consume_ok(b.bootstrap)
        names = [name for name, _ in threads(b.proc.pid)]
        assert "weir-priority" not in names, names
        assert all(policy(tid) in (os.SCHED_OTHER, None) for _, tid in threads(b.proc.pid))
        figures = samples(get(b.metrics_port, "/metrics")[2])
        assert [value(figures, "weir_shard_realtime", shard=s) for s in ("0", "1")] == [0, 0]
    finally:
        b.close()

"""The batch cache sized to the machine: a consumer far behind the tail reads from memory (a small
`--log-cache-max-bytes` sends it to the disk instead), and under a cgroup memory limit smaller than
the setting the broker shrinks its cache instead of being killed."""

import http.client
import os
import subprocess
import time
import uuid

import pytest

from conftest import WEIR, Broker, unique

BENCH = WEIR + "-bench"


def scrape(port):
    from prometheus_client.parser import text_string_to_metric_families

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            key = (s.name, tuple(sorted(s.labels.items())))
            out[key] = out.get(key, 0) + s.value
    return out


def total(figures, name, **labels):
    """Sum of `name` over every series whose labels include `labels`."""
    return sum(v for (n, ls), v in figures.items() if n == name and all((k, v2) in ls for k, v2 in labels.items()))


def bench(broker, mode, topic, *args, timeout=300):
    r = subprocess.run([BENCH, mode, "--bootstrap", broker.bootstrap, "--topic", topic, "--no-pin", *args],
                       capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def reads_while_consuming(broker, megabytes):
    """Produces `megabytes` of 1 KiB records to a fresh one-partition topic, then consumes it all from
    the start: the reads the broker made meanwhile, by path."""
    topic = unique("lag")
    bench(broker, "produce", topic, "--msg-size", "1024", "--messages", str(megabytes * 1024))
    before = scrape(broker.metrics_port)
    out = bench(broker, "consume", topic, "--messages", str(megabytes * 1024))
    # Scrapes within a second share one gather: wait for one that has seen the reads.
    deadline = time.time() + 10
    while total(after := scrape(broker.metrics_port), "weir_storage_reads_total") == total(before, "weir_storage_reads_total"):
        assert time.time() < deadline, "no read counted"
        time.sleep(0.1)
    return out, {p: total(after, "weir_storage_reads_total", path=p) - total(before, "weir_storage_reads_total", path=p)
                 for p in ("cache", "sendfile", "direct")}


def test_a_consumer_far_behind_the_tail_reads_from_memory():
    # 200 MiB: more than the fixed 64 MiB per shard the cache had before it was sized to the machine.
    for extra, from_memory in (([], True), (["--log-cache-max-bytes", str(32 << 20)], False)):
        b = Broker(shards=2, extra=extra)
        try:
            out, reads = reads_while_consuming(b, 200)
        finally:
            b.close()
        if from_memory:
            assert reads["cache"] > 0 and reads["sendfile"] == 0 and reads["direct"] == 0, (reads, out)
        else:
            # A cache smaller than the topic: its oldest part comes from the disk.
            assert reads["direct"] + reads["sendfile"] > 0, (reads, out)


def make_cgroup(limit):
    """A fresh memory cgroup limited to `limit` bytes: (the file that takes a pid, the file that
    counts OOM kills, a function removing it), or None where this machine cannot make one."""
    name = f"weir-test-{uuid.uuid4().hex[:8]}"
    v2 = "/sys/fs/cgroup/cgroup.controllers"
    try:
        if os.path.exists(v2) and "memory" in open(v2).read().split():
            with open("/sys/fs/cgroup/cgroup.subtree_control", "w") as f:
                f.write("+memory")
            path = f"/sys/fs/cgroup/{name}"
            os.mkdir(path)
            with open(f"{path}/memory.max", "w") as f:
                f.write(str(limit))
            with open(f"{path}/memory.swap.max", "w") as f:
                f.write("0")
            return f"{path}/cgroup.procs", (f"{path}/memory.events", "oom_kill"), lambda: os.rmdir(path)
        if os.path.isdir("/sys/fs/cgroup/memory"):
            path = f"/sys/fs/cgroup/memory/{name}"
            os.mkdir(path)
            with open(f"{path}/memory.limit_in_bytes", "w") as f:
                f.write(str(limit))
            return f"{path}/cgroup.procs", (f"{path}/memory.oom_control", "oom_kill"), lambda: os.rmdir(path)
    except OSError:
        return None
    return None


def counter(path_and_key):
    path, key = path_and_key
    for line in open(path):
        name, _, value = line.partition(" ")
        if name == key:
            return int(value)
    return 0


def test_under_a_cgroup_limit_the_cache_shrinks_instead_of_the_broker_being_killed():
    limit = 640 << 20
    cgroup = make_cgroup(limit)
    if cgroup is None:
        pytest.skip("cannot create a memory cgroup here (needs root and a writable cgroup file system)")
    procs, oom_kills, remove = cgroup
    # The broker joins the cgroup before it starts; its cache may hold 2 GiB, three times the limit.
    wrapper = ["sh", "-c", f'echo $$ > {procs} && exec "$@"', "sh"]
    b = None
    try:
        b = Broker(shards=2, prefix=wrapper, extra=["--log-cache-max-bytes", str(2 << 30)])
        topic = unique("squeezed")
        # 1.2 GiB of 1 KiB records, all of which a cache without the governor would keep.
        bench(b, "produce", topic, "--msg-size", "1024", "--messages", str(1200 * 1024))
        assert b.alive(), "the broker was killed"
        assert counter(oom_kills) == 0, "the kernel's OOM killer struck in the broker's cgroup"
        figures = scrape(b.metrics_port)
        budget, held = total(figures, "weir_storage_cache_limit_bytes"), total(figures, "weir_storage_cache_bytes")
        assert 0 < held <= budget < limit, (held, budget)
        # And the topic reads back whole, from the cache and the disk.
        out = bench(b, "consume", topic, "--messages", str(1200 * 1024))
        assert b.alive() and counter(oom_kills) == 0, out
    finally:
        if b is not None:
            b.close()
        deadline = time.time() + 30
        while True:
            try:
                remove()
                break
            except OSError:
                # The cgroup empties once the broker's exit is fully reaped.
                assert time.time() < deadline, "the test cgroup stayed busy"
                time.sleep(0.1)

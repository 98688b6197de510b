"""The `weir topic|produce|consume` tools against the real broker."""

import subprocess

from conftest import WEIR, unique


def weir(*args, stdin=None):
    return subprocess.run([WEIR, *args], input=stdin, capture_output=True, timeout=30, check=True, text=True).stdout


def test_topic_produce_consume(shared_broker):
    b = ["--bootstrap", shared_broker.bootstrap]
    topic = unique("cli")
    assert "created" in weir("topic", "create", topic, "-p", "3", "-c", "retention.ms=60000", *b)
    assert f"{topic}\t3 partitions" in weir("topic", "list", *b)
    weir("produce", topic, "-p", "1", *b, stdin="".join(f"line {i}\n" for i in range(50)))
    out = weir("consume", topic, "-p", "1", "-e", *b)
    assert out.splitlines() == [f"line {i}" for i in range(50)]
    out = weir("consume", topic, "-p", "1", "-e", "-o", "45", "--verbose", *b)
    assert [l.split("\t")[0] for l in out.splitlines()] == ["45", "46", "47", "48", "49"]
    described = weir("topic", "describe", topic, *b)
    assert "partition 1\tleader" in described and "offsets 0..50" in described and "retention.ms=60000" in described
    weir("produce", topic, "-K", ":", *b, stdin="a:1\nb:2\na:3\n")
    assert "deleted" in weir("topic", "delete", topic, *b)
    assert topic not in weir("topic", "list", *b)


def test_consume_group_commits_and_resumes(shared_broker):
    b = ["--bootstrap", shared_broker.bootstrap]
    topic, group = unique("cligrp"), unique("g")
    weir("topic", "create", topic, "-p", "2", *b)
    weir("produce", topic, *b, stdin="".join(f"m{i}\n" for i in range(40)))
    first = weir("consume", topic, "--group", group, "-n", "15", *b).split()
    assert len(first) == 15
    rest = weir("consume", topic, "--group", group, "-e", *b).split()
    assert sorted(first + rest, key=lambda m: int(m[1:])) == [f"m{i}" for i in range(40)], "committed offsets resume, nothing twice"
    again = weir("consume", topic, "--group", group, "-e", *b).split()
    assert again == []

"""max.connections, max.connections.per.ip and connections.max.idle.ms, against the real broker."""

import socket
import struct
import time

from conftest import Broker
from test_robustness import closed_by_peer, frame, read_frame


def connect(port, source="127.0.0.1"):
    s = socket.socket()
    s.settimeout(10)
    s.bind((source, 0))
    s.connect(("127.0.0.1", port))
    return s


def served(s, correlation=5):
    """Sends ApiVersions; True if answered, False if the broker closed the connection instead."""
    try:
        s.sendall(frame(18, 0, correlation))
        return read_frame(s)[:4] == struct.pack(">i", correlation)
    except (ConnectionError, OSError):
        return False


def wait_until(cond, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return False


def test_connections_over_the_limits_are_refused_and_slots_come_back():
    b = Broker(shards=2, extra=["--max-connections", "12", "--max-connections-per-ip", "5"])
    held = []
    try:
        # Five from one address, served; a sixth from it refused, though the broker has room.
        for _ in range(5):
            held.append(connect(b.port, "127.0.0.2"))
            assert served(held[-1])
        extra = connect(b.port, "127.0.0.2")
        assert closed_by_peer(extra), "the sixth connection from one address is closed"
        extra.close()
        # Other addresses fill the broker to twelve, on both shards' ports; the thirteenth is refused.
        for i in range(7):
            held.append(connect(b.port + i % 2, f"127.0.0.{3 + i}"))
            assert served(held[-1])
        late = connect(b.port + 1, "127.0.0.20")
        assert closed_by_peer(late), "the connection beyond max.connections is closed"
        late.close()
        # A slot freed is a slot taken again (the close reaches the broker asynchronously).
        held.pop(0).close()
        assert wait_until(lambda: served(connect(b.port, "127.0.0.21"))), "a freed slot admits a new connection"
        assert b"max.connections" in open(b.log_path, "rb").read()
    finally:
        for s in held:
            s.close()
        assert b.alive()
        b.close()


def test_idle_connections_are_closed_and_busy_ones_kept():
    b = Broker(shards=1, extra=["--connections-max-idle-ms", "1500"])
    try:
        silent = connect(b.port)
        used_once = connect(b.port)
        assert served(used_once)
        busy = connect(b.port)
        started = time.time()
        # The busy connection sends a request every 300 ms for 4 s: never idle for 1.5 s.
        while time.time() - started < 4:
            assert served(busy), "a connection in use is kept"
            time.sleep(0.3)
        assert closed_by_peer(silent), "a connection that never sent anything is closed"
        assert closed_by_peer(used_once), "a connection idle since its last request is closed"
        assert served(busy)
        busy.close()
    finally:
        assert b.alive()
        b.close()


def test_large_requests_wait_for_queued_max_request_bytes_and_small_ones_do_not():
    # One shard, so every connection draws on the same 3 MiB.
    b = Broker(shards=1, extra=["--queued-max-request-bytes", str(3 << 20)])
    try:
        big = frame(18, 0, 7, body=b"\0" * (1200 << 10))
        stalled = [connect(b.port), connect(b.port)]
        for s in stalled:
            s.sendall(big[: 100 << 10])  # a 1.2 MiB request, sent in part: its bytes are reserved
        waiting = connect(b.port)
        assert wait_until(lambda: served(connect(b.port))), "the broker serves small requests"
        waiting.sendall(big)
        waiting.settimeout(1.5)
        try:
            read_frame(waiting)
            raise AssertionError("a request over the budget was read while two others held it")
        except socket.timeout:
            pass
        assert served(connect(b.port), correlation=9), "small requests do not queue behind large ones"
        stalled[0].close()
        waiting.settimeout(15)
        assert read_frame(waiting)[:4] == struct.pack(">i", 7), "served once budget was freed"
        stalled[1].close()
    finally:
        assert b.alive()
        b.close()

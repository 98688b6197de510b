#!/usr/bin/env python3
"""Memory of idle connections, and max.connections at its bound.

Starts `target/release/weir` (2 shards, `--max-connections N`), opens N connections spread over the
shard ports — half of them send one ApiVersions request first, half send nothing — waits until the
broker has given back their read buffers, and prints the broker's RSS before and after. Then the
(N+1)th connection must be closed by the broker unserved.

    python3 perf/idle_connections.py [--connections 10000] [--weir target/release/weir]
"""

import argparse
import os
import resource
import shutil
import socket
import struct
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def api_versions(correlation):
    header = struct.pack(">hhih", 18, 0, correlation, 4) + b"perf"
    return struct.pack(">i", len(header)) + header


def wait_port(port):
    deadline = time.time() + 15
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"no broker on {port}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--connections", type=int, default=10_000)
    ap.add_argument("--weir", default=os.path.join(ROOT, "target", "release", "weir"))
    ap.add_argument("--port", type=int, default=39092)
    ap.add_argument("--silent", action="store_true", help="no connection sends a request")
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    data = tempfile.mkdtemp(prefix="weir-idle-")
    broker = subprocess.Popen(
        [args.weir, "serve", "--listen", f"127.0.0.1:{args.port}", "--data-dir", data, "--shards", "2",
         "--max-connections", str(args.connections)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    held = []
    try:
        wait_port(args.port)
        wait_port(args.port + 1)
        # The two probe connections above have gone: count from an idle broker.
        time.sleep(2)
        before = rss_kib(broker.pid)
        for i in range(args.connections):
            s = socket.create_connection(("127.0.0.1", args.port + i % 2), timeout=10)
            if i % 2 == 0 and not args.silent:
                s.sendall(api_versions(i))
                size = struct.unpack(">i", s.recv(4, socket.MSG_WAITALL))[0]
                s.recv(size, socket.MSG_WAITALL)
            held.append(s)
        # Read buffers go back after 1 s without a request.
        time.sleep(3)
        after = rss_kib(broker.pid)
        extra = socket.create_connection(("127.0.0.1", args.port), timeout=10)
        extra.sendall(api_versions(1))
        extra.settimeout(5)
        try:
            refused = extra.recv(4) == b""
        except ConnectionResetError:
            refused = True
        extra.close()
        print(f"connections: {args.connections} ({'none' if args.silent else 'half'} sent one ApiVersions)")
        print(f"broker RSS idle: {before / 1024:.1f} MiB; with the connections: {after / 1024:.1f} MiB; "
              f"per connection: {(after - before) / args.connections:.2f} KiB")
        print(f"connection {args.connections + 1}: {'refused' if refused else 'SERVED'}")
    finally:
        for s in held:
            s.close()
        broker.terminate()
        broker.wait(30)
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Requests built to exhaust the broker's memory, sent to the real binary under an address-space limit.

Every length on the wire (array counts, string and bytes lengths) is a claim the broker must check
against the bytes that arrived before it reserves anything: with `prlimit --as` a reservation made
from a claim fails, and a failed allocation aborts the process.
"""

import shutil
import socket
import struct
import time

import pytest

from conftest import Broker
from test_robustness import frame, produce_consume_ok, read_frame, recv_exact

# 4 GiB of address space: plenty for the broker's real needs, far less than a claimed 2^31 elements.
ADDRESS_SPACE = 4 << 30
# Huge claims as each kind of length field encodes them, with the bytes that surround them: in the
# fixed-width versions int32 counts and lengths and int16 string lengths among zeros (empty or zero
# fields); in the flexible versions unsigned varints of 2^31 and 2^32-1 among ones (empty compact
# fields), after a zero that ends the request header's tagged fields. Either way the decoder reads
# its way to the claim, wherever in the body it is.
SHAPES = [
    (b"", 0x00, struct.pack(">i", 0x7FFFFFFF)),
    (b"", 0x00, struct.pack(">h", 0x7FFF)),
    (b"\x00", 0x01, bytes([0x80, 0x80, 0x80, 0x80, 0x08])),
    (b"\x00", 0x01, bytes([0xFF, 0xFF, 0xFF, 0xFF, 0x0F])),
]
BODY_BYTES = 36


@pytest.fixture(scope="module")
def limited_broker():
    if not shutil.which("prlimit"):
        pytest.skip("prlimit (util-linux) not installed")
    b = Broker(shards=1, prefix=["prlimit", f"--as={ADDRESS_SPACE}"])
    yield b
    b.close()


def advertised_versions(port):
    """(api key, min version, max version) for every API the broker advertises (ApiVersions v0)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(frame(18, 0, 1))
        body = read_frame(s)[4:]
    error, count = struct.unpack(">hi", body[:6])
    assert error == 0
    return [struct.unpack(">hhh", body[6 + 6 * i : 12 + 6 * i]) for i in range(count)]


def hostile_bodies():
    """A claim at every position of a small body."""
    for lead, filler, claim in SHAPES:
        for at in range(0, BODY_BYTES - len(claim)):
            body = bytearray([filler] * BODY_BYTES)
            body[at : at + len(claim)] = claim
            yield lead + bytes(body)


def send_and_settle(port, payload):
    """Sends one request and waits briefly for the broker to answer it or close the connection. A
    request that decodes may wait legitimately (a Fetch whose max wait is 2^31 ms, say): it is left."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(payload)
        s.settimeout(0.05)
        try:
            size = struct.unpack(">i", recv_exact(s, 4))[0]
            recv_exact(s, size)
        except (ConnectionError, socket.timeout):
            pass


def test_huge_length_claims_in_every_request_type_are_refused_without_reserving(limited_broker):
    apis = advertised_versions(limited_broker.port)
    assert len(apis) >= 20
    sent = 0
    for key, low, high in apis:
        for version in range(low, high + 1):
            for body in hostile_bodies():
                send_and_settle(limited_broker.port, frame(key, version, 7, body))
                sent += 1
            assert limited_broker.alive(), f"broker died on api {key} v{version}"
    assert sent > 10_000
    assert produce_consume_ok(limited_broker.bootstrap)
    log = open(limited_broker.log_path, "rb").read()
    assert b"memory allocation" not in log and b"panicked" not in log


def test_size_prefixes_alone_reserve_nothing_they_claim(limited_broker):
    """200 connections each announce a 100 MiB frame and send nothing more: 20 GiB claimed, under a
    4 GiB limit. The broker keeps serving; the connections are closed when they go."""
    held = []
    try:
        for _ in range(200):
            s = socket.create_connection(("127.0.0.1", limited_broker.port), timeout=10)
            s.sendall(struct.pack(">i", 100 << 20))
            held.append(s)
        # Every prefix has been read once a request sent after all of them is answered.
        deadline = time.time() + 30
        while time.time() < deadline:
            with socket.create_connection(("127.0.0.1", limited_broker.port), timeout=10) as s:
                s.sendall(frame(18, 0, 9))
                if read_frame(s)[:4] == struct.pack(">i", 9):
                    break
        assert limited_broker.alive()
        assert produce_consume_ok(limited_broker.bootstrap)
    finally:
        for s in held:
            s.close()
    assert limited_broker.alive()

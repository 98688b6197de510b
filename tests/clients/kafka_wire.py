"""A raw Kafka connection whose requests and responses are encoded and decoded by kafka-python's
protocol classes (generated from Kafka's own JSON schemas): for versions and fields that the
clients' high-level APIs do not reach."""

import socket
import struct


def build(cls, version, **fields):
    """A kafka-python request of `version` from plain dicts and lists."""
    out = {}
    for name, value in fields.items():
        field = cls._struct.fields[name]
        if field.is_struct_array() and value is not None:
            value = [build(field.data_class, version, **v) for v in value]
        elif field.is_struct() and isinstance(value, dict):
            value = build(field.data_class, version, **value)
        out[name] = value
    return cls(version=version, **out)


class Connection:
    """One socket; requests are encoded and responses decoded by kafka-python."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.settimeout(15)
        self.correlation = 0

    def call(self, request, response_class):
        self.correlation += 1
        request.with_header(correlation_id=self.correlation, client_id="old-client")
        self.sock.sendall(request.encode(header=True, framed=True))
        size = struct.unpack(">i", self.recv(4))[0]
        body = self.recv(size)
        assert struct.unpack(">i", body[:4])[0] == self.correlation
        return response_class.decode(body, version=request.version, header=True)

    def recv(self, n):
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            assert chunk, "the broker closed the connection"
            data += chunk
        return data

    def close(self):
        self.sock.close()

"""Readiness checks that speak each service's own protocol, with the standard library only.

A TCP connect only proves a port is bound; these prove the service answers.  A Kafka broker
counts as ready when a Metadata request lists it among the live (unfenced) brokers, so a
producer started right after can write; Redis when PING answers +PONG, not -LOADING::

    assert 1 in kafka_broker_ids("127.0.0.1", 9092)
    assert redis_ping("127.0.0.1", 6379)
"""

from __future__ import annotations

import socket
import struct


def kafka_broker_ids(host: str, port: int, timeout: float = 2.0) -> list[int]:
    """Node ids of the live brokers, from a Metadata v1 request (fenced brokers are left out).

    Raw wire protocol so readiness can be checked before any Kafka client library exists.
    """
    client_id = b"keel-stack"
    request = struct.pack(">hhih", 3, 1, 1, len(client_id)) + client_id + struct.pack(">i", 0)
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(struct.pack(">i", len(request)) + request)
        (size,) = struct.unpack(">i", _recv_exactly(sock, 4))
        response = _recv_exactly(sock, size)
    _correlation_id, count = struct.unpack_from(">ii", response, 0)
    offset, ids = 8, []
    for _ in range(count):
        node_id, host_length = struct.unpack_from(">ih", response, offset)
        offset += 4 + 2 + host_length + 4  # node id, host, port
        (rack_length,) = struct.unpack_from(">h", response, offset)
        offset += 2 + max(rack_length, 0)  # -1 means null rack
        ids.append(node_id)
    return ids


def redis_ping(
    host: str, port: int, timeout: float = 2.0, login: tuple[str, str] | None = None
) -> bool:
    """True if Redis answers PING with +PONG (after AUTH ``login``'s user and password)."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        replies = sock.makefile("rb")
        if login is not None:
            sock.sendall(_command(b"AUTH", *(part.encode() for part in login)))
            if replies.readline() != b"+OK\r\n":
                return False
        sock.sendall(_command(b"PING"))
        return replies.readline() == b"+PONG\r\n"


def _command(*parts: bytes) -> bytes:
    """A command in RESP, Redis' wire format: an array of bulk strings."""
    return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    chunks, remaining = [], size
    while remaining:
        chunk = sock.recv(remaining)
        if not chunk:
            raise ConnectionError("connection closed mid-response")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)

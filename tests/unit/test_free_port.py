"""deploy/local's free_port: a port that binds now, never one of the kernel's ephemeral ports."""

from __future__ import annotations

import random
import socket

import pytest

from deploy.local import stack
from deploy.local.stack import HOST, free_port


def test_free_ports_bind_and_lie_below_the_ephemeral_range() -> None:
    low = stack._ephemeral_ports_from()
    for port in {free_port() for _ in range(50)}:
        assert stack.FREE_PORTS_FROM <= port < low
        with socket.socket() as sock:
            sock.bind((HOST, port))  # free indeed


def test_a_taken_port_is_passed_over(monkeypatch: pytest.MonkeyPatch) -> None:
    busy = next(p for p in range(20_000, 30_000) if _binds(p) and _binds(p + 1))
    with socket.socket() as holder:
        holder.bind((HOST, busy))
        holder.listen()
        draws = iter([busy, busy, busy + 1])
        monkeypatch.setattr(random.SystemRandom, "randrange", lambda self, a, b: next(draws))
        assert free_port() == busy + 1


def _binds(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True

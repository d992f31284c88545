"""The emulator's PostgreSQL: the loopback port it (and every test server) is given. Starting the server itself is
the end-to-end tests' (it runs Debian's initdb and postgres)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tokend.emulator import postgres


def ephemeral_low() -> int:
    return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])


@pytest.mark.skipif(not Path("/proc/sys/net/ipv4/ip_local_port_range").exists(), reason="Linux's port range")
def test_free_ports_are_below_the_ephemeral_range_and_never_handed_out_twice() -> None:
    ports = [postgres.free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)
    assert all(1024 <= p < ephemeral_low() for p in ports)
    with socket.socket() as s:
        s.bind(("127.0.0.1", ports[-1]))  # free, as promised


def test_a_port_something_listens_on_is_passed_over(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as taken, socket.socket() as free:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        free.bind(("127.0.0.1", 0))
        unused = free.getsockname()[1]
        free.close()
        picks = iter([taken.getsockname()[1], unused])
        monkeypatch.setattr(postgres.random, "randrange", lambda low, high: next(picks))
        assert postgres.free_port() == unused

"""Loopback ports for servers a test starts."""

from __future__ import annotations

from tokend.emulator.postgres import free_port  # a loopback port nobody listens on now (a test binds it next)

closed_port = free_port  # the same thing, named for what a test uses it for: a port where nothing answers

# This test process's loopback port for the proxy's TCP listener (pytest processes running side by side pick theirs).
PROXY_PORT = free_port()


def accept_queue(port: int) -> int | None:
    """Connections waiting to be accepted by the loopback TCP listener on ``port`` (None: nothing listens there).
    For a listening socket the kernel's tables show that count as the receive queue (Linux)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    return int(fields[4].split(":")[1], 16)
    return None

"""Loopback ports for servers a test starts."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A loopback TCP port nobody listens on now (a test binds it next)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


closed_port = free_port  # the same thing, named for what a test uses it for: a port where nothing answers

# This test process's loopback port for the proxy's TCP listener (pytest processes running side by side pick theirs).
PROXY_PORT = free_port()

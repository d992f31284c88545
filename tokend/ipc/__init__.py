"""Talking to the daemon: one JSON request line, one JSON answer line, over an endpoint only the user can reach.

The package imports one way: ``protocol`` (operations, limits, ``Endpoint``, answer types) at the bottom; the
endpoints ``unix`` (a Unix socket, peer uid checked) and ``winpipe`` (a named pipe whose ACL admits only the user
and SYSTEM) on it; ``client`` and ``server`` (dispatch by table) above them. Both endpoints carry the same bytes and
everything above them is the same code, so the Unix socket exercises it on every platform.

``from tokend import ipc; ipc.Client(...)`` keeps working: the names callers use are re-exported here.
"""

from __future__ import annotations

import sys

from tokend.ipc.client import Client, ask, endpoint
from tokend.ipc.protocol import (
    BACKLOG,
    BUSY_RETRY,
    MAX_REQUEST,
    OPS,
    RELOAD,
    REQUEST_TIMEOUT,
    SIGN_IN_CHANGED,
    STATUS,
    STOP,
    TOKEN,
    Endpoint,
    Handler,
    Stream,
    TokenAnswer,
    read_answer,
)
from tokend.ipc.server import Server, dispatch, handler_for

if sys.platform != "win32":  # Windows' endpoint is ipc.winpipe.PipeEndpoint (through ``endpoint``)
    from tokend.ipc.unix import UnixEndpoint

__all__ = [
    "BACKLOG",
    "BUSY_RETRY",
    "MAX_REQUEST",
    "OPS",
    "RELOAD",
    "REQUEST_TIMEOUT",
    "SIGN_IN_CHANGED",
    "STATUS",
    "STOP",
    "TOKEN",
    "Client",
    "Endpoint",
    "Handler",
    "Server",
    "Stream",
    "TokenAnswer",
    "UnixEndpoint",
    "ask",
    "dispatch",
    "endpoint",
    "handler_for",
    "read_answer",
]

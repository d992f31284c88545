"""The local IPC endpoint: a Unix socket (0600, in the per-user runtime folder, 0700) speaking one JSON line each way.

Requests: {"op": "status"}, {"op": "token", "target": NAME|null}, {"op": "stop"}.
Answers: {"ok": true, "result": {...}} or {"ok": false, "error": "one line", "exit_code": N}.
On Linux the peer's uid is checked too (SO_PEERCRED): only the daemon's own user is served.
Windows (not yet): a named pipe \\\\.\\pipe\\tokend-<config id> whose ACL admits only the current user.

This module is imported by ``tokend token``; keep it free of heavy imports.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import struct
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tokend.errors import DaemonNotRunning, TokendError

if TYPE_CHECKING:
    from pathlib import Path

Handler = Callable[[dict[str, Any]], dict[str, Any]]
MAX_REQUEST = 64 * 1024


class Server:
    def __init__(self, path: Path, handler: Handler) -> None:
        self.path = path
        self.handler = handler
        self._sock: socket.socket | None = None
        self._thread = threading.Thread(target=self._serve, name="ipc", daemon=True)

    def start(self) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.path.parent, 0o700)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # stale: we hold the instance lock, so no live daemon owns it
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            sock.bind(str(self.path))
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        sock.listen(16)
        self._sock = sock
        self._thread.start()

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
            self._sock.close()
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    def _serve(self) -> None:
        assert self._sock is not None
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._answer, args=(conn,), name="ipc-conn", daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(10)
            try:
                if not _same_user(conn):
                    return
                request = json.loads(_read_line(conn))
                if not isinstance(request, dict):
                    raise ValueError("not an object")
                reply: dict[str, Any] = {"ok": True, "result": self.handler(request)}
            except TokendError as e:
                reply = {"ok": False, "error": str(e), "exit_code": e.exit_code}
            except (ValueError, OSError) as e:
                reply = {"ok": False, "error": f"bad request: {type(e).__name__}", "exit_code": 2}
            except Exception:
                import logging

                logging.getLogger("tokend.ipc").exception("IPC request failed")
                reply = {"ok": False, "error": "internal error in the daemon; see its log", "exit_code": 1}
            with contextlib.suppress(OSError):
                conn.sendall(json.dumps(reply).encode() + b"\n")


def request(path: Path, payload: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
    """Send one request to the daemon at ``path``; raise DaemonNotRunning when none answers."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            raise DaemonNotRunning(f"no tokend daemon answers at {path}") from None
        sock.sendall(json.dumps(payload).encode() + b"\n")
        reply = json.loads(_read_line(sock))
    finally:
        sock.close()
    if not reply.get("ok"):
        err = TokendError(reply.get("error", "the daemon refused the request"))
        err.exit_code = int(reply.get("exit_code", 1))
        raise err
    return reply["result"]


def _read_line(sock: socket.socket) -> bytes:
    buf = bytearray()
    while b"\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            break
        buf += chunk
        if len(buf) > MAX_REQUEST * 4:
            raise ValueError("message too long")
    return bytes(buf.split(b"\n", 1)[0])


def _same_user(conn: socket.socket) -> bool:
    if not hasattr(socket, "SO_PEERCRED"):
        return True  # the socket's 0600 mode in a 0700 folder is the guard here
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid == os.getuid()

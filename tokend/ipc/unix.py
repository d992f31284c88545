"""The IPC endpoint on Linux and macOS: a Unix socket, mode 0600, in the per-user runtime folder (0700). The socket's
mode is not the only guard: the server also checks each peer's uid (``checks_peer``), and refuses a peer whose uid
cannot be read.
"""

from __future__ import annotations

import sys

# Not on Windows (no AF_UNIX there in CPython): ``ipc.client`` imports ``winpipe`` instead, and mypy checks the rest
# only for the platforms that have it.
assert sys.platform != "win32"

import asyncio  # noqa: E402
import contextlib  # noqa: E402
import errno  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import socket  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from tokend import paths  # noqa: E402
from tokend.errors import DaemonNotRunning, TokendError, UsageError  # noqa: E402
from tokend.ipc.protocol import BACKLOG, BUSY_RETRY, MAX_REQUEST, OnClient, Stream  # noqa: E402

log = logging.getLogger("tokend.ipc")
MAX_PATH = 104  # bytes in a Unix socket's path (macOS' limit; Linux allows 108)


class UnixEndpoint:
    checks_peer = True

    def __init__(self, path: Path) -> None:
        self.path = path

    def describe(self) -> str:
        return str(self.path)

    def connect(self, timeout: float) -> Stream:
        deadline = time.monotonic() + min(timeout, BUSY_RETRY)
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            try:
                sock.connect(str(self.path))
                return sock
            except (FileNotFoundError, ConnectionRefusedError):
                sock.close()
                raise DaemonNotRunning(f"no tokend daemon answers at {self.path}") from None
            except OSError as e:
                sock.close()
                if e.errno not in (errno.EAGAIN, errno.EWOULDBLOCK) or time.monotonic() > deadline:
                    if e.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                        raise TokendError(
                            f"the tokend daemon at {self.path} is too busy to answer; try again"
                        ) from None
                    raise TokendError(f"cannot reach the tokend daemon at {self.path}: {e.strerror or e}") from None
                time.sleep(0.01)  # the listen backlog is full: a burst of clients; try again shortly

    async def listen(self, on_client: OnClient) -> asyncio.AbstractServer:
        folder = paths.private_dir(self.path.parent)
        if len(str(self.path).encode()) > MAX_PATH:
            raise UsageError(
                f"the IPC socket path {self.path} is longer than Unix sockets allow ({MAX_PATH} bytes); set "
                "XDG_RUNTIME_DIR to a shorter folder"
            )
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # stale: we hold the instance lock, so no live daemon owns it
        old = os.umask(0o177)
        try:
            server = await asyncio.start_unix_server(on_client, str(self.path), limit=MAX_REQUEST, backlog=BACKLOG)
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        log.debug("IPC on %s (folder %s)", self.path, folder)
        return server

    def cleanup(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

"""Windows: the daemon's IPC endpoint, a named pipe ``\\\\.\\pipe\\tokend-<config id>`` only its user can open.

The pipe is created with an explicit DACL of two entries — the current user's SID and SYSTEM, full access — and
nobody else (a pipe's default DACL lets Everyone read), and with FILE_FLAG_FIRST_PIPE_INSTANCE, so a process of
another user cannot have created the name first and be listening in the daemon's place. It is served by asyncio's
proactor loop with the same protocol handler as the Unix socket (``ipc.server.Server``); this module is only the
thin layer that makes and opens the pipe (a twin of ``ipc.unix.UnixEndpoint``, which runs the same handler in every
test). Of the package it imports only ``protocol``.
"""

from __future__ import annotations

import sys

# Windows only (``ipc.client.endpoint`` imports it there alone): mypy checks the rest against Windows' stubs when
# run with --platform win32 and skips it elsewhere.
assert sys.platform == "win32"

import asyncio  # noqa: E402
import ctypes  # noqa: E402
import time  # noqa: E402
from asyncio import windows_utils  # noqa: E402
from ctypes import wintypes  # noqa: E402
from typing import Any  # noqa: E402

from tokend.errors import DaemonNotRunning, TokendError  # noqa: E402
from tokend.ipc.protocol import BUSY_RETRY, MAX_REQUEST, OnClient  # noqa: E402

PIPE_ACCESS_DUPLEX = 0x00000003
FILE_FLAG_OVERLAPPED = 0x40000000
FILE_FLAG_FIRST_PIPE_INSTANCE = 0x00080000
PIPE_TYPE_BYTE, PIPE_READMODE_BYTE, PIPE_WAIT, PIPE_REJECT_REMOTE_CLIENTS = 0x0, 0x0, 0x0, 0x00000008
PIPE_UNLIMITED_INSTANCES = 255
ERROR_PIPE_BUSY = 231
BUFSIZE = 65536  # bytes of each pipe instance's in and out buffers


class _SecurityAttributes(ctypes.Structure):
    _fields_ = [
        ("nLength", ctypes.c_ulong),
        ("lpSecurityDescriptor", ctypes.c_void_p),
        ("bInheritHandle", ctypes.c_int),
    ]


def _dll(name: str) -> Any:
    return ctypes.WinDLL(name, use_last_error=True)


def _last_error() -> OSError:
    return ctypes.WinError(ctypes.get_last_error())


def _user_sid() -> str:  # pragma: no cover - Windows only
    """The current user's SID as a string (S-1-5-21-…)."""
    advapi32 = _dll("advapi32")
    kernel32 = _dll("kernel32")
    token = wintypes.HANDLE()
    if not advapi32.OpenProcessToken(kernel32.GetCurrentProcess(), 0x0008, ctypes.byref(token)):  # TOKEN_QUERY
        raise _last_error()
    try:
        needed = wintypes.DWORD()
        advapi32.GetTokenInformation(token, 1, None, 0, ctypes.byref(needed))  # TokenUser
        buf = ctypes.create_string_buffer(needed.value)
        if not advapi32.GetTokenInformation(token, 1, buf, needed, ctypes.byref(needed)):
            raise _last_error()
        psid = ctypes.cast(buf, ctypes.POINTER(ctypes.c_void_p))[0]  # TOKEN_USER.User.Sid
        text = wintypes.LPWSTR()
        if not advapi32.ConvertSidToStringSidW(ctypes.c_void_p(psid), ctypes.byref(text)):
            raise _last_error()
        try:
            return str(text.value)
        finally:
            kernel32.LocalFree(text)
    finally:
        kernel32.CloseHandle(token)


def security_attributes() -> _SecurityAttributes:  # pragma: no cover - Windows only
    """SECURITY_ATTRIBUTES granting full access to this user and SYSTEM only (protected: nothing inherited)."""
    advapi32 = _dll("advapi32")
    sd = ctypes.c_void_p()
    sddl = f"D:P(A;;GA;;;{_user_sid()})(A;;GA;;;SY)"
    if not advapi32.ConvertStringSecurityDescriptorToSecurityDescriptorW(sddl, 1, ctypes.byref(sd), None):
        raise _last_error()
    return _SecurityAttributes(ctypes.sizeof(_SecurityAttributes), sd, 0)


class _PipeStream:
    """A client's open pipe, looking like a socket to ``ipc.Client``."""

    def __init__(self, f: Any) -> None:
        self._f = f

    def sendall(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[self._f.write(view) :]

    def recv(self, size: int) -> bytes:
        return bytes(self._f.read(size) or b"")

    def close(self) -> None:
        self._f.close()


class PipeEndpoint:  # pragma: no cover - Windows only
    checks_peer = False  # the pipe's DACL admits only this user and SYSTEM

    def __init__(self, name: str) -> None:
        self.name = name

    def describe(self) -> str:
        return self.name

    def connect(self, timeout: float) -> _PipeStream:
        deadline = time.monotonic() + BUSY_RETRY
        while True:
            try:
                return _PipeStream(open(self.name, "r+b", buffering=0))
            except FileNotFoundError:
                raise DaemonNotRunning(f"no tokend daemon answers at {self.name}") from None
            except OSError as e:
                if getattr(e, "winerror", None) != ERROR_PIPE_BUSY or time.monotonic() > deadline:
                    raise TokendError(f"cannot reach the tokend daemon at {self.name}: {e.strerror or e}") from None
                time.sleep(0.01)

    async def listen(self, on_client: OnClient) -> Any:
        loop: Any = asyncio.get_running_loop()  # a ProactorEventLoop (asyncio's default on Windows)
        kernel32 = _dll("kernel32")
        kernel32.CreateNamedPipeW.restype = ctypes.c_void_p
        sa = security_attributes()
        state = {"first": True, "closed": False}

        def new_pipe() -> Any:
            flags = PIPE_ACCESS_DUPLEX | FILE_FLAG_OVERLAPPED | (FILE_FLAG_FIRST_PIPE_INSTANCE if state["first"] else 0)
            h = kernel32.CreateNamedPipeW(
                self.name,
                flags,
                PIPE_TYPE_BYTE | PIPE_READMODE_BYTE | PIPE_WAIT | PIPE_REJECT_REMOTE_CLIENTS,
                PIPE_UNLIMITED_INSTANCES,
                BUFSIZE,
                BUFSIZE,
                0,
                ctypes.byref(sa),
            )
            if h is None or h == ctypes.c_void_p(-1).value:
                raise TokendError(
                    f"cannot create the IPC pipe {self.name}: {_last_error()} (another program holds the name?)"
                )
            state["first"] = False
            return windows_utils.PipeHandle(h)

        def protocol() -> asyncio.StreamReaderProtocol:
            reader = asyncio.StreamReader(limit=MAX_REQUEST, loop=loop)
            return asyncio.StreamReaderProtocol(reader, on_client, loop=loop)

        pending = [new_pipe()]  # created now, so a name already taken fails the start, not the first client

        def accept(f: Any = None) -> None:
            # asyncio's own start_serving_pipe loop, with pipes made by new_pipe() (its PipeServer cannot take a DACL)
            if f is not None:
                try:
                    pipe = f.result()
                except OSError:
                    pipe = None
                if pipe is not None:
                    if state["closed"]:
                        pipe.close()
                        return
                    loop._make_duplex_pipe_transport(pipe, protocol(), extra={"addr": self.name})
            if state["closed"]:
                return
            pipe = pending.pop() if pending else new_pipe()
            loop._proactor.accept_pipe(pipe).add_done_callback(accept)

        loop.call_soon(accept)

        class _Server:
            def close(self) -> None:
                state["closed"] = True
                for p in pending:
                    p.close()

        return _Server()

    def cleanup(self) -> None:
        pass  # a pipe disappears with its last handle

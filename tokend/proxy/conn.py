"""A non-blocking socket (plain, or TLS through ``ssl.SSLSocket``) on the proxy's event loop.

Two phases, one socket: while a session starts, ``Conn`` offers awaited reads and writes (start-up messages, the
TLS handshakes, authentication); once both legs are logged in, ``relay`` pumps bytes between them straight from
readiness callbacks (``loop.add_reader``): no task, no future, no parsing per message. Measured on this project's
2-core machine this relay keeps up with stunnel, a C relay (BENCHMARKS.md), where asyncio's stream transports
cost about a fifth more.

Bytes already read into a ``Conn``'s buffer when the relay starts are forwarded first, and so are bytes OpenSSL
holds decrypted but not yet handed out (``SSLSocket.pending``): neither is visible to readiness polling.
Nothing here blocks the loop it shares with every other session, IPC and the health endpoint: a closing leg
hands over what it still holds from writable callbacks, for at most ``FLUSH_DEADLINE`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
import ssl
from collections.abc import Callable
from typing import TypeVar

_WAIT_ERRORS = (BlockingIOError, InterruptedError)
CHUNK = 65536
FLUSH_DEADLINE = 1.0  # seconds a closing leg may take to hand its last bytes to a peer that does not read
T = TypeVar("T")


class Conn:
    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.loop = loop
        self.sock: socket.socket = sock
        self.buf = bytearray()

    async def _ready(self, write: bool) -> None:
        fut: asyncio.Future[None] = self.loop.create_future()
        fd = self.sock.fileno()
        add, remove = (
            (self.loop.add_writer, self.loop.remove_writer)
            if write
            else (self.loop.add_reader, self.loop.remove_reader)
        )
        add(fd, resolve, fut)
        try:
            await fut
        finally:
            remove(fd)

    async def _retry(self, step: Callable[[], T], write: bool = False) -> T:
        """``step()`` — a non-blocking send, receive or TLS step — again until it completes, waiting for the
        readiness it asks for (``write``: what a plain socket's would-block means)."""
        while True:
            try:
                return step()
            except ssl.SSLWantReadError:
                await self._ready(False)
            except ssl.SSLWantWriteError:
                await self._ready(True)
            except _WAIT_ERRORS:
                await self._ready(write)

    async def _fill(self) -> None:
        data = await self._retry(lambda: self.sock.recv(CHUNK))
        if not data:
            raise ConnectionResetError("the other side closed the connection")
        self.buf += data

    async def readexactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            await self._fill()
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            sent = await self._retry(functools.partial(self.sock.send, view), write=True)
            view = view[sent:]

    async def start_tls(self, ctx: ssl.SSLContext, server_side: bool, server_hostname: str | None = None) -> None:
        """TLS over this socket (after a TLS request was answered with 'S'). Bytes received before the handshake
        would be a protocol violation (and the injection of CVE-2021-23222): refused."""
        if self.buf:
            raise ConnectionError("unencrypted bytes after the TLS request")
        tls = ctx.wrap_socket(
            self.sock, server_side=server_side, server_hostname=server_hostname, do_handshake_on_connect=False
        )
        self.sock = tls
        await self._retry(tls.do_handshake)

    async def close(self, timeout: float = 1.0) -> None:
        """Close; a TLS connection first says so (close_notify), as libpq expects of a server that is done."""
        if isinstance(self.sock, ssl.SSLSocket):
            with contextlib.suppress(OSError, ValueError, asyncio.TimeoutError):
                await asyncio.wait_for(self._retry(self.sock.unwrap), timeout)
        with contextlib.suppress(OSError):
            self.sock.close()


def resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class _Leg:
    """One direction's reader and the other side's writer queue."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket, done: Callable[[], None]) -> None:
        self.loop, self.sock, self.done = loop, sock, done
        self.peer: _Leg | None = None
        self.out = bytearray()
        self.buf = bytearray(CHUNK)
        self.view = memoryview(self.buf)
        self.closed = False  # no more reading or relaying; it may still be flushing
        self.shut = False  # its socket is closed
        self.reading = False
        self.read_waits = False  # a TLS read waits for the socket to be writable (see readable)
        self.deadline: asyncio.TimerHandle | None = None
        self.count = 0  # bytes read from this leg's socket (and handed to the other side): the audit log's

    def start(self) -> None:
        self.loop.add_reader(self.sock.fileno(), self.readable)
        self.reading = True

    def readable(self) -> None:
        peer = self.peer
        assert peer is not None
        if self.closed:
            return
        try:
            while True:
                n = self.sock.recv_into(self.buf)
                if not n:
                    self.close()
                    return
                self.count += n
                peer.send(self.view[:n])
                if self.closed or not (isinstance(self.sock, ssl.SSLSocket) and self.sock.pending()):
                    return
        except (ssl.SSLWantReadError, *_WAIT_ERRORS):
            return
        except ssl.SSLWantWriteError:
            # OpenSSL must write before it reads on (a TLS 1.2 renegotiation, a TLS 1.3 key update) and the send
            # buffer is full: `writable` reads again once the socket takes bytes
            self.read_waits = True
            if not self.out:
                self.loop.add_writer(self.sock.fileno(), self.writable)
            return
        except OSError:
            self.close()

    def send(self, data: memoryview | bytes) -> None:
        if self.closed:
            return
        if not self.out:
            try:
                sent = self.sock.send(data)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError, *_WAIT_ERRORS):
                sent = 0
            except OSError:
                self.close()
                return
            if sent == len(data):
                return
            data = data[sent:]
            self.loop.add_writer(self.sock.fileno(), self.writable)
            assert self.peer is not None
            if self.peer.reading:  # back-pressure: stop reading the other side until this one drains
                self.loop.remove_reader(self.peer.sock.fileno())
                self.peer.reading = False
        self.out += data

    def writable(self) -> None:
        if self.out:
            try:
                sent = self.sock.send(self.out)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError, *_WAIT_ERRORS):
                return
            except OSError:
                self.close()
                return
            del self.out[:sent]
        if not self.out:
            self.loop.remove_writer(self.sock.fileno())
            if self.read_waits:
                self.read_waits = False
                if self.reading:
                    self.readable()
            peer = self.peer
            if peer is not None and not peer.closed and not peer.reading:
                peer.start()

    def close(self) -> None:
        """Either side closing ends both: what one side wrote last is flushed to the other from writable callbacks
        for up to FLUSH_DEADLINE seconds, then both sockets close; ``done`` once per leg whose socket closed."""
        for leg in (self, self.peer):
            if leg is None or leg.closed:
                continue
            leg.closed = True
            with contextlib.suppress(Exception):
                self.loop.remove_reader(leg.sock.fileno())
            if leg.out:
                leg.deadline = self.loop.call_later(FLUSH_DEADLINE, leg.finish)
                with contextlib.suppress(Exception):
                    self.loop.add_writer(leg.sock.fileno(), leg.flush)  # replaces `writable`
                    continue
            leg.finish()

    def flush(self) -> None:
        try:
            sent = self.sock.send(self.out)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError, *_WAIT_ERRORS):
            return
        except OSError:
            self.finish()
            return
        del self.out[:sent]
        if not self.out:
            self.finish()

    def finish(self) -> None:
        if self.shut:
            return
        self.shut = True
        if self.deadline is not None:
            self.deadline.cancel()
        with contextlib.suppress(Exception):
            self.loop.remove_writer(self.sock.fileno())
        with contextlib.suppress(OSError):
            self.sock.close()
        self.out.clear()
        self.done()


def relay(a: Conn, b: Conn, done: Callable[[], None]) -> tuple[_Leg, _Leg]:
    """Pump bytes between two logged-in connections until either side closes; then ``done()``, once both sockets
    are closed. The two readers, ``a``'s and ``b``'s: each one's ``count`` is the bytes relayed from its side."""
    left = [2]

    def one_shut() -> None:
        left[0] -= 1
        if left[0] == 0:
            done()

    la, lb = _Leg(a.loop, a.sock, one_shut), _Leg(b.loop, b.sock, one_shut)
    la.peer, lb.peer = lb, la
    # what was read during start-up, or is held inside TLS, goes first
    for conn, reader, leg in ((a, la, lb), (b, lb, la)):
        if conn.buf:
            reader.count += len(conn.buf)
            leg.send(bytes(conn.buf))
            conn.buf.clear()
    la.start()
    lb.start()
    for leg in (la, lb):
        if isinstance(leg.sock, ssl.SSLSocket) and leg.sock.pending():
            leg.loop.call_soon(leg.readable)
    return la, lb

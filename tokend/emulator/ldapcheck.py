"""The token check PostgreSQL calls: a minimal LDAP server whose simple bind validates an Entra token.

PostgreSQL's ``ldap`` auth method asks the client for a cleartext password and binds to LDAP with
DN = ldapprefix + user name + ldapsuffix and that password. Unlike pam_exec (which cuts passwords at 511 bytes),
the bind carries the whole token, so the server sees exactly what Azure sees and decides the same way:
a correctly signed, unexpired token for the right audience whose principal is the role, or a member of the group
the role is named after. Only BindRequest and UnbindRequest are understood, which is all PostgreSQL sends.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import socketserver
import threading
import time
from typing import Any

from tokend.emulator.directory import Directory, TokenRejected

log = logging.getLogger("tokend.emulator.ldap")
PREFIX, SUFFIX = "cn=", ",ou=roles,dc=tokend"
SUCCESS, INVALID_CREDENTIALS, PROTOCOL_ERROR = 0, 49, 2


def hba_options(port: int, host: str = "127.0.0.1") -> str:
    """The pg_hba.conf options that send PostgreSQL logins to this check."""
    return f'ldapserver={host} ldapport={port} ldapprefix="{PREFIX}" ldapsuffix="{SUFFIX}"'


class LdapCheck:
    def __init__(self, directory: Directory, host: str = "127.0.0.1", port: int = 0) -> None:
        self.directory = directory
        self.checks: list[dict[str, Any]] = []  # role, ok, reason, at: one per bind
        server = socketserver.ThreadingTCPServer((host, port), _Handler, bind_and_activate=False)
        # socketserver's default listen backlog is 5: a burst of logins (500 at once through the proxy) overflowed
        # it, and a PostgreSQL backend whose SYN was dropped waited 1 + 2 + 4 + 8 + 16 s for its retransmits,
        # longer than a login may take
        server.request_queue_size = 1024
        server.server_bind()
        server.server_activate()
        server.daemon_threads = True
        server.check = self  # type: ignore[attr-defined]
        self._server = server
        self.port: int = server.server_address[1]

    def start(self) -> None:
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name="ldap-check", daemon=True
        ).start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def bind(self, dn: str, password: bytes) -> tuple[int, str]:
        role = dn[len(PREFIX) : -len(SUFFIX)] if dn.startswith(PREFIX) and dn.endswith(SUFFIX) else dn
        try:
            who = self.directory.check(password.decode("ascii"), role)
        except (TokenRejected, UnicodeDecodeError) as e:
            reason = str(e) if isinstance(e, TokenRejected) else "The password is not an access token."
            self.checks.append({"role": role, "ok": False, "reason": reason, "at": time.time()})
            return INVALID_CREDENTIALS, reason
        self.checks.append({"role": role, "ok": True, "principal": who, "at": time.time()})
        return SUCCESS, ""


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        check: LdapCheck = self.server.check  # type: ignore[attr-defined]
        sock: socket.socket = self.request
        sock.settimeout(10)
        with contextlib.suppress(OSError, ValueError):
            while True:
                tag, body = _read_tlv(sock)
                if tag != 0x30:
                    return
                msg_id, rest = _int(body)
                op, op_body, _ = _tlv(rest)
                if op == 0x42:  # UnbindRequest
                    return
                if op != 0x60:  # not a BindRequest
                    sock.sendall(_response(msg_id, PROTOCOL_ERROR, "only simple bind is supported"))
                    return
                _version, rest = _int(op_body)
                tag, dn, rest = _tlv(rest)
                auth_tag, password, _ = _tlv(rest)
                if auth_tag != 0x80:
                    sock.sendall(_response(msg_id, PROTOCOL_ERROR, "only simple bind is supported"))
                    return
                code, text = check.bind(dn.decode("utf-8", "replace"), password)
                sock.sendall(_response(msg_id, code, text))


# -- the few bits of BER we need ------------------------------------------------------------------------------------
def _read_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ValueError("connection closed")
        buf += chunk
    return buf


def _read_tlv(sock: socket.socket) -> tuple[int, bytes]:
    tag, first = _read_exact(sock, 2)
    length = first
    if first & 0x80:
        length = int.from_bytes(_read_exact(sock, first & 0x7F), "big")
    if length > 1 << 20:
        raise ValueError("message too large")
    return tag, _read_exact(sock, length)


def _tlv(data: bytes) -> tuple[int, bytes, bytes]:
    """(tag, value, the bytes after it)."""
    tag, length, pos = data[0], data[1], 2
    if length & 0x80:
        n = length & 0x7F
        length, pos = int.from_bytes(data[2 : 2 + n], "big"), 2 + n
    return tag, data[pos : pos + length], data[pos + length :]


def _int(data: bytes) -> tuple[int, bytes]:
    tag, value, rest = _tlv(data)
    if tag not in (0x02, 0x0A):
        raise ValueError("expected an integer")
    return int.from_bytes(value, "big", signed=True), rest


def _encode(tag: int, value: bytes) -> bytes:
    n = len(value)
    if n < 0x80:
        return bytes([tag, n]) + value
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + value


def _response(msg_id: int, code: int, text: str) -> bytes:
    mid = msg_id.to_bytes(max(1, (msg_id.bit_length() + 8) // 8), "big", signed=True)
    bind = _encode(0x61, _encode(0x0A, bytes([code])) + _encode(0x04, b"") + _encode(0x04, text.encode()))
    return _encode(0x30, _encode(0x02, mid) + bind)

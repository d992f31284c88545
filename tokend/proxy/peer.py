"""Who is on the other end of a loopback TCP connection: the proxy serves only its own user.

Linux: the kernel's socket tables (/proc/net/tcp and tcp6) list every socket with its owner's uid. A loopback
connection appears twice; the client's own socket is the one whose local address is our peer's address and whose
remote address is ours. Addresses there are hex, each 32-bit word in host byte order, ports big-endian hex.
A client already gone cannot be found, and is refused. The tables are per network namespace, like the connection.
Elsewhere the OS offers no cheap equivalent (see README, "Security model"): the answer is None and the listener's
documented rule applies.
"""

from __future__ import annotations

import socket
import struct

from tokend import system


def _hex(address: str) -> str:
    if ":" in address:
        words = struct.unpack("<4I", socket.inet_pton(socket.AF_INET6, address))
        return "".join(f"{w:08X}" for w in words)
    return f"{struct.unpack('<I', socket.inet_aton(address))[0]:08X}"


def _mapped(address: str) -> str:
    """An IPv4 address as a dual-stack IPv6 socket shows it (::ffff:a.b.c.d)."""
    return _hex("::ffff:" + address)


def tcp_peer_uid(conn: socket.socket) -> int | None:
    """The uid owning the client socket of ``conn`` (an accepted loopback TCP connection); None when the OS cannot
    tell (not Linux) or the client is gone."""
    if not system.LINUX:
        return None
    peer = conn.getpeername()[:2]
    ours = conn.getsockname()[:2]
    wanted = {(f"{_hex(peer[0])}:{peer[1]:04X}", f"{_hex(ours[0])}:{ours[1]:04X}")}
    if ":" not in peer[0]:
        wanted.add((f"{_mapped(peer[0])}:{peer[1]:04X}", f"{_mapped(ours[0])}:{ours[1]:04X}"))
    for table in ("/proc/net/tcp6", "/proc/net/tcp") if ":" in peer[0] else ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f, None)
                for line in f:
                    fields = line.split()
                    if len(fields) > 7 and (fields[1], fields[2]) in wanted:
                        return int(fields[7])
        except OSError:  # pragma: no cover - no /proc: nothing to go on, the client is refused
            continue
    return None

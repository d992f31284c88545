"""Who is on the other end of a loopback TCP connection: the proxy serves only its own user.

Linux keeps an owner uid with every socket. The client's socket is the one whose local address is our peer's and
whose remote address is ours; it is asked for by exactly that address pair:
- first through sock_diag (netlink, the interface behind ``ss``): one exact lookup, tens of microseconds, however
  many sockets the machine has;
- else in the kernel's socket tables (/proc/net/tcp and tcp6), read whole — slow with thousands of sockets (every
  TIME_WAIT one is listed), so only while sock_diag has not been seen to work here (a kernel without TCP diag, a
  sandbox without netlink). Once it has answered, its "no such socket" is final: a client that connects and is
  gone at once costs one exact lookup, not a read of the whole table. Addresses there are hex, each 32-bit word in
  host byte order, ports big-endian hex.
A client already gone cannot be found, and is refused; so is one whose lookup failed (out of descriptors, a netlink
error): the caller refuses every None. A client socket its process has closed lingers as an orphan (FIN_WAIT2,
TIME_WAIT) that the kernel keeps with no owner — its uid reads 0, root's — so only a socket with an inode (one a
process holds) names its owner: else a client that sent its start-up and a query and closed at once would pass as
root's, and a daemon run as root would run the query. Both are per network namespace, like the connection.
Elsewhere the OS offers no cheap equivalent (``TCP_OWNER_KNOWN`` is False; see README, "Security model"): the
proxy's TCP listeners stay closed there unless the target allows any local user.

For the audit log (``tokend.proxy.audit``), the client's process: a Unix socket's peer pid comes with its
credentials (Linux SO_PEERCRED, macOS LOCAL_PEERPID); a TCP client's from its socket's inode, the one the owner
lookup names, found among this user's processes' descriptors in /proc (``pid_of_socket``: off the event loop, it
reads a directory per process). Its executable: /proc/PID/exe (Linux), libproc's proc_pidpath (macOS); Windows:
neither (null in the log).
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import ctypes.util
import functools
import os
import socket
import struct
import sys
import threading

from tokend import system

NETLINK_SOCK_DIAG = 4
AF_NETLINK: int = getattr(socket, "AF_NETLINK", -1)  # Linux only; elsewhere the lookup is never reached
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST = 1
NO_COOKIE = 0xFFFFFFFF
TCP_OWNER_KNOWN = system.LINUX  # whether this OS can name the owner of a loopback TCP client
_diag_works = False  # sock_diag has named a client here: its "not found" is the answer
RECENT_PIDS = 8  # processes that held a client socket lately, looked in first
_recent: collections.deque[int] = collections.deque(maxlen=RECENT_PIDS)
_recent_lock = threading.Lock()  # the lookups run on the loop's thread pool
_UID_AT = 16 + 64  # nlmsghdr, then inet_diag_msg: family..retrans (4), sockid (48), expires, rqueue, wqueue (12)
# then idiag_uid and idiag_inode


def tcp_peer_uid(conn: socket.socket) -> int | None:
    """The uid owning the client socket of ``conn`` (an accepted loopback TCP connection); None when the OS cannot
    tell (not Linux), the client is gone or the lookup failed. OSError when the connection is gone already."""
    global _diag_works
    if not TCP_OWNER_KNOWN:
        return None
    peer, ours = conn.getpeername()[:2], conn.getsockname()[:2]
    try:
        found, uid = _diag_lookup(conn.family, peer, ours)
    except OSError:  # no netlink here, or no descriptor for it: the tables, which need one too
        pass
    else:
        if found:
            _diag_works = True
            return uid
        if _diag_works:
            return None
    return _proc_uid(peer, ours)


def tcp_client_pid(family: int, peer: tuple[str, int], ours: tuple[str, int], uid: int | None) -> int | None:
    """The pid of the process of ``uid`` holding the client socket (local address ``peer``, remote ``ours``), for
    the audit log: its inode by the owner lookup's routes, then ``pid_of_socket``. None where it cannot be found.
    Blocking (a read of /proc): run it off the event loop."""
    if not TCP_OWNER_KNOWN:
        return None
    try:
        found, _, inode = _diag_find(family, peer, ours)
    except OSError:
        found, inode = False, None
    if not found:
        inode = _proc_find(peer, ours)[1]
    return pid_of_socket(inode, uid) if inode else None


def unix_peer_pid(sock: socket.socket) -> int | None:
    """The pid of the process at the other end of a Unix socket (the one that connected), or None where the OS
    does not say."""
    try:
        if hasattr(socket, "SO_PEERCRED"):
            return int(struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[0]) or None
        if system.MACOS:  # pragma: no cover - macOS: LOCAL_PEERPID (SOL_LOCAL = 0, option 2)
            return int(struct.unpack("i", sock.getsockopt(0, 2, 4))[0]) or None
    except OSError:
        pass
    return None


def pid_of_socket(inode: int, uid: int | None) -> int | None:
    """The process of ``uid`` holding socket ``inode`` (Linux; None elsewhere, or when it is gone): each process's
    descriptors in /proc, newest pid first (a client that just connected is most often the newest)."""
    if not system.LINUX:
        return None
    wanted = f"socket:[{inode}]"
    recent = list(_recent)
    for pid in recent:  # a client that connects again and again (a pool, a script's loop) is found at once
        if _holds(pid, wanted, uid):
            _seen(pid)
            return pid
    try:
        pids = sorted((int(e.name) for e in os.scandir("/proc") if e.name.isdigit()), reverse=True)
    except OSError:
        return None
    for pid in pids:
        if pid not in recent and _holds(pid, wanted, uid):
            _seen(pid)
            return pid
    return None


def _seen(pid: int) -> None:
    """``pid`` held a client socket: look in it first next time (at most ``RECENT_PIDS`` kept)."""
    with _recent_lock:
        with contextlib.suppress(ValueError):
            _recent.remove(pid)
        _recent.appendleft(pid)


def _holds(pid: int, wanted: str, uid: int | None) -> bool:
    """Whether process ``pid`` (of ``uid``, when given) has a descriptor naming ``wanted`` ("socket:[INODE]")."""
    fds = f"/proc/{pid}/fd"
    try:
        if uid is not None and os.stat(f"/proc/{pid}").st_uid != uid:
            return False
        names = os.listdir(fds)
    except OSError:  # gone, or not ours to read
        return False
    for fd in names:
        with contextlib.suppress(OSError):
            if os.readlink(f"{fds}/{fd}") == wanted:
                return True
    return False


def executable(pid: int) -> str | None:
    """The path of process ``pid``'s executable, or None (gone, not ours, or an OS with no way to ask here)."""
    if system.LINUX:
        try:
            return os.readlink(f"/proc/{pid}/exe")
        except OSError:
            return None
    if system.MACOS:  # pragma: no cover - macOS
        libproc = _libproc()
        if libproc is None:
            return None
        buf = ctypes.create_string_buffer(4096)  # PROC_PIDPATHINFO_MAXSIZE
        n = libproc.proc_pidpath(pid, buf, len(buf))
        return buf.raw[:n].decode(errors="replace") if n > 0 else None
    return None


@functools.cache
def _libproc() -> ctypes.CDLL | None:  # pragma: no cover - macOS
    name = ctypes.util.find_library("proc")
    return ctypes.CDLL(name) if name else None


def _diag_uid(family: int, peer: tuple[str, int], ours: tuple[str, int]) -> int | None:
    """sock_diag's exact lookup of the TCP socket with local address ``peer`` and remote address ``ours``: the uid
    of the process that holds it, or None."""
    return _diag_lookup(family, peer, ours)[1]


def _diag_lookup(family: int, peer: tuple[str, int], ours: tuple[str, int]) -> tuple[bool, int | None]:
    """(the kernel knows such a socket, the uid of the process holding it — None for an orphan)."""
    return _diag_find(family, peer, ours)[:2]


def _diag_find(family: int, peer: tuple[str, int], ours: tuple[str, int]) -> tuple[bool, int | None, int | None]:
    """(the kernel knows such a socket, the uid of the process holding it — None for an orphan —, its inode)."""
    if sys.platform != "linux":  # netlink's sock_diag is Linux's alone: the lookup fails, and the caller refuses
        raise OSError("no sock_diag on this OS")

    def address(a: str) -> bytes:
        return socket.inet_pton(family, a).ljust(16, b"\0")

    # inet_diag_req_v2: family, protocol, ext, pad, states; inet_diag_sockid: sport, dport (big-endian), src, dst,
    # interface, cookie (none: match by addresses alone)
    req = (
        struct.pack("=BBBBI", family, socket.IPPROTO_TCP, 0, 0, 0xFFFFFFFF)
        + struct.pack("!HH", peer[1], ours[1])
        + address(peer[0])
        + address(ours[0])
        + struct.pack("=III", 0, NO_COOKIE, NO_COOKIE)
    )
    with socket.socket(AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG) as s:
        s.settimeout(1.0)
        s.send(struct.pack("=IHHII", 16 + len(req), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST, 1, 0) + req)
        answer = s.recv(8192)
    _, kind = struct.unpack_from("=IH", answer)
    if kind != SOCK_DIAG_BY_FAMILY or len(answer) < _UID_AT + 8:
        return False, None, None  # NLMSG_ERROR: not found (or no TCP diag here: the tables decide)
    uid, inode = struct.unpack_from("=II", answer, _UID_AT)
    return (True, int(uid), int(inode)) if inode else (True, None, None)


def _hex(address: str) -> str:
    if ":" in address:
        words = struct.unpack("<4I", socket.inet_pton(socket.AF_INET6, address))
        return "".join(f"{w:08X}" for w in words)
    return f"{struct.unpack('<I', socket.inet_aton(address))[0]:08X}"


def _mapped(address: str) -> str:
    """An IPv4 address as a dual-stack IPv6 socket shows it (::ffff:a.b.c.d)."""
    return _hex("::ffff:" + address)


def _proc_uid(peer: tuple[str, int], ours: tuple[str, int]) -> int | None:
    return _proc_find(peer, ours)[0]


def _proc_find(peer: tuple[str, int], ours: tuple[str, int]) -> tuple[int | None, int | None]:
    """(uid, inode) of the socket from the kernel's tables; (None, None) when not found or an orphan."""
    wanted = {(f"{_hex(peer[0])}:{peer[1]:04X}", f"{_hex(ours[0])}:{ours[1]:04X}")}
    if ":" not in peer[0]:
        wanted.add((f"{_mapped(peer[0])}:{peer[1]:04X}", f"{_mapped(ours[0])}:{ours[1]:04X}"))
    for table in ("/proc/net/tcp6", "/proc/net/tcp") if ":" in peer[0] else ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f, None)
                for line in f:
                    fields = line.split()
                    if len(fields) > 9 and (fields[1], fields[2]) in wanted:
                        if fields[9] == "0":  # no inode: an orphan, no owner
                            return None, None
                        return int(fields[7]), int(fields[9])
        except OSError:  # pragma: no cover - no /proc: nothing to go on, the client is refused
            continue
    return None, None

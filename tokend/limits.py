"""What a client may consume, and the reserve the daemon keeps for its own work.

The rule (DESIGN.md, "Security rules"): every lookup that can fail refuses; every resource a client can consume is
bounded; the daemon's own work keeps a reserve nobody else can take. This module holds the two shared pieces:

- File descriptors (``raise_file_limit``, ``shares``, ``Budget``): the soft RLIMIT_NOFILE is lifted to the hard
  limit at start, and a reserve is never handed to proxy sessions, so refresh (HTTPS to Entra), sink writes (a
  temporary file, a lock, the folder), IPC, the proxy's peer lookup (a netlink socket) and the health endpoint always
  find one, however many connections the proxy holds. IPC and health have caps of their own inside the reserve.
- Connections that have not proven anything yet (``Pending``): no complete start-up or request so far. They are
  capped per listener, and per peer uid where the uid is known; when a cap is hit, the *oldest* pending connection
  is closed to make room for the new one. Why the oldest and not the newest: an honest client sends its start-up
  or request right after connecting and leaves the pending set within milliseconds, so what stays there longest is
  what idles on purpose; closing the newest instead would hand the listener to whoever filled it first, for as long
  as they keep it full. Connections past that stage (answering, logged in) are not evicted: when they alone fill
  the cap, the newcomer is closed.
"""

from __future__ import annotations

import contextlib
import sys
from collections import Counter
from collections.abc import Callable, Hashable
from dataclasses import dataclass

if sys.platform != "win32":  # Windows has no descriptor limit to lift
    import resource

IPC_CONNECTIONS = 256  # IPC connections at once (only the user can connect; a runaway script is the worry)
HEALTH_CONNECTIONS = 128  # health and metrics connections at once (any local user can connect)
OWN_WORK = 256  # descriptors for everything else: refreshers, sinks, watchers, logs, the peer lookup, libraries
NO_LIMIT = 1 << 20  # what the shares assume where the OS has no RLIMIT_NOFILE (Windows)


@dataclass(frozen=True)
class Shares:
    """How the soft RLIMIT_NOFILE is shared out: IPC's and health's caps, the daemon's own work, and what is left
    for proxy sessions. With a small limit each part shrinks in proportion (an eighth each for IPC and health, a
    quarter for the daemon's own work), so the reserve never swallows the proxy and a full IPC or health endpoint
    never eats the daemon's share."""

    ipc: int
    health: int
    own: int
    proxy: int

    @property
    def reserve(self) -> int:
        """Descriptors proxy sessions never take."""
        return self.ipc + self.health + self.own


def shares(soft_limit: int) -> Shares:
    ipc = min(IPC_CONNECTIONS, soft_limit // 8)
    health = min(HEALTH_CONNECTIONS, soft_limit // 8)
    own = min(OWN_WORK, soft_limit // 4)
    return Shares(ipc, health, own, max(0, soft_limit - ipc - health - own))


def raise_file_limit() -> int:
    """Lift the soft RLIMIT_NOFILE to the hard limit (two descriptors per proxied connection: the usual soft 1024
    would stop at a few hundred). Returns the soft limit now in force."""
    if sys.platform == "win32":  # pragma: no cover - Windows: no such limit
        return NO_LIMIT
    else:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        # macOS reports an unlimited hard limit but refuses more than OPEN_MAX (10240) for the soft one
        for wanted in (hard, 1 << 20, 10240) if hard == resource.RLIM_INFINITY else (hard,):
            if wanted <= soft:
                break
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
                break
            except (ValueError, OSError):
                continue
        return int(resource.getrlimit(resource.RLIMIT_NOFILE)[0])


def file_limit() -> int:
    """The soft RLIMIT_NOFILE in force."""
    if sys.platform == "win32":  # pragma: no cover - Windows: no such limit
        return NO_LIMIT
    else:
        return int(resource.getrlimit(resource.RLIMIT_NOFILE)[0])


class Budget:
    """A count with a ceiling: the descriptors proxy sessions may hold (``Shares.proxy``; two per session, the
    client's socket and the server's, taken at accept and given back when the session ends), or the cancel requests
    a listener may be forwarding."""

    def __init__(self, total: int) -> None:
        self.total = max(0, total)
        self.used = 0

    def take(self, n: int) -> bool:
        if self.used + n > self.total:
            return False
        self.used += n
        return True

    def give(self, n: int) -> None:
        self.used = max(0, self.used - n)


class Ticket:
    """One connection's place in a ``Pending`` set."""

    __slots__ = ("close", "key", "owner", "state")

    def __init__(self, owner: Pending, key: Hashable, close: Callable[[], None]) -> None:
        self.owner, self.key, self.close = owner, key, close
        self.state = "pending"  # pending (evictable) → busy (counted, kept) → released

    def busy(self) -> None:
        """Past the pending stage (a request read): still counted against the cap, never evicted."""
        if self.state == "pending":
            self.owner._drop(self)
            self.owner.busy += 1
            self.state = "busy"

    def release(self) -> None:
        """Gone, or no longer this set's business (idempotent)."""
        if self.state == "pending":
            self.owner._drop(self)
        elif self.state == "busy":
            self.owner.busy -= 1
        self.state = "released"


class Pending:
    """Connections that have not proven anything yet: at most ``limit`` in all (pending and busy), at most
    ``per_key`` pending for one key (a peer uid). ``admit`` evicts the oldest pending connection when a cap is hit,
    and returns None when only busy ones fill it (the caller closes the newcomer). Not thread-safe: one loop."""

    def __init__(self, limit: int, per_key: int | None = None) -> None:
        self.limit, self.per_key = limit, per_key
        self._order: dict[Ticket, None] = {}  # pending tickets, oldest first
        self._keys: Counter[Hashable] = Counter()
        self.busy = 0
        self.evicted = 0  # connections closed to make room, since start

    def __len__(self) -> int:
        return len(self._order) + self.busy

    def admit(self, close: Callable[[], None], key: Hashable = None) -> Ticket | None:
        """A new connection; ``close()`` ends it if it must make room later."""
        if self.per_key is not None and self._keys[key] >= self.per_key:
            self._evict(next(t for t in self._order if t.key == key))
        if len(self) >= self.limit:
            if not self._order:
                return None
            self._evict(next(iter(self._order)))
        ticket = Ticket(self, key, close)
        self._order[ticket] = None
        self._keys[key] += 1
        return ticket

    def _evict(self, ticket: Ticket) -> None:
        ticket.release()
        self.evicted += 1
        with contextlib.suppress(Exception):
            ticket.close()

    def _drop(self, ticket: Ticket) -> None:
        del self._order[ticket]
        self._keys[ticket.key] -= 1
        if not self._keys[ticket.key]:
            del self._keys[ticket.key]

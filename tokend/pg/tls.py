"""TLS to a PostgreSQL server, with libpq's meanings: the contexts for each ``sslmode`` tokend uses, the name sent
as SNI, and the cache of one verifying context per CA file that the proxy's sessions share.

- ``verify-full`` (the proxy's server leg, ``tokend admin``): the chain is verified against the target's
  ``sslrootcert`` file, else the system's trusted roots, and the certificate must name the host.
- ``require`` (``tokend doctor``'s TLS check, which asks only whether the server speaks TLS): encrypted, nothing
  verified. libpq's ``require`` verifies the chain when a root certificate file exists; doctor's check does not
  look for one, as psql's ``sslmode=require`` with no ``~/.postgresql/root.crt`` does not.
- TLS 1.2 at least, as Azure Database for PostgreSQL requires.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Callable, Hashable
from pathlib import Path

SSLMODES = ("require", "verify-full")


def context(sslmode: str, sslrootcert: Path | None = None) -> ssl.SSLContext:
    """A client context for ``sslmode`` (see the module's docstring). Building a verifying one with the system's
    roots reads the whole CA store (about 0.85 MB and 18 ms): long-lived callers keep it (``Contexts``)."""
    if sslmode == "verify-full":
        ctx = ssl.create_default_context(cafile=str(sslrootcert) if sslrootcert else None)
    elif sslmode == "require":
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    else:
        raise ValueError(f"sslmode {sslmode!r} is not one of {', '.join(SSLMODES)}")
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def server_hostname(host: str) -> str:
    """The name to verify the certificate against, and to send as SNI: the host as the target names it. Python's
    ``ssl`` sends no SNI for an IP address, as libpq does not (``sslsni=1`` skips IP literals), and checks an IP
    address against the certificate's IP entries."""
    return host


class Contexts:
    """One ``verify-full`` context per CA file in use (None: the system's roots), shared by every session of the
    targets that name it, made when first asked for and again when the file changed (its path, size and
    modification time): far too much work and memory to build per connection (see ``context``). ``keep`` drops
    those no target uses any more. ``warn`` hears each failure to build one, once."""

    def __init__(self, warn: Callable[[str], None] = lambda _: None) -> None:
        self._made: dict[Hashable, ssl.SSLContext | str] = {}  # by CA file: a context, or why there is none
        self._warn = warn

    def keep(self, cafiles: set[Path | None]) -> None:
        wanted = {_signature(ca) for ca in cafiles}
        for key in [k for k in self._made if k not in wanted]:
            del self._made[key]

    def get(self, ca: Path | None) -> ssl.SSLContext | str:
        """The context for ``ca``, or the one line that says why there is none (an unreadable or invalid file)."""
        key = _signature(ca)
        if key not in self._made:
            try:
                self._made[key] = context("verify-full", ca)
            except (OSError, ssl.SSLError, ValueError) as e:
                why = f"cannot load the CA file {ca}: {getattr(e, 'strerror', None) or e}"
                self._made[key] = why
                self._warn(why)
        return self._made[key]

    def __len__(self) -> int:
        return len(self._made)


def _signature(ca: Path | None) -> Hashable:
    """What identifies a CA file's content for the cache: its path, size and modification time."""
    if ca is None:
        return None
    try:
        st = os.stat(ca)
    except OSError:
        return (str(ca), None)
    return (str(ca), st.st_size, st.st_mtime_ns)

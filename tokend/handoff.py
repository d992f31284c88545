"""The hand-off: ``tokend token`` answered by the running daemon with nothing heavy imported.

Password commands (pgAdmin's PasswordExecCommand), shell prompts and scripts run ``tokend token`` once per
connection, so it must cost little more than starting Python. The ``tokend`` launcher (install/bin/tokend) starts
Python without ``site`` and calls ``token()`` here first; this module imports only ``os`` and C modules (no
``socket``, ``json``, ``hashlib``, ``platformdirs``: each would cost more than the whole answer).

It finds the daemon exactly where the daemon listens: ``config_id`` and ``socket_file`` are the definitions
``tokend.paths`` uses too, and the default config and runtime folders follow the same XDG rules as platformdirs
(a test compares them over many environments). Whenever it is not sure — another OS layout, any option it does not
know, no daemon, an error answer — it declines (returns None) and the full command runs, so the output, messages and
exit codes are always the full command's. The daemon checks that the caller is its own user.
"""

from __future__ import annotations

import os
import sys

from tokend import system

try:  # the C SHA-256: hashlib would import OpenSSL's bindings first
    from _sha2 import sha256  # Python 3.12+
except ImportError:  # pragma: no cover - depends on the Python version
    try:
        from _sha256 import sha256  # Python 3.10, 3.11
    except ImportError:  # a Python built without its own SHA-2
        from hashlib import sha256

APP = "tokend"
SOCKET_SUFFIX = ".sock"


def config_id(config_path: str) -> str:
    """A short stable name for one config file: the first 12 hex digits of SHA-256 of its absolute path."""
    absolute = os.path.abspath(os.path.expanduser(config_path))
    return sha256(absolute.encode("utf-8", "surrogateescape")).hexdigest()[:12]


def socket_file(runtime_dir: str, config_path: str) -> str:
    """The daemon's IPC socket for ``config_path`` in ``runtime_dir``."""
    return os.path.join(runtime_dir, config_id(config_path) + SOCKET_SUFFIX)


def xdg_runtime_dir() -> str | None:
    """``$XDG_RUNTIME_DIR/tokend`` when the variable names an absolute folder that is this user's own and private
    (mode 0700, not a symlink), as the XDG spec requires; else None (then platformdirs picks the fallback)."""
    base = os.environ.get("XDG_RUNTIME_DIR", "")
    if not base or not os.path.isabs(base) or not hasattr(os, "getuid"):
        return None
    try:
        st = os.lstat(base)
    except OSError:
        return None
    if (st.st_mode & 0o170000) != 0o040000 or st.st_uid != os.getuid() or st.st_mode & 0o077:
        return None
    return os.path.join(base, APP)


def default_config_file() -> str | None:
    """The default config file as platformdirs names it on Linux (XDG) and macOS; None elsewhere."""
    env = os.environ.get("TOKEND_CONFIG")
    if env:
        return env
    if system.MACOS:  # pragma: no cover - macOS
        return os.path.expanduser(f"~/Library/Application Support/{APP}/config.toml")
    if not system.LINUX:
        return None
    base = os.environ.get("XDG_CONFIG_HOME", "").strip()
    if not base or not os.path.isabs(base):
        base = os.path.expanduser("~/.config")
    return os.path.join(base, APP, "config.toml")


def token(args: list[str]) -> int | None:
    """``tokend token [TARGET] [--config PATH]``: write the daemon's token and return 0, or None to let the full
    command answer (any other option, no daemon here, an error from the daemon)."""
    target, config, rest = None, None, list(args)
    while rest:
        arg = rest.pop(0)
        if arg == "--config" and rest:
            config = rest.pop(0)
        elif arg.startswith("--config="):
            config = arg.split("=", 1)[1]
        elif arg.startswith("-") or target is not None:
            return None
        else:
            target = arg
    config = config or default_config_file()
    runtime = xdg_runtime_dir()
    if not config or not runtime:
        return None
    answer = _ask(socket_file(runtime, config), target)
    if answer is None:
        return None
    sys.stdout.write(answer + "\n")
    sys.stdout.flush()
    return 0


def _ask(path: str, target: str | None) -> str | None:
    """The token the daemon at ``path`` hands out for ``target``, or None."""
    if sys.platform == "win32":  # the hand-off answers over a Unix socket; on Windows the full CLI does
        return None
    import _json  # the C modules, imported only once the arguments are known to be the hand-off's
    import _socket

    request = '{"op": "token", "target": %s}\n' % ("null" if target is None else _json.encode_basestring_ascii(target))
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.settimeout(10.0)
        sock.connect(path)
        sock.sendall(request.encode())
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except OSError:
        return None
    finally:
        sock.close()
    try:
        reply, _ = _json.make_scanner(_Context())(data.decode(), 0)  # type: ignore[arg-type,unused-ignore]  # (unreachable on win32)
        return str(reply["result"]["token"]) if reply.get("ok") else None
    except (ValueError, KeyError, TypeError, AttributeError, StopIteration):
        return None


class _Context:
    """What the C JSON scanner reads off a decoder: plain JSON, nothing hooked."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = None
    memo: dict[str, str] = {}  # noqa: RUF012 - the scanner's own attribute

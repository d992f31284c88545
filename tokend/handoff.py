"""The hand-off: ``tokend token`` answered by the running daemon with nothing heavy imported.

Password commands (pgAdmin's PasswordExecCommand), shell prompts and scripts run ``tokend token`` once per
connection, so it must cost little more than starting Python. The ``tokend`` launcher (install/bin/tokend) starts
Python without ``site`` and calls ``token()`` here first; this module imports only ``os`` and C modules (no
``socket``, ``json``, ``hashlib``, ``platformdirs``: each would cost more than the whole answer).

It answers ``tokend token [TARGET]`` and the connection form ``tokend token --host H [--port P] --user U
[--database D]`` (pgAdmin's shared PasswordExecCommand: the daemon picks the target libpq would match, IPC's
``token-by-connection``).

It finds the daemon exactly where the daemon listens: ``config_id`` and ``socket_file`` are the definitions
``tokend.paths`` uses too, and the default config and runtime folders follow the same rules as platformdirs, with
``XDG_RUNTIME_DIR`` or without it (``runtime_dir``; a test compares them over many environments). Whenever it is
not sure — another OS layout, any option it does not know, no daemon, an error answer — it declines (returns None)
and the full command runs, so the output, messages and exit codes are always the full command's. The daemon checks
that the caller is its own user, and the hand-off that the folder the socket is in is its user's own and private.
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


def _euid() -> int:
    """This process's effective uid (-1 on Windows, where no folder is judged by it)."""
    if sys.platform == "win32":  # pragma: no cover - Windows
        return -1
    return os.geteuid()


def _private(path: str) -> bool:
    """``path`` is a folder of this user's (not a symlink) that nobody else may open."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return (st.st_mode & 0o170000) == 0o040000 and st.st_uid == _euid() and not st.st_mode & 0o077


def _safe_parents(path: str) -> bool:
    """Nobody else can replace ``path``: every folder above it is root's or this user's, and none that others may
    write lacks the sticky bit (platformdirs' rule for a runtime folder's parents)."""
    parent = os.path.dirname(os.path.abspath(path))
    while True:
        try:
            st = os.stat(parent)
        except OSError:
            return False
        if (st.st_mode & 0o170000) != 0o040000 or st.st_uid not in (0, _euid()):
            return False
        if st.st_mode & 0o022 and not st.st_mode & 0o1000:
            return False
        up = os.path.dirname(parent)
        if up == parent:
            return True
        parent = up


def temp_dir() -> str:
    """The temporary folder ``tempfile.gettempdir()`` picks (TMPDIR, TEMP, TMP, then /tmp, /var/tmp, /usr/tmp: the
    first usable one), as platformdirs takes it: a relative variable's folder gives way to the first usable
    absolute one. Without importing tempfile (random, shutil, …): "usable" is a folder this user may write."""
    names = [os.environ.get(n, "") for n in ("TMPDIR", "TEMP", "TMP")]
    roots = [v for v in names if v and os.path.isabs(v)] + ["/tmp", "/var/tmp", "/usr/tmp"]
    for candidate in [v for v in names if v] + ["/tmp", "/var/tmp", "/usr/tmp"]:
        if os.path.isdir(candidate) and os.access(candidate, os.W_OK | os.X_OK):
            found = os.path.abspath(candidate)
            if os.path.normpath(found) in {os.path.normpath(r) for r in roots}:
                return found
            return next((r for r in roots if os.path.isdir(r) and os.access(r, os.W_OK | os.X_OK)), found)
    return os.getcwd()


def runtime_dir() -> str | None:
    """The folder the daemon's socket is in (``paths.runtime_dir``) on Linux: ``xdg_runtime_dir()``, else
    platformdirs' fallback, ``/run/user/UID`` when that is a private folder of this user's, else
    ``runtime-UID`` in the temporary folder; each with ``tokend`` appended. None elsewhere, or when the folder found
    is not this user's and private (the daemon would not be there: the full command decides)."""
    xdg = xdg_runtime_dir()
    if xdg is not None:
        return xdg
    if not system.LINUX:
        return None
    run = f"/run/user/{_euid()}"
    base = run if _private(run) and _safe_parents(run) else os.path.join(temp_dir(), f"runtime-{_euid()}")
    return os.path.join(base, APP) if _private(base) else None


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


_CONNECTION = ("--host", "--port", "--user", "--database")


def token(args: list[str]) -> int | None:
    """``tokend token [TARGET] [--config PATH]`` or ``tokend token --host H [--port P] --user U [--database D]
    [--config PATH]``: write the daemon's token and return 0, or None to let the full command answer (any other
    option, both forms at once, no daemon here, an error from the daemon)."""
    target, config, rest = None, None, list(args)
    connection: dict[str, str] = {}
    while rest:
        arg = rest.pop(0)
        flag, eq, value = arg.partition("=")
        if flag == "--config" or flag in _CONNECTION:
            if not eq:
                if not rest:
                    return None
                value = rest.pop(0)
            if flag == "--config":
                config = value
            elif flag[2:] in connection:
                return None  # given twice: the full command says what it makes of that
            else:
                connection[flag[2:]] = value
        elif arg.startswith("-") or target is not None:
            return None
        else:
            target = arg
    if connection and (target is not None or "host" not in connection or "user" not in connection):
        return None  # both forms, or too little to match on: the full command's usage error
    config = config or default_config_file()
    runtime = runtime_dir()
    if not config or not runtime:
        return None
    if connection:
        fields = ", ".join(f'"{key}": {_string(connection.get(key))}' for key in ("host", "port", "user", "database"))
        request = '{"op": "token-by-connection", ' + fields + "}\n"
    else:
        request = '{"op": "token", "target": ' + _string(target) + "}\n"
    answer = _ask(socket_file(runtime, config), request)
    if answer is None:
        return None
    sys.stdout.write(answer + "\n")
    sys.stdout.flush()
    return 0


def _string(value: str | None) -> str:
    """``value`` as a JSON string (ASCII, escaped by the C encoder), or null."""
    if value is None:
        return "null"
    import _json  # a C module, imported only once the arguments are known to be the hand-off's

    return str(_json.encode_basestring_ascii(value))


def _ask(path: str, request: str) -> str | None:
    """The token the daemon at ``path`` hands out for ``request`` (one JSON line), or None."""
    if sys.platform == "win32":  # the hand-off answers over a Unix socket; on Windows the full CLI does
        return None
    import _json  # the C modules, imported only once the arguments are known to be the hand-off's
    import _socket

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

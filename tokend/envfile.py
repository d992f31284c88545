"""The daemon's environment file: ``tokend.env`` beside the config, the one place a login service gets its
environment (secret variables, HTTPS_PROXY/NO_PROXY, REQUESTS_CA_BUNDLE …) whatever starts it.

Every way of starting the daemon runs `tokend run`, which reads the file at start and on each reload, before any
identity is built; the systemd unit also names it (``EnvironmentFile=-…``), so systemd's own view matches. Values in
the file override the inherited environment, as systemd's EnvironmentFile= overrides Environment=; a key removed
from the file gets its inherited value (or none) back at the next reload.

Syntax: the subset of systemd's EnvironmentFile= that every reader agrees on — ``KEY=value`` lines; blank lines and
lines starting with ``#`` or ``;`` are ignored; whitespace around the key and the value is dropped; a value in
double quotes may hold ``\\"``, ``\\\\``, ``\\n`` escapes, one in single quotes is taken literally. No ``export``,
no expansion of ``$VAR``, no line continuations: refused with the line number, so a value is never half read.

The file may hold secrets: it must be a regular file of this user's, reached through the user's own links only
(the safe writer's rules, ``sinks.atomic.read``), and mode 0600 (no group or other bits), or it is refused with one
line saying how to fix it. Values are never logged or printed; only the names are.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tokend import system
from tokend.errors import ConfigError, SinkError
from tokend.sinks import atomic

NAME = "tokend.env"
MAX_BYTES = 1 << 20  # an environment file larger than 1 MiB is a mistake, not an environment
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ESCAPES = {'"': '"', "\\": "\\", "n": "\n", "t": "\t", "$": "$", "`": "`"}


def path_for(config_path: Path) -> Path:
    """The environment file of the config at ``config_path``: ``tokend.env`` in the same folder."""
    return Path(os.path.abspath(Path(config_path).expanduser())).parent / NAME


def parse(text: str, path: Path) -> dict[str, str]:
    """``KEY=value`` lines → a dict (a later line wins, as in systemd). ConfigError names the file, the line and
    the fix; it never quotes a value."""
    out: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        where = f"line {number}"
        key, sep, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not sep:
            raise ConfigError(path, where, "not KEY=value; write one variable per line, e.g. APP_SECRET=…")
        if key.startswith("export "):
            raise ConfigError(path, where, "drop `export`: the file holds KEY=value lines only (systemd's syntax)")
        if not _KEY.match(key):
            raise ConfigError(path, where, "the name must be letters, digits and '_', not starting with a digit")
        if raw.rstrip().endswith("\\"):
            raise ConfigError(path, where, "ends in a backslash (a line continuation); keep each value on one line")
        out[key] = _value(value, path, where)
    return out


def _value(value: str, path: Path, where: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == "'":
        return value[1:-1]
    if len(value) >= 2 and value[0] == value[-1] == '"':
        body, out, i = value[1:-1], [], 0
        while i < len(body):
            c = body[i]
            if c == "\\" and i + 1 < len(body) and body[i + 1] in _ESCAPES:
                out.append(_ESCAPES[body[i + 1]])
                i += 2
                continue
            if c == '"':
                raise ConfigError(path, where, 'an unescaped " inside a double-quoted value; write \\" there')
            out.append(c)
            i += 1
        return "".join(out)
    if value[:1] in ("'", '"'):
        raise ConfigError(path, where, "a quote that is not closed at the end of the line; close it")
    return value


def read(path: Path) -> dict[str, str]:
    """The variables of the file at ``path``; {} when there is none. ConfigError (exit 2) when it is not safely the
    user's or not private: each refusal names the file and the fix."""
    try:
        data = atomic.read(path, MAX_BYTES + 1)
    except SinkError as e:
        raise ConfigError(path, "", f"{_after_path(e, path)}; it holds the daemon's secrets") from None
    if data is None:
        return {}
    if len(data) > MAX_BYTES:
        raise ConfigError(path, "", f"larger than {MAX_BYTES} bytes; keep only KEY=value lines there")
    if not system.WINDOWS:
        mode = stat.S_IMODE(os.stat(atomic.resolve(path)).st_mode)
        if mode & 0o077:
            raise ConfigError(
                path, "", f"mode {mode:04o} lets other users read the daemon's secrets; fix: chmod 600 {path}"
            )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ConfigError(path, "", "not UTF-8; save the file as UTF-8") from None
    return parse(text, path)


def _after_path(e: SinkError, path: Path) -> str:
    text = str(e)
    prefix = f"{path}: "
    return text[len(prefix) :] if text.startswith(prefix) else text


@dataclass
class Applied:
    """What the file put into an environment, so the next load can take back what the file no longer says."""

    path: Path
    inherited: dict[str, str | None] = field(default_factory=dict)  # each key's value before the file set it

    @property
    def names(self) -> list[str]:
        return sorted(self.inherited)


def apply(config_path: Path, env: MutableMapping[str, str] | None = None, previous: Applied | None = None) -> Applied:
    """Read the config's environment file into ``env`` (default: this process's environment): its values win; keys
    a ``previous`` load set and the file no longer holds get their inherited values back. ConfigError leaves
    ``env`` as it was."""
    target: MutableMapping[str, str] = os.environ if env is None else env
    path = path_for(config_path)
    values = read(path)
    inherited = dict(previous.inherited) if previous is not None else {}
    for key in [k for k in inherited if k not in values]:
        _restore(target, key, inherited.pop(key))
    for key, value in values.items():
        if key not in inherited:
            inherited[key] = target.get(key)
        target[key] = value
    return Applied(path, inherited)


@contextmanager
def applied(config_path: Path) -> Iterator[Applied]:
    """The file applied to this process's environment while the block runs, and taken back after it: for work a
    command does in the daemon's stead (a token fetched, a sign-in), so what it starts afterwards (`tokend exec`'s
    command, doctor's psql) never inherits the daemon's secrets."""
    done = apply(config_path)
    try:
        yield done
    finally:
        for key, value in done.inherited.items():
            _restore(os.environ, key, value)


def _restore(env: MutableMapping[str, str], key: str, value: str | None) -> None:
    if value is None:
        env.pop(key, None)
    else:
        env[key] = value


def names(config_path: Path) -> list[str]:
    """The variable names the config's environment file sets (never the values), for status and doctor."""
    return sorted(read(path_for(config_path)))

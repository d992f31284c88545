"""`tokend service install | uninstall | status | logs`: run the daemon at login under the OS's service manager.

Linux: a systemd user unit (Type=notify: ready after the first token; restart on failure; logs in the journal).
macOS: a LaunchAgent in ~/Library/LaunchAgents (RunAtLoad, KeepAlive; logs in tokend's log folder).
Windows: a Task Scheduler task at logon, restart on failure, no window, registered with `schtasks /Create /XML`.
Templates live in the repo's service/ folder (shipped as ``tokend.service_templates``).
"""

from __future__ import annotations

import importlib.resources
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape as xml_escape

from tokend import config as config_mod
from tokend import envfile, ipc, paths, sinks, system
from tokend.errors import ConfigError, DaemonNotRunning, TokendError
from tokend.identities import interactive
from tokend.kinds import SINKS
from tokend.sinks.atomic import write_private

LABEL = "org.tokend.tokend"


class NoServiceManager(TokendError):
    """The OS's service manager is not reachable here (containers, WSL1)."""


@dataclass(frozen=True)
class Rendered:
    path: Path  # where the service file goes
    text: str


service_name = paths.service_name


def tokend_executable() -> Path:
    """The absolute path of the installed `tokend` launcher next to this Python, else the one on PATH."""
    beside = Path(sys.executable).with_name("tokend.cmd" if system.WINDOWS else "tokend")
    if beside.exists():
        return beside.absolute()
    found = shutil.which("tokend")
    if not found:
        raise TokendError("cannot find the installed `tokend` executable; install tokend (install/install.sh)")
    return Path(found).absolute()


def _template(name: str) -> str:
    return (importlib.resources.files("tokend.service_templates") / name).read_text(encoding="utf-8")


def _systemd_quote(value: str, executable: bool = False) -> str:
    """One literal word of an Exec line (systemd.service, "Command lines"): ``%%`` stops specifier expansion, and
    ``$$`` variable expansion in arguments (the executable is never expanded, so there ``$`` stays as it is);
    whitespace or a quote makes it a double-quoted word, inside which a backslash and a double quote are escaped
    with a backslash (C escapes). An unescaped quote made systemd refuse the whole unit ("Unbalanced quoting")."""
    value = value.replace("%", "%%")
    if not executable:
        value = value.replace("$", "$$")
    if not any(c in value for c in " \"'\\\t"):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_systemd(tokend: Path, config: Path) -> Rendered:
    name = service_name(config)
    text = _template("tokend.service").format(
        tokend=_systemd_quote(str(tokend), executable=True),
        config=_systemd_quote(str(config.absolute())),
        label=name,
        envfile=str(envfile.path_for(config)).replace("%", "%%"),  # one path, taken whole: only % is special
    )
    home = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return Rendered(home / "systemd" / "user" / f"{name}.service", text)


def _xml_comment(text: str) -> str:
    """``text`` safe inside an XML comment (which may not hold "--")."""
    return xml_escape(text).replace("--", "-&#45;")


def render_launchd(tokend: Path, config: Path) -> Rendered:
    name = service_name(config)
    label = LABEL if name == "tokend" else f"{LABEL}.{name}"
    log_dir = paths.log_dir()
    text = _template("tokend.plist").format(
        tokend=xml_escape(str(tokend)),
        config=xml_escape(str(config.absolute())),
        label=label,
        log_dir=xml_escape(str(log_dir)),
        envfile=_xml_comment(str(envfile.path_for(config))),
    )
    return Rendered(Path.home() / "Library" / "LaunchAgents" / f"{label}.plist", text)


def render_task(tokend: Path, config: Path, user: str | None = None) -> Rendered:
    """The task runs pythonw (no console window) with `-m tokend`."""
    name = service_name(config)
    python = Path(sys.executable)
    pythonw = python.with_name("pythonw.exe") if python.name.lower() == "python.exe" else python
    arguments = f'-m tokend run --config "{config.absolute()}"'
    user = user or os.environ.get("USERNAME") or os.environ.get("USER") or "user"
    domain = os.environ.get("USERDOMAIN")
    text = _template("tokend-task.xml").format(
        command=xml_escape(str(pythonw)),
        arguments=xml_escape(arguments),
        label=xml_escape(name),
        user=xml_escape(f"{domain}\\{user}" if domain else user),
        envfile=_xml_comment(str(envfile.path_for(config))),
    )
    folder = paths.data_dir()
    return Rendered(folder / f"{name}-task.xml", text)


def _run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(list(cmd), capture_output=True, text=True)
    if check and r.returncode != 0:
        raise TokendError(f"`{' '.join(cmd)}` failed: {(r.stderr or r.stdout).strip().splitlines()[-1:] or '?'}")
    return r


def _user_systemd() -> bool:
    if not shutil.which("systemctl"):
        return False
    return _run("systemctl", "--user", "show-environment", check=False).returncode == 0


def _no_systemd(config: Path, tokend: Path) -> NoServiceManager:
    return NoServiceManager(
        "no user systemd here (a container, WSL1 or a session without `systemctl --user`); start tokend another "
        f"way, e.g. add this line to your login shell profile: `{tokend} run --config {config} >/dev/null 2>&1 &`"
    )


def install(config: Path) -> str:
    """Write the service file, enable and start it. Returns what was done, for people."""
    tokend = tokend_executable()
    config = config.absolute()
    if system.MACOS:  # pragma: no cover - exercised on macOS only; rendering is tested everywhere
        r = render_launchd(tokend, config)
        _write(r)
        paths.private_dir(paths.log_dir())
        domain = f"gui/{os.getuid()}"
        _run("launchctl", "bootout", domain, str(r.path), check=False)
        _run("launchctl", "bootstrap", domain, str(r.path))
        return f"installed and started the LaunchAgent {r.path}"
    if system.WINDOWS:  # pragma: no cover
        r = render_task(tokend, config)
        _write(r, encoding="utf-16")
        name = service_name(config)
        _run("schtasks", "/Create", "/F", "/TN", name, "/XML", str(r.path))
        _run("schtasks", "/Run", "/TN", name)
        return f"registered and started the scheduled task {name}"
    if not _user_systemd():
        raise _no_systemd(config, tokend)
    r = render_systemd(tokend, config)
    _write(r)
    name = r.path.stem
    _run("systemctl", "--user", "daemon-reload")
    _run("systemctl", "--user", "enable", name)
    _run("systemctl", "--user", "restart", name)
    return f"installed, enabled and started the systemd user unit {name} ({r.path})"


def uninstall(config: Path) -> str:
    config = config.absolute()
    name = service_name(config)
    if system.MACOS:  # pragma: no cover
        r = render_launchd(Path("tokend"), config)
        _run("launchctl", "bootout", f"gui/{os.getuid()}", str(r.path), check=False)
        r.path.unlink(missing_ok=True)
        return f"removed the LaunchAgent {r.path}"
    if system.WINDOWS:  # pragma: no cover
        _run("schtasks", "/End", "/TN", name, check=False)
        _run("schtasks", "/Delete", "/F", "/TN", name, check=False)
        return f"removed the scheduled task {name}"
    r = render_systemd(Path("tokend"), config)
    if _user_systemd():
        _run("systemctl", "--user", "disable", "--now", name, check=False)
    existed = r.path.exists()
    r.path.unlink(missing_ok=True)
    if _user_systemd():
        _run("systemctl", "--user", "daemon-reload", check=False)
    return f"removed the systemd user unit {r.path}" if existed else f"no service was installed ({r.path})"


def status(config: Path) -> tuple[bool, str]:
    """(running, what the service manager says)."""
    name = service_name(config.absolute())
    if system.MACOS:  # pragma: no cover
        label = LABEL if name == "tokend" else f"{LABEL}.{name}"
        r = _run("launchctl", "print", f"gui/{os.getuid()}/{label}", check=False)
        return r.returncode == 0 and "state = running" in r.stdout, r.stdout or r.stderr
    if system.WINDOWS:  # pragma: no cover
        r = _run("schtasks", "/Query", "/TN", name, "/V", "/FO", "LIST", check=False)
        return r.returncode == 0 and "Running" in r.stdout, r.stdout or r.stderr
    if not _user_systemd():
        raise NoServiceManager("no user systemd here (a container, WSL1 or a session without `systemctl --user`)")
    r = _run("systemctl", "--user", "status", "--no-pager", name, check=False)
    return r.returncode == 0, (r.stdout or r.stderr).strip()


@dataclass(frozen=True)
class Logs:
    """What ``tokend service logs`` shows: ``text`` (the log file's tail), or ``follow``: a command that writes the
    lines itself (journalctl, tail -F) and whose exit code is the command's."""

    text: str = ""
    follow: tuple[str, ...] = ()


def logs(config: Path, follow: bool) -> Logs:
    """``tokend service logs``: the journal's lines for the service, else the tail (200 lines) of the daemon's log
    file."""
    if system.LINUX and _user_systemd():
        name = service_name(config.absolute())
        return Logs(follow=("journalctl", "--user", "-u", name, "-n", "200", "--no-pager", *(["-f"] if follow else [])))
    shown = paths.log_file(config)
    if not shown.exists():
        raise TokendError(f"no log file yet at {shown}")
    if follow and not system.WINDOWS:
        return Logs(follow=("tail", "-n", "200", "-F", str(shown)))
    return Logs(text="".join(shown.read_text(errors="replace").splitlines(keepends=True)[-200:]))


def _stop_daemon(config: Path, timeout: float = 15.0) -> None:
    """A daemon still running for this config (started by hand) is asked to stop first, or it would write again
    what purge removes."""

    try:
        ipc.Client(config).stop()
    except DaemonNotRunning:
        return
    deadline = time.monotonic() + timeout
    while paths.lock_path(config).exists() and time.monotonic() < deadline:  # removed as the daemon exits
        time.sleep(0.1)


def purge(config: Path) -> list[str]:
    """Remove everything this config made: its entries in every sink (pgpass and pg_service blocks, keychain
    entries), its sign-ins (records and sign-in caches), state, log files, socket and lock. Never the installation,
    never another config's files, never a line or entry of the user's. Returns what was done."""

    _stop_daemon(config)
    owner = paths.config_id(config)
    try:
        cfg = config_mod.load(config)
        places = {k: cfg.sinks[k].options for k in SINKS}
        people = [i for i in cfg.identities.values() if i.source in ("device-code", "browser")]
    except ConfigError:
        cfg, places, people = None, {k: {} for k in SINKS}, []
    done = []
    for kind, options in places.items():
        sink = sinks.build(kind, options, owner)
        try:
            said = sink.purge()  # None: nothing of this config's was there, so nothing is reported
        except TokendError as e:
            done.append(f"could not clean {sink.location()}: {e}")
            continue
        if said:
            done.append(said)
    if people:
        for ic in people:
            done += interactive.logout(ic)
    for folder in (paths.config_state_dir(config), paths.config_data_dir(config), paths.proxy_dir(config)):
        if folder.exists():
            shutil.rmtree(folder)
            done.append(f"removed {folder}")
    log = paths.log_file(config)
    for f in [*log.parent.glob(log.name + "*"), paths.socket_path(config), paths.lock_path(config)]:
        if f.exists():
            f.unlink()
            done.append(f"removed {f}")
    return done


def _write(r: Rendered, encoding: str = "utf-8") -> None:

    write_private(r.path, r.text, encoding)


ACTIONS = ("install", "uninstall", "status", "logs")


@dataclass(frozen=True)
class Request:
    """``tokend service ACTION``: ``purge`` (uninstall: also remove everything this config made), ``follow`` (logs:
    keep following)."""

    action: str  # one of ACTIONS
    config: Path
    purge: bool = False
    follow: bool = False


@dataclass(frozen=True)
class Outcome:
    """What a service action did, for the CLI to show: ``lines`` for people, ``ok`` (status: the service runs),
    ``logs`` for ``logs``."""

    lines: tuple[str, ...] = ()
    ok: bool = True
    logs: Logs | None = None


def command(request: Request) -> Outcome:
    """``tokend service ACTION``: does it and says what was done (nothing printed here)."""
    if request.action == "install":
        return Outcome((install(request.config),))
    if request.action == "uninstall":
        done = [uninstall(request.config)]
        return Outcome(tuple(done + (purge(request.config) if request.purge else [])))
    if request.action == "status":
        running, text = status(request.config)
        return Outcome((text,), ok=running)
    return Outcome(logs=logs(request.config, request.follow))

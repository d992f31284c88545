"""Command line: argument parsing and output only; every command calls into the modules that do the work.

Data goes to stdout, diagnostics to stderr. Exit codes: 0 ok, 1 runtime failure, 2 usage or config error.
``tokend token`` is on scripts' hot path: it imports only what asking the daemon needs.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tokend import __version__, ipc, paths
from tokend.errors import DaemonNotRunning, TokendError, UsageError

if TYPE_CHECKING:
    import argparse


def _parser() -> argparse.ArgumentParser:
    import argparse

    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS keeps a value given before the command from being reset by the subcommand's defaults.
    common.add_argument("--config", type=Path, default=argparse.SUPPRESS, metavar="PATH",
                        help="config file (default: $TOKEND_CONFIG, else the per-user config folder)")
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="log more, and show tracebacks")
    p = argparse.ArgumentParser(prog="tokend", parents=[common],
                                description="Keeps a valid Microsoft Entra token where PostgreSQL clients look.")
    p.add_argument("--version", action="version", version=f"tokend {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    run = sub.add_parser("run", parents=[common], help="run the daemon in the foreground")
    run.add_argument("--once", action="store_true", help="fetch every token and write every sink once, then exit")
    st = sub.add_parser("status", parents=[common], help="what the daemon holds and what is wrong")
    st.add_argument("--json", action="store_true", help="machine-readable output (times are Unix epoch seconds)")
    st.add_argument("--watch", action="store_true", help="follow it: redraw every two seconds until Ctrl-C")
    tok = sub.add_parser("token", parents=[common], help="print a valid token for a target")
    tok.add_argument("target", nargs="?", help="target name (optional when there is only one)")
    ex = sub.add_parser("exec", parents=[common], help="run a command with PG* variables set for a target")
    ex.add_argument("target", help="target name")
    ex.epilog = "usage: tokend exec TARGET [--config PATH] -- CMD [ARGS...]"
    sub.add_parser("stop", parents=[common], help="ask the running daemon to stop")
    sub.add_parser("reload", parents=[common], help="ask the running daemon to read its config again")
    li = sub.add_parser("login", parents=[common], help="sign in once (device-code or browser identities)")
    li.add_argument("identity", nargs="?", help="identity name (optional when only one needs a person)")
    lo = sub.add_parser("logout", parents=[common], help="forget a sign-in and remove its tokens from every sink")
    lo.add_argument("identity", nargs="?", help="identity name (optional when only one needs a person)")
    ini = sub.add_parser("init", parents=[common], help="write a working config (asks, or takes flags)")
    ini.add_argument("--server", help="server name; a bare name gets the cloud's suffix")
    ini.add_argument("--user", help="PostgreSQL user: an Entra group's display name, or a UPN")
    ini.add_argument("--identity", help="azure-cli | device-code | browser | service-principal | managed-identity, "
                                        "or an identity already in the config")
    ini.add_argument("--cloud", choices=["public", "usgov", "china"])
    ini.add_argument("--database", help='database (default "*": any)')
    ini.add_argument("--port", type=int)
    ini.add_argument("--name", help="target name (default: the server's first label)")
    ini.add_argument("--tenant", help="tenant id or domain")
    ini.add_argument("--client-id")
    ini.add_argument("--client-secret-env", metavar="VAR", help="the environment variable that holds the secret")
    ini.add_argument("--certificate-path", metavar="PEM")
    ini.add_argument("--authority", help="login authority override (custom clouds, the emulator)")
    ini.add_argument("--allow-unencrypted-cache", action="store_true", help="device-code/browser without a keyring")
    ini.add_argument("--check", action="store_true", help="also connect and show current_user")
    ini.add_argument("--service", action=argparse.BooleanOptionalAction, default=None,
                     help="install the login service (asked when interactive)")
    dem = sub.add_parser("demo", parents=[common], help="watch tokend work against a local Entra emulator")
    dem.add_argument("--duration", type=float, metavar="SECONDS", help="stop after this long (default: Ctrl-C)")
    comp = sub.add_parser("completion", parents=[common], help="print a shell completion script")
    comp.add_argument("shell", choices=["bash", "zsh", "fish", "powershell", "targets"],
                      help="the shell (or `targets`: the configured target names, for the scripts)")
    doc = sub.add_parser("doctor", parents=[common], help="check everything and say how to fix what is wrong")
    doc.add_argument("--json", action="store_true", help="machine-readable output")
    doc.add_argument("--login", action="store_true", help="also log in to each target through pgpass")
    cl = sub.add_parser("clients", parents=[common], help="set up PostgreSQL clients (none: list what is here)")
    cl.add_argument("client", nargs="?", choices=["ads", "pgadmin"], help="the client to set up")
    cl.add_argument("targets", nargs="*", metavar="TARGET", help="targets (default: all)")
    cl.add_argument("--output", type=Path, metavar="FILE", help="pgadmin: write servers.json here, not to stdout")
    svc = sub.add_parser("service", parents=[common], help="run tokend at login under the OS's service manager")
    svc_sub = svc.add_subparsers(dest="action", metavar="ACTION", required=True)
    svc_sub.add_parser("install", parents=[common], help="install, enable and start the login service")
    un = svc_sub.add_parser("uninstall", parents=[common], help="stop and remove the login service")
    un.add_argument("--purge", action="store_true",
                    help="also remove what tokend wrote (its pgpass block, caches, records); your entries stay")
    svc_sub.add_parser("status", parents=[common], help="what the service manager says")
    lg = svc_sub.add_parser("logs", parents=[common], help="show the daemon's logs")
    lg.add_argument("-f", "--follow", action="store_true", help="keep following")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["token"] and (fast := _fast_token(argv[1:])) is not None:
        return fast
    # Everything after the first "--" is the command for `exec`, so options may come before it in any order.
    cmd: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, cmd = argv[:i], argv[i + 1:]
    args = _parser().parse_args(argv)
    args.cmd = cmd
    debug = getattr(args, "debug", False)
    config_path = getattr(args, "config", None) or paths.default_config_path()
    try:
        return _COMMANDS[args.command](args, config_path, debug)
    except TokendError as e:
        if debug:
            raise
        print(f"tokend: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    except Exception as e:
        if debug:
            raise
        from tokend.redact import redact

        print(f"tokend: internal error: {type(e).__name__}: {redact(str(e))} (run with --debug for details)",
              file=sys.stderr)
        return 1


def cmd_run(args: argparse.Namespace, config_path: Path, debug: bool) -> int:
    from tokend import config, daemon, logs

    logs.setup(debug, quiet=args.once, daemon=not args.once)
    return daemon.start(config.load(config_path), once=args.once)


def cmd_status(args: argparse.Namespace, config_path: Path, debug: bool) -> int:
    while True:
        status = _ask(config_path, {"op": "status"})
        if args.json:
            print(json.dumps(status, indent=2), flush=True)
        else:
            clear = "\033[H\033[2J" if args.watch and sys.stdout.isatty() else ""
            print(clear + render_status(status, time.time(), _painter()), flush=True)
        if not args.watch:
            return 0
        time.sleep(2)
        if not sys.stdout.isatty():
            print()


def cmd_token(args: argparse.Namespace, config_path: Path, debug: bool) -> int:
    reply = _token(config_path, args.target, debug)
    sys.stdout.write(reply["token"] + "\n")
    return 0


def cmd_exec(args: argparse.Namespace, config_path: Path, debug: bool) -> int:
    cmd = args.cmd
    if not cmd:
        raise UsageError("nothing to run; usage: tokend exec TARGET -- CMD [ARGS...]")
    reply = _token(config_path, args.target, debug)
    t = reply["target"]
    env = dict(os.environ)
    env.update(PGHOST=t["host"], PGPORT=str(t["port"]), PGUSER=t["user"], PGPASSWORD=reply["token"])
    if t["database"] != "*":
        env["PGDATABASE"] = t["database"]
    env.setdefault("PGSSLMODE", "require")
    sys.stdout.flush()
    if sys.platform == "win32":  # pragma: no cover - no exec on Windows: run and pass the exit code on
        import subprocess

        return subprocess.call(cmd, env=env)
    try:
        os.execvpe(cmd[0], cmd, env)
    except FileNotFoundError:
        raise UsageError(f"command not found: {cmd[0]}") from None
    except PermissionError:
        raise UsageError(f"cannot run {cmd[0]}: permission denied") from None


def cmd_stop(args: argparse.Namespace, config_path: Path, debug: bool) -> int:
    _ask(config_path, {"op": "stop"})
    return 0


def cmd_reload(args: argparse.Namespace, config_path: Path, debug: bool) -> int:
    _ask(config_path, {"op": "reload"})
    return 0


_PERSON_SOURCES = ("device-code", "browser", "azure-cli")


def _person_identity(config_path: Path, name: str | None) -> Any:
    """The identity a person signs in to: the one named, else the only one whose source needs a person."""
    from tokend import config

    cfg = config.load(config_path)
    if name is not None:
        if name not in cfg.identities:
            raise UsageError(f"no identity {name!r} in {config_path} (configured: {', '.join(cfg.identities)})")
        return cfg.identities[name]
    candidates = [i for i in cfg.identities.values() if i.source in _PERSON_SOURCES]
    if len(candidates) != 1:
        names = ", ".join(i.name for i in candidates) or "none"
        raise UsageError(f"name the identity to sign in to (device-code, browser or azure-cli ones: {names})")
    return candidates[0]


def _tell_daemon_sign_in_changed(config_path: Path, identity: str) -> str:
    try:
        ipc.request(paths.socket_path(config_path), {"op": "sign-in-changed", "identity": identity})
    except DaemonNotRunning:
        return "no daemon is running for this config; start it with `tokend run` or `tokend service install`"
    return "the running daemon has picked it up"


def cmd_login(args: argparse.Namespace, config_path: Path, debug: bool) -> int:
    from tokend import logs

    logs.setup(debug, quiet=True)
    ic = _person_identity(config_path, args.identity)
    if ic.source == "azure-cli":
        raise UsageError(f"identity {ic.name} follows the Azure CLI: run `az login`; tokend notices within seconds")
    if ic.source not in _PERSON_SOURCES:
        raise UsageError(f"identity {ic.name} ({ic.source}) signs in without a person; nothing to do")
    from tokend.identities import interactive

    record = interactive.login(ic, say=lambda text: print(text, file=sys.stderr, flush=True))
    print(f"signed in as {record.username} (tenant {record.tenant_id}) for identity {ic.name}; "
          f"{_tell_daemon_sign_in_changed(config_path, ic.name)}")
    return 0


def cmd_logout(args: argparse.Namespace, config_path: Path, debug: bool) -> int:
    ic = _person_identity(config_path, args.identity)
    if ic.source == "azure-cli":
        raise UsageError(f"identity {ic.name} follows the Azure CLI: run `az logout`; tokend removes its tokens "
                         "within seconds")
    if ic.source not in _PERSON_SOURCES:
        raise UsageError(f"identity {ic.name} ({ic.source}) has no sign-in to forget")
    from tokend.identities import interactive

    for line in interactive.logout(ic):
        print(line)
    print(f"signed out of identity {ic.name}; {_tell_daemon_sign_in_changed(config_path, ic.name)}")
    return 0


def cmd_clients(args: argparse.Namespace, config_path: Path, debug: bool) -> int:
    from tokend import clients, config

    if args.client is None:
        for c in clients.detect():
            print(f"{c.name:<20} {('found: ' + c.found) if c.found else 'not found':<48} {c.how}")
        return 0
    cfg = config.load(config_path)
    from tokend.daemon import resolve_target

    targets = [resolve_target(cfg, n) for n in args.targets] or list(cfg.targets.values())
    if not targets:
        raise UsageError(f"no targets in {config_path}; add a [targets.NAME] table first")
    if args.client == "ads":
        from tokend.clients import ads

        for line in ads.install(targets):
            print(line)
        return 0
    from tokend.clients import pgadmin
    from tokend.service import tokend_executable

    text = pgadmin.servers_json(targets, tokend_executable(), config_path)
    if args.output:
        args.output.write_text(text)
        print(f"wrote {args.output}: import it in pgAdmin with Tools → Import/Export Servers", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def cmd_init(args: argparse.Namespace, config_path: Path, debug: bool) -> int:
    from tokend import config, identities, init, logs

    logs.setup(debug, quiet=True)
    interactive = sys.stdin.isatty() and sys.stdout.isatty()

    def ask(question: str, default: str) -> str:
        answer = input(f"{question}{f' [{default}]' if default else ''}: ")
        return answer or default

    text = config_path.read_text(encoding="utf-8-sig") if config_path.exists() else ""
    existing = config.parse(text, config_path) if text.strip() else None
    answers = init.Answers(server=args.server, user=args.user, identity=args.identity, cloud=args.cloud,
                           database=args.database, port=args.port, name=args.name, tenant=args.tenant,
                           client_id=args.client_id, client_secret_env=args.client_secret_env,
                           certificate_path=args.certificate_path, authority=args.authority)
    if args.allow_unencrypted_cache:
        answers.extra["allow_unencrypted_cache"] = True
    init.fill(answers, ask if interactive else None, existing)
    new_text, target, identity = init.add_to_config(text, answers, config_path)
    from tokend.sinks.atomic import write_private

    write_private(config_path, new_text)
    print(f"wrote {config_path}: target {target} ({answers.user} at {answers.server}) with identity {identity}")
    cfg = config.load(config_path)
    ic = cfg.identities[identity]
    if ic.source in ("device-code", "browser"):
        from tokend.identities import interactive as person

        if not person.record_path(ic).exists():
            if not interactive:
                print(f"next: sign in once with `tokend login {identity} --config {config_path}`")
                return 0
            person.login(ic, say=lambda line: print(line, flush=True))
    token = identities.fetch_once(ic)
    print(f"identity {identity} works: token for {token.principal} (tenant {token.claims.get('tid', '?')}), "
          f"{_until(token.expires_on, time.time())}")
    if args.check:
        print(_check_login(cfg.targets[target], token.value))
    if args.service or (args.service is None and interactive and ask("Install the login service now? (y/n)",
                                                                      "y").lower().startswith("y")):
        from tokend import service

        try:
            print(service.install(config_path))
        except TokendError as e:
            print(f"service not installed: {e}")
    return 0


def _check_login(t: Any, token: str) -> str:
    from tokend.doctor import psql_login

    result = psql_login(t, password=token)
    if result is None:
        return "check skipped: psql not found"
    ok, text = result
    if not ok:
        raise TokendError(f"login to {t.host} as {t.user} failed: {text}")
    return f"logged in to {t.host} as current_user = {text}"


def cmd_completion(args: argparse.Namespace, config_path: Path, debug: bool) -> int:
    if args.shell == "targets":
        import contextlib

        from tokend import config

        with contextlib.suppress(TokendError):  # no config: nothing to offer
            print("\n".join(config.load(config_path).targets))
        return 0
    from tokend.completion import SHELLS

    sys.stdout.write(SHELLS[args.shell](_parser()))
    return 0


def cmd_demo(args: argparse.Namespace, config_path: Path, debug: bool) -> int:
    from tokend import demo

    return demo.run(args.duration, say=lambda line: print(line, flush=True))


def cmd_doctor(args: argparse.Namespace, config_path: Path, debug: bool) -> int:
    from tokend import doctor, logs

    logs.setup(debug, quiet=True)
    checks = doctor.run(config_path, login=args.login)
    report = doctor.as_json(checks)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        paint = _painter()
        marks = {"ok": paint("✓", "32"), "warn": paint("!", "33"), "fail": paint("✗", "31")}
        for c in checks:
            print(f"{marks[c.status]} {c.name:<28} {c.evidence}")
            if c.fix and c.status != "ok":
                print(f"  {'':<28} fix: {c.fix}")
    return 0 if report["ok"] else 1


def _painter() -> Any:
    """Colour only on a terminal (and never with NO_COLOR)."""
    on = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    return lambda text, code: f"\033[{code}m{text}\033[0m" if on else text


def cmd_service(args: argparse.Namespace, config_path: Path, debug: bool) -> int:
    from tokend import service

    if args.action == "install":
        print(service.install(config_path))
        return 0
    if args.action == "uninstall":
        print(service.uninstall(config_path))
        if args.purge:
            for line in _purge(config_path):
                print(line)
        return 0
    if args.action == "status":
        running, text = service.status(config_path)
        print(text)
        return 0 if running else 1
    shown = service.logs_command(config_path, args.follow)
    if isinstance(shown, list):
        return os.spawnvp(os.P_WAIT, shown[0], shown)
    if not shown.exists():
        raise TokendError(f"no log file yet at {shown}")
    if args.follow and sys.platform != "win32":
        return os.spawnvp(os.P_WAIT, "tail", ["tail", "-n", "200", "-F", str(shown)])
    sys.stdout.write("".join(shown.read_text(errors="replace").splitlines(keepends=True)[-200:]))
    return 0


def _purge(config_path: Path) -> list[str]:
    """Remove what tokend wrote for this config: its entries in every sink, and its own folders."""
    import shutil

    from tokend import config, sinks
    from tokend.errors import ConfigError

    owner = paths.config_id(config_path)
    try:
        cfg = config.load(config_path)
        places = {k: cfg.sinks[k].options for k in config.SINK_KINDS}
    except ConfigError:
        places = {k: {} for k in config.SINK_KINDS}
    done = []
    for kind, options in sorted(places.items()):
        sink = sinks.build(kind, options, owner)
        sink.sync([])
        done.append(f"removed tokend's entries from {sink.location()}")
    for folder in {paths.state_dir(), paths.cache_dir(), paths.data_dir(), paths.log_dir()}:
        if Path(folder).exists():
            shutil.rmtree(folder)
            done.append(f"removed {folder}")
    return done


_COMMANDS = {"run": cmd_run, "status": cmd_status, "token": cmd_token, "exec": cmd_exec, "stop": cmd_stop,
             "reload": cmd_reload, "service": cmd_service, "login": cmd_login, "logout": cmd_logout,
             "clients": cmd_clients, "doctor": cmd_doctor,
             "init": cmd_init, "demo": cmd_demo, "completion": cmd_completion}


def _ask(config_path: Path, payload: dict[str, Any]) -> dict[str, Any]:
    try:
        return ipc.request(paths.socket_path(config_path), payload)
    except DaemonNotRunning as e:
        raise TokendError(f"{e}; start it with `tokend run --config {config_path}`") from None


def _token(config_path: Path, target: str | None, debug: bool) -> dict[str, Any]:
    """A valid token and its target: from the running daemon, else acquired here directly."""
    try:
        return ipc.request(paths.socket_path(config_path), {"op": "token", "target": target})
    except DaemonNotRunning:
        pass
    from tokend import config, identities, logs
    from tokend.daemon import resolve_target, target_dict

    logs.setup(debug, quiet=True)
    cfg = config.load(config_path)
    t = resolve_target(cfg, target)
    if "keychain" in t.sinks and (kept := _from_keychain(t.name)) is not None:
        return {"token": kept.value, "expires_on": kept.expires_on, "target": target_dict(t)}
    token = identities.fetch_once(cfg.identities[t.identity])
    return {"token": token.value, "expires_on": token.expires_on, "target": target_dict(t)}


def _fast_token(args: list[str]) -> int | None:
    """``tokend token [TARGET] [--config PATH]`` answered by a running daemon, without argparse or logging:
    scripts and password commands call it often. None: take the normal path (other options, no daemon, errors)."""
    target, config_path, rest = None, None, list(args)
    while rest:
        arg = rest.pop(0)
        if arg == "--config" and rest:
            config_path = Path(rest.pop(0))
        elif arg.startswith("--config="):
            config_path = Path(arg.split("=", 1)[1])
        elif arg.startswith("-") or target is not None:
            return None
        else:
            target = arg
    try:
        reply = ipc.request(paths.socket_path(config_path or paths.default_config_path()),
                            {"op": "token", "target": target})
    except TokendError:
        return None
    sys.stdout.write(reply["token"] + "\n")
    return 0


def _from_keychain(name: str, min_life: float = 60.0) -> Any:
    """The token the daemon last left in the keychain for target ``name``, if it has ``min_life`` seconds left."""
    from tokend.sinks import keychain
    from tokend.token import Token, expiry

    try:
        value = keychain.read(name)
    except Exception:  # no usable keychain here: acquire directly instead
        return None
    exp = expiry(value) if value else None
    if value is None or exp is None or exp - time.time() < min_life:
        return None
    return Token(value, exp, time.time())


def render_status(status: dict[str, Any], now: float, paint: Any = None) -> str:
    """A compact human view of ``tokend status --json``: one line per identity and per target, problems indented
    under them with their fix."""
    paint = paint or (lambda text, _code: text)
    colour = {"ok": "32", "retrying": "33", "pending": "33", "starting": "33", "empty": "33",
              "login-required": "31", "failed": "31", "unavailable": "31"}

    def state(word: str) -> str:
        return paint(f"{word:<15}", colour.get(word, "0"))

    lines = [f"tokend pid {status['pid']} · config {status['config']}"]
    if status.get("config_error"):
        lines.append(paint(f"  ! config change refused, still serving the previous one: {status['config_error']}",
                           "31"))
    lines += ["", "IDENTITY         STATE           SOURCE             PRINCIPAL                              TOKEN"]
    for i in status["identities"]:
        source = i["source"] + (" (unencrypted cache)" if i.get("cache") == "unencrypted" else "")
        lines.append(f"{i['name']:<16} {state(i['state'])} {source:<18} {i['principal'] or '-':<38} "
                     f"{_until(i['expires_on'], now)}".rstrip())
        if i["last_error"]:
            lines.append(f"    ! {i['last_error']}")
    lines += ["", "TARGET           CONNECTS AS                                        SINKS"]
    for t in status["targets"]:
        where = f"{t['user']}@{t['host']}:{t['port']}/{t['database']}"
        sinks = ", ".join(f"{k} {paint(v['state'], colour.get(v['state'], '0'))}{_ago(v['last_write'], now)}"
                          for k, v in t["sinks"].items())
        lines.append(f"{t['name']:<16} {where:<50} {sinks}")
        for k, v in t["sinks"].items():
            if v["last_error"]:
                lines.append(f"    ! {k}: {v['last_error']}")
    return "\n".join(lines)


def _until(epoch: float | None, now: float) -> str:
    if epoch is None:
        return "no token"
    left = epoch - now
    return f"expires in {left / 60:.0f} m" if left >= 120 else f"expires in {left:.0f} s"


def _ago(epoch: float | None, now: float) -> str:
    if not epoch:
        return ""
    seconds = max(0, now - epoch)
    return f" ({seconds / 60:.0f} m ago)" if seconds >= 120 else f" ({seconds:.0f} s ago)"


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

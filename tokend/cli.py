"""Command line: the argument parser and thin handlers that wire arguments to the modules doing the work.

Data goes to stdout, diagnostics to stderr. Exit codes: 0 ok, 1 runtime failure, 2 usage or config error; errors
are one line (what, where, how to fix), never a traceback unless --debug. ``tokend token`` is on scripts' hot
path: ``tokend.handoff`` answers it before this module parses anything.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tokend import __version__, handoff
from tokend.errors import DaemonNotRunning, TokendError, UsageError

if TYPE_CHECKING:
    import argparse
    import threading


def _parser() -> argparse.ArgumentParser:
    import argparse

    from tokend.kinds import SOURCES

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

    def cmd(name: str, text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], help=text, description=text)

    cmd("run", "run the daemon in the foreground").add_argument(
        "--once", action="store_true", help="fetch every token and write every sink once, then exit")
    st = cmd("status", "what the daemon holds and what is wrong")
    st.add_argument("--json", action="store_true", help="machine-readable output (times are Unix epoch seconds)")
    st.add_argument("--watch", action="store_true", help="follow it: redraw every two seconds until Ctrl-C")
    tok = cmd("token", "print a valid token for a target")
    tok.add_argument("target", nargs="?", help="target name (optional when there is only one)")
    for flag, help_ in (("--host", "the host a client connects to"), ("--port", "its port (default 5432)"),
                        ("--user", "the user it logs in as"), ("--database", "the database (default: any)")):
        tok.add_argument(flag, help=f"pick the target libpq would match: {help_}")
    ex = cmd("exec", "run a command with PG* variables set for a target")
    ex.add_argument("target", help="target name")
    ex.epilog = "usage: tokend exec TARGET [--config PATH] -- CMD [ARGS...]"
    cmd("stop", "ask the running daemon to stop")
    cmd("reload", "ask the running daemon to read its config again")
    for name, text in (("login", "sign in once (device-code or browser identities)"),
                       ("logout", "forget a sign-in and remove its tokens from every sink")):
        cmd(name, text).add_argument("identity", nargs="?", help="identity name (optional when only one needs a "
                                                                 "person)")
    ini = cmd("init", "write a working config (asks, or takes flags)")
    ini.add_argument("--server", help="server name; a bare name gets the cloud's suffix")
    ini.add_argument("--user", help="PostgreSQL user: an Entra group's display name, or a UPN")
    ini.add_argument("--identity", help=f"{' | '.join(SOURCES)}, or an identity already in the config")
    ini.add_argument("--cloud", choices=["public", "usgov", "china"])
    ini.add_argument("--database", help='database (default "*": any)')
    ini.add_argument("--port", type=int)
    ini.add_argument("--name", help="target name (default: from the server's name)")
    ini.add_argument("--tenant", help="tenant id or domain")
    ini.add_argument("--client-id")
    ini.add_argument("--client-secret-env", metavar="VAR", help="the environment variable that holds the secret")
    ini.add_argument("--certificate-path", metavar="PEM")
    ini.add_argument("--authority", help="login authority override (custom clouds, the emulator)")
    ini.add_argument("--allow-unencrypted-cache", action="store_true", help="device-code/browser without a keyring")
    ini.add_argument("--check", action="store_true", help="also connect and show current_user")
    ini.add_argument("--service", action=argparse.BooleanOptionalAction, default=None,
                     help="install the login service (asked when interactive)")
    cmd("demo", "watch tokend work against a local Entra emulator").add_argument(
        "--duration", type=float, metavar="SECONDS", help="stop after this long (default: Ctrl-C)")
    cmd("completion", "print a shell completion script").add_argument(
        "shell", choices=["bash", "zsh", "fish", "powershell", "targets"],
        help="the shell (or `targets`: the configured target names, for the scripts)")
    doc = cmd("doctor", "check everything and say how to fix what is wrong")
    doc.add_argument("--json", action="store_true", help="machine-readable output")
    doc.add_argument("--login", action="store_true", help="also log in to each target through pgpass")
    cl = cmd("clients", "set up PostgreSQL clients (none: list what is here)")
    cl.add_argument("client", nargs="?", choices=["ads", "pgadmin"], help="the client to set up")
    cl.add_argument("targets", nargs="*", metavar="TARGET", help="targets (default: all)")
    cl.add_argument("--output", type=Path, metavar="FILE", help="pgadmin: write servers.json here, not to stdout")
    svc = cmd("service", "run tokend at login under the OS's service manager")
    svc_sub = svc.add_subparsers(dest="action", metavar="ACTION", required=True)
    svc_sub.add_parser("install", parents=[common], help="install, enable and start the login service")
    svc_sub.add_parser("uninstall", parents=[common], help="stop and remove the login service").add_argument(
        "--purge", action="store_true", help="also remove everything this config made (see README); your entries, "
                                             "other configs and the installation stay")
    svc_sub.add_parser("status", parents=[common], help="what the service manager says")
    svc_sub.add_parser("logs", parents=[common], help="show the daemon's logs").add_argument(
        "-f", "--follow", action="store_true", help="keep following")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["token"] and (answered := handoff.token(argv[1:])) is not None:
        return answered
    stop = _catch_stop_signals() if argv[:1] == ["run"] else None
    # Everything after the first "--" is the command for `exec`, so options may come before it in any order.
    cmd: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, cmd = argv[:i], argv[i + 1:]
    args = _parser().parse_args(argv)
    args.cmd, args.stop = cmd, stop
    debug = getattr(args, "debug", False)
    from tokend import paths

    config_path = getattr(args, "config", None) or paths.default_config_path()
    try:
        return int(_COMMANDS[args.command](args, config_path, debug))
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


def _catch_stop_signals() -> threading.Event:
    """``tokend run``: from the first moment, SIGTERM / SIGINT only ask for a clean stop (exit 0), even while the
    daemon is still importing or waiting for its first tokens."""
    import signal
    import threading

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def cmd_run(args: argparse.Namespace, config_path: Path, debug: bool) -> int:
    from tokend import config, daemon, logs, paths

    logs.setup(debug, quiet=args.once, log_file=None if args.once else paths.log_file(config_path))
    return daemon.start(config.load(config_path), once=args.once, stop=args.stop)


def cmd_status(args: argparse.Namespace, config_path: Path, debug: bool) -> int:
    import json
    import time

    from tokend import status

    while True:
        state = _asked(config_path, lambda c: c.status())
        if args.json:
            print(json.dumps(state, indent=2), flush=True)
        else:
            clear = "\033[H\033[2J" if args.watch and sys.stdout.isatty() else ""
            print(clear + status.render(state, time.time(), status.painter()), flush=True)
        if not args.watch:
            return 0
        time.sleep(2)
        if not sys.stdout.isatty():
            print()


def cmd_token(args: argparse.Namespace, config_path: Path, debug: bool) -> int:
    sys.stdout.write(_token(config_path, args, debug).token + "\n")
    return 0


def cmd_exec(args: argparse.Namespace, config_path: Path, debug: bool) -> int:
    from tokend import pgenv

    if not args.cmd:
        raise UsageError("nothing to run; usage: tokend exec TARGET -- CMD [ARGS...]")
    return pgenv.exec_with(_token(config_path, args, debug), args.cmd)


def cmd_stop(args: argparse.Namespace, config_path: Path, debug: bool) -> int:
    _asked(config_path, lambda c: c.stop())
    return 0


def cmd_reload(args: argparse.Namespace, config_path: Path, debug: bool) -> int:
    _asked(config_path, lambda c: c.reload())
    return 0


def cmd_login(args: argparse.Namespace, config_path: Path, debug: bool) -> int:
    from tokend import config, logs
    from tokend.identities import interactive

    logs.setup(debug, quiet=True)
    ic = config.load(config_path).identity_for_sign_in(args.identity, "login")
    record = interactive.login(ic, say=lambda text: print(text, file=sys.stderr, flush=True))
    print(f"signed in as {record.username} (tenant {record.tenant_id}) for identity {ic.name}; "
          f"{_tell_daemon(config_path, ic.name)}")
    return 0


def cmd_logout(args: argparse.Namespace, config_path: Path, debug: bool) -> int:
    from tokend import config
    from tokend.identities import interactive

    ic = config.load(config_path).identity_for_sign_in(args.identity, "logout")
    for line in interactive.logout(ic):
        print(line)
    print(f"signed out of identity {ic.name}; {_tell_daemon(config_path, ic.name)}")
    return 0


def _tell_daemon(config_path: Path, identity: str) -> str:
    try:
        _client(config_path).sign_in_changed(identity)
    except DaemonNotRunning:
        return "no daemon is running for this config; start it with `tokend run` or `tokend service install`"
    return "the running daemon has picked it up"


def cmd_clients(args: argparse.Namespace, config_path: Path, debug: bool) -> int:
    from tokend import clients

    for line in clients.run(args.client, args.targets, config_path, args.output):
        print(line)
    return 0


def cmd_init(args: argparse.Namespace, config_path: Path, debug: bool) -> int:
    from tokend import init, logs

    logs.setup(debug, quiet=True)
    answers = init.Answers(server=args.server, user=args.user, identity=args.identity, cloud=args.cloud,
                           database=args.database, port=args.port, name=args.name, tenant=args.tenant,
                           client_id=args.client_id, client_secret_env=args.client_secret_env,
                           certificate_path=args.certificate_path, authority=args.authority)
    if args.allow_unencrypted_cache:
        answers.extra["allow_unencrypted_cache"] = True
    interactive = sys.stdin.isatty() and sys.stdout.isatty()
    return init.run(config_path, answers, interactive, check=args.check, service=args.service,
                    say=lambda line: print(line, flush=True))


def cmd_completion(args: argparse.Namespace, config_path: Path, debug: bool) -> int:
    from tokend import completion

    sys.stdout.write(completion.script(args.shell, _parser(), config_path))
    return 0


def cmd_demo(args: argparse.Namespace, config_path: Path, debug: bool) -> int:
    from tokend import demo

    return demo.run(args.duration, say=lambda line: print(line, flush=True))


def cmd_doctor(args: argparse.Namespace, config_path: Path, debug: bool) -> int:
    import json

    from tokend import doctor, logs, status

    logs.setup(debug, quiet=True)
    checks = doctor.run(config_path, login=args.login)
    report = doctor.as_json(checks)
    print(json.dumps(report, indent=2) if args.json else doctor.render(checks, status.painter()))
    return 0 if report["ok"] else 1


def cmd_service(args: argparse.Namespace, config_path: Path, debug: bool) -> int:
    from tokend import service

    if args.action == "install":
        print(service.install(config_path))
    elif args.action == "uninstall":
        print(service.uninstall(config_path))
        for line in service.purge(config_path) if args.purge else []:
            print(line)
    elif args.action == "status":
        running, text = service.status(config_path)
        print(text)
        return 0 if running else 1
    else:
        return service.show_logs(config_path, args.follow)
    return 0


_COMMANDS = {"run": cmd_run, "status": cmd_status, "token": cmd_token, "exec": cmd_exec, "stop": cmd_stop,
             "reload": cmd_reload, "service": cmd_service, "login": cmd_login, "logout": cmd_logout,
             "clients": cmd_clients, "doctor": cmd_doctor, "init": cmd_init, "demo": cmd_demo,
             "completion": cmd_completion}


def _client(config_path: Path) -> Any:
    from tokend import ipc

    return ipc.Client(config_path)


def _asked(config_path: Path, call: Any) -> Any:
    """``call(client)`` on the running daemon; with none, the line says what to do (or which file is missing)."""
    try:
        return call(_client(config_path))
    except DaemonNotRunning as e:
        if not config_path.exists():
            from tokend.config import load

            load(config_path)  # raises the ConfigError naming the missing file
        raise TokendError(f"{e}; start it with `tokend run --config {config_path}`") from None


def _token(config_path: Path, args: argparse.Namespace, debug: bool) -> Any:
    """A valid token and its target: from the running daemon, else (keychain, or acquired here) without it."""
    from tokend import config, ipc

    name = args.target
    if getattr(args, "host", None) or getattr(args, "user", None):
        name = config.load(config_path).match(args.host, args.port, args.user, args.database).name
    try:
        return ipc.Client(config_path).token(name)
    except DaemonNotRunning:
        pass
    from tokend import identities, logs

    logs.setup(debug, quiet=True)
    cfg = config.load(config_path)
    target = cfg.target(name)
    token = identities.token_without_daemon(cfg, target)
    return ipc.TokenAnswer(token.value, token.expires_on, target.as_dict())


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

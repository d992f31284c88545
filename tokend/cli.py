"""Command line: the argument parser and thin handlers that wire arguments to the modules doing the work.

Data goes to stdout, diagnostics to stderr. Exit codes: 0 ok, 1 runtime failure, 2 usage or config error; errors
are one line (what, where, how to fix), never a traceback unless --debug. ``tokend token`` is on scripts' hot
path: ``tokend.handoff`` answers it before this module parses anything.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tokend import __version__, handoff
from tokend.errors import TokendError, UsageError

if TYPE_CHECKING:
    import argparse


def _parser() -> argparse.ArgumentParser:
    import argparse

    from tokend.clients import CLIENTS
    from tokend.kinds import SOURCES

    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS keeps a value given before the command from being reset by the subcommand's defaults.
    common.add_argument(
        "--config",
        type=Path,
        default=argparse.SUPPRESS,
        metavar="PATH",
        help="config file (default: $TOKEND_CONFIG, else the per-user config folder)",
    )
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="log more, and show tracebacks")
    p = argparse.ArgumentParser(
        prog="tokend",
        parents=[common],
        description="Keeps a valid Microsoft Entra token where PostgreSQL clients look.",
    )
    p.add_argument("--version", action="version", version=f"tokend {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def cmd(name: str, text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], help=text, description=text)

    run = cmd("run", "run the daemon in the foreground")
    run.add_argument("--once", action="store_true", help="fetch every token and write every sink once, then exit")
    run.add_argument(
        "--log-format",
        choices=["text", "json"],
        help="json: one JSON object per line, for cluster log collectors (default: $TOKEND_LOG_FORMAT, else text)",
    )
    st = cmd("status", "what the daemon holds and what is wrong")
    st.add_argument("--json", action="store_true", help="machine-readable output (times are Unix epoch seconds)")
    st.add_argument("--watch", action="store_true", help="follow it: redraw every two seconds until Ctrl-C")
    tok = cmd("token", "print a valid token for a target")
    tok.add_argument("target", nargs="?", help="target name (optional when there is only one)")
    for flag, help_ in (
        ("--host", "the host a client connects to"),
        ("--port", "its port (default 5432)"),
        ("--user", "the user it logs in as"),
        ("--database", "the database (default: any)"),
    ):
        tok.add_argument(flag, help=f"pick the target libpq would match: {help_}")
    ex = cmd("exec", "run a command with PG* variables set for a target")
    ex.add_argument("target", help="target name")
    ex.epilog = "usage: tokend exec TARGET [--config PATH] -- CMD [ARGS...]"
    cmd("stop", "ask the running daemon to stop")
    cmd("reload", "ask the running daemon to read its config again")
    for name, text in (
        ("login", "sign in once (device-code or browser identities)"),
        ("logout", "forget a sign-in and remove its tokens from every sink"),
    ):
        cmd(name, text).add_argument(
            "identity", nargs="?", help="identity name (optional when only one needs a person)"
        )
    ini = cmd("init", "write a working config (asks, or takes flags)")
    for flag, help_ in (
        ("server", "server name; a bare name gets the cloud's suffix"),
        ("user", "PostgreSQL user: an Entra group's display name, or a UPN"),
        ("identity", f"{' | '.join(SOURCES)}, or an identity already in the config"),
        ("database", 'database (default "*": any)'),
        ("name", "target name (default: from the server)"),
        ("tenant", "tenant id or domain"),
        ("client-id", "the app's client id"),
        ("client-secret-env", "the environment variable that holds the secret"),
        ("certificate-path", "PEM file with the certificate and its key"),
        ("authority", "login authority override (custom clouds, the emulator)"),
    ):
        ini.add_argument(f"--{flag}", help=help_)
    ini.add_argument("--cloud", choices=["public", "usgov", "china"])
    ini.add_argument("--port", type=int)
    ini.add_argument("--allow-unencrypted-cache", action="store_true", help="device-code/browser without a keyring")
    ini.add_argument("--check", action="store_true", help="also connect and show current_user")
    ini.add_argument(
        "--service",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="install the login service (asked when interactive)",
    )
    cmd("demo", "watch tokend work against a local Entra emulator").add_argument(
        "--duration", type=float, metavar="SECONDS", help="stop after this long (default: Ctrl-C)"
    )
    sec = cmd("secret", "keep a service principal's client secret in the OS keychain (read from stdin, never argv)")
    sec.add_argument("action", choices=["set", "remove"], help="set: read it from the terminal or stdin")
    sec.add_argument("identity", help="the [identities.NAME] it is for")
    em = cmd("emulator", "run the local Entra emulator (and its PostgreSQL) on its own, for demos and trials")
    em.add_argument("emulator_args", nargs=argparse.REMAINDER, help="its options: tokend emulator --help")
    cmd("completion", "print a shell completion script").add_argument(
        "shell",
        choices=["bash", "zsh", "fish", "powershell", "targets"],
        help="the shell (or `targets`: the configured target names, for the scripts)",
    )
    doc = cmd("doctor", "check everything and say how to fix what is wrong")
    doc.add_argument("--json", action="store_true", help="machine-readable output")
    doc.add_argument("--login", action="store_true", help="also log in to each target through pgpass")
    cl = cmd("clients", "set up PostgreSQL clients (none: list what is here; remove CLIENT: undo it)")
    cl.add_argument("client", nargs="?", choices=[*CLIENTS, "remove"], help="the client to set up")
    cl.add_argument("targets", nargs="*", metavar="TARGET", help="targets (default: all); after remove: the client")
    cl.add_argument(
        "--output",
        type=Path,
        metavar="PATH",
        help="pgadmin: add to this servers.json; datagrip: add to this project folder",
    )
    cl.add_argument(
        "--shared-command",
        action="store_true",
        help="pgadmin 8.14+: one password command for every server (%%HOSTNAME%% %%PORT%% %%USERNAME%%)",
    )
    cl.add_argument("--json", action="store_true", help="the list of clients, machine-readable")
    adm = cmd("admin", "an Entra administrator's tasks on a server: add a group, list principals, check a login")
    adm_sub = adm.add_subparsers(dest="action", metavar="ACTION", required=True)
    ag = adm_sub.add_parser(
        "add-group",
        parents=[common],
        help="give an Entra group least-privilege access (prints the SQL; --apply runs it)",
    )
    ck = adm_sub.add_parser("check", parents=[common], help="why a group's login would fail, with the fix")
    ls = adm_sub.add_parser("list", parents=[common], help="the server's Entra principals and what each may do")
    sy = adm_sub.add_parser("sync", parents=[common], help="run the server's group sync now (members get roles)")
    for a in (ag, ck):
        a.add_argument("group", help="the group's display name (exact case), or a service principal's name")
        a.add_argument("--schema", action="append", default=[], metavar="S", help="a schema (repeat for several)")
    for a in (ag, ck, ls, sy):
        a.add_argument("--target", required=True, help="the target to log in as: an Entra administrator")
        a.add_argument("--database", help="the database (default: the target's)")
    for a in (ck, ls):
        a.add_argument("--json", action="store_true", help="machine-readable output")
    ag.add_argument("--read-write", action="store_true", help="SELECT, INSERT, UPDATE, DELETE (default: SELECT)")
    ag.add_argument("--read-only", action="store_false", dest="read_write", help="SELECT only (the default)")
    ag.add_argument("--object-id", help="the Entra object id: pgaadauth_create_principal_with_oid (safer)")
    ag.add_argument("--type", choices=["group", "service", "user"], default="group", help="with --object-id")
    ag.add_argument("--allow-public", action="store_true", help="allow --schema public (every role's schema)")
    ag.add_argument("--apply", action="store_true", help="run it (in one transaction) instead of printing it")
    ag.add_argument("--members-only", action="store_true", help="group sync on: make the group role NOLOGIN")
    svc = cmd("service", "run tokend at login under the OS's service manager")
    svc_sub = svc.add_subparsers(dest="action", metavar="ACTION", required=True)
    svc_sub.add_parser("install", parents=[common], help="install, enable and start the login service")
    svc_sub.add_parser("uninstall", parents=[common], help="stop and remove the login service").add_argument(
        "--purge",
        action="store_true",
        help="also remove everything this config made (see README); your entries, "
        "other configs and the installation stay",
    )
    svc_sub.add_parser("status", parents=[common], help="what the service manager says")
    svc_sub.add_parser("logs", parents=[common], help="show the daemon's logs").add_argument(
        "-f", "--follow", action="store_true", help="keep following"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["token"] and (answered := handoff.token(argv[1:])) is not None:
        return answered
    if argv[:1] == ["emulator"]:  # its own parser (argparse cannot pass "--postgres" through a REMAINDER); imported
        # here, as every command module is, for start-up time
        from tokend.emulator import cli as emulator_cli

        return emulator_cli.main(argv[1:])
    if argv[:1] == ["run"]:
        from tokend import system

        stop = system.catch_stop_signals()  # before the heavy imports: a stop now is a clean stop
    # Everything after the first "--" is the command for `exec`, so options may come before it in any order.
    cmd: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, cmd = argv[:i], argv[i + 1 :]
    args = _parser().parse_args(argv)
    args.cmd, args.stop = cmd, stop if argv[:1] == ["run"] else None
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

        print(
            f"tokend: internal error: {type(e).__name__}: {redact(str(e))} (run with --debug for details)",
            file=sys.stderr,
        )
        return 1


def cmd_run(args: argparse.Namespace, config_path: Path, debug: bool) -> int:
    from tokend import config, daemon, envfile, logs, paths

    env = envfile.apply(config_path)  # the daemon's environment file, before the config and identities are read
    fmt = args.log_format or os.environ.get(logs.FORMAT_ENV) or "text"
    if fmt not in logs.FORMATS:
        raise UsageError(f"${logs.FORMAT_ENV} is {fmt!r}; use one of: {', '.join(logs.FORMATS)}")
    logs.setup(debug, quiet=args.once, log_file=None if args.once else paths.log_file(config_path), fmt=fmt)
    return daemon.start(config.load(config_path), once=args.once, stop=args.stop, env=env)


def cmd_status(args: argparse.Namespace, config_path: Path, debug: bool) -> int:
    from tokend import ipc, status

    return status.show(lambda: ipc.ask(config_path, lambda c: c.status()), args.json, args.watch)


def cmd_token(args: argparse.Namespace, config_path: Path, debug: bool) -> int:
    sys.stdout.write(_token(config_path, args, debug).token + "\n")
    return 0


def cmd_exec(args: argparse.Namespace, config_path: Path, debug: bool) -> int:
    from tokend import pgenv

    if not args.cmd:
        raise UsageError("nothing to run; usage: tokend exec TARGET -- CMD [ARGS...]")
    return pgenv.exec_with(_token(config_path, args, debug), args.cmd)


def cmd_stop(args: argparse.Namespace, config_path: Path, debug: bool) -> int:
    from tokend import ipc

    ipc.ask(config_path, lambda c: c.stop())
    return 0


def cmd_reload(args: argparse.Namespace, config_path: Path, debug: bool) -> int:
    from tokend import ipc

    ipc.ask(config_path, lambda c: c.reload())
    return 0


def cmd_login(args: argparse.Namespace, config_path: Path, debug: bool) -> int:
    from tokend import logs
    from tokend.identities import interactive

    logs.setup(debug, quiet=True)
    print(interactive.sign_in(config_path, args.identity, say=lambda text: print(text, file=sys.stderr, flush=True)))
    return 0


def cmd_logout(args: argparse.Namespace, config_path: Path, debug: bool) -> int:
    from tokend.identities import interactive

    print("\n".join(interactive.sign_out(config_path, args.identity)))
    return 0


def cmd_clients(args: argparse.Namespace, config_path: Path, debug: bool) -> int:
    from tokend import clients

    if args.client == "remove":
        if not args.targets:
            raise UsageError(f"name the client: tokend clients remove {'|'.join(clients.CLIENTS)} [TARGET...]")
        lines = clients.remove(args.targets[0], args.targets[1:], config_path, args.output)
    else:
        lines = clients.run(args.client, args.targets, config_path, args.output, args.shared_command, args.json)
    for line in lines:
        print(line)
    return 0


def cmd_init(args: argparse.Namespace, config_path: Path, debug: bool) -> int:
    from tokend import init, logs

    logs.setup(debug, quiet=True)
    answers = init.Answers(**{f: getattr(args, f) for f in init.FLAGS})
    if args.allow_unencrypted_cache:
        answers.extra["allow_unencrypted_cache"] = True
    interactive = sys.stdin.isatty() and sys.stdout.isatty()
    return init.run(
        config_path,
        answers,
        interactive,
        check=args.check,
        service=args.service,
        say=lambda line: print(line, flush=True),
    )


def cmd_completion(args: argparse.Namespace, config_path: Path, debug: bool) -> int:
    from tokend import completion

    sys.stdout.write(completion.script(args.shell, _parser(), config_path))
    return 0


def cmd_demo(args: argparse.Namespace, config_path: Path, debug: bool) -> int:
    from tokend import demo

    return demo.run(args.duration, say=lambda line: print(line, flush=True))


def cmd_doctor(args: argparse.Namespace, config_path: Path, debug: bool) -> int:
    from tokend import doctor, logs

    logs.setup(debug, quiet=True)
    return doctor.command(config_path, args.login, args.json)


def cmd_admin(args: argparse.Namespace, config_path: Path, debug: bool) -> int:
    from tokend import admin

    return admin.command(args, config_path, lambda name: _token(config_path, args, debug, name).token)


def cmd_service(args: argparse.Namespace, config_path: Path, debug: bool) -> int:
    from tokend import service

    return service.command(args.action, config_path, getattr(args, "purge", False), getattr(args, "follow", False))


def cmd_secret(args: argparse.Namespace, config_path: Path, debug: bool) -> int:
    from tokend import client_secrets

    act = client_secrets.set_secret if args.action == "set" else client_secrets.remove_secret
    print(act(config_path, args.identity))
    return 0


def cmd_emulator(args: argparse.Namespace, config_path: Path, debug: bool) -> int:
    from tokend.emulator import cli as emulator_cli

    return emulator_cli.main(args.emulator_args)


_COMMANDS = {
    "run": cmd_run,
    "status": cmd_status,
    "token": cmd_token,
    "exec": cmd_exec,
    "stop": cmd_stop,
    "reload": cmd_reload,
    "service": cmd_service,
    "login": cmd_login,
    "logout": cmd_logout,
    "clients": cmd_clients,
    "doctor": cmd_doctor,
    "init": cmd_init,
    "demo": cmd_demo,
    "completion": cmd_completion,
    "admin": cmd_admin,
    "secret": cmd_secret,
    "emulator": cmd_emulator,
}


def _token(config_path: Path, args: argparse.Namespace, debug: bool, name: str | None = None) -> Any:
    """A valid token and its target (from the daemon, else without it); by name, or by connection details."""
    from tokend import config, identities, logs

    logs.setup(debug, quiet=True)
    name = name or getattr(args, "target", None)
    if getattr(args, "host", None) or (args.command == "token" and getattr(args, "user", None)):
        name = config.load(config_path).match(args.host, args.port, args.user, args.database).name
    return identities.token_for(config_path, name)

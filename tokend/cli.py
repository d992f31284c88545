"""Command line: one table of commands (``COMMANDS``) over an injectable ``Context``; the only module that prints.

Each ``Command`` row names the command, its help, how it adds its arguments, how the parsed arguments become the
typed request the work takes, and how that request is run and its result shown. The parser, the dispatch, the
``--help`` texts and the shell completion scripts are all made from the table, so they cannot drift apart.

Everything a command touches outside its arguments — stdout, stderr, stdin, the environment, the daemon's IPC
client, the clock, sleeping, logging set-up, signal handlers, exec and child processes — comes through the
``Context``, so tests run any command in-process with captured output and a fake daemon (``main(argv, ctx)``).

Data goes to stdout, diagnostics to stderr. Exit codes: 0 ok, 1 runtime failure, 2 usage or config error
(``errors.py``); errors are one line (what, where, how to fix), never a traceback unless ``--debug`` — which adds
the traceback and never changes the exit code. ``tokend token`` is on scripts' hot path: ``tokend.handoff`` answers
it before this module parses anything, so the module's top imports only what costs nearly nothing (no argparse,
no dataclasses: ``Command`` and ``Context`` are NamedTuples for that reason); each command imports its modules.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, TextIO

from tokend import __version__, handoff
from tokend.errors import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, DaemonNotRunning, TokendError, UsageError

if TYPE_CHECKING:
    import argparse
    import threading

    from tokend import init, service
    from tokend.access import SignIn
    from tokend.clock import Clock
    from tokend.config import Target
    from tokend.ipc import Client, TokenAnswer

EXIT_INTERRUPTED = 130  # Ctrl-C, as shells report a SIGINT death


class Context(NamedTuple):
    """The outside world as a command sees it. ``Context.real()`` is the process's own; tests replace fields."""

    stdout: TextIO
    stderr: TextIO
    stdin: TextIO
    environ: Mapping[str, str]
    ipc_client: Callable[[Path], Client]  # config path -> a client of that config's daemon
    clock: Clock
    sleep: Callable[[float], None]  # seconds
    setup_logs: Callable[..., None]  # logs.setup's signature
    catch_stop: Callable[[], threading.Event]  # installs the stop-signal handlers; the event they set
    exec_with: Callable[[TokenAnswer, Sequence[str]], int]  # `tokend exec`: replace the process with the command
    call: Callable[[Sequence[str]], int]  # a child process that writes to the terminal itself; its exit code

    @classmethod
    def real(cls, **overrides: Any) -> Context:
        """This process's streams, environment, daemon client and clock (``overrides`` replace any of them)."""
        import time  # these three: only once a command runs, not on the hand-off path

        from tokend import system  # (see above)
        from tokend.clock import SYSTEM  # dataclasses (~10 ms): not on `tokend token`'s hand-off path

        ctx = cls(
            stdout=sys.stdout,
            stderr=sys.stderr,
            stdin=sys.stdin,
            environ=os.environ,
            ipc_client=_ipc_client,
            clock=SYSTEM,
            sleep=time.sleep,
            setup_logs=_setup_logs,
            catch_stop=system.catch_stop_signals,
            exec_with=_exec_with,
            call=_call,
        )
        return ctx._replace(**overrides)

    def out(self, text: str) -> None:
        """One line (or block) of data on stdout, flushed: people and pipes see each step as it happens."""
        self.stdout.write(text + "\n")
        self.stdout.flush()

    def err(self, text: str) -> None:
        """One line of diagnostics on stderr."""
        self.stderr.write(text + "\n")
        self.stderr.flush()


def _ipc_client(config_path: Path) -> Client:
    from tokend import ipc  # socket, json, asyncio: only commands that ask the daemon need them

    return ipc.Client(config_path)


def _setup_logs(debug: bool, **kwargs: Any) -> None:
    from tokend import logs  # logging and its handlers: not needed before a command runs

    logs.setup(debug, **kwargs)


def _exec_with(answer: TokenAnswer, cmd: Sequence[str]) -> int:
    from tokend import pgenv  # only `tokend exec` needs it

    return pgenv.exec_with(answer, cmd)


def _call(cmd: Sequence[str]) -> int:
    import subprocess  # only `tokend service logs --follow` needs it

    return subprocess.call(list(cmd))


class Invocation(NamedTuple):
    """One run of one command: the context, the config path, ``--debug``, what came after ``--`` (``exec``'s
    command), and the stop event (``run``: set by the signal handlers installed before the heavy imports)."""

    ctx: Context
    config: Path
    debug: bool = False
    rest: tuple[str, ...] = ()
    stop: threading.Event | None = None


class Command(NamedTuple):
    """One row of the command table. ``add_arguments(parser, common)``: its arguments (``common``: the parent
    parser of --config and --debug, for sub-actions); ``request(args, invocation)``: the typed request the work
    takes; ``run(request, invocation)``: does it, shows the result, returns the exit code. ``targets``: its
    positional arguments are target names (shell completion offers them)."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser, argparse.ArgumentParser], None]
    request: Callable[[argparse.Namespace, Invocation], Any]
    run: Callable[[Any, Invocation], int]
    targets: bool = False


# -- the requests of the commands whose work has no module of its own to hold them ------------------------------------


class RunRequest(NamedTuple):
    config: Path
    once: bool = False
    log_format: str | None = None  # None: $TOKEND_LOG_FORMAT, else text


class StatusRequest(NamedTuple):
    config: Path
    json: bool = False
    watch: bool = False


class TokenRequest(NamedTuple):
    """A target by name (None: the only one), or by the connection details libpq would match (``host``, ...)."""

    config: Path
    target: str | None = None
    host: str | None = None
    port: str | None = None  # as given: pgpass.target_for says what is wrong with it
    user: str | None = None
    database: str | None = None
    from_pgadmin: bool = False  # the connection details from PGADMIN_PASSEXEC_* (pgAdmin's server-mode command)


class ExecRequest(NamedTuple):
    token: TokenRequest
    command: tuple[str, ...]


class DaemonRequest(NamedTuple):
    """``tokend stop`` / ``reload``: one IPC operation on the config's daemon."""

    config: Path
    op: str  # "stop" | "reload"


class ClientsRequest(NamedTuple):
    config: Path
    client: str | None = None  # a client, "remove", or None: list them
    targets: tuple[str, ...] = ()
    output: Path | None = None
    shared_command: bool = False
    json: bool = False
    server_mode: bool = False  # pgadmin: the SERVER_PASSEXEC_COMMANDS entry and servers naming it


class SecretRequest(NamedTuple):
    config: Path
    action: str  # set | remove
    identity: str


class DemoRequest(NamedTuple):
    duration: float | None = None  # seconds; None: until Ctrl-C


class CompletionRequest(NamedTuple):
    config: Path
    shell: str


class Shown(NamedTuple):
    """A module's own request and how the CLI shows its result (``json``: machine-readable)."""

    request: Any
    json: bool = False


# -- the commands ---------------------------------------------------------------------------------------------------


def _no_arguments(p: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    pass


def _run_arguments(p: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    p.add_argument("--once", action="store_true", help="fetch every token and write every sink once, then exit")
    p.add_argument(
        "--log-format",
        choices=["text", "json"],
        help="json: one JSON object per line, for cluster log collectors (default: $TOKEND_LOG_FORMAT, else text)",
    )


def _run(r: RunRequest, inv: Invocation) -> int:
    from tokend import config, envfile, logs, paths, runtime  # the daemon's whole world: only `run` needs it

    env = envfile.apply(r.config)  # the daemon's environment file, before the config and identities are read
    fmt = r.log_format or inv.ctx.environ.get(logs.FORMAT_ENV) or "text"
    if fmt not in logs.FORMATS:
        raise UsageError(f"${logs.FORMAT_ENV} is {fmt!r}; use one of: {', '.join(logs.FORMATS)}")
    log_file = None if r.once else paths.log_file(r.config)
    inv.ctx.setup_logs(inv.debug, quiet=r.once, log_file=log_file, fmt=fmt)
    if not r.once:
        return runtime.start(config.load(r.config), stop=inv.stop, env=env)
    failed = runtime.once(config.load(r.config), stop=inv.stop)
    for line in failed:
        inv.ctx.stderr.write(f"tokend: {line}\n")
    return EXIT_FAILURE if failed else EXIT_OK


def _status_arguments(p: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable output (times are Unix epoch seconds)")
    p.add_argument("--watch", action="store_true", help="follow it: redraw every two seconds until Ctrl-C")


WATCH_INTERVAL = 2.0  # seconds between two redraws of `tokend status --watch`


def _status(r: StatusRequest, inv: Invocation) -> int:
    import json  # only the commands that show JSON need it

    from tokend import status  # only `tokend status` renders the table

    ctx = inv.ctx
    while True:
        state = _ask(inv, lambda c: c.status())
        if r.json:
            ctx.out(json.dumps(state, indent=2))
        else:
            clear = "\033[H\033[2J" if r.watch and ctx.stdout.isatty() else ""
            ctx.out(clear + status.render(state, ctx.clock.now(), status.painter(ctx.stdout, ctx.environ)))
        if not r.watch:
            return 0
        ctx.sleep(WATCH_INTERVAL)
        if not ctx.stdout.isatty():
            ctx.out("")


def _ask(inv: Invocation, call: Callable[[Client], Any]) -> Any:
    """``call(client)`` on the config's daemon; with none, the error says what to do — or, when the config file
    itself is missing, names it."""
    try:
        return call(inv.ctx.ipc_client(inv.config))
    except DaemonNotRunning as e:
        if not inv.config.exists():
            from tokend import config  # only this error path reads the config

            config.load(inv.config)  # raises the ConfigError naming the missing file
        raise TokendError(f"{e}; start it with `tokend run --config {inv.config}`") from None


def _token_arguments(p: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    p.add_argument("target", nargs="?", help="target name (optional when there is only one)")
    for flag, help_ in (
        ("--host", "the host a client connects to"),
        ("--port", "its port (default 5432)"),
        ("--user", "the user it logs in as"),
        ("--database", "the database (default: any)"),
    ):
        p.add_argument(flag, help=f"pick the target libpq would match: {help_}")
    p.add_argument(
        "--from-pgadmin",
        action="store_true",
        help="pick the target from PGADMIN_PASSEXEC_HOST/_PORT/_USERNAME/_DATABASE (pgAdmin's server-mode command)",
    )


def _token_request(a: argparse.Namespace, inv: Invocation) -> TokenRequest:
    return TokenRequest(inv.config, a.target, a.host, a.port, a.user, a.database, a.from_pgadmin)


def _token(r: TokenRequest, inv: Invocation) -> int:
    inv.ctx.out(_token_answer(r, inv).token)
    return 0


def _token_answer(r: TokenRequest, inv: Invocation) -> TokenAnswer:
    """A valid token and its target (from the daemon, else without it); by name, or by connection details."""
    from tokend import access, config  # config, ipc and (without a daemon) identities: only token users need them
    from tokend.sinks import pgpass  # libpq's matching rules: see above

    inv.ctx.setup_logs(inv.debug, quiet=True)
    name = r.target
    answers: dict[str, TokenAnswer] = {}

    def answer(target: str | None) -> TokenAnswer:
        key = target or ""
        if key not in answers:
            answers[key] = access.token_for(r.config, target, inv.ctx.ipc_client, inv.ctx.clock)
        return answers[key]

    unresolved: list[TokendError] = []

    def resolved_user(t: Target) -> str | None:
        """A user = "@principal" target matches by the user its token resolves to (the answer names it); one
        with no token matches nobody, and its reason is the error when nothing else matches."""
        try:
            return str(answer(t.name).target["user"])
        except TokendError as e:
            unresolved.append(e)
            return None

    if r.from_pgadmin:
        from tokend.clients import pgadmin  # only pgAdmin's server-mode command needs it

        name = pgadmin.passexec_target(config.load(r.config), inv.ctx.environ).name
    elif r.host or r.user:
        try:
            name = pgpass.target_for(config.load(r.config), r.host, r.port, r.user, r.database, resolved_user).name
        except UsageError:
            if unresolved:
                raise unresolved[0] from None
            raise
    return answer(name)


def _exec_arguments(p: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    p.add_argument("target", help="target name")
    p.epilog = "usage: tokend exec TARGET [--config PATH] -- CMD [ARGS...]"


def _exec_request(a: argparse.Namespace, inv: Invocation) -> ExecRequest:
    return ExecRequest(TokenRequest(inv.config, a.target), inv.rest)


def _exec(r: ExecRequest, inv: Invocation) -> int:
    if not r.command:
        raise UsageError("nothing to run; usage: tokend exec TARGET -- CMD [ARGS...]")
    return inv.ctx.exec_with(_token_answer(r.token, inv), r.command)


def _daemon_request(op: str) -> Callable[[argparse.Namespace, Invocation], DaemonRequest]:
    return lambda a, inv: DaemonRequest(inv.config, op)


def _daemon_op(r: DaemonRequest, inv: Invocation) -> int:
    _ask(inv, lambda c: c.stop() if r.op == "stop" else c.reload())
    return 0


def _identity_arguments(p: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    p.add_argument("identity", nargs="?", help="identity name (optional when only one needs a person)")


def _sign_in_request(a: argparse.Namespace, inv: Invocation) -> SignIn:
    from tokend.access import SignIn  # access imports config and ipc: only sign-ins and tokens need them

    return SignIn(inv.config, a.identity)


def _login(r: SignIn, inv: Invocation) -> int:
    from tokend import access  # see _sign_in_request

    inv.ctx.setup_logs(inv.debug, quiet=True)
    inv.ctx.out(access.sign_in(r, say=inv.ctx.err, connect=inv.ctx.ipc_client))
    return 0


def _logout(r: SignIn, inv: Invocation) -> int:
    from tokend import access  # see _sign_in_request

    inv.ctx.out("\n".join(access.sign_out(r, connect=inv.ctx.ipc_client)))
    return 0


def _clients_arguments(p: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    from tokend.clients import CLIENTS  # the clients' table: only the parser needs it

    p.add_argument("client", nargs="?", choices=[*CLIENTS, "remove"], help="the client to set up")
    p.add_argument("targets", nargs="*", metavar="TARGET", help="targets (default: all); after remove: the client")
    p.add_argument(
        "--output",
        type=Path,
        metavar="PATH",
        help="pgadmin: add to this servers.json; datagrip: add to this project folder",
    )
    p.add_argument(
        "--shared-command",
        action="store_true",
        help="pgadmin 8.14+: one password command for every server (%%HOSTNAME%% %%PORT%% %%USERNAME%%)",
    )
    p.add_argument(
        "--server-mode",
        action="store_true",
        help="pgadmin in server mode: a SERVER_PASSEXEC_COMMANDS entry for config_local.py and servers naming it",
    )
    p.add_argument("--json", action="store_true", help="the list of clients, machine-readable")


def _clients_request(a: argparse.Namespace, inv: Invocation) -> ClientsRequest:
    return ClientsRequest(inv.config, a.client, tuple(a.targets), a.output, a.shared_command, a.json, a.server_mode)


def _clients(r: ClientsRequest, inv: Invocation) -> int:
    from tokend import clients  # the client modules: only `tokend clients` needs them

    if r.client == "remove":
        if not r.targets:
            raise UsageError(f"name the client: tokend clients remove {'|'.join(clients.CLIENTS)} [TARGET...]")
        lines = clients.remove(r.targets[0], list(r.targets[1:]), r.config, r.output)
    else:
        lines = clients.run(r.client, list(r.targets), r.config, r.output, r.shared_command, r.json, r.server_mode)
    for line in lines:
        inv.ctx.out(line)
    return 0


def _init_arguments(p: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    import argparse  # only building the parser needs it

    from tokend.kinds import SOURCES  # the identity sources' table, for the help text

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
        p.add_argument(f"--{flag}", help=help_)
    p.add_argument("--cloud", choices=["public", "usgov", "china"])
    p.add_argument("--port", type=int)
    p.add_argument("--allow-unencrypted-cache", action="store_true", help="device-code/browser without a keyring")
    p.add_argument("--check", action="store_true", help="also connect and show current_user")
    p.add_argument(
        "--service",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="install the login service (asked when interactive)",
    )


def _init_request(a: argparse.Namespace, inv: Invocation) -> init.Request:
    from tokend import init  # its own imports (config, clouds): only `tokend init` needs them

    answers = init.Answers(**{f: getattr(a, f) for f in init.FLAGS})
    if a.allow_unencrypted_cache:
        answers.extra["allow_unencrypted_cache"] = True
    interactive = inv.ctx.stdin.isatty() and inv.ctx.stdout.isatty()
    return init.Request(inv.config, answers, interactive, check=a.check, service=a.service)


def _init(r: init.Request, inv: Invocation) -> int:
    from tokend import init  # see _init_request

    inv.ctx.setup_logs(inv.debug, quiet=True)
    return init.run(r, say=inv.ctx.out, ask_line=_ask_line(inv.ctx))


def _ask_line(ctx: Context) -> Callable[[str], str]:
    """A question on stdout, the answer from stdin (``input`` itself on the process's own terminal, for its line
    editing); EOFError at the end of the input, as ``input`` raises."""
    if ctx.stdin is sys.stdin and ctx.stdout is sys.stdout:
        return input

    def ask(prompt: str) -> str:
        ctx.stdout.write(prompt)
        ctx.stdout.flush()
        line = ctx.stdin.readline()
        if not line:
            raise EOFError
        return line.rstrip("\n")

    return ask


def _demo_arguments(p: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    p.add_argument("--duration", type=float, metavar="SECONDS", help="stop after this long (default: Ctrl-C)")


def _demo(r: DemoRequest, inv: Invocation) -> int:
    from tokend import demo  # the emulator: only `tokend demo` needs it

    return demo.run(r.duration, say=inv.ctx.out)


def _secret_arguments(p: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["set", "remove"], help="set: read it from the terminal or stdin")
    p.add_argument("identity", help="the [identities.NAME] it is for")


def _secret(r: SecretRequest, inv: Invocation) -> int:
    from tokend import client_secrets  # the keychain: only `tokend secret` needs it

    if r.action == "set":
        inv.ctx.out(client_secrets.set_secret(r.config, r.identity, inv.ctx.stdin))
    else:
        inv.ctx.out(client_secrets.remove_secret(r.config, r.identity))
    return 0


def _emulator_arguments(p: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    p.add_argument("emulator_args", nargs="...", help="its options: tokend emulator --help")  # argparse.REMAINDER


def _emulator(r: tuple[str, ...], inv: Invocation) -> int:
    import contextlib  # these two: only `tokend emulator` needs them

    from tokend.emulator import cli as emulator_cli  # (see above)

    with contextlib.redirect_stdout(inv.ctx.stdout), contextlib.redirect_stderr(inv.ctx.stderr):
        try:
            return emulator_cli.main(list(r))
        except SystemExit as e:  # its own parser: --help (0), a usage error (2, its message written)
            return e.code if isinstance(e.code, int) else EXIT_USAGE


SHELLS = ("bash", "zsh", "fish", "powershell")


def _completion_arguments(p: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    p.add_argument(
        "shell",
        choices=[*SHELLS, "targets"],
        help="the shell (or `targets`: the configured target names, for the scripts)",
    )


def _completion(r: CompletionRequest, inv: Invocation) -> int:
    from tokend import completion  # only `tokend completion` needs it

    targets = [c.name for c in COMMANDS if c.targets]
    inv.ctx.stdout.write(completion.script(r.shell, parser(inv.ctx), targets, r.config))
    return 0


def _doctor_arguments(p: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--login", action="store_true", help="also log in to each target through pgpass")


def _doctor_request(a: argparse.Namespace, inv: Invocation) -> Shown:
    from tokend import doctor  # every check's imports: only `tokend doctor` needs them

    return Shown(doctor.Request(inv.config, a.login), a.json)


def _doctor(r: Shown, inv: Invocation) -> int:
    import json  # see _status

    from tokend import doctor, status  # see _doctor_request

    inv.ctx.setup_logs(inv.debug, quiet=True)
    checks = doctor.command(r.request, connect=inv.ctx.ipc_client)
    report = doctor.as_json(checks)
    paint = status.painter(inv.ctx.stdout, inv.ctx.environ)
    inv.ctx.out(json.dumps(report, indent=2) if r.json else doctor.render(checks, paint))
    return 0 if report["ok"] else EXIT_FAILURE


def _admin_arguments(p: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    ag = sub.add_parser(
        "add-group",
        parents=[common],
        help="give an Entra group least-privilege access (prints the SQL; --apply runs it)",
    )
    ck = sub.add_parser("check", parents=[common], help="why a group's login would fail, with the fix")
    ls = sub.add_parser("list", parents=[common], help="the server's Entra principals and what each may do")
    sy = sub.add_parser("sync", parents=[common], help="run the server's group sync now (members get roles)")
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


def _admin_request(a: argparse.Namespace, inv: Invocation) -> Shown:
    from tokend import admin  # the PostgreSQL login: only `tokend admin` needs it

    request = admin.Request(
        a.action,
        inv.config,
        a.target,
        a.database,
        group=getattr(a, "group", ""),
        schemas=tuple(getattr(a, "schema", ())),
        read_write=getattr(a, "read_write", False),
        object_id=getattr(a, "object_id", None),
        kind=getattr(a, "type", "group"),
        allow_public=getattr(a, "allow_public", False),
        apply=getattr(a, "apply", False),
        members_only=getattr(a, "members_only", False),
    )
    return Shown(request, getattr(a, "json", False))


def _admin(r: Shown, inv: Invocation) -> int:
    import json  # see _status

    from tokend import admin, status  # see _admin_request

    found = admin.command(r.request, lambda name: _token_answer(TokenRequest(inv.config, name), inv).token)
    if found.applied is not None:
        inv.ctx.out(f"applied in one transaction: {', '.join(found.applied)}")
    elif found.synced is not None:
        inv.ctx.out(found.synced)
    elif found.principals is not None:
        inv.ctx.out(admin.render_principals(found.principals, r.json))
    elif found.findings is not None:
        paint = status.painter(inv.ctx.stdout, inv.ctx.environ)
        shown = (
            json.dumps(admin.as_dict(found.findings), indent=2)
            if r.json
            else admin.render_findings(found.findings, paint)
        )
        inv.ctx.out(shown)
    else:
        inv.ctx.stdout.write(found.sql)
    return 0 if found.ok else EXIT_FAILURE


def _service_arguments(p: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    sub.add_parser("install", parents=[common], help="install, enable and start the login service")
    sub.add_parser("uninstall", parents=[common], help="stop and remove the login service").add_argument(
        "--purge",
        action="store_true",
        help="also remove everything this config made (see README); your entries, "
        "other configs and the installation stay",
    )
    sub.add_parser("status", parents=[common], help="what the service manager says")
    sub.add_parser("logs", parents=[common], help="show the daemon's logs").add_argument(
        "-f", "--follow", action="store_true", help="keep following"
    )


def _service_request(a: argparse.Namespace, inv: Invocation) -> service.Request:
    from tokend import service  # the service managers' files: only `tokend service` needs them

    return service.Request(a.action, inv.config, getattr(a, "purge", False), getattr(a, "follow", False))


def _service(r: service.Request, inv: Invocation) -> int:
    from tokend import service  # see _service_request

    done = service.command(r)
    for line in done.lines:
        inv.ctx.out(line)
    if done.logs is not None:
        if done.logs.follow:
            return inv.ctx.call(done.logs.follow)
        inv.ctx.stdout.write(done.logs.text)
    return 0 if done.ok else EXIT_FAILURE


def _sign_in_help(action: str) -> str:
    return {
        "login": "sign in once (device-code or browser identities)",
        "logout": "forget a sign-in and remove its tokens from every sink",
    }[action]


COMMANDS: tuple[Command, ...] = (
    Command(
        "run",
        "run the daemon in the foreground",
        _run_arguments,
        lambda a, inv: RunRequest(inv.config, a.once, a.log_format),
        _run,
    ),
    Command(
        "status",
        "what the daemon holds and what is wrong",
        _status_arguments,
        lambda a, inv: StatusRequest(inv.config, a.json, a.watch),
        _status,
    ),
    Command("token", "print a valid token for a target", _token_arguments, _token_request, _token, targets=True),
    Command(
        "exec",
        "run a command with PG* variables set for a target",
        _exec_arguments,
        _exec_request,
        _exec,
        targets=True,
    ),
    Command("stop", "ask the running daemon to stop", _no_arguments, _daemon_request("stop"), _daemon_op),
    Command(
        "reload",
        "ask the running daemon to read its config again",
        _no_arguments,
        _daemon_request("reload"),
        _daemon_op,
    ),
    Command("login", _sign_in_help("login"), _identity_arguments, _sign_in_request, _login),
    Command("logout", _sign_in_help("logout"), _identity_arguments, _sign_in_request, _logout),
    Command("init", "write a working config (asks, or takes flags)", _init_arguments, _init_request, _init),
    Command(
        "demo",
        "watch tokend work against a local Entra emulator",
        _demo_arguments,
        lambda a, inv: DemoRequest(a.duration),
        _demo,
    ),
    Command(
        "secret",
        "keep a service principal's client secret in the OS keychain (read from stdin, never argv)",
        _secret_arguments,
        lambda a, inv: SecretRequest(inv.config, a.action, a.identity),
        _secret,
    ),
    Command(
        "emulator",
        "run the local Entra emulator (and its PostgreSQL) on its own, for demos and trials",  # its HELP
        _emulator_arguments,
        lambda a, inv: tuple(a.emulator_args),
        _emulator,
    ),
    Command(
        "completion",
        "print a shell completion script",
        _completion_arguments,
        lambda a, inv: CompletionRequest(inv.config, a.shell),
        _completion,
    ),
    Command(
        "doctor",
        "check everything and say how to fix what is wrong",
        _doctor_arguments,
        _doctor_request,
        _doctor,
    ),
    Command(
        "clients",
        "set up PostgreSQL clients (none: list what is here; remove CLIENT: undo it)",
        _clients_arguments,
        _clients_request,
        _clients,
        targets=True,
    ),
    Command(
        "admin",
        "an Entra administrator's tasks on a server: add a group, list principals, check a login",
        _admin_arguments,
        _admin_request,
        _admin,
    ),
    Command(
        "service",
        "run tokend at login under the OS's service manager",
        _service_arguments,
        _service_request,
        _service,
    ),
)
BY_NAME: dict[str, Command] = {c.name: c for c in COMMANDS}


# -- the parser and the dispatch --------------------------------------------------------------------------------------


def parser(ctx: Context | None = None) -> argparse.ArgumentParser:
    """The whole command line, from ``COMMANDS``; its messages (help, usage errors, version) go to ``ctx``'s
    streams (default: the process's)."""
    import argparse  # ~5 ms: not on `tokend token`'s hand-off path

    out = ctx.stdout if ctx else None
    err = ctx.stderr if ctx else None

    class Parser(argparse.ArgumentParser):
        def _print_message(self, message: str, file: Any = None) -> None:
            if message:
                stream = (err or sys.stderr) if file is sys.stderr else (out or file or sys.stdout)
                stream.write(message)

    common = Parser(add_help=False)
    # SUPPRESS keeps a value given before the command from being reset by the subcommand's defaults.
    common.add_argument(
        "--config",
        type=Path,
        default=argparse.SUPPRESS,
        metavar="PATH",
        help="config file (default: $TOKEND_CONFIG, else the per-user config folder)",
    )
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="log more, and show tracebacks")
    p = Parser(
        prog="tokend",
        parents=[common],
        description="Keeps a valid Microsoft Entra token where PostgreSQL clients look.",
    )
    p.add_argument("--version", action="version", version=f"tokend {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for c in COMMANDS:
        c.add_arguments(sub.add_parser(c.name, parents=[common], help=c.help, description=c.help), common)
    return p


_parser = parser  # the name tests/unit/test_docs.py reads the commands through


def default_config_path(environ: Mapping[str, str]) -> Path:
    """``$TOKEND_CONFIG``, else the per-user config folder's config.toml (platformdirs)."""
    if environ.get("TOKEND_CONFIG"):
        return Path(environ["TOKEND_CONFIG"]).expanduser()
    from tokend import paths  # platformdirs: only when no --config and no $TOKEND_CONFIG name the file

    return paths.config_dir() / "config.toml"


def parse(argv: Sequence[str], ctx: Context, stop: threading.Event | None = None) -> tuple[Command, Any, Invocation]:
    """The command, its typed request and the invocation for ``argv``. Everything after the first ``--`` is the
    command for ``exec``, so options may come before it in any order. Raises SystemExit (argparse) for usage errors,
    --help and --version, TokendError for requests that cannot be made."""
    argv, rest = list(argv), tuple[str, ...]()
    if "--" in argv:
        i = argv.index("--")
        argv, rest = argv[:i], tuple(argv[i + 1 :])
    args = parser(ctx).parse_args(argv)
    config = getattr(args, "config", None) or default_config_path(ctx.environ)
    inv = Invocation(ctx, config, getattr(args, "debug", False), rest, stop)
    command = BY_NAME[args.command]
    return command, command.request(args, inv), inv


def main(argv: Sequence[str] | None = None, ctx: Context | None = None) -> int:
    """``tokend ARGV...``: the exit code. ``ctx``: the outside world (default: this process's; the hand-off for
    ``tokend token`` is tried only then, as it talks to the real socket and stdout)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if ctx is None and argv[:1] == ["token"] and (answered := handoff.token(argv[1:])) is not None:
        return answered
    ctx = ctx or Context.real()
    stop = ctx.catch_stop() if argv[:1] == ["run"] else None  # before the heavy imports: a stop now is a clean stop
    debug = "--debug" in (argv[: argv.index("--")] if "--" in argv else argv)  # until the parser has said
    try:
        if argv[:1] == ["emulator"]:  # its own parser: argparse cannot pass "--postgres" through a REMAINDER
            return _emulator(tuple(argv[1:]), Invocation(ctx, Path()))
        try:
            command, request, inv = parse(argv, ctx, stop)
        except SystemExit as e:  # argparse: --help, --version (0) and usage errors (2, its message written)
            return e.code if isinstance(e.code, int) else EXIT_USAGE
        debug = inv.debug
        return int(command.run(request, inv))
    except TokendError as e:
        _traceback(ctx, debug)
        ctx.err(f"tokend: {e}")
        return e.exit_code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception as e:
        if debug:
            _traceback(ctx, debug)
            ctx.err(f"tokend: internal error: {type(e).__name__}")
            return EXIT_FAILURE
        from tokend.redact import redact  # only an unexpected error needs it

        ctx.err(f"tokend: internal error: {type(e).__name__}: {redact(str(e))} (run with --debug for details)")
        return EXIT_FAILURE


def _traceback(ctx: Context, debug: bool) -> None:
    """With --debug, the traceback of the error being handled (before its one line; the exit code stays)."""
    if debug:
        import traceback  # only --debug shows one

        traceback.print_exc(file=ctx.stderr)

"""The command line in-process, table-driven in cloud-sql-proxy's ``TestNewCommandArguments`` manner: argv -> the
typed request each command gets, argv -> the exit code and the one-line error, and the config-mistake table through
``cli.main`` with captured output. The daemon is a fake behind ``Context.ipc_client``; nothing starts a process."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tokend import admin, cli, doctor, init, service
from tokend.access import SignIn
from tokend.cli import (
    ClientsRequest,
    CompletionRequest,
    DaemonRequest,
    DemoRequest,
    ExecRequest,
    RunRequest,
    Shown,
    StatusRequest,
    TokenRequest,
)
from tokend.config import load
from tokend.errors import ConfigError, DaemonNotRunning
from tokend.ipc import TokenAnswer

pytestmark = pytest.mark.portable

CONFIG = Path("/nowhere/config.toml")
GOOD = (
    '[identities.me]\nsource = "azure-cli"\n'
    '[targets.prod]\nhost = "prod.example"\nuser = "DBA Group"\nidentity = "me"\n'
    '[targets.rpt]\nhost = "rpt.example"\nport = 6432\ndatabase = "reports"\nuser = "Readers"\nidentity = "me"\n'
)
TOKEN = "tok-" + "a" * 40  # token-shaped enough for the fake; never a real one
STATUS = {"pid": 7, "started_at": 1.8e9, "config": str(CONFIG), "config_error": None, "identities": [], "targets": []}


@dataclass
class FakeDaemon:
    """What ``ipc.Client`` answers, for one config; ``running=False``: nobody answers (DaemonNotRunning).
    ``fail``: an exception every call raises. ``calls``: (operation, argument) in order."""

    running: bool = True
    fail: BaseException | None = None
    calls: list[tuple[str, Any]] = field(default_factory=list)
    timeout: float = 10.0
    endpoint: Any = field(default_factory=lambda: SimpleNamespace(describe=lambda: "/run/fake.sock"))

    def _call(self, op: str, arg: Any = None) -> None:
        self.calls.append((op, arg))
        if self.fail is not None:
            raise self.fail
        if not self.running:
            raise DaemonNotRunning("no daemon answers at /run/fake.sock")

    def status(self) -> dict[str, Any]:
        self._call("status")
        return STATUS

    def token(self, target: str | None) -> TokenAnswer:
        self._call("token", target)
        host = {"prod": "prod.example", "rpt": "rpt.example"}.get(target or "prod", "?")
        return TokenAnswer(TOKEN, 1e10, {"name": target, "host": host, "port": 5432, "database": "*", "user": "u"})

    def stop(self) -> None:
        self._call("stop")

    def reload(self) -> None:
        self._call("reload")

    def sign_in_changed(self, identity: str | None) -> None:
        self._call("sign-in-changed", identity)


@dataclass
class Run:
    """One in-process run of the command line: its exit code and captured output."""

    code: int
    stdout: str
    stderr: str
    daemon: FakeDaemon
    execs: list[tuple[TokenAnswer, Sequence[str]]]

    @property
    def lines(self) -> list[str]:
        return self.stderr.strip().splitlines()


def context(daemon: FakeDaemon, environ: dict[str, str] | None = None, **over: Any) -> cli.Context:
    """A context of captured streams around ``daemon``; ``over`` replaces fields (``execs`` collects exec calls)."""
    execs: list[tuple[TokenAnswer, Sequence[str]]] = over.pop("execs", [])
    fields: dict[str, Any] = {
        "stdout": io.StringIO(),
        "stderr": io.StringIO(),
        "stdin": io.StringIO(),
        "environ": environ if environ is not None else {},
        "ipc_client": lambda path: daemon,
        "sleep": lambda seconds: None,
        "setup_logs": lambda *a, **k: None,
        "catch_stop": threading.Event,
        "exec_with": lambda answer, cmd: execs.append((answer, cmd)) or 0,
        "call": lambda cmd: 0,
    }
    return cli.Context.real(**{**fields, **over})


def tokend(*argv: str, daemon: FakeDaemon | None = None, environ: dict[str, str] | None = None, **over: Any) -> Run:
    """``tokend ARGV`` through ``cli.main`` with a fake daemon and captured streams."""
    daemon = daemon or FakeDaemon()
    execs: list[tuple[TokenAnswer, Sequence[str]]] = []
    ctx = context(daemon, environ, execs=execs, **over)
    code = cli.main(list(argv), ctx)
    return Run(code, ctx.stdout.getvalue(), ctx.stderr.getvalue(), daemon, execs)  # type: ignore[attr-defined]


def parsed(*argv: str, environ: dict[str, str] | None = None) -> tuple[str, Any, cli.Invocation]:
    command, request, inv = cli.parse(list(argv), context(FakeDaemon(), environ))
    return command.name, request, inv


C = str(CONFIG)
ANY = ("--config", C)


@pytest.mark.parametrize(
    ("argv", "want"),
    [
        (("run", "--once", *ANY), RunRequest(CONFIG, once=True)),
        (("--config", C, "run", "--log-format", "json"), RunRequest(CONFIG, log_format="json")),
        (("status", *ANY), StatusRequest(CONFIG)),
        (("status", "--json", "--watch", *ANY), StatusRequest(CONFIG, json=True, watch=True)),
        (("token", *ANY), TokenRequest(CONFIG)),
        (("token", "prod", *ANY), TokenRequest(CONFIG, "prod")),
        (
            ("token", "--host", "h.example", "--port", "6432", "--user", "DBA Group", "--database", "db", *ANY),
            TokenRequest(CONFIG, None, "h.example", "6432", "DBA Group", "db"),
        ),
        (
            ("exec", "prod", *ANY, "--", "psql", "-c", "select 1", "--config", "theirs"),
            ExecRequest(TokenRequest(CONFIG, "prod"), ("psql", "-c", "select 1", "--config", "theirs")),
        ),
        (("exec", "prod", *ANY), ExecRequest(TokenRequest(CONFIG, "prod"), ())),
        (("stop", *ANY), DaemonRequest(CONFIG, "stop")),
        (("reload", *ANY), DaemonRequest(CONFIG, "reload")),
        (("login", *ANY), SignIn(CONFIG, None)),
        (("login", "me", *ANY), SignIn(CONFIG, "me")),
        (("logout", "me", *ANY), SignIn(CONFIG, "me")),
        (("clients", *ANY), ClientsRequest(CONFIG)),
        (("clients", "--json", *ANY), ClientsRequest(CONFIG, json=True)),
        (
            ("clients", "pgadmin", "prod", "rpt", "--output", "s.json", "--shared-command", *ANY),
            ClientsRequest(CONFIG, "pgadmin", ("prod", "rpt"), Path("s.json"), shared_command=True),
        ),
        (("clients", "remove", "vscode", "prod", *ANY), ClientsRequest(CONFIG, "remove", ("vscode", "prod"))),
        (
            ("init", "--server", "contoso", "--user", "DBA Group", "--port", "6432", "--no-service", *ANY),
            init.Request(CONFIG, init.Answers(server="contoso", user="DBA Group", port=6432), service=False),
        ),
        (
            ("init", "--identity", "device-code", "--allow-unencrypted-cache", "--check", *ANY),
            init.Request(
                CONFIG,
                init.Answers(identity="device-code", extra={"allow_unencrypted_cache": True}),
                check=True,
            ),
        ),
        (("demo", "--duration", "2.5"), DemoRequest(2.5)),
        (("completion", "fish", *ANY), CompletionRequest(CONFIG, "fish")),
        (("doctor", *ANY), Shown(doctor.Request(CONFIG))),
        (("doctor", "--login", "--json", *ANY), Shown(doctor.Request(CONFIG, login=True), json=True)),
        (
            ("admin", "add-group", "DBA Group", "--target", "prod", "--schema", "a", "--schema", "b", *ANY),
            Shown(admin.Request("add-group", CONFIG, "prod", group="DBA Group", schemas=("a", "b"))),
        ),
        (
            (
                *("admin", "add-group", "app", "--target", "prod", "--database", "db", "--read-write"),
                *("--object-id", "0000", "--type", "service", "--allow-public", "--apply", *ANY),
            ),
            Shown(
                admin.Request(
                    *("add-group", CONFIG, "prod", "db", "app"),
                    read_write=True,
                    object_id="0000",
                    kind="service",
                    allow_public=True,
                    apply=True,
                )
            ),
        ),
        (
            ("admin", "check", "G", "--target", "prod", "--json", *ANY),
            Shown(admin.Request("check", CONFIG, "prod", group="G"), json=True),
        ),
        (("admin", "list", "--target", "prod", *ANY), Shown(admin.Request("list", CONFIG, "prod"))),
        (("service", "install", *ANY), service.Request("install", CONFIG)),
        (("service", "uninstall", "--purge", *ANY), service.Request("uninstall", CONFIG, purge=True)),
        (("service", "status", *ANY), service.Request("status", CONFIG)),
        (("service", "logs", "-f", *ANY), service.Request("logs", CONFIG, follow=True)),
    ],
)
def test_each_command_line_becomes_the_request_its_command_gets(argv: tuple[str, ...], want: Any) -> None:
    name, request, _ = parsed(*argv)
    assert name == argv[0] if argv[0] != "--config" else name == argv[2]
    assert request == want


def test_the_config_comes_from_the_flag_anywhere_else_the_environment_else_the_config_folder(home: Path) -> None:
    assert parsed("status", environ={"TOKEND_CONFIG": "~/t.toml"})[1].config == home / "t.toml"
    assert parsed("--config", "a.toml", "status", environ={"TOKEND_CONFIG": "b"})[1].config == Path("a.toml")
    assert parsed("status", "--config", "a.toml")[1].config == Path("a.toml")
    assert parsed("status")[1].config == home / ".config" / "tokend" / "config.toml"


@pytest.mark.parametrize(
    ("argv", "debug"),
    [
        (("status",), False),
        (("--debug", "status"), True),
        (("status", "--debug"), True),
        (("exec", "p", "--", "--debug"), False),
    ],
)
def test_debug_is_a_flag_before_or_after_the_command_but_not_in_execs_command(
    argv: tuple[str, ...], debug: bool
) -> None:
    assert parsed(*argv, *ANY)[2].debug is debug


@pytest.mark.parametrize(
    ("argv", "code", "error"),
    [
        (("frobnicate",), 2, "invalid choice: 'frobnicate'"),
        ((), 2, "the following arguments are required: COMMAND"),
        (("run", "--log-format", "xml"), 2, "invalid choice: 'xml'"),
        (("admin", "list"), 2, "the following arguments are required: --target"),
        (("exec", "prod", *ANY), 2, "nothing to run; usage: tokend exec TARGET -- CMD [ARGS...]"),
        (("clients", "remove", *ANY), 2, "name the client: tokend clients remove"),
        (("status", "--config", "/nowhere/nope.toml"), 2, "/nowhere/nope.toml: no such file"),
        (("status", "--debug", "--config", "/nowhere/nope.toml"), 2, "/nowhere/nope.toml: no such file"),
        (("run", "--once", "--config", "/nowhere/nope.toml"), 2, "no such file"),
        (("run", "--once", "--debug", "--config", "/nowhere/nope.toml"), 2, "no such file"),
    ],
)
def test_each_mistake_exits_with_its_code_and_one_line(argv: tuple[str, ...], code: int, error: str) -> None:
    r = tokend(*argv, daemon=FakeDaemon(running=False))
    assert r.code == code, r.stderr
    assert error in r.lines[-1], r.stderr
    if "--debug" in argv:
        return
    assert "Traceback" not in r.stderr
    if r.lines[0].startswith("usage: "):  # argparse's own: the usage, then one line naming the mistake
        assert r.lines[-1].startswith("tokend") and ": error: " in r.lines[-1], r.stderr
    else:
        assert len(r.lines) == 1 and r.lines[0].startswith("tokend: "), r.stderr


def test_debug_shows_the_traceback_and_keeps_the_exit_code() -> None:
    """Issue 22: ``--debug`` turned a config error's 2 into Python's 1 (the exception was re-raised)."""
    down = FakeDaemon(running=False)
    plain = tokend("status", "--config", "/nowhere/nope.toml", daemon=down)
    debug = tokend("status", "--debug", "--config", "/nowhere/nope.toml", daemon=down)
    assert plain.code == debug.code == 2
    assert "Traceback" in debug.stderr and "ConfigError" in debug.stderr
    assert debug.lines[-1] == plain.lines[-1]
    broken = FakeDaemon(fail=RuntimeError("boom"))
    assert tokend("stop", "--debug", *ANY, daemon=broken).code == tokend("stop", *ANY, daemon=broken).code == 1


def test_an_unexpected_error_is_one_redacted_line_exit_1() -> None:
    secret = "eyJ" + "a" * 30 + "." + "b" * 30 + "." + "c" * 30
    r = tokend("stop", *ANY, daemon=FakeDaemon(fail=RuntimeError(f"boom {secret}")))
    assert r.code == 1 and len(r.lines) == 1
    assert r.lines[0].startswith("tokend: internal error: RuntimeError: boom") and secret not in r.stderr
    assert "--debug" in r.lines[0]


def test_ctrl_c_exits_130() -> None:
    assert tokend("reload", *ANY, daemon=FakeDaemon(fail=KeyboardInterrupt())).code == 130


def test_help_and_version_go_to_the_contexts_stdout() -> None:
    r = tokend("--version")
    assert r.code == 0 and r.stdout == f"tokend {cli.__version__}\n" and r.stderr == ""
    r = tokend("admin", "--help")
    assert r.code == 0 and "add-group" in r.stdout and "an Entra administrator's tasks" in r.stdout


def test_every_command_row_is_a_subcommand_with_its_help() -> None:
    r = tokend("--help")
    for c in cli.COMMANDS:
        assert c.name in r.stdout
        assert c.help in tokend(c.name, "--help").stdout.replace("\n", " ").replace("  ", " ")


def test_token_prints_the_daemons_token_and_asks_for_the_target_named(tmp_path: Path) -> None:
    r = tokend("token", "prod", *ANY)
    assert (r.code, r.stdout, r.stderr) == (0, TOKEN + "\n", "")
    assert r.daemon.calls == [("token", "prod")]


def test_token_by_connection_details_asks_for_the_target_libpq_would_match(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(GOOD)
    r = tokend("token", "--host", "rpt.example", "--port", "6432", "--user", "Readers", "--config", str(cfg))
    assert r.code == 0 and r.daemon.calls == [("token", "rpt")]
    r = tokend("token", "--host", "rpt.example", "--port", "x", "--user", "Readers", "--config", str(cfg))
    assert r.code == 2 and r.lines == ["tokend: --port must be a number, got 'x'"]


def test_exec_hands_the_token_and_the_command_over() -> None:
    r = tokend("exec", "prod", *ANY, "--", "psql", "-c", "select 1")
    assert r.code == 0 and r.stdout == ""
    [(answer, cmd)] = r.execs
    assert answer.token == TOKEN and answer.target["host"] == "prod.example" and list(cmd) == ["psql", "-c", "select 1"]


def test_stop_and_reload_ask_the_daemon_and_say_how_to_start_one(tmp_path: Path) -> None:
    assert tokend("stop", *ANY).daemon.calls == [("stop", None)]
    assert tokend("reload", *ANY).daemon.calls == [("reload", None)]
    cfg = tmp_path / "c.toml"
    cfg.write_text(GOOD)
    r = tokend("reload", "--config", str(cfg), daemon=FakeDaemon(running=False))
    assert r.code == 1
    assert r.lines == [f"tokend: no daemon answers at /run/fake.sock; start it with `tokend run --config {cfg}`"]


def test_status_shows_the_table_or_json_and_watch_follows_until_ctrl_c() -> None:
    r = tokend("status", *ANY)
    assert r.code == 0 and r.stdout.startswith(f"tokend pid 7 · config {C} · 0 identities, 0 targets\n")
    r = tokend("status", "--json", *ANY)
    assert r.code == 0 and r.stdout.startswith('{\n  "pid": 7,')
    naps: list[float] = []

    def sleep(seconds: float) -> None:
        naps.append(seconds)
        if len(naps) == 3:
            raise KeyboardInterrupt

    r = tokend("status", "--watch", "--json", *ANY, sleep=sleep)
    assert r.code == 130 and naps == [cli.WATCH_INTERVAL] * 3 and r.stdout.count('"pid": 7') == 3
    assert r.daemon.calls == [("status", None)] * 3


def test_status_is_never_coloured_off_a_terminal_and_never_with_no_color() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    state = dict(STATUS, config_error="bad")
    daemon = FakeDaemon()
    daemon.status = lambda: state  # type: ignore[method-assign]
    assert "\033[31m" in tokend("status", *ANY, daemon=daemon, stdout=Terminal()).stdout
    assert "\033[" not in tokend("status", *ANY, daemon=daemon, stdout=Terminal(), environ={"NO_COLOR": "1"}).stdout
    assert "\033[" not in tokend("status", *ANY, daemon=daemon).stdout


@pytest.mark.parametrize(
    ("identity", "error"),
    [
        (None, "identity me follows the Azure CLI: run `az login`"),
        ("me", "identity me follows the Azure CLI: run `az login`; tokend notices within seconds"),
        ("you", "no identity 'you' in"),
    ],
)
def test_login_refuses_identities_tokend_does_not_sign_in(tmp_path: Path, identity: str | None, error: str) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(GOOD)
    r = tokend("login", *([identity] if identity else []), "--config", str(cfg))
    assert r.code == 2 and len(r.lines) == 1 and error in r.lines[0], r.stderr
    assert r.daemon.calls == []


def test_completion_targets_lists_the_configs_targets(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(GOOD)
    assert tokend("completion", "targets", "--config", str(cfg)).stdout.split() == ["prod", "rpt"]
    r = tokend("completion", "bash", "--config", str(cfg))
    assert r.code == 0 and "complete -F _tokend tokend" in r.stdout


# -- the config-mistake table (it started the product once per case; now in-process through cli.main) ---------------

ME = '[identities.me]\nsource = "azure-cli"\n'


@pytest.mark.parametrize(
    ("text", "key", "fix"),
    [
        ('[identities.me]\nsource = "azure-cli"\ncolour = "red"\n', "identities.me.colour", "unknown key"),
        (
            '[identities.me]\nsource = "azure-cli"\n[targets.t]\nhost = "h"\nuser = "u"\nport = "x"\n',
            "targets.t.port",
            "whole number",
        ),
        (
            '[identities.me]\nsource = "azure-cli"\n[targets.t]\nhost = "h"\nuser = "u"\nidentity = "nope"\n',
            "targets.t.identity",
            "add [identities.nope]",
        ),
        ('[refresh]\nmargin = "ten minutes"\n', "refresh.margin", "bad duration"),
        # non-finite and absurd: the daemon took nan and never refreshed again
        *(
            (f"[refresh]\nmargin = {bad}\n", "refresh.margin", 'write seconds or "90s", "10m", "1h", from 10s to 24h')
            for bad in ("nan", "inf", "-inf", '"999999999999h"', "1" + "0" * 400, f'"{"9" * 400}s"', "0", '"2s"', "1e9")
        ),
        ('[identities.me]\nsource = "kerberos"\n', "identities.me.source", "use one of"),
        (
            '[identities.a]\nsource = "service-principal"\ntenant_id = "t"\nclient_id = "c"\n',
            "identities.a",
            "exactly one of client_secret_env",
        ),
        (
            f'{ME}[targets.t]\nhost = "127.0.0.1:5432"\nuser = "u"\n',
            "targets.t.host",
            "write host = '127.0.0.1' and port = 5432",
        ),
        (f'{ME}[targets.t]\nhost = "[::1]:6432"\nuser = "u"\n', "targets.t.host", "write host = '::1' and port = 6432"),
        (f'{ME}[targets.t]\nhost = "postgres://h.example/db"\nuser = "u"\n', "targets.t.host", "is a URL"),
        (f'{ME}[targets.t]\nhost = ""\nuser = "u"\n', "targets.t.host", "non-empty string"),
        (f'{ME}[targets.t]\nhost = "a.example,b.example"\nuser = "u"\n', "targets.t.host", "not one server name"),
        (f'{ME}[targets.t]\nhost = "h"\nuser = "*"\n', "targets.t.user", "not the wildcard"),
        (f'{ME}[targets.t]\nhost = "h"\nuser = "u"\ndatabase = ""\n', "targets.t.database", "non-empty string"),
        (f"{ME}[sinks.pgpass]\npath = 5\n", "sinks.pgpass.path", "non-empty string"),
        ("x = " + "[" * 100_000 + "]" * 100_000 + "\n", "", "nested too deeply"),
        ('[identities.me]\nsource = "azure-cli"\ncloud = "mars"\n', "identities.me.cloud", "use one of"),
        ('[targets.t]\nhost = "h"\n', "targets.t.user", "missing"),
        (
            '[identities.me]\nsource = "azure-cli"\n[targets.t]\nhost = "h"\nuser = "u"\nsinks = ["carrier-pigeon"]\n',
            "targets.t.sinks",
            "unknown sink",
        ),
        ("[identities.me\n", "", "not valid TOML"),
    ],
)
def test_mistakes_name_file_key_and_fix(tmp_path: Path, text: str, key: str, fix: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        load(path)
    assert str(path) in str(e.value) and key in str(e.value) and fix in str(e.value)
    r = tokend("run", "--once", "--config", str(path))
    assert r.code == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tokend: ") and fix in lines[0], r.stderr
    assert "Traceback" not in r.stderr


def test_doctor_shows_its_checks_as_json_or_for_people_and_exits_1_when_one_failed(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.toml")
    r = tokend("doctor", "--json", "--config", missing)
    report = json.loads(r.stdout)
    assert r.code == 1 and report["ok"] is False and r.stderr == ""
    assert [(c["name"], c["status"]) for c in report["checks"]][:1] == [("config", "fail")]
    r = tokend("doctor", "--config", missing)
    assert r.code == 1 and r.stdout.startswith("✗ config ") and "no such file" in r.stdout.splitlines()[0]


@pytest.mark.parametrize("running", [True, False])
def test_doctor_asks_the_daemon_the_context_connects_to(tmp_path: Path, running: bool) -> None:
    cfg = tmp_path / "missing.toml"  # no config: only the daemon is asked, nothing of this machine's is checked
    daemon = FakeDaemon(running=running)
    r = tokend("doctor", "--json", "--config", str(cfg), daemon=daemon)
    check = {c["name"]: c for c in json.loads(r.stdout)["checks"]}["daemon"]
    if running:
        assert check["status"] == "ok" and check["evidence"].startswith("pid 7,"), check
    else:
        assert check["status"] == "fail" and check["evidence"] == "no daemon answers at /run/fake.sock", check
    assert daemon.calls[0] == ("status", None) and daemon.timeout == 30

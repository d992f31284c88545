"""The hand-off's own decisions, in-process: which arguments it takes (anything else goes to the full command),
and what it makes of the daemon's answer on the real socket path. (Where the socket is, and the launcher's imports
and output against a running daemon: tests/e2e/test_handoff.py.)"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tokend import handoff, paths

TOKEN = "eyJ0eXAiOiJKV1QifQ.eyJvaWQiOiIxIn0.c2ln"


class FakeDaemon:
    """A listener on the daemon's own socket path for a config that answers each request with ``reply`` bytes and
    records the requests it got. It stands in for the daemon's IPC server, which tests/unit/test_daemon.py and the
    e2e tests run for real; here only the hand-off's reading of an answer is under test."""

    def __init__(self, path: Path, reply: bytes) -> None:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.requests: list[dict[str, object]] = []
        self.reply = reply
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.bind(str(path))
        self.sock.listen(4)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                while not data.endswith(b"\n"):
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                self.requests.append(json.loads(data))
                conn.sendall(self.reply)

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.thread.join(5)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return tmp_path / "config.toml"


@pytest.fixture
def daemon(config: Path) -> Iterator[Callable[[bytes], FakeDaemon]]:
    started: list[FakeDaemon] = []

    def start(reply: bytes) -> FakeDaemon:
        d = FakeDaemon(paths.socket_path(config), reply)
        started.append(d)
        return d

    yield start
    for d in started:
        d.close()


class Out:
    """What the hand-off wrote to stdout so far."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys, self.text = capsys, ""

    def getvalue(self) -> str:
        self.text += self.capsys.readouterr().out
        return self.text


@pytest.fixture
def stdout(capsys: pytest.CaptureFixture[str]) -> Out:
    return Out(capsys)


def ok(token: str) -> bytes:
    return (json.dumps({"ok": True, "result": {"token": token, "expires_on": 2e9, "target": {}}}) + "\n").encode()


@pytest.mark.parametrize(
    "args",
    [
        ["--host", "h.example"],  # the connection form without --user: the full command's usage error
        ["prod", "--host", "h.example", "--user", "u"],  # both forms at once
        ["--host", "a", "--host", "b", "--user", "u"],  # a flag given twice
        ["--user"],  # a flag without its value
        ["prod", "extra"],  # two targets
        ["--debug"],
        ["-h"],
        ["prod", "--json"],
    ],
)
def test_anything_but_a_target_and_config_goes_to_the_full_command(
    args: list[str], config: Path, daemon, stdout: Out
) -> None:
    d = daemon(ok(TOKEN))
    assert handoff.token([*args, "--config", str(config)]) is None
    assert d.requests == [] and stdout.getvalue() == ""


@pytest.mark.parametrize("form", ["separate", "equals"])
@pytest.mark.parametrize("target", [None, "prod", 'we"ird \\ target ✓'])
def test_a_target_and_a_config_are_asked_of_the_daemon(
    config: Path, daemon, stdout: Out, form: str, target: str | None
) -> None:
    d = daemon(ok(TOKEN))
    cfg = ["--config", str(config)] if form == "separate" else [f"--config={config}"]
    assert handoff.token([*([target] if target else []), *cfg]) == 0
    assert stdout.getvalue() == TOKEN + "\n"
    assert d.requests == [{"op": "token", "target": target}]


def test_the_default_config_is_found_through_tokend_config(
    config: Path, daemon, stdout: Out, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOKEND_CONFIG", str(config))
    daemon(ok(TOKEN))
    assert handoff.token([]) == 0 and stdout.getvalue() == TOKEN + "\n"


@pytest.mark.parametrize(
    "reply",
    [
        b'{"ok": false, "error": "no target named prod", "exit_code": 2}\n',  # the full command words the error
        b"not json\n",
        b'{"ok": true}\n',
        b'{"ok": true, "result": []}\n',
        b"",  # closed without an answer
    ],
)
def test_an_answer_that_is_not_a_token_goes_to_the_full_command(
    reply: bytes, config: Path, daemon, stdout: Out
) -> None:
    daemon(reply)
    assert handoff.token(["prod", "--config", str(config)]) is None
    assert stdout.getvalue() == ""


def test_no_daemon_goes_to_the_full_command(config: Path, stdout: Out) -> None:
    assert not paths.socket_path(config).exists()
    assert handoff.token(["--config", str(config)]) is None and stdout.getvalue() == ""


def test_a_runtime_folder_that_is_not_private_is_not_trusted(config: Path, daemon, stdout: Out) -> None:
    daemon(ok(TOKEN))
    runtime = Path(os.environ["XDG_RUNTIME_DIR"])
    runtime.chmod(0o755)
    try:
        assert handoff.token(["--config", str(config)]) is None
    finally:
        runtime.chmod(0o700)
    assert stdout.getvalue() == ""


@pytest.mark.parametrize(
    ("args", "asked"),
    [
        (["--host", "h.example", "--user", '"DBA Group"'], {"host": "h.example", "user": '"DBA Group"'}),
        (
            ["--host=h", "--port=6432", "--user=u ✓", "--database", "appdb"],
            {"host": "h", "port": "6432", "user": "u ✓", "database": "appdb"},
        ),
    ],
)
def test_the_connection_form_is_asked_of_the_daemon(
    args: list[str], asked: dict[str, str], config: Path, daemon, stdout: Out
) -> None:
    d = daemon(ok(TOKEN))
    assert handoff.token([*args, "--config", str(config)]) == 0
    assert stdout.getvalue() == TOKEN + "\n"
    assert d.requests == [
        {"op": "token-by-connection", "host": None, "port": None, "user": None, "database": None, **asked}
    ]


@pytest.mark.parametrize("tmpdir", ["unset", "set", "relative", "missing"])
@pytest.mark.parametrize("xdg", ["private", "unset", "empty", "0755", "symlink", "relative", "another user's"])
def test_the_runtime_folder_is_the_daemons_with_or_without_xdg_runtime_dir(
    xdg: str, tmpdir: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = Path(os.environ["XDG_RUNTIME_DIR"])
    if xdg == "unset":
        monkeypatch.delenv("XDG_RUNTIME_DIR")
    elif xdg == "empty":
        monkeypatch.setenv("XDG_RUNTIME_DIR", "")
    elif xdg == "0755":
        runtime.chmod(0o755)
    elif xdg == "symlink":
        (tmp_path / "link").symlink_to(runtime)
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "link"))
    elif xdg == "relative":
        monkeypatch.setenv("XDG_RUNTIME_DIR", "run")
    elif xdg == "another user's":
        os.chown(runtime, 12345, 12345) if os.geteuid() == 0 else pytest.skip("needs root to give a folder away")
    temp = tmp_path / "t"
    temp.mkdir()
    monkeypatch.chdir(tmp_path)
    (tmp_path / "rel").mkdir()
    for var in ("TEMP", "TMP"):
        monkeypatch.delenv(var, raising=False)
    if tmpdir == "unset":
        monkeypatch.delenv("TMPDIR", raising=False)
    else:
        monkeypatch.setenv("TMPDIR", {"set": str(temp), "relative": "rel", "missing": str(tmp_path / "no")}[tmpdir])
    monkeypatch.setattr(tempfile, "tempdir", None)  # gettempdir caches its first answer per process
    try:
        expected = paths.private_dir(paths.runtime_dir())  # as the daemon makes it before it listens
        assert handoff.runtime_dir() == str(expected)
    finally:
        runtime.chmod(0o700)
        if os.geteuid() == 0:
            os.chown(runtime, 0, 0)


@pytest.mark.skipif(not hasattr(os, "geteuid"), reason="Unix folders")
def test_a_run_user_folder_is_taken_only_when_private_below_safe_parents(tmp_path: Path) -> None:
    """/run/user/UID's checks, on folders of the test's (the real one is not the test's to make)."""
    run = tmp_path / "run" / "user" / "0"
    run.mkdir(parents=True, mode=0o700)
    run.chmod(0o700)
    for folder in (tmp_path / "run", tmp_path / "run" / "user"):
        folder.chmod(0o755)
    assert handoff._private(str(run)) and handoff._safe_parents(str(run)) == handoff._safe_parents(str(tmp_path))
    (tmp_path / "run" / "user").chmod(0o777)  # anyone could swap UID's folder: not trusted
    assert not handoff._safe_parents(str(run))
    (tmp_path / "run" / "user").chmod(0o1777)  # sticky, as /tmp: trusted again
    assert handoff._safe_parents(str(run)) == handoff._safe_parents(str(tmp_path))
    run.chmod(0o750)
    assert not handoff._private(str(run))

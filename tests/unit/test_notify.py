"""Desktop notifications: which tool is asked, with the texts as separate arguments (never through a shell), and no
tool, or a broken one, is a log line and False, not an error."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from tokend import notify, system


def tool(folder: Path, name: str, content: bytes = b"#!/bin/sh\nexit 0\n") -> Path:
    """An executable named ``name`` in ``folder`` (what shutil.which looks for on PATH)."""
    folder.mkdir(exist_ok=True)
    p = folder / name
    p.write_bytes(content)
    p.chmod(0o700)
    return p


def test_on_linux_notify_send_gets_title_and_message_as_their_own_arguments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tool(tmp_path / "bin", "notify-send")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    title, message = "tokend: sign in again", "identity me: run `tokend login me`; $(rm -rf ~) stays text"
    assert notify._command(title, message) == [
        "notify-send",
        "--app-name=tokend",
        "--urgency=critical",
        title,
        message,
    ]


def test_no_notifier_is_a_log_line_and_false(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert notify._command("t", "m") is None
    with caplog.at_level(logging.INFO, "tokend.notify"):
        assert notify.notify("tokend: sign in again", "identity me") is False
    assert "no desktop notifier here; tokend: sign in again: identity me" in caplog.text


def test_a_broken_notifier_is_a_warning_and_false(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    tool(tmp_path / "bin", "notify-send", b"\x7fELF not really")  # executable bit, but not a program: exec fails
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    with caplog.at_level(logging.WARNING, "tokend.notify"):
        assert notify.notify("t", "m") is False
    assert "desktop notification failed" in caplog.text


@pytest.mark.parametrize(
    ("text", "quoted"),
    [
        ("plain", '"plain"'),
        ('say "hi"', '"say \\"hi\\""'),
        ("C:\\path", '"C:\\\\path"'),
        ('\\" end', '"\\\\\\" end"'),
    ],
)
def test_applescript_strings_escape_backslash_then_quote(text: str, quoted: str) -> None:
    assert notify._applescript(text) == quoted


@pytest.mark.parametrize(
    ("text", "quoted"),
    [("plain", "'plain'"), ("it's", "'it''s'"), ("''", "''''''"), ("$env:USERNAME", "'$env:USERNAME'")],
)
def test_powershell_strings_are_single_quoted_literals(text: str, quoted: str) -> None:
    assert notify._ps(text) == quoted


def test_on_macos_osascript_gets_one_script_with_quoted_texts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # osascript exists only on macOS: the platform flag is the one thing set here, the rest runs as it would there
    monkeypatch.setattr(system, "MACOS", True)
    tool(tmp_path / "bin", "osascript")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    cmd = notify._command('sign "in"', "run `tokend login`")
    assert cmd == ["osascript", "-e", 'display notification "run `tokend login`" with title "sign \\"in\\""']


pytestmark = pytest.mark.portable


def only(tool: str | None) -> Callable[[str], str | None]:
    """A ``shutil.which`` that finds ``tool`` alone."""
    return lambda name: f"/usr/bin/{name}" if name == tool else None


def test_linux_uses_notify_send(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(system, "MACOS", False)
    monkeypatch.setattr(system, "WINDOWS", False)
    monkeypatch.setattr(notify.shutil, "which", only("notify-send"))
    assert notify._command("tokend: sign-in needed for me", "run tokend login") == [
        "notify-send",
        "--app-name=tokend",
        "--urgency=critical",
        "tokend: sign-in needed for me",
        "run tokend login",
    ]


def test_macos_quotes_for_applescript(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(system, "MACOS", True)
    monkeypatch.setattr(notify.shutil, "which", only("osascript"))
    cmd = notify._command('say "hi"', "back\\slash")
    assert cmd == ["osascript", "-e", 'display notification "back\\\\slash" with title "say \\"hi\\""']


def test_windows_quotes_for_powershell(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(system, "MACOS", False)
    monkeypatch.setattr(system, "WINDOWS", True)
    monkeypatch.setattr(notify.shutil, "which", only("powershell"))
    cmd = notify._command("it's", "x")
    assert cmd is not None and cmd[0] == "powershell" and "'it''s'" in cmd[-1]


def test_no_tool_is_no_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(system, "MACOS", False)
    monkeypatch.setattr(system, "WINDOWS", False)
    monkeypatch.setattr(notify.shutil, "which", only(None))
    assert notify.notify("t", "m") is False

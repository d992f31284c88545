"""The desktop notification's command on each OS, built with the tools it finds (none: logged, not an error)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tokend import notify, system

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

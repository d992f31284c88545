"""One desktop notification, through whichever tool this machine has: notify-send (Linux), osascript (macOS) or a
PowerShell balloon (Windows). None available is not an error. Texts carry no secrets."""

from __future__ import annotations

import logging
import shutil
import subprocess

from tokend import system

log = logging.getLogger("tokend.notify")


def _command(title: str, message: str) -> list[str] | None:
    if system.MACOS and shutil.which("osascript"):
        script = f"display notification {_applescript(message)} with title {_applescript(title)}"
        return ["osascript", "-e", script]
    if system.WINDOWS and shutil.which("powershell"):  # pragma: no cover
        ps = (
            "Add-Type -AssemblyName System.Windows.Forms; $n = New-Object System.Windows.Forms.NotifyIcon; "
            "$n.Icon = [System.Drawing.SystemIcons]::Information; $n.Visible = $true; "
            f"$n.ShowBalloonTip(10000, {_ps(title)}, {_ps(message)}, 'Warning'); Start-Sleep 10; $n.Dispose()"
        )
        return ["powershell", "-NoProfile", "-WindowStyle", "Hidden", "-Command", ps]
    if shutil.which("notify-send"):
        return ["notify-send", "--app-name=tokend", "--urgency=critical", title, message]
    return None


def notify(title: str, message: str) -> bool:
    """Show the notification; True when a tool took it."""
    cmd = _command(title, message)
    if cmd is None:
        log.info("no desktop notifier here; %s: %s", title, message)
        return False
    try:
        subprocess.run(cmd, timeout=15, capture_output=True, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        log.warning("desktop notification failed: %s", e)
        return False
    return True


def _applescript(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _ps(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"

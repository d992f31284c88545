"""Shell completion: run for real in bash and fish, syntax-checked in zsh; PowerShell cannot run here."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from support.product import TOKEND, tokend


def shell_or_skip(name: str) -> str:
    found = shutil.which(name)
    if not found:
        pytest.skip(f"{name} not installed (tests/run.sh installs it)")
    return found


def test_bash_completes_commands_actions_and_targets(tmp_path: Path, monkeypatch) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        '[identities.me]\nsource = "azure-cli"\n[targets.prod]\nhost = "h"\nuser = "u"\n'
        '[targets.staging]\nhost = "h2"\nuser = "u"\n'
    )
    monkeypatch.setenv("TOKEND_CONFIG", str(cfg))
    monkeypatch.setenv("PATH", f"{Path(TOKEND).parent}:/usr/bin:/bin")
    script = tokend("completion", "bash").stdout

    def complete(*words: str) -> list[str]:
        probe = (
            f"{script}\nCOMP_WORDS=({' '.join(repr(w) for w in words)}); COMP_CWORD={len(words) - 1}; "
            '_tokend; printf "%s\\n" "${COMPREPLY[@]}"'
        )
        return subprocess.run(["bash", "-c", probe], capture_output=True, text=True).stdout.split()

    assert complete("tokend", "to") == ["token"]
    assert set(complete("tokend", "service", "")) >= {"install", "uninstall", "status", "logs"}
    assert complete("tokend", "token", "st") == ["staging"]
    assert "--json" in complete("tokend", "doctor", "--")


def test_zsh_and_fish_scripts(tmp_path: Path) -> None:
    zsh, fish = shell_or_skip("zsh"), shell_or_skip("fish")
    z = tmp_path / "tokend.zsh"
    z.write_text(tokend("completion", "zsh").stdout)
    assert subprocess.run([zsh, "-n", str(z)]).returncode == 0
    f = tmp_path / "tokend.fish"
    f.write_text(tokend("completion", "fish").stdout)
    assert subprocess.run([fish, "-n", str(f)]).returncode == 0
    out = subprocess.run([fish, "-c", f"source {f}; complete -C 'tokend sta'"], capture_output=True, text=True)
    assert out.stdout.split() == ["status"]


def test_powershell_script_names_every_command() -> None:
    script = tokend("completion", "powershell").stdout
    assert "Register-ArgumentCompleter -Native -CommandName tokend" in script
    for cmd in ("run", "status", "token", "exec", "doctor", "init", "service"):
        assert f"'{cmd}' = @(" in script

"""Shell completion scripts generated in-process from the parser cli.py builds from its command table (the shells
themselves run them in tests/e2e/test_completion.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tokend import cli, completion

pytestmark = pytest.mark.portable

TARGETS = [c.name for c in cli.COMMANDS if c.targets]


def script(shell: str, config: Path = Path("/nowhere.toml")) -> str:
    return completion.script(shell, cli.parser(), TARGETS, config)


def test_the_commands_that_take_target_names_come_from_the_table() -> None:
    assert TARGETS == ["token", "exec", "clients"]
    assert "        token|exec|clients) opts=" in script("bash")
    assert "__fish_seen_subcommand_from token exec clients' -a '(tokend completion targets" in script("fish")
    assert "if ('token', 'exec', 'clients' -split ', ' -contains $words[1])" in script("powershell")


@pytest.mark.parametrize("shell", cli.SHELLS)
def test_every_command_of_the_table_is_in_every_script(shell: str) -> None:
    text = script(shell)
    for c in cli.COMMANDS:
        assert c.name in text, (shell, c.name)


def test_each_command_offers_its_options_and_actions() -> None:
    words = completion._commands(cli.parser())
    assert list(words) == [c.name for c in cli.COMMANDS]
    assert words["service"][:4] == ["install", "uninstall", "status", "logs"]
    assert words["admin"][:3] == ["add-group", "check", "list"]
    assert {"--json", "--login", "--config", "--debug"} <= set(words["doctor"])
    assert words["completion"][:5] == [*cli.SHELLS, "targets"]
    assert "vscode" in words["clients"] and "remove" in words["clients"]


def test_zsh_is_bash_behind_bashcompinit() -> None:
    assert script("zsh").splitlines()[1] == "autoload -U +X bashcompinit && bashcompinit"
    assert script("zsh").split("\n", 2)[2] == script("bash").split("\n", 1)[1]


def test_targets_are_the_configs_names_and_nothing_for_a_missing_or_broken_config(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        '[identities.me]\nsource = "azure-cli"\n'
        '[targets.b]\nhost = "h"\nuser = "u"\n'
        '[targets.a]\nhost = "h"\nuser = "v"\n'
    )
    assert script("targets", cfg) == "b\na\n"
    assert script("targets", tmp_path / "missing.toml") == ""
    cfg.write_text("[targets\n")
    assert script("targets", cfg) == ""

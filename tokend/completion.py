"""Shell completion scripts for bash, zsh, fish and PowerShell, generated from the argument parser that
``tokend.cli`` builds from its command table, so they never drift from the commands. Target names complete too
(``tokend completion targets`` lists them)."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path

from tokend import config
from tokend.errors import TokendError


def _commands(parser: argparse.ArgumentParser) -> dict[str, list[str]]:
    """Each command → its options (and its sub-actions, for `service`)."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    out: dict[str, list[str]] = {}
    for name, p in sub.choices.items():
        words = [s for a in p._actions for s in a.option_strings if s.startswith("--")]
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                words = list(a.choices) + words
            elif a.choices and not a.option_strings:
                words = [str(c) for c in a.choices] + words
        out[name] = sorted(set(words), key=words.index)
    return out


def bash(parser: argparse.ArgumentParser, targets: Sequence[str]) -> str:
    cmds = _commands(parser)
    cases = "\n".join(f'        {name}) opts="{" ".join(opts)}" ;;' for name, opts in cmds.items())
    return f"""# tokend completion for bash: source <(tokend completion bash)
_tokend() {{
    local cur=${{COMP_WORDS[COMP_CWORD]}} cmd=${{COMP_WORDS[1]}} opts
    if [ "$COMP_CWORD" -eq 1 ]; then
        COMPREPLY=($(compgen -W "{" ".join(cmds)}" -- "$cur"))
        return
    fi
    case "$cmd" in
{cases}
    esac
    case "$cmd" in
        {"|".join(targets)}) opts="$opts $(tokend completion targets 2>/dev/null)" ;;
    esac
    if [ "${{COMP_WORDS[COMP_CWORD-1]}}" = "--config" ] || [ "${{COMP_WORDS[COMP_CWORD-1]}}" = "--output" ]; then
        COMPREPLY=($(compgen -f -- "$cur"))
        return
    fi
    COMPREPLY=($(compgen -W "$opts" -- "$cur"))
}}
complete -F _tokend tokend
"""


def zsh(parser: argparse.ArgumentParser, targets: Sequence[str]) -> str:
    return (
        "# tokend completion for zsh: source <(tokend completion zsh)\n"
        "autoload -U +X bashcompinit && bashcompinit\n" + bash(parser, targets).split("\n", 1)[1]
    )


def fish(parser: argparse.ArgumentParser, targets: Sequence[str]) -> str:
    cmds = _commands(parser)
    lines = [
        "# tokend completion for fish: tokend completion fish | source",
        "complete -c tokend -f",
        f"complete -c tokend -n __fish_use_subcommand -a '{' '.join(cmds)}'",
    ]
    for name, opts in cmds.items():
        for o in opts:
            if o.startswith("--"):
                needs = " -r" if o in ("--config", "--output") else ""
                lines.append(f"complete -c tokend -n '__fish_seen_subcommand_from {name}' -l {o[2:]}{needs}")
            else:
                lines.append(f"complete -c tokend -n '__fish_seen_subcommand_from {name}' -a {o}")
    lines.append(
        f"complete -c tokend -n '__fish_seen_subcommand_from {' '.join(targets)}' "
        "-a '(tokend completion targets 2>/dev/null)'"
    )
    return "\n".join(lines) + "\n"


def powershell(parser: argparse.ArgumentParser, targets: Sequence[str]) -> str:
    cmds = _commands(parser)
    table = "\n".join(f"    '{n}' = @({', '.join(repr(o) for o in opts)})" for n, opts in cmds.items())
    return f"""# tokend completion for PowerShell: tokend completion powershell | Out-String | Invoke-Expression
$tokendOptions = @{{
{table}
}}
Register-ArgumentCompleter -Native -CommandName tokend -ScriptBlock {{
    param($wordToComplete, $commandAst, $cursorPosition)
    $words = $commandAst.CommandElements | ForEach-Object {{ $_.ToString() }}
    if ($words.Count -le 1 -or ($words.Count -eq 2 -and $wordToComplete)) {{
        $candidates = $tokendOptions.Keys
    }} else {{
        $candidates = $tokendOptions[$words[1]]
        if ('{"', '".join(targets)}' -split ', ' -contains $words[1]) {{
            $candidates += @(tokend completion targets 2>$null)
        }}
    }}
    $candidates | Where-Object {{ $_ -like "$wordToComplete*" }} | ForEach-Object {{
        [System.Management.Automation.CompletionResult]::new($_, $_, 'ParameterValue', $_)
    }}
}}
"""


SHELLS: dict[str, Callable[[argparse.ArgumentParser, Sequence[str]], str]] = {
    "bash": bash,
    "zsh": zsh,
    "fish": fish,
    "powershell": powershell,
}


def script(shell: str, parser: argparse.ArgumentParser, targets: Sequence[str], config_path: Path) -> str:
    """The completion script for ``shell`` (``targets``: the commands whose arguments are target names), or for
    ``targets`` the configured target names (read from the config's names only: it works without any identity's
    secret; no config, or a broken one, offers nothing)."""
    if shell != "targets":
        return SHELLS[shell](parser, targets)
    try:
        return "".join(f"{name}\n" for name in config.load(config_path).targets)
    except TokendError:
        return ""

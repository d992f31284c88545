"""The daemon's environment file in-process: systemd's KEY=value subset, the owner and mode rules, and what a
reload puts back."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tokend import envfile
from tokend.errors import ConfigError

WHERE = Path("/cfg/tokend.env")


def test_the_systemd_subset_is_read() -> None:
    text = (
        '# comment\n; also a comment\n\nA=1\n  B = two words  \nC=\'single $X \\n\'\nD="dq \\"q\\" \\\\ \\n"\n'
        "E=\nA=again\nURL=https://proxy.example:3128/?a=b\n"
    )
    assert envfile.parse(text, WHERE) == {
        "A": "again",  # a later line wins, as in systemd
        "B": "two words",
        "C": "single $X \\n",
        "D": 'dq "q" \\ \n',
        "E": "",
        "URL": "https://proxy.example:3128/?a=b",
    }


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("JUST_A_NAME", "not KEY=value"),
        ("export A=1", "drop `export`"),
        ("1A=1", "the name must be"),
        ("A-B=1", "the name must be"),
        ("A=one \\", "backslash"),
        ("A='open", "not closed"),
        ('A="a"b"', "unescaped"),
    ],
)
def test_a_bad_line_is_refused_by_number_without_its_value(line: str, says: str) -> None:
    with pytest.raises(ConfigError) as e:
        envfile.parse(f"OK=1\n{line}\n", WHERE)
    assert "line 2" in str(e.value) and says in str(e.value)


def test_the_file_must_be_private(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    env = envfile.path_for(cfg)
    assert env == tmp_path / "tokend.env"
    assert envfile.read(env) == {}  # no file: nothing to add
    env.write_text("S=secret-value\n")
    env.chmod(0o644)
    with pytest.raises(ConfigError) as e:
        envfile.read(env)
    assert "chmod 600" in str(e.value) and "secret-value" not in str(e.value)
    env.chmod(0o600)
    assert envfile.read(env) == {"S": "secret-value"}
    os.link(env, tmp_path / "second-name")
    with pytest.raises(ConfigError, match="hard links"):
        envfile.read(env)


def test_values_win_and_a_removed_key_gets_its_inherited_value_back(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    env = envfile.path_for(cfg)
    env.write_text("KEEP=file\nNEW=file\n")
    env.chmod(0o600)
    environ = {"KEEP": "inherited", "OTHER": "x"}
    first = envfile.apply(cfg, environ)
    assert environ == {"KEEP": "file", "NEW": "file", "OTHER": "x"} and first.names == ["KEEP", "NEW"]
    env.write_text("NEW=changed\n")
    second = envfile.apply(cfg, environ, previous=first)
    assert environ == {"KEEP": "inherited", "NEW": "changed", "OTHER": "x"} and second.names == ["NEW"]
    env.write_text("")
    envfile.apply(cfg, environ, previous=second)
    assert environ == {"KEEP": "inherited", "OTHER": "x"}
    env.write_text("BAD LINE\n")
    with pytest.raises(ConfigError):
        envfile.apply(cfg, environ)
    assert environ == {"KEEP": "inherited", "OTHER": "x"}  # a refused file changes nothing

"""The hand-off (`tokend token` answered without site or heavy imports): it finds the daemon exactly where the daemon
listens, behaves exactly like the full command, and takes the full path whenever it is not sure."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tokend import handoff, paths
from tokend.emulator.postgres import Postgres

from support.builders import GROUP, sp_config
from support.product import PRODUCT_PYTHON, TOKEND, tokend
from support.tenant import Tenant

ENVS = [
    {},
    {"XDG_CONFIG_HOME": "/somewhere/else"},
    {"XDG_CONFIG_HOME": "relative/path"},
    {"XDG_CONFIG_HOME": ""},
    {"TOKEND_CONFIG": "~/my tokend.toml"},
    {"TOKEND_CONFIG": "relative.toml"},
]


@pytest.mark.parametrize("env", ENVS)
def test_default_config_is_the_one_platformdirs_names(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert handoff.default_config_file() is not None
    fast = handoff.config_id(handoff.default_config_file() or "")
    assert fast == paths.config_id(paths.default_config_path())


def test_the_socket_is_where_the_daemon_listens(home: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "a b" / ".." / "c.toml"
    runtime = Path(os.environ["XDG_RUNTIME_DIR"])
    assert handoff.socket_file(handoff.xdg_runtime_dir() or "", str(config)) == str(paths.socket_path(config))
    # a runtime folder that is not private, or missing: the hand-off does not guess (the full command decides)
    runtime.chmod(0o755)
    assert handoff.xdg_runtime_dir() is None
    runtime.chmod(0o700)
    link = tmp_path / "link"
    link.symlink_to(runtime)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(link))
    assert handoff.xdg_runtime_dir() is None
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    assert handoff.xdg_runtime_dir() is None


def launcher_imports(*args: str) -> set[str]:
    """The modules the launcher's Python imports for ``args`` (its shell part bypassed: Python started as it
    would start it, plus -X importtime)."""
    r = subprocess.run([PRODUCT_PYTHON, "-X", "importtime", "-S", TOKEND, *args], capture_output=True, text=True)
    return {line.split("|")[-1].strip() for line in r.stderr.splitlines() if line.startswith("import time:")}


def test_token_answers_exactly_like_the_full_command(em: Tenant, postgres: Postgres, write_config, daemon) -> None:
    cfg = write_config(
        sp_config(em, postgres.port) + '[targets.two]\nhost = "b.example"\nuser = "u"\nidentity = "sp"\n'
    )
    # the full command with the hand-off switched off
    full = [
        PRODUCT_PYTHON,
        "-c",
        "import sys, tokend.handoff as h; h.token = lambda args: None; "
        "from tokend.cli import main; sys.exit(main(sys.argv[1:]))",
    ]
    no_daemon = ["token", "nope", "--config", str(cfg)]
    fast, slow = tokend(*no_daemon), subprocess.run([*full, *no_daemon], capture_output=True, text=True)
    assert (fast.returncode, fast.stderr) == (slow.returncode, slow.stderr) and fast.returncode == 2
    d = daemon(cfg)
    d.wait_ready()
    for args in (
        ["token", "db", "--config", str(cfg)],
        ["token", "two", f"--config={cfg}"],
        ["token", "nope", "--config", str(cfg)],
        ["token", "--config", str(cfg)],
    ):
        fast = tokend(*args)
        slow = subprocess.run([*full, *args], capture_output=True, text=True)
        assert (fast.returncode, fast.stdout, fast.stderr) == (slow.returncode, slow.stdout, slow.stderr), args
    # and the fast answer really skipped site, the CLI and everything heavy
    imported = launcher_imports("token", "db", "--config", str(cfg))
    assert "tokend.handoff" in imported
    assert not imported & {
        "site",
        "tokend.cli",
        "argparse",
        "json",
        "socket",
        "hashlib",
        "platformdirs",
        "re",
        "azure",
        "logging",
    }, sorted(imported)


@pytest.fixture
def no_xdg_runtime_dir(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A session without XDG_RUNTIME_DIR (su -, SSH, containers), its temporary folder a short private one of the
    test's (Unix socket paths are limited to ~100 bytes; /tmp/runtime-UID is shared with whatever else runs)."""
    tmp = Path(tempfile.mkdtemp(prefix="tkt-"))
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", None)  # this process's paths too: gettempdir caches its first answer
    yield tmp
    shutil.rmtree(tmp, ignore_errors=True)


HEAVY = {"site", "tokend.cli", "argparse", "json", "socket", "hashlib", "platformdirs", "re", "azure", "logging"}


def test_the_fast_path_finds_the_daemon_without_xdg_runtime_dir_and_answers_by_connection(
    em: Tenant, postgres: Postgres, write_config, daemon, no_xdg_runtime_dir: Path
) -> None:
    cfg = write_config(
        sp_config(em, postgres.port) + '[targets.two]\nhost = "b.example"\nuser = "u"\nidentity = "sp"\n'
    )
    d = daemon(cfg)
    d.wait_ready()
    assert str(paths.socket_path(cfg)).startswith(str(no_xdg_runtime_dir / f"runtime-{os.geteuid()}" / "tokend"))
    full = [
        PRODUCT_PYTHON,
        "-c",
        "import sys, tokend.handoff as h; h.token = lambda args: None; "
        "from tokend.cli import main; sys.exit(main(sys.argv[1:]))",
    ]
    by_connection = ["token", "--host", "127.0.0.1", "--port", str(postgres.port), "--user", f'"{GROUP}"']
    for args in (
        ["token", "db", "--config", str(cfg)],
        [*by_connection, "--config", str(cfg)],
        ["token", "--host=b.example", "--user=u", "--database=x", f"--config={cfg}"],
        ["token", "--host", "nowhere.example", "--user", "u", "--config", str(cfg)],  # no match: the full one's error
    ):
        fast = tokend(*args)
        slow = subprocess.run([*full, *args], capture_output=True, text=True)
        assert (fast.returncode, fast.stdout, fast.stderr) == (slow.returncode, slow.stdout, slow.stderr), args
    for args in (["token", "db", "--config", str(cfg)], [*by_connection, "--config", str(cfg)]):
        imported = launcher_imports(*args)
        assert "tokend.handoff" in imported and not imported & HEAVY, (args, sorted(imported & HEAVY))

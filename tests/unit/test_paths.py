"""Default paths: all from platformdirs under the test's own HOME and XDG folders, one set per config, and private
folders that are made 0700, tightened, or refused."""

from __future__ import annotations

import hashlib
import logging
import os
import stat
from pathlib import Path

import pytest

from tokend import paths
from tokend.paths import UnsafeFolder

OTHER_UID = 65534  # nobody


def mode(p: Path) -> int:
    return stat.S_IMODE(os.lstat(p).st_mode)


def test_the_config_id_is_sha256_of_the_absolute_path_cut_to_12_hex_digits(tmp_path: Path, monkeypatch) -> None:
    config = tmp_path / "config.toml"
    want = hashlib.sha256(str(config).encode()).hexdigest()[:12]
    assert paths.config_id(config) == want
    monkeypatch.chdir(tmp_path)
    assert paths.config_id(Path("config.toml")) == want  # a relative name means the same file
    assert paths.config_id(tmp_path / "other.toml") != want


def test_the_default_config_is_tokend_config_else_the_xdg_config_folders(home: Path, monkeypatch) -> None:
    assert paths.default_config_path() == home / ".config" / "tokend" / "config.toml"
    monkeypatch.setenv("TOKEND_CONFIG", "~/elsewhere.toml")
    assert paths.default_config_path() == home / "elsewhere.toml"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "cfg"))
    monkeypatch.delenv("TOKEND_CONFIG")
    assert paths.default_config_path() == home / "cfg" / "tokend" / "config.toml"


def test_every_per_config_path_is_named_by_the_config_id(home: Path, tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    cid = paths.config_id(config)
    runtime = Path(os.environ["XDG_RUNTIME_DIR"]) / "tokend"
    assert paths.runtime_dir() == runtime
    assert paths.socket_path(config) == runtime / f"{cid}.sock"
    assert paths.lock_path(config) == runtime / f"{cid}.lock"
    assert paths.proxy_dir(config) == runtime / cid
    assert paths.config_state_dir(config) == home / ".local" / "state" / "tokend" / cid
    assert paths.config_data_dir(config) == home / ".local" / "share" / "tokend" / cid
    assert paths.log_file(config) == home / ".local" / "state" / "tokend" / "log" / f"tokend-{cid}.log"
    assert paths.pipe_name(config) == rf"\\.\pipe\tokend-{cid}"
    assert paths.identity_cache_name(config, "me") == f"tokend.{cid}.me"


def test_the_default_config_gets_the_plain_service_name_and_others_their_own(home: Path, tmp_path: Path) -> None:
    default = home / ".config" / "tokend" / "config.toml"
    assert paths.service_name(default) == "tokend"
    assert paths.log_file(default).name == "tokend.log"
    other = tmp_path / "c.toml"
    assert paths.service_name(other) == f"tokend-{paths.config_id(other)}"


def test_other_applications_folders_follow_xdg(home: Path) -> None:
    assert paths.app_config_dir("Code") == home / ".config" / "Code"
    assert paths.app_data_dir("DBeaverData") == home / ".local" / "share" / "DBeaverData"


def test_a_runtime_folder_that_is_not_private_is_not_used(tmp_path: Path, monkeypatch) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(shared))
    assert not paths.runtime_dir().is_relative_to(shared)


def test_a_missing_runtime_folder_is_made_private_and_used(tmp_path: Path, monkeypatch) -> None:
    base = tmp_path / "run" / "user"
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(base))
    assert paths.runtime_dir() == base / "tokend"
    assert mode(base) == 0o700


def test_private_dir_makes_every_missing_folder_0700_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        made = paths.private_dir(tmp_path / "a" / "b" / "c")
    finally:
        os.umask(old)
    assert made == tmp_path / "a" / "b" / "c"
    assert [mode(tmp_path / p) for p in ("a", "a/b", "a/b/c")] == [0o700] * 3


def test_private_dir_takes_group_and_other_access_away_and_says_so(tmp_path: Path, caplog) -> None:
    folder = tmp_path / "open"
    folder.mkdir()
    folder.chmod(0o755)
    with caplog.at_level(logging.WARNING, "tokend.paths"):
        paths.private_dir(folder)
    assert mode(folder) == 0o700
    assert "was mode 0755; made it 0700" in caplog.text


def test_private_dir_leaves_a_private_folder_as_it_is(tmp_path: Path, caplog) -> None:
    folder = tmp_path / "mine"
    folder.mkdir(mode=0o700)
    with caplog.at_level(logging.DEBUG, "tokend.paths"):
        paths.private_dir(folder)
    assert mode(folder) == 0o700 and caplog.text == ""


@pytest.mark.parametrize("kind", ["file", "symlink"])
def test_private_dir_refuses_what_is_not_a_folder(tmp_path: Path, kind: str) -> None:
    p = tmp_path / "x"
    if kind == "file":
        p.write_text("")
    else:
        (tmp_path / "real").mkdir(mode=0o700)
        p.symlink_to(tmp_path / "real")
    with pytest.raises(UnsafeFolder, match=f"is not a folder \\(a {kind}\\); move it away"):
        paths.private_dir(p)


def test_private_dir_refuses_another_users_folder_and_leaves_it_alone(tmp_path: Path) -> None:
    folder = tmp_path / "theirs"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    if os.getuid() == 0:
        os.chown(folder, OTHER_UID, OTHER_UID)
    else:
        folder = Path("/")  # root's, not this user's
    with pytest.raises(UnsafeFolder, match=r"belongs to another user \(uid \d+\)"):
        paths.private_dir(folder)
    assert mode(folder) == 0o755

"""A service principal's secret source in-process: exactly one per identity (config errors name the file, the key and
the fix), and a mounted secret file accepted as Kubernetes and Docker really make it, refused otherwise."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tokend import client_secrets
from tokend.config import parse
from tokend.errors import ConfigError, IdentityUnavailable

SP = '[identities.app]\nsource = "service-principal"\ntenant_id = "t"\nclient_id = "c"\n'
CFG = Path("/cfg/config.toml")


@pytest.mark.parametrize(
    ("keys", "env", "file", "keychain"),
    [
        ('client_secret_env = "APP_SECRET"\n', "APP_SECRET", None, False),
        ('client_secret_file = "/run/secrets/app"\n', None, Path("/run/secrets/app"), False),
        ('client_secret = "keychain"\n', None, None, True),
    ],
)
def test_each_secret_source_alone_is_taken(keys: str, env: str | None, file: Path | None, keychain: bool) -> None:
    ic = parse(SP + keys, CFG).identities["app"]
    assert (ic.client_secret_env, ic.client_secret_file, ic.client_secret_keychain) == (env, file, keychain)


@pytest.mark.parametrize(
    "keys",
    [
        "",
        'client_secret_env = "A"\nclient_secret_file = "/f"\n',
        'client_secret = "keychain"\ncertificate_path = "/c.pem"\n',
        'client_secret_env = "A"\nclient_secret = "keychain"\n',
    ],
)
def test_none_or_two_sources_is_one_config_error(keys: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse(SP + keys, CFG)
    assert e.value.exit_code == 2 and e.value.key == "identities.app"
    assert "exactly one of client_secret_env" in str(e.value) and str(CFG) in str(e.value)


def test_a_secret_itself_in_the_config_is_refused_without_repeating_it() -> None:
    with pytest.raises(ConfigError) as e:
        parse(SP + 'client_secret = "s3cr3t-value"\n', CFG)
    assert e.value.key == "identities.app.client_secret" and "tokend secret set app" in str(e.value)
    assert "s3cr3t-value" not in str(e.value)


def test_ca_bundle_must_be_a_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="ca_bundle"):
        parse(SP + f'client_secret_env = "A"\nca_bundle = "{tmp_path}/none.pem"\n', CFG)
    (tmp_path / "ca.pem").write_text("pem")
    ic = parse(SP + f'client_secret_env = "A"\nca_bundle = "{tmp_path}/ca.pem"\n', CFG).identities["app"]
    assert ic.ca_bundle == tmp_path / "ca.pem"


def kubernetes_mount(folder: Path, value: bytes, mode: int = 0o644) -> Path:
    """A secret volume as the kubelet lays it out: KEY → ..data/KEY, ..data → ..TIMESTAMP/, the file 0644."""
    stamp = folder / "..2026_12_02_01_00_00.1"
    stamp.mkdir(parents=True)
    (stamp / "app").write_bytes(value)
    (stamp / "app").chmod(mode)
    (folder / "..data").symlink_to(stamp.name)
    (folder / "app").symlink_to("..data/app")
    return folder / "app"


@pytest.mark.skipif(os.name == "nt", reason="POSIX owners and modes")
def test_a_kubernetes_style_mount_is_read_and_a_rotation_seen(tmp_path: Path) -> None:
    secret = kubernetes_mount(tmp_path / "mnt", b"first\n", 0o600)
    assert client_secrets.read_file(secret) == "first"
    new = tmp_path / "mnt" / "..2026_12_02_02_00_00.2"
    new.mkdir()
    (new / "app").write_bytes(b"second")
    (new / "app").chmod(0o600)
    (tmp_path / "mnt" / "..data-tmp").symlink_to(new.name)
    os.replace(tmp_path / "mnt" / "..data-tmp", tmp_path / "mnt" / "..data")  # the kubelet's atomic swap
    assert client_secrets.read_file(secret) == "second"


@pytest.mark.skipif(os.name == "nt", reason="POSIX owners and modes")
def test_a_secret_file_of_the_users_must_be_private_and_never_named_in_the_error(tmp_path: Path) -> None:
    secret = tmp_path / "app.secret"
    secret.write_text("do-not-show")
    secret.chmod(0o644)
    if os.getuid() == 0:  # root's own file is a root-owned mount: world-readable is how Kubernetes makes it
        assert client_secrets.read_file(secret) == "do-not-show"
        secret.chmod(0o646)
        with pytest.raises(IdentityUnavailable, match="writable by others"):
            client_secrets.read_file(secret)
    else:
        with pytest.raises(IdentityUnavailable) as e:
            client_secrets.read_file(secret)
        assert "chmod 600" in str(e.value) and "do-not-show" not in str(e.value)
    secret.chmod(0o600)
    assert client_secrets.read_file(secret) == "do-not-show"
    open_folder = tmp_path / "open"
    open_folder.mkdir()
    open_folder.chmod(0o777)
    (open_folder / "s").write_text("x")
    (open_folder / "s").chmod(0o600)
    with pytest.raises(IdentityUnavailable, match="writable by every user"):
        client_secrets.read_file(open_folder / "s")
    with pytest.raises(IdentityUnavailable, match="no such file"):
        client_secrets.read_file(tmp_path / "missing")
    (tmp_path / "empty").write_text("\n")
    (tmp_path / "empty").chmod(0o600)
    with pytest.raises(IdentityUnavailable, match="empty"):
        client_secrets.read_file(tmp_path / "empty")


def test_an_unset_variable_names_the_environment_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("UNSET_SECRET_X", raising=False)
    ic = parse(SP + 'client_secret_env = "UNSET_SECRET_X"\n', CFG).identities["app"]
    with pytest.raises(IdentityUnavailable) as e:
        client_secrets.read(ic)
    assert "UNSET_SECRET_X" in str(e.value) and "/cfg/tokend.env" in str(e.value)
    monkeypatch.setenv("UNSET_SECRET_X", "v")
    assert client_secrets.read(ic) == "v"

"""The person behind a proxy session: the application_name the proxy sends (cut to PostgreSQL's 63 bytes, the
client's part first, never inside a UTF-8 character) and its config key."""

from __future__ import annotations

import base64
import json
import os
import socket
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokend.config import DEFAULT_APPLICATION_NAME, parse
from tokend.errors import ConfigError
from tokend.proxy import peer
from tokend.proxy.audit import MAX_APPLICATION_NAME, application_name, principal_of

pytestmark = pytest.mark.portable

UPN = "alice@contoso.com"


def jwt(**claims: str) -> str:
    """A token-shaped string with these claims (unsigned: the proxy reads claims for display only)."""
    body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"eyJhbGciOiJub25lIn0.{body}.c2ln"


def test_the_principal_is_the_upn_else_the_app_id_else_the_object_id() -> None:
    assert principal_of(jwt(upn=UPN, oid="o1", appid="a1")) == (UPN, "o1")
    assert principal_of(jwt(appid="a1", oid="o1")) == ("a1", "o1")
    assert principal_of(jwt(oid="o1")) == ("o1", "o1")
    assert principal_of("not a jwt") == ("", "")


def test_the_default_names_the_client_and_the_person() -> None:
    assert application_name(DEFAULT_APPLICATION_NAME, "psql", UPN) == f"psql ({UPN} via tokend)"
    assert application_name(DEFAULT_APPLICATION_NAME, "", UPN) == f"({UPN} via tokend)"  # no client name: no space
    assert application_name("{principal}", "psql", UPN) == UPN


def test_a_long_client_name_is_cut_first_and_the_person_stays() -> None:
    name = application_name(DEFAULT_APPLICATION_NAME, "x" * 100, UPN)
    assert len(name.encode()) == MAX_APPLICATION_NAME
    assert name.endswith(f" ({UPN} via tokend)") and name.startswith("xxx")


def test_a_cut_never_splits_a_character() -> None:
    name = application_name(DEFAULT_APPLICATION_NAME, "é" * 40, UPN)  # two bytes each
    assert len(name.encode()) <= MAX_APPLICATION_NAME and name.endswith(f"({UPN} via tokend)")
    assert set(name.split(" (")[0]) == {"é"}
    alone = application_name(DEFAULT_APPLICATION_NAME, "psql", "名" * 40)  # a principal too long on its own
    assert len(alone.encode()) <= MAX_APPLICATION_NAME and alone.startswith("(名名")  # the client went first
    assert alone.encode().decode("utf-8") == alone


@given(st.text(max_size=80), st.text(max_size=80))
def test_every_name_fits_and_is_whole_utf8(client: str, principal: str) -> None:
    for fmt in (DEFAULT_APPLICATION_NAME, "{client}|{client} {principal}", "{principal}"):
        name = application_name(fmt, client, principal)
        assert len(name.encode("utf-8", "surrogatepass")) <= MAX_APPLICATION_NAME


def target(line: str) -> str:
    return f'[identities.me]\nsource = "azure-cli"\n[targets.t]\nhost = "h"\nuser = "u"\n{line}\n'


def test_the_config_key_takes_a_format_or_false() -> None:
    assert parse(target(""), Path("c.toml")).targets["t"].application_name == DEFAULT_APPLICATION_NAME
    assert parse(target("application_name = false"), Path("c.toml")).targets["t"].application_name is None
    assert parse(target("application_name = true"), Path("c.toml")).targets["t"].application_name == (
        DEFAULT_APPLICATION_NAME
    )
    fmt = "{principal}: {client} {{tokend}}"
    assert parse(target(f'application_name = "{fmt}"'), Path("c.toml")).targets["t"].application_name == fmt


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ('"{user}"', "unknown field {user}"),
        ('"{principal!r}"', "unknown field"),
        ('"{client:>10}"', "unknown field"),
        ('"{client"', "brace"),
        ('""', "expected false or a format"),
        ("3", "expected false or a format"),
    ],
)
def test_a_bad_format_is_one_clear_error(value: str, says: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse(target(f"application_name = {value}"), Path("c.toml"))
    assert "targets.t.application_name" in str(e.value) and says in str(e.value)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and sock_diag are Linux's")
def test_a_tcp_clients_process_is_found_from_its_socket() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        accepted, _ = listener.accept()
        with client, accepted:
            theirs, ours = accepted.getpeername()[:2], accepted.getsockname()[:2]
            assert peer.pid_of_socket(os.fstat(client.fileno()).st_ino, os.getuid()) == os.getpid()
            assert peer.tcp_client_pid(accepted.family, theirs, ours, os.getuid()) == os.getpid()  # found again
            assert peer.executable(os.getpid()) == os.path.realpath(sys.executable)
            other = 0 if os.getuid() else 65534  # another uid's processes are never looked in
            assert peer.pid_of_socket(os.fstat(client.fileno()).st_ino, other) is None


@pytest.mark.skipif(not hasattr(socket, "SO_PEERCRED"), reason="SO_PEERCRED is Linux's")
def test_a_unix_clients_pid_comes_with_its_credentials() -> None:
    a, b = socket.socketpair()
    with a, b:
        assert peer.unix_peer_pid(a) == os.getpid()

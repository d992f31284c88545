"""One contract every sink passes (keyring's testing/backend.py is the model; the suite is in support/contracts.py):
a subclass per sink kind says how to build one, how to read back what it holds, how to plant the user's own content
and how to make its place unusable; the tests are the same for all.
"""

from __future__ import annotations

import sys
from pathlib import Path

import keyring
import pytest
from keyring.backends import fail

from tokend.kinds import SINKS
from tokend.sinks import Sink, keychain
from tokend.sinks.pg_service import PgServiceSink
from tokend.sinks.pgbouncer import PgbouncerSink
from tokend.sinks.pgpass import PgpassSink, parse

from support.contracts import FileSinkContract, SinkContract, entry
from support.procs import sleeping_pgbouncer

pytestmark = pytest.mark.portable  # runs on Linux, macOS and Windows (.github/workflows/ci.yml)


def test_every_sink_kind_has_a_contract_test() -> None:
    assert {c.kind for c in (TestPgpass, TestPgService, TestKeychain, TestPgbouncer)} == set(SINKS)


USER_PGPASS = b"# mine\r\nlegacy.example:5432:*:bob:hunter2\r\n"


class TestPgpass(FileSinkContract):
    kind = "pgpass"

    def make(self, tmp_path: Path, owner: str = "owner1") -> Sink:
        return PgpassSink({"path": str(tmp_path / "pgpass")}, owner)

    def held(self, sink: Sink) -> dict[str, str]:
        path = Path(sink.location())
        lines = parse(path.read_text()) if path.exists() else []
        return {("a" if ln[0] == "h.example" else "b"): ln[4] for ln in lines if ln[3] == "DBA Group"}

    def plant_user_content(self, sink: Sink) -> None:
        Path(sink.location()).write_bytes(USER_PGPASS)

    def user_content_intact(self, sink: Sink) -> bool:
        return Path(sink.location()).read_bytes().endswith(USER_PGPASS)

    def make_unusable(self, tmp_path: Path) -> Sink:
        (tmp_path / "file").write_text("x")
        return PgpassSink({"path": str(tmp_path / "file" / "pgpass")}, "owner1")


class TestPgService(FileSinkContract):
    kind = "pg_service"
    holds_tokens = False

    def make(self, tmp_path: Path, owner: str = "owner1") -> Sink:
        return PgServiceSink({"path": str(tmp_path / "pg_service.conf")}, owner)

    def held(self, sink: Sink) -> dict[str, str]:
        path = Path(sink.location())
        text = path.read_text() if path.exists() else ""
        assert "tok-" not in text  # a token never goes into the service file
        return {name: "section" for name in ("a", "b") if f"[{name}]" in text}

    def expect(self, value: str) -> str:
        return "section"

    def plant_user_content(self, sink: Sink) -> None:
        Path(sink.location()).write_text("[legacy]\nhost=old.example\n")

    def user_content_intact(self, sink: Sink) -> bool:
        return Path(sink.location()).read_text().endswith("[legacy]\nhost=old.example\n")

    def make_unusable(self, tmp_path: Path) -> Sink:
        return PgServiceSink({"path": str(tmp_path / "missing" / "pg_service.conf")}, "owner1")


class TestKeychain(SinkContract):
    """The OS's own store, through keyring: on Linux the real Secret Service (gnome-keyring on a private bus); on
    Windows Credential Manager (its 2560-byte limit: long tokens go in chunks) and on macOS the login Keychain, in
    the CI matrix."""

    kind = "keychain"

    @pytest.fixture(autouse=True)
    def _store(self, request: pytest.FixtureRequest) -> None:
        if sys.platform.startswith("linux") and request.node.name != "test_an_unusable_place_is_reported_with_a_fix":
            request.getfixturevalue("secret_service")

    def make(self, tmp_path: Path, owner: str = "owner1") -> Sink:
        if sys.platform.startswith("linux"):
            from keyring.backends.SecretService import Keyring  # Linux only: the Secret Service backend

            self.kr = Keyring()
        else:
            self.kr = keyring.get_keyring()
        return keychain.KeychainSink({}, owner, kr=self.kr)

    def test_a_token_longer_than_windows_holds_round_trips(self, tmp_path: Path) -> None:
        sink = self.make(tmp_path)
        sink.sync([entry("a", "eyJ" + "x" * 4000)])
        assert keychain.read("a", self.kr) == "eyJ" + "x" * 4000
        sink.sync([])
        assert keychain.read("a", self.kr) is None

    def held(self, sink: Sink) -> dict[str, str]:
        return {n: v for n in ("a", "b") if (v := keychain.read(n, self.kr)) is not None}

    def plant_user_content(self, sink: Sink) -> None:
        self.kr.set_password("tokend", "someone-else", "theirs")

    def user_content_intact(self, sink: Sink) -> bool:
        return keychain.read("someone-else", self.kr) == "theirs"

    def make_unusable(self, tmp_path: Path) -> Sink:
        return keychain.KeychainSink({}, "owner1", kr=fail.Keyring())


class TestPgbouncer(FileSinkContract):
    """The include file is wholly tokend's; PgBouncer's own config beside it is the user's. The "PgBouncer" here is
    ``support.procs.sleeping_pgbouncer``: the real one runs in test_cluster.py."""

    kind = "pgbouncer"

    @pytest.fixture(autouse=True)
    def _bouncer(self, tmp_path: Path):
        if sys.platform == "win32":
            pytest.skip("PgBouncer's RELOAD is a POSIX signal")
        with sleeping_pgbouncer(tmp_path):
            yield

    def make(self, tmp_path: Path, owner: str = "owner1") -> Sink:
        return PgbouncerSink({"path": str(tmp_path / "tokend.ini"), "pidfile": str(tmp_path / "pgbouncer.pid")}, owner)

    def held(self, sink: Sink) -> dict[str, str]:
        path = Path(sink.location())
        lines = path.read_text().splitlines() if path.exists() else []
        return {ln.split(" = ")[0]: ln.rsplit("password=", 1)[1] for ln in lines if " = " in ln}

    def plant_user_content(self, sink: Sink) -> None:
        (Path(sink.location()).parent / "pgbouncer.ini").write_text("[pgbouncer]\n%include tokend.ini\n")

    def user_content_intact(self, sink: Sink) -> bool:
        return (Path(sink.location()).parent / "pgbouncer.ini").read_text() == "[pgbouncer]\n%include tokend.ini\n"

    def make_unusable(self, tmp_path: Path) -> Sink:
        return PgbouncerSink({"path": str(tmp_path / "tokend.ini")}, "owner1")  # no pidfile: nobody to tell

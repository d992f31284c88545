"""The contract suites every plug-in of a kind passes (keyring's testing/backend.py is the model): a base class of
tests here, one subclass per plug-in in the test files, which says only how to build it and how to look at what it
wrote. Sinks: sync adds, replaces and removes; the user's own content is kept; an unusable place is reported with a
fix, and diagnosed. Clients: install then remove gives the exact bytes and mode back; install twice is idempotent;
the user's own entries survive.
"""

from __future__ import annotations

import functools
import importlib
import os
import stat
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import pytest

from tokend import clients, kinds
from tokend.errors import SinkError
from tokend.sinks import Sink

from support import builders

entry = functools.partial(builders.entry, database="appdb")  # the PgBouncer sink needs one database


class SinkContract(ABC):
    holds_tokens = True  # False: the place never holds a token (pg_service), so there is nothing to read back

    @abstractmethod
    def make(self, tmp_path: Path, owner: str = "owner1") -> Sink: ...

    @abstractmethod
    def held(self, sink: Sink) -> dict[str, str]:
        """Target name → what the place holds for it (the token, or a marker where the token never goes)."""

    @abstractmethod
    def plant_user_content(self, sink: Sink) -> None: ...

    @abstractmethod
    def user_content_intact(self, sink: Sink) -> bool: ...

    @abstractmethod
    def make_unusable(self, tmp_path: Path) -> Sink: ...

    def expect(self, value: str) -> str:
        return value

    def test_sync_adds_replaces_and_removes(self, tmp_path: Path) -> None:
        sink = self.make(tmp_path)
        sink.sync([entry("a", "tok-1"), entry("b", "tok-2", "b.example")])
        assert self.held(sink) == {"a": self.expect("tok-1"), "b": self.expect("tok-2")}
        sink.sync([entry("a", "tok-3")])
        assert self.held(sink) == {"a": self.expect("tok-3")}
        sink.sync([])
        assert self.held(sink) == {}

    def test_the_users_own_content_is_kept(self, tmp_path: Path) -> None:
        sink = self.make(tmp_path)
        self.plant_user_content(sink)
        for entries in ([entry("a", "tok-1")], [entry("a", "tok-2"), entry("b", "x", "b.example")], []):
            sink.sync(entries)
            assert self.user_content_intact(sink)

    def test_what_it_holds_a_new_sink_of_the_same_owner_reads_back_and_another_owner_does_not(
        self, tmp_path: Path
    ) -> None:
        """What a previous daemon wrote, for a restart to adopt (``Sink.read_back``; tokend.adopt judges it)."""
        written = [entry("a", "tok-1"), entry("b", "tok-2", "b.example")]
        self.make(tmp_path).sync(written)
        targets = [e.target for e in written]
        want = {"a": "tok-1", "b": "tok-2"} if self.holds_tokens else {}
        assert self.make(tmp_path).read_back(targets) == want
        assert self.make(tmp_path, owner="owner2").read_back(targets) == {}

    def test_a_working_place_is_diagnosed_ok(self, tmp_path: Path) -> None:
        sink = self.make(tmp_path)
        sink.sync([entry("a", "tok-1")])
        findings = sink.diagnose([entry("a", "tok-1").target], None)
        assert findings and all(f.status == "ok" for f in findings), findings
        assert all(f.name.startswith(sink.kind) for f in findings), findings
        assert not any("tok-1" in f.evidence + f.fix for f in findings)  # a token never shows

    def test_an_unusable_place_is_diagnosed_as_failed_with_a_fix(self, tmp_path: Path) -> None:
        sink = self.make_unusable(tmp_path)
        findings = sink.diagnose([entry("a", "tok-1").target], None)
        assert any(f.status == "fail" and f.fix for f in findings), findings

    def test_an_unusable_place_is_reported_with_a_fix(self, tmp_path: Path) -> None:
        sink = self.make_unusable(tmp_path)
        with pytest.raises(SinkError) as e:
            sink.check()
            sink.sync([entry("a", "tok-1")])
        assert any(w in str(e.value) for w in ("set ", "start ", "fix ", "create it")), str(e.value)


class FileSinkContract(SinkContract):
    @pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are POSIX")
    def test_read_back_of_a_fifo_in_its_place_is_nothing_and_does_not_wait(self, tmp_path: Path) -> None:
        """A FIFO planted where the file goes would hang a starting daemon that opened it to read back."""
        sink = self.make(tmp_path)
        os.mkfifo(sink.location())
        got: list[dict[str, str]] = []
        reader = threading.Thread(target=lambda: got.append(sink.read_back([entry("a", "tok-1").target])), daemon=True)
        reader.start()
        reader.join(10)
        assert got == [{}], "read_back opened the FIFO and waited"

    def test_a_file_named_two_ways_is_one_place(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """A reload cleans what the old sink wrote unless the new one writes the same place (daemon.apply): a file's
        place is the file, however the config spells its path."""
        monkeypatch.chdir(tmp_path.parent)
        assert self.make(Path(tmp_path.name)).place() == self.make(tmp_path).place()


CONFIG = """[identities.me]
source = "azure-cli"

[targets.a]
host = "a.example"
database = "appdb"
user = "DBA Group"
identity = "me"
listen = ["127.0.0.1:16432"]

[targets.b]
host = "b.example"
user = "report reader"
identity = "me"
listen = ["127.0.0.1:16433"]
"""


class ClientContract(ABC):
    """One contract every client of ``tokend.kinds.CLIENTS`` passes, through ``tokend.clients.run``/``remove`` as
    the CLI calls them. A subclass names its ``client`` and the user's own file(s) tokend edits; the tests plant
    them, set the client up for the targets ``a`` and ``b`` (CONFIG), and take it out again."""

    client: ClassVar[str]

    @abstractmethod
    def user_files(self, output: Path | None) -> dict[Path, bytes]:
        """Each file the client's setup edits, with the user's own content in it (an entry of theirs)."""

    @abstractmethod
    def users_entry(self) -> bytes:
        """Bytes of the user's own entry, found in their file as long as it survives."""

    def ours(self, name: str) -> bytes:
        """Bytes found in an edited file while the target ``name``'s entry is there."""
        return f"{name}.example".encode()

    def output(self, tmp_path: Path) -> Path | None:
        """What --output names for this client (clients that need one), else None."""
        return None

    def config(self, tmp_path: Path) -> Path:
        """The config of targets ``a`` and ``b``; and the client installed, as far as tokend can tell (the folders
        its first start makes: tokend sets up only a client that is here)."""
        path = tmp_path / "config.toml"
        path.write_text(CONFIG)
        for folder in importlib.import_module(kinds.CLIENTS[self.client].module).places():
            if kinds.CLIENTS[self.client].edits_in_place:
                folder.mkdir(parents=True, exist_ok=True)
        return path

    def setup(self, cfg: Path, output: Path | None, names: Sequence[str] = ()) -> list[str]:
        return list(clients.run(self.client, list(names), cfg, output))

    def undo(self, cfg: Path, output: Path | None, names: Sequence[str] = ()) -> list[str]:
        return list(clients.remove(self.client, list(names), cfg, output))

    def plant(self, output: Path | None) -> dict[Path, tuple[bytes, int]]:
        planted = {}
        for path, data in self.user_files(output).items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            path.chmod(0o640)
            planted[path] = (data, 0o640)
        return planted

    def test_install_then_remove_gives_the_exact_bytes_and_mode_back(self, tmp_path: Path) -> None:
        cfg, output = self.config(tmp_path), self.output(tmp_path)
        planted = self.plant(output)
        assert self.setup(cfg, output)
        for path in planted:
            data = path.read_bytes()
            assert self.ours("a") in data and self.ours("b") in data and self.users_entry() in data, path
        assert self.undo(cfg, output)
        for path, (data, mode) in planted.items():
            assert path.read_bytes() == data, path
            assert stat.S_IMODE(path.stat().st_mode) == mode, path

    def test_a_file_tokend_made_goes_again(self, tmp_path: Path) -> None:
        cfg, output = self.config(tmp_path), self.output(tmp_path)
        made = list(self.user_files(output))
        assert self.setup(cfg, output)
        assert all(p.exists() for p in made)
        self.undo(cfg, output)
        assert not any(p.exists() for p in made)

    def test_install_twice_is_idempotent(self, tmp_path: Path) -> None:
        cfg, output = self.config(tmp_path), self.output(tmp_path)
        planted = self.plant(output)
        self.setup(cfg, output)
        once = {p: p.read_bytes() for p in planted}
        self.setup(cfg, output)
        assert {p: p.read_bytes() for p in planted} == once

    def test_the_users_own_entries_survive_a_partial_remove(self, tmp_path: Path) -> None:
        cfg, output = self.config(tmp_path), self.output(tmp_path)
        planted = self.plant(output)
        self.setup(cfg, output)
        self.undo(cfg, output, ["a"])
        for path in planted:
            data = path.read_bytes()
            assert self.users_entry() in data and self.ours("b") in data and self.ours("a") not in data, path

    def test_it_returns_text_and_never_prints(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        cfg, output = self.config(tmp_path), self.output(tmp_path)
        said = self.setup(cfg, output) + self.undo(cfg, output)
        assert said and all(isinstance(line, str) for line in said)
        assert capsys.readouterr() == ("", "")

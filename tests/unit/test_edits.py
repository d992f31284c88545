"""The client-file editor: a file tokend made goes with remove, one the person wrote into keeps their part, and a
file of theirs comes back with its own bytes and mode."""

from __future__ import annotations

import stat
from pathlib import Path

from tokend.clients import edits


def test_a_file_tokend_made_goes_with_remove_unless_the_person_wrote_into_it(tmp_path: Path) -> None:
    def add(text: str) -> str:
        return text + "tokend\n"

    def drop(text: str) -> str:
        return text.replace("tokend\n", "")

    made = tmp_path / "made.txt"
    edits.change(made, add)
    edits.change(made, add)  # again, still only tokend's: still made by tokend
    assert "removed (tokend created it" in edits.undo(made, drop) and not made.exists()
    edits.change(made, add)
    made.write_text(made.read_text() + "mine\n")  # the person writes into it
    edits.change(made, add)
    assert "your own changes included, kept" in edits.undo(made, drop) and made.read_text() == "mine\n"
    edits.change(made, add)
    assert "restored" in edits.undo(made, drop) and made.read_text() == "mine\n"


def test_restore_gives_the_users_mode_back_but_never_write_access_for_others(tmp_path: Path) -> None:
    for mode, back in ((0o644, 0o644), (0o600, 0o600), (0o666, 0o644), (0o440, 0o640)):
        mine = tmp_path / f"mine-{mode:o}.txt"
        mine.write_text("mine\n")
        mine.chmod(mode)
        edits.change(mine, lambda text: text + "tokend\n")
        assert stat.S_IMODE(mine.stat().st_mode) == 0o600  # the writer's mode while tokend's entries are there
        assert "restored" in edits.undo(mine, lambda text: text.replace("tokend\n", ""))
        assert mine.read_text() == "mine\n" and stat.S_IMODE(mine.stat().st_mode) == back, oct(mode)


def test_removing_tokends_entries_from_a_file_changed_since_gives_its_mode_back(tmp_path: Path) -> None:
    mine = tmp_path / "settings.json"
    mine.write_text("mine\n")
    mine.chmod(0o644)
    edits.change(mine, lambda text: text + "tokend\n")
    mine.write_text(mine.read_text() + "more of mine\n")  # the program rewrote it since: no byte-exact restore
    assert "your own changes included, kept" in edits.undo(mine, lambda text: text.replace("tokend\n", ""))
    assert mine.read_text() == "mine\nmore of mine\n" and stat.S_IMODE(mine.stat().st_mode) == 0o644

"""tokend's marked block in a user's file: first, fenced by its owner's markers, every other byte kept; a damaged
block costs no user line."""

from __future__ import annotations

import pytest

from tokend.sinks import block

MINE = b"mine:1:*:u:p\n"


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (None, b"# >>> tokend o" + block._NOTE + b"\nL1\n# <<< tokend o\n"),
        (MINE, b"# >>> tokend o" + block._NOTE + b"\nL1\n# <<< tokend o\n" + MINE),
        (b"a\r\nb\r\n", b"# >>> tokend o" + block._NOTE + b"\r\nL1\r\n# <<< tokend o\r\na\r\nb\r\n"),  # CRLF kept
        (block.BOM + MINE, block.BOM + b"# >>> tokend o" + block._NOTE + b"\nL1\n# <<< tokend o\n" + MINE),
    ],
)
def test_the_block_goes_first_in_the_files_own_line_ends(old: bytes | None, new: bytes) -> None:
    assert block.splice(old, "o", ["L1"]) == new
    assert block.splice(new, "o", []) == (old or b"")


@pytest.mark.parametrize(
    ("damaged", "left"),
    [
        (b"# >>> tokend o\nL1\n" + MINE, b"L1\n" + MINE),  # no end marker: only the begin marker goes
        (MINE + b"# <<< tokend o\n", MINE),  # a lone end marker goes
        (b"# >>> tokend o12\nX\n# <<< tokend o12\n" + MINE, b"# >>> tokend o12\nX\n# <<< tokend o12\n" + MINE),
    ],
)
def test_a_damaged_or_other_owners_block_costs_no_user_line(damaged: bytes, left: bytes) -> None:
    assert block.without(damaged, "o") == left


def test_owned_lines_know_their_owner_exactly() -> None:
    spliced = block.splice(MINE, "o1", ["L1"])
    assert spliced is not None
    text = (block.BOM + spliced + block.render(["X"], "o12")).decode()
    assert block.owned_lines(text, "o1") == {1, 2, 3}
    assert block.owned_lines(text, "o12") == {5, 6, 7}
    assert block.owned_lines(text, "o") == set()

"""``python -m tokend.emulator``: the same as `tokend emulator` (tokend/emulator/cli.py)."""

from __future__ import annotations

import sys

from tokend.emulator.cli import main

if __name__ == "__main__":
    sys.exit(main())

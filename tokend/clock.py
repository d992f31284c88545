"""Clock: the two times tokend needs, passed in wherever time matters (tests hand in their own).

- ``now()``: wall-clock Unix epoch seconds. Token expiry times are given in it, status shows it.
- ``boot()``: seconds on a clock that never steps and counts suspend (``system.boot_time``). A token's true
  remaining life is measured on it from the moment the token arrived, so a wall clock stepped back (NTP, a restored
  VM, dual boot) never makes an expired token look valid, and a laptop that slept still sees the time it slept.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from tokend import system


@dataclass(frozen=True)
class Clock:
    now: Callable[[], float] = field(default=time.time)
    boot: Callable[[], float] = field(default=system.boot_time)


SYSTEM = Clock()

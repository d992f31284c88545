"""A finding: one thing checked, its verdict, what was seen, and how to fix it.

Plug-ins explain themselves with findings (``Sink.diagnose()``, keyring's viability that explains itself), and
``tokend doctor`` prints them as they are: the field names are the ``tokend doctor --json`` contract
(``{name, status: ok|warn|fail, evidence, fix}``), so a finding's detail is called ``evidence`` there too.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

Status = Literal["ok", "warn", "fail"]


@dataclass(frozen=True)
class Finding:
    name: str  # what was checked ("pgpass mode", "target prod tls")
    status: Status  # ok: nothing to do; warn: works, but not as it should; fail: does not work
    evidence: str  # what was seen, for people: paths, modes, line numbers, the reason given
    fix: str = ""  # the one step that makes it ok (shown when the status is not ok)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def failed(findings: list[Finding]) -> bool:
    """Whether any finding failed: doctor's exit code and its JSON ``ok``."""
    return any(f.status == "fail" for f in findings)

"""``tokend exec``'s environment: libpq's PG* variables for the target and the token as PGPASSWORD, never an
argument; and a command that cannot start is one usage line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tokend import pgenv
from tokend.errors import UsageError

TOKEN = "eyJ0eXAiOiJKV1QifQ.eyJvaWQiOiIxIn0.c2ln"


def answer(**target: Any) -> pgenv.TokenAnswer:  # the type pgenv takes, wherever it is defined
    t = {"host": "h.example", "port": 5432, "database": "*", "user": "DBA Group", **target}
    return pgenv.TokenAnswer(TOKEN, 2e9, t)


@pytest.mark.parametrize(
    ("target", "base", "want"),
    [
        (
            {},
            {},
            {
                "PGHOST": "h.example",
                "PGPORT": "5432",
                "PGUSER": "DBA Group",
                "PGPASSWORD": TOKEN,
                "PGSSLMODE": "require",
            },
        ),
        (
            {"database": "sales", "port": 6432},
            {},
            {
                "PGHOST": "h.example",
                "PGPORT": "6432",
                "PGUSER": "DBA Group",
                "PGPASSWORD": TOKEN,
                "PGDATABASE": "sales",
                "PGSSLMODE": "require",
            },
        ),
        (  # the caller's sslmode wins (verify-full is stricter); the caller's own host, user, password do not
            {},
            {"PGSSLMODE": "verify-full", "PGHOST": "old", "PGUSER": "me", "PGPASSWORD": "stale", "PATH": "/bin"},
            {
                "PGHOST": "h.example",
                "PGPORT": "5432",
                "PGUSER": "DBA Group",
                "PGPASSWORD": TOKEN,
                "PGSSLMODE": "verify-full",
                "PATH": "/bin",
            },
        ),
    ],
)
def test_the_environment_holds_the_targets_pg_variables_and_the_token(
    target: dict[str, Any], base: dict[str, str], want: dict[str, str]
) -> None:
    before = dict(base)
    assert pgenv.environment(answer(**target), base) == want
    assert base == before  # the caller's mapping is left as it was


def test_a_target_for_any_database_leaves_the_callers_pgdatabase() -> None:
    env = pgenv.environment(answer(database="*"), {"PGDATABASE": "mine"})
    assert env["PGDATABASE"] == "mine"


def test_a_command_that_does_not_exist_is_one_usage_line() -> None:
    with pytest.raises(UsageError, match=r"^command not found: /nonexistent/psql$"):
        pgenv.exec_with(answer(), ["/nonexistent/psql", "-c", "select 1"])


def test_a_command_that_may_not_run_is_one_usage_line(tmp_path: Path) -> None:
    script = tmp_path / "psql"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o600)  # not executable
    with pytest.raises(UsageError, match=r"^cannot run .*psql: permission denied$") as e:
        pgenv.exec_with(answer(), [str(script)])
    assert TOKEN not in str(e.value)

"""End-to-end tests need the installed product: one clear failure when it is missing, instead of every test's."""

from __future__ import annotations

import pytest

from support import product


@pytest.fixture(scope="session", autouse=True)
def installed_product() -> str:
    """The installed `tokend` launcher every e2e test runs (tests/run.sh builds it from a wheel of the checkout)."""
    why = product.missing()
    if why:
        pytest.fail(why, pytrace=False)
    return product.TOKEND

"""Logging: stderr (a service manager collects it), every record scrubbed of token-shaped text first."""

from __future__ import annotations

import logging
import sys

from tokend.redact import RedactingFilter


def setup(debug: bool, quiet: bool = False) -> None:
    """``quiet``: only errors (one-shot commands report their own summary line)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactingFilter())
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.ERROR if quiet and not debug else logging.WARNING)
    logging.getLogger("tokend").setLevel(logging.DEBUG if debug else logging.ERROR if quiet else logging.INFO)
    if debug:
        logging.getLogger("azure").setLevel(logging.DEBUG)
        logging.getLogger("msal").setLevel(logging.INFO)

"""End-to-end tests: the installed product (a wheel of this checkout in its own venv) as processes, against the
Entra emulator, the token-checking PostgreSQL and real clients."""

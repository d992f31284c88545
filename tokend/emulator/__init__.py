"""A local Microsoft Entra emulator, for tests and the demo only: never used unless a config points at it.

It speaks Entra's real wire formats (OIDC discovery, v2.0 token and device-code endpoints, JWKS, the App Service
managed-identity endpoint, the bit of ARM the Azure CLI asks for) over HTTPS with its own CA, issues RS256 JWTs
shaped like real ossrdbms tokens, injects faults, and checks tokens for a PostgreSQL server the way Azure does
(``ldapcheck``). See ``python -m tokend.emulator --help``.
"""

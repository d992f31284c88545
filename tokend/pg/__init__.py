"""PostgreSQL, as tokend speaks it: ``wire`` (the messages), ``tls`` (contexts with libpq's sslmode meanings, one per
CA file), ``login`` (the one login routine, a sans-I/O generator with a blocking and an asynchronous driver) and
``connection`` (the small query connection ``tokend admin`` uses). The proxy, ``tokend admin`` and ``tokend doctor``
log in through ``login`` only; nothing here imports the proxy.
"""

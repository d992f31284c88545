"""What tests and benchmarks share: builders, waits, ports, process probes, the installed product and its daemon.

Nothing here is a fixture (those live in tests/conftest.py) and nothing here imports a test module. Benchmarks under
bench/ import these modules too (bench/_setup.py puts tests/ on sys.path).
"""

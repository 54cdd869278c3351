"""The benchmark of issue 5: seeds a store, starts the server as production
would, drives it from a multi-process raw HTTP/1.1 load generator next to a
bare-Starlette ceiling and the ``scim2-server`` peer, and prints the figures.

Run it with ``python -m bench.run --users 10000`` (see docs/benchmarks.md).
It lives outside ``tests/`` so that pytest never collects it.
"""

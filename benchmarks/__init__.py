"""MUTT's performance harness: ``python -m benchmarks`` (``make bench``, ``make bench-smoke``).

Each stage of the pipeline is measured with real processes on real PostgreSQL and Redis, and the
results go to ``benchmarks/results.json`` (see docs/benchmarks.md). This package must stay importable
without Django: the load generator (``benchmarks.loadgen``) runs from it in processes of its own.
"""

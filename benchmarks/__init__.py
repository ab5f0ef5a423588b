"""MUTT's performance harness: ``python -m benchmarks`` (``make bench``, ``make bench-smoke``).

Each stage of the pipeline is measured with real processes on real PostgreSQL and Redis, and the
results go to ``benchmarks/results.json`` (see docs/benchmarks.md). The load generator and mock_moog it
runs are development tools (``devtools.loadgen``, ``devtools.mock_moog``).
"""

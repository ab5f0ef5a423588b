"""Development tools: what MUTT's developers, tests and benchmarks run, never part of a delivery path.

- ``mock_moog`` (mock_moog.py, mock_moog_state.py, ``manage.py mock_moog``): a local Moogsoft stand-in that
  ``mutt up`` runs while no real Moogsoft is configured (``mock_moog_args`` in mutt_project's ``mutt``
  command), and that tests and benchmarks deliver to; see docs/mock_moog.md.
- ``loadgen`` (``python -m devtools.loadgen``): the benchmarks' HTTP load generator, run in processes of its
  own; see docs/benchmarks.md.

An installed Django app only so that ``manage.py mock_moog`` exists; it has no models. This package must
stay importable without Django: the load generator runs from it with none.
"""

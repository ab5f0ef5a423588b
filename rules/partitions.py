"""Moved to :mod:`retention.partitions` (partitions are made by the ``audit_partitions`` job now).

Only ``rules/alerter.py`` still imports this name, for ``Alerter.maintain_partitions``; both go when
that method is removed from the alerter (issue 14, at the merge of the alerter's split).
"""

from __future__ import annotations

from retention.partitions import ensure_partitions

__all__ = ["ensure_partitions"]

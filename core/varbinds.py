"""A trap's varbinds in every shape trap receivers send them, read one way by every stage.

The alerter reads them for an alert's signature and description (``rules.signature``) and the forwarder
for Moogsoft's tags (``delivery.payloads``). The reader lives here, below both apps, so that neither
imports the other's internals (ADR-010).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any


def varbinds(variables: Any) -> Iterator[tuple[str, Any]]:
    """(name, value) of each varbind: an object's items, or a list of ``{"oid"|"name", "value"}`` objects
    or ``[name, value]`` pairs (what trap receivers send); anything else is skipped."""
    if isinstance(variables, Mapping):
        for name, value in variables.items():
            yield str(name), value
    elif isinstance(variables, list):
        for item in variables:
            if isinstance(item, Mapping):
                name = item.get("oid", item.get("name"))
                if name is not None:
                    yield str(name), item.get("value")
            elif isinstance(item, list | tuple) and len(item) == 2:
                yield str(item[0]), item[1]

"""JSON that keeps integers past 64 bits exact, at no cost to the documents that have none.

orjson reads an integer outside [-2**63, 2**64) as a float (``2**64`` becomes ``1.8446744073709552e19``,
silently) and refuses to write one. ``extra`` is documented as kept unchanged, so a document holding
such an integer is read again by the standard library, which keeps every integer a Python ``int``,
and an event holding one is written by the standard library too. PostgreSQL keeps the text of the
audit log's ``raw`` column (``json``) verbatim, so the digits survive to the audit row.

Such an integer has at least 19 digits, so the test is a scan for a run of 19 digits: one
``translate`` and one ``find`` over the bytes, about 3 ns a byte, cheaper than the parse itself.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

# 2**63 (the first int64 overflow) has 19 digits; fewer digits always fit.
_LONG_RUN = b"0" * 19
_DIGITS_AS_ZERO = bytes(0x30 if 0x30 <= byte <= 0x39 else 0x20 for byte in range(256))
# orjson writes 254 levels of nesting and no more; the events written here keep that bound.
MAX_DEPTH = 254


class ExactParseError(ValueError):
    """The standard library cannot read a document orjson read: an integer over 4,300 digits
    (Python's conversion limit) or nesting past the interpreter's recursion limit."""


def may_hold_long_integer(raw: bytes) -> bool:
    """False when ``raw`` has no run of 19 digits, so orjson read every integer in it exactly."""
    return _LONG_RUN in raw.translate(_DIGITS_AS_ZERO)


def loads_exact(raw: bytes) -> Any:
    """``raw`` (already accepted by orjson, so valid UTF-8 JSON) with every integer exact."""
    try:
        return json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        raise ExactParseError(str(exc) if isinstance(exc, ValueError) else "nested too deeply") from None


def dumps(value: Any) -> bytes | None:
    """``value`` as compact JSON, integers past 64 bits included; None when it is nested deeper than
    :data:`MAX_DEPTH` (or cannot be written at all)."""
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        pass
    # Rare: a big integer (or nesting orjson cannot write). The standard library writes any int.
    if _depth(value) > MAX_DEPTH:
        return None
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
    except (ValueError, TypeError, RecursionError):
        return None


def _depth(value: Any) -> int:
    """The nesting depth of objects and arrays in ``value`` (a loop: values nest deeply)."""
    deepest = 0
    pending = [(value, 1)]
    while pending:
        current, level = pending.pop()
        if isinstance(current, dict):
            deepest = max(deepest, level)
            pending.extend((item, level + 1) for item in current.values())
        elif isinstance(current, list):
            deepest = max(deepest, level)
            pending.extend((item, level + 1) for item in current)
    return deepest

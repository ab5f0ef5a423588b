"""JSON that keeps integers past 64 bits exact, at no cost to the documents that have none.

orjson reads an integer outside [-2**63, 2**64) as a float (``2**64`` becomes ``1.8446744073709552e19``,
silently), refuses one of more than 308 digits as an infinite float, and refuses to write one.
``extra`` is documented as kept unchanged, so a document holding such an integer is read again by
the standard library, which keeps every integer (up to Python's 4,300 digits) a Python ``int``, and
an event holding one is written by the standard library too. PostgreSQL keeps the text of the audit
log's ``raw`` column (``json``) verbatim, so the digits survive to the audit row.

Such an integer has at least 19 digits, so the test starts with a scan for a run of 19 digits: one
``translate`` and one ``find`` over the bytes, about 3 ns a byte, cheaper than the parse itself. Runs of
19 digits are common (nanosecond timestamps from OpenTelemetry, Vector or Loki), and orjson reads them
exactly, so each run found is then compared with what orjson keeps exact: integers from -2**63 to
2**64 - 1 (u64's maximum, 18446744073709551615). Only a run outside that range sends the document to the
standard library.
"""

from __future__ import annotations

import json
import math
from typing import Any

import orjson

# 2**63 (the first int64 overflow) has 19 digits; fewer digits always fit.
_LONG_RUN = b"0" * 19
_DIGITS_AS_ZERO = bytes(0x30 if 0x30 <= byte <= 0x39 else 0x20 for byte in range(256))
# The extremes orjson reads as integers: u64's maximum (20 digits) and i64's minimum (19 digits, signed).
_U64_MAX = str(2**64 - 1).encode()
_I64_MIN_DIGITS = str(2**63).encode()
# orjson writes 254 levels of nesting and no more; the events written here keep that bound.
MAX_DEPTH = 254


NESTED_TOO_DEEPLY = "nested too deeply"


class ExactParseError(ValueError):
    """The standard library cannot read the document: an integer over 4,300 digits (Python's
    conversion limit), nesting past the interpreter's recursion limit, or what orjson refuses too."""


def may_hold_long_integer(raw: bytes) -> bool:
    """False when every run of digits in ``raw`` is an integer orjson reads exactly (from -2**63 to 2**64 - 1),
    so orjson's value is exact; True when one may not be (a run inside a string or a fraction counts too: the
    standard library's value is the same then, only slower)."""
    shape = raw.translate(_DIGITS_AS_ZERO)  # digits as "0", everything else as " "
    start = shape.find(_LONG_RUN)
    # Each run of 19 or more digits is looked at where it is, found by ``find`` in C: a regular expression
    # over the whole body (an NDJSON batch with one nanosecond timestamp) cost 40 ns a byte.
    while start >= 0:
        end = shape.find(b" ", start)
        if end < 0:
            end = len(shape)
        digits = raw[start:end]
        if len(digits) > 20:
            return True
        if start and raw[start - 1] == 0x2D:  # "-": past -2**63 (equal lengths compare as numbers)
            if len(digits) == 20 or digits > _I64_MIN_DIGITS:
                return True
        elif len(digits) == 20 and digits > _U64_MAX:
            return True
        start = shape.find(_LONG_RUN, end)
    return False  # almost every body: no run of 19 digits at all


def loads(raw: bytes) -> Any:
    """``raw`` parsed, every integer exact: orjson's value unless ``raw`` may hold an integer orjson reads as a
    float (:func:`may_hold_long_integer`), else the standard library's. orjson refuses integers of more than
    308 digits as infinite floats; those documents are read by the standard library too. Raises
    orjson.JSONDecodeError or ExactParseError."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if "infinity" in str(exc) and may_hold_long_integer(raw):
            return loads_exact(raw)
        raise
    return loads_exact(raw) if may_hold_long_integer(raw) else value


def loads_exact(raw: bytes) -> Any:
    """``raw`` with every integer exact. Strict as orjson is: no NaN or Infinity, no infinite float."""
    try:
        return json.loads(raw, parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError:
        raise ExactParseError(NESTED_TOO_DEEPLY) from None
    except ValueError as exc:
        if "4300 digits" in str(exc):
            raise ExactParseError("an integer has more than 4300 digits") from None
        raise ExactParseError(str(exc)) from None


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"the number {text[:20]}… is too large for a float")
    return value


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

"""Reading and splitting an ingest request body: one object, an array of objects, or NDJSON.

Everything here works on bytes and headers, not on Django requests, and refuses a body by raising
:class:`BodyRefused` with the HTTP status, a reason (the metrics label) and the response body. A body
becomes the :class:`ingest.admission.Item` list that admission takes from every source.

A body may be gzip-compressed (``Content-Encoding: gzip``, as rsyslog's omhttp sends it): it is
inflated while it is read, and the body limit bounds both the bytes received and the bytes inflated,
so a zip bomb costs at most one limit of memory before its 413.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NamedTuple

import orjson

from core import exactjson
from ingest.admission import Item, item_size

_READ_CHUNK = 1 << 20
# zlib's window bits for a gzip wrapper (16 + the largest window), as omhttp and gzip(1) write it.
_GZIP_WBITS = 16 + zlib.MAX_WBITS


class BodyKind(StrEnum):
    JSON = "json"
    NDJSON = "ndjson"


MEDIA_TYPES: dict[str, BodyKind] = {
    "application/json": BodyKind.JSON,
    "application/x-ndjson": BodyKind.NDJSON,
    "application/ndjson": BodyKind.NDJSON,
    # rsyslog's omhttp sends its "newline" batches (one JSON object per line) as text/plain.
    "text/plain": BodyKind.NDJSON,
}
GZIP_ENCODINGS = frozenset({"gzip", "x-gzip"})


@dataclass
class BodyRefused(Exception):
    """A request body ingest will not take: the status, the metrics reason and the response body."""

    status: int
    reason: str
    body: dict[str, Any] = field(default_factory=dict)


class BodyFormat(NamedTuple):
    kind: BodyKind
    gzip: bool  # Content-Encoding: gzip


def body_kind(content_type: str, content_encoding: str) -> BodyFormat:
    media_type = content_type.split(";", 1)[0].strip().lower()
    kind = MEDIA_TYPES.get(media_type)
    if kind is None:
        shown = media_type or "(none)"
        raise BodyRefused(
            415,
            "unsupported_media_type",
            {
                "detail": f"Unsupported Content-Type {shown}; send application/json, or NDJSON as "
                "application/x-ndjson or text/plain."
            },
        )
    encoding = content_encoding.strip().lower()
    if encoding in ("", "identity"):
        return BodyFormat(kind, False)
    if encoding in GZIP_ENCODINGS:
        return BodyFormat(kind, True)
    raise BodyRefused(
        415,
        "unsupported_encoding",
        {"detail": f"Unsupported Content-Encoding {encoding}; send the body uncompressed or as gzip."},
    )


class BodyLimit(NamedTuple):
    """The most bytes a body may have, and the setting(s) that make it so, for the 413 message."""

    size: int
    named_by: str


def body_limit(*, max_body_bytes: int, max_event_bytes: int, max_batch: int) -> BodyLimit:
    """The smaller of ``ingest_max_body_bytes`` (memory per request) and a full batch of the largest events."""
    full_batch = max_event_bytes * max_batch
    if max_body_bytes <= full_batch:
        return BodyLimit(max_body_bytes, "ingest_max_body_bytes")
    return BodyLimit(full_batch, "ingest_max_event_bytes * ingest_max_batch")


def read_body(
    read: Callable[[int], bytes], content_length: str | None, limit: int, *, named_by: str, gzip: bool = False
) -> bytes:
    """The body, refusing more than ``limit`` bytes (set by ``named_by``): by Content-Length before
    reading, then by count; and refusing fewer bytes than Content-Length announced. Without a
    Content-Length (a chunked body) it reads until the end of input, under the same limit.

    With ``gzip`` the body is inflated as it arrives, and the inflated bytes are held to ``limit``
    too: at most ``limit + 1`` of them are ever produced."""
    declared = None
    if content_length:
        try:
            declared = int(content_length)
        except ValueError:
            raise BodyRefused(400, "bad_content_length", {"detail": "Content-Length is not a number."}) from None
        if declared > limit:
            raise _too_large(declared, limit, named_by)
    sink: _Plain | _Inflated = _Inflated(limit, named_by) if gzip else _Plain()
    size = 0
    try:
        while size <= limit:
            chunk = read(min(_READ_CHUNK, limit + 1 - size))
            if not chunk:
                break
            size += len(chunk)
            sink.add(chunk)
    except OSError as exc:  # Django's UnreadablePostError, gunicorn's chunk errors: the client went away
        raise BodyRefused(400, "unreadable", {"detail": f"The body could not be read: {exc}."}) from None
    if size > limit:
        raise _too_large(None, limit, named_by)
    if declared is not None and size < declared:
        # The client went away mid-body (the server sees end of input, not an error). What arrived
        # may be whole NDJSON lines, but it is not the batch the client sent.
        raise BodyRefused(
            400,
            "incomplete",
            {
                "detail": f"The body is shorter than its Content-Length: {size} of {declared} bytes arrived; "
                "nothing was accepted. Send the whole batch again."
            },
        )
    return sink.finish()


class _Plain:
    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def add(self, chunk: bytes) -> None:
        self.chunks.append(chunk)

    def finish(self) -> bytes:
        return b"".join(self.chunks)


class _Inflated:
    """gzip inflated incrementally: each call produces at most what is left of the limit, plus one byte
    to tell "exactly the limit" from "past it", so a bomb never expands in memory."""

    def __init__(self, limit: int, named_by: str) -> None:
        self.limit = limit
        self.named_by = named_by
        self.chunks: list[bytes] = []
        self.size = 0
        self.received = False
        self.inflater = zlib.decompressobj(_GZIP_WBITS)

    def add(self, data: bytes) -> None:
        self.received = True
        try:
            while data:
                if self.inflater.eof:
                    # Another member follows (RFC 1952 allows several, as `cat a.gz b.gz` makes).
                    self.inflater = zlib.decompressobj(_GZIP_WBITS)
                out = self.inflater.decompress(data, self.limit + 1 - self.size)
                self.size += len(out)
                if self.size > self.limit:
                    raise _too_large(None, self.limit, self.named_by, inflated=True)
                self.chunks.append(out)
                data = self.inflater.unused_data if self.inflater.eof else self.inflater.unconsumed_tail
        except zlib.error as exc:
            raise BodyRefused(
                400, "malformed", {"detail": f"The body is not valid gzip (Content-Encoding: gzip): {exc}."}
            ) from None

    def finish(self) -> bytes:
        if self.received and not self.inflater.eof:
            raise BodyRefused(400, "malformed", {"detail": "The gzip body ends before the end of its stream."})
        return b"".join(self.chunks)


def _too_large(declared: int | None, limit: int, named_by: str, *, inflated: bool = False) -> BodyRefused:
    size = f"of {declared} bytes " if declared is not None else ""
    what = "The request body inflated from gzip" if inflated else f"The request body {size}".rstrip()
    return BodyRefused(
        413,
        "body_too_large",
        {
            "detail": f"{what} exceeds the limit of {limit} bytes ({named_by}); send smaller batches.",
            "limit_bytes": limit,
        },
    )


def split_body(raw: bytes, kind: BodyKind, *, max_items: int, max_item_bytes: int) -> list[Item]:
    """The items of the body; refuses an empty or malformed body, and more than ``max_items`` items."""
    if not raw.strip():
        raise BodyRefused(
            400,
            "empty",
            {"detail": "The body is empty; send a JSON object, an array of objects, or NDJSON (one per line)."},
        )
    items = _split_ndjson(raw, max_items) if kind is BodyKind.NDJSON else _split_json(raw, max_item_bytes)
    if not items:
        raise BodyRefused(400, "empty", {"detail": "The batch is empty; send at least one event."})
    _check_count(len(items), max_items)
    return items


def _split_json(raw: bytes, max_item_bytes: int) -> list[Item]:
    try:
        document = exactjson.loads(raw)
    except (orjson.JSONDecodeError, exactjson.ExactParseError) as exc:
        raise BodyRefused(400, "malformed", {"detail": f"Malformed JSON: {exc}."}) from None
    if isinstance(document, dict):
        return [Item(0, document, len(raw), None)]
    if not isinstance(document, list):
        raise BodyRefused(
            400,
            "malformed",
            {"detail": f"The body is a JSON {_json_type(document)}; send an object or an array of objects."},
        )
    # Measuring an item means serialising it again; skip that when no item can be too large.
    if len(raw) <= max_item_bytes:
        return [Item(index, value, 0, None) for index, value in enumerate(document)]
    return [Item(index, value, item_size(value), None) for index, value in enumerate(document)]


def _split_ndjson(raw: bytes, max_items: int) -> list[Item]:
    lines = raw.split(b"\n")
    # Counting first refuses an oversized batch without parsing any of it.
    _check_count(sum(1 for line in lines if line.strip()), max_items)
    long_integers = exactjson.may_hold_long_integer(raw)  # one scan of the body clears almost every batch
    parse = _exact_line if long_integers else orjson.loads
    items: list[Item] = []
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text:
            continue
        try:
            value = parse(text)
        except (orjson.JSONDecodeError, exactjson.ExactParseError) as exc:
            raise BodyRefused(
                400, "malformed", {"detail": f"Malformed NDJSON on line {number}: {exc}.", "line": number}
            ) from None
        items.append(Item(len(items), value, len(text), number))
    return items


def _exact_line(text: bytes) -> Any:
    try:
        return exactjson.loads(text)
    except exactjson.ExactParseError as exc:
        if str(exc) != exactjson.NESTED_TOO_DEEPLY:
            raise
        # Deeper than the standard library reads, so far deeper than an event may be: orjson's value
        # stands, and the pipeline rejects this item alone for its depth. (In a JSON array the other
        # items would lose their big integers: there the body is refused.)
        return orjson.loads(text)


def _check_count(count: int, max_items: int) -> None:
    if count > max_items:
        raise BodyRefused(
            413,
            "batch_too_large",
            {
                "detail": f"The batch has {count} events; the limit is {max_items} (ingest_max_batch). "
                "Send smaller batches.",
                "max_batch": max_items,
                "received": count,
            },
        )


def _json_type(value: Any) -> str:
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return "null"

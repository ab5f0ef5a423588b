"""Small helpers shared by the ingest tests."""

from __future__ import annotations

from typing import Any

import orjson


def post(
    client: Any,
    body: Any,
    *,
    key: str | None,
    content_type: str = "application/json",
    path: str = "/api/v2/ingest",
    **extra: Any,
) -> Any:
    """POST ``body`` (bytes/str as is, anything else as JSON) with ``key`` in X-API-Key."""
    data = body if isinstance(body, bytes | str) else orjson.dumps(body)
    headers = {"HTTP_X_API_KEY": key} if key is not None else {}
    if not data:
        # Django's test client drops the Content-Type of an empty body; a real client sends it.
        headers["CONTENT_TYPE"] = content_type
    return client.post(path, data=data, content_type=content_type, **headers, **extra)


def stream_events(redis_client: Any) -> list[dict[str, Any]]:
    from core import streams

    return [streams.decode(fields) for _, fields in redis_client.xrange(streams.ingest_stream())]


def event(n: int = 0, **fields: Any) -> dict[str, Any]:
    return {"hostname": f"edge-{n:03d}", "message": f"link down {n}", **fields}

"""HTTP load generator, run as its own processes: ``python -m devtools.loadgen closed|paced ...``.

No Django here, and no ``http.client``: each thread holds one raw keep-alive HTTP/1.1 connection,
sends pre-encoded requests and parses only the status line, ``Content-Length`` and ``Connection``.
That costs the client a fraction of what ``http.client`` does (its header parsing goes through the
email package), so on a machine the server shares, the generator takes as little CPU as it can.
A server that answers ``Connection: close`` (gunicorn's sync worker always does) is reconnected to.

``closed``: every thread sends back to back; requests finished between ``--start-at`` and
``--end-at`` (epoch seconds) count, earlier ones warm up. ``paced``: batches leave on a fixed
schedule (``--rate`` events/s in ``--batch``-event requests) whatever the answers, and each 202 is
recorded with the time it arrived and the event ids it returned. The API key comes from the
``BENCH_API_KEY`` environment variable (never the command line). Results go to ``--out`` as JSON.
"""

from __future__ import annotations

import argparse
import itertools
import os
import socket
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson


class HttpClient:
    """One keep-alive connection; ``post`` returns (status, body)."""

    def __init__(self, host: str, port: int, timeout: float = 30.0) -> None:
        self.address = (host, port)
        self.timeout = timeout
        self.sock: socket.socket | None = None
        self.buffer = b""

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.sock, self.buffer = None, b""

    def post(self, request: bytes) -> tuple[int, bytes]:
        if self.sock is None:
            self.sock = socket.create_connection(self.address, timeout=self.timeout)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            self.sock.sendall(request)
            status, body, close = self._response()
        except (OSError, ValueError):
            self.close()
            raise
        if close:
            self.close()
        return status, body

    def _recv(self) -> bytes:
        assert self.sock is not None
        chunk = self.sock.recv(262_144)
        if not chunk:
            raise ConnectionError("the server closed the connection before answering")
        return chunk

    def _response(self) -> tuple[int, bytes, bool]:
        data = self.buffer
        while b"\r\n\r\n" not in data:
            data += self._recv()
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length: int | None = None
        close = lines[0].startswith(b"HTTP/1.0")
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection":
                close = value.strip().lower() == b"close"
            elif name == b"transfer-encoding":
                raise ValueError("chunked responses are not supported")
        if length is None:  # the body runs until the server closes
            chunks = [rest]
            while chunk := self.sock.recv(262_144) if self.sock else b"":
                chunks.append(chunk)
            self.buffer = b""
            return status, b"".join(chunks), True
        while len(rest) < length:
            rest += self._recv()
        self.buffer = rest[length:]
        return status, rest[:length], close


def encode_request(host: str, port: int, path: str, body: bytes, api_key: str) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
    )
    if api_key:
        head += f"X-API-Key: {api_key}\r\n"
    return head.encode() + b"\r\n" + body


# --- closed loop ----------------------------------------------------------------------------------


def run_closed(args: argparse.Namespace, requests: list[bytes]) -> dict[str, Any]:
    lock = threading.Lock()
    statuses: Counter[str] = Counter()
    latencies: list[float] = []
    accepted = [0]
    errors: list[str] = []

    def worker(index: int) -> None:
        client = HttpClient(args.host, args.port)
        mine: list[float] = []
        seen: Counter[str] = Counter()
        events = 0
        for n in itertools.count(index):
            if time.time() >= args.end_at:
                break
            started = time.perf_counter()
            try:
                status, body = client.post(requests[n % len(requests)])
            except (OSError, ValueError) as exc:
                finished = time.time()
                if args.start_at <= finished < args.end_at:
                    seen["error"] += 1
                    if len(errors) < 5:
                        errors.append(f"{type(exc).__name__}: {exc}")
                continue
            elapsed = time.perf_counter() - started
            finished = time.time()
            if not args.start_at <= finished < args.end_at:
                continue  # warm-up, or past the window
            seen[str(status)] += 1
            if status < 300:
                mine.append(elapsed * 1000)
                if args.count_accepted:
                    events += int(orjson.loads(body).get("accepted", 0))
        client.close()
        with lock:
            statuses.update(seen)
            latencies.extend(mine)
            accepted[0] += events

    _run_threads(worker, args.threads)
    return {
        "mode": "closed",
        "seconds": args.end_at - args.start_at,
        "statuses": dict(statuses),
        "ok": len(latencies),
        "latencies_ms": latencies,
        "accepted_events": accepted[0],
        "errors": errors,
    }


# --- paced (open loop) --------------------------------------------------------------------------


def run_paced(args: argparse.Namespace, requests: list[bytes]) -> dict[str, Any]:
    interval = args.batch / args.rate
    total = int(args.seconds * args.rate / args.batch)
    ticks = itertools.count()
    lock = threading.Lock()
    records: list[tuple[float, list[str]]] = []
    statuses: Counter[str] = Counter()
    errors: list[str] = []
    late = [0.0]

    def worker(index: int) -> None:
        client = HttpClient(args.host, args.port)
        mine: list[tuple[float, list[str]]] = []
        seen: Counter[str] = Counter()
        worst = 0.0
        while (tick := next(ticks)) < total:
            due = args.start_at + tick * interval
            wait = due - time.time()
            if wait > 0:
                time.sleep(wait)
            else:
                worst = max(worst, -wait)
            try:
                status, body = client.post(requests[tick % len(requests)])
            except (OSError, ValueError) as exc:
                seen["error"] += 1
                if len(errors) < 5:
                    errors.append(f"{type(exc).__name__}: {exc}")
                continue
            arrived = time.time()
            seen[str(status)] += 1
            if status == 202:
                mine.append((arrived, orjson.loads(body)["event_ids"]))
        client.close()
        with lock:
            records.extend(mine)
            statuses.update(seen)
            late[0] = max(late[0], worst)

    _run_threads(worker, args.threads)
    return {
        "mode": "paced",
        "rate": args.rate,
        "batch": args.batch,
        "seconds": args.seconds,
        "sent_events": total * args.batch,
        "statuses": dict(statuses),
        "accepted": records,
        "max_send_lag_s": round(late[0], 4),
        "errors": errors,
    }


def _run_threads(target: Any, count: int) -> None:
    threads = [threading.Thread(target=target, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m devtools.loadgen", description=__doc__.split("\n")[0])
    parser.add_argument("mode", choices=["closed", "paced"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/api/v2/ingest")
    parser.add_argument("--bodies", type=Path, required=True, help="JSON array of request bodies to cycle through.")
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--start-at", type=float, required=True, help="Epoch seconds when measuring starts.")
    parser.add_argument("--end-at", type=float, default=0.0, help="closed: epoch seconds when measuring ends.")
    parser.add_argument("--count-accepted", action="store_true", help="closed: sum 'accepted' of the answers.")
    parser.add_argument("--rate", type=float, default=5000.0, help="paced: events per second offered.")
    parser.add_argument("--batch", type=int, default=50, help="paced: events per request (as in --bodies).")
    parser.add_argument("--seconds", type=float, default=30.0, help="paced: how long to offer load.")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    api_key = os.environ.get("BENCH_API_KEY", "")
    bodies = orjson.loads(args.bodies.read_bytes())
    requests = [encode_request(args.host, args.port, args.path, orjson.dumps(body), api_key) for body in bodies]
    result = run_closed(args, requests) if args.mode == "closed" else run_paced(args, requests)
    result["cpu_seconds"] = round(time.process_time(), 3)  # what the generator itself cost the machine
    args.out.write_bytes(orjson.dumps(result))


if __name__ == "__main__":
    main()

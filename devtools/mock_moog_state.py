"""What mock_moog remembers: the events it accepted, the requests it refused, and its failure mode.

Every handler thread goes through :class:`MockState`, whose lock guards the counters, the recorded
events and the mode; nothing slow (sleeping, waiting on a socket) ever happens under it.
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from dataclasses import asdict, dataclass, field, replace
from typing import Any

FAULTS = ("status", "timeout", "drop")
CONTROL_KEYS = frozenset({*FAULTS, "times", "retry_after", "latency_ms", "health_status", "require_auth", "reset"})
MAX_LATENCY_MS = 600_000


class ControlError(ValueError):
    """A ``POST /control`` body that does not describe a mode; the message says what is wrong."""


@dataclass(frozen=True)
class Mode:
    """How mock_moog answers event posts and health probes.

    At most one fault (``status``, ``timeout`` or ``drop``) is active; ``times`` limits it to that many
    posts (None: until changed). ``latency_ms`` delays every event post, fault or not.
    """

    status: int | None = None
    timeout: bool = False
    drop: bool = False
    times: int | None = None
    retry_after: int | None = None
    latency_ms: int = 0
    health_status: int = 200
    require_auth: str | None = field(default=None, repr=False)

    @property
    def fault(self) -> str | None:
        if self.status is not None:
            return "status"
        if self.timeout:
            return "timeout"
        return "drop" if self.drop else None

    def public(self) -> dict[str, Any]:
        """The mode as shown by ``GET /control`` (the expected credential only as set or not)."""
        shown = asdict(self)
        shown["require_auth"] = self.require_auth is not None
        shown["fault"] = self.fault
        return shown


@dataclass(frozen=True)
class Decision:
    """What to do with one event post, decided atomically (a limited fault is used up here)."""

    fault: str | None
    status: int | None
    retry_after: int | None
    latency_ms: int
    require_auth: str | None = field(repr=False)
    release: threading.Event | None = None  # what lets a request held by the timeout fault go


def parse_control(body: Any, current: Mode) -> Mode:
    """The mode after applying a ``POST /control`` body to ``current``; ControlError if it is invalid.

    Keys not given keep their value, except that setting a fault replaces the previous one (with its
    ``times`` and ``retry_after``). ``{"reset": true}`` starts from the normal mode first.
    """
    if not isinstance(body, dict):
        raise ControlError("the control body must be a JSON object")
    unknown = sorted(set(body) - CONTROL_KEYS)
    if unknown:
        raise ControlError(f"unknown control keys {unknown}; known: {sorted(CONTROL_KEYS)}")
    mode = _apply_fault(body, Mode() if _flag(body, "reset") else current)
    if "latency_ms" in body:
        latency = _non_negative_int(body["latency_ms"], "latency_ms")
        if latency is None or latency > MAX_LATENCY_MS:
            raise ControlError(f"latency_ms must be between 0 and {MAX_LATENCY_MS}")
        mode = replace(mode, latency_ms=latency)
    if "health_status" in body:
        mode = replace(mode, health_status=_status(body["health_status"], "health_status", low=200))
    if "require_auth" in body:
        expected = body["require_auth"]
        if expected is not None and (not isinstance(expected, str) or not expected):
            raise ControlError("require_auth must be a non-empty string, or null to accept any request")
        mode = replace(mode, require_auth=expected)
    return mode


def _apply_fault(body: dict[str, Any], mode: Mode) -> Mode:
    """``mode`` with the fault keys of ``body`` (status, timeout, drop, times, retry_after) applied."""
    if any(name in body for name in FAULTS):
        if sum(1 for name in FAULTS if _is_set(body.get(name))) > 1:
            raise ControlError("choose one of status, timeout and drop")
        mode = replace(
            mode,
            status=None if body.get("status") is None else _status(body["status"], "status", low=400),
            timeout=_flag(body, "timeout"),
            drop=_flag(body, "drop"),
            times=None,
            retry_after=None,
        )
    if "times" in body:
        mode = replace(mode, times=_positive_int(body["times"], "times", allow_none=True))
    if "retry_after" in body:
        mode = replace(mode, retry_after=_non_negative_int(body["retry_after"], "retry_after"))
    if (mode.times is not None or mode.retry_after is not None) and mode.fault is None:
        raise ControlError("times and retry_after need a fault: status, timeout or drop")
    if mode.retry_after is not None and mode.fault != "status":
        raise ControlError("retry_after goes with status (e.g. 429 or 503)")
    return mode


class MockState:
    """Thread-safe recorder and mode holder shared by every connection of one mock server."""

    def __init__(self, max_events: int = 100_000) -> None:
        self.lock = threading.Lock()
        self.mode = Mode()
        self.events: deque[dict[str, Any]] = deque(maxlen=max_events)
        self.errors: deque[dict[str, Any]] = deque(maxlen=1_000)
        self.event_count = 0  # since the last reset, including events no longer retained
        self.error_count = 0
        self.requests = 0  # event posts, whatever their answer
        self.answers: dict[str, int] = {}  # by status code, plus "dropped" and "timed_out"
        # Set to let requests held by a timeout fault go (on reset, a mode change, or shutdown).
        self.release = threading.Event()

    # --- modes --------------------------------------------------------------------------------

    def configure(self, body: Any) -> Mode:
        with self.lock:
            new = parse_control(body, self.mode)
            if self.mode.timeout and not new.timeout:
                self._release_held()
            self.mode = new
            return new

    def decide(self) -> tuple[int, Decision]:
        """Count one event post and decide its fate; returns (request number, decision)."""
        with self.lock:
            self.requests += 1
            mode = self.mode
            decision = Decision(
                mode.fault, mode.status, mode.retry_after, mode.latency_ms, mode.require_auth, self.release
            )
            if mode.fault is not None and mode.times is not None:
                left = mode.times - 1
                self.mode = (
                    replace(mode, times=left)
                    if left > 0
                    else replace(mode, status=None, timeout=False, drop=False, times=None, retry_after=None)
                )
            return self.requests, decision

    def count_answer(self, answer: int | str) -> None:
        with self.lock:
            name = str(answer)
            self.answers[name] = self.answers.get(name, 0) + 1

    def health_status(self) -> int:
        return self.mode.health_status  # one attribute read: atomic, no lock needed

    # --- records ------------------------------------------------------------------------------

    def record_events(self, records: list[dict[str, Any]]) -> None:
        with self.lock:
            for record in records:
                self.event_count += 1
                record["seq"] = self.event_count
            self.events.extend(records)

    def record_error(self, record: dict[str, Any]) -> None:
        with self.lock:
            self.error_count += 1
            self.errors.append(record)

    def snapshot(self, limit: int | None = None) -> tuple[int, list[dict[str, Any]]]:
        """(events recorded since the reset, the retained events: all, or the last ``limit``)."""
        with self.lock:
            if limit is None:
                return self.event_count, list(self.events)
            # Only the tail is copied: cheap even with the whole buffer full.
            tail = list(itertools.islice(reversed(self.events), limit))
            return self.event_count, tail[::-1]

    def error_snapshot(self) -> tuple[int, list[dict[str, Any]]]:
        with self.lock:
            return self.error_count, list(self.errors)

    def clear_events(self) -> int:
        """Forget events, errors and counters (not the mode); returns how many events there were."""
        with self.lock:
            count = self.event_count
            self.events.clear()
            self.errors.clear()
            self.event_count = self.error_count = self.requests = 0
            self.answers = {}
            return count

    def status(self) -> dict[str, Any]:
        with self.lock:
            return {
                "mode": self.mode.public(),
                "stats": {
                    "requests": self.requests,
                    "answers": dict(self.answers),
                    "events": self.event_count,
                    "errors": self.error_count,
                },
            }

    def release_all(self) -> None:
        with self.lock:
            self._release_held()

    def _release_held(self) -> None:
        # Requests already held keep a reference to the old event; new ones wait on a fresh one.
        self.release.set()
        self.release = threading.Event()


# --- validation helpers -------------------------------------------------------------------------


def _is_set(value: Any) -> bool:
    return value is not None and value is not False


def _flag(body: dict[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ControlError(f"{name} must be true or false")
    return value


def _status(value: Any, name: str, *, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= 599:
        raise ControlError(f"{name} must be an HTTP status between {low} and 599")
    return value


def _positive_int(value: Any, name: str, *, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ControlError(f"{name} must be a whole number of at least 1")
    return value


def _non_negative_int(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ControlError(f"{name} must be a number of at least 0")
    return int(value)

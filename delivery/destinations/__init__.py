"""Where the forwarder delivers alerts: the destination interface, and the registry of destinations.

A destination holds everything about one receiver of alerts that the forwarder (delivery/forwarder.py)
must not know:

- its name, which keys its delivery state in Redis: circuit breaker ``breaker:<name>``, rate limit
  ``ratelimit:forwarder:<name>``, retry schedule ``retry:<name>``, in-flight record ``inflight:<name>``,
  dead-letter queue ``dlq:<name>`` and idempotency records ``delivered:<name>:<event id>``;
- its stream and consumer group;
- the runtime settings (configcenter keys) of its batch size, rate limit, timeout, retries and breaker;
- its URL, its credential (a secret of core.secrets, CURRENT and NEXT) and the headers that carry it;
- the mapping of alerts to one request body and its content headers.

What stays in the forwarder is the same for every destination: the gate, breaker, rate limit, retries,
DLQ, takeover, resent markers, the HTTP transport and the retry with the credential's other value on a
401 or 403. A new destination is a module with a :class:`Destination` subclass whose instance it
registers (:func:`register`), named in BUILTIN_MODULES; its forwarder runs as ``run_forwarder
--destination <name>`` (docs/adr/ADR-013-destinations.md).

Each destination reads a stream of its own with one consumer group: a forwarder deletes the entries it
acknowledges and puts due retries back into its stream, which a second group on the same stream would
lose or see twice. The alerter adds each alert to the stream of every destination named in
``settings.MUTT_DESTINATIONS``; both sides derive the stream from the name (``core.contracts.destination_stream``:
Moogsoft's is the alert stream itself).

The forwarder binds a destination's methods once, when it is made: a request costs no lookups here.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from configcenter.runtime import SettingsView
from core import contracts, streams
from core.redis import key

DEFAULT = contracts.DEFAULT_DESTINATION
# The modules that register the destinations MUTT ships with, imported on the registry's first use.
BUILTIN_MODULES = ("delivery.destinations.moogsoft",)


class PayloadError(ValueError):
    """An alert that cannot be mapped (a required field is missing or malformed): a permanent failure."""


class UnknownDestination(LookupError):
    def __init__(self, name: str) -> None:
        super().__init__(f"no destination named {name!r}; registered: {', '.join(sorted(_registry)) or 'none'}")


class SecretHeaders(dict[str, str]):
    """Request headers holding a credential: printing or logging them shows only the header names."""

    def __repr__(self) -> str:
        return "{" + ", ".join(f"{name!r}: '***'" for name in self) + "}"

    __str__ = __repr__


@dataclass(frozen=True, slots=True)
class Request:
    """One request body ready to POST; the forwarder adds the credential's headers (never stored here)."""

    body: bytes
    headers: dict[str, str]  # content headers: Content-Type, Accept, User-Agent
    scheme: str = ""  # which credential headers the request needs (Moogsoft: its format)


@dataclass(frozen=True, slots=True)
class SettingKeys:
    """The runtime settings (configcenter keys) that govern delivery to one destination."""

    batch_size: str  # alerts per request
    rate_limit: str  # requests per rate_period, shared by every forwarder of the destination
    rate_period: str
    timeout: str  # of one request
    max_retries: str  # retries before an alert is dead-lettered
    retry_base_delay: str
    retry_max_delay: str
    breaker_threshold: str  # consecutive failures that open the breaker
    breaker_timeout: str  # how long it stays open before one probe


class Destination(ABC):
    """One receiver of alerts. Subclasses set the class attributes and implement :meth:`url` and
    :meth:`build`; one with a credential sets ``secret`` and implements :meth:`credential_headers`."""

    name: str  # keys its Redis state, its dead-letter stream among them
    title: str  # for people: log lines
    setting_keys: SettingKeys
    secret: str | None = None  # the secret holding its credential (core.secrets), None for none
    # Not a choice: the alerter creates (and, after a loss, recreates) every destination's stream with
    # this group, knowing destinations by name only (core.contracts.destination_stream).
    group: Final = contracts.FORWARDERS_GROUP

    def stream(self) -> str:
        """The stream its forwarders read: alerts for this destination, due retries, alerts given back."""
        return streams.destination_stream(self.name)

    def dlq_stream(self) -> str:
        return streams.dlq_stream(self.name)

    def inflight_key(self) -> str:
        """The in-flight record: a hash whose fields are the stream entry ids of POSTs not yet confirmed."""
        return key("inflight", self.name)

    def delivered_prefix(self) -> str:
        """The idempotency records' key prefix: ``<prefix><event id>`` exists once the alert is delivered."""
        return key("delivered", self.name, "")

    def delivered_key(self, event_id: str) -> str:
        return self.delivered_prefix() + event_id

    @abstractmethod
    def url(self, settings: SettingsView) -> str:
        """Where requests go, under the settings of this step."""

    @abstractmethod
    def build(self, alerts: Sequence[Mapping[str, Any]], settings: SettingsView) -> Request:
        """One request carrying every alert in ``alerts`` (never more than the batch size, never none).

        Raises PayloadError naming the first alert that cannot be mapped; the forwarder then maps the alerts
        one by one and dead-letters those that fail (reason ``malformed``)."""

    def credential_headers(self, request: Request, secret: str) -> SecretHeaders:
        """The headers carrying ``secret`` (a value of ``self.secret``) for ``request``; none when empty."""
        return SecretHeaders()


# --- the registry ---------------------------------------------------------------------------------

_registry: dict[str, Destination] = {}
D = TypeVar("D", bound=Destination)


def register(destination: D) -> D:
    """Make ``destination`` known by its name (its module calls this when imported); returns it."""
    known = _registry.get(destination.name)
    if known is not None and known is not destination:
        raise ValueError(f"a destination named {destination.name!r} is already registered")
    _registry[destination.name] = destination
    return destination


def unregister(name: str) -> None:
    """Forget a destination (a test's own, once the test is done)."""
    _registry.pop(name, None)


def get_destination(name: str = DEFAULT) -> Destination:
    """The destination registered as ``name``; UnknownDestination when there is none."""
    _load_builtins()
    try:
        return _registry[name]
    except KeyError:
        raise UnknownDestination(name) from None


def destinations() -> list[Destination]:
    """Every registered destination, by name."""
    _load_builtins()
    return [_registry[name] for name in sorted(_registry)]


def _load_builtins() -> None:
    for module in BUILTIN_MODULES:
        importlib.import_module(module)  # registers on first import; a dictionary lookup afterwards

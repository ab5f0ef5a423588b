"""An alert's Moogsoft signature (the key Moogsoft folds events into one alert by), and its description.

A rule may list its signature fields (``AlertRule.signature_fields``, comma-separated); the signature
is their values joined by ``:``. Fields:

* ``hostname``, ``rule`` (the rule's id), ``trap_oid``, ``source_type``, ``message``;
* ``interface``: the interface the event is about: the value of an interface varbind (``ifIndex``,
  ``ifName``, ``ifDescr``, by name or by their IF-MIB column OIDs), else the name after
  "Interface"/"port" in the message (``Interface Gi0/1,`` gives ``Gi0/1``). When the event names none,
  this part is left out (not left empty);
* ``var:<name>``: the value of the varbind ``<name>`` (its key, or the OID it starts with).

The default, for a rule that lists none, is ``hostname, rule, trap_oid, interface``: the earlier
``host:rule:trap_oid``, plus the interface when the event names one, so that every interface of a device
is its own alert (a linkDown on Gi0/1 and one on Gi0/2 are two problems) while a down and the matching
up of one interface still share a signature; an event that names no interface keeps the earlier signature exactly. Other
missing values are empty parts. See docs/adr/ADR-005-moogsoft-event-fields.md.
"""

from __future__ import annotations

import re
from typing import Any

from core.varbinds import varbinds

DEFAULT_FIELDS = ("hostname", "rule", "trap_oid", "interface")
PLAIN_FIELDS = frozenset({"hostname", "rule", "trap_oid", "source_type", "message", "interface"})
VAR_PREFIX = "var:"
MAX_FIELDS = 10
# IF-MIB: ifIndex, ifDescr (ifTable) and ifName (ifXTable) columns; a varbind's OID adds the instance.
_INTERFACE_OIDS = ("1.3.6.1.2.1.2.2.1.1", "1.3.6.1.2.1.2.2.1.2", "1.3.6.1.2.1.31.1.1.1.1")
_INTERFACE_NAMES = ("ifindex", "ifname", "ifdescr")
# "Interface Gi0/1," / "interface GigabitEthernet1/0/24" / "port 3": the word ("Interface"/"interface",
# "Port"/"port", at the start of a word), blanks, then a name that runs to a space or comma and holds a digit
# (so "interface is down" names none). The words are found with ``str.find`` and only the name with a
# regular expression: a single expression (``\b(?:[Ii]nterface|[Pp]ort)\s+(...)``) tried the alternation at
# every I/i/P/p of the message and cost 2.4 times as much per alert (callgrind: regex matching was most of
# the alerter's added instructions per event).
_NAME_AFTER_WORD = re.compile(r"\s+([A-Za-z0-9][\w/.:-]*)")
_MESSAGE_SCAN = 500  # the interface is named near the start; never scan a huge message whole
_RENDERED_VARBINDS = 10


def parse_fields(text: str) -> tuple[str, ...]:
    """The signature fields of a rule's ``signature_fields`` text; empty text is the default.

    Raises ValueError naming the first unknown field."""
    fields = tuple(part.strip() for part in text.split(",") if part.strip())
    if not fields:
        return DEFAULT_FIELDS
    if len(fields) > MAX_FIELDS:
        raise ValueError(f"at most {MAX_FIELDS} signature fields")
    for name in fields:
        if name.startswith(VAR_PREFIX):
            if not name[len(VAR_PREFIX) :].strip():
                raise ValueError(f"{name!r} names no varbind: write var:<varbind name or OID>")
        elif name not in PLAIN_FIELDS:
            known = ", ".join(sorted(PLAIN_FIELDS))
            raise ValueError(f"unknown signature field {name!r}; use {known} or var:<varbind>")
    return fields


def build(
    fields: tuple[str, ...],
    *,
    hostname: str,
    rule_id: int | None,
    trap_oid: str,
    source_type: str,
    message: str,
    variables: Any,
) -> str:
    """The signature: the values of ``fields`` joined by ``:``."""
    if fields == DEFAULT_FIELDS:  # most rules: the same parts as the loop below, without it (once per alert)
        rule = "" if rule_id is None else str(rule_id)
        interface = interface_of(message, variables)
        return f"{hostname}:{rule}:{trap_oid}:{interface}" if interface else f"{hostname}:{rule}:{trap_oid}"
    parts = []
    for name in fields:
        if name == "hostname":
            parts.append(hostname)
        elif name == "rule":
            parts.append("" if rule_id is None else str(rule_id))
        elif name == "trap_oid":
            parts.append(trap_oid)
        elif name == "source_type":
            parts.append(source_type)
        elif name == "message":
            parts.append(message[:1000])
        elif name == "interface":
            interface = interface_of(message, variables)
            if interface:
                parts.append(interface)
        else:
            parts.append(varbind_value(variables, name[len(VAR_PREFIX) :].strip()))
    return ":".join(parts)


def interface_of(message: str, variables: Any) -> str:
    """The interface an event is about (an IF-MIB varbind, else the message's "Interface X"), or ""."""
    for name, value in varbinds(variables) if variables else ():  # most events have none: no generator
        lowered = name.lower()
        if lowered.startswith(_INTERFACE_NAMES) or name.lstrip(".").startswith(_INTERFACE_OIDS):
            return _text(value)
    name = _interface_in_message(message)
    return name if any(map(str.isdigit, name)) else ""  # map: no generator frame per character


def _interface_in_message(message: str) -> str:
    """The name after the first "Interface"/"port" word of ``message`` (within its first
    ``_MESSAGE_SCAN`` characters) that is followed by one, or ""."""
    find = message.find
    iface = find("nterface", 1, _MESSAGE_SCAN)
    port = find("ort", 1, _MESSAGE_SCAN)
    while iface > 0 or port > 0:  # the earlier of the two candidates first
        if port < 0 or 0 < iface < port:
            start, end, initials = iface - 1, iface + 8, "Ii"
            iface = find("nterface", iface + 1, _MESSAGE_SCAN)
        else:
            start, end, initials = port - 1, port + 3, "Pp"
            port = find("ort", port + 1, _MESSAGE_SCAN)
        if message[start] in initials and (start == 0 or not _is_word_char(message[start - 1])):
            found = _NAME_AFTER_WORD.match(message, end, _MESSAGE_SCAN)
            if found:
                return found.group(1).rstrip(".,:;")
    return ""


def _is_word_char(char: str) -> bool:
    """What a regular expression's ``\\w`` matches: a letter, a digit or "_"."""
    return char.isalnum() or char == "_"


def varbind_value(variables: Any, wanted: str) -> str:
    """The value of the varbind named ``wanted`` (exactly, or the OID it starts with), or ""."""
    wanted = wanted.lstrip(".")
    for name, value in varbinds(variables):
        bare = name.lstrip(".")
        if bare == wanted or bare.startswith(wanted + "."):
            return _text(value)
    return ""


def render_trap(trap_oid: str, variables: Any) -> str:
    """A trap as text, for an alert whose event has no message: ``trap <oid> name=value ...``."""
    pairs = []
    for index, (name, value) in enumerate(varbinds(variables)):
        if index == _RENDERED_VARBINDS:
            pairs.append("...")
            break
        pairs.append(f"{name}={_text(value)}")
    return " ".join([f"trap {trap_oid}", *pairs]) if trap_oid else " ".join(pairs)


def _text(value: Any) -> str:
    return "" if value is None else str(value)[:200]

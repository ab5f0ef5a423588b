"""Parsers for the fields of an incoming event: each returns the canonical value or raises FieldError.

Plain functions without Django, so the syslog and SNMP listeners can reuse them. The messages are
what API clients read, so they say what is accepted.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import idna


class FieldError(ValueError):
    """The value of one field is unusable; ``str(error)`` is the message for the client."""


HOSTNAME_MAX = 253  # DNS's limit on a name's text (RFC 1035), checked on the canonical form
SOURCE_TYPE_MAX = 50
OID_MAX = 255

SEVERITY_ERROR = "must be 0-7 or a name such as 'warning'"
FACILITY_ERROR = "must be 0-23 or a name such as 'local0'"
TIMESTAMP_ERROR = "must be an RFC 3339 / ISO 8601 date-time, or epoch seconds or milliseconds"
OID_ERROR = "must be a dotted numeric OID such as 1.3.6.1.6.3.1.1.5.3"
IP_ERROR = "must be an IPv4 or IPv6 address"
HOSTNAME_ERROR = (
    "must be a host name (labels of 1-63 letters, digits, '-' or '_' separated by dots, or an "
    "internationalised domain name) or an IPv4 or IPv6 address"
)
HOSTNAME_SPACE_ERROR = "must not contain spaces, line breaks or control characters"
HOSTNAME_LENGTH_ERROR = f"must be at most {HOSTNAME_MAX} characters once lower-cased and IDNA-encoded"

SEVERITIES: dict[str, int] = {
    "emerg": 0, "emergency": 0, "panic": 0,
    "alert": 1,
    "crit": 2, "critical": 2,
    "err": 3, "error": 3,
    "warn": 4, "warning": 4,
    "notice": 5,
    "info": 6, "informational": 6,
    "debug": 7,
}  # fmt: skip

# Names from syslog.h and RFC 5424 §6.2.1 (13-15 have no syslog.h name; these are rsyslog's).
FACILITIES: dict[str, int] = {
    "kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "security": 4, "syslog": 5, "lpr": 6,
    "news": 7, "uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11, "ntp": 12, "audit": 13, "logaudit": 13,
    "console": 14, "logalert": 14, "clock": 15,
    **{f"local{n}": 16 + n for n in range(8)},
}  # fmt: skip

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Epoch numbers at or above this are milliseconds: 1e11 s is the year 5138, 1e11 ms is March 1973.
_MILLISECONDS_FROM = 100_000_000_000
_NUMERIC = re.compile(r"[+-]?([0-9]+)(?:\.[0-9]+)?")
# int() refuses text over 4,300 digits with a plain ValueError, and 10**20 is past the calendar in
# seconds and in milliseconds: longer whole parts are out of range without converting them.
_EPOCH_DIGITS_MAX = 20
_CODE_DIGITS_MAX = 2  # severities and facilities are 0-23
_OID = re.compile(r"[0-9]+(?:\.[0-9]+)*")
_ISO_MAX = 64
# The longest address text is 45 characters (IPv6 with an embedded IPv4 address); the rest is room
# for a zone ("fe80::1%eth0"). Longer text is refused before the cache below can keep it.
_IP_TEXT_MAX = 64


# Any text longer than this is refused before normalising, so the work per event stays bounded; the
# real bound (HOSTNAME_MAX) is checked on the canonical form, which mapping may shorten or lengthen.
_HOSTNAME_TEXT_MAX = 1024
_HOSTNAME_SPACE = re.compile(r"[\x00-\x20\x7f-\x9f]|\s")
# Labels of 1-63 letters, digits, '-' or '_' (underscores are common in device names, and the dev-host
# and device-team lists accept them), separated by single dots.
_ASCII_NAME = re.compile(r"[a-z0-9_-]{1,63}(?:\.[a-z0-9_-]{1,63})*")
_DOTTED_QUAD = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+")


def hostname(value: Any) -> str:
    """The canonical host name (ADR-006): stripped; IPv6 literals compressed without brackets; names
    lower-case, without a root dot, internationalised ones as IDNA A-labels (``xn--…``), at most
    :data:`HOSTNAME_MAX` characters of ASCII, so the audit log's 255-character column always holds it."""
    if not isinstance(value, str):
        raise FieldError("must be a string")
    text = value.strip()
    if not text:
        raise FieldError("must not be empty")
    if len(text) > _HOSTNAME_TEXT_MAX:
        raise FieldError(HOSTNAME_LENGTH_ERROR)
    canonical, error = _canonical_hostname(text)
    if canonical is None:
        raise FieldError(error)
    return canonical


# A few thousand devices send most events: the same names come back again and again.
@functools.lru_cache(maxsize=4096)
def _canonical_hostname(text: str) -> tuple[str | None, str]:
    """``(canonical, "")`` or ``(None, the error)``: errors are cached too, as a repeating sender repeats them."""
    if _HOSTNAME_SPACE.search(text):
        return None, HOSTNAME_SPACE_ERROR
    if ":" in text:  # only an IPv6 literal has a colon
        literal = text[1:-1] if text.startswith("[") and text.endswith("]") else text
        address = _canonical_ip(literal) if len(literal) <= _IP_TEXT_MAX and "%" not in literal else None
        return (address, "") if address is not None and ":" in address else (None, HOSTNAME_ERROR)
    return _canonical_name(text[:-1] if text.endswith(".") else text)  # without the root dot of an FQDN


def _canonical_name(name: str) -> tuple[str | None, str]:
    if name.isascii():
        name = name.lower()
        if not _ASCII_NAME.fullmatch(name):
            return None, HOSTNAME_ERROR
    else:
        try:
            # UTS 46 maps first (lower-case, width, normalisation), so every spelling of a name is one name.
            name = idna.encode(name, uts46=True).decode("ascii")
        except (idna.IDNAError, UnicodeError):
            return None, HOSTNAME_ERROR
    if len(name) > HOSTNAME_MAX:
        return None, HOSTNAME_LENGTH_ERROR
    if _DOTTED_QUAD.fullmatch(name) and _canonical_ip(name) is None:
        return None, "must be a valid IPv4 address when it is four dotted numbers"
    return name, ""


def message(value: Any) -> str:
    if not isinstance(value, str):
        raise FieldError("must be a string")
    return value


def timestamp(value: Any) -> datetime:
    """An aware UTC datetime from ISO 8601 text or epoch seconds/milliseconds (number or numeric text)."""
    if isinstance(value, bool):
        raise FieldError(TIMESTAMP_ERROR)
    if isinstance(value, int | float):
        return _from_epoch(value)
    if not isinstance(value, str):
        raise FieldError(TIMESTAMP_ERROR)
    text = value.strip()
    numeric = _NUMERIC.fullmatch(text)
    if numeric:
        if len(numeric.group(1)) > _EPOCH_DIGITS_MAX:
            raise FieldError("is out of range")
        return _from_epoch(float(text) if "." in text else int(text))
    if not text or len(text) > _ISO_MAX or not text[0].isdigit():
        raise FieldError(TIMESTAMP_ERROR)
    try:
        # RFC 3339 allows a lower-case "t" and "z"; fromisoformat only the upper-case ones.
        parsed = datetime.fromisoformat(text.upper())
    except ValueError:
        raise FieldError(TIMESTAMP_ERROR) from None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise FieldError("is out of range") from None


def _from_epoch(number: float) -> datetime:
    try:
        if abs(number) >= _MILLISECONDS_FROM:
            return _EPOCH + timedelta(milliseconds=number)
        return _EPOCH + timedelta(seconds=number)
    except (OverflowError, ValueError):
        raise FieldError("is out of range") from None


def isoformat(moment: datetime) -> str:
    """``2024-05-01T10:00:00.000000+00:00``: UTC, always with microseconds, so the text sorts."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def syslog_severity(value: Any) -> int:
    return _code(value, SEVERITIES, 7, SEVERITY_ERROR)


def facility(value: Any) -> int:
    return _code(value, FACILITIES, 23, FACILITY_ERROR)


def _code(value: Any, names: dict[str, int], highest: int, error: str) -> int:
    if isinstance(value, bool):
        raise FieldError(error)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in names:
            return names[text]
        if not (len(text) <= _CODE_DIGITS_MAX and text.isascii() and text.isdigit()):
            raise FieldError(error)
        value = int(text)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or not 0 <= value <= highest:
        raise FieldError(error)
    return value


def trap_oid(value: Any) -> str:
    """Dotted numeric OID; one leading dot (net-snmp's notation) is dropped."""
    if not isinstance(value, str):
        raise FieldError(OID_ERROR)
    text = value.strip()
    if text.startswith("."):
        text = text[1:]
    if len(text) > OID_MAX or not _OID.fullmatch(text):
        raise FieldError(OID_ERROR)
    return text


def source_type(value: Any) -> str:
    if not isinstance(value, str):
        raise FieldError("must be a string")
    text = value.strip()
    if not text:
        raise FieldError("must not be empty")
    if len(text) > SOURCE_TYPE_MAX:
        raise FieldError(f"must be at most {SOURCE_TYPE_MAX} characters")
    return text


def source_ip(value: Any) -> str:
    """The address in its canonical text form (IPv6 compressed and lower-case)."""
    if not isinstance(value, str):
        raise FieldError(IP_ERROR)
    text = value.strip()
    if len(text) > _IP_TEXT_MAX:
        raise FieldError(IP_ERROR)
    canonical = _canonical_ip(text)
    if canonical is None:
        raise FieldError(IP_ERROR)
    return canonical


# Senders come from a few thousand addresses, and parsing one costs more than the rest of an event.
@functools.lru_cache(maxsize=4096)
def _canonical_ip(text: str) -> str | None:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def variables(value: Any) -> dict[str, Any] | list[Any]:
    if not isinstance(value, dict | list):
        raise FieldError("must be an object or an array")
    return value

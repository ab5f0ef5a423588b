"""Signature fields: parsing, the interface an event names, and the rendered trap."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rules import signature


def build(fields: str, **event):
    values = {
        "hostname": "sw1",
        "rule_id": 7,
        "trap_oid": "",
        "source_type": "syslog",
        "message": "",
        "variables": None,
    }
    return signature.build(signature.parse_fields(fields), **{**values, **event})


@pytest.mark.parametrize(
    ("message", "variables", "interface"),
    [
        ("%LINK-3-UPDOWN: Interface Gi0/1, changed state to down", None, "Gi0/1"),
        ("Line protocol on Interface GigabitEthernet1/0/24, changed state to up", None, "GigabitEthernet1/0/24"),
        ("port 3 flapping", None, "3"),
        ("the interface is down", None, ""),
        ("Transport 5 failed", None, ""),
        ("", {"ifIndex": 3, "ifOperStatus": 2}, "3"),
        ("", {"1.3.6.1.2.1.31.1.1.1.1.12": "xe-0/0/1"}, "xe-0/0/1"),
        ("", [{"oid": ".1.3.6.1.2.1.2.2.1.1.4", "value": 4}], "4"),
        ("", [["ifDescr", "eth0"]], "eth0"),
        ("Interface Gi0/9 down", {"sysUpTime": 5}, "Gi0/9"),
    ],
)
def test_the_interface_an_event_names(message, variables, interface):
    assert signature.interface_of(message, variables) == interface


def test_the_default_keeps_the_earlier_signature_when_no_interface_is_named():
    assert build("", message="power supply failed") == "sw1:7:"
    assert build("", message="Interface Gi0/2, changed state to down") == "sw1:7::Gi0/2"
    assert build("", trap_oid="1.3.6.1.6.3.1.1.5.3", variables={"ifIndex": 2}) == "sw1:7:1.3.6.1.6.3.1.1.5.3:2"


def test_listed_fields_and_varbinds():
    assert build("hostname, var:ifName", variables={"ifName": "Gi0/3"}) == "sw1:Gi0/3"
    assert build("hostname,var:1.3.6.1.2.1.2.2.1.1", variables={"1.3.6.1.2.1.2.2.1.1.5": 5}) == "sw1:5"
    assert build("source_type, message", message="m") == "syslog:m"
    assert build("var:missing, hostname") == ":sw1"


@pytest.mark.parametrize("text", ["hostname, colour", "var:", ",".join(["hostname"] * 11)])
def test_bad_fields_are_refused(text):
    with pytest.raises(ValueError, match=r"signature field|names no varbind|at most"):
        signature.parse_fields(text)


def test_a_trap_renders_its_oid_and_varbinds():
    assert signature.render_trap("1.3.6", {"ifIndex": 3}) == "trap 1.3.6 ifIndex=3"
    assert signature.render_trap("", None) == ""
    many = {f"v{i}": i for i in range(12)}
    assert signature.render_trap("1.3", many).endswith("v9=9 ...")


# The message scan was one regular expression; it is now str.find for the words and an expression for the
# name (faster per alert). The expression stays here as the definition the scan must agree with.
_DEFINITION = re.compile(r"\b(?:[Ii]nterface|[Pp]ort)\s+([A-Za-z0-9][\w/.:-]*)")
_TOKENS = [*"IiPpnterfacort _-/.,:;0123456789Gé\t\n", "Interface ", "port ", "xport ", "nterface", "ort"]
_WORDY = st.lists(st.sampled_from(_TOKENS), max_size=40).map("".join)


def _by_definition(message: str) -> str:
    found = _DEFINITION.search(message, 0, 500)
    name = found.group(1).rstrip(".,:;") if found else ""
    return name if any(map(str.isdigit, name)) else ""


@settings(max_examples=2000, deadline=None)
@given(prefix=_WORDY, suffix=_WORDY, padding=st.integers(min_value=0, max_value=520))
def test_the_message_scan_agrees_with_its_definition(prefix, suffix, padding):
    # Padding moves the words across the 500-character scan limit, where a name may be cut short.
    message = prefix + "x" * padding + suffix
    assert signature.interface_of(message, None) == _by_definition(message)

"""Deterministic, realistic benchmark data: hosts, network event messages and alert rules.

Everything comes from a seeded ``random.Random``, so every run matches the same events against the
same rules. Messages follow real Cisco IOS / NX-OS, Junos and Linux syslog formats plus SNMP traps;
roughly a third is noise no rule explains (cron, logins, PoE grants), as on a real collector.

Rules keep the issue's mix at every size: 60% contains, 30% regex (RE2), 10% OID prefix. The first
ten are the generic rules a small deployment has (link down, BGP down, failed logins, fans); larger
sets add the long tail a big rule base accumulates (specific mnemonics, interfaces, peers, users,
enterprise OID subtrees), most of which rarely or never fire.
"""

from __future__ import annotations

import functools
import random
import string
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

SEED = 20_240_601

# --- hosts ------------------------------------------------------------------------------------------

_FAMILIES: dict[str, list[str]] = {
    "ios": [f"core-rtr-{i:02d}" for i in range(1, 9)]
    + [f"dist-sw-{i:02d}" for i in range(1, 41)]
    + [f"acc-sw-{b}{i:03d}" for b in "abcd" for i in range(1, 51)],
    "nxos": [f"n9k-leaf-{i:02d}" for i in range(1, 61)],
    "junos": [f"mx-pe-{i:02d}" for i in range(1, 21)] + [f"srx-fw-{i:02d}" for i in range(1, 11)],
    "linux": [f"srv-{role}-{i:03d}" for role in ("db", "web", "app") for i in range(1, 21)],
}
ALL_HOSTS = [host for hosts in _FAMILIES.values() for host in hosts]


def dev_hosts() -> list[str]:
    """Every 25th host is a development host (its events use the rules' dev handling)."""
    return ALL_HOSTS[::25]


def device_teams() -> dict[str, str]:
    """A device team for every third host (the team when a rule names none)."""
    teams = ("network-ops", "dc-core", "wan", "server-ops")
    return {host: teams[i % len(teams)] for i, host in enumerate(ALL_HOSTS) if i % 3 == 0}


# --- message fields ---------------------------------------------------------------------------------

_USERS = ("admin", "netops", "jdoe", "asmith", "svc_backup", "ansible", "root", "oracle", "monitor", "noc")
_KEY_FINGERPRINTS = tuple(
    "".join(random.Random(n).choice(string.ascii_letters + string.digits) for _ in range(43)) for n in range(12)
)
_SERVICES = ("nginx", "postgresql", "sshd", "snmpd", "chronyd", "docker", "kubelet", "haproxy", "rsyslog")


def _ifname(rng: random.Random) -> str:
    kind = rng.choice(("GigabitEthernet", "GigabitEthernet", "TenGigabitEthernet", "FastEthernet"))
    return f"{kind}{rng.randint(0, 2)}/{rng.randint(0, 1)}/{rng.randint(1, 48)}"


def _ip(rng: random.Random) -> str:
    first = rng.choice(("10", "10", "172.16", "192.168", "203.0.113"))
    parts = first.split(".")
    while len(parts) < 3:
        parts.append(str(rng.randint(0, 255)))
    return ".".join([*parts, str(rng.randint(1, 254))])


# Cisco's dotted form. Flapping hosts and rogue DHCP servers are a few dozen MACs, not one per event.
_MACS = tuple(f"{random.Random(n).getrandbits(48):012x}" for n in range(64))
_MACS = tuple(f"{mac[0:4]}.{mac[4:8]}.{mac[8:12]}" for mac in _MACS)


def _mac(rng: random.Random) -> str:
    return rng.choice(_MACS)


_FIELDS: dict[str, Callable[[random.Random], str]] = {
    "if": _ifname,
    "nxif": lambda r: f"Ethernet{r.randint(1, 4)}/{r.randint(1, 48)}",
    "jif": lambda r: f"{r.choice(('ge', 'xe', 'et'))}-{r.randint(0, 5)}/{r.randint(0, 3)}/{r.randint(0, 47)}",
    "ip": _ip,
    "mac": _mac,
    "user": lambda r: r.choice(_USERS) if r.random() < 0.8 else f"netops{r.randint(1, 40)}",
    "svc": lambda r: r.choice(_SERVICES),
    "n": lambda r: str(r.randint(1, 16)),
    "pid": lambda r: str(r.randint(1000, 65000)),
    "port": lambda r: str(r.randint(1024, 65535)),
    "vlan": lambda r: str(r.randint(2, 4094)),
    "asn": lambda r: str(r.randint(64512, 65534)),
    "hex": lambda r: f"{r.getrandbits(32):08X}",
    "big": lambda r: str(r.randint(100_000, 9_999_999)),
    "updown": lambda r: "down" if r.random() < 0.55 else "up",
    "clock": lambda r: f"{r.randint(0, 23):02d}:{r.randint(0, 59):02d}:{r.randint(0, 59):02d} UTC Mon Jun 3 2024",
    "bgp": lambda r: r.choice(("Up", "Down BGP Notification sent", "Down Peer closed the session", "Down Hold Timer")),
    "ospf": lambda r: r.choice(("FULL to DOWN, Neighbor Down: Dead timer expired", "LOADING to FULL, Loading Done")),
    "hsrp": lambda r: r.choice(("Standby -> Active", "Active -> Speak", "Speak -> Standby")),
    "sha": lambda r: r.choice(_KEY_FINGERPRINTS),  # a fleet has a handful of SSH keys, not one per login
}


@dataclass(frozen=True)
class _Template:
    family: str
    text: str  # str.format with {field} names from _FIELDS
    severity: int | None
    weight: float
    trap_oid: str | None = None


# fmt: off
_TEMPLATES = [
    _Template("ios", "%LINK-3-UPDOWN: Interface {if}, changed state to {updown}", 3, 12),
    _Template("ios", "%LINEPROTO-5-UPDOWN: Line protocol on Interface {if}, changed state to {updown}", 5, 12),
    _Template("ios", "%BGP-5-ADJCHANGE: neighbor {ip} {bgp}", 5, 4),
    _Template("ios", "%OSPF-5-ADJCHG: Process {n}, Nbr {ip} on {if} from {ospf}", 5, 3),
    _Template("ios", "%SYS-5-CONFIG_I: Configured from console by {user} on vty{n} ({ip})", 5, 5),
    _Template("ios", "%SEC_LOGIN-5-LOGIN_SUCCESS: Login Success [user: {user}] [Source: {ip}] [localport: 22] at "
                     "{clock}", 5, 6),
    _Template("ios", "%SEC_LOGIN-4-LOGIN_FAILED: Login failed [user: {user}] [Source: {ip}] [localport: 22] "
                     "[Reason: Login Authentication Failed] at {clock}", 4, 3),
    _Template("ios", "%DUAL-5-NBRCHANGE: EIGRP-IPv4 {n}: Neighbor {ip} ({if}) is {updown}: holding time expired", 5, 2),
    _Template("ios", "%PLATFORM_ENV-1-FAN: Faulty fan{n} detected", 1, 0.3),
    _Template("ios", "%ENVMON-3-FAN_FAILED: Fan {n} not rotating", 3, 0.3),
    _Template("ios", "%C4K_IOSMODPORTMAN-4-TEMPERATUREHIGH: Module {n} temperature is high", 4, 0.3),
    _Template("ios", "%SW_MATM-4-MACFLAP_NOTIF: Host {mac} in vlan {vlan} is flapping between port {if} and port "
                     "{if}", 4, 2),
    _Template("ios", "%SPANTREE-2-BLOCK_BPDUGUARD: Received BPDU on port {if} with BPDU Guard enabled. Disabling "
                     "port.", 2, 0.5),
    _Template("ios", "%PM-4-ERR_DISABLE: bpduguard error detected on {if}, putting {if} in err-disable state", 4, 0.5),
    _Template("ios", "%HSRP-5-STATECHANGE: Vlan{vlan} Grp {n} state {hsrp}", 5, 1),
    _Template("ios", "%DHCP_SNOOPING-5-DHCP_SNOOPING_UNTRUSTED_PORT: DHCP_SNOOPING drop message on untrusted port, "
                     "message type: DHCPOFFER, MAC sa: {mac}", 5, 4),
    _Template("ios", "%ILPOWER-5-POWER_GRANTED: Interface {if}: Power granted", 5, 4),
    _Template("ios", "%CDP-4-NATIVE_VLAN_MISMATCH: Native VLAN mismatch discovered on {if} ({vlan}), with "
                     "dist-sw-01 {if} ({vlan}).", 4, 2),
    _Template("ios", "%SNMP-3-AUTHFAIL: Authentication failure for SNMP req from host {ip}", 3, 1.5),
    _Template("ios", "%IP-4-DUPADDR: Duplicate address {ip} on Vlan{vlan}, sourced by {mac}", 4, 1),
    _Template("ios", "%TRACK-6-STATE: {n} ip sla {n} reachability Up -> Down", 6, 1),
    _Template("ios", "%CRYPTO-4-RECVD_PKT_INV_SPI: decaps: rec'd IPSEC packet has invalid spi for destaddr={ip}, "
                     "prot=50, spi=0x{hex}({big}), srcaddr={ip}", 4, 1),
    _Template("ios", "%SSH-5-SSH2_SESSION: SSH2 Session request from {ip} (tty = 0) using crypto cipher "
                     "'aes256-ctr', hmac 'hmac-sha2-256' Succeeded", 5, 4),
    _Template("ios", "%SYS-6-LOGGINGHOST_STARTSTOP: Logging to host {ip} port 514 started - CLI initiated", 6, 1),
    _Template("nxos", "%ETHPORT-5-IF_DOWN_LINK_FAILURE: Interface {nxif} is down (Link failure)", 5, 3),
    _Template("nxos", "%ETHPORT-5-IF_UP: Interface {nxif} is up in mode access", 5, 3),
    _Template("nxos", "%VPC-2-PEER_KEEP_ALIVE_RECV_FAIL: In domain {n}, VPC peer keep-alive receive has failed", 2,
              0.3),
    _Template("nxos", "%AUTHPRIV-6-SYSTEM_MSG: pam_unix(dcos_sshd:session): session opened for user {user} by "
                      "(uid=0) - dcos_sshd[{pid}]", 6, 3),
    _Template("junos", "mib2d[{pid}]: SNMP_TRAP_LINK_DOWN: ifIndex {big}, ifAdminStatus up(1), ifOperStatus "
                       "down(2), ifName {jif}", 4, 3),
    _Template("junos", "rpd[{pid}]: BGP_NEIGHBOR_STATE_CHANGED: BGP peer {ip} (External AS {asn}) changed state "
                       "from Established to Idle (event RecvNotify) (instance master)", 4, 1.5),
    _Template("junos", "rpd[{pid}]: RPD_OSPF_NBRDOWN: OSPF neighbor {ip} (realm ospf-v2 {jif}.0 area 0.0.0.0) "
                       "state changed from Full to Down due to InactivityTimer (event reason: neighbor was "
                       "inactive and declared dead)", 4, 1),
    _Template("junos", "chassisd[{pid}]: CHASSISD_SNMP_TRAP7: SNMP trap generated: Power Supply failed "
                       "(jnxContentsContainerIndex 2, jnxContentsL1Index {n}, jnxContentsDescr PEM {n})", 2, 0.3),
    _Template("junos", "sshd[{pid}]: Failed password for {user} from {ip} port {port} ssh2", 4, 3),
    _Template("junos", "mgd[{pid}]: UI_COMMIT: User '{user}' requested 'commit' operation (comment: none)", 5, 2),
    _Template("junos", "alarmd[{pid}]: Alarm set: FPC color=RED, class=CHASSIS, reason=FPC {n} Major Errors", 2, 0.3),
    _Template("linux", "systemd[1]: {svc}.service: Main process exited, code=exited, status=1/FAILURE", 3, 2),
    _Template("linux", "CRON[{pid}]: (root) CMD (/usr/lib/sa/sa1 1 1)", 6, 6),
    _Template("linux", "sshd[{pid}]: Accepted publickey for {user} from {ip} port {port} ssh2: RSA SHA256:{sha}", 6,
              4),
    _Template("linux", "kernel: EXT4-fs error (device sda{n}): ext4_find_entry:1455: inode #{big}: comm {svc}: "
                       "reading directory lblock 0", 3, 0.5),
    _Template("linux", "kernel: Out of memory: Killed process {pid} ({svc}) total-vm:{big}kB, anon-rss:{big}kB", 3,
              0.5),
    _Template("linux", "chronyd[{pid}]: System clock wrong by {n}.{pid} seconds, adjustment started", 4, 1),
    # SNMP traps (about a tenth of the traffic): a varbind summary as the message, and the trap OID.
    _Template("ios", "linkDown ifIndex={big} ifAdminStatus=up ifOperStatus=down ifDescr={if}", None, 3,
              "1.3.6.1.6.3.1.1.5.3"),
    _Template("ios", "linkUp ifIndex={big} ifAdminStatus=up ifOperStatus=up ifDescr={if}", None, 2,
              "1.3.6.1.6.3.1.1.5.4"),
    _Template("ios", "authenticationFailure snmpTrapAddress={ip}", None, 1, "1.3.6.1.6.3.1.1.5.5"),
    _Template("ios", "ciscoEnvMonFanNotification ciscoEnvMonFanState=critical", None, 0.2,
              "1.3.6.1.4.1.9.9.13.3.0.4"),
    _Template("ios", "cbgpBackwardTransition cbgpPeerState=idle peer={ip}", None, 0.8, "1.3.6.1.4.1.9.9.187.0.2"),
    _Template("ios", "ciscoConfigManEvent ccmHistoryEventCommandSource=commandLine", None, 1.5,
              "1.3.6.1.4.1.9.9.43.2.0.1"),
    _Template("nxos", "clogMessageGenerated clogHistMsgText=Interface {nxif} is down", None, 1,
              "1.3.6.1.4.1.9.9.41.2.0.1"),
    _Template("junos", "jnxPowerSupplyFailure jnxContentsDescr=PEM {n}", None, 0.2, "1.3.6.1.4.1.2636.4.1.1"),
    _Template("junos", "jnxCmCfgChange jnxCmCfgChgEventSource=cli user={user}", None, 1, "1.3.6.1.4.1.2636.4.5.0.1"),
]
# fmt: on


@dataclass(frozen=True, slots=True)
class Sample:
    """One event's facts: what the engine matches on and what ingest would be sent."""

    hostname: str
    message: str
    trap_oid: str | None
    severity: int | None

    @property
    def source_type(self) -> str:
        return "snmp_trap" if self.trap_oid else "syslog"


def _render(template: _Template, rng: random.Random) -> str:
    names = [name for _, name, _, _ in string.Formatter().parse(template.text) if name]
    text = template.text
    for name in names:  # each occurrence gets its own value ("between port X and port Y")
        text = text.replace("{" + name + "}", _FIELDS[name](rng), 1)
    return text


@functools.cache
def samples(count: int, seed: int = SEED) -> tuple[Sample, ...]:
    """``count`` events drawn from the weighted templates, each on a host of the template's family."""
    rng = random.Random(seed)
    weights = [t.weight for t in _TEMPLATES]
    chosen = rng.choices(_TEMPLATES, weights=weights, k=count)
    return tuple(Sample(rng.choice(_FAMILIES[t.family]), _render(t, rng), t.trap_oid, t.severity) for t in chosen)


def event_item(sample: Sample, **extra: Any) -> dict[str, Any]:
    """The JSON object a sender posts to ``/api/v2/ingest`` for ``sample``."""
    item: dict[str, Any] = {"hostname": sample.hostname, "message": sample.message, "source_type": sample.source_type}
    if sample.severity is not None:
        item["syslog_severity"] = sample.severity
    if sample.trap_oid:
        item["trap_oid"] = sample.trap_oid
    item.update(extra)
    return item


# --- rules --------------------------------------------------------------------------------------

# fmt: off
# The ten generic rules: (match_type, pattern, prod_handling, team, severity). Mix 6 / 3 / 1.
_BASE_RULES = [
    ("contains", "changed state to down", "page_and_ticket", "network-ops", "major"),
    ("regex", r"%BGP-5-ADJCHANGE: neighbor \S+ Down", "page_and_ticket", "network-ops", "critical"),
    ("contains", "Dead timer expired", "page_and_ticket", "network-ops", "major"),
    ("contains", "Login failed", "ticket_only", "security", "warning"),
    ("regex", r"(?i)(faulty fan|fan \d+ not rotating|power supply failed)", "page_and_ticket", "dc-core", "critical"),
    ("contains", "err-disable", "ticket_only", "network-ops", "minor"),
    ("oid_prefix", "1.3.6.1.6.3.1.1.5", "ticket_only", "", ""),
    ("contains", "is flapping between port", "ticket_only", "network-ops", "warning"),
    ("regex", r"status=\d+/FAILURE|Out of memory: Killed process", "page_and_ticket", "server-ops", "major"),
    ("contains", "Line protocol on Interface", "ignore", "", ""),
]
_FACILITIES = (
    "LINK", "LINEPROTO", "BGP", "OSPF", "OSPFv3", "EIGRP", "DUAL", "SYS", "SEC_LOGIN", "PLATFORM_ENV", "ENVMON",
    "SW_MATM", "SPANTREE", "PM", "HSRP", "VRRP", "DHCP_SNOOPING", "ILPOWER", "CDP", "LLDP", "SNMP", "IP", "TRACK",
    "CRYPTO", "SSH", "ETHPORT", "VPC", "AUTHPRIV", "STACKMGR", "PLATFORM", "FIB", "QOS", "ACL", "IPSEC", "ISAKMP",
    "MPLS", "LDP", "BFD", "ISIS", "PIM", "IGMP", "NTP", "RADIUS", "TACACS", "AAA", "PARSER", "HA_EM", "C4K_EBM",
    "SFF8472", "TRANSCEIVER", "POWER", "FAN", "TEMP", "MODULE", "OIR", "REDUNDANCY", "CTS", "DOT1X", "MAB", "NAT",
)
_MNEMONICS = (
    "UPDOWN", "ADJCHANGE", "ADJCHG", "NBRCHANGE", "CONFIG_I", "LOGIN_FAILED", "LOGIN_SUCCESS", "FAN", "FAN_FAILED",
    "TEMPERATUREHIGH", "MACFLAP_NOTIF", "BLOCK_BPDUGUARD", "ERR_DISABLE", "STATECHANGE", "POWER_GRANTED",
    "POWER_DENIED", "NATIVE_VLAN_MISMATCH", "AUTHFAIL", "DUPADDR", "STATE", "RECVD_PKT_INV_SPI", "SSH2_SESSION",
    "IF_DOWN_LINK_FAILURE", "IF_UP", "PEER_KEEP_ALIVE_RECV_FAIL", "SYSTEM_MSG", "NOTIFICATION", "THRESHOLD",
    "PSECURE_VIOLATION", "BADSERVERTYPEERROR", "NO_BUFFER", "LOWMEM", "CPUHOG", "RESTART", "RELOAD", "SWITCHOVER",
    "PEER_DOWN", "SESSION_DOWN", "NEIGHBOR_DOWN", "LSA_FLOOD", "DUP_ROUTERID", "INVALID_CERT", "QUEUE_FULL",
    "TCAM_FULL", "CRC_ERRORS", "INPUT_ERRORS", "OVERRUN", "TX_FAULT", "RX_LOS", "LASER_BIAS", "VOLTAGE_LOW",
    "PS_FAIL", "PS_OK", "MODULE_REMOVED", "MODULE_INSERTED", "LICENSE_EXPIRED", "CERT_EXPIRING", "AUTH_FAIL",
)
_JUNOS_TAGS = (
    "SNMP_TRAP_LINK_DOWN", "SNMP_TRAP_LINK_UP", "BGP_NEIGHBOR_STATE_CHANGED", "RPD_OSPF_NBRDOWN", "RPD_OSPF_NBRUP",
    "CHASSISD_SNMP_TRAP7", "CHASSISD_FRU_OFFLINE_NOTICE", "UI_COMMIT", "UI_LOGIN_EVENT", "UI_AUTH_EVENT",
    "SSHD_LOGIN_FAILED", "RPD_BFD_SESSION_DOWN", "LACPD_TIMEOUT", "KERNEL_PANIC", "PFE_FW_SYSLOG_IP",
    "RT_FLOW_SESSION_DENY", "DCD_PARSE_EMERGENCY", "ALARMD_CONNECTION_FAILURE", "COSD_QUEUE_FULL", "RPD_LDP_NBRDOWN",
)
_PHRASES = (
    "Power granted", "Authentication failure for SNMP", "Duplicate address", "temperature is high",
    "Native VLAN mismatch", "keep-alive receive has failed", "session opened for user", "holding time expired",
    "Link failure", "invalid spi", "Clock Unsynchronized", "System clock wrong", "EXT4-fs error", "Major Errors",
    "Disabling port", "reachability Up -> Down", "Configured from console", "Loading Done", "Hold Timer",
    "Peer closed the session", "state Standby -> Active", "requested 'commit' operation", "Accepted publickey",
)
_ENTERPRISES = ("9.9", "2636.4", "30065.3", "25461.2", "12356.101", "3375.2", "11.2", "6527.3", "1916.1", "14988.1")
# fmt: on


# Long-tail patterns: (cumulative probability, generator). Most never fire, as in a big rule base.
_TAIL_CONTAINS: list[tuple[float, Callable[[random.Random], str]]] = [
    (0.45, lambda r: f"%{r.choice(_FACILITIES)}-{r.randint(0, 6)}-{r.choice(_MNEMONICS)}"),
    (0.60, lambda r: f"Interface {_ifname(r)}, changed state to down"),
    (0.72, lambda r: f"neighbor {_ip(r)}"),
    (0.82, lambda r: f"{r.choice(_JUNOS_TAGS)}: "),
    (0.92, lambda r: r.choice(_PHRASES)),
    (1.00, lambda r: f"user: {_FIELDS['user'](r)}]"),
]
_TAIL_REGEX: list[tuple[float, Callable[[random.Random], str]]] = [
    (0.25, lambda r: rf"%{r.choice(_FACILITIES)}-[0-{r.randint(2, 6)}]-{r.choice(_MNEMONICS)}"),
    (0.40, lambda r: rf"Interface (Gi|Te|Fa)\S*{r.randint(0, 2)}/{r.randint(0, 1)}/(4[0-8]|{r.randint(1, 39)}), "),
    (0.55, lambda r: rf"neighbor 10\.{r.randint(0, 255)}\.\d+\.\d+ (Up|Down)"),
    (0.65, lambda r: rf"Failed password for (invalid user )?{_FIELDS['user'](r)} from \S+"),
    (0.75, lambda r: rf"AS {_FIELDS['asn'](r)}\) changed state from Established"),
    (0.85, lambda r: rf"ifName (ge|xe|et)-{r.randint(0, 5)}/{r.randint(0, 3)}/\d+"),
    (0.93, lambda r: rf"{r.choice(_SERVICES)}\.service: Main process exited, code=\w+, status=[1-9]"),
    (1.00, lambda r: rf"Vlan{r.randint(2, 4094)} Grp \d+ state \w+ -> Active"),
]


def _pick_tail(table: list[tuple[float, Callable[[random.Random], str]]], rng: random.Random) -> str:
    roll = rng.random()
    return next(make for limit, make in table if roll < limit)(rng)


def _long_tail_oid(rng: random.Random) -> str:
    base = f"1.3.6.1.4.1.{rng.choice(_ENTERPRISES)}"
    return f"{base}.{rng.randint(1, 400)}" + (f".{rng.randint(0, 9)}" if rng.random() < 0.5 else "")


def _mix(count: int) -> list[str]:
    """Match types for ``count`` rules, 60/30/10, the first ten being the base rules' types."""
    base = [kind for kind, *_ in _BASE_RULES[:count]]
    contains = round(count * 0.6) - base.count("contains")
    regex = round(count * 0.3) - base.count("regex")
    oid = count - len(base) - contains - regex
    return base + ["contains"] * max(contains, 0) + ["regex"] * max(regex, 0) + ["oid_prefix"] * max(oid, 0)


@functools.cache
def rules(count: int, seed: int = SEED) -> tuple[dict[str, Any], ...]:
    """``count`` valid AlertRule field dicts (the model's ``clean()`` accepts each one)."""
    rng = random.Random(seed + count)
    kinds = _mix(count)
    tail = kinds[len(_BASE_RULES) :]
    rng.shuffle(tail)
    handlings = ("page_and_ticket", "ticket_only", "ticket_only", "page_only", "ignore", "ignore")
    teams = ("", "network-ops", "dc-core", "security", "wan", "server-ops")
    severities = ("", "critical", "major", "minor", "warning")
    made: list[dict[str, Any]] = []
    for index, (kind, pattern, handling, team, severity) in enumerate(_BASE_RULES[:count]):
        made.append(
            _rule(
                index,
                kind,
                pattern,
                handling=handling,
                team=team,
                severity=severity,
                priority=100 + index * 10,
                filter_=None,
            )
        )
    for offset, kind in enumerate(tail, start=len(made)):
        if kind == "oid_prefix":
            pattern = _long_tail_oid(rng)
        else:
            pattern = _pick_tail(_TAIL_CONTAINS if kind == "contains" else _TAIL_REGEX, rng)
        made.append(
            _rule(
                offset,
                kind,
                pattern,
                handling=rng.choice(handlings),
                team=rng.choice(teams),
                severity=rng.choice(severities),
                priority=rng.randint(1, 1000),
                filter_=rng.randint(0, 6) if rng.random() < 0.15 else None,
            )
        )
    return tuple(made)


def _rule(
    index: int, kind: str, pattern: str, *, handling: str, team: str, severity: str, priority: int, filter_: int | None
) -> dict[str, Any]:
    return {
        "name": f"bench-{index:05d} {kind}",
        "description": "benchmark rule",
        "match_type": kind,
        "match_string": "" if kind == "oid_prefix" else pattern,
        "trap_oid": pattern if kind == "oid_prefix" else "",
        "syslog_severity": filter_,
        "priority": priority,
        "prod_handling": handling,
        "dev_handling": "ticket_only" if handling != "ignore" else "ignore",
        "team_assignment": team,
        "severity": severity,
        "is_active": True,
    }

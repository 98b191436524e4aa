"""Which addresses may open a LAN session with this node: the IP allowlist.

Pure: rules in, decision out. The operator's rules (`rallypoint allow CIDR`, `deny CIDR`) are
matched by longest prefix, a deny winning a tie. While the operator has allowed nothing, the
private ranges are allowed by default (loopback, RFC 1918, link-local, unique local): a node
on a LAN works out of the box and never accepts sessions from the public internet. The first
`allow` replaces those defaults, so an allowlist means what it says."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from appliance.errors import InvalidInput

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_ALLOWED = tuple(
    ipaddress.ip_network(n)
    for n in ("127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", "::1/128", "fc00::/7", "fe80::/10")
)


@dataclass(frozen=True)
class NetworkRule:
    network: str  # normalised CIDR
    action: str  # "allow" | "deny"
    default: bool = False  # one of the built-in private ranges, in force while nothing is allowed


@dataclass(frozen=True)
class Decision:
    allowed: bool
    rule: NetworkRule | None  # the rule that decided; None when no rule matched (denied)


def parse_network(text: str) -> str:
    """A CIDR (or a single address) in its normal form; host bits must be zero."""
    try:
        return str(ipaddress.ip_network(text.strip(), strict=True))
    except ValueError as exc:
        raise InvalidInput(f"{text!r} is not a network in CIDR notation (like 10.1.0.0/16 or fd00::/8): {exc}") from exc


def effective_rules(rules: Sequence[NetworkRule]) -> list[NetworkRule]:
    """The operator's rules, plus the default private ranges while none of them allows."""
    if any(r.action == "allow" for r in rules):
        return list(rules)
    return [*rules, *(NetworkRule(str(n), "allow", default=True) for n in DEFAULT_ALLOWED)]


def decide(address: str, rules: Sequence[NetworkRule]) -> Decision:
    """Whether a session from `address` may start, by the longest matching prefix."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return Decision(False, None)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    best: tuple[int, bool, NetworkRule] | None = None
    for rule in effective_rules(rules):
        network = ipaddress.ip_network(rule.network)
        if ip.version == network.version and ip in network:
            rank = (network.prefixlen, rule.action == "deny")
            if best is None or rank > best[:2]:
                best = (*rank, rule)
    if best is None:
        return Decision(False, None)
    return Decision(best[2].action == "allow", best[2])

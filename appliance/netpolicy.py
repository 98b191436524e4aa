"""Which addresses may open a LAN session with this node: the IP allowlist.

Pure: rules in, decision out. The operator's rules (`rallypoint allow CIDR`, `deny CIDR`) are
matched by longest prefix, a deny winning a tie. While the operator has allowed nothing, the
networks this node's own interfaces are on are allowed by default, and so are the private
ranges (loopback, RFC 1918, CGNAT, link-local, unique local): a node on a LAN works out of the
box - also on a field network numbered outside the private ranges - and never talks to the
public internet beyond its own network. The first `allow` replaces those defaults, so an
allowlist means what it says. The rules apply to both directions: sessions this node accepts
and sessions it dials.

The interface networks are a parameter (`LocalNetwork`), gathered at the edge
(`sync.interfaces`)."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from appliance.errors import InvalidInput

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_ALLOWED = tuple(
    ipaddress.ip_network(n)
    for n in ("127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "169.254.0.0/16", "::1/128", "fc00::/7", "fe80::/10")
)


@dataclass(frozen=True)
class LocalNetwork:
    """A network one of this node's interfaces is on (its address with the interface's prefix)."""

    network: str  # normalised CIDR
    interface: str


class RuleAction(StrEnum):
    ALLOW = "allow"
    DENY = "deny"


@dataclass(frozen=True)
class NetworkRule:
    network: str  # normalised CIDR
    action: RuleAction
    default: bool = False  # a built-in default (a private range or an interface's network), in force while nothing is allowed
    interface: str | None = None  # for the default of an interface's network: the interface


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


def effective_rules(rules: Sequence[NetworkRule], local: Sequence[LocalNetwork] = ()) -> list[NetworkRule]:
    """The operator's rules, plus - while none of them allows - the networks of this node's
    interfaces (`local`) and the private ranges."""
    if any(r.action == RuleAction.ALLOW for r in rules):
        return list(rules)
    interfaces: dict[str, NetworkRule] = {}
    for net in local:
        if net.network not in interfaces and not _within_private(ipaddress.ip_network(net.network)):
            interfaces[net.network] = NetworkRule(net.network, RuleAction.ALLOW, default=True, interface=net.interface)
    return [*rules, *interfaces.values(), *(NetworkRule(str(n), RuleAction.ALLOW, default=True) for n in DEFAULT_ALLOWED)]


def _within_private(network: Network) -> bool:
    """Whether a private range already holds all of `network` (its own default adds nothing)."""
    return any(network.version == private.version and network.subnet_of(private) for private in DEFAULT_ALLOWED)  # type: ignore[arg-type]


def decide(address: str, rules: Sequence[NetworkRule], local: Sequence[LocalNetwork] = ()) -> Decision:
    """Whether a session with `address` (either direction) may start, by the longest matching
    prefix."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return Decision(False, None)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    best: tuple[int, bool, NetworkRule] | None = None
    for rule in effective_rules(rules, local):
        network = ipaddress.ip_network(rule.network)
        if ip.version == network.version and ip in network:
            rank = (network.prefixlen, rule.action == RuleAction.DENY)
            if best is None or rank > best[:2]:
                best = (*rank, rule)
    if best is None:
        return Decision(False, None)
    return Decision(best[2].action == RuleAction.ALLOW, best[2])


def refusal_reason(address: str, decision: Decision) -> str:
    """Why a session with `address` is refused, and the command that allows it."""
    host = _host_network(address)
    if decision.rule is None:
        return f"address {address} is not in the allowlist (to allow it: rallypoint allow {host})"
    if decision.rule.network == host:
        return f"address {address} is denied by rule {decision.rule.network} (to allow it: rallypoint allow --remove {host})"
    return f"address {address} is denied by rule {decision.rule.network} (to allow it: rallypoint allow {host})"


def _host_network(address: str) -> str:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return f"{ip}/{ip.max_prefixlen}"

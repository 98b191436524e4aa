"""The IP allowlist's decisions (appliance.netpolicy), by table and by property: the default
allows this node's own interface networks and the private, CGNAT, link-local and loopback
ranges (IPv4 and IPv6), nothing else; an operator's allow replaces all of it."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from appliance.netpolicy import DEFAULT_ALLOWED, LocalNetwork, NetworkRule, decide, effective_rules, refusal_reason

FIELD_NETWORK = LocalNetwork("198.18.0.0/24", "eth0")  # a field network numbered outside the private ranges
FIELD_V6 = LocalNetwork("2001:db8:5::/64", "eth0")

ALLOWED_BY_DEFAULT = [
    "127.0.0.1", "127.9.9.9", "10.1.2.3", "172.16.0.1", "172.31.255.254", "192.168.1.1",
    "100.64.0.1", "100.127.255.254",  # CGNAT
    "169.254.10.20", "::1", "fe80::1", "fe80::1%eth0", "fd12:3456::1", "fc00::1",
    "::ffff:10.0.0.1",  # IPv4-mapped: decided as the IPv4 address
]
REFUSED_BY_DEFAULT = ["8.8.8.8", "100.63.255.255", "100.128.0.1", "172.32.0.1", "192.0.2.7", "198.18.0.9", "2001:db8::1", "::ffff:8.8.8.8", "not an address"]


@pytest.mark.parametrize("address", ALLOWED_BY_DEFAULT)
def test_the_private_ranges_are_allowed_by_default(address: str) -> None:
    assert decide(address, []).allowed


@pytest.mark.parametrize("address", REFUSED_BY_DEFAULT)
def test_other_addresses_are_refused_by_default(address: str) -> None:
    assert not decide(address, []).allowed


def test_the_networks_of_this_nodes_interfaces_are_allowed_by_default() -> None:
    local = [FIELD_NETWORK, FIELD_V6, LocalNetwork("10.9.0.0/16", "eth1")]
    allowed = decide("198.18.0.9", [], local)
    assert allowed.allowed and allowed.rule == NetworkRule("198.18.0.0/24", "allow", default=True, interface="eth0")
    assert decide("2001:db8:5::42", [], local).allowed
    assert not decide("198.18.1.9", [], local).allowed and not decide("2001:db8:6::1", [], local).allowed
    # A network a private range already holds adds no rule of its own.
    assert [r.network for r in effective_rules([], local) if r.interface] == ["198.18.0.0/24", "2001:db8:5::/64"]


def test_an_operator_allow_replaces_every_default_and_a_deny_beats_the_interface_default() -> None:
    operator = [NetworkRule("10.20.0.0/16", "allow")]
    assert decide("10.20.1.1", operator, [FIELD_NETWORK]).allowed
    assert not decide("198.18.0.9", operator, [FIELD_NETWORK]).allowed
    assert not decide("127.0.0.1", operator, [FIELD_NETWORK]).allowed
    denied = decide("198.18.0.9", [NetworkRule("198.18.0.0/24", "deny")], [FIELD_NETWORK])
    assert not denied.allowed and denied.rule == NetworkRule("198.18.0.0/24", "deny")


def test_a_refusal_names_the_command_that_allows_the_address() -> None:
    assert refusal_reason("198.18.0.9", decide("198.18.0.9", [])) == (
        "address 198.18.0.9 is not in the allowlist (to allow it: rallypoint allow 198.18.0.9/32)"
    )
    assert "rallypoint allow 2001:db8::1/128" in refusal_reason("2001:db8::1", decide("2001:db8::1", []))
    assert "rallypoint allow 8.8.8.8/32" in refusal_reason("::ffff:8.8.8.8", decide("::ffff:8.8.8.8", []))
    by_rule = [NetworkRule("127.0.0.0/8", "deny")]
    assert refusal_reason("127.0.0.1", decide("127.0.0.1", by_rule)) == (
        "address 127.0.0.1 is denied by rule 127.0.0.0/8 (to allow it: rallypoint allow 127.0.0.1/32)"
    )
    host_rule = [NetworkRule("127.0.0.1/32", "deny")]
    assert refusal_reason("127.0.0.1", decide("127.0.0.1", host_rule)).endswith("rallypoint allow --remove 127.0.0.1/32)")


ipv4 = st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address)
ipv6 = st.integers(0, 2**128 - 1).map(ipaddress.IPv6Address)


@st.composite
def interface_networks(draw: st.DrawFn) -> LocalNetwork:
    address = draw(st.one_of(ipv4, ipv6))
    prefix = draw(st.integers(8 if address.version == 4 else 16, address.max_prefixlen))
    return LocalNetwork(str(ipaddress.ip_network((address, prefix), strict=False)), "eth0")


@given(st.one_of(ipv4, ipv6), st.lists(interface_networks(), max_size=3))
def test_by_default_exactly_the_private_ranges_and_the_interface_networks_are_allowed(address: ipaddress.IPv4Address | ipaddress.IPv6Address, local: list[LocalNetwork]) -> None:
    networks = [*DEFAULT_ALLOWED, *(ipaddress.ip_network(n.network) for n in local)]
    decided_as = address.ipv4_mapped or address if isinstance(address, ipaddress.IPv6Address) else address  # a mapped IPv4 address is decided as IPv4
    expected = any(decided_as.version == n.version and decided_as in n for n in networks)
    assert decide(str(address), [], local).allowed == expected


@given(st.one_of(ipv4, ipv6), st.lists(interface_networks(), max_size=3))
def test_a_refused_address_is_allowed_by_the_command_its_refusal_names(address: ipaddress.IPv4Address | ipaddress.IPv6Address, local: list[LocalNetwork]) -> None:
    decision = decide(str(address), [], local)
    if decision.allowed:
        return
    command = refusal_reason(str(address), decision).rsplit("rallypoint allow ", 1)[1].rstrip(")")
    assert decide(str(address), [NetworkRule(command, "allow")], local).allowed

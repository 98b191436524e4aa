"""The LAN commands from the command line: the IP allowlist (admins only, audited) and `peers`."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from appliance import netpolicy
from appliance.node import Node
from sync.interfaces import interface_networks
from tests.conftest import PASSPHRASE, make_workspace, run_cli


def ok(result) -> str:  # type: ignore[no-untyped-def]
    assert result.returncode == 0, result.stderr
    return result.stdout


def homes(tmp_path: Path) -> tuple[Path, Path]:
    async def make() -> None:
        alpha, bravo = await make_workspace(tmp_path, "bravo")
        async with alpha, bravo:
            await alpha.directory.add_user("carol", "member")
            await alpha.chat.create_channel("general")
            await alpha.chat.post_many("general", ["one", "two", "three"])

    asyncio.run(make())
    return tmp_path / "alpha", tmp_path / "bravo"


def test_allowlist_rules_replace_the_private_default_and_are_audited(tmp_path: Path) -> None:
    alpha, bravo = homes(tmp_path)
    defaults = json.loads(ok(run_cli(alpha, "allow", "--list", "--json")))
    # The private ranges, and the networks of this host's interfaces that they do not hold.
    interfaces = [n.network for n in interface_networks() if not any(r.network == n.network for r in netpolicy.effective_rules([]))]
    assert {r["network"] for r in defaults if not r["interface"]} == {str(n) for n in netpolicy.DEFAULT_ALLOWED} and all(r["default"] for r in defaults)
    assert {r["network"] for r in defaults if r["interface"]} <= set(interfaces)

    ok(run_cli(alpha, "allow", "10.20.0.0/16"))
    ok(run_cli(alpha, "deny", "10.20.9.0/24"))
    rules = json.loads(ok(run_cli(alpha, "allow", "--list", "--json")))
    assert [(r["network"], r["action"], r["default"]) for r in rules] == [("10.20.0.0/16", "allow", False), ("10.20.9.0/24", "deny", False)]
    parsed = [netpolicy.NetworkRule(r["network"], r["action"]) for r in rules]
    assert netpolicy.decide("10.20.1.7", parsed).allowed
    assert not netpolicy.decide("10.20.9.7", parsed).allowed  # the longer prefix wins
    assert not netpolicy.decide("192.168.1.5", parsed).allowed  # the default is gone once something is allowed

    ok(run_cli(alpha, "allow", "--remove", "10.20.0.0/16"))
    after = json.loads(ok(run_cli(alpha, "allow", "--list", "--json")))
    assert any(r["default"] for r in after)  # nothing allowed any more: the private default is back

    bad = run_cli(alpha, "allow", "10.20.0.1/16")
    assert bad.returncode == 1 and "not a network in CIDR notation" in bad.stderr and bad.stderr.count("\n") == 1

    refused = run_cli(bravo, "deny", "0.0.0.0/0")  # bravo's own user is a member
    assert refused.returncode == 1 and "admin role" in refused.stderr
    audit = json.loads(ok(run_cli(alpha, "audit", "--json")))
    assert ("network_rule", {"network": "10.20.9.0/24", "action": "deny"}) in [(e["action"], e["detail"]) for e in audit]
    audit = json.loads(ok(run_cli(bravo, "audit", "--json")))
    assert any(e["action"] == "permission_denied" and "network rule" in str(e["detail"]) for e in audit)


def test_peers_lists_the_workspace_nodes_with_trust_and_how_far_behind(tmp_path: Path) -> None:
    alpha, bravo = homes(tmp_path)
    listed = json.loads(ok(run_cli(alpha, "peers", "--json")))
    (peer,) = listed
    assert peer["name"] == "bravo-node" and peer["trust"] == "trusted" and peer["trusted"] is True
    assert peer["last_sync"] is None and peer["address"] is None
    assert peer["behind"] > 3  # nothing acknowledged yet: everything, directory included
    text = ok(run_cli(alpha, "peers"))
    assert "bravo-node" in text and "never" in text


def test_peers_shows_why_a_trusted_peer_is_refused_and_the_command_that_allows_it(tmp_path: Path) -> None:
    alpha, bravo = homes(tmp_path)
    (peer,) = json.loads(ok(run_cli(alpha, "peers", "--json")))
    assert peer["refused"] is None

    async def seen_at(address: str) -> None:
        async with await Node.open(alpha, PASSPHRASE) as node:
            await node.peers.note_lan_peer(peer["node_id"], node.identity.workspace_id, address, 7373)

    # mDNS saw bravo at an address of TEST-NET-2: no private range, no network of this host.
    asyncio.run(seen_at("198.51.100.7"))
    (refused,) = json.loads(ok(run_cli(alpha, "peers", "--json")))
    assert refused["refused"] == "address 198.51.100.7 is not in the allowlist (to allow it: rallypoint allow 198.51.100.7/32)"
    assert "not synced by LAN: address 198.51.100.7 is not in the allowlist (to allow it: rallypoint allow 198.51.100.7/32)" in ok(run_cli(alpha, "peers"))
    ok(run_cli(alpha, "allow", "198.51.100.7/32"))
    (allowed,) = json.loads(ok(run_cli(alpha, "peers", "--json")))
    assert allowed["refused"] is None
    asyncio.run(seen_at("127.0.0.1"))  # the operator's allow replaced the defaults: loopback is refused now
    (loopback,) = json.loads(ok(run_cli(alpha, "peers", "--json")))
    assert "rallypoint allow 127.0.0.1/32" in loopback["refused"]

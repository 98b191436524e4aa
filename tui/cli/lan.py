"""Commands of the LAN: `serve` (the node headless, syncing live), the peers it knows, and the
allowlist of networks it holds sessions with."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from typing import TYPE_CHECKING, Any

from appliance.errors import NodeLocked
from appliance.model import iso_utc
from appliance.netpolicy import NetworkRule
from sync.defaults import DEFAULT_PORT
from sync.interfaces import interface_networks
from tui.cli.output import emit
from tui.cli.parsing import Command
from tui.cli.unlock import with_node
from tui.errors import CliError
from tui.text import printable

if TYPE_CHECKING:  # each command imports what it uses when it runs: `--help` loads none of it
    from appliance.node import Node
    from sync import lan


async def cmd_serve(args: argparse.Namespace) -> None:
    """Runs the node headless until SIGTERM or SIGINT: LAN discovery and sync, one line per event."""
    import asyncio

    from sync import lan


    def report(event: lan.LanEvent) -> None:
        emit(args, {"event": type(event).__name__, "at": time.time(), **_event_json(event)}, _event_text(event))
        sys.stdout.flush()

    async def run(node: Node) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        config = lan.LanConfig(bind=args.bind, port=args.port, discovery=not args.no_mdns)
        async with lan.LanService(node, config, on_event=report) as service:
            for target in args.peer or ():
                host, _, port = target.rpartition(":")
                if not host or not port.isdigit():
                    raise CliError(f"--peer {target!r}: expected ADDRESS:PORT")
                service.dial(host.strip("[]"), int(port))
            emit(args, {"event": "Listening", "node_id": node.identity.node_id, "address": args.bind, "port": service.port}, f"node {node.identity.node_id} listening on {args.bind}:{service.port}")
            sys.stdout.flush()
            waits = [asyncio.create_task(stop.wait()), asyncio.create_task(service.ended.wait())]
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiting in waits:
                    waiting.cancel()
        if service.end_reason is not None:
            raise NodeLocked(service.end_reason)
        emit(args, {"event": "Stopped"}, "stopped")

    await with_node(args, run, sign_in=args.as_user is not None)  # LAN sync signs as the node, not as a user


def _event_json(event: lan.LanEvent) -> dict[str, Any]:
    from sync import lan

    if isinstance(event, lan.PeerDiscovered):
        peer = event.peer
        return {"node_id": peer.node_id, "workspace_id": peer.workspace_id, "addresses": list(peer.addresses), "port": peer.port, "same_workspace": event.same_workspace}
    return {k: list(v) if isinstance(v, tuple) else v for k, v in vars(event).items()}


def _event_text(event: lan.LanEvent) -> str:
    from sync import lan

    if isinstance(event, lan.PeerDiscovered):
        where = f"{event.peer.addresses[0] if event.peer.addresses else '?'}:{event.peer.port}"
        return f"discovered {event.peer.node_id} at {where}" + ("" if event.same_workspace else f" (workspace {event.peer.workspace_id}: not synced)")
    if isinstance(event, lan.PeerLost):
        return f"lost {event.node_id}"
    if isinstance(event, lan.SessionUp):
        return f"session with {event.node_id} at {event.address} ({'we dialled' if event.initiator else 'it dialled'})"
    if isinstance(event, lan.SessionDown):
        return f"session with {event.node_id} ended: {printable(event.reason)}"
    if isinstance(event, lan.Received):
        return f"received {event.changes} change(s), {event.messages} new message(s) from {event.node_id}"
    if isinstance(event, lan.Wiped):
        return f"stopping: {printable(event.reason)}"
    if isinstance(event, lan.RefusalsSummarised):
        return event.summary
    return f"refused {event.address}{' (' + event.node_id + ')' if event.node_id else ''}: {printable(event.reason)}"


async def cmd_peers(args: argparse.Namespace) -> None:
    async def run(node: Node) -> None:
        rows = await node.peers.peer_overview(interface_networks())
        payload = [
            {
                "node_id": r.node_id,
                "name": r.name,
                "trust": r.trust,
                "trusted": r.trust == "trusted",
                "address": r.address,
                "port": r.port,
                "last_seen": iso_utc(r.last_seen),
                "last_sync": iso_utc(r.last_sync),
                "last_courier": iso_utc(r.last_courier),
                "behind": r.behind,
                "conflict": r.conflict,
                "refused": r.refused,
            }
            for r in rows
        ]

        def when(ms: int | None) -> str:
            return (iso_utc(ms) or "never")[:16].replace("T", " ")

        lines = [f"{'NODE':<23} {'NAME':<14} {'TRUST':<15} {'ADDRESS':<21} {'LAST SYNC':<16} {'COURIER':<16} BEHIND"]
        for r in rows:
            address = f"{r.address}:{r.port}" if r.address else "-"
            behind = "-" if r.behind is None else f"{r.behind} change(s)"
            lines.append(f"{r.node_id:<23} {printable(r.name)[:14]:<14} {r.trust:<15} {address:<21} {when(r.last_sync):<16} {when(r.last_courier):<16} {behind}")
            if r.conflict:
                lines.append(f"  {printable(r.conflict)}")
            if r.refused:
                lines.append(f"  not synced by LAN: {printable(r.refused)}")
        emit(args, payload, "\n".join(lines) if rows else "no peers known yet")

    await with_node(args, run)


async def cmd_allow(args: argparse.Namespace) -> None:
    async def run(node: Node) -> None:
        if args.list or not (args.network or args.remove):
            rules = await node.peers.network_rules(interface_networks())
            emit(
                args,
                [{"network": r.network, "action": r.action, "default": r.default, "interface": r.interface} for r in rules],
                "\n".join(f"{r.action:<6} {r.network}" + _default_note(r) for r in rules) or "no rules: every LAN session is refused",
            )
            return
        if args.remove:
            network = await node.peers.set_network_rule(args.remove, None)
            emit(args, {"removed": network}, f"rule for {network} removed")
            return
        network = await node.peers.set_network_rule(args.network, "allow")
        emit(args, {"allowed": network}, f"LAN sessions with {network} allowed, both directions (a running node applies it to new connections)")

    await with_node(args, run)


def _default_note(rule: NetworkRule) -> str:
    if not rule.default:
        return ""
    return f"  (default while nothing is allowed: the network of {rule.interface})" if rule.interface else "  (default while nothing is allowed)"


async def cmd_deny(args: argparse.Namespace) -> None:
    async def run(node: Node) -> None:
        network = await node.peers.set_network_rule(args.network, "deny")
        emit(args, {"denied": network}, f"LAN sessions with {network} denied, both directions (a running node applies it to new connections)")

    await with_node(args, run)


def _serve_arguments(parser: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"TCP port for sessions (default {DEFAULT_PORT}; 0: any free port, mDNS tells peers)")
    parser.add_argument("--bind", default="0.0.0.0", metavar="ADDR", help="address to listen on; also the only interface mDNS uses (default: all)")
    parser.add_argument("--peer", action="append", metavar="ADDR:PORT", help="also keep a session with this address (for routed networks without mDNS)")
    parser.add_argument("--no-mdns", action="store_true", help="neither advertise nor browse")


def _allow_arguments(parser: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    parser.add_argument("network", nargs="?", metavar="CIDR")
    parser.add_argument("--list", action="store_true", help="show the rules in force")
    parser.add_argument("--remove", metavar="CIDR", help="remove the rule for this network")


def _deny_arguments(parser: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    parser.add_argument("network", metavar="CIDR")


SERVE = Command("serve", "run headless: advertise on the LAN, find peers, sync with them live (until SIGTERM)", cmd_serve, _serve_arguments)
PEERS = Command("peers", "discovered and known peers: trust, address, last sync, how far behind", cmd_peers)
ALLOW = Command("allow", "admin: allow LAN sessions with a network (CIDR), incoming and dialled; --list shows the rules", cmd_allow, _allow_arguments)
DENY = Command("deny", "admin: refuse LAN sessions with a network (CIDR), incoming and dialled; beats a shorter allow", cmd_deny, _deny_arguments)

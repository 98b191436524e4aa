"""Test driver for sync.discovery, run inside a network namespace by tests/system/test_discovery.py.

    python tests/discovery_driver.py run --node ID --ws ID --port P --interface 127.0.0.1 --duration 20
        Runs a Discovery for at most --duration seconds (or until SIGTERM/SIGINT, which stop it
        cleanly, goodbye included) and prints one JSON object per line: {"event": "ready"},
        {"event": "seen", ...PeerSeen fields}, {"event": "gone", "node_id": ...}, {"event": "stats",
        ...} every --stats-every seconds and once at the end, {"event": "error", "message": ...}
        when discovery fails, and {"event": "exit"} last.

    python tests/discovery_driver.py spoof --names 2000 --seconds 3 --interface 127.0.0.1
        Floods the mDNS group with crafted responses (a raw UDP socket, zeroconf's record classes)
        for thousands of distinct instance names with long TTLs: some valid-looking with random node
        ids, most malformed in one way or another, plus garbage packets. Prints {"event": "spoofed"}.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import random
import signal
import socket
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from zeroconf import DNSAddress, DNSOutgoing, DNSPointer, DNSService, DNSText  # noqa: E402

from appliance import ids  # noqa: E402
from sync.discovery import SERVICE_TYPE, Advert, Discovery, DiscoveryEvent, PeerSeen  # noqa: E402
from sync.errors import DiscoveryError  # noqa: E402

MDNS = ("224.0.0.251", 5353)
LONG_TTL = 0x7FFFFFFF
_CLASS_IN, _CLASS_UNIQUE = 1, 0x8000
_TYPE_A, _TYPE_PTR, _TYPE_TXT, _TYPE_SRV = 1, 12, 16, 33
_FLAGS_RESPONSE = 0x8400  # QR + AA


def emit(**fields: Any) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return -1


def sizes(discovery: Discovery) -> dict[str, int]:
    """zeroconf's state that a flood could grow (test introspection of private attributes)."""
    azc = discovery._azc
    browser = discovery._browser
    if azc is None or browser is None:
        return {}
    cache = azc.zeroconf.cache
    return {
        "cache_names": len(cache.names()),
        "cache_records": sum(len(cache.async_entries_with_name(n)) for n in cache.names()),
        "scheduled": len(browser.query_scheduler._query_heap),
        "scheduled_aliases": len(browser.query_scheduler._next_scheduled_for_alias),
    }


def report(discovery: Discovery) -> None:
    traced = tracemalloc.get_traced_memory()[0] // 1024 if tracemalloc.is_tracing() else -1
    emit(
        event="stats",
        peers=[p.node_id for p in discovery.peers()],
        stats=dataclasses.asdict(discovery.stats),
        rss_kb=rss_kb(),
        traced_kb=traced,
        **sizes(discovery),
    )


async def run(args: argparse.Namespace) -> int:
    if args.trace_memory:
        tracemalloc.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def on_event(event: DiscoveryEvent) -> None:
        if isinstance(event, PeerSeen):
            emit(event="seen", **dataclasses.asdict(event))
        else:
            emit(event="gone", node_id=event.node_id)

    advert = Advert(args.node, args.ws, args.port)
    try:
        async with Discovery(advert, on_event, interfaces=args.interface or None, max_peers=args.max_peers, max_pending=args.max_pending) as discovery:
            emit(event="ready")
            deadline = loop.time() + args.duration
            while not stop.is_set() and loop.time() < deadline:
                timeout = min(args.stats_every or args.duration, deadline - loop.time())
                try:
                    await asyncio.wait_for(stop.wait(), max(timeout, 0))
                except TimeoutError:
                    pass
                if args.stats_every:
                    report(discovery)
            report(discovery)
    except DiscoveryError as exc:
        emit(event="error", message=str(exc))
        return 2
    finally:
        emit(event="exit")
    return 0


def random_key_id(rng: random.Random) -> str:
    return ids.key_id(rng.randbytes(32))


def txt(**items: str) -> bytes:
    out = b""
    for key, value in items.items():
        item = f"{key.rstrip('_')}={value}".encode()
        out += bytes([len(item)]) + item
    return out


def records_for(i: int, rng: random.Random, valid_every: int) -> list[Any]:
    """The records announcing spoofed name number i: one valid-looking advert every `valid_every`
    names, the others broken in turn."""
    node, ws = random_key_id(rng), random_key_id(rng)
    kind = "valid" if i % valid_every == 0 else ("bad-instance", "bad-version", "other-node", "duplicate-key", "port-0", "ptr-only", "no-address", "long-label")[i % 8]
    instance = {"bad-instance": f"junk-{i}", "long-label": "X" * 63}.get(kind, node)
    name = f"{instance}.{SERVICE_TYPE}"
    host = f"spoof-{i}.local."
    text = {
        "bad-version": txt(v="2", node=node, ws=ws),
        "other-node": txt(v="1", node=random_key_id(rng), ws=ws),
        "duplicate-key": txt(v="1", node=node, ws=ws) + txt(node=random_key_id(rng)),
    }.get(kind, txt(v="1", node=node, ws=ws))
    port = 0 if kind == "port-0" else 1024 + i % 60000
    out: list[Any] = [DNSPointer(SERVICE_TYPE, _TYPE_PTR, _CLASS_IN, LONG_TTL, name)]
    if kind != "ptr-only":
        out.append(DNSService(name, _TYPE_SRV, _CLASS_IN | _CLASS_UNIQUE, LONG_TTL, 0, 0, port, host))
        out.append(DNSText(name, _TYPE_TXT, _CLASS_IN | _CLASS_UNIQUE, LONG_TTL, text))
    if kind not in ("ptr-only", "no-address"):
        address = bytes([10, 200, (i >> 8) & 255, i & 255])
        out.append(DNSAddress(host, _TYPE_A, _CLASS_IN | _CLASS_UNIQUE, LONG_TTL, address))
    return out


def spoof(args: argparse.Namespace) -> int:
    rng = random.Random(args.seed)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((args.interface, 5353))  # responses from the mDNS port, as a real responder's
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(args.interface))
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 255)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
    packets: list[bytes] = []
    per_packet = 6
    for start in range(0, args.names, per_packet):
        out = DNSOutgoing(_FLAGS_RESPONSE, True)
        for i in range(start, min(start + per_packet, args.names)):
            for record in records_for(i, rng, args.valid_every):
                out.add_answer_at_time(record, 0)
        for packet in out.packets():
            packets.append(packet)
            if len(packets) % 10 == 0:
                packets.append(rng.randbytes(rng.randint(0, 600)))  # garbage
            if len(packets) % 15 == 0:
                packets.append(packet[: rng.randint(12, len(packet) - 1)])  # truncated
    deadline = time.monotonic() + args.seconds
    sent = 0
    start_time = time.monotonic()
    for n, packet in enumerate(packets):
        target = start_time + args.seconds * n / len(packets)
        delay = target - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        if time.monotonic() > deadline + 5:
            break  # bounded even if the machine is slow
        try:
            sock.sendto(packet, MDNS)
            sent += 1
        except OSError:
            pass
    emit(event="spoofed", names=args.names, packets=sent, of=len(packets), seconds=round(time.monotonic() - start_time, 2))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("--node", required=True)
    r.add_argument("--ws", required=True)
    r.add_argument("--port", type=int, default=4242)
    r.add_argument("--interface", action="append")
    r.add_argument("--duration", type=float, default=20.0)
    r.add_argument("--max-peers", type=int, default=256)
    r.add_argument("--max-pending", type=int, default=32)
    r.add_argument("--stats-every", type=float, default=0.0)
    r.add_argument("--trace-memory", action="store_true")
    s = sub.add_parser("spoof")
    s.add_argument("--names", type=int, default=2000)
    s.add_argument("--seconds", type=float, default=3.0)
    s.add_argument("--interface", default="127.0.0.1")
    s.add_argument("--valid-every", type=int, default=10)
    s.add_argument("--seed", type=int, default=os.getpid())
    args = parser.parse_args()
    if args.command == "run":
        return asyncio.run(run(args))
    return spoof(args)


if __name__ == "__main__":
    sys.exit(main())

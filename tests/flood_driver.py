"""Test driver for tests/system/test_lan_flood.py: floods a LAN service on loopback with one kind of
hostile connection for a bounded time and number of connections, from its own process.

    python tests/flood_driver.py KIND --port P --seconds S [--at-least N] [--workspace-key HEX]

KIND:
  addresses  TCP connections from thousands of loopback source addresses (127.77.x.y), held
             open and silent until the service drops them, then opened again;
  slowloris  connections from 64 addresses that trickle a HELLO one byte every half second,
             opened again when dropped;
  unknown    complete handshakes signed by fresh random node keys (the workspace key is known:
             a former member's, say), from 16 addresses, as fast as it can.

The flood lasts S seconds, and longer if it has not yet opened N connections (a busy machine
gives a niced driver little CPU), but never past CAP_S.
Prints one JSON line at the end: {"kind", "connections", "seconds"}. Every connection goes to
127.0.0.1:P and nowhere else."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import nacl.signing  # noqa: E402

from sync import wire  # noqa: E402

MAX_CONNECTIONS = 200_000  # a bound on the whole flood, whatever the time
OPEN_AT_ONCE = {"addresses": 400, "slowloris": 400, "unknown": 32}
SOURCES = {"addresses": 4000, "slowloris": 64, "unknown": 16}
TRICKLE_S = 0.5
HOLD_S = 10.0  # a held connection gives up after this even if the service keeps it
CAP_S = 30.0  # no flood outlasts this, whatever --seconds and --at-least ask


def source(kind: str, n: int) -> str:
    second = {"addresses": 77, "slowloris": 78, "unknown": 79}[kind]
    index = n % SOURCES[kind]
    return f"127.{second}.{index // 250}.{index % 250 + 1}"


async def one(kind: str, port: int, n: int, workspace_key: bytes, deadline: float) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source(kind, n), 0))
    try:
        async with asyncio.timeout(max(0.0, min(HOLD_S, deadline - time.monotonic()))):
            if kind == "addresses":
                await reader.read(1)
            elif kind == "slowloris":
                hello = wire.Initiator(workspace_key, nacl.signing.SigningKey.generate(), os.urandom(32), incarnation=os.urandom(16)).hello()
                for byte in hello[:-1]:
                    writer.write(bytes([byte]))
                    await writer.drain()
                    await asyncio.sleep(TRICKLE_S)
                await reader.read(1)
            else:
                initiator = wire.Initiator(workspace_key, nacl.signing.SigningKey.generate(), os.urandom(32), incarnation=os.urandom(16))
                writer.write(initiator.hello())
                initiator.read_response(await reader.readexactly(wire.RESPONSE_BYTES))
                writer.write(initiator.auth()[0])
                await writer.drain()
                await reader.read(1)
    finally:
        writer.close()


async def flood(kind: str, port: int, seconds: float, at_least: int, workspace_key: bytes) -> int:
    started = time.monotonic()
    opened = 0
    running: set[asyncio.Task[None]] = set()

    def end() -> float:
        return started + (seconds if opened >= at_least else CAP_S)

    while time.monotonic() < end() and opened < MAX_CONNECTIONS:
        while len(running) < OPEN_AT_ONCE[kind] and opened < MAX_CONNECTIONS:
            task = asyncio.create_task(one(kind, port, opened, workspace_key, started + CAP_S))
            running.add(task)
            opened += 1
        done, running = await asyncio.wait(running, timeout=max(0.0, end() - time.monotonic()), return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            with contextlib.suppress(Exception):
                task.result()  # refused, reset, timed out: the flood goes on
    for task in running:
        task.cancel()
    await asyncio.gather(*running, return_exceptions=True)
    return opened


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=sorted(OPEN_AT_ONCE))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--at-least", type=int, default=0)
    parser.add_argument("--workspace-key", default="00" * 32)
    args = parser.parse_args()
    started = time.monotonic()
    connections = asyncio.run(flood(args.kind, args.port, args.seconds, args.at_least, bytes.fromhex(args.workspace_key)))
    print(json.dumps({"kind": args.kind, "connections": connections, "seconds": round(time.monotonic() - started, 2)}), flush=True)


if __name__ == "__main__":
    main()

"""LAN floods against a real `rallypoint serve` on loopback, with a legitimate peer syncing
beside it (issue 13 point 13). Each flood comes from its own process (tests/flood_driver.py),
bounded in time and connections:

- connections from thousands of source addresses, held open and silent;
- slowloris: HELLOs trickled a byte at a time from 64 addresses;
- complete handshakes signed by random unknown keys.

Under each: the legitimate peer's posts reach the server within PROPAGATION_P99_S at p99 (or
FLOOD_SLOWDOWN times the quiet p50 measured first, where the machine is slower than that allows); a new
legitimate session starts; the server's resident memory stays within RSS_HEADROOM of its
baseline and comes back within RSS_RETURN of it afterwards. Over all three, the audit log grows
by a bounded number of entries, the floods summarised."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from appliance.node import Node
from sync.lan import LanConfig, LanEvent, LanService, SessionUp
from tests.conftest import PASSPHRASE, make_workspace
from tests.flood_driver import CAP_S  # a niced driver on a busy machine may need all of it to open MIN_CONNECTIONS

pytestmark = [pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the server's memory in /proc"), pytest.mark.timeout(300)]

MiB = 1024 * 1024
FLOOD_S = 4.0
PROPAGATION_P99_S = 0.2
FLOOD_SLOWDOWN = 12  # on a slow or busy machine the bound is this many times the quiet p50 of the same run
RSS_HEADROOM = 64 * MiB
RSS_RETURN = 12 * MiB  # "back at its baseline": what Python's allocator keeps of a flood (3-8 MiB here; the test's own posts take <1)
RSS_RETURN_WITHIN_S = 30.0  # the service gives memory back once an interval (10 s) passed without a flood
NEW_SESSION_WITHIN_S = 5.0
MIN_CONNECTIONS = {"addresses": 1000, "slowloris": 300, "unknown": 300}  # the flood really happened
MAX_AUDIT_ENTRIES = 80  # refusals over the three floods: a few reported one by one, the rest summarised
SUMMARISED = {"too many pending handshakes", "shed for 2 s after a failed handshake"}
PEER = LanConfig(bind="127.0.0.1", port=0, discovery=False, backoff_min_s=0.1, backoff_max_s=0.5)
REPO = Path(__file__).resolve().parents[2]


def rallypoint() -> list[str]:
    executable = shutil.which("rallypoint", path=str(Path(sys.executable).parent))
    return [executable] if executable else [sys.executable, "-m", "tui.cli"]


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Server:
    """`rallypoint serve --json` on loopback; its events read as they come."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.events: list[dict[str, Any]] = []
        self.changed = asyncio.Condition()
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for line in self.proc.stdout:
            if line.startswith(b"{"):
                async with self.changed:
                    self.events.append(json.loads(line))
                    self.changed.notify_all()

    async def next_event(self, kind: str, after: int, timeout: float) -> tuple[int, dict[str, Any]]:
        """The first event of `kind` at or after index `after`, and its index."""
        async with asyncio.timeout(timeout), self.changed:
            while True:
                for index in range(after, len(self.events)):
                    if self.events[index]["event"] == kind:
                        return index, self.events[index]
                after = len(self.events)
                await self.changed.wait()


@contextlib.asynccontextmanager
async def serving(home: Path) -> AsyncIterator[Server]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RALLYPOINT_")}
    env |= {"RALLYPOINT_HOME": str(home), "RALLYPOINT_PASSPHRASE": PASSPHRASE, "PYTHONUNBUFFERED": "1"}
    proc = await asyncio.create_subprocess_exec(*rallypoint(), "serve", "--port", "0", "--bind", "127.0.0.1", "--no-mdns", "--json", env=env, cwd=REPO, stdout=asyncio.subprocess.PIPE)
    server = Server(proc)
    try:
        yield server
    finally:
        if proc.returncode is None:
            proc.terminate()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 10)
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        server.reader.cancel()


async def propagation(bravo: Node, server: Server, text: str) -> float:
    """Seconds from bravo's having stored a post to the server's having imported it."""
    after = len(server.events)
    await bravo.chat.post("general", text)
    started = time.time()
    _, received = await server.next_event("Received", after, timeout=10)
    return float(received["at"]) - started


async def flood(kind: str, port: int, workspace_key: bytes) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(REPO / "tests" / "flood_driver.py"),
        kind,
        "--port",
        str(port),
        "--seconds",
        str(FLOOD_S),
        "--at-least",
        str(MIN_CONNECTIONS[kind]),
        "--workspace-key",
        workspace_key.hex(),
        stdout=asyncio.subprocess.PIPE,
        preexec_fn=lambda: os.nice(19),  # the attacker is another machine: here it must not take the server's CPU
    )
    out, _ = await asyncio.wait_for(proc.communicate(), CAP_S + 30)
    assert proc.returncode == 0
    result: dict[str, Any] = json.loads(out)
    return result


async def refusal_entries(home: Path) -> list[tuple[str, dict[str, Any]]]:
    async with await Node.open(home, PASSPHRASE) as node:
        return [(e.action, e.detail) for e in await node.audit.entries() if e.action in ("lan_refused", "lan_refusals_summarised")]


async def test_floods_leave_a_legitimate_peer_syncing_and_the_server_bounded(tmp_path: Path) -> None:
    alpha, bravo, charlie = await make_workspace(tmp_path, "bravo", "charlie")
    await alpha.chat.create_channel("general")
    await alpha.chat.post_many("general", [f"history {i}" for i in range(50)])
    workspace_key = alpha.identity.workspace_key
    await alpha.close()
    async with bravo, charlie, serving(tmp_path / "alpha") as server, LanService(bravo, PEER) as peer:
        _, listening = await server.next_event("Listening", 0, timeout=30)
        port = int(listening["port"])
        peer.dial("127.0.0.1", port)
        await server.next_event("SessionUp", 0, timeout=20)
        deadline = time.monotonic() + 20
        while not any(c.name == "general" for c in await bravo.views.list_channels()):
            assert time.monotonic() < deadline, "bravo never got #general"
            await asyncio.sleep(0.05)
        quiet = sorted([await propagation(bravo, server, f"warm-up {i}") for i in range(20)])  # also warms up: documents loaded, buffers grown
        print(f"no flood: propagation p50 {quiet[10] * 1000:.1f} ms, max {quiet[-1] * 1000:.1f} ms")
        p99_bound = max(PROPAGATION_P99_S, FLOOD_SLOWDOWN * quiet[10])
        baseline = rss(server.proc.pid)
        audited_before = len(await refusal_entries(tmp_path / "alpha"))

        for kind in ("addresses", "slowloris", "unknown"):
            cpu_before = cpu_seconds(server.proc.pid)
            flooding = asyncio.create_task(flood(kind, port, workspace_key))
            peak = baseline
            samples: list[float] = []
            newcomer_up = float("inf")
            started = time.monotonic()
            while not flooding.done():
                peak = max(peak, rss(server.proc.pid))
                samples.append(await propagation(bravo, server, f"{kind} {len(samples)}"))
                if newcomer_up == float("inf") and time.monotonic() - started > 1.0:
                    newcomer_up = await new_session(charlie, port)
                await asyncio.sleep(0.02)
            result = flooding.result()
            assert result["connections"] >= MIN_CONNECTIONS[kind], result
            samples.sort()
            p99 = samples[int(0.99 * (len(samples) - 1))]
            print(
                f"{kind}: {result['connections']} connections in {result['seconds']} s, server CPU {cpu_seconds(server.proc.pid) - cpu_before:.2f} s; "
                f"propagation p50 {samples[len(samples) // 2] * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms over {len(samples)} (top {[round(x * 1000) for x in samples[-4:]]}); "
                f"new session in {newcomer_up:.2f} s; RSS baseline {baseline / MiB:.1f} MiB, peak {peak / MiB:.1f} MiB"
            )
            assert p99 < p99_bound, f"{kind}: propagation p99 {p99 * 1000:.0f} ms, bound {p99_bound * 1000:.0f} ms"
            assert newcomer_up < NEW_SESSION_WITHIN_S, f"{kind}: no new session during the flood"
            assert peak - baseline < RSS_HEADROOM, f"{kind}: RSS {peak / MiB:.1f} MiB, baseline {baseline / MiB:.1f} MiB"
            deadline = time.monotonic() + RSS_RETURN_WITHIN_S
            while rss(server.proc.pid) - baseline > RSS_RETURN and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            after = rss(server.proc.pid)
            print(f"{kind}: RSS afterwards {after / MiB:.1f} MiB, {time.monotonic() - deadline + RSS_RETURN_WITHIN_S:.1f} s after the flood")
            assert after - baseline <= RSS_RETURN, f"{kind}: RSS {after / MiB:.1f} MiB after the flood, baseline {baseline / MiB:.1f} MiB"

        # The floods' summaries are written at the end of the interval they fell in.
        deadline = time.monotonic() + 30
        while True:
            entries = (await refusal_entries(tmp_path / "alpha"))[audited_before:]
            summaries = [detail for action, detail in entries if action == "lan_refusals_summarised"]
            if SUMMARISED <= {str(d["reason"]) for d in summaries} or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        print(f"audit: {len(entries)} refusal entries, {len(summaries)} summaries: {[d['summary'] for d in summaries]}")
        assert SUMMARISED <= {str(d["reason"]) for d in summaries}
        assert len(entries) <= MAX_AUDIT_ENTRIES
        assert sum(int(d["refusals"]) for d in summaries) >= sum(MIN_CONNECTIONS.values()) // 2
        await propagation(bravo, server, "after the floods")  # still syncing


async def new_session(node: Node, port: int) -> float:
    """Seconds until a new session from `node` to the server is up (it then closes)."""
    up = asyncio.Event()

    def on_event(event: LanEvent) -> None:
        if isinstance(event, SessionUp):
            up.set()

    started = time.monotonic()
    async with LanService(node, PEER, on_event=on_event) as service:
        service.dial("127.0.0.1", port)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(up.wait(), NEW_SESSION_WITHIN_S)
    return time.monotonic() - started if up.is_set() else float("inf")

"""Multi-node LAN behaviour with real `rallypoint serve` processes, real sockets and real
multicast mDNS, inside network namespaces these tests create (root only; they skip otherwise):

- three nodes on one namespace's loopback discover each other, converge and push live, while
  a node of another workspace is listed but never synced with;
- three nodes on a virtual bridge: one is partitioned (its cable pulled) while both sides keep
  posting; once healed, all three hold the same messages;
- two nodes on a field network numbered outside the private ranges sync with no allowlist
  rule: the network of their own interface is allowed by default."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from appliance.node import Node
from tests.conftest import PASSPHRASE, make_workspace, run_cli
from tests.netns import BridgeLan, Netns, netns, requires_root

pytestmark = [requires_root, pytest.mark.timeout(240)]

CONVERGE_S = 40.0


def rallypoint() -> list[str]:
    executable = shutil.which("rallypoint", path=str(Path(sys.executable).parent))
    return [executable] if executable else [sys.executable, "-m", "tui.cli"]


class Serving:
    """A `rallypoint serve --json` process; its events are read by a thread into a queue."""

    def __init__(self, ns: Netns, home: Path, bind: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RALLYPOINT_")}
        env |= {"RALLYPOINT_HOME": str(home), "RALLYPOINT_PASSPHRASE": PASSPHRASE, "PYTHONUNBUFFERED": "1"}
        self.home = home
        self.proc = ns.run([*rallypoint(), "serve", "--port", "0", "--bind", bind, "--json"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.events: list[dict[str, Any]] = []
        self._queue: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("{"):
                self._queue.put(json.loads(line))

    def wait_for(self, predicate: Any, timeout: float, what: str) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        for event in self.events:
            if predicate(event):
                return event
        while time.monotonic() < deadline:
            try:
                event = self._queue.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            self.events.append(event)
            if predicate(event):
                return event
        stderr = self.proc.stderr.read() if self.proc.poll() is not None and self.proc.stderr else ""
        raise AssertionError(f"{self.home.name}: no {what} within {timeout}s; events {self.events[-10:]} {stderr}")

    def stop(self) -> int:
        self.proc.terminate()
        return self.proc.wait(timeout=10)


def texts(home: Path) -> list[str]:
    async def read() -> list[str]:
        async with await Node.open(home, PASSPHRASE) as node:
            if not any(c.name == "general" for c in await node.views.list_channels()):
                return []
            return sorted(m.text for m in await node.views.read("general", limit=10_000, mark_read=False))

    return asyncio.run(read())


def wait_converged(homes: list[Path], expected: set[str], timeout: float = CONVERGE_S) -> None:
    deadline = time.monotonic() + timeout
    seen: list[list[str]] = []
    while time.monotonic() < deadline:
        seen = [texts(home) for home in homes]
        if all(set(s) >= expected for s in seen) and all(s == seen[0] for s in seen):
            return
        time.sleep(0.3)
    raise AssertionError(f"not converged: {[len(s) for s in seen]} messages, expected {len(expected)}")


def post(home: Path, text: str) -> None:
    result = run_cli(home, "post", "general", text)
    assert result.returncode == 0, result.stderr


@pytest.fixture
def workspace(tmp_path: Path) -> Iterator[list[Path]]:
    """alpha (with #general and a few messages), bravo and charlie; plus a stranger of another workspace."""

    async def make() -> list[Path]:
        nodes = await make_workspace(tmp_path / "acme", "bravo", "charlie")
        await nodes[0].chat.create_channel("general")
        await nodes[0].chat.post_many("general", [f"history {i}" for i in range(50)])
        others = await make_workspace(tmp_path / "other")
        await others[0].chat.create_channel("general")
        await others[0].chat.post("general", "the other workspace")
        for node in [*nodes, *others]:
            await node.close()
        return [tmp_path / "acme" / "alpha", tmp_path / "acme" / "bravo", tmp_path / "acme" / "charlie", tmp_path / "other" / "alpha"]

    yield asyncio.run(make())


def test_three_serve_processes_on_loopback_discover_each_other_and_converge(workspace: list[Path]) -> None:
    alpha, bravo, charlie, stranger = workspace
    with netns() as ns:
        nodes = [Serving(ns, home, "127.0.0.1") for home in (alpha, bravo, charlie, stranger)]
        ids = [n.wait_for(lambda e: e["event"] == "Listening", 30, "listening")["node_id"] for n in nodes]
        for me, node in enumerate(nodes[:3]):
            for other in range(3):
                if other != me:
                    node.wait_for(lambda e, o=other: e["event"] == "PeerDiscovered" and e["node_id"] == ids[o] and e["same_workspace"], 20, f"discovery of {ids[other]}")
            node.wait_for(lambda e: e["event"] == "PeerDiscovered" and e["node_id"] == ids[3] and not e["same_workspace"], 20, "the other workspace's node")
        expected = {f"history {i}" for i in range(50)}
        wait_converged([alpha, bravo, charlie], expected)
        # Live: a post on one node (by the CLI, another process on its store) reaches the others.
        post(bravo, "live from bravo")
        post(charlie, "live from charlie")
        wait_converged([alpha, bravo, charlie], expected | {"live from bravo", "live from charlie"}, timeout=15)
        assert "the other workspace" not in texts(alpha) and texts(stranger) == ["the other workspace"]
        assert not any(e["event"] == "SessionUp" and e["node_id"] == ids[3] for n in nodes[:3] for e in n.events)
        # `peers` lists the other workspace's node, untrusted, and the workspace's nodes as synced
        # (acknowledgements are written within a second or so).
        deadline = time.monotonic() + 10
        while True:
            listed = {p["node_id"]: p for p in json.loads(run_cli(alpha, "peers", "--json").stdout)}
            if listed[ids[1]]["behind"] == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert listed[ids[3]]["trust"] == "other workspace" and not listed[ids[3]]["trusted"]
        assert listed[ids[1]]["trusted"] and listed[ids[1]]["last_sync"] and listed[ids[1]]["behind"] == 0
        assert [n.stop() for n in nodes] == [0, 0, 0, 0]  # SIGTERM stops cleanly


def test_a_partitioned_node_catches_up_after_the_link_heals(workspace: list[Path]) -> None:
    alpha, bravo, charlie, _ = workspace
    homes = [alpha, bravo, charlie]
    with BridgeLan(3) as lan:
        nodes = [Serving(ns, home, ns.address or "") for ns, home in zip(lan.nodes, homes, strict=True)]
        for node in nodes:
            node.wait_for(lambda e: e["event"] == "Listening", 30, "listening")
        history = {f"history {i}" for i in range(50)}
        wait_converged(homes, history)

        lan.link_down(2)
        post(alpha, "alpha during the partition")
        post(bravo, "bravo during the partition")
        post(charlie, "charlie alone")
        time.sleep(2)
        assert "alpha during the partition" not in texts(charlie)
        assert "charlie alone" not in texts(alpha)

        lan.link_up(2)
        lan.wait_link_up(2)
        wait_converged(homes, history | {"alpha during the partition", "bravo during the partition", "charlie alone"}, timeout=60)
        for node in nodes:
            assert node.stop() == 0


def test_nodes_on_a_field_network_outside_the_private_ranges_sync_by_default(workspace: list[Path]) -> None:
    alpha, bravo, _, _ = workspace
    with BridgeLan(2, subnet="198.18.7") as lan:  # benchmarking space (RFC 2544): not a private range
        nodes = [Serving(ns, home, ns.address or "") for ns, home in zip(lan.nodes, (alpha, bravo), strict=True)]
        ids = [n.wait_for(lambda e: e["event"] == "Listening", 30, "listening")["node_id"] for n in nodes]
        for me, node in enumerate(nodes):
            other = ids[1 - me]
            node.wait_for(lambda e, o=other: e["event"] == "PeerDiscovered" and e["node_id"] == o and e["same_workspace"], 20, f"discovery of {other}")
        wait_converged([alpha, bravo], {f"history {i}" for i in range(50)})
        post(bravo, "over the field network")
        wait_converged([alpha, bravo], {f"history {i}" for i in range(50)} | {"over the field network"}, timeout=15)
        assert not [e for n in nodes for e in n.events if e["event"] == "Refused"]
        assert [n.stop() for n in nodes] == [0, 0]

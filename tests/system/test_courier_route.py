"""What a courier route guarantees (README, "Couriers"), with three real nodes, the real
`rallypoint courier` command and one stick folder: a message reaches every node the stick visits
after a node that held it. So one loop A -> B -> C -> A leaves B without C's message, and
carrying the stick on to B completes it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from tests.conftest import make_workspace, run_cli, sync_all


def general(home: Path) -> set[str]:
    read = run_cli(home, "read", "general", "--json")
    assert read.returncode == 0, read.stderr
    return {m["text"] for m in json.loads(read.stdout)}


def courier(home: Path, stick: Path) -> None:
    run = run_cli(home, "courier", str(stick))
    assert run.returncode == 0, run.stderr


def test_a_stick_brings_each_node_what_the_nodes_before_it_on_the_route_held(tmp_path: Path) -> None:
    async def make() -> None:
        alpha, bravo, charlie = await make_workspace(tmp_path, "bravo", "charlie")
        async with alpha, bravo, charlie:
            await alpha.chat.create_channel("general")
            for node in (bravo, charlie):  # the channel (not its messages) everywhere before the trip
                await sync_all(alpha, node)
            for node, text in ((alpha, "from alpha"), (bravo, "from bravo"), (charlie, "from charlie")):
                await node.chat.post("general", text)

    asyncio.run(make())
    alpha, bravo, charlie = tmp_path / "alpha", tmp_path / "bravo", tmp_path / "charlie"
    stick = tmp_path / "stick"
    stick.mkdir()
    held = {alpha: "from alpha", bravo: "from bravo", charlie: "from charlie"}
    assert [general(home) for home in held] == [{text} for text in held.values()]

    carried: set[str] = set()  # what the nodes visited so far held at their visit
    for stop, home in enumerate((alpha, bravo, charlie, alpha, bravo)):
        carried.add(held[home])
        courier(home, stick)
        assert general(home) == carried, (stop, home.name)
        if stop == 3:  # one loop, A -> B -> C -> A: the first and last stops have everything, B not
            assert general(alpha) == general(charlie) == set(held.values())
            assert general(bravo) == {"from alpha", "from bravo"}
    assert general(alpha) == general(bravo) == general(charlie) == set(held.values())

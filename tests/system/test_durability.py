"""A post whose id was printed survives kill -9 of the process that made it."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from appliance.node import Node
from tests.conftest import FAST, PASSPHRASE, REPO

WRITER = """
import asyncio, sys
from pathlib import Path
from appliance.node import Node

async def main():
    async with await Node.open(Path(sys.argv[1]), sys.argv[2]) as node:
        for i in range(100000):
            message_id = await node.chat.post("general", f"durable {i}")
            print(message_id, flush=True)

asyncio.run(main())
"""


def test_every_acknowledged_post_survives_kill_9(tmp_path: Path) -> None:
    home = tmp_path / "alpha"

    async def setup() -> None:
        async with await Node.init(home, workspace_name="acme", user_name="alice", node_name="alpha", passphrase=PASSPHRASE, kdf=FAST) as node:
            await node.chat.create_channel("general")

    asyncio.run(setup())
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(home), PASSPHRASE], stdout=subprocess.PIPE, text=True, cwd=REPO)
    acknowledged: list[str] = []
    deadline = time.monotonic() + 60
    assert writer.stdout is not None
    while len(acknowledged) < 300 and time.monotonic() < deadline:
        line = writer.stdout.readline()
        if not line:
            break
        acknowledged.append(line.strip())
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait(timeout=10)
    assert len(acknowledged) >= 50, "the writer did not get going"

    async def check() -> None:
        async with await Node.open(home, PASSPHRASE) as node:
            stored = {m.id for m in await node.views.read("general", limit=10_000)}
            assert set(acknowledged) <= stored
            await node.chat.post("general", "still writable after the crash")

    asyncio.run(check())

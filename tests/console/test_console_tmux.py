"""The real `rallypoint console` in a real terminal: tmux runs it at 80x24, the test types into it
and reads the screen back, and the node's store holds what was typed."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.node import Node
from tests.conftest import PASSPHRASE, make_workspace
from tests.terminal import Terminal

pytestmark = [pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux (Debian: apt-get install tmux)"), pytest.mark.timeout(120)]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    async def make() -> None:
        (alpha,) = await make_workspace(tmp_path)
        async with alpha:
            await alpha.chat.create_channel("general")
            await alpha.chat.post("general", "already here")

    asyncio.run(make())
    return tmp_path / "alpha"


# A modern terminal, and a 16-colour one (a serial console, an old xterm).
TERMINALS = {"256 colours": {"TERM": "xterm-256color"}, "16 colours": {"TERM": "xterm-16color", "TEXTUAL_COLOR_SYSTEM": "standard"}}


@pytest.fixture(params=sorted(TERMINALS))
def terminal(home: Path, request: pytest.FixtureRequest) -> Iterator[Terminal]:
    executable = shutil.which("rallypoint", path=str(Path(sys.executable).parent))
    command = [executable] if executable else [sys.executable, "-m", "tui.cli"]
    env = {"RALLYPOINT_HOME": str(home), "RALLYPOINT_PASSPHRASE": PASSPHRASE, "PATH": os.environ.get("PATH", ""), **TERMINALS[request.param]}
    term = Terminal(f"rptest-{os.getpid()}", [*command, "console", "--no-lan"], env)
    try:
        yield term
    finally:
        term.kill()


def test_the_real_console_takes_typed_messages_at_80x24(home: Path, terminal: Terminal) -> None:
    shown = terminal.wait_for("already here")
    assert "# general" in shown
    assert all(len(line) <= 80 for line in shown.splitlines())
    terminal.type("typed in tmux")
    terminal.keys("Enter")
    terminal.wait_for("typed in tmux")
    terminal.keys("F1")
    terminal.wait_for("Keys (ctrl+p")
    terminal.keys("Escape")
    terminal.keys("C-q")
    deadline = time.monotonic() + 10
    while terminal.running() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not terminal.running()

    async def stored() -> list[str]:
        async with await Node.open(home, PASSPHRASE) as node:
            return [m.text for m in await node.views.read("general", mark_read=False)]

    assert asyncio.run(stored()) == ["already here", "typed in tmux"]

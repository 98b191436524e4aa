"""Attaching files from the console (Pilot, 80x24): picked by path or in the folder tree, listed
above the composer, posted with the message as blobs the node stores."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from textual.app import App
from textual.widgets import Input

from appliance.errors import BlobTooLarge, InvalidInput
from appliance.node import Node
from tests.conftest import FAST, PASSPHRASE
from tests.console_helpers import SIZE, main_screen, screen_text, until, until_shown
from tui.app import RallypointApp
from tui.dialogs.attach import AttachScreen, check_file, read_file
from tui.screens.main import MainScreen
from tui.widgets.message_list import MessageList


def path_field(app: App[Any]) -> Input:
    return app.screen.query_one("#attach-path", Input)


@pytest.fixture
def files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The operator's home, where the picker opens: plan.txt, docs/map.bin, a FIFO, a big file."""
    home = tmp_path / "operator"
    (home / "docs").mkdir(parents=True)
    (home / "plan.txt").write_bytes(b"the plan\n" * 100)
    (home / "docs" / "map.bin").write_bytes(bytes(range(256)) * 3)
    (home / "big.bin").write_bytes(b"\0" * 5000)
    os.mkfifo(home / "pipe")
    monkeypatch.setenv("HOME", str(home))
    return home


@pytest.fixture
async def node_home(tmp_path: Path) -> Path:
    home = tmp_path / "alpha"
    async with await Node.init(home, workspace_name="acme", user_name="alice", node_name="alpha", passphrase=PASSPHRASE, kdf=FAST) as node:
        await node.chat.create_channel("general")
        await node.blobs.set_max_blob_bytes(4096)
    return home


async def test_files_picked_in_the_console_are_posted_as_blobs(files: Path, node_home: Path) -> None:
    app = RallypointApp(node_home, PASSPHRASE)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await main_screen(pilot)
        await pilot.press("ctrl+o")  # in the composer
        await until(pilot, lambda: isinstance(app.screen, AttachScreen), "the file picker")
        await until_shown(pilot, "Attach a file (up to 4.0 KB on this node)")
        await pilot.press(*"pl", "right")  # → takes the completion
        await until_shown(pilot, "📎 plan.txt (900 B)")  # the size, before it is attached
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, MainScreen), "the main screen")
        await until_shown(pilot, "📎 plan.txt (900 B) · ctrl+r removes them")

        await pilot.press("ctrl+o")
        await until(pilot, lambda: isinstance(app.screen, AttachScreen), "the file picker")
        await pilot.press("tab", "down")  # into the folder tree: home, then docs/
        await pilot.press("enter", "down", "enter")  # open docs/, pick map.bin
        await until_shown(pilot, "📎 plan.txt (900 B)  📎 map.bin (768 B)")

        await pilot.press(*"the plan and the map", "enter")
        await until_shown(pilot, "the plan and the map")
        assert "ctrl+r removes them" not in screen_text(app)
        assert app.node is not None
        (message,) = await app.node.views.read("general")
        assert [(f.name, f.size) for f in message.files] == [("plan.txt", 900), ("map.bin", 768)]
        assert await app.node.blobs.blob(message.files[0].hash) == (files / "plan.txt").read_bytes()
        assert await app.node.blobs.blob(message.files[1].hash) == (files / "docs" / "map.bin").read_bytes()

        await pilot.press("ctrl+o")  # a file alone is a message too: its name is the text
        await until(pilot, lambda: isinstance(app.screen, AttachScreen), "the file picker")
        assert path_field(app).value == f"{files / 'docs'}/"  # where the last one was
        path_field(app).value = f"{files}/plan.txt"
        await pilot.press("enter")
        await until_shown(pilot, "ctrl+r removes them")
        await pilot.press("enter")
        await until(pilot, lambda: "ctrl+r removes them" not in screen_text(app), "the file sent")
        await until(pilot, lambda: len(pilot.app.screen.query_one("#messages", MessageList).options) == 2, "the second message")


async def test_the_picker_refuses_what_cannot_be_attached(files: Path, node_home: Path) -> None:
    """Over this node's limit, a FIFO (reading one would hang), a missing file: said in the
    picker, which stays open; nothing is attached."""
    app = RallypointApp(node_home, PASSPHRASE)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await main_screen(pilot)
        await pilot.press("ctrl+o")
        await until(pilot, lambda: isinstance(app.screen, AttachScreen), "the file picker")
        await pilot.press(*"big.bin")
        await until_shown(pilot, "big.bin is 4.9 KB; this node's attachment limit is 4.0 KB")  # as soon as it is typed
        await pilot.press("enter")
        path_field(app).value = f"{files}/pipe"
        await pilot.press("enter")
        await until_shown(pilot, "pipe is not a regular file")
        path_field(app).value = f"{files}/nothing-here"
        await pilot.press("enter")
        await until_shown(pilot, "cannot read nothing-here: No such file or directory")
        assert isinstance(app.screen, AttachScreen)
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, MainScreen), "the main screen")
        assert isinstance(app.screen, MainScreen)
        assert app.screen.attachments == [] and "ctrl+r removes them" not in screen_text(app)


def test_a_file_changed_after_it_was_picked_is_checked_again_when_read(tmp_path: Path) -> None:
    """Sending reads the file picked earlier: a FIFO in its place is refused at once (opening it
    to read would wait for a writer for ever), and so is a file grown over the limit."""
    path = tmp_path / "report.txt"
    path.write_bytes(b"first draft")
    picked = check_file(path, 100)
    assert read_file(picked, 100).data == b"first draft"
    path.unlink()
    os.mkfifo(path)
    with pytest.raises(InvalidInput, match="report.txt is not a regular file"):
        read_file(picked, 100)
    path.unlink()
    path.write_bytes(b"x" * 101)
    with pytest.raises(BlobTooLarge):
        read_file(picked, 100)

"""A long channel in the console (Pilot, 80x24): the message list pages its history in as the
cursor moves, holds at most tui.history.WINDOW messages, and stops at both ends."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot

from appliance.model import MessageView
from appliance.node import Node
from tests.conftest import FAST, PASSPHRASE
from tests.console_helpers import SIZE, main_screen, until
from tui.app import RallypointApp
from tui.history import PAGE, WINDOW, Window, oldest_window
from tui.widgets.message_list import MessageList

COUNT = 20_000


@pytest.fixture
async def long_home(tmp_path: Path) -> Path:
    """#general with COUNT messages, "message 0" the oldest."""
    home = tmp_path / "alpha"
    async with await Node.init(home, workspace_name="acme", user_name="alice", node_name="alpha", passphrase=PASSPHRASE, kdf=FAST) as node:
        await node.chat.create_channel("general")
        await node.chat.post_many("general", [f"message {index}" for index in range(COUNT)])
    return home


def selected(messages: MessageList) -> str:
    message = messages.selected()
    return "" if message is None else message.text


async def until_selected(pilot: Pilot[Any], messages: MessageList, text: str, timeout: float = 10.0) -> None:
    await until(pilot, lambda: selected(messages) == text, f"{text!r} to be highlighted (it is {selected(messages)!r})", timeout)


async def test_a_20000_message_channel_is_paged_both_ways_within_the_bound(long_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    held: list[int] = []  # how many messages the channel's list was given, load after load
    show = MessageList.show

    def counting_show(self: MessageList, messages: list[MessageView], *args: Any, **options: Any) -> None:
        if self.id == "messages":
            held.append(len(messages))
        show(self, messages, *args, **options)

    monkeypatch.setattr(MessageList, "show", counting_show)
    async with RallypointApp(long_home, PASSPHRASE).run_test(size=SIZE, notifications=True) as pilot:
        screen = await main_screen(pilot)
        messages = screen.query_one("#messages", MessageList)
        await pilot.press("up")  # from the composer: the newest message
        await until_selected(pilot, messages, f"message {COUNT - 1}")
        assert messages.option_count == PAGE
        await pilot.press("pageup", "c", "up")  # the list left higher up: ↑ still lands on the newest
        await until_selected(pilot, messages, f"message {COUNT - 1}")

        for _ in range(PAGE):  # to the top of the first page (a page up moves several messages)
            if messages.highlighted == 0:
                break
            await pilot.press("pageup")
        assert selected(messages) == f"message {COUNT - PAGE}"
        await pilot.press("up")  # past the top: the page before comes in, the cursor one message up
        await until_selected(pilot, messages, f"message {COUNT - PAGE - 1}")

        await pilot.press("home")  # the very first message, however far back
        await until_selected(pilot, messages, "message 0", timeout=60.0)
        await pilot.press("up", "pageup")  # the top stays the top: no wrapping to the newest
        await pilot.pause()
        assert selected(messages) == "message 0" and messages.highlighted == 0

        for _ in range(WINDOW):  # down to the last message held, then one further
            if messages.highlighted == messages.option_count - 1:
                break
            await pilot.press("pagedown")
        last = int(selected(messages).split()[1])
        assert last < COUNT - 1
        await pilot.press("down")
        await until_selected(pilot, messages, f"message {last + 1}")

        await pilot.press("c", "up")  # back to the composer; ↑ goes to the newest message again
        await until_selected(pilot, messages, f"message {COUNT - 1}")
        await pilot.press("down", "pagedown")  # the bottom stays the bottom
        await pilot.pause()
        assert selected(messages) == f"message {COUNT - 1}"
    assert held and max(held) <= WINDOW


async def test_the_oldest_window_pages_forward_the_way_paging_back_came(alice: Node) -> None:
    """Home's window is the one paging back page by page would reach: the same anchors, so
    moving down from it pages forward through every message, none skipped."""
    await alice.chat.create_channel("general")
    count = 5 * WINDOW + 17
    await alice.chat.post_many("general", [f"m{index}" for index in range(count)])

    async def read_ids(before: str | None, limit: int) -> list[str]:
        return [m.id for m in await alice.views.read("general", before=before, limit=limit, mark_read=False)]

    async def held(window: Window) -> list[str]:
        return [m.text for m in await alice.views.read("general", before=window.anchor, limit=window.span, mark_read=False)]

    stepped = Window()
    while len(await read_ids(stepped.anchor, stepped.span + 1)) > stepped.span:
        stepped = stepped.older(await read_ids(stepped.anchor, stepped.span))
    oldest, first = await oldest_window(read_ids, Window())
    assert oldest == stepped
    assert (await held(oldest))[0] == "m0" and first == (await read_ids(None, count))[0]

    seen, window = await held(oldest), oldest
    while not window.at_newest:
        window = window.newer_window()
        page = await held(window)
        seen += page[page.index(seen[-1]) + 1 :]
        assert len(page) <= WINDOW
    assert seen == [f"m{index}" for index in range(count)]

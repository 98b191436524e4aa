"""Running channels and direct messages in the console, through Pilot at 80x24: the channel
settings dialog (F6) renames, sets the purpose, adds and removes members, grants channel admin,
archives and makes read-only; F7 starts a direct conversation, listed under "Direct messages";
same-named channels show apart. Against real nodes in tmp homes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Input

from appliance.node import Node
from tests.conftest import FAST, PASSPHRASE, make_workspace, sync_all
from tests.console.test_console_admin import assert_fits
from tests.console.test_console_snapshots import START_MS, check
from tests.console_helpers import SIZE, Steps, main_screen, pane_title, recorded_notifications, screen_text, until, until_notified, until_shown
from tui.app import RallypointApp
from tui.dialogs.channel_settings import ChannelSettingsScreen
from tui.dialogs.prompt import PromptScreen
from tui.widgets.channel_list import ChannelList


@pytest.fixture
async def home(tmp_path: Path) -> Path:
    """alice (admin) with bob and carol enrolled, a private channel #ops, fixed keys and clock."""
    node_home = tmp_path / "alpha"
    steps = Steps(b"alpha", START_MS)
    node = await Node.init(node_home, workspace_name="acme", user_name="alice", node_name="alpha", passphrase=PASSPHRASE, kdf=FAST, clock=steps.clock, rng=steps.rng)
    async with node:
        await node.enrollment.invite("bravo", "bob", kdf=FAST)
        await node.enrollment.invite("charlie", "carol", kdf=FAST)
        steps.step()
        await node.chat.create_channel("ops", private=True, purpose="night shift")
        steps.step()
        await node.chat.post("ops", "generator check at 18:00")
    return node_home


async def open_settings(pilot: Pilot[Any]) -> ChannelSettingsScreen:
    await pilot.press("f6")
    await until(pilot, lambda: isinstance(pilot.app.screen, ChannelSettingsScreen), "the channel settings dialog")
    screen = pilot.app.screen
    assert isinstance(screen, ChannelSettingsScreen)
    return screen


async def press_button(pilot: Pilot[Any], button: str) -> None:
    await pilot.click(f"#{button}")


async def test_channel_settings_run_the_channel_and_the_dialog_fits(home: Path) -> None:
    app = RallypointApp(home, PASSPHRASE)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        shown = recorded_notifications(app)
        await main_screen(pilot)
        await until_shown(pilot, "generator check")
        settings = await open_settings(pilot)
        await until_shown(pilot, "Channel admins: alice")
        assert_fits(app)
        await check(pilot, "channel_settings")
        settings.query_one("#settings-user", Input).value = "bob"
        await press_button(pilot, "add")
        await until_notified(pilot, shown, "bob added")
        await open_settings(pilot)
        await until_shown(pilot, "Members: bob")
        pilot.app.screen.query_one("#settings-user", Input).value = "bob"
        await press_button(pilot, "grant-admin")
        await until_notified(pilot, shown, "bob is a channel admin")
        settings = await open_settings(pilot)
        await until_shown(pilot, "Channel admins: alice, bob")
        settings.query_one("#settings-name", Input).value = "night-ops"
        await press_button(pilot, "rename")
        await until(pilot, lambda: pane_title(app).startswith("# night-ops"), "the renamed channel's title")
        await open_settings(pilot)
        await press_button(pilot, "read-only")
        await until(pilot, lambda: "(read-only)" in pane_title(app), "the read-only mark")
        await open_settings(pilot)
        await press_button(pilot, "archive")
        await until(pilot, lambda: "(archived)" in pane_title(app), "the archived mark")
        await open_settings(pilot)
        pilot.app.screen.query_one("#settings-user", Input).value = "nobody"
        await press_button(pilot, "remove")
        await until_notified(pilot, shown, "no user 'nobody'")
        assert app.node is not None
        (ops,) = await app.node.views.list_channels()
        assert (ops.name, ops.archived, ops.read_only, ops.admins, ops.members) == ("night-ops", True, True, ("alice", "bob"), ("alice", "bob"))
        actions = [e.action for e in await app.node.audit.entries()]
        assert [a for a in actions if a.startswith(("channel_", "member_"))] == [
            "channel_created", "member_added", "channel_admin_granted", "channel_renamed", "channel_read_only_set", "channel_archived"
        ]  # fmt: skip


async def test_a_direct_message_is_started_with_f7_and_listed_apart(home: Path) -> None:
    app = RallypointApp(home, PASSPHRASE)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await main_screen(pilot)
        await pilot.press("f7")
        await until(pilot, lambda: isinstance(pilot.app.screen, PromptScreen), "the direct message prompt")
        await pilot.press(*"bob", "enter")
        await until(pilot, lambda: pane_title(app).startswith("@ bob"), "the conversation")
        await until_shown(pilot, "Direct messages")
        await pilot.press(*"hello bob", "enter")
        await until_shown(pilot, "hello bob")
        lines = screen_text(app).splitlines()
        heading = next(i for i, line in enumerate(lines) if line.startswith("Direct messages"))
        assert lines[heading + 1].startswith("@bob") and any(line.startswith("🔒ops") for line in lines[:heading])
        # A direct conversation has no channel admins: its dialog offers no controls.
        await open_settings(pilot)
        await until_shown(pilot, "Only its channel admins")
        assert not pilot.app.screen.query("#rename")


async def test_same_named_channels_show_their_creator_and_id(tmp_path: Path) -> None:
    alice, bob = await make_workspace(tmp_path, "bob")
    async with alice, bob:
        await sync_all(alice, bob)
        ours = await alice.chat.create_channel("ops")
        theirs = await bob.chat.create_channel("ops")
        await sync_all(bob, alice)
    async with RallypointApp(alice.home, PASSPHRASE).run_test(size=SIZE, notifications=True) as pilot:
        await main_screen(pilot)
        channels = pilot.app.screen.query_one(ChannelList)
        await until(pilot, lambda: len(channels.channels) == 2, "both channels")
        shown = screen_text(pilot.app)
        assert f"# ops (alice, {ours.channel_id[:4]})" in shown and f"# ops (bob, {theirs.channel_id[:4]})" in shown


async def test_a_plain_member_sees_the_members_but_no_controls(tmp_path: Path) -> None:
    alice, bob = await make_workspace(tmp_path, "bob")
    async with alice, bob:
        await alice.chat.create_channel("ops", private=True)
        await alice.chat.add_member("ops", "bob")
        await sync_all(alice, bob)
    async with RallypointApp(bob.home, PASSPHRASE).run_test(size=SIZE, notifications=True) as pilot:
        await main_screen(pilot)
        await until(pilot, lambda: pane_title(pilot.app).startswith("# ops"), "the channel")
        await open_settings(pilot)
        await until_shown(pilot, "Only its channel admins and workspace admins change this channel.")
        assert "Channel admins: alice" in screen_text(pilot.app) and "Members: bob" in screen_text(pilot.app)
        assert not pilot.app.screen.query("#rename") and not pilot.app.screen.query("#add")

"""The Textual console driven through Pilot at 80x24, against real nodes in tmp homes."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import pytest
from textual.app import App
from textual.widgets import DataTable, Input, OptionList, Static, TabbedContent

from appliance.node import Attachment, Node
from sync.lan import LanConfig, LanService
from sync.sneakernet import export_bundles, import_bundles
from tests.conftest import FAST, make_workspace, revocation_on_stick, sync_all
from tests.conftest import PASSPHRASE as WORKSPACE_PASSPHRASE
from tests.console_helpers import SIZE, main_screen, pane_title, recorded_notifications, screen_text, until, until_notified, until_shown
from tui.app import RallypointApp, binding_sections
from tui.dialogs.save_files import SaveFilesScreen
from tui.screens.main import MainScreen
from tui.screens.peers import PeersScreen
from tui.screens.search import SearchScreen
from tui.screens.setup import SetupScreen
from tui.screens.unlock import UnlockScreen
from tui.widgets.composer import Composer
from tui.widgets.message_list import MessageList

PASSPHRASE = "correct-horse"
def channel_row(app: App[Any], name: str) -> str:
    """The channel list's row for `name` (the list is the leftmost 19 columns, then its border)."""
    return next(line[:19] for line in screen_text(app).splitlines() if line.startswith(f"# {name}"))


def fill(app: App[Any], **fields: str) -> None:
    for field_id, value in fields.items():
        app.screen.query_one(f"#{field_id.replace('_', '-')}", Input).value = value


def console_lan() -> LanConfig:
    """The console's LAN service under test: loopback, no mDNS, and a port known beforehand (free
    when asked) for a peer to dial."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return LanConfig(bind="127.0.0.1", port=port, discovery=False)


@pytest.fixture
async def home(tmp_path: Path) -> Path:
    """A node with alice (admin) and #general."""
    node_home = tmp_path / "alice"
    async with await Node.init(node_home, workspace_name="acme", user_name="alice", node_name="laptop", passphrase=PASSPHRASE, kdf=FAST) as node:
        await node.chat.create_channel("general")
    return node_home


async def test_first_run_creates_a_workspace_through_the_setup_form(tmp_path: Path) -> None:
    node_home = tmp_path / "fresh"
    app = RallypointApp(node_home)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        assert isinstance(app.screen, SetupScreen)
        await pilot.click("#create-workspace")
        await pilot.press(*"acme")
        fill(app, create_user="alice", create_node="laptop", create_passphrase=PASSPHRASE, create_confirm="something-else")
        await pilot.click("#create-submit")
        await until_shown(pilot, "The passphrases do not match.")

        fill(app, create_workspace="has space", create_confirm=PASSPHRASE)
        app.screen.query_one("#create-confirm", Input).focus()
        await pilot.press("enter")  # Enter on the last field submits
        await until_shown(pilot, "invalid name 'has space'")
        assert not (node_home / "node.db").exists()

        fill(app, create_workspace="acme")
        await pilot.press("enter")
        await main_screen(pilot)
        assert "acme — alice (admin) on laptop" in screen_text(app)
        assert "No channels yet" in screen_text(app)
    assert (node_home / "node.db").exists()


async def test_the_first_run_form_says_how_to_reach_the_join_form(tmp_path: Path) -> None:
    """Typing starts in the Create form; the Join form was a shift+tab away and nothing said so."""
    app = RallypointApp(tmp_path / "fresh")
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        assert isinstance(app.screen, SetupScreen)
        await until_shown(pilot, "Joining a workspace someone else created? Press ctrl+t.")
        assert "^t Join a workspace instead" in screen_text(app).splitlines()[-1]
        await pilot.press("ctrl+t")
        await until(pilot, lambda: app.screen.query_one(TabbedContent).active == "join", "the Join form")
        assert app.focused is app.screen.query_one("#join-file", Input)
        assert "^t Create a workspace instead" in screen_text(app).splitlines()[-1]
        await pilot.press("ctrl+t")
        await until(pilot, lambda: app.screen.query_one(TabbedContent).active == "create", "the Create form")
        assert app.focused is app.screen.query_one("#create-workspace", Input)


async def test_join_with_a_wrong_then_the_right_code(tmp_path: Path) -> None:
    async with await Node.init(tmp_path / "admin", workspace_name="acme", user_name="alice", node_name="laptop", passphrase=PASSPHRASE, kdf=FAST) as admin:
        enrollment = await admin.enrollment.invite("desk", "carol", kdf=FAST)
    enrollment_file = tmp_path / "carol.enrollment"
    enrollment_file.write_bytes(enrollment.data)

    app = RallypointApp(tmp_path / "carol")
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        app.screen.query_one(TabbedContent).active = "join"
        fill(app, join_file=str(enrollment_file), join_code="AAAA-BBBB-CCCC", join_passphrase=PASSPHRASE, join_confirm=PASSPHRASE)
        app.screen.query_one("#join-confirm", Input).focus()
        await pilot.press("enter")
        await until_shown(pilot, "wrong enrollment code")
        fill(app, join_code=enrollment.code)
        app.screen.query_one("#join-confirm", Input).focus()
        await pilot.press("enter")
        await main_screen(pilot)
        assert "acme — carol (member) on desk" in screen_text(app)


async def test_a_joined_node_waits_for_its_first_sync_before_inviting_channels(tmp_path: Path) -> None:
    """A joined node holds only the directory: creating channels before the first sync made
    duplicates of channels that existed elsewhere. It says it is waiting, and asks first."""
    alpha, bravo = await make_workspace(tmp_path, "bravo")
    await alpha.chat.create_channel("general")
    await bravo.close()
    app = RallypointApp(tmp_path / "bravo", WORKSPACE_PASSPHRASE)
    async with alpha, app.run_test(size=SIZE, notifications=True) as pilot:
        await main_screen(pilot)
        assert pane_title(app) == "Waiting for the first sync (LAN peers or a courier stick)"
        assert "ctrl+n to create" not in screen_text(app)
        await pilot.press("ctrl+n")
        await until_shown(pilot, "Create a channel before the first sync?")
        await pilot.press("n")
        await until(pilot, lambda: isinstance(app.screen, MainScreen), "the main screen again")
        assert app.node is not None and await app.node.views.list_channels() == []

        stick = tmp_path / "stick"
        stick.mkdir()
        await export_bundles(alpha, stick)
        async with await Node.open(tmp_path / "bravo", WORKSPACE_PASSPHRASE) as courier:  # `rallypoint courier` beside the console
            assert (await import_bundles(courier, stick)).accepted
        await until(pilot, lambda: pane_title(app).startswith("# general"), "#general from the stick")
        await pilot.press("ctrl+n")
        await until_shown(pilot, "New channel")  # synced: no question asked


async def test_unlock_with_a_wrong_then_the_right_passphrase(home: Path) -> None:
    app = RallypointApp(home, passphrase="not-the-passphrase")  # a wrong one given up front
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        assert isinstance(app.screen, UnlockScreen)
        await until_shown(pilot, "wrong passphrase")
        field = app.screen.query_one("#unlock-passphrase", Input)
        await pilot.press(*"also-wrong", "enter")
        await until(pilot, lambda: not field.disabled and field.value == "", "the second attempt to fail")  # a failure clears the field
        assert "wrong passphrase" in screen_text(app)
        await pilot.press(*PASSPHRASE, "enter")
        await until_shown(pilot, "choose who you are")  # typed by hand: who signs in is asked (issue 16)
        assert "# general" not in screen_text(app)
        await pilot.press("enter", *PASSPHRASE, "enter")
        await main_screen(pilot)
        assert "# general" in screen_text(app)


async def test_channel_list_shows_unread_and_mention_counts(home: Path, tmp_path: Path) -> None:
    async with await Node.open(home, PASSPHRASE) as alice:
        enrollment = await alice.enrollment.invite("bravo", "bob", kdf=FAST)
        async with await Node.join(tmp_path / "bob", enrollment.data, enrollment.code, PASSPHRASE, kdf=FAST) as bob:
            await sync_all(alice, bob)
            await bob.chat.create_channel("random")
            for text in ("one", "two @alice", "three"):
                await bob.chat.post("random", text)
            await sync_all(bob, alice)
    async with RallypointApp(home, PASSPHRASE).run_test(size=SIZE, notifications=True) as pilot:
        screen = await main_screen(pilot)
        assert channel_row(pilot.app, "random").endswith(" 3 @1")
        assert channel_row(pilot.app, "general").rstrip() == "# general"
        await pilot.press("alt+down")
        await until_shown(pilot, "two @alice")
        assert screen.query_one(MessageList).selected() is not None
        await until(pilot, lambda: channel_row(pilot.app, "random").rstrip() == "# random", "reading to mark #random read")


async def test_post_reply_react_edit_and_delete(home: Path) -> None:
    async with RallypointApp(home, PASSPHRASE).run_test(size=SIZE, notifications=True) as pilot:
        screen = await main_screen(pilot)
        messages = screen.query_one(MessageList)

        await pilot.press(*"hello world", "enter")  # the composer has focus
        await until_shown(pilot, "hello world")
        assert "alice" in screen_text(pilot.app)

        await pilot.press("up")  # to the message list, on the newest message
        await until(pilot, lambda: messages.has_focus, "the message list to take focus")
        await pilot.press("t")
        await until_shown(pilot, "Thread in # general")
        await pilot.press("c", *"a reply", "enter")
        await until_shown(pilot, "a reply")
        await pilot.press("escape")
        await until_shown(pilot, "↳ 1 reply")
        assert "a reply" not in screen_text(pilot.app)

        messages.focus()
        await pilot.press("r")
        await pilot.press("enter")  # the default reaction
        await until_shown(pilot, "👍 alice")

        await pilot.press("e")
        pilot.app.screen.query_one("#prompt-value", Input).value = "hello again"
        await pilot.press("enter")
        await until_shown(pilot, "hello again")
        assert "(edited)" in screen_text(pilot.app)

        await pilot.press("d")
        await until_shown(pilot, "Delete this message?")
        await pilot.press("y")
        await until_shown(pilot, "(message deleted)")
        assert "hello again" not in screen_text(pilot.app)


async def test_new_channel_from_the_keyboard(home: Path) -> None:
    async with RallypointApp(home, PASSPHRASE).run_test(size=SIZE, notifications=True) as pilot:
        await main_screen(pilot)
        await pilot.press("ctrl+n", *"Bad Name", "enter")
        await until_shown(pilot, "invalid channel name")
        await pilot.press("ctrl+n", *"ops", "tab", "space", "tab", "enter")  # tick "private", then press Create
        await until_shown(pilot, "Message # ops")
        assert "🔒ops" in screen_text(pilot.app)


async def test_enter_on_the_private_checkbox_submits_the_form_as_ticked(home: Path) -> None:
    """Enter on the checkbox once toggled it back and created a public channel: Space ticks,
    Enter submits, wherever the focus is in the form."""
    async with RallypointApp(home, PASSPHRASE).run_test(size=SIZE, notifications=True) as pilot:
        await main_screen(pilot)
        await pilot.press("ctrl+n", *"ops", "tab", "space", "enter")
        await until_shown(pilot, "Message # ops")
        assert isinstance(pilot.app, RallypointApp)
        assert pilot.app.node is not None
        assert {c.name: c.kind for c in await pilot.app.node.views.list_channels()}["ops"] == "private"
        await pilot.press("ctrl+n", *"logistics", "tab", "enter")  # unticked: public
        await until_shown(pilot, "Message # logistics")
        assert {c.name: c.kind for c in await pilot.app.node.views.list_channels()}["logistics"] == "public"


async def test_a_message_posted_by_another_process_appears_while_running(home: Path) -> None:
    async with RallypointApp(home, PASSPHRASE).run_test(size=SIZE, notifications=True) as pilot:
        await main_screen(pilot)
        async with await Node.open(home, PASSPHRASE) as other:  # what `rallypoint post` does
            await other.chat.post("general", "from the cli")
        await until_shown(pilot, "from the cli", timeout=5.0)


async def test_network_text_is_shown_literally_and_inert(home: Path) -> None:
    hostile = "[bold red]x[/] \x1b[31mred\x1b]0;title\x07"
    async with await Node.open(home, PASSPHRASE) as other:
        await other.chat.post("general", hostile)
    async with RallypointApp(home, PASSPHRASE).run_test(size=SIZE, notifications=True) as pilot:
        screen = await main_screen(pilot)
        shown = screen_text(pilot.app)
        assert "[bold red]x[/] ␛[31mred␛]0;title␇" in shown  # no markup parsed, controls visible
        assert "\x1b" not in shown and "\x07" not in shown
        message_list = screen.query_one(MessageList)
        segments = [segment for strip in message_list.render_lines(message_list.region.reset_offset) for segment in strip]
        literal = [segment for segment in segments if "x[/]" in segment.text]
        assert literal and not any(segment.style and segment.style.bold for segment in literal)  # no [bold] applied


async def test_every_binding_fits_the_80_column_footer(home: Path) -> None:
    async with await Node.open(home, PASSPHRASE) as other:
        await other.chat.post("general", "a message")
    async with RallypointApp(home, PASSPHRASE).run_test(size=SIZE, notifications=True) as pilot:
        await main_screen(pilot)
        composer_footer = "↑ Messages ^o Attach ^n New channel alt+↑↓ Channel ^q Quit"
        await until(pilot, lambda: screen_text(pilot.app).splitlines()[-1].strip() == composer_footer, "the composer's bindings")
        await pilot.press("up")
        await until(pilot, lambda: "Thread" in screen_text(pilot.app).splitlines()[-1], "the message list's bindings")
        for label in ("⏎ Thread", "r React", "e Edit", "d Delete", "c Write", "^n New channel", "alt+↑↓ Channel", "^q Quit"):
            assert label in screen_text(pilot.app).splitlines()[-1]
        await pilot.press("t")
        await until_shown(pilot, "esc Close")
        for label in ("r React", "e Edit", "d Delete", "c Write", "^n New channel", "alt+↑↓ Channel", "esc Close", "^q Quit"):
            assert label in screen_text(pilot.app).splitlines()[-1]


async def test_quitting_closes_the_node(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    closed: list[Node] = []
    close = Node.close

    async def recording_close(node: Node) -> None:
        closed.append(node)
        await close(node)

    monkeypatch.setattr(Node, "close", recording_close)
    app = RallypointApp(home, PASSPHRASE)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await main_screen(pilot)
        await pilot.press("ctrl+q")
    assert closed == [app.node]


async def test_the_console_runs_the_lan_service_and_shows_what_peers_send(tmp_path: Path) -> None:
    """What arrives shows up, and the notification names the sender as its certificate does
    (it once gave the bare node id)."""
    alpha, bravo = await make_workspace(tmp_path, "bravo")
    await alpha.chat.create_channel("general")
    await alpha.close()
    config = console_lan()
    async with bravo, RallypointApp(tmp_path / "alpha", WORKSPACE_PASSPHRASE, lan=config).run_test(size=SIZE, notifications=True) as pilot:
        await main_screen(pilot)
        shown = recorded_notifications(pilot.app)
        async with LanService(bravo, LanConfig(bind="127.0.0.1", port=0, discovery=False)) as service:
            service.dial("127.0.0.1", config.port)
            deadline = time.monotonic() + 10
            while not any(c.name == "general" for c in await bravo.views.list_channels()) and time.monotonic() < deadline:
                await pilot.pause(0.05)
            await bravo.chat.post("general", "over the LAN")
            await until_shown(pilot, "over the LAN", timeout=10.0)
            await until_notified(pilot, shown, f"new message(s) from bravo-node ({bravo.identity.node_id.split('-')[0]}-…)", timeout=10.0)


async def test_the_console_closes_when_its_node_is_revoked_over_the_lan(tmp_path: Path) -> None:
    alpha, bravo = await make_workspace(tmp_path, "bravo")
    await alpha.chat.create_channel("general")
    await bravo.close()
    config = console_lan()
    app = RallypointApp(tmp_path / "bravo", WORKSPACE_PASSPHRASE, lan=config)
    async with alpha, app.run_test(size=SIZE, notifications=True) as pilot:
        await main_screen(pilot)
        async with LanService(alpha, LanConfig(bind="127.0.0.1", port=0, discovery=False)) as service:
            service.dial("127.0.0.1", config.port)
            await until_shown(pilot, "general", timeout=10.0)
            await alpha.directory.revoke(bravo.identity.node_key, "stolen")
            deadline = time.monotonic() + 10
            while app.is_running and time.monotonic() < deadline:
                await pilot.pause(0.05)
    assert not app.is_running
    assert app.return_value is not None and "revoked" in app.return_value and "stolen" in app.return_value


async def test_the_console_closes_when_another_process_wipes_its_node(tmp_path: Path) -> None:
    """The appliance's console runs without LAN beside `serve`; a courier's import in another
    process brings this node's revocation."""
    alpha, bravo = await make_workspace(tmp_path, "bravo")
    await alpha.chat.create_channel("general")
    stick = await revocation_on_stick(alpha, bravo, tmp_path)
    await alpha.close()
    app = RallypointApp(tmp_path / "bravo", WORKSPACE_PASSPHRASE)
    async with bravo, app.run_test(size=SIZE, notifications=True) as pilot:
        await main_screen(pilot)
        assert (await import_bundles(bravo, stick)).wiped
        deadline = time.monotonic() + 10
        while app.is_running and time.monotonic() < deadline:
            await pilot.pause(0.05)
    assert not app.is_running
    assert app.return_value is not None and "stolen" in app.return_value


async def test_the_peers_view_shows_trust_and_sessions_live(tmp_path: Path) -> None:
    alpha, bravo, charlie = await make_workspace(tmp_path, "bravo", "charlie")
    await alpha.chat.create_channel("general")
    await alpha.peers.note_lan_peer(charlie.identity.node_id, alpha.identity.workspace_id, "198.51.100.7", 7373)  # seen at an address the allowlist refuses
    await alpha.close()
    await charlie.close()
    config = console_lan()
    async with bravo, RallypointApp(tmp_path / "alpha", WORKSPACE_PASSPHRASE, lan=config).run_test(size=SIZE, notifications=True) as pilot:
        await main_screen(pilot)
        await pilot.press("f2")
        await until_shown(pilot, "charlie-node")
        table = pilot.app.screen.query_one(DataTable)

        def row_of(name: str) -> list[str]:
            return next([str(cell) for cell in table.get_row_at(i)] for i in range(table.row_count) if str(table.get_row_at(i)[0]) == name)

        assert row_of("bravo-node")[1:4] == ["trusted", "-", "-"] and row_of("bravo-node")[4] == "never"
        assert row_of("charlie-node")[1:4] == ["trusted", "198.51.100.7:7373", "refused"]
        await until_shown(pilot, "charlie-node: not synced by LAN: address 198.51.100.7 is not in the allowlist")
        await until_shown(pilot, "(to allow it: rallypoint allow 198.51.100.7/32)")
        async with LanService(bravo, LanConfig(bind="127.0.0.1", port=0, discovery=False)) as service:
            service.dial("127.0.0.1", config.port)
            await until(pilot, lambda: row_of("bravo-node")[3] == "up" and row_of("bravo-node")[4] != "never", "bravo's session", timeout=10.0)
            assert row_of("bravo-node")[2].startswith("127.0.0.1:")
            assert row_of("charlie-node")[3] == "refused"
        await until(pilot, lambda: row_of("bravo-node")[3] == "-", "bravo's session ending", timeout=10.0)
        await pilot.press("escape")
        await main_screen(pilot)


async def test_help_lists_every_binding_and_the_palette_reaches_every_view(home: Path) -> None:
    async with RallypointApp(home, PASSPHRASE).run_test(size=SIZE, notifications=True) as pilot:
        await main_screen(pilot)
        await pilot.press("f1")
        await until_shown(pilot, "Keys (ctrl+p: command palette")
        help_text = "\n".join(str(w.render()) for w in pilot.app.screen.query(Static))
        for section, bindings in binding_sections():
            assert section in help_text
            for binding in bindings:
                assert (binding.description or binding.action) in help_text
        await pilot.press("escape")
        await main_screen(pilot)
        await pilot.press("ctrl+p")
        await pilot.pause(0.2)
        await pilot.press(*"peers and sync")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(pilot.app.screen, PeersScreen), "the peers view from the palette")


async def test_reaction_picker_and_mention_completion(home: Path) -> None:
    async with await Node.open(home, PASSPHRASE) as other:
        await other.directory.add_user("bob", "member")
        await other.chat.post("general", "react to me")
    async with RallypointApp(home, PASSPHRASE).run_test(size=SIZE, notifications=True) as pilot:
        screen = await main_screen(pilot)
        await until_shown(pilot, "react to me")
        screen.query_one(MessageList).focus()
        await pilot.press("r", "down", "down", "down", "enter")  # the fourth: 🎉
        await until_shown(pilot, "🎉 alice")
        await pilot.press("r", "tab", *"🚀", "enter")  # any other emoji, typed
        await until_shown(pilot, "🚀 alice")
        await pilot.press("r")
        await until_shown(pilot, "🎉  party  (yours)")
        await pilot.press("down", "down", "down", "enter")  # picking it again removes it
        await until(pilot, lambda: "🎉 alice" not in screen_text(pilot.app), "the reaction removed")

        composer = screen.query_one(Composer)
        composer.focus()
        await pilot.press(*"thanks @b")
        await until_shown(pilot, "thanks @bob")  # the suggestion, shown after the cursor
        await pilot.press("right")  # accepts it
        await until(pilot, lambda: composer.value == "thanks @bob", "the completed mention")
        await pilot.press("enter")
        await until_shown(pilot, "thanks @bob")


async def test_search_across_channels_opens_the_message_where_it_is(home: Path) -> None:
    async with await Node.open(home, PASSPHRASE) as other:
        await other.chat.create_channel("ops")
        root = await other.chat.post("ops", "the generator needs fuel")
        await other.chat.post("ops", "fuel delivered [bold]tonight[/]", reply_to=root)
        await other.chat.post("general", "nothing to see")
    async with RallypointApp(home, PASSPHRASE).run_test(size=SIZE, notifications=True) as pilot:
        screen = await main_screen(pilot)
        await pilot.press("ctrl+f")
        await until(pilot, lambda: isinstance(pilot.app.screen, SearchScreen), "the search dialog")
        await pilot.press(*"fuel", "enter")
        await until_shown(pilot, "2 message(s) for 'fuel'")
        assert "#ops (thread) · alice: fuel delivered [bold]tonight[/]" in screen_text(pilot.app)  # literal text
        await pilot.press("down")  # from the query to the results
        results = pilot.app.screen.query_one("#search-results", OptionList)
        assert results.has_focus
        assert isinstance(pilot.app.screen, SearchScreen)
        target = next(i for i, m in enumerate(pilot.app.screen.found) if m.root_id)
        await pilot.press(*["down"] * target, "enter")
        await main_screen(pilot)
        await until(pilot, lambda: screen.thread_root == root, "the thread opened")
        assert "Thread in # ops" in pane_title(pilot.app)


async def test_attachments_are_listed_and_saved_under_safe_names(home: Path, tmp_path: Path) -> None:
    async with await Node.open(home, PASSPHRASE) as other:
        await other.chat.post("general", "the plans", attachments=[Attachment("../../etc/plan.txt", b"secret plan"), Attachment("..", b"\x00map")])
    folder = tmp_path / "saved"
    folder.mkdir()
    (folder / "plan.txt").write_bytes(b"kept")
    async with RallypointApp(home, PASSPHRASE).run_test(size=SIZE, notifications=True) as pilot:
        screen = await main_screen(pilot)
        await until_shown(pilot, "📎 plan.txt (11 B)")
        screen.query_one(MessageList).focus()
        await pilot.press("s")
        await until(pilot, lambda: isinstance(pilot.app.screen, SaveFilesScreen), "the save dialog")
        pilot.app.screen.query_one("#save-folder", Input).value = str(folder)
        await pilot.press("enter")
        await until(pilot, lambda: len(list(folder.iterdir())) == 3, "the saved files")
    assert (folder / "plan.txt").read_bytes() == b"kept"  # never overwritten
    assert (folder / "plan (2).txt").read_bytes() == b"secret plan"
    (other_file,) = [p for p in folder.iterdir() if p.name.startswith("attachment-")]  # ".." is no name to save under
    assert other_file.read_bytes() == b"\x00map"


async def test_on_a_wide_terminal_a_thread_opens_beside_its_channel(home: Path) -> None:
    async with await Node.open(home, PASSPHRASE) as other:
        root = await other.chat.post("general", "where is the fuel?")
        await other.chat.post("general", "in the shed", reply_to=root)
        await other.chat.post("general", "unrelated news")
    async with RallypointApp(home, PASSPHRASE).run_test(size=(120, 30), notifications=True) as pilot:
        screen = await main_screen(pilot)
        messages = screen.query_one("#messages", MessageList)
        messages.focus()
        messages.highlighted = 0
        await pilot.press("t")
        await until_shown(pilot, "Thread · escape closes it")
        lines = screen_text(pilot.app).splitlines()
        assert any("unrelated news" in line for line in lines)  # the channel stays in view
        beside = screen.query_one("#beside-messages", MessageList)
        assert [m.text for m in beside.messages.values()] == ["where is the fuel?", "in the shed"]
        await pilot.press("c", *"on my way", "enter")
        await until(pilot, lambda: "on my way" in [m.text for m in beside.messages.values()], "the reply in the thread beside")
        assert "on my way" not in [m.text for m in messages.messages.values()]  # a reply, not a channel message
        await pilot.press("escape")
        await until(pilot, lambda: not screen.query_one("#beside").display, "the thread closed")

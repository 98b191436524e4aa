"""The console's admin screen driven through Pilot at 80x24, against real nodes in tmp homes."""

from __future__ import annotations

import re
import stat
from pathlib import Path
from typing import Any

import pytest
from rich.cells import cell_len
from textual.app import App
from textual.pilot import Pilot
from textual.screen import Screen
from textual.widgets import DataTable, Input, Static

from appliance import certs, recovery_kit
from appliance.node import Node
from tests.conftest import FAST, PASSPHRASE, connect_node_db, make_workspace
from tests.console_helpers import SIZE, main_screen, recorded_notifications, screen_text, until, until_notified, until_shown
from tui.app import RallypointApp
from tui.dialogs.admin_forms import BackupForm, EnrollmentCard, InviteForm, NetworkForm, ReasonForm, RoleConfirm, RoleForm, UserForm
from tui.screens.admin import AdminScreen, admin_screen
from tui.screens.main import MainScreen

HOSTILE = "[bold]x[/] \x1b[31m"
HOSTILE_SHOWN = "[bold]x[/] ␛[31m"  # markup not parsed, the escape made visible


async def until_screen(pilot: Pilot[Any], kind: type[Screen[Any]]) -> None:
    await until(pilot, lambda: isinstance(pilot.app.screen, kind), kind.__name__)


async def open_admin(pilot: Pilot[Any]) -> AdminScreen:
    """What the main screen's admin key will do: push the admin screen for the app's node."""
    app = pilot.app
    await until_screen(pilot, MainScreen)
    assert isinstance(app, RallypointApp) and app.node is not None
    screen = admin_screen(app.node)
    await app.push_screen(screen)
    await until(pilot, lambda: rows(screen, "#users-table") != [] and rows(screen, "#audit-table") != [], "the admin screen to load")
    return screen


def rows(screen: AdminScreen, table: str) -> list[list[str]]:
    widget = screen.query_one(table, DataTable)
    return [[str(value) for value in widget.get_row_at(index)] for index in range(widget.row_count)]


def first_column(screen: AdminScreen, table: str) -> list[str]:
    return [row[0] for row in rows(screen, table)]


def highlight(screen: AdminScreen, table: str, first_cell: str) -> None:
    screen.query_one(table, DataTable).move_cursor(row=first_column(screen, table).index(first_cell))


def assert_fits(app: App[Any]) -> None:
    """No line wider than 80 cells, every footer binding visible, any dialog wholly on screen."""
    lines = screen_text(app).splitlines()
    assert len(lines) == SIZE[1] and all(cell_len(line) <= SIZE[0] for line in lines)
    for active in app.screen.active_bindings.values():
        if active.binding.show:
            assert active.binding.description in lines[-1], (active.binding.description, lines[-1])
    for dialog in app.screen.query(".dialog"):
        assert app.screen.region.contains_region(dialog.region)


@pytest.fixture
async def home(tmp_path: Path) -> Path:
    """A node with alice (admin)."""
    node_home = tmp_path / "alpha"
    await (await Node.init(node_home, workspace_name="acme", user_name="alice", node_name="alpha", passphrase=PASSPHRASE, kdf=FAST)).close()
    return node_home


async def test_add_a_user_and_change_their_role(home: Path) -> None:
    app = RallypointApp(home, PASSPHRASE)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        screen = await open_admin(pilot)
        shown = recorded_notifications(app)
        assert rows(screen, "#users-table")[0][:2] == ["alice", "admin"]

        await pilot.press("a")
        await until_screen(pilot, UserForm)
        await pilot.press("escape")  # cancels
        await until_screen(pilot, AdminScreen)

        await pilot.press("a")
        await until_screen(pilot, UserForm)
        await pilot.click("#form-submit")
        await until_shown(pilot, "Enter a name.")  # the dialog stays open
        await pilot.press(*"has space")
        await pilot.press("enter", "enter")  # Enter moves to the role list, Enter there submits
        await until_notified(pilot, shown, "invalid name 'has space'")
        assert first_column(screen, "#users-table") == ["alice"]

        await pilot.press("a")
        await until_screen(pilot, UserForm)
        await pilot.press(*"bob")
        await pilot.press("enter", "enter")  # the role list starts on member
        await until(pilot, lambda: ["bob", "member"] in [row[:2] for row in rows(screen, "#users-table")], "bob in the table")
        await until_notified(pilot, shown, "User bob added (member)")

        await pilot.press("down", "r")  # bob's row, then Role
        await until_screen(pilot, RoleForm)
        assert "Role for bob" in screen_text(app)
        await pilot.press("down", "enter")  # member -> observer
        await until(pilot, lambda: ["bob", "observer"] in [row[:2] for row in rows(screen, "#users-table")], "bob's new role")
        await until_notified(pilot, shown, "bob is now observer")
        assert app.node is not None and {u.name: u.role for u in app.node.directory.users()} == {"alice": "admin", "bob": "observer"}


async def test_the_role_list_stops_at_its_ends_and_a_new_admin_is_confirmed_by_name(home: Path) -> None:
    """↓ ↓ from member once wrapped round to admin: the list stops at observer, and an admin is
    only made after a confirmation that names the user and the role (Cancel has the focus)."""
    app = RallypointApp(home, PASSPHRASE)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        screen = await open_admin(pilot)
        shown = recorded_notifications(app)
        await pilot.press("a")
        await until_screen(pilot, UserForm)
        await pilot.press(*"bob", "enter", "down", "down", "down", "enter")  # member -> observer, then the end
        await until_notified(pilot, shown, "User bob added (observer)")

        await pilot.press("a")
        await until_screen(pilot, UserForm)
        await pilot.press(*"carol", "enter", "up", "up", "enter")  # member -> admin, then the top
        await until_screen(pilot, RoleConfirm)
        assert "Make carol an ADMIN?" in screen_text(app)
        await pilot.press("enter")  # on Cancel: nothing happens
        await until_screen(pilot, AdminScreen)
        await pilot.press("a")
        await until_screen(pilot, UserForm)
        await pilot.press(*"carol", "enter", "up", "enter")
        await until_screen(pilot, RoleConfirm)
        await pilot.press("shift+tab", "enter")  # on "Make admin"
        await until_notified(pilot, shown, "User carol added (admin)")

        highlight(screen, "#users-table", "bob")
        await pilot.press("r")
        await until_screen(pilot, RoleForm)
        await pilot.press("up", "up", "enter")  # observer -> member -> admin
        await until_screen(pilot, RoleConfirm)
        assert "Make bob an ADMIN?" in screen_text(app)
        await pilot.press("escape")
        await until_screen(pilot, AdminScreen)
        assert app.node is not None and {u.name: u.role for u in app.node.directory.users()} == {"alice": "admin", "bob": "observer", "carol": "admin"}


async def test_enroll_a_node_writes_the_file_shows_the_code_and_the_node_can_join(tmp_path: Path, home: Path) -> None:
    out = tmp_path / "bravo.enrollment"
    app = RallypointApp(home, PASSPHRASE)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        screen = await open_admin(pilot)
        shown = recorded_notifications(app)
        await pilot.press("2")
        await until(pilot, lambda: screen.query_one("#nodes-table", DataTable).has_focus, "the nodes tab")
        assert rows(screen, "#nodes-table")[0][0] == "alpha" and rows(screen, "#nodes-table")[0][3] == "this node"

        await pilot.press("a")
        await until_screen(pilot, InviteForm)
        await pilot.press(*"bravo")
        await pilot.press("enter")
        await pilot.press(*"bob")
        await pilot.press("enter", "enter")  # role: member
        await pilot.press(*str(tmp_path / "missing" / "bravo.enrollment"))
        await pilot.press("enter", "enter")  # the file, then the recovery kit's place (empty: the default)
        await until_notified(pilot, shown, f"there is no directory {tmp_path / 'missing'}")
        assert app.node is not None and [n.name for n in app.node.directory.nodes()] == ["alpha"]  # checked before anything was certified

        await pilot.press("a")
        await until_screen(pilot, InviteForm)
        for field, value in (("invite-node", "bravo"), ("invite-user", "bob"), ("invite-file", str(out))):
            app.screen.query_one(f"#{field}", Input).value = value
        app.screen.query_one("#invite-kit", Input).focus()
        await pilot.press("enter")
        await until_screen(pilot, EnrollmentCard)
        await until(pilot, lambda: (screen_text(app).splitlines() or [""])[-1].strip() != "", "the card's footer to be drawn")  # under load it paints a frame later (or none yet)
        code = str(app.screen.query_one("#enrollment-code", Static).render())
        assert re.fullmatch(r"[0-9A-Z]{4}-[0-9A-Z]{4}-[0-9A-Z]{4}", code)
        assert code in screen_text(app)
        assert str(app.screen.query_one("#enrollment-file", Static).render()) == str(out)
        kit_code = str(app.screen.query_one("#kit-code", Static).render())
        assert re.fullmatch(r"[0-9A-Z]{4}-[0-9A-Z]{4}-[0-9A-Z]{4}-[0-9A-Z]{4}", kit_code)
        assert kit_code in screen_text(app)
        kit = Path(str(app.screen.query_one("#kit-file", Static).render()))
        assert kit.parent == home / "recovery-kits" and kit.name.startswith("bravo-")  # on the admin's node, not beside the enrollment file
        assert_fits(app)
        await pilot.press("enter")
        await until_screen(pilot, AdminScreen)
        await until(pilot, lambda: "bravo" in first_column(screen, "#nodes-table"), "bravo in the nodes table")
        assert code not in screen_text(app) and kit_code not in screen_text(app)  # shown once

    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert stat.S_IMODE(kit.stat().st_mode) == 0o600 and stat.S_IMODE(kit.parent.stat().st_mode) == 0o700
    opened = recovery_kit.open_kit(kit.read_bytes(), kit_code)
    assert opened.kind == recovery_kit.KitKind.ENROLLMENT and opened.node_name == "bravo"
    async with await Node.join(tmp_path / "bravo", out.read_bytes(), code, PASSPHRASE, kdf=FAST) as bravo:
        me = bravo.identity.whoami()
        assert (me.node_name, me.user_name, me.role) == ("bravo", "bob", "member")


async def test_revoke_a_node_and_a_user(tmp_path: Path) -> None:
    alpha, bob_node = await make_workspace(tmp_path, "bob")
    await alpha.directory.add_user("carol")
    bob_node_key = bob_node.identity.node_key
    await alpha.close()
    await bob_node.close()
    app = RallypointApp(tmp_path / "alpha", PASSPHRASE)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        screen = await open_admin(pilot)
        shown = recorded_notifications(app)
        assert app.node is not None

        await pilot.press("2")
        await until(pilot, lambda: "bob-node" in first_column(screen, "#nodes-table"), "bob's node")
        highlight(screen, "#nodes-table", "bob-node")
        await pilot.press("x")
        await until_screen(pilot, ReasonForm)
        assert "Revoke node bob-node?" in screen_text(app)
        await pilot.press("enter")
        await until_shown(pilot, "Enter a reason.")
        await pilot.press(*"laptop lost")
        await pilot.press("enter")
        await until(pilot, lambda: ["bob-node", "revoked"] in [[row[0], row[2]] for row in rows(screen, "#nodes-table")], "bob's node revoked")
        await until_notified(pilot, shown, "Node bob-node revoked")
        assert app.node.directory.trust_of(bob_node_key) == "revoked"
        highlight(screen, "#nodes-table", "bob-node")
        await pilot.press("x")
        await until_notified(pilot, shown, "revoked already")

        await pilot.press("1")
        highlight(screen, "#users-table", "carol")
        await pilot.press("x")
        await until_screen(pilot, ReasonForm)
        await pilot.press(*"left the team")
        await pilot.press("enter")
        await until(pilot, lambda: ["carol", "revoked"] in [[row[0], row[3]] for row in rows(screen, "#users-table")], "carol shown revoked")
        await until_notified(pilot, shown, "User carol revoked")
        assert app.node.directory.current.user_by_name("carol") is None
        await pilot.press("x")  # carol is still highlighted
        await until_notified(pilot, shown, "User carol is revoked already")

        highlight(screen, "#users-table", "alice")
        await pilot.press("x")
        await until_screen(pilot, ReasonForm)
        await pilot.press(*"oops")
        await pilot.press("enter")
        await until_notified(pilot, shown, "an admin cannot revoke themselves")  # the node's rule, shown as is


async def test_a_backup_from_the_nodes_tab_restores(tmp_path: Path, home: Path) -> None:
    shelf = tmp_path / "shelf"
    shelf.mkdir()
    app = RallypointApp(home, PASSPHRASE)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await open_admin(pilot)
        shown = recorded_notifications(app)
        await pilot.press("2", "b")
        await until_screen(pilot, BackupForm)
        await pilot.press("enter")
        await until_shown(pilot, "Enter the folder to write the backup into.")
        await pilot.press(*str(tmp_path / "missing" / "backups"), "enter")  # a missing folder is made, but not its parent
        await until_notified(pilot, shown, "no folder")
        await pilot.press("b")
        await until_screen(pilot, BackupForm)
        await pilot.press(*str(shelf), "enter")
        await until_notified(pilot, shown, f"Backup written to {shelf}")
        assert app.node is not None and (await app.node.audit.entries(1))[0].action == "backup"
    (taken,) = shelf.glob("*.backup.db")  # beside it: its .sha256 and its key file (.backup.db.key)
    async with await Node.restore(tmp_path / "rebuilt", taken, PASSPHRASE) as restored:
        assert restored.identity.whoami().node_name == "alpha"


async def test_allow_deny_and_remove_network_rules(home: Path) -> None:
    app = RallypointApp(home, PASSPHRASE)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        screen = await open_admin(pilot)
        shown = recorded_notifications(app)
        await pilot.press("3")
        await until(pilot, lambda: ["127.0.0.0/8", "allow", "default"] in rows(screen, "#rules-table"), "the default rules")
        assert ["100.64.0.0/10", "allow", "default"] in rows(screen, "#rules-table")
        await until_shown(pilot, "LAN sessions in both directions, incoming and dialled")
        assert_fits(app)

        await pilot.press("a")
        await until_screen(pilot, NetworkForm)
        await pilot.press(*"10.1.0.0/16")
        await pilot.press("enter")
        await until(pilot, lambda: rows(screen, "#rules-table") == [["10.1.0.0/16", "allow", "operator"]], "the allow rule replacing the defaults")

        await pilot.press("d")
        await until_screen(pilot, NetworkForm)
        await pilot.press(*"192.168.5.0/24")
        await pilot.press("enter")
        await until(pilot, lambda: ["192.168.5.0/24", "deny", "operator"] in rows(screen, "#rules-table"), "the deny rule")

        await pilot.press("a")
        await until_screen(pilot, NetworkForm)
        await pilot.press(*"10.0.0.1/8")
        await pilot.press("enter")
        await until_notified(pilot, shown, "'10.0.0.1/8' is not a network in CIDR notation")
        assert len(rows(screen, "#rules-table")) == 2

        highlight(screen, "#rules-table", "10.1.0.0/16")
        await pilot.press("x")
        await until(pilot, lambda: ["127.0.0.0/8", "allow", "default"] in rows(screen, "#rules-table"), "the defaults back")
        await until_notified(pilot, shown, "Rule for 10.1.0.0/16 removed")
        assert app.node is not None and [(r.network, r.action) for r in await app.node.peers.network_rules() if not r.default] == [("192.168.5.0/24", "deny")]

        highlight(screen, "#rules-table", "127.0.0.0/8")
        await pilot.press("x")
        await until_notified(pilot, shown, "127.0.0.0/8 is a built-in default")


async def test_audit_log_lists_filters_and_verifies(home: Path) -> None:
    async with await Node.open(home, PASSPHRASE) as node:
        await node.directory.add_user("bob")
        await node.directory.set_role("bob", "observer")
        await node.peers.set_network_rule("10.9.0.0/16", "deny")
    app = RallypointApp(home, PASSPHRASE)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        screen = await open_admin(pilot)
        await pilot.press("4")
        await until(pilot, lambda: screen.query_one("#audit-table", DataTable).has_focus, "the audit tab")
        assert app.node is not None
        count = (await app.node.audit.verify()).count
        await until_shown(pilot, f"Audit chain intact: {count} entries")
        actions = [row[2] for row in rows(screen, "#audit-table")]
        assert actions[:3] == ["network_rule", "role_changed", "user_added"]  # newest first
        assert {row[3] for row in rows(screen, "#audit-table")[:3]} == {"alice"}
        detail = screen.query_one("#audit-detail", Static)
        assert str(detail.render()).endswith('alice: network_rule {"action": "deny", "network": "10.9.0.0/16"}')  # the highlighted entry, in full
        await pilot.press("down")
        await until(pilot, lambda: str(detail.render()).endswith('alice: role_changed {"from": "member", "to": "observer", "user": "bob"}'), "the next entry's detail")
        assert_fits(app)

        await pilot.press("slash")
        await until(pilot, lambda: isinstance(app.screen.focused, Input), "the filter")
        assert_fits(app)  # letter keys leave the footer while typing
        await pilot.press(*"observer")  # in the detail of one entry
        await until(pilot, lambda: [row[2] for row in rows(screen, "#audit-table")] == ["role_changed"], "the filter to narrow the log")
        assert "1 match" in screen_text(app)
        await pilot.press("escape")
        await until(pilot, lambda: screen.query_one("#audit-table", DataTable).has_focus, "the table again")
        assert screen.query_one("#audit-filter", Input).value == "observer"
        screen.query_one("#audit-filter", Input).value = "NETWORK_RULE"  # case-insensitive, on the action
        await until(pilot, lambda: [row[2] for row in rows(screen, "#audit-table")] == ["network_rule"], "the action filter")

    with connect_node_db(home / "node.db") as db:
        db.execute("UPDATE audit_log SET detail = '{}' WHERE seq = 2")
    async with RallypointApp(home, PASSPHRASE).run_test(size=SIZE, notifications=True) as pilot:
        await open_admin(pilot)
        await pilot.press("4")
        await until_shown(pilot, "Audit chain BROKEN after 1: entry 2 was altered")


async def member_node(admin_home: Path, home: Path, name: str) -> Path:
    """A node joined from `admin_home`'s invitation whose own user `name` is a member (the
    console acts only as the node's own user)."""
    async with await Node.open(admin_home, PASSPHRASE) as admin:
        enrollment = await admin.enrollment.invite(f"{name}-node", name, "member", kdf=FAST)
    await (await Node.join(home, enrollment.data, enrollment.code, PASSPHRASE, kdf=FAST)).close()
    return home


async def test_a_member_is_refused_by_the_node_and_the_refusal_is_audited(tmp_path: Path, home: Path) -> None:
    carol_home = await member_node(home, tmp_path / "carol", "carol")
    out = tmp_path / "x.enrollment"
    app = RallypointApp(carol_home, PASSPHRASE)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        screen = await open_admin(pilot)
        shown = recorded_notifications(app)
        assert "carol (member)" in screen_text(app)

        await pilot.press("a")
        await until_screen(pilot, UserForm)
        await pilot.press(*"dave")
        await pilot.press("enter", "enter")
        await until_notified(pilot, shown, "user add needs the admin role")

        await pilot.press("3", "d")
        await until_screen(pilot, NetworkForm)
        await pilot.press(*"10.0.0.0/8")
        await pilot.press("enter")
        await until_notified(pilot, shown, "network rule deny needs the admin role")

        await pilot.press("2", "a")
        await until_screen(pilot, InviteForm)
        for field, value in (("invite-node", "bravo"), ("invite-user", "bob"), ("invite-file", str(out))):
            app.screen.query_one(f"#{field}", Input).value = value
        await pilot.click("#form-submit")
        await until_notified(pilot, shown, "invite needs the admin role")

        await pilot.press("1")
        highlight(screen, "#users-table", "alice")
        await pilot.press("x")
        await until_screen(pilot, ReasonForm)
        await pilot.press(*"coup")
        await pilot.press("enter")
        await until_notified(pilot, shown, "revoke needs the admin role")

        await pilot.press("4")
        await until(pilot, lambda: [row[2] for row in rows(screen, "#audit-table")][:4] == ["permission_denied"] * 4, "the refusals in the log")
        assert {row[3] for row in rows(screen, "#audit-table")[:4]} == {"carol"}

        assert app.node is not None
        refused = [entry for entry in await app.node.audit.entries() if entry.action == "permission_denied"]
        carol = app.node.identity.whoami().user_key.hex()
        assert [(entry.actor, entry.detail["action"]) for entry in refused] == [
            (carol, "user add"), (carol, "network rule deny"), (carol, "invite"), (carol, "revoke")
        ]
        assert [u.name for u in app.node.directory.users()] == ["alice", "carol"] and not out.exists()
        assert not any(not r.default for r in await app.node.peers.network_rules())


async def test_hostile_names_and_reasons_are_shown_literally(tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A rogue admin elsewhere can certify names this node's own checks would refuse.
    monkeypatch.setattr(certs, "check_name", lambda name: name)
    async with await Node.open(home, PASSPHRASE) as node:
        await node.directory.add_user(HOSTILE)
        await node.enrollment.invite("[red]n[/]\x07", "bob", kdf=FAST)
        bob = node.directory.current.user_by_name("bob")
        assert bob is not None
        await node.directory.revoke(bob.key, "[b]why[/b]\x1b[2J")
    app = RallypointApp(home, PASSPHRASE)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        screen = await open_admin(pilot)
        shown = recorded_notifications(app)
        assert HOSTILE_SHOWN in first_column(screen, "#users-table")
        assert HOSTILE_SHOWN in screen_text(app)
        await pilot.press("2")
        await until_shown(pilot, "[red]n[/]␇")
        await pilot.press("4")
        await until_shown(pilot, "[b]why[/b]")  # in the highlighted entry's detail: JSON escapes the ESC
        text = screen_text(app)
        assert "\x1b" not in text and "\x07" not in text

        await pilot.press("1")
        highlight(screen, "#users-table", HOSTILE_SHOWN)
        await pilot.press("r")
        await until_screen(pilot, RoleForm)
        await until_shown(pilot, f"Role for {HOSTILE_SHOWN}")
        await pilot.press("escape")
        await until_screen(pilot, AdminScreen)
        await pilot.press("x")
        await until_screen(pilot, ReasonForm)
        await pilot.press(*"[i]gone[/i]")
        await pilot.press("enter")
        assert "[/]" in await until_notified(pilot, shown, f"User {HOSTILE_SHOWN} revoked")
        await until(pilot, lambda: [HOSTILE_SHOWN, "revoked"] in [[row[0], row[3]] for row in rows(screen, "#users-table")], "the hostile user revoked")


async def test_every_tab_and_dialog_fits_80_columns(home: Path) -> None:
    app = RallypointApp(home, PASSPHRASE)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await open_admin(pilot)
        for tab, key, dialog in (("1", "a", UserForm), ("1", "r", RoleForm), ("1", "x", ReasonForm), ("2", "a", InviteForm), ("2", "b", BackupForm), ("3", "d", NetworkForm)):
            await pilot.press(tab)
            await pilot.pause(0.1)
            assert_fits(app)
            await pilot.press(key)
            await until_screen(pilot, dialog)
            await pilot.pause(0.1)
            assert_fits(app)
            await pilot.press("escape")
            await until_screen(pilot, AdminScreen)
        await pilot.press("4")
        await pilot.pause(0.1)
        assert_fits(app)
        await pilot.press("escape")  # Back
        await until_screen(pilot, MainScreen)


async def test_the_admin_area_is_reachable_by_key_and_palette_for_admins_only(tmp_path: Path, home: Path) -> None:
    async with RallypointApp(home, PASSPHRASE).run_test(size=SIZE, notifications=True) as pilot:
        await until(pilot, lambda: isinstance(pilot.app.screen, MainScreen), "the main screen")
        await pilot.press("f3")
        await until_screen(pilot, AdminScreen)
    mallory_home = await member_node(home, tmp_path / "mallory", "mallory")
    async with RallypointApp(mallory_home, PASSPHRASE).run_test(size=SIZE, notifications=True) as pilot:
        screen = await main_screen(pilot)
        await pilot.press("f3")
        await pilot.pause(0.3)
        assert not isinstance(pilot.app.screen, AdminScreen)
        assert "Admin" not in [command.title for command in pilot.app.get_system_commands(screen)]

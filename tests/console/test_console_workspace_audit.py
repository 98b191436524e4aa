"""The workspace audit view (tui/screens/workspace_audit.py) through Pilot at 80x24: every
node's trail held here with its verdict, filtered by node, a broken copy named, network text
shown literally; and its snapshot (tests/snapshots/workspace_audit.txt)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
from rich.cells import cell_len
from textual.pilot import Pilot
from textual.widgets import DataTable, Static

from appliance import audit
from appliance.node import Node
from sync.sneakernet import export_bundles, import_bundles
from tests.conftest import FAST, PASSPHRASE, REPO, connect_node_db
from tests.console_helpers import SIZE, Steps, main_screen, screen_text, until, until_shown
from tui.app import RallypointApp
from tui.screens.admin import admin_screen
from tui.screens.workspace_audit import WorkspaceAuditScreen

START_MS = 1_790_000_000_000
SNAPSHOT = REPO / "tests" / "snapshots" / "workspace_audit.txt"
HOSTILE = '[bold]x[/] \x1b[31m'


@pytest.fixture(autouse=True)
def utc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()


@pytest.fixture
async def bravo_home(tmp_path: Path) -> tuple[Path, str, str]:
    """alpha (alice, admin) whose trail reached bravo (bob, admin) by bundle; times and keys
    fixed. Returns bravo's home and the node ids of alpha and bravo."""
    a, b = Steps(b"alpha"), Steps(b"bravo")
    alpha = await Node.init(tmp_path / "alpha", workspace_name="acme", user_name="alice", node_name="alpha", passphrase=PASSPHRASE, kdf=FAST, clock=a.clock, rng=a.rng)
    async with alpha:
        a.step()
        enrollment = await alpha.enrollment.invite("bravo", "bob", "admin", kdf=FAST)
        async with await Node.join(tmp_path / "bravo", enrollment.data, enrollment.code, PASSPHRASE, kdf=FAST, clock=b.clock, rng=b.rng) as bravo:
            a.step()
            await alpha.directory.add_user("erin")
            a.step()
            await alpha.chat.create_channel("ops", private=True)
            stick = tmp_path / "stick"
            stick.mkdir()
            a.step()
            await export_bundles(alpha, stick, for_nodes=[bravo.identity.node_id], clock=a.clock, rng=a.rng)
            b.step()
            report = await import_bundles(bravo, stick)
            assert not report.rejected
            ids = (alpha.identity.node_id, bravo.identity.node_id)
    return tmp_path / "bravo", *ids


async def open_view(pilot: Pilot[Any]) -> WorkspaceAuditScreen:
    app = pilot.app
    await main_screen(pilot)
    assert isinstance(app, RallypointApp) and app.node is not None
    await app.push_screen(admin_screen(app.node))
    await pilot.press("4")
    await until(pilot, lambda: "All nodes" in screen_text(app), "the audit tab's footer")
    await pilot.press("w")
    await until(pilot, lambda: isinstance(app.screen, WorkspaceAuditScreen), "the workspace audit view")
    screen = app.screen
    assert isinstance(screen, WorkspaceAuditScreen)
    await until(pilot, lambda: screen.query_one("#trail-nodes", DataTable).row_count == 3, "the nodes and their verdicts")
    return screen


def rows(screen: WorkspaceAuditScreen, table: str) -> list[list[str]]:
    widget = screen.query_one(table, DataTable)
    return [[str(value) for value in widget.get_row_at(index)] for index in range(widget.row_count)]


async def test_every_nodes_trail_with_its_verdict_filtered_by_node(bravo_home: tuple[Path, str, str]) -> None:
    home, alpha_id, bravo_id = bravo_home
    async with RallypointApp(home, PASSPHRASE).run_test(size=SIZE) as pilot:
        screen = await open_view(pilot)
        nodes = rows(screen, "#trail-nodes")
        assert [row[1] for row in nodes] == ["", bravo_id, alpha_id]  # all, this node, then the others
        assert nodes[1][0] == "bravo (this node)" and nodes[2][0] == "alpha"
        assert all(row[2].startswith("intact") for row in nodes[1:])
        assert "2 nodes' trails held here, each verified against its node's key" in screen_text(pilot.app)
        assert {row[0] for row in rows(screen, "#trail-entries")} == {"alpha", "bravo"}
        screen.query_one("#trail-nodes", DataTable).move_cursor(row=2)
        await until(pilot, lambda: {row[0] for row in rows(screen, "#trail-entries")} == {"alpha"}, "alpha's entries only")
        actions = [row[3] for row in rows(screen, "#trail-entries")]
        assert "user_added" in actions and "channel_created" in actions and actions[-1] == "init"
        detail = str(screen.query_one("#trail-detail", Static).render())
        assert detail.startswith("alpha #") and f"(from {alpha_id} at " in detail
        assert all(cell_len(line) <= SIZE[0] for line in screen_text(pilot.app).splitlines())

    # A copy edited in bravo's store, hashes recomputed, with text meant to be markup: the view
    # names the first bad entry and shows the text literally.
    with connect_node_db(home / "node.db") as db:
        origin, seq = db.execute("SELECT origin, min(seq) FROM workspace_audit WHERE action = 'user_added'").fetchone()
        found = db.execute("SELECT seq, at, actor, action, detail, prev_hash FROM workspace_audit WHERE origin = ? AND seq >= ? ORDER BY seq", (origin, seq)).fetchall()
        prev = found[0][5]
        for row_seq, at, actor, action, old, _ in found:
            text = f'{{"user":"{HOSTILE}"}}' if row_seq == seq else old
            digest = audit.entry_hash(row_seq, at, actor, action, text, prev)
            db.execute("UPDATE workspace_audit SET detail = ?, prev_hash = ?, hash = ? WHERE origin = ? AND seq = ?", (text, prev, digest, origin, row_seq))
            prev = digest
    async with RallypointApp(home, PASSPHRASE).run_test(size=SIZE) as pilot:
        screen = await open_view(pilot)
        await until_shown(pilot, f"1 of 2 trails BROKEN: alpha entry {seq} was altered")
        assert rows(screen, "#trail-nodes")[2][2] == f"BROKEN after {seq - 1}"
        screen.query_one("#trail-nodes", DataTable).move_cursor(row=2)
        await until(pilot, lambda: {row[0] for row in rows(screen, "#trail-entries")} == {"alpha"}, "alpha's entries only")
        table = screen.query_one("#trail-entries", DataTable)
        table.move_cursor(row=[row[3] for row in rows(screen, "#trail-entries")].index("user_added"))
        await until(pilot, lambda: "[bold]x[/] ␛[31m" in str(screen.query_one("#trail-detail", Static).render()), "the hostile text, literally")


async def test_a_member_gets_the_refusal_not_the_trails(tmp_path: Path) -> None:
    a = Steps(b"alpha")
    alpha = await Node.init(tmp_path / "alpha", workspace_name="acme", user_name="alice", node_name="alpha", passphrase=PASSPHRASE, kdf=FAST, clock=a.clock, rng=a.rng)
    async with alpha:
        enrollment = await alpha.enrollment.invite("charlie", "carol", kdf=FAST)
    await (await Node.join(tmp_path / "charlie", enrollment.data, enrollment.code, PASSPHRASE, kdf=FAST)).close()
    async with RallypointApp(tmp_path / "charlie", PASSPHRASE).run_test(size=SIZE, notifications=True) as pilot:
        app = pilot.app
        await main_screen(pilot)
        assert isinstance(app, RallypointApp) and app.node is not None
        await app.push_screen(WorkspaceAuditScreen(app.node.audit))
        await until_shown(pilot, "the workspace's audit trail needs the admin role")
        assert (await app.node.audit.entries())[-1].action == "permission_denied"


async def test_the_view_matches_its_snapshot(bravo_home: tuple[Path, str, str]) -> None:
    home, _, _ = bravo_home
    async with RallypointApp(home, PASSPHRASE).run_test(size=SIZE) as pilot:
        await open_view(pilot)
        await pilot.pause(0.3)
        shown = screen_text(pilot.app)
    assert all(cell_len(line) <= SIZE[0] for line in shown.splitlines())
    if os.environ.get("RALLYPOINT_UPDATE_SNAPSHOTS") == "1":
        SNAPSHOT.write_text(shown)
    assert shown == SNAPSHOT.read_text(), "the workspace audit screen changed; if on purpose, rerun with RALLYPOINT_UPDATE_SNAPSHOTS=1"


async def test_enter_in_the_audit_filter_returns_to_the_table(bravo_home: tuple[Path, str, str]) -> None:
    home, _, _ = bravo_home
    async with RallypointApp(home, PASSPHRASE).run_test(size=SIZE) as pilot:
        app = pilot.app
        await main_screen(pilot)
        assert isinstance(app, RallypointApp) and app.node is not None
        screen = admin_screen(app.node)
        await app.push_screen(screen)
        await pilot.press("4")
        await until(pilot, lambda: screen.query_one("#audit-table", DataTable).has_focus, "the audit tab")
        await pilot.press("slash", *"joined", "enter")
        await until(pilot, lambda: screen.query_one("#audit-table", DataTable).has_focus, "the table after Enter")
        assert [str(row[2]) for row in (screen.query_one("#audit-table", DataTable).get_row_at(i) for i in range(screen.query_one("#audit-table", DataTable).row_count))] == ["joined"]


async def test_entries_a_restore_superseded_are_shown_marked_beside_the_trail(bravo_home: tuple[Path, str, str]) -> None:
    """An entry of alpha's trail kept apart (as when a later restore of alpha superseded it)
    counts in alpha's verdict and is listed marked, with who sent the branch that replaced it."""
    home, alpha_id, _ = bravo_home
    with connect_node_db(home / "node.db") as conn:
        conn.execute(
            "INSERT INTO audit_superseded SELECT origin, hash, seq, at, actor, action, detail, prev_hash, signature, received_at, received_from, ?, ? FROM workspace_audit WHERE seq = 2",
            (START_MS + 600_000, alpha_id),
        )
        held = conn.execute("SELECT count(*) FROM workspace_audit").fetchone()[0]
    async with RallypointApp(home, PASSPHRASE).run_test(size=SIZE) as pilot:
        screen = await open_view(pilot)
        assert rows(screen, "#trail-nodes")[2][2] == f"intact ({held}, 1 superseded)"
        screen.query_one("#trail-nodes", DataTable).move_cursor(row=2)
        await until(pilot, lambda: any(row[3].startswith("(superseded) ") for row in rows(screen, "#trail-entries")), "the superseded entry, marked")
        marked = [index for index, row in enumerate(rows(screen, "#trail-entries")) if row[3].startswith("(superseded) ")]
        screen.query_one("#trail-entries", DataTable).move_cursor(row=marked[0])
        await until(pilot, lambda: "superseded at" in str(screen.query_one("#trail-detail", Static).render()), "the entry's detail")
        assert f"by a later restore of its node, sent by {alpha_id}" in str(screen.query_one("#trail-detail", Static).render())

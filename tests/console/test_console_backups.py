"""The backups' health on the Peers and sync health screen: an overdue daily backup, a fresh
verified one and a failed one, each shown as it happens (the screen reloads on its own)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from textual.widgets import Static

from appliance import cipher
from appliance.errors import BackupCheckFailed
from appliance.node import Node
from tests.conftest import FAST, PASSPHRASE
from tests.console_helpers import SIZE, main_screen, until, until_shown
from tui.app import RallypointApp
from tui.screens.peers import PeersScreen

HOUR_MS = 3600 * 1000


async def test_the_peers_screen_shows_an_overdue_a_fresh_and_a_failed_backup(tmp_path: Path) -> None:
    home, shelf = tmp_path / "alpha", tmp_path / "shelf"
    yesterday = int(time.time() * 1000) - 30 * HOUR_MS
    async with await Node.init(home, workspace_name="acme", user_name="alice", node_name="alpha", passphrase=PASSPHRASE, kdf=FAST, clock=lambda: yesterday) as node:
        await node.chat.create_channel("general")
        await node.custody.backup(shelf)  # the last backup, taken 30 hours ago: the daily one was missed
    app = RallypointApp(home, PASSPHRASE)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await main_screen(pilot)
        await pilot.press("f2")
        await until(pilot, lambda: isinstance(pilot.app.screen, PeersScreen), "the peers view")
        await until_shown(pilot, "Backups: OVERDUE, last verified")
        line = pilot.app.screen.query_one("#peers-backup", Static)
        assert line.has_class("-warning") and not line.has_class("-failed")

        assert app.node is not None
        await app.node.custody.backup(shelf)
        await until_shown(pilot, "Backups: ok, last verified", timeout=10.0)
        assert not line.has_class("-warning")

        real = app.node.store.backup_into

        async def damaged(target: Path) -> None:  # the copy as a failing medium returns it
            await real(target)
            assert app.node is not None and app.node.store.db_key is not None
            with cipher.Keyed(str(target), app.node.store.db_key).connect() as conn:
                conn.execute("UPDATE audit_log SET actor = 'someone else' WHERE seq = 1")

        app.node.store.backup_into = damaged  # type: ignore[method-assign]
        await pilot.pause(1.1)  # a new second: a new backup name
        with pytest.raises(BackupCheckFailed):
            await app.node.custody.backup(shelf)
        await until_shown(pilot, "Backups: LAST FAILED", timeout=10.0)
        await until_shown(pilot, "entry 1 was altered", timeout=5.0)
        assert line.has_class("-warning") and line.has_class("-failed")

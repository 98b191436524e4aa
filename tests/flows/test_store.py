"""Schema, migrations and storage failures."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from appliance import schema
from appliance.compliance_records import ExportFilter, ExportFormat
from appliance.errors import StorageError
from appliance.node import Node
from appliance.store import MIGRATIONS, Store
from tests.conftest import FAST, PASSPHRASE, connect_node_db, node_store


def test_the_code_knows_the_newest_migration() -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    assert ScriptDirectory.from_config(config).get_current_head() == schema.SCHEMA_REVISION


def _not_fts(name: str | None, kind: str, _parent: object) -> bool:
    """The FTS5 index is SQLite-only and made by raw SQL in the migration, not declared."""
    return not (kind == "table" and name is not None and name.startswith("messages_fts"))


async def test_migrations_build_exactly_the_declared_schema(tmp_path: Path) -> None:
    async with Store.at(tmp_path) as store:
        async with store.reading() as conn:
            diff = await conn.run_sync(lambda sync: compare_metadata(MigrationContext.configure(sync, opts={"include_name": _not_fts}), schema.metadata))
    assert diff == []


async def test_a_full_disk_is_a_clear_error_and_loses_nothing(tmp_path: Path) -> None:
    home = tmp_path / "alpha"
    async with await Node.init(home, workspace_name="acme", user_name="alice", node_name="alpha", passphrase=PASSPHRASE, kdf=FAST) as node:
        await node.chat.create_channel("general")
        for i in range(20):
            await node.chat.post("general", f"kept {i}")

    with connect_node_db(home / "node.db") as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
    store = node_store(home)

    def cap_size(dbapi_connection: sqlite3.Connection, _record: object) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA max_page_count = {pages + 2}")  # the "disk" is nearly full
        cursor.close()

    store.on_connect(cap_size)  # the async engine and the writer thread alike
    async with await Node.open(home, PASSPHRASE, store=store) as node:
        with pytest.raises(StorageError, match="full"):
            for i in range(2000):
                await node.chat.post("general", f"filler {i} " + "x" * 2000)
        texts = [m.text for m in await node.views.read("general", limit=5000)]
    assert texts[:20] == [f"kept {i}" for i in range(20)]

    async with await Node.open(home, PASSPHRASE) as node:  # space again: all consistent
        after = [m.text for m in await node.views.read("general", limit=5000)]
        assert after == texts
        await node.chat.post("general", "room again")


async def test_the_in_memory_store_runs_a_whole_node(tmp_path: Path) -> None:
    store = Store.memory()
    node = await Node.init(tmp_path / "memory", workspace_name="acme", user_name="alice", node_name="alpha", passphrase=PASSPHRASE, kdf=FAST, store=store)
    await node.chat.create_channel("general")
    message = await node.chat.post("general", "kept in memory")
    assert [m.id for m in await node.views.read("general")] == [message]
    assert [m.id for m in await node.views.search("memory")] == [message]
    # No other process reaches the database: the export's parts are made on a thread here.
    exported = await node.audit.compliance.export(tmp_path / "export.csv", ExportFormat.CSV, ExportFilter())
    assert exported.records == 1 and b"kept in memory" in (tmp_path / "export.csv").read_bytes()
    assert not (tmp_path / "memory" / "node.db").exists()
    await node.close()


async def test_a_home_is_any_folder_name(tmp_path: Path) -> None:
    """'?', '#' and '%' end or escape a path in a URL; the store takes the home as a path."""
    home = tmp_path / "field kit #2?mode=ro%20"
    async with await Node.init(home, workspace_name="acme", user_name="alice", node_name="alpha", passphrase=PASSPHRASE, kdf=FAST) as node:
        await node.chat.create_channel("general")
        await node.chat.post("general", "kept where it belongs")
    assert [p.name for p in tmp_path.iterdir()] == [home.name]
    async with await Node.open(home, PASSPHRASE) as node:
        assert [m.text for m in await node.views.read("general")] == ["kept where it belongs"]
        # The export's workers open the same file by its name.
        exported = await node.audit.compliance.export(tmp_path / "export.csv", ExportFormat.CSV, ExportFilter())
        assert exported.records == 1 and b"kept where it belongs" in (tmp_path / "export.csv").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([home.name, "export.csv"])


async def test_read_then_write_transactions_of_two_processes_do_not_collide(tmp_path: Path) -> None:
    """Two nodes on one home (the console and the CLI, say) mark the same fresh channels read at
    the same moment: each transaction's read of the marker and its write are one unit."""
    home = tmp_path / "alpha"
    async with await Node.init(home, workspace_name="acme", user_name="alice", node_name="alpha", passphrase=PASSPHRASE, kdf=FAST) as node:
        for i in range(30):
            await node.chat.create_channel(f"c{i}")
            await node.chat.post(f"c{i}", "unread")
    async with await Node.open(home, PASSPHRASE) as console, await Node.open(home, PASSPHRASE) as cli:
        for i in range(30):
            await asyncio.gather(console.views.read(f"c{i}"), cli.views.read(f"c{i}"))
        assert all(s.unread == 0 for s in await cli.views.list_channels())

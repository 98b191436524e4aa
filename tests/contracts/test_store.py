"""The store's contract (appliance/store.py `Storage`), run against the SQLite file a node keeps
(`Store.at`) and its in-memory twin (`Store.memory()`): a failed transaction leaves nothing,
committed writes are read back, and a reader running while a transaction is open sees only
committed data. The probe table is made here: the contract is about transactions, not the schema."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from sqlalchemy import text

from appliance.errors import StorageError
from appliance.store import Storage, Store

READER_WAIT = 0.3  # seconds the writer keeps its transaction open with a reader running
READER_DEADLINE = 20.0  # seconds a reader may take once the writer is done


def file_store(tmp_path: Path) -> Store:
    return Store.at(tmp_path)


def memory_store(_tmp_path: Path) -> Store:
    return Store.memory()


PORT = Storage
IMPLEMENTATIONS = {"file": Store.at, "memory": Store.memory}  # the twin: SQLite in memory


@pytest.fixture(params=list(IMPLEMENTATIONS))
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Storage]:
    make: Callable[[Path], Store] = file_store if request.param == "file" else memory_store
    async with make(tmp_path) as opened:
        async with opened.transaction() as conn:
            await conn.execute(text("CREATE TABLE probe (id INTEGER PRIMARY KEY, value TEXT NOT NULL)"))
        yield opened


class Abandon(Exception):
    """Raised inside a transaction to make it fail."""


async def values(store: Storage) -> list[str]:
    async with store.reading() as conn:
        return [row[0] for row in await conn.execute(text("SELECT value FROM probe ORDER BY id"))]


async def test_committed_writes_are_read_back(store: Storage) -> None:
    async with store.transaction() as conn:
        await conn.execute(text("INSERT INTO probe (value) VALUES ('one'), ('two')"))
    async with store.transaction() as conn:
        await conn.execute(text("INSERT INTO probe (value) VALUES ('three')"))
    assert await values(store) == ["one", "two", "three"]


async def test_a_transaction_that_raises_leaves_nothing(store: Storage) -> None:
    async with store.transaction() as conn:
        await conn.execute(text("INSERT INTO probe (value) VALUES ('kept')"))
    with pytest.raises(Abandon):
        async with store.transaction() as conn:
            await conn.execute(text("INSERT INTO probe (value) VALUES ('lost 1'), ('lost 2')"))
            raise Abandon
    assert await values(store) == ["kept"]


async def test_a_database_failure_rolls_back_the_whole_transaction(store: Storage) -> None:
    with pytest.raises(StorageError, match="database error: NOT NULL constraint failed.*nothing was written"):
        async with store.transaction() as conn:
            await conn.execute(text("INSERT INTO probe (value) VALUES ('before the failure')"))
            await conn.execute(text("INSERT INTO probe (value) VALUES (NULL)"))
    assert await values(store) == []


async def test_a_concurrent_reader_never_sees_uncommitted_writes(store: Storage) -> None:
    async with store.transaction() as conn:
        await conn.execute(text("INSERT INTO probe (value) VALUES ('committed')"))
    reader: asyncio.Task[list[str]] | None = None
    with pytest.raises(Abandon):
        async with store.transaction() as conn:
            await conn.execute(text("INSERT INTO probe (value) VALUES ('never committed')"))
            reader = asyncio.create_task(values(store))
            await asyncio.wait({reader}, timeout=READER_WAIT)  # a file store answers at once; memory waits for the writer
            raise Abandon
    assert reader is not None
    assert await asyncio.wait_for(reader, READER_DEADLINE) == ["committed"]


async def test_a_concurrent_reader_sees_a_commit_whole_or_not_at_all(store: Storage) -> None:
    reader: asyncio.Task[list[str]] | None = None
    async with store.transaction() as conn:
        await conn.execute(text("INSERT INTO probe (value) VALUES ('a'), ('b')"))
        reader = asyncio.create_task(values(store))
        await asyncio.wait({reader}, timeout=READER_WAIT)
        await conn.execute(text("INSERT INTO probe (value) VALUES ('c')"))
    assert await asyncio.wait_for(reader, READER_DEADLINE) in ([], ["a", "b", "c"])
    assert await values(store) == ["a", "b", "c"]

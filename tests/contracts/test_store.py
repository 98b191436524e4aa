"""The store's contract (appliance/store.py `Storage`), run against the SQLite file a node keeps
(`Store.at`) and its in-memory twin (`Store.memory()`): a failed transaction leaves nothing,
committed writes are read back, and a reader running while a transaction is open sees only
committed data - through the async `transaction()` and the writer thread's `write(work)` alike.
The probe table is made here: the contract is about transactions, not the schema."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import OperationalError

from appliance.atrest import database_key
from appliance.errors import StorageError
from appliance.store import Checkpoint, Storage, Store
from appliance.store_access import open_reader

READER_WAIT = 0.3  # seconds the writer keeps its transaction open with a reader running
READER_DEADLINE = 20.0  # seconds a reader may take once the writer is done


def file_store(tmp_path: Path) -> Store:
    return Store.at(tmp_path)


def encrypted_store(tmp_path: Path) -> Store:
    return Store.at(tmp_path, database_key(bytes(range(32))))


def memory_store(_tmp_path: Path) -> Store:
    return Store.memory()


PORT = Storage
# The twin: SQLite in memory; "encrypted" is the file under SQLCipher, as a node keeps it.
IMPLEMENTATIONS = {"file": Store.at, "encrypted": Store.at, "memory": Store.memory}
_MAKERS: dict[str, Callable[[Path], Store]] = {"file": file_store, "encrypted": encrypted_store, "memory": memory_store}


@pytest.fixture(params=list(IMPLEMENTATIONS))
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Storage]:
    make = _MAKERS[request.param]
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


def insert(*words: str) -> Callable[[Connection], int]:
    def work(conn: Connection) -> int:
        for word in words:
            conn.execute(text("INSERT INTO probe (value) VALUES (:v)"), {"v": word})
        return len(words)

    return work


async def test_a_write_commits_in_one_call_and_counts(store: Storage) -> None:
    before = store.writes
    assert await store.write(insert("one", "two")) == 2
    async with store.transaction() as conn:
        await conn.execute(text("INSERT INTO probe (value) VALUES ('three')"))
    with pytest.raises(Abandon):
        async with store.transaction() as conn:
            raise Abandon
    assert await values(store) == ["one", "two", "three"]
    assert store.writes == before + 2  # committed ones only


async def test_a_write_that_raises_leaves_nothing(store: Storage) -> None:
    await store.write(insert("kept"))
    before = store.writes

    def fails(conn: Connection) -> None:
        insert("lost 1", "lost 2")(conn)
        raise Abandon

    with pytest.raises(Abandon):
        await store.write(fails)
    assert await values(store) == ["kept"]
    assert store.writes == before
    await store.write(insert("after"))  # the writer carries on
    assert await values(store) == ["kept", "after"]


async def test_a_database_failure_in_a_write_rolls_back_and_says_so(store: Storage) -> None:
    def fails(conn: Connection) -> None:
        insert("before the failure")(conn)
        conn.execute(text("INSERT INTO probe (value) VALUES (NULL)"))

    with pytest.raises(StorageError, match="database error: NOT NULL constraint failed.*nothing was written"):
        await store.write(fails)
    assert await values(store) == []
    await store.write(insert("after"))  # a fresh connection after the failure
    assert await values(store) == ["after"]


async def test_readers_see_a_write_only_once_committed(store: Storage) -> None:
    loop = asyncio.get_running_loop()
    inserted, release = asyncio.Event(), threading.Event()

    def held_open(conn: Connection) -> str:
        insert("written")(conn)
        loop.call_soon_threadsafe(inserted.set)
        release.wait(READER_DEADLINE)
        return "committed"

    writing = asyncio.create_task(store.write(held_open))
    await asyncio.wait_for(inserted.wait(), READER_DEADLINE)
    reader = asyncio.create_task(values(store))
    await asyncio.wait({reader}, timeout=READER_WAIT)  # a file store answers at once; memory waits for the writer
    answered_while_open = reader.done()
    release.set()
    assert await asyncio.wait_for(writing, READER_DEADLINE) == "committed"
    seen = await asyncio.wait_for(reader, READER_DEADLINE)
    assert seen == [] if answered_while_open else seen in ([], ["written"])
    assert await values(store) == ["written"]


async def test_writes_and_transactions_take_turns(store: Storage) -> None:
    async def through_transaction(word: str) -> None:
        async with store.transaction() as conn:
            await conn.execute(text("INSERT INTO probe (value) VALUES (:v)"), {"v": word})

    await asyncio.wait_for(asyncio.gather(*(store.write(insert(f"w{i}")) for i in range(5)), *(through_transaction(f"t{i}") for i in range(5))), READER_DEADLINE)
    assert sorted(await values(store)) == sorted([f"w{i}" for i in range(5)] + [f"t{i}" for i in range(5)])


async def test_a_truncating_checkpoint_copies_the_whole_log(store: Storage) -> None:
    await store.write(insert(*(f"row {i}" for i in range(50))))
    log, copied = await store.checkpoint(Checkpoint.TRUNCATE)
    assert log == copied
    assert await store.checkpoint(Checkpoint.PASSIVE) == (0, 0)  # truncated: nothing left
    assert len(await values(store)) == 50


async def test_a_reader_elsewhere_sees_one_snapshot_of_what_was_committed_and_writes_nothing(store: Storage) -> None:
    """What an export's worker holds: its own connection (`read_access`), one snapshot a job -
    a commit meanwhile is not seen half-way -, every write refused."""
    await store.write(insert("one", "two"))
    access = store.read_access()
    assert access is not None
    loop = asyncio.get_running_loop()
    first_read, release = asyncio.Event(), threading.Event()

    def job() -> tuple[list[str], list[str]]:
        engine = open_reader(access)
        try:
            with engine.begin() as conn:
                before = [row[0] for row in conn.execute(text("SELECT value FROM probe ORDER BY id"))]
                loop.call_soon_threadsafe(first_read.set)
                release.wait(READER_DEADLINE)
                after = [row[0] for row in conn.execute(text("SELECT value FROM probe ORDER BY id"))]
                with pytest.raises(OperationalError, match="readonly|read-only|query_only"):
                    conn.execute(text("INSERT INTO probe (value) VALUES ('sneaked')"))
            return before, after
        finally:
            engine.dispose()

    reading = asyncio.ensure_future(asyncio.to_thread(job))
    await asyncio.wait_for(first_read.wait(), READER_DEADLINE)
    writing = asyncio.ensure_future(store.write(insert("three")))
    await asyncio.wait({writing}, timeout=READER_WAIT)  # a file store commits meanwhile; memory waits for the reader
    release.set()
    assert await asyncio.wait_for(reading, READER_DEADLINE) == (["one", "two"], ["one", "two"])
    await asyncio.wait_for(writing, READER_DEADLINE)
    assert await values(store) == ["one", "two", "three"]

"""The one path to the database: SQLAlchemy 2. SQLite on the edge in WAL mode with
synchronous=FULL, so a commit that returned survives kill -9 and power loss. The schema keeps
to portable types so a hub can move to PostgreSQL.

Two ways in: the async engine (aiosqlite) for reads and most writes, and `write(work)`, the hot
path's one hop - a synchronous transaction run on a dedicated writer thread that owns one
connection for ever (SQLAlchemy's async layer costs a thread hand-off per statement; the writer
costs one per transaction). WAL checkpoints run on a third thread of their own, when the node's
upkeep (appliance/upkeep.py) says, never on the writer's commit."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import sqlite3
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager, asynccontextmanager, closing
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol, TypeVar

from sqlalchemy import NullPool, create_engine, event, select, text
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from appliance import cipher, schema
from appliance.errors import StorageError, WrongKey
from appliance.store_access import BUSY_TIMEOUT_MS, ReadAccess, read_only_pragmas

MIGRATIONS = Path(__file__).parent / "migrations"
DB_FILE = "node.db"
_WRITE = "rallypoint_write"  # execution option of the connections `transaction()` and `write()` hand out
T = TypeVar("T")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # The driver would begin a transaction only at the first write, leaving the reads before it
    # outside: another process could change what a read-then-write saw. `_sqlite_begin` says
    # BEGIN itself instead.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")  # WAL+NORMAL may lose the last commits on power loss
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA secure_delete=ON")  # deleted rows are overwritten, not left in free pages
    cursor.close()


def _no_autocheckpoint(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.execute("PRAGMA wal_autocheckpoint=0")


def _sqlite_begin(conn: Connection) -> None:
    """A write transaction takes the write lock before its first read (BEGIN IMMEDIATE, waiting
    up to the busy timeout), so nothing it read can change before it writes. Reads stay in
    autocommit, a statement each, which keeps them cheap on the hot paths."""
    if conn.get_execution_options().get(_WRITE):
        conn.exec_driver_sql("BEGIN IMMEDIATE")


# What opening the store on a full disk fails with: SQLite cannot give the shared-memory index of
# the write-ahead log (the -shm file) its room, or cannot write at all.
_NO_ROOM = frozenset({"SQLITE_IOERR_SHMSIZE", "SQLITE_IOERR_SHMMAP", "SQLITE_FULL"})
READ_ONLY_WHEN_FULL = "the disk is full: this node is open for reading only"


_SHM_ROOM_BYTES = 64 * 1024  # what the -shm index needs at least; less free than this is a full disk


def _no_room(exc: SQLAlchemyError, path: Path) -> bool:
    name = getattr(getattr(exc, "orig", None), "sqlite_errorname", None)
    if name in _NO_ROOM:
        return True
    # sqlcipher3 reports only primary result codes: a bare I/O error on a disk without room for
    # the -shm index is the same failure.
    return name == "SQLITE_IOERR" and shutil.disk_usage(path.parent).free < _SHM_ROOM_BYTES


def _describe(exc: BaseException) -> str:
    message = str(getattr(exc, "orig", None) or exc).splitlines()[0]
    if "full" in message.lower():
        return f"the disk is full ({message}); nothing was written"
    if "readonly" in message.lower() or "read-only" in message.lower():
        return f"the store is read-only ({message}); nothing was written"
    return f"database error: {message}; nothing was written"


class Checkpoint(StrEnum):
    """SQLite's checkpoint modes the upkeep uses: PASSIVE copies what no reader still needs and
    never blocks a writer; TRUNCATE waits for writers and readers, then empties the log."""

    PASSIVE = "PASSIVE"
    TRUNCATE = "TRUNCATE"


class _Lane:
    """One thread, for ever the same, owning one synchronous connection to the database
    (SQLite connections are happiest on one thread). The connection opens at the first job and
    is reopened after a database failure."""

    def __init__(self, url: URL, name: str, on_connect: list[Callable[[Any, Any], None]], *, writes: bool, engine_args: dict[str, Any] | None = None) -> None:
        self._url = url
        self._engine_args = engine_args or {}  # an encrypted store's: sqlcipher3, a keyed creator
        self._writes = writes
        self._on_connect = on_connect  # the store's list: set-ups added later apply to a later connection
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._engine: Engine | None = None
        self._conn: Connection | None = None

    async def run(self, job: Callable[[Connection], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._run, job)

    def warm(self) -> None:
        """Opens the connection on the lane's thread in the background: the first job finds it
        open (a failure here is met again, and reported, by that job)."""
        self._thread.submit(self._open_quietly)

    def _open_quietly(self) -> None:
        with contextlib.suppress(SQLAlchemyError):
            self._connection()

    def _run(self, job: Callable[[Connection], T]) -> T:
        try:
            return job(self._connection())
        except SQLAlchemyError:
            self._close()
            raise

    def _connection(self) -> Connection:
        if self._conn is None:
            if self._engine is None:
                # NullPool: the one connection is held here, not pooled.
                self._engine = create_engine(self._url, poolclass=NullPool, **self._engine_args)
                for listener in self._on_connect:
                    event.listen(self._engine, "connect", listener)
                if self._engine.dialect.name == "sqlite":
                    event.listen(self._engine, "begin", _sqlite_begin)
                if self._writes and self._engine.dialect.name == "sqlite":
                    # No checkpoint on the writer's commits: the upkeep runs them from their own thread.
                    event.listen(self._engine, "connect", _no_autocheckpoint)
            self._conn = self._engine.connect().execution_options(**{_WRITE: self._writes})
        return self._conn

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    async def close(self) -> None:
        """Closes the connection on its own thread, then ends the thread."""
        await asyncio.get_running_loop().run_in_executor(self._thread, self._close)
        self._thread.shutdown(wait=True)


def _in_transaction(work: Callable[[Connection], T]) -> Callable[[Connection], T]:
    def job(conn: Connection) -> T:
        with conn.begin():  # BEGIN IMMEDIATE (`_sqlite_begin`); a raise rolls back
            return work(conn)

    return job


def _checkpoint(mode: Checkpoint) -> Callable[[Connection], tuple[int, int]]:
    def job(conn: Connection) -> tuple[int, int]:
        with conn.begin():  # no BEGIN is said on a connection that does not write: SQLite forbids it here
            row = conn.exec_driver_sql(f"PRAGMA wal_checkpoint({mode.value})").one()
        return int(row[1]), int(row[2])

    return job


class Storage(Protocol):
    """The node's port to its database. `Store` implements it over SQLAlchemy, on a file
    (SQLite or PostgreSQL) or in memory (`Store.memory()`, its twin for tests and tools);
    tests/contracts/test_store.py holds both to the same contract."""

    is_sqlite: bool
    read_only: str | None  # why every write is refused (a full disk, an inspection copy), else None

    async def __aenter__(self) -> Storage: ...

    async def __aexit__(self, *exc_info: object) -> None: ...

    def transaction(self) -> AbstractAsyncContextManager[AsyncConnection]: ...

    def reading(self) -> AbstractAsyncContextManager[AsyncConnection]: ...

    async def write(self, work: Callable[[Connection], T]) -> T: ...

    async def checkpoint(self, mode: Checkpoint) -> tuple[int, int]: ...

    @property
    def writes(self) -> int: ...

    async def has_identity(self) -> bool: ...

    async def scrub(self) -> None: ...

    async def backup_into(self, target: Path) -> None: ...

    @property
    def db_key(self) -> bytes | None:
        """The key the database is encrypted under (None: plain), for opening copies of it."""
        ...

    def read_access(self) -> ReadAccess | None: ...


class Store:
    """An async context manager owning the engines. `transaction()` yields a connection in one
    transaction and `write(work)` runs `work` in one on the writer thread; any database failure
    surfaces as StorageError after a full rollback."""

    def __init__(self, engine: AsyncEngine, path: Path | None = None, sync_url: URL | None = None, keyed: cipher.Keyed | None = None) -> None:
        self.engine = engine
        self.keyed = keyed  # how an encrypted store's connections open (None: a plain one)
        self.is_sqlite = engine.dialect.name == "sqlite"
        self.path = path  # the SQLite file, for a store on one
        self.read_only: str | None = None  # why, when the store could be opened for reading only
        self._keep_alive: sqlite3.Connection | None = None  # holds an in-memory database open
        # The same database through the synchronous driver: the writer, and the checkpointer.
        sync_url = sync_url or engine.url.set(drivername=engine.url.drivername.split("+")[0])
        self._sync_url = sync_url
        self._on_connect: list[Callable[[Any, Any], None]] = []
        sync_args: dict[str, Any] = {} if keyed is None else {"module": cipher.DRIVER, "creator": keyed.sync_creator()}
        self._writer = _Lane(sync_url, "rallypoint-writer", self._on_connect, writes=True, engine_args=sync_args)
        self._checkpointer = _Lane(sync_url, "rallypoint-checkpoint", self._on_connect, writes=False, engine_args=sync_args) if self.is_sqlite else None
        self._writes = 0
        self._as_is = False  # a copy opened for reading: not migrated, never written

    @classmethod
    def at(cls, home: Path, db_key: bytes | None = None) -> Store:
        """The node's database in `home`: encrypted by SQLCipher under `db_key` (a raw 256-bit key,
        `atrest.database_key`), or a plain SQLite file without one (a node not yet converted)."""
        # URL.create takes the path as it is: in a URL string a '?' or '#' in a folder name would
        # end the path and the node would live in another file.
        path = home / DB_FILE
        async_url, sync_url = URL.create("sqlite+aiosqlite", database=str(path)), URL.create("sqlite+pysqlite", database=str(path))
        if db_key is None:
            return cls(create_async_engine(async_url), path, sync_url)._with_pragmas()
        keyed = cipher.Keyed(str(path), db_key)
        return cls(_keyed_engine(async_url, keyed), path, sync_url, keyed)._with_pragmas()

    @classmethod
    def memory(cls) -> Store:
        """An in-memory SQLite store with the same schema and the same isolation as a file: every
        pooled connection opens one database that SQLite's memdb VFS shares by name within the
        process, so a reader sees only committed data (it waits, up to the busy timeout, while a
        writer commits). The database lives until the store closes."""
        name = f"/rallypoint-{secrets.token_hex(16)}"
        query = {"uri": "true", "vfs": "memdb"}
        store = cls(
            create_async_engine(URL.create("sqlite+aiosqlite", database=f"file:{name}", query=query)), None, URL.create("sqlite+pysqlite", database=f"file:{name}", query=query)
        )
        store._keep_alive = sqlite3.connect(f"file:{name}?vfs=memdb", uri=True, check_same_thread=False)
        return store._with_pragmas()

    @classmethod
    def copy_at(cls, path: Path, db_key: bytes | None = None) -> Store:
        """The database file at `path` (a backup being checked or restored) opened for reading
        only and as it is, under `db_key` if it is encrypted: no migration, no journal mode set,
        every write refused. Its queries go through the same engine as the node's own store."""
        uri = path.absolute().as_uri()  # percent-encoded: a '?' or '#' in a folder name stays in the path
        query = {"uri": "true", "mode": "ro"}
        async_url, sync_url = URL.create("sqlite+aiosqlite", database=uri, query=query), URL.create("sqlite+pysqlite", database=uri, query=query)
        if db_key is None:
            store = cls(create_async_engine(async_url), path, sync_url)
        else:
            keyed = cipher.Keyed(f"{uri}?mode=ro", db_key, uri=True)
            store = cls(_keyed_engine(async_url, keyed), path, sync_url, keyed)
        store.read_only = f"{path.name} is opened for checking only"
        store._as_is = True
        event.listen(store.engine.sync_engine, "connect", read_only_pragmas)
        return store

    def _with_pragmas(self) -> Store:
        if self.is_sqlite:
            self.on_connect(_sqlite_pragmas)
            event.listen(self.engine.sync_engine, "begin", _sqlite_begin)
        return self

    def on_connect(self, listener: Callable[[Any, Any], None]) -> None:
        """Runs `listener(dbapi_connection, record)` on every new connection of the store, async
        and writer alike (the pragmas; a test's cap on the database's size)."""
        if listener not in self._on_connect:  # the read-only reopen sets the pragmas again
            self._on_connect.append(listener)
        event.listen(self.engine.sync_engine, "connect", listener)

    async def __aenter__(self) -> Store:
        if self._as_is:
            return self
        await self.migrate()
        if self.read_only is None:
            self._writer.warm()  # while the node opens, not on its first post
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._writer.close()
        if self._checkpointer is not None:
            await self._checkpointer.close()
        await self.engine.dispose()
        if self._keep_alive is not None:
            self._keep_alive.close()
            self._keep_alive = None

    async def migrate(self) -> None:
        """Brings the schema to the newest revision with Alembic; a node upgrades in place. On a
        disk too full to open the store for writing, it is opened for reading only."""
        try:
            revision = await self._current_revision()
        except SQLAlchemyError as exc:
            if cipher.wrong_key(exc):
                raise WrongKey(cipher.WRONG_KEY) from exc
            if self.path is None or not _no_room(exc, self.path):
                raise StorageError(_describe(exc)) from exc
            revision = await self._open_for_reading_only()
        if revision == schema.SCHEMA_REVISION:
            return
        async with self.transaction() as conn:
            await conn.run_sync(_upgrade)

    async def _current_revision(self) -> str | None:
        async with self.engine.connect() as conn:
            return await self._revision(conn)

    async def _open_for_reading_only(self) -> str | None:
        """Reopens the file so that SQLite keeps the write-ahead log's index in memory instead of
        growing the -shm file (`readonly_shm`, which wants the file to exist: an empty one takes no
        room). Reads then work and see every commit; every write is refused with the reason."""
        assert self.path is not None
        await self.engine.dispose()
        try:
            os.close(os.open(f"{self.path}-shm", os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600))
            uri = self.path.absolute().as_uri()  # percent-encoded: a '?' or '#' in a folder name stays in the path
            url = URL.create("sqlite+aiosqlite", database=uri, query={"uri": "true", "mode": "ro", "readonly_shm": "1"})
            if self.keyed is None:
                self.engine = create_async_engine(url)
            else:
                self.engine = _keyed_engine(url, cipher.Keyed(f"{uri}?mode=ro&readonly_shm=1", self.keyed.db_key, uri=True))
            self._with_pragmas()
            self.read_only = READ_ONLY_WHEN_FULL
            return await self._current_revision()
        except OSError as exc:
            raise StorageError(f"the disk is full: cannot open the store ({exc.strerror})") from exc
        except SQLAlchemyError as exc:
            raise StorageError(_describe(exc)) from exc

    @staticmethod
    async def _revision(conn: AsyncConnection) -> str | None:
        try:
            return (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar()
        except DBAPIError:
            return None  # no alembic_version table: a new, empty database

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        if self.read_only is not None:
            raise StorageError(f"{self.read_only}; nothing was written")
        try:
            async with self.engine.connect() as conn:
                await conn.execution_options(**{_WRITE: True})
                async with conn.begin():
                    yield conn
        except SQLAlchemyError as exc:
            raise StorageError(_describe(exc)) from exc
        self._writes += 1

    async def write(self, work: Callable[[Connection], T]) -> T:
        """Runs `work` with a synchronous connection in ONE transaction on the writer thread
        (one thread hop whatever `work` executes) and returns what it returns; committed when
        this returns. Failures as `transaction()`: StorageError, nothing written. A caller
        cancelled while waiting does not stop a write already under way."""
        if self.read_only is not None:
            raise StorageError(f"{self.read_only}; nothing was written")
        try:
            done = await self._writer.run(_in_transaction(work))
        except SQLAlchemyError as exc:
            raise StorageError(_describe(exc)) from exc
        self._writes += 1
        return done

    @property
    def writes(self) -> int:
        """How many write transactions (`write` and `transaction`) committed: the upkeep tells a
        busy node from an idle one by it, and checkpoints the log it grew."""
        return self._writes

    async def checkpoint(self, mode: Checkpoint) -> tuple[int, int]:
        """Copies the write-ahead log into the database from the checkpointer's own thread and
        connection. Returns (pages in the log, pages copied); (0, 0) where there is no log."""
        if self._checkpointer is None or self.read_only is not None:
            return 0, 0
        try:
            log, copied = await self._checkpointer.run(_checkpoint(mode))
        except SQLAlchemyError as exc:
            raise StorageError(_describe(exc)) from exc
        return max(log, 0), max(copied, 0)

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[AsyncConnection]:
        try:
            async with self.engine.connect() as conn:
                yield conn
        except SQLAlchemyError as exc:
            raise StorageError(_describe(exc)) from exc

    async def has_identity(self) -> bool:
        async with self.reading() as conn:
            return (await conn.execute(select(schema.node_identity.c.id))).first() is not None

    async def scrub(self) -> None:
        """Rewrites the database without its free pages and empties the write-ahead log, so
        deleted data is gone from the files too (after a remote wipe)."""
        if not self.is_sqlite:
            return
        try:
            async with self.engine.connect() as conn:
                raw = await conn.get_raw_connection()
                await raw.driver_connection.execute("VACUUM")  # type: ignore[union-attr]
                await raw.driver_connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # type: ignore[union-attr]
        except (SQLAlchemyError, OSError) as exc:
            raise StorageError(_describe(exc)) from exc

    async def backup_into(self, target: Path) -> None:
        """Writes one consistent snapshot of the whole database to `target` (a new file) while the
        node keeps running: SQLite's VACUUM INTO reads a single read transaction. The copy of an
        encrypted store is encrypted under the same key (SQLCipher's VACUUM INTO writes through
        the connection's codec), and its secrets stay sealed under the data key."""
        if not self.is_sqlite:
            raise StorageError("this store is PostgreSQL: back it up with pg_dump")
        try:
            async with self.engine.connect() as conn:
                raw = await conn.get_raw_connection()
                await raw.driver_connection.execute("VACUUM INTO ?", (str(target),))  # type: ignore[union-attr]
        except (SQLAlchemyError, sqlite3.Error, cipher.DRIVER.Error, OSError) as exc:
            raise StorageError(_describe(exc)) from exc

    @property
    def db_key(self) -> bytes | None:
        return None if self.keyed is None else self.keyed.db_key

    def read_access(self) -> ReadAccess | None:
        """How another process reads this store (appliance/store_access.py); None where no
        other connection may: a store that is not SQLite."""
        if not self.is_sqlite:
            return None
        in_memory = self._sync_url.query.get("vfs") == "memdb"
        return ReadAccess(self._sync_url.render_as_string(hide_password=False), self.keyed, in_memory)


def _keyed_engine(url: URL, keyed: cipher.Keyed) -> AsyncEngine:
    """An async engine whose connections are aiosqlite ones over keyed sqlcipher3 connections."""
    return create_async_engine(url, async_creator=keyed.async_creator(), module=cipher.ASYNC_DRIVER)


def check_database_file(path: Path, name: str | None = None) -> None:
    """Raises StorageError unless `path` is an intact SQLite database (a backup about to be used),
    naming it `name` (default: its file name)."""
    name = name or path.name
    try:
        # as_uri() percent-encodes the path: a '?' or '#' in a folder name cannot end it early.
        with closing(sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)) as conn:
            verdict = conn.execute("PRAGMA quick_check").fetchone()
    except sqlite3.Error as exc:
        raise StorageError(f"{name} is not a readable node database: {exc}") from exc
    if verdict != ("ok",):
        raise StorageError(f"{name} is damaged: {verdict[0] if verdict else 'no verdict'}")


def _upgrade(sync_connection: Any) -> None:
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = sync_connection
    command.upgrade(config, "head")


def ensure_home(home: Path) -> None:
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(home, 0o700)

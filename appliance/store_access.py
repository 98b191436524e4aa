"""How a process other than the node's - a compliance export's worker - reads the node's
database: the synchronous driver's URL and, for an encrypted store, its key, handed over as one
picklable value; the worker opens its own connection through SQLAlchemy, reads only (the
connection refuses writes) and in one read transaction a job (one snapshot of the store).

An in-memory store is shared by name within the node's process only: its readers run on a
thread of that process (`in_process_only`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import NullPool, create_engine, event
from sqlalchemy.engine import Connection, Engine, make_url

from appliance import cipher

BUSY_TIMEOUT_MS = 15_000  # every connection to the store waits this long for a lock (a checkpoint, a writer)


@dataclass(frozen=True)
class ReadAccess:
    url: str  # the synchronous driver's SQLAlchemy URL (a SQLite file or a memdb name: no password)
    keyed: cipher.Keyed | None  # an encrypted store's location and key
    in_process_only: bool  # an in-memory store: other processes cannot reach it


def open_reader(access: ReadAccess) -> Engine:
    """An engine whose connections read only, each job's statements in one read transaction
    (`with engine.begin() as conn:`). Dispose of it after the job: it holds the file open."""
    args: dict[str, Any] = {} if access.keyed is None else {"module": cipher.DRIVER, "creator": access.keyed.sync_creator()}
    engine = create_engine(make_url(access.url), poolclass=NullPool, **args)
    event.listen(engine, "connect", read_only_pragmas)
    event.listen(engine, "begin", _begin_read)
    return engine


def read_only_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """A connection that refuses writes: an export's reader, a backup opened to be checked."""
    dbapi_connection.isolation_level = None  # the driver begins no transaction of its own: BEGIN is said where one is wanted
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA query_only=ON")
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cursor.close()


def _begin_read(conn: Connection) -> None:
    """A deferred transaction: its first read fixes the snapshot every later read of it sees."""
    conn.exec_driver_sql("BEGIN")

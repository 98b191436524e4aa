"""SQLCipher under SQLAlchemy: the connections of an encrypted store, and the file-level work on
encrypted databases (converting a plain one in place, checking one, exporting a copy).

Every connection is a sqlcipher3 connection keyed first thing with the raw database key
(`appliance.atrest.database_key`): the async engine gets it through aiosqlite (its worker thread
runs our connector), the writer and checkpointer through `creator=`. Both engines are told
sqlcipher3 is their DB-API module, so its exceptions become SQLAlchemy's like sqlite3's do. A
wrong key surfaces as SQLite's "file is not a database" (SQLITE_NOTADB): `wrong_key` says so.

Pages are authenticated with HMAC-SHA256, not SQLCipher 4's default HMAC-SHA512: SHA-256 runs on
the CPU's SHA extensions and a post writes about a dozen pages (measured: the cipher's share of a
post fell by about a third). It is made the process's default, so every database SQLCipher
creates here - a new store, an ATTACHed conversion target, a VACUUM INTO backup - gets it.
Stores and backups written before carry HMAC-SHA512; `Keyed.connect` opens them with it."""

from __future__ import annotations

import functools
import types
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite
import sqlcipher3
from sqlalchemy.dialects.sqlite.aiosqlite import AsyncAdapt_aiosqlite_dbapi

from appliance import atrest, files
from appliance.errors import StorageError, WrongKey

NOT_A_DATABASE = "SQLITE_NOTADB"
WRONG_KEY = "the data key does not open this node's store (wrong passphrase or key file); nothing changed"
DRIVER: Any = sqlcipher3.dbapi2
HMAC = "HMAC_SHA256"
LEGACY_HMAC = "HMAC_SHA512"  # SQLCipher 4's default: stores and backups made before HMAC

# aiosqlite with sqlcipher3's exception classes, for SQLAlchemy's aiosqlite adapter.
_aiosqlite_cipher = types.ModuleType("aiosqlite_sqlcipher")
for _name in dir(aiosqlite):
    setattr(_aiosqlite_cipher, _name, getattr(aiosqlite, _name))
for _name in ("DatabaseError", "Error", "IntegrityError", "NotSupportedError", "OperationalError", "ProgrammingError", "sqlite_version", "sqlite_version_info"):
    setattr(_aiosqlite_cipher, _name, getattr(DRIVER, _name))
ASYNC_DRIVER: Any = AsyncAdapt_aiosqlite_dbapi(_aiosqlite_cipher, DRIVER)


@dataclass(frozen=True)
class Keyed:
    """How to open one encrypted database: its location (a path, or a `file:` URI) and key."""

    database: str
    db_key: bytes
    uri: bool = False

    def connect(self, **kwargs: Any) -> Any:
        """A sqlcipher3 connection, keyed; SQLITE_NOTADB at once when the key is wrong."""
        _settle_defaults()
        try:
            return self._open(None, kwargs)
        except DRIVER.Error as exc:
            if not wrong_key(exc):
                raise
            try:
                return self._open(LEGACY_HMAC, kwargs)
            except DRIVER.Error:
                raise exc from None

    def _open(self, hmac: str | None, kwargs: dict[str, Any]) -> Any:
        conn = DRIVER.connect(self.database, uri=self.uri, **kwargs)
        try:
            conn.execute(atrest.key_pragma(self.db_key))
            if hmac is not None:
                conn.execute(f"PRAGMA cipher_hmac_algorithm = {hmac}")
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # the key is checked here
        except BaseException:
            conn.close()
            raise
        return conn

    def sync_creator(self) -> Callable[[], Any]:
        return lambda: self.connect(check_same_thread=False)

    def async_creator(self) -> Callable[[], Any]:
        async def create() -> Any:
            conn = aiosqlite.Connection(lambda: self.connect(check_same_thread=False), 64)
            conn._thread.daemon = True  # as SQLAlchemy does for its own: a forgotten one never holds the exit
            return await conn

        return create


@functools.cache
def _settle_defaults() -> None:
    """SQLCipher's process-wide defaults, set once: HMAC for every database created from here
    on, no logging of its own to stderr (errors come back as exceptions), and adapters that
    bind bytes, None and booleans as they are."""
    # sqlcipher3 looks for `__conform__` on every parameter that is not exactly an int, float,
    # str or bytearray - bytes, None, and bool too - and builds an AttributeError each time it is
    # missing (~0.6 us a parameter; the standard library's driver looks without raising). An
    # adapter found first skips that: measured, a row of five bytes or None parameters 5.3-5.5 us
    # -> 1.0-1.4 us (the standard library's: 2.0-2.6 us), and a 10k import's CPU in the node's
    # process 0.27-0.29 s -> 0.24-0.26 s (a plain store's: 0.21 s); a message view row (two
    # booleans among its fourteen values) 3.1 us -> 1.4 us. A boolean is bound as the integer it
    # is either way.
    DRIVER.register_adapter(bytes, bytes)
    DRIVER.register_adapter(type(None), _as_null)
    DRIVER.register_adapter(bool, int)
    with closing(DRIVER.connect(":memory:")) as conn:
        conn.execute("PRAGMA cipher_log_level = NONE")
        conn.execute(f"PRAGMA cipher_default_hmac_algorithm = {HMAC}")


def _as_null(_value: None) -> None:
    return None


def wrong_key(exc: BaseException) -> bool:
    """Whether `exc` (or the DB-API error it wraps) says the key does not open the file."""
    orig = getattr(exc, "orig", None) or exc
    return getattr(orig, "sqlite_errorname", None) == NOT_A_DATABASE


def is_plaintext(path: Path) -> bool:
    """Whether the file at `path` is a plain SQLite database (not yet converted)."""
    with open(path, "rb") as file:
        return atrest.is_plaintext_database(file.read(len(atrest.PLAINTEXT_HEADER)))


def check_encrypted_file(path: Path, db_key: bytes, name: str | None = None) -> None:
    """Raises unless `path` is an intact database under `db_key`: WrongKey for another key,
    StorageError naming `name` for a damaged or unreadable file."""
    name = name or path.name
    try:
        with closing(Keyed(f"{path.absolute().as_uri()}?mode=ro", db_key, uri=True).connect()) as conn:
            verdict = conn.execute("PRAGMA quick_check").fetchone()
    except DRIVER.Error as exc:
        if wrong_key(exc):
            raise WrongKey(f"{name} is not encrypted under this node's data key (or not a node database)") from exc
        # SQLCipher checks each page's authentication code as it reads it: a changed or cut
        # page reports only a generic error.
        raise StorageError(f"{name} is not a readable node database: it is damaged (a page fails its check: {exc})") from exc
    if verdict != ("ok",):
        raise StorageError(f"{name} is damaged: {verdict[0] if verdict else 'no verdict'}")


def encrypt_copy(plain: Path, target: Path, db_key: bytes) -> None:
    """Writes an encrypted copy of the plain database `plain` to the new file `target` with
    SQLCipher's export (schema, rows, the search index, user_version), then flushes it to disk.
    `plain` must have no write-ahead log left to apply (the caller checkpointed it)."""
    _settle_defaults()
    with closing(DRIVER.connect(str(plain), isolation_level=None)) as conn:
        conn.execute(f"ATTACH DATABASE ? AS encrypted KEY \"x'{db_key.hex()}'\"", (str(target),))
        conn.execute("SELECT sqlcipher_export('encrypted')")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        conn.execute(f"PRAGMA encrypted.user_version = {int(version)}")
        conn.execute("DETACH DATABASE encrypted")
    files.fsync_path(target)


def checkpoint_plain(path: Path) -> None:
    """Empties the write-ahead log of the plain database `path` into it and leaves it in
    rollback-journal mode, so no -wal file is left to be applied to what takes its name."""
    _settle_defaults()
    with closing(DRIVER.connect(str(path), isolation_level=None)) as conn:
        conn.execute("PRAGMA busy_timeout = 15000")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        conn.execute("PRAGMA journal_mode = DELETE").fetchone()
    files.fsync_path(path)


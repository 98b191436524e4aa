"""The node's key on disk, and bringing a plain store under it. `node.key` (0600, written
atomically) holds the data key sealed under the passphrase (`appliance.atrest`); the database
opens only with the key derived from it. An unattended relay may instead be given the data key
itself in a root-only file (`--data-key-file`).

Converting a plain `node.db` (a node from before encryption) happens at its first unlock, in
steps that each leave a store the next unlock opens, whatever kills the process in between:
1. the passphrase is checked against the copy of the sealed key the plain store holds and
   `node.key` is written (temporary file, fsync, rename, fsync of the folder);
2. the plain store's write-ahead log is checkpointed into it and the log removed;
3. an encrypted copy is exported to `node.db.encrypting` and flushed;
4. the copy takes the name `node.db` (one rename) and the folder is flushed; a note
   (`store-encrypted.pending`) made just before says the unlock has the conversion to audit.
Until step 4 `node.db` is the plain store, readable with `node.key` present; after it, the
encrypted one. A later unlock that finds a plain `node.db` and a `node.key` removes any partial
copy and starts again from step 2."""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from appliance import atrest, cipher, crypto, files
from appliance import schema as t
from appliance.errors import KeyFileInvalid, NodeLocked, NotInitialised, StorageError, WrongPassphrase
from appliance.files import create_private, open_regular, owned, read_at_most
from appliance.services.identity import LOCKED_SETTING
from appliance.store import DB_FILE, Store

ENCRYPTING = f"{DB_FILE}.encrypting"  # the encrypted copy while a conversion writes it
CONVERTED = "store-encrypted.pending"  # a conversion done and not yet in the audit log
FAILURES = "unlock-failures"  # wrong passphrases met before the store could open, audited at the next unlock
WIPED = "wiped"  # a remote wipe's reason, readable without any key: the store says it only once unlocked
_MAX_WIPED_BYTES = 4096
_MAX_FAILURE_LINES = 10_000


def key_path(home: Path) -> Path:
    return home / atrest.KEY_FILE


def read_key_file(path: Path) -> atrest.KeyFile:
    try:
        fd, _ = open_regular(path)
        with owned(fd):
            data = read_at_most(fd, atrest.MAX_KEY_FILE_BYTES + 1, path.name)
    except FileNotFoundError as exc:
        raise NotInitialised(f"no {path.name} in {path.parent}: this node's key is missing") from exc
    except OSError as exc:
        raise KeyFileInvalid(f"cannot read {path}: {exc.strerror or exc}") from exc
    return atrest.decode_key_file(data, path.name)


def write_private_atomically(path: Path, data: bytes) -> None:
    """Writes `data` to `path` (0600): a temporary file, flushed, renamed over `path`, then the
    folder flushed. A crash leaves the old file or the new one, never a part."""
    partial = path.with_name(f".{path.name}.partial")
    partial.unlink(missing_ok=True)
    try:
        with open(create_private(partial), "wb") as writer:
            writer.write(data)
            writer.flush()
            os.fsync(writer.fileno())
        os.rename(partial, path)
        files.fsync_path(path.parent)
    finally:
        partial.unlink(missing_ok=True)


def seal_key_file(data_key: bytes, passphrase: str, kdf: crypto.KdfParams, salt: bytes, nonce: bytes) -> atrest.KeyFile:
    return atrest.KeyFile(salt, kdf, crypto.seal_with_passphrase(passphrase, data_key, salt, nonce, kdf))


def unseal(key_file: atrest.KeyFile, passphrase: str) -> bytes:
    return crypto.open_with_passphrase(passphrase, key_file.sealed, key_file.salt, key_file.kdf)


def read_data_key_file(path: Path) -> bytes:
    """A relay's data key file: a regular file that only its owner may read (anything else is
    refused: a key others can read protects nothing)."""
    try:
        fd, info = open_regular(path)
        with owned(fd):
            if stat.S_IMODE(info.st_mode) & 0o077:
                raise KeyFileInvalid(f"{path} is readable by other users (mode {stat.S_IMODE(info.st_mode):o}): make it 0600 or 0400")
            data = read_at_most(fd, 1024, str(path))
    except OSError as exc:
        raise KeyFileInvalid(f"cannot read the data key file {path}: {exc.strerror or exc}") from exc
    return atrest.decode_data_key_file(data, str(path))


def note_failure(home: Path, at: int) -> None:
    """Remembers a wrong passphrase met before the store could open (nothing else changes); the
    next unlock audits it. A full or read-only disk loses the note, not the refusal."""
    path = home / FAILURES
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with owned(fd):
            if os.fstat(fd).st_size < 16 * _MAX_FAILURE_LINES:
                os.write(fd, f"{at}\n".encode())
    except OSError:
        pass


def noted_failures(home: Path) -> list[int]:
    """The wrong passphrases noted since the last unlock (their times)."""
    try:
        text = (home / FAILURES).read_text(errors="replace")
    except OSError:
        return []
    return [int(line) for line in text.splitlines()[:_MAX_FAILURE_LINES] if line.strip().isdigit()]


def forget_failures(home: Path) -> None:
    """Once the noted failures are in the audit log."""
    (home / FAILURES).unlink(missing_ok=True)


def note_wiped(home: Path, reason: str) -> None:
    """Records, outside the encrypted store, that this node wiped itself and why: every later
    open says so before it asks for any key (the appliance's console offers a fresh enrollment)."""
    write_private_atomically(home / WIPED, reason.encode("utf-8", "replace")[:_MAX_WIPED_BYTES])


def wiped_reason(home: Path) -> str | None:
    """Why the node in `home` wiped itself, or None."""
    try:
        with (home / WIPED).open("rb") as handle:
            return handle.read(_MAX_WIPED_BYTES).decode("utf-8", "replace")
    except FileNotFoundError:
        return None


@dataclass(frozen=True)
class Unsealed:
    data_key: bytes
    converted: bool  # this unlock encrypted a plain store
    plain: bool = False  # the store is still plain: it could not be converted now (a full disk)


async def data_key_for(home: Path, passphrase: str, rng: Callable[[int], bytes], at: int, *, convert: bool = True) -> Unsealed:
    """Unseals the data key of the node in `home` with `passphrase`, converting a plain store on
    the way (see the module's note) unless `convert` is False (a caller opening its own store).
    A wrong passphrase raises WrongPassphrase and is noted for the audit log; a node that wiped
    itself raises NodeLocked with the reason, whatever the passphrase."""
    path, db = key_path(home), home / DB_FILE
    if (reason := await asyncio.to_thread(wiped_reason, home)) is not None:
        raise NodeLocked(reason)
    try:
        if path.exists():
            data_key = await asyncio.to_thread(unseal, await asyncio.to_thread(read_key_file, path), passphrase)
            params = None
        else:
            data_key, params = await _key_from_plain_store(home, passphrase)
    except WrongPassphrase:
        await asyncio.to_thread(note_failure, home, at)
        raise
    if not convert or not cipher.is_plaintext(db):
        return Unsealed(data_key, (home / CONVERTED).exists())
    try:
        if params is not None:  # step 1
            sealed = await asyncio.to_thread(seal_key_file, data_key, passphrase, params, rng(crypto.SALT_BYTES), rng(crypto.NONCE_BYTES))
            await asyncio.to_thread(_write_key_file, path, sealed)
        await asyncio.to_thread(encrypt_in_place, home, atrest.database_key(data_key))  # steps 2 to 4
    except StorageError:
        if shutil.disk_usage(home).free > 2 * db.stat().st_size:
            raise
        # No room for the key file or the copy (a full disk): the plain store is opened as it is,
        # for reading, and converted by an unlock that finds room.
        return Unsealed(data_key, False, plain=True)
    return Unsealed(data_key, (home / CONVERTED).exists())


async def _key_from_plain_store(home: Path, passphrase: str) -> tuple[bytes, crypto.KdfParams]:
    """The data key from a plain store's identity row, and the Argon2id cost it was sealed with."""
    if not cipher.is_plaintext(home / DB_FILE):
        raise KeyFileInvalid(f"{home / DB_FILE} is encrypted but {atrest.KEY_FILE} is missing: restore it from a backup of this node")
    async with Store.at(home) as store:
        async with store.reading() as conn:
            ident = (await conn.execute(select(t.node_identity))).mappings().first()
            locked = (await conn.execute(select(t.settings.c.value).where(t.settings.c.name == LOCKED_SETTING))).scalar()
    if ident is None:
        raise NotInitialised(f"no node in {home}: run `rallypoint init` or `rallypoint join` first")
    if locked is not None:  # a wiped node keeps no key: it stays as it is, and says why
        raise NodeLocked(locked)
    params = crypto.KdfParams(ident["kdf_opslimit"], ident["kdf_memlimit"])
    data_key = await asyncio.to_thread(crypto.open_with_passphrase, passphrase, ident["sealed_data_key"], ident["kdf_salt"], params)
    return data_key, params


def _write_key_file(path: Path, sealed: atrest.KeyFile) -> None:
    try:
        write_private_atomically(path, atrest.encode_key_file(sealed))
    except OSError as exc:
        raise StorageError(f"cannot write {path}: {exc.strerror or exc}; the store is unchanged") from exc


def forget_conversion(home: Path) -> None:
    """Once the conversion is in the audit log."""
    (home / CONVERTED).unlink(missing_ok=True)
    files.fsync_path(home)


def encrypt_in_place(home: Path, db_key: bytes) -> None:
    """Steps 2 to 4: the plain `node.db` becomes its encrypted copy, crash-safely."""
    db, partial = home / DB_FILE, home / ENCRYPTING
    for leftover in (partial, home / f"{ENCRYPTING}-journal"):
        leftover.unlink(missing_ok=True)
    try:
        cipher.checkpoint_plain(db)
        for log in (home / f"{DB_FILE}-wal", home / f"{DB_FILE}-shm"):
            log.unlink(missing_ok=True)  # emptied by the checkpoint: a stale one must not meet the new file
        os.close(create_private(partial))
        cipher.encrypt_copy(db, partial, db_key)
        cipher.check_encrypted_file(partial, db_key, DB_FILE)
        os.close(os.open(home / CONVERTED, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))  # audited by the unlock
        os.rename(partial, db)
        files.fsync_path(home)
    except cipher.DRIVER.Error as exc:
        raise StorageError(f"cannot encrypt {db}: {exc}; the store is unchanged") from exc
    except OSError as exc:
        raise StorageError(f"cannot encrypt {db}: {exc.strerror or exc}; the store is unchanged") from exc
    finally:
        partial.unlink(missing_ok=True)

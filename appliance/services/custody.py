"""Custody of the node's data: backups while it runs, restoring one into an empty home, and
the remote wipe when this node's own revocation arrives."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import insert, text, update

from appliance import atrest, backups, certs, cipher, ids, keystore
from appliance import schema as t
from appliance.audit_actions import AuditAction
from appliance.errors import AlreadyInitialised, InvalidInput, StorageError
from appliance.files import COPY_CHUNK_BYTES, create_private, open_regular, owned
from appliance.kernel import Kernel
from appliance.model import BackupInfo
from appliance.services.identity import LOCKED_SETTING, IdentityService
from appliance.services.roster import Roster
from appliance.store import DB_FILE, check_database_file, ensure_home

BACKUP_SUFFIX = ".backup.db"  # a SQLCipher file under the node's database key (plain SQLite from before encryption)
KEY_SUFFIX = ".key"  # beside each backup: the node's key file (the data key sealed under the passphrase)


def backup_key_path(backup: Path) -> Path:
    """The key file a backup is opened with: `<backup>.key`, a copy of node.key taken with it."""
    return backup.with_name(backup.name + KEY_SUFFIX)


class CustodyService:
    def __init__(self, kernel: Kernel, identity: IdentityService, roster: Roster, home: Path) -> None:
        self._kernel = kernel
        self._home = home  # where node.key is, copied beside each backup
        self._identity = identity
        self._roster = roster

    async def backup(self, directory: Path) -> BackupInfo:
        """Admin: writes a consistent copy of this node's store into `directory` while the node
        keeps running, and audits it. The copy holds content in the clear and secrets sealed
        under the passphrase; `Node.restore` brings it back on a new or rebuilt machine."""
        await self._identity.require_admin("backup")
        if not directory.is_dir():
            raise InvalidInput(f"no folder {directory}")
        taken_at = self._kernel.clock()
        name = f"rallypoint-{self._identity.node_id}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(taken_at / 1000))}{BACKUP_SUFFIX}"
        target = directory / name
        if target.exists():
            raise InvalidInput(f"{target} exists already")
        try:
            debris = await asyncio.to_thread(backups.remove_debris, directory)
            with backups.partial_file(directory / backups.partial_name(name)) as partial:
                await self._kernel.store.backup_into(partial)
                await asyncio.to_thread(_publish_backup, partial, target, self._kernel.store.check_copy, self._home)
            size = target.stat().st_size
        except OSError as exc:
            raise StorageError(f"cannot write the backup into {directory}: {exc.strerror or exc}") from exc
        detail: dict[str, object] = {"file": name, "bytes": size}
        if debris.files:
            detail["removed_debris"] = {"files": debris.files, "bytes": debris.bytes}
        try:
            async with self._kernel.store.transaction() as conn:
                await self._kernel.audit(conn, self._kernel.clock(), self._identity.user_key.hex(), AuditAction.BACKUP, detail)
        except StorageError as exc:  # a full disk is when a backup is wanted most: keep it, say so
            self._kernel.note_skipped_write(f"the backup {name} was written but is not in the audit log: {exc}")
        return BackupInfo(target, size, taken_at, debris.files, debris.bytes)

    async def record_restore(self, backup: Path) -> None:
        """Audits that this node was brought back from `backup` (the restore's last step)."""
        async with self._kernel.store.transaction() as conn:
            await self._kernel.audit(conn, self._kernel.clock(), "-", AuditAction.RESTORED, {"file": backup.name})

    async def wipe_after_revocation(self, revocation: certs.Revocation) -> None:
        """Remote wipe: this node's own revocation arrived. Its data key, sealed secrets and users' keys are
        destroyed and its content deleted (overwritten on disk, then the file is rewritten), so
        the store left behind opens to nothing but the audit log and the reason."""
        by = self._roster.current.users.get(revocation.issuer)
        reason = f"this node was revoked by {by.name if by else ids.key_id(revocation.issuer)} ({revocation.reason or 'no reason given'}); its data was wiped"
        async with self._kernel.lock:
            async with self._kernel.store.transaction() as conn:
                content = (t.changes, t.snapshots, t.messages, t.read_markers, t.channels, t.blobs, t.peer_heads, t.peer_blobs, t.documents)
                wiped = (*content, t.sealed_secrets, t.user_secrets, t.user_mfa, t.recovery_codes)
                for table in wiped:
                    await conn.execute(table.delete())
                if self._kernel.store.is_sqlite:  # FTS5 keeps deleted terms in its index until told otherwise
                    await conn.execute(text("INSERT INTO messages_fts(messages_fts) VALUES ('delete-all')"))
                await conn.execute(update(t.node_identity).values(sealed_data_key=b""))
                await conn.execute(insert(t.settings).values(name=LOCKED_SETTING, value=reason))
                await self._kernel.audit(conn, self._kernel.clock(), self._identity.row.node_key.hex(), AuditAction.WIPED, {"revoked_by": revocation.issuer.hex(), "reason": revocation.reason})
            self._identity.lock(reason)
        await self._kernel.store.scrub()


async def bring_in(home: Path, backup: Path, passphrase: str) -> None:
    """Copies a backup and its key file into an empty `home` (the copy is checked under the key
    the passphrase unseals before it gets its name: a wrong passphrase leaves nothing); the
    caller then opens it and, if that fails, removes it again (`remove_db`). A plain backup
    from before encryption has no key file: it is converted when opened."""
    if (home / DB_FILE).exists():
        raise AlreadyInitialised(f"{home} already holds a node: restore into an empty home")
    key_source = backup_key_path(backup)
    check: Callable[[Path, str], None] = check_database_file
    key_file: atrest.KeyFile | None = None
    if not key_source.exists() and not await asyncio.to_thread(_plain_backup, backup):
        raise StorageError(f"{backup.name} is not a readable node database: it is not plain SQLite and has no {key_source.name} beside it to open it with")
    if key_source.exists():
        key_file = await asyncio.to_thread(keystore.read_key_file, key_source)
        db_key = atrest.database_key(await asyncio.to_thread(keystore.unseal, key_file, passphrase))
        check = lambda path, name: cipher.check_encrypted_file(path, db_key, name)  # noqa: E731
    ensure_home(home)
    try:
        if key_file is not None:
            await asyncio.to_thread(keystore.write_private_atomically, keystore.key_path(home), atrest.encode_key_file(key_file))
        await asyncio.to_thread(_copy_durably, backup, home / DB_FILE, check)
    except OSError as exc:
        remove_db(home)
        raise StorageError(f"cannot copy {backup.name} into {home}: {exc.strerror or exc}") from exc
    except BaseException:
        remove_db(home)
        raise


def _plain_backup(backup: Path) -> bool:
    """Whether `backup` is a plain SQLite file (from before encryption); what is not a regular
    file is refused at once (a named pipe would block the read)."""
    try:
        fd, _ = open_regular(backup)
        with owned(fd):
            return atrest.is_plaintext_database(os.read(fd, len(atrest.PLAINTEXT_HEADER)))
    except OSError as exc:
        raise StorageError(f"cannot read {backup.name}: {exc.strerror or exc}") from exc


def _publish_backup(partial: Path, target: Path, check: Callable[[Path], None], home: Path) -> None:
    """Checks the fresh copy, makes it durable, writes its key file beside it, then gives it its
    name: a crash or a full disk never leaves a file that looks like a finished backup, nor a
    finished backup without its key."""
    check(partial)
    _fsync_path(partial)
    node_key = keystore.key_path(home)
    if node_key.exists():
        keystore.write_private_atomically(backup_key_path(target), node_key.read_bytes())
    os.rename(partial, target)
    _fsync_path(target.parent)


def _copy_durably(source: Path, target: Path, check: Callable[[Path, str], None]) -> None:
    """Copies the backup at `source` (a regular file: a named pipe would block the copy forever)
    to `target`, readable by its owner only, and checks the copy before giving it its name: what
    is checked is what is used, even if `source` is swapped meanwhile."""
    partial = target.with_name(f".{target.name}.partial")
    try:
        partial.unlink(missing_ok=True)  # left by a restore that was killed
        fd, _ = open_regular(source)
        with owned(fd), open(fd, "rb", closefd=False) as reader, open(create_private(partial), "wb") as writer:
            shutil.copyfileobj(reader, writer, COPY_CHUNK_BYTES)
            writer.flush()
            os.fsync(writer.fileno())
        check(partial, source.name)
        os.rename(partial, target)
        _fsync_path(target.parent)
    finally:
        partial.unlink(missing_ok=True)


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_db(home: Path) -> None:
    """Removes what a failed join or restore left: the store, its logs and its key file."""
    for suffix in ("", "-wal", "-shm"):
        path = home / f"{DB_FILE}{suffix}"
        if path.exists():
            path.unlink()
    keystore.key_path(home).unlink(missing_ok=True)

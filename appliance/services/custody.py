"""Custody of the node's data: backups while it runs, restoring one into an empty home, and
the remote wipe when this node's own revocation arrives."""

from __future__ import annotations

import asyncio
import hashlib
import os
from contextlib import suppress
from pathlib import Path

from sqlalchemy import insert, text, update

from appliance import atrest, backups, certs, cipher, ids, keystore
from appliance import schema as t
from appliance.audit_actions import AuditAction
from appliance.errors import AlreadyInitialised, InvalidInput, StorageError
from appliance.files import COPY_CHUNK_BYTES, create_private, open_regular, owned
from appliance.kernel import Kernel
from appliance.model import BackupInfo
from appliance.retention import BACKUP_SUFFIX as BACKUP_SUFFIX
from appliance.retention import BackupHealth, RetentionPolicy
from appliance.services.backup_runs import BackupRuns, BackupSchedule, check_copy
from appliance.services.identity import LOCKED_SETTING, IdentityService
from appliance.services.roster import Roster
from appliance.store import DB_FILE, check_database_file, ensure_home


class CustodyService:
    def __init__(self, kernel: Kernel, identity: IdentityService, roster: Roster, home: Path) -> None:
        self._kernel = kernel
        self._identity = identity
        self._roster = roster
        self.runs = BackupRuns(kernel, identity, home)

    async def backup(self, directory: Path, policy: RetentionPolicy | None = None) -> BackupInfo:
        """Admin: writes a consistent copy of this node's store into `directory` (made 0700 if
        missing) while the node keeps running, checks it before giving it its name, records and
        audits the check, then deletes this node's older backups there that `policy` lets go.
        The copy holds secrets sealed under the passphrase; `Node.restore` brings it back."""
        await self._identity.require_admin("backup")
        return await self.runs.take(directory, policy, self._identity.user_key.hex())

    async def scheduled_backup(self) -> BackupInfo:
        """The daily backup an admin configured (`set_backup_schedule`), run by the node itself
        (nobody signs in: the systemd timer runs it)."""
        schedule = await self.runs.schedule()
        if schedule is None:
            raise InvalidInput("no backup folder is set: run `rallypoint config --backup-dir DIR --backup-keep 30d` first")
        return await self.runs.take(schedule.folder, schedule.policy, self._identity.row.node_key.hex())

    async def set_backup_schedule(self, schedule: BackupSchedule | None) -> None:
        """Admin: the scheduled backup's folder and retention (None: none); audited."""
        await self._identity.require_admin("backup schedule")
        await self.runs.set_schedule(schedule, self._identity.user_key.hex())

    async def backup_schedule(self) -> BackupSchedule | None:
        return await self.runs.schedule()

    async def backup_health(self) -> BackupHealth:
        """The last backup, its check, and whether the daily one is overdue or failed."""
        return await self.runs.health()

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
    """Copies a backup and its key file into an empty `home`; the copy is checked (its recorded
    SHA-256, integrity, identity, audit chain, under the key the passphrase unseals) before it
    gets its name: a refused one, or a wrong passphrase, leaves nothing in `home` (nor `home`
    itself, when this made it). The caller then opens it and, if that fails, removes it again
    (`remove_db`). A plain backup from before encryption has no key file: it is converted when
    opened."""
    if (home / DB_FILE).exists():
        raise AlreadyInitialised(f"{home} already holds a node: restore into an empty home")
    key_source = backups.backup_key_path(backup)
    key_file: atrest.KeyFile | None = None
    db_key: bytes | None = None
    if key_source.exists():
        key_file = await asyncio.to_thread(keystore.read_key_file, key_source)
        db_key = atrest.database_key(await asyncio.to_thread(keystore.unseal, key_file, passphrase))
    elif not await asyncio.to_thread(_plain_backup, backup):
        raise StorageError(f"{backup.name} is not a readable node database: it is not plain SQLite and has no {key_source.name} beside it to open it with")
    made = not home.exists()
    ensure_home(home)
    partial = home / f".{DB_FILE}.partial"
    try:
        recorded = await asyncio.to_thread(backups.recorded_digest, backup)
        copied = await asyncio.to_thread(_copy_privately, backup, partial)
        if recorded is not None and copied != recorded:
            raise StorageError(f"{backup.name} is refused: its bytes differ from the SHA-256 recorded when it was taken ({backups.digest_path(backup).name}): it was changed or damaged")
        await asyncio.to_thread(_check_file, partial, backup.name, db_key)
        checked = await check_copy(partial, db_key=db_key)
        if checked.problem is not None:
            raise StorageError(f"{backup.name} is refused: {checked.problem}")
        if key_file is not None:
            await asyncio.to_thread(keystore.write_private_atomically, keystore.key_path(home), atrest.encode_key_file(key_file))
        await asyncio.to_thread(_publish, partial, home / DB_FILE)
    except OSError as exc:
        remove_db(home)
        raise StorageError(f"cannot copy {backup.name} into {home}: {exc.strerror or exc}") from exc
    except BaseException:
        remove_db(home)
        raise
    finally:
        partial.unlink(missing_ok=True)
        if not (home / DB_FILE).exists() and made:
            with suppress(OSError):
                home.rmdir()  # only if empty


def _plain_backup(backup: Path) -> bool:
    """Whether `backup` is a plain SQLite file (from before encryption); what is not a regular
    file is refused at once (a named pipe would block the read)."""
    try:
        fd, _ = open_regular(backup)
        with owned(fd):
            return atrest.is_plaintext_database(os.read(fd, len(atrest.PLAINTEXT_HEADER)))
    except OSError as exc:
        raise StorageError(f"cannot read {backup.name}: {exc.strerror or exc}") from exc


def _copy_privately(source: Path, partial: Path) -> bytes:
    """Copies the backup at `source` (a regular file: a named pipe would block the copy forever)
    to `partial`, readable by its owner only, durably: what is then checked is what is used,
    even if `source` is swapped meanwhile. Returns the SHA-256 of what was copied."""
    partial.unlink(missing_ok=True)  # left by a restore that was killed
    digest = hashlib.sha256()
    fd, _ = open_regular(source)
    with owned(fd), open(fd, "rb", closefd=False) as reader, open(create_private(partial), "wb") as writer:
        while chunk := reader.read(COPY_CHUNK_BYTES):
            digest.update(chunk)
            writer.write(chunk)
        writer.flush()
        os.fsync(writer.fileno())
    return digest.digest()


def _check_file(copy: Path, name: str, db_key: bytes | None) -> None:
    """Raises unless `copy` is an intact database (under `db_key`, if it is encrypted)."""
    if db_key is None:
        check_database_file(copy, name)
    else:
        cipher.check_encrypted_file(copy, db_key, name)


def _publish(partial: Path, target: Path) -> None:
    os.rename(partial, target)
    _fsync_path(target.parent)


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

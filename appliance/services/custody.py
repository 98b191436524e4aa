"""Custody of the node's data: backups while it runs, restoring one into an empty home, and
the remote wipe when this node's own revocation arrives."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
from contextlib import suppress
from pathlib import Path

from sqlalchemy import insert, select, text, update

from appliance import atrest, backups, certs, cipher, coded, crypto, documents, files, ids, keystore, recovery_kit, rewind
from appliance import schema as t
from appliance.audit_actions import AuditAction
from appliance.errors import AlreadyInitialised, InvalidInput, StorageError, WrongPassphrase
from appliance.files import COPY_CHUNK_BYTES, create_private, open_regular, owned
from appliance.identity import INCARNATION_BYTES
from appliance.kernel import Kernel
from appliance.model import BackupInfo, RecoveryKit, iso_utc
from appliance.retention import BACKUP_SUFFIX as BACKUP_SUFFIX
from appliance.retention import BackupHealth, RetentionPolicy
from appliance.rewind import READ_ONLY_SETTING, Rewound
from appliance.services.backup_runs import BackupRuns, BackupSchedule, check_copy
from appliance.services.directory import DirectoryService
from appliance.services.identity import LOCKED_SETTING, IdentityService
from appliance.services.replica import ReplicaService
from appliance.services.roster import Roster
from appliance.store import DB_FILE, Store, check_database_file, ensure_home


class CustodyService:
    def __init__(self, kernel: Kernel, identity: IdentityService, roster: Roster, home: Path, replica: ReplicaService, directory: DirectoryService) -> None:
        self._kernel = kernel
        self._identity = identity
        self._roster = roster
        self._replica = replica
        self._directory = directory
        self._home = home
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

    async def record_restore(self, backup: Path, rewound: Rewound | None = None, read_only: bool = False) -> None:
        """Audits that this node was brought back from `backup` (the restore's last step) - as it
        was at the time `rewound` names, for a point-in-time restore - and, for an inspection copy,
        makes the store refuse every write from then on, in this process and whoever opens it."""
        detail: dict[str, object] = {"file": backup.name}
        if rewound is not None:
            detail.update({"as_at": iso_utc(rewound.at), "changes_dropped": rewound.dropped, "changes_merged": rewound.merged})
        if read_only:
            detail["read_only"] = True
        async with self._kernel.store.transaction() as conn:
            await self._kernel.audit(conn, self._kernel.clock(), "-", AuditAction.RESTORED, detail)
            if read_only:
                when = f"as it was at {iso_utc(rewound.at)}" if rewound is not None else f"from {backup.name}"
                reason = f"this store is a read-only copy of the node {when}, for inspection"
                await conn.execute(insert(t.settings).values(name=READ_ONLY_SETTING, value=reason))
        await self.hold_if_copy()

    async def hold_if_copy(self) -> None:
        """A read-only inspection copy (`record_restore`) refuses writes once it is open: each says
        so in one line and writes nothing."""
        async with self._kernel.store.reading() as conn:
            reason = (await conn.execute(select(t.settings.c.value).where(t.settings.c.name == READ_ONLY_SETTING))).scalar()
        if reason is not None:
            self._kernel.store.read_only = str(reason)

    async def recovery_kit(self, passphrase: str, *, kdf: crypto.KdfParams = crypto.MODERATE) -> RecoveryKit:
        """What rebuilds this node on new hardware (appliance/recovery_kit.py), sealed under a
        recovery code shown once. Needs the node's passphrase again - the kit carries the node key
        it guards - and is audited; users' keys stay sealed under their own secrets."""
        self._identity.require_unlocked()
        row, keys = self._identity.row, self._identity.keys
        async with self._kernel.store.reading() as conn:
            ident = (await conn.execute(select(t.node_identity))).mappings().one()
            users = (await conn.execute(select(t.user_secrets))).mappings().all()
            mfa = {r["public_key"]: r for r in (await conn.execute(select(t.user_mfa))).mappings().all()}
        try:
            await asyncio.to_thread(crypto.open_with_passphrase, passphrase, ident["sealed_data_key"], ident["kdf_salt"], self._identity.row.kdf)
        except WrongPassphrase:
            async with self._kernel.store.transaction() as conn:
                await self._kernel.audit(conn, self._kernel.clock(), self._identity.user_key.hex(), AuditAction.PERMISSION_DENIED, {"action": "recovery-kit", "reason": "wrong passphrase"})
            raise
        directory = await self._replica.changes_for(documents.DIRECTORY_DOC, [])
        now = self._kernel.clock()
        contents = recovery_kit.KitContents(
            workspace_name=row.workspace_name,
            workspace_key=row.workspace_key,
            node_name=row.node_name,
            node_seed=bytes(keys.node),
            workspace_seed=bytes(keys.workspace) if keys.workspace is not None else None,
            default_user=row.default_user,
            incarnation=row.incarnation,
            kdf=row.kdf,
            users=tuple(
                recovery_kit.SealedUser(
                    u["public_key"], u["salt"], u["sealed"], u["must_change"], u["changed_at"],
                    (mfa[u["public_key"]]["sealed_secret"], mfa[u["public_key"]]["enrolled_at"], mfa[u["public_key"]]["last_step"]) if u["public_key"] in mfa else None,
                )
                for u in users
            ),
            directory=tuple((c.data, c.signature) for c in directory),
            made_at=now,
        )
        data, code = await asyncio.to_thread(
            recovery_kit.seal_new_kit, contents, self._kernel.rng(recovery_kit.KIT_CODE_CHARS), self._kernel.rng(crypto.SALT_BYTES), self._kernel.rng(crypto.NONCE_BYTES), kdf
        )
        async with self._kernel.store.transaction() as conn:
            await self._kernel.audit(conn, now, self._identity.user_key.hex(), AuditAction.RECOVERY_KIT_MADE, {"node": self._identity.node_id, "users": len(users)})
        return RecoveryKit(data, coded.shown(code), self._identity.node_id, len(users))

    async def replace_node(self, kit: bytes, code: str, *, reason: str = "hardware taken", kdf: crypto.KdfParams = crypto.MODERATE) -> RecoveryKit:
        """Admin: the identity of a node whose hardware was taken is not recovered - whoever holds
        the box may hold its key. From its recovery kit, this revokes the lost node, certifies a
        new node key in its place and certifies its users anew with the new node as their home
        (their keys stay theirs, still sealed under their own secrets), in one directory change;
        returns a recovery kit of the new identity (a fresh incarnation) for `recover` on the new
        hardware, sealed under a new code."""
        issuer = await self._identity.require_admin("replace node")
        old = await asyncio.to_thread(recovery_kit.open_kit, kit, code)
        if old.workspace_key != self._identity.workspace_key:
            raise InvalidInput("the recovery kit is of another workspace")
        old_key = bytes(crypto.new_signing_key(old.node_seed).verify_key)
        if old_key == self._identity.node_key:
            raise InvalidInput("this is the kit of this node: replace it from another admin's node")
        current = self._roster.current
        lost = current.nodes.get(old_key)
        if lost is None:
            raise InvalidInput("the kit's node is not a node of this workspace now (revoked already, or unknown): nothing to replace")
        now = self._kernel.clock()
        new_key = crypto.new_signing_key(self._kernel.rng(32))
        new_public = bytes(new_key.verify_key)
        incarnation = self._kernel.rng(INCARNATION_BYTES)
        ws = self._identity.workspace_key
        commitment = certs.recovery_commitment(incarnation)  # the new kit is one an admin made: peers accept it again if it comes back
        records: list[certs.Certificate | certs.Revocation] = [
            certs.issue_revocation(issuer, workspace=ws, subject=old_key, reason=reason, revoked_at=now),
            certs.issue_certificate(issuer, workspace=ws, kind=certs.SubjectKind.NODE, key=new_public, name=lost.name, role=certs.Role.NODE, issued_at=now, recovery=commitment),
        ]
        for public_key in old.user_keys:
            cert = current.users.get(public_key)
            if cert is not None:
                records.append(
                    certs.issue_certificate(
                        issuer, workspace=ws, kind=certs.SubjectKind.USER, key=cert.key, name=cert.name, role=cert.role,
                        issued_at=max(now, cert.issued_at + 1), home=new_public, attributes=cert.attributes,
                    )
                )
        new_id = ids.key_id(new_public)
        detail: dict[str, object] = {"node": lost.name, "old": ids.key_id(old_key), "new": new_id, "users": len(records) - 2, "reason": reason}
        await self._directory.add_entries(records, AuditAction.NODE_REPLACED, detail)
        directory = await self._replica.changes_for(documents.DIRECTORY_DOC, [])
        contents = dataclasses.replace(
            old, node_seed=bytes(new_key), incarnation=incarnation, directory=tuple((c.data, c.signature) for c in directory), made_at=now
        )
        data, new_code = await asyncio.to_thread(
            recovery_kit.seal_new_kit, contents, self._kernel.rng(recovery_kit.KIT_CODE_CHARS), self._kernel.rng(crypto.SALT_BYTES), self._kernel.rng(crypto.NONCE_BYTES), kdf
        )
        return RecoveryKit(data, coded.shown(new_code), new_id, len(old.user_keys), replaces=ids.key_id(old_key), made_at=now)

    async def wipe_after_revocation(self, revocation: certs.Revocation) -> None:
        """Remote wipe: this node's own revocation arrived. Its data key, sealed secrets and users' keys are
        destroyed and its content deleted (overwritten on disk, then the file is rewritten), so
        the store left behind opens to nothing but the audit log and the reason."""
        by = self._roster.current.users.get(revocation.issuer)
        reason = f"this node was revoked by {by.name if by else ids.key_id(revocation.issuer)} ({revocation.reason or 'no reason given'}); its data was wiped"
        async with self._kernel.lock:
            # First, outside the encrypted store: if the wipe is cut short, the node still never
            # opens again (the store says it only to whoever holds its key).
            await asyncio.to_thread(keystore.note_wiped, self._home, reason)
            async with self._kernel.store.transaction() as conn:
                content = (t.changes, t.snapshots, t.messages, t.message_reactions, t.read_markers, t.channels, t.blobs, t.peer_heads, t.peer_blobs, t.documents)
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


async def bring_in(home: Path, backup: Path, passphrase: str) -> bytes | None:
    """Copies a backup and its key file into an empty `home`; the copy is checked (its recorded
    SHA-256, integrity, identity, audit chain, under the key the passphrase unseals) before it
    gets its name: a refused one, or a wrong passphrase, leaves nothing in `home` (nor `home`
    itself, when this made it). The caller then opens it and, if that fails, removes it again
    (`remove_db`). A plain backup from before encryption has no key file: it is converted when
    opened. Returns the database key the copy is encrypted under (None: plain)."""
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
        return db_key
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


async def rewind_home(home: Path, backup: Path, at: int, log: Path | None, db_key: bytes | None) -> Rewound:
    """Cuts the store just brought into `home` from `backup` (under `db_key`, if encrypted) back
    to `at` (appliance/rewind.py), merging first the rows up to `at` of the later store `log` (the
    same node's: the same key). A backup taken before `at` holds nothing of what came between:
    without a log that covers `at`, InvalidInput."""
    later = await asyncio.to_thread(rewind.read_later_log, log, at, db_key) if log is not None else None
    store = Store.at(home, db_key)
    async with store:
        async with store.reading() as conn:
            until = await conn.run_sync(rewind.covers_until, backup.name)
        if later is not None:
            until = max(until, later.covers_until)
        if at > until:
            hint = "a log taken later" if log is not None else "the change log of a later backup or the live store with --log"
            raise InvalidInput(f"the backup was taken at {iso_utc(until)}, before {iso_utc(at)}: give {hint}")
        return await store.write(lambda conn: rewind.rewind(conn, at, later))


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
    files.fsync_path(target.parent)



def remove_db(home: Path) -> None:
    """Removes what a failed join or restore left: the store, its logs and its key file."""
    for suffix in ("", "-wal", "-shm"):
        path = home / f"{DB_FILE}{suffix}"
        if path.exists():
            path.unlink()
    keystore.key_path(home).unlink(missing_ok=True)

"""Custody of the node's data: backups while it runs, restoring one into an empty home, and
the remote wipe when this node's own revocation arrives."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import time
from pathlib import Path

from sqlalchemy import insert, select, text, update

from appliance import backups, certs, crypto, documents, ids, recovery_kit, rewind
from appliance import schema as t
from appliance.audit_actions import AuditAction
from appliance.errors import AlreadyInitialised, InvalidInput, StorageError, WrongPassphrase
from appliance.files import COPY_CHUNK_BYTES, create_private, open_regular, owned
from appliance.identity import INCARNATION_BYTES
from appliance.kernel import Kernel
from appliance.model import BackupInfo, RecoveryKit, iso_utc
from appliance.rewind import READ_ONLY_SETTING, Rewound
from appliance.services.directory import DirectoryService
from appliance.services.identity import LOCKED_SETTING, IdentityService
from appliance.services.replica import ReplicaService
from appliance.services.roster import Roster
from appliance.store import DB_FILE, Store, check_database_file, ensure_home

BACKUP_SUFFIX = ".backup.db"  # a SQLite file: `sqlite3` opens it read-only for inspection


class CustodyService:
    def __init__(self, kernel: Kernel, identity: IdentityService, roster: Roster, replica: ReplicaService, directory: DirectoryService) -> None:
        self._kernel = kernel
        self._identity = identity
        self._roster = roster
        self._replica = replica
        self._directory = directory

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
                await asyncio.to_thread(_publish_backup, partial, target)
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
        code = recovery_kit.new_code(list(self._kernel.rng(recovery_kit.KIT_CODE_CHARS)))
        data = await asyncio.to_thread(
            recovery_kit.seal_kit, recovery_kit.encode_contents(contents), code, self._kernel.rng(crypto.SALT_BYTES), self._kernel.rng(crypto.NONCE_BYTES), kdf
        )
        async with self._kernel.store.transaction() as conn:
            await self._kernel.audit(conn, now, self._identity.user_key.hex(), AuditAction.RECOVERY_KIT_MADE, {"node": self._identity.node_id, "users": len(users)})
        return RecoveryKit(data, recovery_kit.shown_code(code), self._identity.node_id, len(users))

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
        ws = self._identity.workspace_key
        records: list[certs.Certificate | certs.Revocation] = [
            certs.issue_revocation(issuer, workspace=ws, subject=old_key, reason=reason, revoked_at=now),
            certs.issue_certificate(issuer, workspace=ws, kind=certs.SubjectKind.NODE, key=new_public, name=lost.name, role=certs.Role.NODE, issued_at=now),
        ]
        for user in old.users:
            cert = current.users.get(user.public_key)
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
            old, node_seed=bytes(new_key), incarnation=self._kernel.rng(INCARNATION_BYTES), directory=tuple((c.data, c.signature) for c in directory), made_at=now
        )
        new_code = recovery_kit.new_code(list(self._kernel.rng(recovery_kit.KIT_CODE_CHARS)))
        data = await asyncio.to_thread(
            recovery_kit.seal_kit, recovery_kit.encode_contents(contents), new_code, self._kernel.rng(crypto.SALT_BYTES), self._kernel.rng(crypto.NONCE_BYTES), kdf
        )
        return RecoveryKit(data, recovery_kit.shown_code(new_code), new_id, len(old.users))

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


async def bring_in(home: Path, backup: Path) -> None:
    """Copies a backup into an empty `home` (checked before it gets its name); the caller then
    opens it and, if that fails, removes it again (`remove_db`)."""
    if (home / DB_FILE).exists():
        raise AlreadyInitialised(f"{home} already holds a node: restore into an empty home")
    ensure_home(home)
    try:
        await asyncio.to_thread(_copy_durably, backup, home / DB_FILE)
    except OSError as exc:
        remove_db(home)
        raise StorageError(f"cannot copy {backup.name} into {home}: {exc.strerror or exc}") from exc
    except BaseException:
        remove_db(home)
        raise


async def rewind_home(home: Path, backup: Path, at: int, log: Path | None) -> Rewound:
    """Cuts the store just brought into `home` from `backup` back to `at` (appliance/rewind.py),
    merging first the rows up to `at` of the later store `log`. A backup taken before `at` holds
    nothing of what came between: without a log that covers `at`, InvalidInput."""
    later = await asyncio.to_thread(rewind.read_later_log, log, at) if log is not None else None
    store = Store.at(home)
    async with store:
        async with store.reading() as conn:
            until = await conn.run_sync(rewind.covers_until, backup.name)
        if later is not None:
            until = max(until, later.covers_until)
        if at > until:
            hint = "a log taken later" if log is not None else "the change log of a later backup or the live store with --log"
            raise InvalidInput(f"the backup was taken at {iso_utc(until)}, before {iso_utc(at)}: give {hint}")
        return await store.write(lambda conn: rewind.rewind(conn, at, later))


def _publish_backup(partial: Path, target: Path) -> None:
    """Checks the fresh copy, makes it durable, then gives it its name: a crash or a full disk
    never leaves a file that looks like a finished backup."""
    check_database_file(partial)
    _fsync_path(partial)
    os.rename(partial, target)
    _fsync_path(target.parent)


def _copy_durably(source: Path, target: Path) -> None:
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
        check_database_file(partial, source.name)
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
    for suffix in ("", "-wal", "-shm"):
        path = home / f"{DB_FILE}{suffix}"
        if path.exists():
            path.unlink()

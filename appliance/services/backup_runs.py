"""Backup runs: a consistent copy of the running node, checked before it gets its name (opened
read-only through the store: integrity, this node's identity, its audit chain against this
node's key and this node's own log), the check recorded (`backup_checks`) and audited, then the
folder pruned as the retention policy allows (appliance/retention.py decides). Also the
scheduled backup's settings and the backups' health."""

from __future__ import annotations

import asyncio
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import insert, select, text

from appliance import audit, backups, files, ids, keystore
from appliance import schema as t
from appliance.audit_actions import AuditAction
from appliance.errors import BackupCheckFailed, InvalidInput, StorageError
from appliance.kernel import Kernel
from appliance.model import BackupInfo
from appliance.retention import DEFAULT_KEEP_AT_LEAST, BackupCheck, BackupFile, BackupHealth, RetentionPolicy, backup_health, backup_name, parse_keep, taken_at_of, to_prune
from appliance.services.identity import IdentityService
from appliance.settings_rows import read_setting, write_setting
from appliance.store import Store

BACKUP_DIR_SETTING = "backup_dir"  # the scheduled backup's folder; absent: none is scheduled
BACKUP_KEEP_SETTING = "backup_keep"  # its retention window, as `--keep` takes it
BACKUP_KEEP_AT_LEAST_SETTING = "backup_keep_at_least"
DEFAULT_KEEP = "30d"
_MAX_LISTED = 100_000  # folder entries looked at when pruning: a huge folder costs bounded time
_MAX_PROBLEM = 300  # characters of a check's problem kept


@dataclass(frozen=True)
class BackupSchedule:
    """The scheduled backup's folder and retention, as an admin set them (`config --backup-dir`)."""

    folder: Path
    policy: RetentionPolicy


class BackupRuns:
    def __init__(self, kernel: Kernel, identity: IdentityService, home: Path) -> None:
        self._kernel = kernel
        self._identity = identity
        self._home = home  # where node.key is, copied beside each backup

    async def take(self, directory: Path, policy: RetentionPolicy | None, actor: str) -> BackupInfo:
        """One run by `actor` (an admin's key, or the node's for the schedule): the copy, its
        check, its record, then pruning by `policy` (None: nothing is pruned). A failed write or
        check keeps no file that looks whole, is recorded as a failed check, and raises."""
        taken_at = self._kernel.clock()
        name = backup_name(self._identity.node_id, taken_at)
        target = directory / name
        try:
            await asyncio.to_thread(_prepare_folder, directory)
        except (InvalidInput, StorageError) as exc:  # the stick not plugged in is the likeliest failure of all
            await self._record(BackupCheck(name, str(directory), taken_at, 0, False, str(exc), self._kernel.clock()), actor)
            raise
        if target.exists():
            raise InvalidInput(f"{target} exists already")
        problem: str | None = None
        try:
            debris = await asyncio.to_thread(backups.remove_debris, directory)
            with backups.partial_file(directory / backups.partial_name(name)) as partial:
                await self._kernel.store.backup_into(partial)
                if not partial.exists():  # the stick was pulled out, the folder removed
                    raise StorageError(f"the backup folder {directory} went away while the backup was written")
                problem = await self.check_copy(partial)
                digest = await asyncio.to_thread(_publish_backup, partial, target, keystore.key_path(self._home)) if problem is None else None
            size = target.stat().st_size if problem is None else 0
        except OSError as exc:
            reason = f"cannot write the backup into {directory}: {exc.strerror or exc}"
            await self._record(BackupCheck(name, str(directory), taken_at, 0, False, reason, self._kernel.clock()), actor)
            raise StorageError(reason) from exc
        except StorageError as exc:
            await self._record(BackupCheck(name, str(directory), taken_at, 0, False, str(exc), self._kernel.clock()), actor)
            raise
        if problem is not None:
            await self._record(BackupCheck(name, str(directory), taken_at, 0, False, problem, self._kernel.clock()), actor)
            raise BackupCheckFailed(f"the backup failed its check and was not kept: {problem}")
        check = BackupCheck(name, str(directory), taken_at, size, True, None, self._kernel.clock())
        await self._record(check, actor, debris, digest)
        pruned = await self.prune(directory, policy, name, actor) if policy is not None else []
        return BackupInfo(target, size, taken_at, debris.files, debris.bytes, tuple(b.name for b in pruned))

    async def check_copy(self, path: Path) -> str | None:
        """Why the file at `path` is not a good backup of this node, or None (`check_copy`, and
        its audit log matches this node's own up to its last entry)."""
        checked = await check_copy(path, self._identity.row.node_key, self._kernel.store.db_key)
        if checked.problem is not None or checked.head is None:
            return checked.problem
        seq, head = checked.head
        async with self._kernel.store.reading() as conn:
            ours = (await conn.execute(select(t.audit_log.c.hash).where(t.audit_log.c.seq == seq))).scalar()
        if ours is None or bytes(ours) != head:
            return f"its audit log differs from this node's at entry {seq}"
        return None

    async def prune(self, directory: Path, policy: RetentionPolicy, keep: str | None, actor: str) -> list[BackupFile]:
        """Deletes this node's backups in `directory` that `policy` lets go (and only regular files
        named as this node's backups), each audited; returns them. A file that cannot be deleted
        is left and noted."""
        listed = await asyncio.to_thread(_listing, directory)
        node_id = self._identity.node_id
        named = {name: (at, size) for name, size in listed.items() if (at := taken_at_of(name, node_id)) is not None}
        async with self._kernel.store.reading() as conn:
            rows = (await conn.execute(select(t.backup_checks.c.file, t.backup_checks.c.bytes).where(t.backup_checks.c.ok, t.backup_checks.c.file.in_(list(named))))).all()
        verified = {row.file for row in rows if named[row.file][1] == row.bytes}  # a file changed since its check is not verified
        candidates = [BackupFile(name, at, name in verified) for name, (at, _) in named.items()]
        pruned: list[BackupFile] = []
        for backup in to_prune(candidates, self._kernel.clock(), policy, keep):
            try:
                await asyncio.to_thread(_unlink_regular, directory / backup.name)
                for beside in (backups.digest_path(directory / backup.name), backups.backup_key_path(directory / backup.name)):
                    await asyncio.to_thread(beside.unlink, missing_ok=True)
            except OSError as exc:
                self._kernel.note_skipped_write(f"the old backup {backup.name} could not be deleted: {exc.strerror or exc}")
                continue
            pruned.append(backup)
            detail: dict[str, object] = {"file": backup.name, "folder": str(directory), "taken_at": backup.taken_at, "bytes": named[backup.name][1], "verified": backup.verified}
            detail["policy"] = {"keep": policy.text, "keep_at_least": policy.keep_at_least}
            await self._audit(actor, AuditAction.BACKUP_PRUNED, detail)
        return pruned

    async def health(self) -> BackupHealth:
        """The newest run, the newest verified one, the schedule: how the backups stand now."""
        columns = (t.backup_checks.c.file, t.backup_checks.c.folder, t.backup_checks.c.taken_at, t.backup_checks.c.bytes, t.backup_checks.c.ok, t.backup_checks.c.problem, t.backup_checks.c.checked_at)
        newest = select(*columns).order_by(t.backup_checks.c.id.desc()).limit(1)
        async with self._kernel.store.reading() as conn:
            rows = [*(await conn.execute(newest)).all(), *(await conn.execute(newest.where(t.backup_checks.c.ok))).all()]
        schedule = await self.schedule()
        checks = [BackupCheck(r.file, r.folder, r.taken_at, r.bytes, bool(r.ok), r.problem, r.checked_at) for r in rows]
        return backup_health(checks, self._kernel.clock(), str(schedule.folder) if schedule else None, schedule.policy.text if schedule else None)

    async def schedule(self) -> BackupSchedule | None:
        async with self._kernel.store.reading() as conn:
            folder = await read_setting(conn, BACKUP_DIR_SETTING)
            keep = await read_setting(conn, BACKUP_KEEP_SETTING)
            at_least = await read_setting(conn, BACKUP_KEEP_AT_LEAST_SETTING)
        if not folder:
            return None
        return BackupSchedule(Path(folder), parse_keep(keep or DEFAULT_KEEP, int(at_least) if at_least else DEFAULT_KEEP_AT_LEAST))

    async def set_schedule(self, schedule: BackupSchedule | None, actor: str) -> None:
        """Stores the scheduled backup's folder and retention (None: no scheduled backup); audited."""
        if schedule is not None and not schedule.folder.is_absolute():
            raise InvalidInput(f"the backup folder must be an absolute path, not {schedule.folder}")
        async with self._kernel.store.transaction() as conn:
            await write_setting(conn, BACKUP_DIR_SETTING, str(schedule.folder) if schedule else None)
            await write_setting(conn, BACKUP_KEEP_SETTING, schedule.policy.text if schedule else None)
            await write_setting(conn, BACKUP_KEEP_AT_LEAST_SETTING, str(schedule.policy.keep_at_least) if schedule else None)
            detail: dict[str, object] = {"folder": str(schedule.folder), "keep": schedule.policy.text, "keep_at_least": schedule.policy.keep_at_least} if schedule else {"folder": None}
            await self._kernel.audit(conn, self._kernel.clock(), actor, AuditAction.BACKUP_SCHEDULE_SET, detail)

    async def _record(self, check: BackupCheck, actor: str, debris: backups.Debris | None = None, digest: bytes | None = None) -> None:
        """Records the check and audits the run. On a full disk (when a backup is wanted most) a
        record that cannot be written is noted, and the backup is kept."""
        values = {"file": check.file, "folder": check.folder, "taken_at": check.taken_at, "bytes": check.bytes, "ok": check.ok, "problem": check.problem, "checked_at": check.checked_at}
        values["sha256"] = digest
        try:
            async with self._kernel.store.transaction() as conn:
                await conn.execute(insert(t.backup_checks).values(**values))
                outcome: dict[str, object] = {"file": check.file, "folder": check.folder, "ok": check.ok, "problem": check.problem}
                await self._kernel.audit(conn, check.checked_at, actor, AuditAction.BACKUP_CHECKED, outcome)
                if check.ok:  # then the backup itself, kept under its name
                    detail: dict[str, object] = {"file": check.file, "bytes": check.bytes}
                    if digest is not None:
                        detail["sha256"] = digest.hex()
                    if debris is not None and debris.files:
                        detail["removed_debris"] = {"files": debris.files, "bytes": debris.bytes}
                    await self._kernel.audit(conn, check.checked_at, actor, AuditAction.BACKUP, detail)
        except StorageError as exc:
            what = f"the backup {check.file} was written but is not in the audit log" if check.ok else f"the failed backup {check.file} is not recorded"
            self._kernel.note_skipped_write(f"{what}: {exc}")

    async def _audit(self, actor: str, action: AuditAction, detail: dict[str, object]) -> None:
        try:
            async with self._kernel.store.transaction() as conn:
                await self._kernel.audit(conn, self._kernel.clock(), actor, action, detail)
        except StorageError as exc:
            self._kernel.note_skipped_write(f"{action.value} {detail.get('file')} is not in the audit log: {exc}")


@dataclass(frozen=True)
class CopyCheck:
    problem: str | None  # why the file is not a good backup; None: it is
    head: tuple[int, bytes] | None = None  # its audit log's last entry (sequence number, hash)


async def check_copy(path: Path, node_key: bytes | None = None, db_key: bytes | None = None) -> CopyCheck:
    """Checks the database file at `path` as a backup of the node with `node_key` (None: of the
    node it says it is, as a restore knows no other): it opens read-only through the store
    (under `db_key`, if it is encrypted), passes SQLite's full integrity check, holds that
    node's identity, and its audit chain verifies against that node's key."""
    copy = Store.copy_at(path, db_key)
    try:
        async with copy, copy.reading() as conn:
            verdict = [str(row[0]) for row in (await conn.execute(text("PRAGMA integrity_check(20)"))).all()]
            if verdict != ["ok"]:
                return CopyCheck(f"its integrity check failed: {'; '.join(verdict)[:_MAX_PROBLEM]}")
            row = (await conn.execute(select(t.node_identity.c.node_key, t.node_identity.c.audit_legacy_until))).first()
            if row is None:
                return CopyCheck("it holds no node identity")
            held = bytes(row.node_key)
            if node_key is not None and held != node_key:
                return CopyCheck(f"it is a backup of another node ({ids.key_id(held)}), not of {ids.key_id(node_key)}")
            rows = (await conn.execute(select(t.audit_log).order_by(t.audit_log.c.seq))).mappings().all()
    except StorageError as exc:
        return CopyCheck(f"it does not open as a node database: {_cause(exc)}")
    entries = [audit.AuditEntry(r["seq"], r["at"], r["actor"], r["action"], r["detail"], bytes(r["prev_hash"]), bytes(r["hash"]), r["signature"] and bytes(r["signature"])) for r in rows]
    chain = audit.verify_chain(entries, held, legacy_until=int(row.audit_legacy_until))
    if not chain.ok:
        return CopyCheck(f"its audit log does not verify against the node's key: {chain.problem}")
    return CopyCheck(None, (entries[-1].seq, entries[-1].hash) if entries else None)


def _prepare_folder(directory: Path) -> None:
    """The backup folder, made (0700) if it is missing; its parent must exist (a stick that is
    not mounted is not replaced by a folder on the node's own disk)."""
    if directory.is_dir():
        return
    if directory.exists() or directory.is_symlink():
        raise InvalidInput(f"{directory} is not a folder")
    if not directory.parent.is_dir():
        raise InvalidInput(f"no folder {directory.parent} to make {directory.name} in")
    try:
        directory.mkdir(mode=0o700)
        os.chmod(directory, 0o700)  # mkdir's mode passes through the umask
    except OSError as exc:
        raise StorageError(f"cannot make the backup folder {directory}: {exc.strerror or exc}") from exc


def _publish_backup(partial: Path, target: Path, node_key: Path) -> bytes:
    """Makes the checked copy durable, writes its SHA-256 and the node's key file (`node_key`,
    if the store is encrypted) beside where it goes, then gives it its name: a crash or a full
    disk never leaves a file that looks like a finished backup, nor one without its key.
    Returns the SHA-256."""
    files.fsync_path(partial)
    digest = backups.file_digest(partial)
    try:
        backups.write_digest(target, digest)
        if node_key.exists():
            keystore.write_private_atomically(backups.backup_key_path(target), node_key.read_bytes())
        os.rename(partial, target)
    except BaseException:
        backups.digest_path(target).unlink(missing_ok=True)
        backups.backup_key_path(target).unlink(missing_ok=True)
        raise
    files.fsync_path(target.parent)
    return digest



def _listing(directory: Path) -> dict[str, int]:
    """Regular files in `directory` (not symlinks), by name, with their sizes."""
    found: dict[str, int] = {}
    try:
        with os.scandir(directory) as entries:
            for index, entry in enumerate(entries):
                if index >= _MAX_LISTED:
                    break
                info = entry.stat(follow_symlinks=False)
                if stat.S_ISREG(info.st_mode):
                    found[entry.name] = info.st_size
    except OSError as exc:
        raise StorageError(f"cannot list the backup folder {directory}: {exc.strerror or exc}") from exc
    return found


def _unlink_regular(path: Path) -> None:
    if not stat.S_ISREG(path.lstat().st_mode):
        raise IsADirectoryError(0, "not a regular file")
    path.unlink()


def _cause(exc: StorageError) -> str:
    cause = exc.__cause__
    return str(getattr(cause, "orig", None) or cause or exc).splitlines()[0]

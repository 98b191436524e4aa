"""The scheduled compliance export: a policy an admin sets (folder, format, how often, files,
recipient, channels, users), and runs that each export what this node received since the last
run ended - by receipt time on this node's clock, so a message that arrives late by courier is
in the next file - with no gap and no overlap between files. A run covers up to SETTLE_MS ago
(an import's changes are stamped before they commit); a run that fails leaves the next run the
same window; one killed after its file was renamed is recognised by that file's name."""

from __future__ import annotations

import calendar
import json
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from appliance.audit_actions import AuditAction
from appliance.compliance_records import ExportFilter, ExportFormat, ExportResult, TimeBasis
from appliance.errors import InvalidInput, NotFound, PermissionDenied
from appliance.export_encoders import EXTENSIONS
from appliance.export_sealing import parse_recipient
from appliance.kernel import Kernel
from appliance.services.identity import IdentityService
from appliance.services.roster import Roster
from appliance.settings_rows import read_setting, write_setting

if TYPE_CHECKING:
    from appliance.services.compliance import ComplianceService

POLICY_SETTING = "compliance_export_policy"
LAST_SETTING = "compliance_export_last_until"
SETTLE_MS = 5 * 60_000
MIN_EVERY_MS = 60_000


@dataclass(frozen=True)
class SchedulePolicy:
    directory: str
    format: ExportFormat
    every_ms: int
    files: bool
    recipient: str | None
    channels: tuple[str, ...]
    users: tuple[str, ...]
    set_by: str
    set_at: int


@dataclass(frozen=True)
class ScheduledRun:
    result: ExportResult | None  # None: not due yet
    next_due: int  # ms


def _stamp(ms: int | None) -> str:
    return "start" if ms is None else time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(ms / 1000)) + f"{ms % 1000:03d}"


def file_name(node_id: str, since: int | None, until: int, fmt: ExportFormat) -> str:
    return f"rallypoint-compliance-{node_id}-{_stamp(since)}-{_stamp(until)}{EXTENSIONS[fmt]}"


def _parse_stamp(text: str) -> int:
    return calendar.timegm(time.strptime(text[:16], "%Y%m%dT%H%M%SZ")) * 1000 + int(text[16:19])


class ComplianceSchedule:
    def __init__(self, kernel: Kernel, identity: IdentityService, roster: Roster, compliance: ComplianceService) -> None:
        self._kernel = kernel
        self._identity = identity
        self._roster = roster
        self._compliance = compliance

    async def set_policy(
        self, directory: Path, fmt: ExportFormat, every_ms: int, *, files: bool = False, recipient: str | None = None, channels: tuple[str, ...] = (), users: tuple[str, ...] = ()
    ) -> SchedulePolicy:
        """Admin: sets the policy (audited); the next run starts where the last one ended."""
        await self._identity.require_admin("scheduling compliance exports")
        if every_ms < MIN_EVERY_MS:
            raise InvalidInput("a scheduled export runs at most once a minute")
        if not directory.is_absolute():
            raise InvalidInput("give the export folder as an absolute path (the timer runs elsewhere)")
        if recipient is not None:
            parse_recipient(recipient)
        policy = SchedulePolicy(str(directory), fmt, every_ms, files, recipient, channels, users, self._identity.user_key.hex(), self._kernel.clock())
        async with self._kernel.store.transaction() as conn:
            await write_setting(conn, POLICY_SETTING, json.dumps(asdict(policy)))
            await self._kernel.audit(conn, self._kernel.clock(), policy.set_by, AuditAction.COMPLIANCE_SCHEDULE_SET, {k: v for k, v in asdict(policy).items() if k not in ("set_by", "set_at")})
        return policy

    async def clear(self) -> None:
        await self._identity.require_admin("scheduling compliance exports")
        async with self._kernel.store.transaction() as conn:
            await write_setting(conn, POLICY_SETTING, None)
            await self._kernel.audit(conn, self._kernel.clock(), self._identity.user_key.hex(), AuditAction.COMPLIANCE_SCHEDULE_SET, {"cleared": True})

    async def policy(self) -> SchedulePolicy | None:
        async with self._kernel.store.reading() as conn:
            raw = await read_setting(conn, POLICY_SETTING)
        if raw is None:
            return None
        data = json.loads(raw)
        return SchedulePolicy(**(data | {"format": ExportFormat(data["format"]), "channels": tuple(data["channels"]), "users": tuple(data["users"])}))

    async def last_until(self) -> int | None:
        async with self._kernel.store.reading() as conn:
            raw = await read_setting(conn, LAST_SETTING)
        return int(raw) if raw is not None else None

    async def run(self, *, force: bool = False) -> ScheduledRun:
        """Runs the policy when due (or `force`): exports [last end, now - SETTLE_MS)."""
        policy = await self.policy()
        if policy is None:
            raise NotFound("no scheduled compliance export is set (rallypoint compliance-schedule --to DIR --every 1d)")
        if not self._roster.current.is_admin(bytes.fromhex(policy.set_by)):
            raise PermissionDenied(f"the scheduled compliance export was set by {self._roster.user_name(policy.set_by)}, no longer an admin: an admin must set it again")
        since = await self.last_until()
        directory = Path(policy.directory)
        since = self._adopt_finished(directory, policy.format, since)
        until = self._kernel.clock() - SETTLE_MS
        if since is not None and not force and until - since < policy.every_ms:
            return ScheduledRun(None, since + policy.every_ms + SETTLE_MS)
        if since is not None and until <= since:
            return ScheduledRun(None, since + SETTLE_MS)
        filters = ExportFilter(since=since, until=until, channels=policy.channels, users=policy.users, basis=TimeBasis.RECEIVED)
        target = directory / file_name(self._identity.node_id, since, until, policy.format)
        result = await self._compliance.export(
            target, policy.format, filters, with_files=policy.files, recipient=parse_recipient(policy.recipient) if policy.recipient else None, scheduled_by=policy.set_by
        )
        await self._finished(until)
        return ScheduledRun(result, until + policy.every_ms + SETTLE_MS)

    async def _finished(self, until: int) -> None:
        async with self._kernel.store.transaction() as conn:
            await write_setting(conn, LAST_SETTING, str(until))

    def _adopt_finished(self, directory: Path, fmt: ExportFormat, since: int | None) -> int | None:
        """A run killed between renaming its file and recording its end: the file says the end."""
        pattern = re.compile(re.escape(f"rallypoint-compliance-{self._identity.node_id}-{_stamp(since)}-") + r"(\d{8}T\d{6}Z\d{3})" + re.escape(EXTENSIONS[fmt]))
        try:
            names = [entry.name for entry in directory.iterdir()]
        except OSError:
            return since
        ends = [_parse_stamp(match.group(1)) for name in names if (match := pattern.fullmatch(name))]
        return max(ends) if ends else since

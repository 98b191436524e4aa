"""Backup retention: the policy (`--keep 30d --keep-at-least 7`), which files in a folder are this
node's backups and when each was taken (from its name), which of them a run may delete, and the
health of the backups as the console and `rallypoint backup --status` show it. Pure: the
folder's listing, the checks and the time come in as values."""

from __future__ import annotations

import calendar
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from appliance.errors import InvalidInput

HOUR_MS = 3600 * 1000
DAY_MS = 24 * HOUR_MS
DEFAULT_KEEP_AT_LEAST = 7
MAX_KEEP_DAYS = 100 * 366  # a century: beyond it a policy is a typing error
MAX_KEEP_AT_LEAST = 10_000
BACKUP_SUFFIX = ".backup.db"  # a SQLite file: `sqlite3` opens it read-only for inspection
STALE_AFTER_MS = 26 * HOUR_MS  # a daily backup plus the timer's random delay and some slack
_KEEP = re.compile(r"(?:(?P<days>[0-9]{1,6})d)?(?:(?P<hours>[0-9]{1,8})h)?")
_NAME = re.compile(r"rallypoint-(?P<node>[A-Z2-7]{7}-[A-Z2-7]{7}-[A-Z2-7]{7})-(?P<at>[0-9]{8}T[0-9]{6}Z)" + re.escape(BACKUP_SUFFIX))
_NAME_TIME = "%Y%m%dT%H%M%SZ"


@dataclass(frozen=True)
class RetentionPolicy:
    """Backups older than `days` and `hours` may go, but the newest `keep_at_least` verified
    ones stay whatever their age."""

    days: int = 30
    hours: int = 0
    keep_at_least: int = DEFAULT_KEEP_AT_LEAST

    def __post_init__(self) -> None:
        if self.days < 0 or self.hours < 0 or (self.days, self.hours) == (0, 0):
            raise InvalidInput("a retention window is at least one hour, such as 30d, 36h or 1d12h")
        if self.window_ms > MAX_KEEP_DAYS * DAY_MS:
            raise InvalidInput(f"a retention window is at most {MAX_KEEP_DAYS} days")
        if not 1 <= self.keep_at_least <= MAX_KEEP_AT_LEAST:
            raise InvalidInput(f"--keep-at-least is 1 to {MAX_KEEP_AT_LEAST} backups")

    @property
    def window_ms(self) -> int:
        return self.days * DAY_MS + self.hours * HOUR_MS

    @property
    def text(self) -> str:
        """The policy as `parse_keep` reads it back: 30d, 36h, 1d12h."""
        return f"{f'{self.days}d' if self.days else ''}{f'{self.hours}h' if self.hours else ''}"


def parse_keep(text: str, keep_at_least: int = DEFAULT_KEEP_AT_LEAST) -> RetentionPolicy:
    """`30d`, `36h`, `1d12h` (days, hours, or both) as a policy; anything else is refused."""
    match = _KEEP.fullmatch(text.strip().lower())
    if not text.strip() or match is None:
        raise InvalidInput(f"cannot read the retention {text!r}: give days and/or hours, such as 30d, 36h or 1d12h")
    return RetentionPolicy(int(match["days"] or 0), int(match["hours"] or 0), keep_at_least)


@dataclass(frozen=True)
class BackupFile:
    """One of this node's backups in a folder: its name, when it was taken (ms, from the name:
    what a copy or a touch does to the file's times does not move it), and whether its check
    here passed."""

    name: str
    taken_at: int
    verified: bool


def backup_name(node_id: str, taken_at: int) -> str:
    """The name of the backup of node `node_id` taken at `taken_at` (ms)."""
    return f"rallypoint-{node_id}-{time.strftime(_NAME_TIME, time.gmtime(taken_at // 1000))}{BACKUP_SUFFIX}"


def taken_at_of(name: str, node_id: str) -> int | None:
    """When the backup called `name` was taken (ms), if it is a backup of `node_id`; else None
    (another node's backup, a user's file, a partial file)."""
    match = _NAME.fullmatch(name)
    if match is None or match["node"] != node_id:
        return None
    try:
        return calendar.timegm(time.strptime(match["at"], _NAME_TIME)) * 1000
    except ValueError:  # 20261399T...: shaped like a name, not a time
        return None


def to_prune(backups: Iterable[BackupFile], now: int, policy: RetentionPolicy, keep: str | None = None) -> list[BackupFile]:
    """The backups the policy lets a run delete, oldest first. Never one taken inside the window
    (nor one dated in the future), never the newest of all (verified or not), never the newest
    `keep_at_least` verified ones, never `keep` (the one this run just took)."""
    ordered = sorted(backups, key=lambda b: (b.taken_at, b.name), reverse=True)
    if not ordered:
        return []
    kept = {ordered[0].name, *([keep] if keep else [])}
    kept.update(b.name for b in [b for b in ordered if b.verified][: policy.keep_at_least])
    cutoff = now - policy.window_ms
    return [b for b in reversed(ordered) if b.name not in kept and b.taken_at < cutoff]


class HealthState(StrEnum):
    """How the backups stand: OK, or why an operator should look."""

    OK = "ok"
    NONE = "none"  # no backup was ever checked here
    FAILED = "failed"  # the last run failed (its check says why)
    STALE = "stale"  # the last verified backup is older than a missed daily run allows


@dataclass(frozen=True)
class BackupCheck:
    """One backup run's outcome as recorded: its file, when it was taken, its size, whether its
    check (opens, integrity, identity, audit chain) passed, and why not."""

    file: str
    folder: str
    taken_at: int
    bytes: int
    ok: bool
    problem: str | None
    checked_at: int


@dataclass(frozen=True)
class BackupHealth:
    state: HealthState
    last: BackupCheck | None  # the newest run, whatever its outcome
    last_verified: BackupCheck | None  # the newest run whose check passed
    folder: str | None  # the configured folder of the scheduled backup (None: not scheduled)
    policy: str | None  # its retention, as `--keep` takes it

    @property
    def summary(self) -> str:
        """One line for an operator."""
        schedule = f"daily into {self.folder}, keep {self.policy}" if self.folder else "no daily backup set (config --backup-dir)"
        if self.state is HealthState.NONE:
            return f"Backups: NONE taken yet · {schedule}"
        if self.state is HealthState.FAILED and self.last is not None:
            return f"Backups: LAST FAILED {_utc(self.last.checked_at)}: {self.last.problem} · {schedule}"
        assert self.last_verified is not None
        verified = f"last verified {_utc(self.last_verified.taken_at)} ({self.last_verified.bytes:,} bytes)"
        if self.state is HealthState.STALE:
            return f"Backups: OVERDUE, {verified}, over {STALE_AFTER_MS // HOUR_MS} h ago · {schedule}"
        return f"Backups: ok, {verified} · {schedule}"


def backup_health(checks: Iterable[BackupCheck], now: int, folder: str | None = None, policy: str | None = None) -> BackupHealth:
    """The health of the backups given every recorded check: FAILED when the newest run failed,
    STALE when the newest verified one was taken more than STALE_AFTER_MS before `now`."""
    ordered = sorted(checks, key=lambda c: (c.checked_at, c.taken_at))
    last = ordered[-1] if ordered else None
    verified = [c for c in ordered if c.ok]
    last_verified = verified[-1] if verified else None
    if last is None:
        state = HealthState.NONE
    elif not last.ok:
        state = HealthState.FAILED
    elif last_verified is None or now - last_verified.taken_at > STALE_AFTER_MS:
        state = HealthState.STALE
    else:
        state = HealthState.OK
    return BackupHealth(state, last, last_verified, folder, policy)


def _utc(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ms // 1000))

"""How much of what imports refused the node keeps. Rejected bundles are copied into
`<home>/quarantine/` for whoever looks into an incident; a stick of junk must not fill the home
with them. The quarantine holds at most `max_files` bundles and `max_bytes` bytes (bundles and
their reason files): to keep a new one, the oldest go first; a bundle larger than the whole quota
is not kept at all. Every bundle dropped either way is named, with its size and why, in the
import's report and the audit log (the audit log keeps every rejection's digest regardless).

On disk (`keep`) the quarantine is a folder (0o700) holding each bundle under its stick name
and its reason in `<name>.reason.txt`; `plan` is the quota's policy, which the in-memory
courier medium applies too."""

from __future__ import annotations

import itertools
import os
import re
import stat
from collections.abc import Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from appliance.files import owned as _owned
from sync.errors import StickError
from sync.fs import DIR_FLAGS, TEMP_PREFIX, fsync_dir, shown, stick_error, unlink_quietly, write_temp

MiB = 1024 * 1024
DEFAULT_MAX_BYTES = 64 * MiB
DEFAULT_MAX_FILES = 200
REASON_SUFFIX = ".reason.txt"

_MAX_ENTRIES = 10_000  # folder entries looked at
_MAX_COPIES = 10_000
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")


@dataclass(frozen=True)
class QuarantineQuota:
    max_bytes: int = DEFAULT_MAX_BYTES
    max_files: int = DEFAULT_MAX_FILES

    def __post_init__(self) -> None:
        if self.max_bytes < 0 or self.max_files < 0:
            raise ValueError("a quarantine quota is not negative")


@dataclass(frozen=True)
class KeptFile:
    """A bundle in the quarantine: its name, its bytes with its reason file's, when it came."""

    name: str
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class DroppedFile:
    """A rejected bundle the quarantine does not keep (any more), and why."""

    name: str
    size: int
    reason: str

    def as_json(self) -> dict[str, object]:
        return {"name": self.name, "bytes": self.size, "reason": self.reason}


@dataclass(frozen=True)
class Quarantined:
    """Where a rejected bundle's copy is (None: not kept), and what was dropped for it or instead."""

    path: Path | None
    dropped: tuple[DroppedFile, ...]


@dataclass(frozen=True)
class QuarantinePlan:
    evict: tuple[KeptFile, ...]  # to remove before the new bundle is kept
    refused: DroppedFile | None  # the new bundle itself, when it is not kept


def plan(kept: Sequence[KeptFile], name: str, size: int, quota: QuarantineQuota) -> QuarantinePlan:
    """What keeping the bundle `name` of `size` bytes (its reason file included) costs: the oldest
    bundles to drop, or the new one refused when even an empty quarantine could not hold it."""
    if size > quota.max_bytes or quota.max_files == 0:
        return QuarantinePlan((), DroppedFile(name, size, f"not kept: {size:,} bytes, over the quarantine's quota of {quota.max_bytes:,} bytes"))
    oldest_first = sorted(kept, key=lambda f: (f.mtime_ns, f.name))
    total = sum(f.size for f in kept)
    evict: list[KeptFile] = []
    for candidate in oldest_first:
        if len(kept) - len(evict) < quota.max_files and total + size <= quota.max_bytes:
            break
        evict.append(candidate)
        total -= candidate.size
    return QuarantinePlan(tuple(evict), None)


def eviction_reason(quota: QuarantineQuota) -> str:
    return f"removed, oldest first, to keep the quarantine within {quota.max_files:,} bundles and {quota.max_bytes:,} bytes"


def check_name(name: str) -> None:
    """Refuses a name that is not a safe file name in the quarantine (a caller's mistake)."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"not a safe file name for the quarantine: {name!r}")


def reason_bytes(reason: str) -> bytes:
    """The reason file's content: the reason, ending in one newline."""
    return (reason if reason.endswith("\n") else reason + "\n").encode()


def keep(data: bytes, quarantine_dir: Path, name: str, reason: str, quota: QuarantineQuota) -> Quarantined:
    """Keeps a rejected bundle's bytes in `quarantine_dir` (created 0o700) with `<name>.reason.txt`
    beside it, within `quota` (the oldest go first, one over the quota is not kept); never
    overwrites an earlier one (adds -1, -2, ... before the suffix). Blocking."""
    check_name(name)
    reason_data = reason_bytes(reason)
    try:
        quarantine_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        with _owned(os.open(quarantine_dir, DIR_FLAGS | os.O_NOFOLLOW)) as dir_fd:
            decided = plan(_kept(dir_fd), name, len(data) + len(reason_data), quota)
            if decided.refused is not None:
                return Quarantined(None, (decided.refused,))
            data_temp = write_temp(dir_fd, data, 0o600)
            try:
                reason_temp = write_temp(dir_fd, reason_data, 0o600)
                try:
                    for old in decided.evict:  # only once the new copy is written: it is kept for sure
                        unlink_quietly(old.name + REASON_SUFFIX, dir_fd)
                        unlink_quietly(old.name, dir_fd)
                    stored = _link_unused_name(dir_fd, data_temp, reason_temp, name)
                finally:
                    unlink_quietly(reason_temp, dir_fd)
            finally:
                unlink_quietly(data_temp, dir_fd)
            fsync_dir(dir_fd)
    except OSError as exc:
        raise stick_error(exc, f"cannot quarantine {name} in {shown(quarantine_dir)}", medium="disk") from exc
    evicted = eviction_reason(quota)
    return Quarantined(quarantine_dir / stored, tuple(DroppedFile(f.name, f.size, evicted) for f in decided.evict))


@dataclass(frozen=True)
class QuarantinedBundle:
    """A bundle in the quarantine as an operator reads it: name, size, when, and its reason."""

    name: str
    size: int
    mtime_ns: int
    reason: str


@dataclass(frozen=True)
class QuarantineListing:
    bundles: tuple[QuarantinedBundle, ...]  # newest first, at most the `limit` asked for
    total: int  # every bundle in the quarantine


def listing(quarantine_dir: Path, *, limit: int, max_reason_bytes: int = 2048) -> QuarantineListing:
    """The quarantined bundles, newest first, each with the reason its import gave (blocking I/O;
    a quarantine not made yet is empty). Raises StickError when the folder cannot be read."""
    try:
        dir_fd = os.open(quarantine_dir, DIR_FLAGS)
    except FileNotFoundError:  # made on the first rejection
        return QuarantineListing((), 0)
    except OSError as exc:
        raise stick_error(exc, "reading the quarantine", medium="quarantine") from exc
    try:
        found, _ = _entries(dir_fd)
        newest = sorted(found.items(), key=lambda item: item[1].st_mtime_ns, reverse=True)
        bundles = tuple(QuarantinedBundle(name, info.st_size, info.st_mtime_ns, _reason(dir_fd, name, max_reason_bytes)) for name, info in newest[:limit])
    finally:
        os.close(dir_fd)
    return QuarantineListing(bundles, len(found))


def _reason(dir_fd: int, name: str, max_bytes: int) -> str:
    try:
        fd = os.open(name + REASON_SUFFIX, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
    except OSError:
        return "(no reason recorded)"
    try:
        return os.read(fd, max_bytes).decode("utf-8", "replace").strip() if stat.S_ISREG(os.fstat(fd).st_mode) else "(no reason recorded)"
    except OSError:
        return "(no reason recorded)"
    finally:
        os.close(fd)


def _kept(dir_fd: int) -> list[KeptFile]:
    """The bundles in the quarantine, each with its reason file's size (what the quota counts)."""
    bundles, reasons = _entries(dir_fd)
    return [KeptFile(name, info.st_size + reasons.get(name, 0), info.st_mtime_ns) for name, info in bundles.items()]


def _entries(dir_fd: int) -> tuple[dict[str, os.stat_result], dict[str, int]]:
    """The bundles in the quarantine (up to _MAX_ENTRIES entries looked at), and the size of
    each reason file by its bundle's name."""
    bundles: dict[str, os.stat_result] = {}
    reasons: dict[str, int] = {}
    with os.scandir(dir_fd) as entries:
        for entry in itertools.islice(entries, _MAX_ENTRIES):
            with suppress(OSError):
                info = entry.stat(follow_symlinks=False)
                if not stat.S_ISREG(info.st_mode) or entry.name.startswith(TEMP_PREFIX):
                    continue
                if entry.name.endswith(REASON_SUFFIX):
                    reasons[entry.name.removesuffix(REASON_SUFFIX)] = info.st_size
                else:
                    bundles[entry.name] = info
    return bundles, reasons


def unused_names(name: str) -> Iterator[str]:
    """The names a copy of `name` may take, in order: `name`, `stem-1.suffix`, ..."""
    stem, suffix = Path(name).stem, Path(name).suffix
    for copy in range(_MAX_COPIES):
        yield name if copy == 0 else f"{stem}-{copy}{suffix}"


def too_many_copies(name: str) -> StickError:
    return StickError(f"cannot quarantine {name}: {_MAX_COPIES:,} files of that name are already there")


def _link_unused_name(dir_fd: int, data_temp: str, reason_temp: str, name: str) -> str:
    """Hard-links the two temporary files to the first free name of `unused_names` and its
    reason file; a hard link never replaces an existing name, so nothing is overwritten."""
    for candidate in unused_names(name):
        try:
            os.link(data_temp, candidate, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except FileExistsError:
            continue
        try:
            os.link(reason_temp, candidate + REASON_SUFFIX, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except FileExistsError:
            os.unlink(candidate, dir_fd=dir_fd)
            continue
        return candidate
    raise too_many_copies(name)

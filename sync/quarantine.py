"""How much of what imports refused the node keeps. Rejected bundles are copied into
`<home>/quarantine/` for whoever looks into an incident; a stick of junk must not fill the home
with them. The quarantine holds at most `max_files` bundles and `max_bytes` bytes (bundles and
their reason files): to keep a new one, the oldest go first; a bundle larger than the whole quota
is not kept at all. Every bundle dropped either way is named, with its size and why, in the
import's report and the audit log (the audit log keeps every rejection's digest regardless)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

MiB = 1024 * 1024
DEFAULT_MAX_BYTES = 64 * MiB
DEFAULT_MAX_FILES = 200


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

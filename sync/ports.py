"""The ports sync/ runs against, so that the real edge (a stick's file system) and its in-memory
twin are interchangeable. `Medium` is what carries bundles between nodes by hand: the courier
stick (sync.stick.StickMedium) or memory (sync.memory_medium.MemoryMedium); sync.sneakernet's
export and import use nothing else."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from sync.quarantine import Quarantined, QuarantineQuota


@dataclass(frozen=True)
class StickFile:
    """A candidate bundle file found by a scan: a regular file with a bundle file name, within the
    size limit when it was scanned. Its content is not authenticated until the bundle is opened."""

    path: Path
    name: str
    outbox: str  # "bundles", "to-<NODEID>" or "broadcast"
    size: int


@dataclass(frozen=True)
class StickProblem:
    """Something on the medium that was skipped, and why. `path` is printable: control
    characters, bidi controls, undecodable bytes and backslashes are escaped."""

    path: str
    reason: str


@dataclass(frozen=True)
class StickScan:
    files: tuple[StickFile, ...]  # sorted by name
    problems: tuple[StickProblem, ...]


class Medium(Protocol):
    """A courier medium laid out as docs/bundle-format.md ("Stick layout") says, read as hostile
    ground: anyone may have prepared it. Failures of the medium raise sync.errors.StickError
    with a one-line message; a caller's mistake (a name that is not a bundle file name, an
    outbox that does not exist in the layout) raises ValueError."""

    async def scan(self, outboxes: Sequence[str], *, max_file_bytes: int) -> StickScan:
        """The candidate bundle files in the named outboxes, and what was skipped (junk is a
        problem, never an error). A missing layout or outbox is an empty scan."""
        ...

    async def read(self, file: StickFile, *, max_file_bytes: int) -> bytes:
        """The bytes of a file the scan found; refused if it changed kind or grew past the limit."""
        ...

    async def read_head(self, file: StickFile, size: int) -> bytes:
        """The first `size` bytes of a file the scan found (all of it if shorter)."""
        ...

    async def write(self, outbox: str, name: str, data: bytes) -> Path:
        """Writes a bundle atomically: a reader sees the old file or the whole new one under
        `name`, never part of one. Creates the layout if missing; returns the file's path."""
        ...

    async def remove(self, file: StickFile) -> None:
        """Deletes a file the scan found; one already gone is fine."""
        ...

    async def remove_own_older(self, outbox: str, is_own: Callable[[str], bool], keep: Collection[str]) -> int:
        """Deletes the bundle files in `outbox` that `is_own` claims, except those named in
        `keep`; returns how many."""
        ...

    async def quarantine(self, data: bytes, name: str, reason: str, quota: QuarantineQuota = QuarantineQuota()) -> Quarantined:
        """Keeps a rejected bundle's bytes with its reason, within `quota` (sync.quarantine),
        never overwriting an earlier copy; says where the copy is and what was dropped."""
        ...

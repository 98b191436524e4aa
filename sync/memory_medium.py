"""A courier medium held in memory: the stick's twin, for tests and for whatever runs sneakernet
without a file system. It follows the stick's layout, names and messages (sync.stick) and the
quarantine's quota (sync.quarantine), and tests/contracts/test_medium.py holds it to the same
contract as the real stick. A write replaces a file's bytes in one step, so a reader sees the
old file or the whole new one; `place` puts anything on it, as anyone preparing a stick could."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Collection, Sequence
from pathlib import Path

from sync import quarantine, stick
from sync.errors import StickError
from sync.fs import shown
from sync.ports import StickFile, StickProblem, StickScan
from sync.quarantine import DroppedFile, KeptFile, Quarantined, QuarantineQuota


class MemoryMedium:
    """A stick in memory, shown under the made-up folder `root`; its quarantine is in memory too."""

    def __init__(self, root: Path = Path("/memory-stick")) -> None:
        self.root = root
        self.quarantine_dir = root / "quarantine"
        self._files: dict[tuple[str, str], bytes] = {}  # (outbox, name) -> bytes
        self._format: bytes | None = None  # rallypoint/FORMAT, when there is one
        self._kept: dict[str, tuple[bytes, str, int]] = {}  # quarantined name -> bytes, reason, arrival
        self._arrivals = itertools.count()

    def place(self, outbox: str, name: str, data: bytes) -> None:
        """Puts a file on the medium unchecked (any folder, any name)."""
        self._files[(outbox, name)] = bytes(data)

    def place_format(self, content: bytes) -> None:
        """Puts a FORMAT file of any content on the medium."""
        self._format = bytes(content)

    def kept(self, name: str) -> tuple[bytes, str]:
        """A quarantined bundle's bytes and its reason file's text."""
        data, reason, _ = self._kept[name]
        return data, reason

    async def scan(self, outboxes: Sequence[str], *, max_file_bytes: int) -> StickScan:
        for outbox in outboxes:
            stick.check_outbox(outbox)
        stick_path = self.root / stick.STICK_DIR
        problems: list[StickProblem] = []
        format_problem = None if self._format is None else stick.format_line_problem(self._format)
        if format_problem is not None:
            problems.append(StickProblem(shown(stick_path / stick.FORMAT_FILE), format_problem))
        files: list[StickFile] = []
        for outbox in dict.fromkeys(outboxes):
            listed = unlisted = 0
            names = sorted(name for folder, name in self._files if folder == outbox)
            for name in names[: stick.MAX_ENTRIES]:
                problem = stick.file_problem(outbox, name, len(self._files[(outbox, name)]), max_file_bytes)
                if problem is None:
                    files.append(StickFile(stick_path / outbox / name, name, outbox, len(self._files[(outbox, name)])))
                elif listed < stick.MAX_LISTED_PROBLEMS:
                    problems.append(StickProblem(shown(stick_path / outbox / name), problem))
                    listed += 1
                else:
                    unlisted += 1
            if unlisted:
                problems.append(StickProblem(shown(stick_path / outbox), f"{unlisted:,} further entries skipped, not listed one by one"))
            if len(names) > stick.MAX_ENTRIES:
                problems.append(StickProblem(shown(stick_path / outbox), f"{len(names) - stick.MAX_ENTRIES:,} further entries not examined (a folder is read up to {stick.MAX_ENTRIES:,} entries)"))
        files.sort(key=lambda file: (file.name, file.outbox))
        return StickScan(tuple(files), tuple(problems))

    async def read(self, file: StickFile, *, max_file_bytes: int) -> bytes:
        data = self._data(file)
        if len(data) > max_file_bytes:
            raise StickError(f"cannot read {shown(file.path)}: it is {len(data):,} bytes now, over the limit of {max_file_bytes:,}")
        return data

    async def read_head(self, file: StickFile, size: int) -> bytes:
        return self._data(file)[:size]

    async def write(self, outbox: str, name: str, data: bytes) -> Path:
        stick.check_outbox(outbox)
        if not stick.is_bundle_file_name(outbox, name):
            raise ValueError(f"not a bundle file name: {name!r}")
        problem = None if self._format is None else stick.format_line_problem(self._format)
        if problem is not None:
            raise StickError(f"not writing to {shown(self.root / stick.STICK_DIR)}: its {stick.FORMAT_FILE} {problem}")
        self._format = f"{stick.FORMAT_LINE}\n".encode()
        self._files[(outbox, name)] = bytes(data)
        return self.root / stick.STICK_DIR / outbox / name

    async def remove(self, file: StickFile) -> None:
        self._check(file)
        self._files.pop((file.outbox, file.name), None)

    async def remove_own_older(self, outbox: str, is_own: Callable[[str], bool], keep: Collection[str]) -> int:
        stick.check_outbox(outbox)
        names = [name for folder, name in self._files if folder == outbox][: stick.MAX_ENTRIES]
        doomed = [name for name in names if stick.is_bundle_file_name(outbox, name) and is_own(name) and name not in keep]
        for name in doomed:
            del self._files[(outbox, name)]
        return len(doomed)

    async def quarantine(self, data: bytes, name: str, reason: str, quota: QuarantineQuota = QuarantineQuota()) -> Quarantined:
        quarantine.check_name(name)
        reason_text = quarantine.reason_bytes(reason).decode()
        kept = [KeptFile(old, len(old_data) + len(old_reason.encode()), arrival) for old, (old_data, old_reason, arrival) in self._kept.items()]
        decided = quarantine.plan(kept, name, len(data) + len(reason_text.encode()), quota)
        if decided.refused is not None:
            return Quarantined(None, (decided.refused,))
        for old in decided.evict:
            del self._kept[old.name]
        stored = next((candidate for candidate in quarantine.unused_names(name) if candidate not in self._kept), None)
        if stored is None:
            raise quarantine.too_many_copies(name)
        self._kept[stored] = (bytes(data), reason_text, next(self._arrivals))
        evicted = quarantine.eviction_reason(quota)
        return Quarantined(self.quarantine_dir / stored, tuple(DroppedFile(f.name, f.size, evicted) for f in decided.evict))

    def _check(self, file: StickFile) -> None:
        """Refuses a StickFile that no scan of this medium could have given (a caller's mistake)."""
        if file.path != self.root / stick.STICK_DIR / file.outbox / file.name:
            raise ValueError(f"not a file on the medium at {self.root}: {file.path}")

    def _data(self, file: StickFile) -> bytes:
        self._check(file)
        data = self._files.get((file.outbox, file.name))
        if data is None:
            raise StickError(f"cannot read {shown(file.path)}: No such file or directory")
        return data

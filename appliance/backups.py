"""The files a backup run writes beside the finished backup, and removing what an interrupted run
left. A run copies the store into `.<backup name>.partial` (mode 0600, created by us so no umask
widens it), and SQLite keeps a `-journal` beside it while it writes; both go when the run ends,
however it ends, except when the process is killed. The next run in that folder then removes them:
every file whose name is one of these (never anything else), unless a running backup holds it."""

from __future__ import annotations

import fcntl
import os
import re
import stat
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from appliance import files

# The names of a run's own files: `.rallypoint-<NODE ID>-<UTC time>.backup.db.partial` and the
# files SQLite may keep beside a database it writes.
_DEBRIS = re.compile(r"(?P<partial>\.rallypoint-[A-Z2-7]{7}-[A-Z2-7]{7}-[A-Z2-7]{7}-[0-9]{8}T[0-9]{6}Z\.backup\.db\.partial)(-journal|-wal|-shm)?")
_MAX_EXAMINED = 10_000  # folder entries looked at for debris: a huge folder costs bounded time


@dataclass(frozen=True)
class Debris:
    """What a backup run removed of earlier, interrupted runs."""

    files: int = 0
    bytes: int = 0


def partial_name(name: str) -> str:
    """The partial file a run writes before the backup `name` is finished."""
    return f".{name}.partial"


@contextmanager
def partial_file(path: Path) -> Iterator[Path]:
    """Creates the empty partial file at `path` (0600), holds a lock on it that tells a concurrent
    run's `remove_debris` that it is in use, and removes it and SQLite's journal when the block
    ends, also on an error (a full folder keeps nothing of the run)."""
    path.unlink(missing_ok=True)  # a run of this node in the same second was killed
    fd = files.create_private(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield path
    finally:
        for leftover in (path, path.with_name(path.name + "-journal")):
            with suppress(OSError):
                leftover.unlink()
        os.close(fd)


def remove_debris(directory: Path) -> Debris:
    """Removes the partial files and journals of interrupted backup runs in `directory` (ours or
    another node's: the names say whose), leaving those a running backup holds."""
    removed = size = 0
    with os.scandir(directory) as entries:
        for index, entry in enumerate(entries):
            if index >= _MAX_EXAMINED:
                break
            match = _DEBRIS.fullmatch(entry.name)
            if match is None:
                continue
            with suppress(OSError):
                info = entry.stat(follow_symlinks=False)
                if stat.S_ISREG(info.st_mode) and not _in_use(directory / match["partial"]):
                    os.unlink(entry.path)
                    removed += 1
                    size += info.st_size
    return Debris(removed, size)


def _in_use(partial: Path) -> bool:
    """Whether a running backup holds the lock on `partial` (a missing one is not in use)."""
    try:
        fd = os.open(partial, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    with files.owned(fd):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
    return False

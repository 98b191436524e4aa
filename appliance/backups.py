"""The files a backup run writes beside the finished backup, and removing what an interrupted run
left. A run copies the store into `.<backup name>.partial` (mode 0600, created by us so no umask
widens it), and SQLite keeps a `-journal` beside it while it writes; both go when the run ends,
however it ends, except when the process is killed. The next run in that folder then removes them:
every file whose name is one of these (never anything else), unless a running backup holds it.

A finished backup has its SHA-256 beside it, `<backup name>.sha256`, in `sha256sum`'s format
(`sha256sum -c` checks it): a restore refuses a backup whose bytes no longer match it. Beside it
too, `<backup name>.key`: the node's key file, without which an encrypted backup does not open.
One of these whose backup never got its name (the run was killed in between) is debris too."""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import stat
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from appliance import files
from appliance.errors import InvalidInput

# The names of a run's own files: `.rallypoint-<NODE ID>-<UTC time>.backup.db.partial` and the
# files SQLite may keep beside a database it writes.
_DEBRIS = re.compile(r"(?P<partial>\.rallypoint-[A-Z2-7]{7}-[A-Z2-7]{7}-[A-Z2-7]{7}-[0-9]{8}T[0-9]{6}Z\.backup\.db\.partial)(-journal|-wal|-shm)?")
# A backup's SHA-256 or key file written by a run killed before the backup got its name (no
# backup beside it), or the key file's own partial file.
_ORPHAN_DIGEST = re.compile(r"\.?(?P<backup>rallypoint-[A-Z2-7]{7}-[A-Z2-7]{7}-[A-Z2-7]{7}-[0-9]{8}T[0-9]{6}Z\.backup\.db)(\.sha256|\.key|\.key\.partial)")
_MAX_EXAMINED = 10_000  # folder entries looked at for debris: a huge folder costs bounded time
DIGEST_SUFFIX = ".sha256"
KEY_SUFFIX = ".key"  # beside each backup: the node's key file (its data key sealed under the passphrase)
_DIGEST_LINE = re.compile(rb"(?P<hex>[0-9a-f]{64}) [ *](?P<name>[^\n]+)\n?")
_MAX_DIGEST_FILE = 4096


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
            orphan = _ORPHAN_DIGEST.fullmatch(entry.name)
            if match is None and orphan is None:
                continue
            partial = match["partial"] if match is not None else partial_name(orphan["backup"]) if orphan is not None else ""
            with suppress(OSError):
                info = entry.stat(follow_symlinks=False)
                if not stat.S_ISREG(info.st_mode) or _in_use(directory / partial):
                    continue
                # A digest's run holds its partial until the backup has its name: once the lock is
                # free, either the backup is there (not debris) or the run died before naming it.
                if orphan is None or entry.name.endswith(".partial") or not os.path.lexists(directory / orphan["backup"]):
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


def backup_key_path(backup: Path) -> Path:
    """The key file a backup is opened with: `<backup>.key`, a copy of node.key taken with it."""
    return backup.with_name(backup.name + KEY_SUFFIX)


def digest_path(backup: Path) -> Path:
    """Where the SHA-256 of the backup at `backup` is kept."""
    return backup.with_name(backup.name + DIGEST_SUFFIX)


def file_digest(path: Path) -> bytes:
    digest = hashlib.sha256()
    with path.open("rb") as reader:
        while chunk := reader.read(files.COPY_CHUNK_BYTES):
            digest.update(chunk)
    return digest.digest()


def digest_line(digest: bytes, name: str) -> bytes:
    """`sha256sum`'s line for the file `name`."""
    return f"{digest.hex()}  {name}\n".encode()


def parse_digest_line(data: bytes, shown: str) -> bytes:
    """The SHA-256 a `.sha256` file's line gives (the name in it is not checked: a backup may be
    renamed); InvalidInput naming `shown` when it is not such a line."""
    match = _DIGEST_LINE.fullmatch(data)
    if match is None:
        raise InvalidInput(f"{shown} is not a SHA-256 line as sha256sum writes it")
    return bytes.fromhex(match["hex"].decode())


def write_digest(backup: Path, digest: bytes) -> Path:
    """Writes the SHA-256 of the backup that is about to get the name `backup` beside it (0600,
    durable); returns its path."""
    sidecar = digest_path(backup)
    sidecar.unlink(missing_ok=True)  # left by a run of this node in the same second that was killed
    fd = files.create_private(sidecar)
    with files.owned(fd):
        os.write(fd, digest_line(digest, backup.name))
        os.fsync(fd)
    return sidecar


def recorded_digest(backup: Path) -> bytes | None:
    """The SHA-256 recorded beside the backup at `backup` when it was taken; None when there is no
    record (a backup from before they were written, or copied without it)."""
    sidecar = digest_path(backup)
    try:
        fd, _ = files.open_regular(sidecar)
    except FileNotFoundError:
        return None
    with files.owned(fd):
        data = files.read_at_most(fd, _MAX_DIGEST_FILE, sidecar.name)
    return parse_digest_line(data, sidecar.name)

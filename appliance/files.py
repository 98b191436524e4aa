"""Opening files that someone else may have prepared: an enrollment file, a backup, a bundle, a
file on a courier stick. Only a regular file is read. A named pipe would block the reader
forever, a device may do anything when opened, a folder or socket is no file at all: each is
refused with a one-line reason, and a file's size is capped before it is read."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from appliance.errors import InvalidInput

# O_NONBLOCK: opening a named pipe swapped in after the check returns at once instead of
# waiting for a writer, and its read returns at once too; a regular file ignores the flag.
_READ_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC
_READ_CHUNK_BYTES = 1024 * 1024
COPY_CHUNK_BYTES = 1024 * 1024
# A new file only its owner can read, whatever the umask; never through a link.
_CREATE_PRIVATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC

_KINDS: tuple[tuple[Callable[[int], bool], str], ...] = (
    (stat.S_ISLNK, "a symbolic link"),
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISREG, "a regular file"),
    (stat.S_ISFIFO, "a named pipe"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a device file"),
    (stat.S_ISBLK, "a device file"),
)


class NotARegularFile(InvalidInput):
    """Something other than a regular file where one was to be read."""

    def __init__(self, shown: str, mode: int) -> None:
        super().__init__(f"{shown} is {file_kind(mode)}, not a regular file")
        self.mode = mode


class FileTooLarge(InvalidInput):
    """A file over the size its reader accepts (or one that grew past it while being read)."""


def file_kind(mode: int) -> str:
    """"a named pipe", "a folder", ...: what a stat mode says a directory entry is."""
    return next((noun for is_kind, noun in _KINDS if is_kind(mode)), "an unknown kind of file")


@contextmanager
def owned(fd: int) -> Iterator[int]:
    """Closes a descriptor when the block ends."""
    try:
        yield fd
    finally:
        os.close(fd)


def open_regular(path: str | Path, *, dir_fd: int | None = None, follow_symlinks: bool = True) -> tuple[int, os.stat_result]:
    """Opens a regular file for reading; anything else raises NotARegularFile (OSError as is).
    Checked before opening (opening a device can have effects) and on the opened descriptor
    after (the name may have been swapped in between). With `follow_symlinks` a link to a regular
    file is read; without it a link is refused too."""
    shown = os.fsdecode(path)
    mode = (os.stat if follow_symlinks else os.lstat)(path, dir_fd=dir_fd).st_mode
    if not stat.S_ISREG(mode):
        raise NotARegularFile(shown, mode)
    try:
        fd = os.open(path, _READ_FLAGS | (0 if follow_symlinks else os.O_NOFOLLOW), dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP and not follow_symlinks:
            raise NotARegularFile(shown, stat.S_IFLNK) from exc
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise NotARegularFile(shown, info.st_mode)
    except BaseException:
        os.close(fd)
        raise
    return fd, info


def create_private(path: Path) -> int:
    """Creates the new file `path` with mode 0600 (the umask cannot widen or narrow it) and returns
    a descriptor open for writing; an existing name raises FileExistsError."""
    fd = os.open(path, _CREATE_PRIVATE_FLAGS, 0o600)
    try:
        os.fchmod(fd, 0o600)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_at_most(fd: int, max_bytes: int, shown: str) -> bytes:
    """Reads to the end, refusing a file that grows past `max_bytes` while it is read."""
    chunks: list[bytes] = []
    total = 0
    while chunk := os.read(fd, min(_READ_CHUNK_BYTES, max_bytes + 1 - total)):
        chunks.append(chunk)
        total += len(chunk)
        if total > max_bytes:
            raise FileTooLarge(f"{shown}: it grew past the limit of {max_bytes:,} bytes while being read")
    return b"".join(chunks)


def read_regular_file(path: Path, max_bytes: int) -> bytes:
    """The bytes of the regular file at `path` (a link to one is followed), at most `max_bytes`.
    Raises InvalidInput (NotARegularFile, FileTooLarge) or OSError."""
    fd, info = open_regular(path)
    with owned(fd):
        if info.st_size > max_bytes:
            raise FileTooLarge(f"{path}: it is {info.st_size:,} bytes, over the limit of {max_bytes:,}")
        return read_at_most(fd, max_bytes, str(path))


def fsync_path(path: Path) -> None:
    """Flushes the file or folder at `path` to disk (a folder: the names just made or renamed in it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

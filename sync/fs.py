"""File-system primitives the courier stick and the node's quarantine folder share: durable
writes that a crash or a pulled stick never leaves half done, and paths and OSErrors turned
into one-line messages a person can act on."""

from __future__ import annotations

import errno
import os
import secrets
from contextlib import suppress

from appliance.files import owned as _owned
from sync.errors import StickError

TEMP_PREFIX = ".tmp-"
TEMP_SUFFIX = ".rpb"  # a temporary file is named like a bundle file, so scans can tell it apart

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC

# Shown paths: C0/C1 controls, bidi and line-separator characters, undecodable bytes (which
# surrogateescape turns into U+DC80..U+DCFF) and the backslash itself become escapes.
_ESCAPES: dict[int, str] = (
    {code: f"\\x{code:02x}" for code in (*range(0x20), *range(0x7F, 0xA0))}
    | {code: f"\\u{code:04x}" for code in (0x200E, 0x200F, 0x2028, 0x2029, *range(0x202A, 0x202F), *range(0x2066, 0x206A))}
    | {0xDC00 + byte: f"\\x{byte:02x}" for byte in range(0x80, 0x100)}
    | {ord("\\"): "\\\\"}
)


def write_replace(dir_fd: int, name: str, data: bytes, mode: int) -> None:
    """Temp file, fsync, rename, fsync the folder: a crash or a pulled stick leaves the old file or
    the new one under `name`, never part of one."""
    temp = write_temp(dir_fd, data, mode)
    try:
        os.replace(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        unlink_quietly(temp, dir_fd)
        raise
    fsync_dir(dir_fd)


def write_temp(dir_fd: int, data: bytes, mode: int) -> str:
    """A new, fsynced temporary file holding `data`; returns its name. Removed again on failure."""
    temp = f"{TEMP_PREFIX}{secrets.token_hex(8)}{TEMP_SUFFIX}"
    fd = os.open(temp, _CREATE_FLAGS, mode, dir_fd=dir_fd)
    try:
        with _owned(fd):
            _write_all(fd, data)
            os.fsync(fd)
    except BaseException:
        unlink_quietly(temp, dir_fd)
        raise
    return temp


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:  # a broken file system; without this check the loop would never end
            raise OSError(errno.EIO, "the write made no progress")
        view = view[written:]


def fsync_dir(dir_fd: int) -> None:
    """Makes new entries and renames durable; some file systems cannot sync a folder and say so."""
    try:
        os.fsync(dir_fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise


def unlink_quietly(name: str, dir_fd: int) -> None:
    with suppress(OSError):
        os.unlink(name, dir_fd=dir_fd)


def shown(path: str | bytes | os.PathLike[str]) -> str:
    """A path made printable on one line: see _ESCAPES."""
    return os.fsencode(path).decode("utf-8", "surrogateescape").translate(_ESCAPES)


def stick_error(exc: OSError, doing: str, *, medium: str = "stick") -> StickError:
    """The one-line message for an OSError, leading with what the user can act on."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StickError(f"{medium} is full: {doing}")
    if exc.errno == errno.EROFS:
        return StickError(f"{medium} is read-only: {doing}")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return StickError(f"permission denied: {doing}")
    if exc.errno == errno.EIO:
        return StickError(f"input/output error (is the {medium} damaged or unplugged?): {doing}")
    return StickError(f"{doing}: {exc.strerror or type(exc).__name__}")


"""Files the console and the command line write for the user (saved attachments, enrollment
files, exported documents) and text files they read for the user (terms of service)."""

from __future__ import annotations

import os
import sys
import tempfile
import unicodedata
from pathlib import Path

from tui.errors import UnreadableFile


def write_atomically(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Temp file, fsync, rename: a crash leaves the old file or the new one, never half."""
    path = path.expanduser()
    directory = path.parent if str(path.parent) else Path(".")
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, mode)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def safe_file_name(name: str, fallback: str) -> str:
    """A name from the network made safe to create in a folder the user chose: no directories,
    no control characters, never "." or ".." (then `fallback`)."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = "".join(ch for ch in base if unicodedata.category(ch)[0] != "C").strip()
    return cleaned if cleaned not in ("", ".", "..") else fallback


def free_path(folder: Path, name: str) -> Path:
    """`folder/name`, or `name (2)`, `name (3)`... if that exists: saving never overwrites."""
    candidate = folder / name
    stem, suffix = os.path.splitext(name)
    number = 2
    while candidate.exists():
        candidate = folder / f"{stem} ({number}){suffix}"
        number += 1
    return candidate


def read_text(path: Path, max_bytes: int, what: str) -> str:
    """The UTF-8 text of `path` ("-": standard input), at most `max_bytes`, else UnreadableFile
    naming the file and `what` it should hold."""
    try:
        if str(path) == "-":
            data = sys.stdin.buffer.read(max_bytes + 1)
        else:
            with path.expanduser().open("rb") as handle:
                data = handle.read(max_bytes + 1)
    except OSError as exc:
        raise UnreadableFile(f"cannot read {path}: {exc.strerror or exc}") from exc
    if len(data) > max_bytes:
        raise UnreadableFile(f"{path} is over {max_bytes:,} bytes: {what} are at most {max_bytes // 1024} KiB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UnreadableFile(f"{path} is not UTF-8 text (byte {exc.start})") from exc


KITS_FOLDER = "recovery-kits"  # in the admin's node's home: the kits of the nodes it enrolled


def enrollment_kit_path(home: Path, node_name: str, node_id: str) -> Path:
    """Where `invite` keeps a new node's recovery kit unless told otherwise: on the admin's own
    node, never beside the enrollment file - that stick travels with the node, and a kit lost
    with the node it should bring back is no kit. Named by the node and its id's first group (two
    invitations of one name never overwrite each other's kit)."""
    return home / KITS_FOLDER / f"{node_name}-{node_id.split('-')[0]}.kit"


def write_kit(path: Path, data: bytes) -> None:
    """A recovery kit, 0600; a missing folder of the default place is made 0700."""
    path = path.expanduser()
    if path.parent.name == KITS_FOLDER and not path.parent.exists():
        path.parent.mkdir(mode=0o700)
    write_atomically(path, data)

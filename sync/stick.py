"""The file-system edge of sneakernet: the folder layout on a courier stick, scanning and reading
it as hostile ground, and writing bundles so that a pulled stick never holds half a file.
docs/bundle-format.md ("Stick layout") specifies the layout:

    <root>/rallypoint/FORMAT          "rallypoint-stick/1\\n"
    <root>/rallypoint/bundles/        every bundle this release writes, under names that say
                                      nothing (each node tries them all: format 2 bundles
                                      name neither sender nor recipients)
    <root>/rallypoint/to-<NODEID>/    bundles an earlier release addressed to that node only
    <root>/rallypoint/broadcast/      bundles an earlier release addressed to several nodes

Anyone may have prepared a stick. Below the folder the user names (`root`), nothing is ever
followed: each folder is opened relative to its parent's descriptor with O_NOFOLLOW, so a link
swapped in between a scan and a read is refused, not followed. Only regular files whose names
match the bundle file pattern exactly are offered; everything else is skipped and reported as a
`StickProblem` whose path has control characters and undecodable bytes escaped. A scan examines
at most MAX_ENTRIES entries and lists at most MAX_LISTED_PROBLEMS problems per folder, so a stick
stuffed with junk costs bounded time and memory. Every OSError becomes a `StickError` with a
one-line message. `StickMedium` is the stick as a `sync.ports.Medium`: its methods are async and
do their blocking work in a thread; rejected bundles go to the node's quarantine folder."""

from __future__ import annotations

import asyncio
import errno
import itertools
import os
import re
import stat
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from appliance.errors import InvalidInput
from appliance.files import FileTooLarge, NotARegularFile, file_kind, open_regular, read_at_most
from appliance.files import owned as _owned
from appliance.ids import normalise_key_id
from sync import quarantine
from sync.bundle import ID_BYTES, MAX_CREATED_AT
from sync.errors import StickError
from sync.fs import DIR_FLAGS as _DIR_FLAGS
from sync.fs import TEMP_PREFIX as TEMP_PREFIX
from sync.fs import fsync_dir as _fsync_dir
from sync.fs import shown as _shown
from sync.fs import stick_error as _stick_error
from sync.fs import write_replace as _write_replace
from sync.ports import StickFile as StickFile
from sync.ports import StickProblem as StickProblem
from sync.ports import StickScan as StickScan
from sync.quarantine import REASON_SUFFIX as REASON_SUFFIX
from sync.quarantine import Quarantined, QuarantineQuota

STICK_DIR = "rallypoint"
BROADCAST = "broadcast"
BUNDLES = "bundles"
BUNDLE_FOLDER = f"{STICK_DIR}/{BUNDLES}"  # where bundles go on a stick, as shown to operators
FORMAT_FILE = "FORMAT"
FORMAT_LINE = "rallypoint-stick/1"
OUTBOX_PREFIX = "to-"
BUNDLE_SUFFIX = ".rpb"

MAX_ENTRIES = 10_000  # directory entries examined per folder before giving up on the rest (reported once)
MAX_LISTED_PROBLEMS = 100  # skipped entries reported one by one per folder; the rest in one summary line
STALE_TEMP_SECONDS = 3600  # a writer's temporary file this old was left by a crash or a pulled stick

_MAX_COUNTED_ENTRIES = 100 * MAX_ENTRIES  # counting what was not examined stays bounded too
_MAX_FORMAT_BYTES = 256
_MAX_SHOWN_FORMAT_BYTES = 64

_NODE_ID = r"[A-Z2-7]{7}-[A-Z2-7]{7}-[A-Z2-7]{7}"  # appliance.ids.key_id: 21 base32 characters in groups of 7
_NODE_ID_PATTERN = re.compile(_NODE_ID)
_BUNDLE_FILE_NAME = re.compile(rf"(?P<sender>{_NODE_ID})-(?P<created_at>[0-9]{{13,19}})-(?P<bundle_id>[0-9a-f]{{32}})\.rpb")
_ANONYMOUS_NAME = re.compile(r"[0-9a-f]{32}\.rpb")  # in bundles/: 16 bytes that name no one, in hex

@dataclass(frozen=True)
class BundleFileName:
    """What a bundle file's name says. Not authenticated: the bundle's signed header decides."""

    sender_id: str
    created_at_ms: int
    bundle_id: bytes


class _WrongKind(Exception):
    """Something other than the folder or regular file that belongs at `name`."""

    def __init__(self, name: str, mode: int, wanted: str) -> None:
        reason = f"is {file_kind(mode)}, not {wanted}"
        super().__init__(f"{reason}; links are not followed" if stat.S_ISLNK(mode) else reason)
        self.name = name


def outbox_name(node_id: str) -> str:
    """The outbox folder for bundles addressed to `node_id` alone."""
    if not _is_node_id(node_id):
        raise ValueError(f"not a node id: {node_id!r}")
    return OUTBOX_PREFIX + node_id


def bundle_file_name(sender_id: str, created_at_ms: int, bundle_id: bytes) -> str:
    """`<SENDERID>-<created_at_ms, at least 13 digits>-<bundle id hex>.rpb`: sorts by sender, then time."""
    if not _is_node_id(sender_id):
        raise ValueError(f"not a node id: {sender_id!r}")
    if not 0 <= created_at_ms <= MAX_CREATED_AT:
        raise ValueError(f"created_at_ms out of range: {created_at_ms}")
    if len(bundle_id) != ID_BYTES:
        raise ValueError(f"a bundle id is {ID_BYTES} bytes, not {len(bundle_id)}")
    return f"{sender_id}-{created_at_ms:013d}-{bundle_id.hex()}{BUNDLE_SUFFIX}"


def anonymous_file_name(name_bytes: bytes) -> str:
    """A file name in bundles/: 16 bytes (the writer's choice; they must say nothing about
    sender or recipients) as 32 lowercase hex digits, then `.rpb`."""
    if len(name_bytes) != 16:
        raise ValueError(f"an anonymous bundle name is 16 bytes, not {len(name_bytes)}")
    return name_bytes.hex() + BUNDLE_SUFFIX


def is_bundle_file_name(outbox: str, name: str) -> bool:
    """Whether `name` is a bundle file's name in `outbox` (anonymous in bundles/, the earlier
    `<SENDERID>-<MS>-<ID>.rpb` elsewhere)."""
    if outbox == BUNDLES:
        return _ANONYMOUS_NAME.fullmatch(name) is not None
    return parse_bundle_file_name(name) is not None


def parse_bundle_file_name(name: str) -> BundleFileName | None:
    """The parts of a bundle file name, or None for any other name (including a node id whose
    check character fails)."""
    match = _BUNDLE_FILE_NAME.fullmatch(name)
    if match is None or not _is_node_id(match["sender"]):
        return None
    created_at_ms = int(match["created_at"])
    if created_at_ms > MAX_CREATED_AT:
        return None
    return BundleFileName(match["sender"], created_at_ms, bytes.fromhex(match["bundle_id"]))


class StickMedium:
    """The courier stick at `root` (the folder the user names) as a `sync.ports.Medium`; rejected
    bundles are quarantined in `quarantine_dir` on the node's own disk."""

    def __init__(self, root: Path, *, quarantine_dir: Path) -> None:
        self.root = Path(root)
        self.quarantine_dir = Path(quarantine_dir)

    async def scan(self, outboxes: Sequence[str], *, max_file_bytes: int) -> StickScan:
        """The candidate bundle files in the named outboxes, and what was skipped. A missing
        rallypoint/ folder or outbox is an empty scan; `root` itself must exist."""
        return await asyncio.to_thread(_scan_blocking, self.root, tuple(outboxes), max_file_bytes)

    async def read(self, file: StickFile, *, max_file_bytes: int) -> bytes:
        """The bytes of a file `scan` found, refusing it if it is no longer a regular file or
        has grown past `max_file_bytes`."""
        return await asyncio.to_thread(_read_blocking, self._found(file), max_file_bytes)

    async def read_head(self, file: StickFile, size: int) -> bytes:
        """The first `size` bytes of a file `scan` found (all of it if shorter), refusing it if
        it is no longer a regular file: enough to tell whether a bundle is for this node."""
        return await asyncio.to_thread(_read_head_blocking, self._found(file), size)

    async def write(self, outbox: str, name: str, data: bytes) -> Path:
        """Writes a bundle into `outbox` atomically, creating rallypoint/, FORMAT and the outbox
        if missing; returns the file's path."""
        return await asyncio.to_thread(_write_blocking, self.root, outbox, name, data)

    async def remove(self, file: StickFile) -> None:
        """Deletes a file `scan` found; one that is already gone is fine."""
        await asyncio.to_thread(_remove_blocking, self._found(file))

    async def remove_own_older(self, outbox: str, is_own: Callable[[str], bool], keep: Collection[str]) -> int:
        """Deletes the bundle files in `outbox` whose names `is_own` claims, other than those
        named in `keep` (an exporter superseding its earlier bundles); returns how many."""
        return await asyncio.to_thread(_remove_own_older_blocking, self.root, outbox, is_own, keep)

    async def quarantine(self, data: bytes, name: str, reason: str, quota: QuarantineQuota = QuarantineQuota()) -> Quarantined:
        """Keeps a rejected bundle in the quarantine folder: see `sync.quarantine.keep`."""
        return await asyncio.to_thread(quarantine.keep, data, self.quarantine_dir, name, reason, quota)

    def _found(self, file: StickFile) -> StickFile:
        """`file`, if a scan of this stick could have found it (a caller's mistake otherwise)."""
        if _root_of(file) != self.root:
            raise ValueError(f"not a file on the stick at {self.root}: {file.path}")
        return file


# --- scanning ---------------------------------------------------------------------------------


def _scan_blocking(root: Path, outboxes: tuple[str, ...], max_file_bytes: int) -> StickScan:
    for outbox in outboxes:
        check_outbox(outbox)
    stick_path = root / STICK_DIR
    try:
        root_fd = os.open(root, _DIR_FLAGS)
    except OSError as exc:
        raise _stick_error(exc, f"cannot open the stick folder {_shown(root)}") from exc
    files: list[StickFile] = []
    problems: list[StickProblem] = []
    with _owned(root_fd):
        try:
            stick_fd = _open_real_dir(STICK_DIR, root_fd)
        except FileNotFoundError:
            return StickScan((), ())
        except (_WrongKind, OSError) as exc:
            return StickScan((), (StickProblem(_shown(stick_path), _reason(exc)),))
        with _owned(stick_fd):
            format_problem = _format_problem(stick_fd)
            if format_problem is not None:
                problems.append(StickProblem(_shown(stick_path / FORMAT_FILE), format_problem))
            for outbox in dict.fromkeys(outboxes):
                outbox_path = stick_path / outbox
                try:
                    outbox_fd = _open_real_dir(outbox, stick_fd)
                except FileNotFoundError:
                    continue
                except (_WrongKind, OSError) as exc:
                    problems.append(StickProblem(_shown(outbox_path), _reason(exc)))
                    continue
                with _owned(outbox_fd):
                    _scan_outbox(outbox_fd, outbox, outbox_path, max_file_bytes, files, problems)
    files.sort(key=lambda file: (file.name, file.outbox))
    return StickScan(tuple(files), tuple(problems))


def _scan_outbox(outbox_fd: int, outbox: str, outbox_path: Path, max_file_bytes: int, files: list[StickFile], problems: list[StickProblem]) -> None:
    """Appends the outbox's candidate files to `files` and what it skipped to `problems`."""
    listed = unlisted = 0
    not_examined: StickProblem | None = None
    try:
        with os.scandir(outbox_fd) as entries:
            for examined, entry in enumerate(entries):
                if examined == MAX_ENTRIES:
                    not_examined = StickProblem(_shown(outbox_path), _not_examined(entries))
                    break
                verdict = _examine(entry, outbox, outbox_path, max_file_bytes)
                if isinstance(verdict, StickFile):
                    files.append(verdict)
                elif verdict is not None and listed < MAX_LISTED_PROBLEMS:
                    problems.append(StickProblem(_shown(outbox_path / entry.name), verdict))
                    listed += 1
                elif verdict is not None:
                    unlisted += 1
    except OSError as exc:
        problems.append(StickProblem(_shown(outbox_path), f"could not be listed to the end: {exc.strerror}"))
    if unlisted:
        problems.append(StickProblem(_shown(outbox_path), f"{unlisted:,} further entries skipped, not listed one by one"))
    if not_examined is not None:
        problems.append(not_examined)


def _not_examined(rest: Iterator[os.DirEntry[str]]) -> str:
    """The summary line for the entry that hit MAX_ENTRIES and those after it (counted, not examined)."""
    count = 1 + sum(1 for _ in itertools.islice(rest, _MAX_COUNTED_ENTRIES))
    amount = f"more than {_MAX_COUNTED_ENTRIES:,}" if count > _MAX_COUNTED_ENTRIES else f"{count:,}"
    return f"{amount} further entries not examined (a folder is read up to {MAX_ENTRIES:,} entries)"


def _examine(entry: os.DirEntry[str], outbox: str, outbox_path: Path, max_file_bytes: int) -> StickFile | str | None:
    """A candidate file, the reason an entry is skipped, or None for one skipped silently."""
    raw_name = os.fsencode(entry.name)
    if raw_name.startswith(TEMP_PREFIX.encode()) and raw_name.endswith(BUNDLE_SUFFIX.encode()):
        return None
    try:
        name = raw_name.decode("utf-8")
    except UnicodeDecodeError:
        return "name is not valid UTF-8"
    try:
        info = entry.stat(follow_symlinks=False)
    except FileNotFoundError:
        return None  # removed while we were scanning
    except OSError as exc:
        return f"cannot be examined: {exc.strerror}"
    if not stat.S_ISREG(info.st_mode):
        return str(_WrongKind(name, info.st_mode, "a regular file"))
    return file_problem(outbox, name, info.st_size, max_file_bytes) or StickFile(outbox_path / name, name, outbox, info.st_size)


def file_problem(outbox: str, name: str, size: int, max_file_bytes: int) -> str | None:
    """Why a regular file in `outbox` is not a candidate bundle file, or None if it is one."""
    if not is_bundle_file_name(outbox, name):
        return "name is not a bundle file name (" + ("32 hex digits" if outbox == BUNDLES else "<SENDERID>-<MILLISECONDS>-<BUNDLE ID>") + ".rpb)"
    if size > max_file_bytes:
        return f"is {size:,} bytes, over the limit of {max_file_bytes:,}"
    return None


def _format_problem(stick_fd: int) -> str | None:
    """Why rallypoint/FORMAT does not name this layout, or None (also when it is missing, as on a
    stick a person laid out by hand)."""
    try:
        fd, _ = _open_regular(FORMAT_FILE, stick_fd)
        with _owned(fd):
            head = os.read(fd, _MAX_FORMAT_BYTES)
    except FileNotFoundError:
        return None
    except (_WrongKind, OSError) as exc:
        return _reason(exc)
    return format_line_problem(head)


def format_line_problem(head: bytes) -> str | None:
    """Why a FORMAT file starting with `head` does not name this layout, or None."""
    line = head.split(b"\n", 1)[0]
    if line == FORMAT_LINE.encode():
        return None
    return f'says "{_shown(line[:_MAX_SHOWN_FORMAT_BYTES])}", not "{FORMAT_LINE}": a layout this node does not know'


# --- reading and removing ---------------------------------------------------------------------


@contextmanager
def _opened_for_reading(file: StickFile) -> Iterator[tuple[int, os.stat_result]]:
    """The file's descriptor and status, opened as a regular file inside its outbox; every
    failure, while opening or while the caller reads, as a StickError naming the file."""
    shown = _shown(file.path)
    try:
        with _owned(_open_outbox(_root_of(file), file.outbox)) as outbox_fd:
            fd, info = _open_regular(file.name, outbox_fd)
            with _owned(fd):
                yield fd, info
    except FileTooLarge as exc:
        raise StickError(f"cannot read {exc}") from exc
    except _WrongKind as exc:
        raise StickError(f"cannot read {shown}: {exc.name} {exc} (it changed since the scan)") from exc
    except OSError as exc:
        raise _stick_error(exc, f"cannot read {shown}") from exc


def _read_blocking(file: StickFile, max_file_bytes: int) -> bytes:
    with _opened_for_reading(file) as (fd, info):
        if info.st_size > max_file_bytes:
            raise StickError(f"cannot read {_shown(file.path)}: it is {info.st_size:,} bytes now, over the limit of {max_file_bytes:,}")
        return read_at_most(fd, max_file_bytes, _shown(file.path))


def _read_head_blocking(file: StickFile, size: int) -> bytes:
    with _opened_for_reading(file) as (fd, _):
        chunks: list[bytes] = []
        total = 0
        while total < size and (chunk := os.read(fd, size - total)):
            chunks.append(chunk)
            total += len(chunk)
        return b"".join(chunks)


def _remove_blocking(file: StickFile) -> None:
    root = _root_of(file)
    try:
        with _owned(_open_outbox(root, file.outbox)) as outbox_fd:
            os.unlink(file.name, dir_fd=outbox_fd)
    except FileNotFoundError:
        return
    except _WrongKind as exc:
        raise StickError(f"cannot remove {_shown(file.path)}: {exc.name} {exc}") from exc
    except OSError as exc:
        raise _stick_error(exc, f"cannot remove {_shown(file.path)}") from exc


def _remove_own_older_blocking(root: Path, outbox: str, is_own: Callable[[str], bool], keep: Collection[str]) -> int:
    check_outbox(outbox)
    outbox_path = root / STICK_DIR / outbox
    removed = 0
    try:
        with _owned(_open_outbox(root, outbox)) as outbox_fd, os.scandir(outbox_fd) as entries:
            for entry in itertools.islice(entries, MAX_ENTRIES):
                if not is_bundle_file_name(outbox, entry.name) or not is_own(entry.name) or entry.name in keep or not entry.is_file(follow_symlinks=False):
                    continue
                try:
                    os.unlink(entry.name, dir_fd=outbox_fd)
                except FileNotFoundError:
                    continue
                removed += 1
    except FileNotFoundError:
        return removed
    except _WrongKind as exc:
        raise StickError(f"cannot clean {_shown(outbox_path)}: {exc.name} {exc}") from exc
    except OSError as exc:
        raise _stick_error(exc, f"cannot clean {_shown(outbox_path)}") from exc
    return removed


# --- writing ----------------------------------------------------------------------------------


def _write_blocking(root: Path, outbox: str, name: str, data: bytes) -> Path:
    check_outbox(outbox)
    if not is_bundle_file_name(outbox, name):
        raise ValueError(f"not a bundle file name: {name!r}")
    stick_path = root / STICK_DIR
    final = stick_path / outbox / name
    try:
        with _owned(os.open(root, _DIR_FLAGS)) as root_fd, _owned(_make_real_dir(STICK_DIR, root_fd)) as stick_fd:
            _ensure_format(stick_fd, stick_path)
            with _owned(_make_real_dir(outbox, stick_fd)) as outbox_fd:
                _remove_stale_temps(outbox_fd)
                _write_replace(outbox_fd, name, data, 0o644)
    except _WrongKind as exc:
        raise StickError(f"cannot write {_shown(final)}: {exc.name} {exc}") from exc
    except OSError as exc:
        raise _stick_error(exc, f"cannot write {_shown(final)}") from exc
    return final


def _make_real_dir(name: str, parent_fd: int) -> int:
    """Opens the folder `name`, creating it first if missing; refuses a link or a non-folder."""
    try:
        os.mkdir(name, 0o755, dir_fd=parent_fd)
    except FileExistsError:
        pass
    else:
        _fsync_dir(parent_fd)
    return _open_real_dir(name, parent_fd)


def _ensure_format(stick_fd: int, stick_path: Path) -> None:
    """Writes FORMAT if missing; refuses to add to a stick laid out by another layout version."""
    try:
        os.lstat(FORMAT_FILE, dir_fd=stick_fd)
    except FileNotFoundError:
        _write_replace(stick_fd, FORMAT_FILE, f"{FORMAT_LINE}\n".encode(), 0o644)
        return
    problem = _format_problem(stick_fd)
    if problem is not None:
        raise StickError(f"not writing to {_shown(stick_path)}: its {FORMAT_FILE} {problem}")


def _remove_stale_temps(dir_fd: int) -> None:
    """Removes temporary files that a crash or a pulled stick left behind; failing to is harmless."""
    stale_before = time.time() - STALE_TEMP_SECONDS
    with os.scandir(dir_fd) as entries:
        for entry in itertools.islice(entries, MAX_ENTRIES):
            if not (entry.name.startswith(TEMP_PREFIX) and entry.name.endswith(BUNDLE_SUFFIX)):
                continue
            with suppress(OSError):
                info = entry.stat(follow_symlinks=False)
                if stat.S_ISREG(info.st_mode) and info.st_mtime < stale_before:
                    os.unlink(entry.name, dir_fd=dir_fd)


# --- shared -----------------------------------------------------------------------------------


def _open_real_dir(name: str, parent_fd: int) -> int:
    """Opens the folder `name` inside `parent_fd`; a link (even to a folder) or anything else
    raises _WrongKind."""
    try:
        return os.open(name, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=parent_fd)
    except OSError as exc:
        if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
            raise
        raise _WrongKind(name, os.lstat(name, dir_fd=parent_fd).st_mode, "a folder") from exc


def _open_outbox(root: Path, outbox: str) -> int:
    """The outbox's descriptor, reached without following a link below `root`."""
    with _owned(os.open(root, _DIR_FLAGS)) as root_fd, _owned(_open_real_dir(STICK_DIR, root_fd)) as stick_fd:
        return _open_real_dir(outbox, stick_fd)


def _open_regular(name: str, dir_fd: int) -> tuple[int, os.stat_result]:
    """Opens a regular file for reading, never through a link; anything else raises _WrongKind."""
    try:
        return open_regular(name, dir_fd=dir_fd, follow_symlinks=False)
    except NotARegularFile as exc:
        raise _WrongKind(name, exc.mode, "a regular file") from exc


def _root_of(file: StickFile) -> Path:
    """The folder the user named, from a file `scan` found; refuses a StickFile that does not fit
    the layout (a caller's mistake, not the stick's)."""
    outbox_path = file.path.parent
    if (
        file.path.name != file.name
        or outbox_path.name != file.outbox
        or outbox_path.parent.name != STICK_DIR
        or not _is_outbox(file.outbox)
        or not is_bundle_file_name(file.outbox, file.name)
    ):
        raise ValueError(f"not a bundle file in a stick's layout: {file.path}")
    return outbox_path.parent.parent


def _is_node_id(text: str) -> bool:
    if _NODE_ID_PATTERN.fullmatch(text) is None:
        return False
    try:
        return normalise_key_id(text) == text
    except InvalidInput:  # the check character fails
        return False


def _is_outbox(name: str) -> bool:
    return name in (BROADCAST, BUNDLES) or (name.startswith(OUTBOX_PREFIX) and _is_node_id(name.removeprefix(OUTBOX_PREFIX)))


def check_outbox(name: str) -> None:
    if not _is_outbox(name):
        raise ValueError(f"not an outbox name: {name!r}")


def _reason(exc: _WrongKind | OSError) -> str:
    """A problem's reason: what is there instead, or why it could not be read."""
    if isinstance(exc, _WrongKind):
        return str(exc)
    return f"cannot be read: {exc.strerror or type(exc).__name__}"

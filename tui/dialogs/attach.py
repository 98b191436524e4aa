"""Attaching files from the console: the picker (a path with completion, or the folder tree),
and the checks a file passes on the way to `node.chat.post(..., attachments=...)`.

A file is checked when it is picked (its size shown against this node's limit) and again when
the message is sent, on the opened file itself: it may have changed in between. Only regular
files are read: opening a FIFO or a device would block or never end."""

from __future__ import annotations

import asyncio
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.suggester import Suggester
from textual.widgets import DirectoryTree, Footer, Input, Static
from textual.widgets.directory_tree import DirEntry

from appliance.errors import BlobTooLarge, InvalidInput, RallypointError
from appliance.node import Attachment
from tui.formatting import file_size
from tui.messages import FileChecked
from tui.text import printable


@dataclass(frozen=True)
class LocalFile:
    """A file of this machine picked to go with the next message, and its size when picked."""

    path: Path
    size: int

    @property
    def name(self) -> str:
        return self.path.name

    def label(self) -> str:
        return f"📎 {printable(self.name)} ({file_size(self.size)})"


def check_file(path: Path, limit: int) -> LocalFile:
    """`path` if it is a regular file of at most `limit` bytes (symbolic links followed)."""
    try:
        info = path.stat()
    except OSError as exc:
        raise InvalidInput(f"cannot read {shown(path)}: {exc.strerror or exc}") from exc
    return LocalFile(path, checked_size(path, info, limit))


def shown(path: Path) -> str:
    """A path as the picker's messages name it: its last part (the folder is in view)."""
    return path.name or str(path)


def checked_size(path: Path, info: os.stat_result, limit: int) -> int:
    if not stat.S_ISREG(info.st_mode):
        raise InvalidInput(f"{shown(path)} is not a regular file")
    if info.st_size > limit:
        raise BlobTooLarge(f"{shown(path)} is {file_size(info.st_size)}; this node's attachment limit is {file_size(limit)}")
    return info.st_size


def read_file(file: LocalFile, limit: int) -> Attachment:
    """The file's bytes, checked again on the opened file (O_NONBLOCK: should a FIFO have taken
    its place, the open returns at once and the check refuses it)."""
    try:
        descriptor = os.open(file.path, os.O_RDONLY | os.O_NONBLOCK)
        with os.fdopen(descriptor, "rb") as handle:
            checked_size(file.path, os.fstat(handle.fileno()), limit)
            data = handle.read(limit + 1)
    except OSError as exc:
        raise InvalidInput(f"cannot read {shown(file.path)}: {exc.strerror or exc}") from exc
    if len(data) > limit:  # it grew since the check
        raise BlobTooLarge(f"{file.name} is over this node's attachment limit of {file_size(limit)}")
    return Attachment(file.name, data)


class PathSuggester(Suggester):
    """Completes the last component of a path being typed (→ accepts) from its folder's
    entries; hidden ones only once a "." is typed."""

    def __init__(self) -> None:
        super().__init__(use_cache=False, case_sensitive=True)

    async def get_suggestion(self, value: str) -> str | None:
        return await asyncio.to_thread(self.complete, value) if os.sep in value else None

    @staticmethod
    def complete(value: str) -> str | None:
        folder, _, start = value.rpartition(os.sep)
        base = Path(folder or os.sep).expanduser()
        try:
            names = sorted(e.name for e in os.scandir(base) if e.name.startswith(start) and (start.startswith(".") or not e.name.startswith(".")))
        except OSError:
            return None
        if not names or names[0] == start:
            return None
        return value + names[0][len(start) :] + (os.sep if (base / names[0]).is_dir() else "")


def worth_reporting(path: Path) -> bool:
    """While a path is being typed or browsed, only something that exists and is not a folder
    gets a verdict; a missing file is news only once Enter asks for it."""
    return path.exists() and not path.is_dir()


class AttachScreen(ModalScreen[LocalFile | None]):
    """Pick a file: type its path (→ completes) or find it in the folder tree (Tab); the size
    of the file in view is shown against this node's limit. Enter attaches it."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, limit: int, folder: Path) -> None:
        super().__init__()
        self.limit = limit
        self.folder = folder

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="attach"):
            yield Static(Content(f"Attach a file (up to {file_size(self.limit)} on this node)"), classes="dialog-title")
            yield Input(os.path.join(self.folder, ""), id="attach-path", suggester=PathSuggester(), select_on_focus=False)
            yield Static(id="attach-status")
            yield DirectoryTree(self.folder, id="attach-tree")
            yield Static("Enter attaches · → completes · Tab: the folder tree · Escape cancels", classes="dialog-hint")
        yield Footer(compact=True, show_command_palette=False)

    @on(Input.Changed, "#attach-path")
    def path_typed(self, event: Input.Changed) -> None:
        self.check(Path(event.value).expanduser(), chosen=False)

    @on(Input.Submitted, "#attach-path")
    def path_submitted(self, event: Input.Submitted) -> None:
        self.check(Path(event.value).expanduser(), chosen=True)

    @on(DirectoryTree.NodeHighlighted, "#attach-tree")
    def path_highlighted(self, event: DirectoryTree.NodeHighlighted[DirEntry]) -> None:
        if event.node.data is not None:
            self.check(event.node.data.path, chosen=False)

    @on(DirectoryTree.FileSelected, "#attach-tree")
    def file_selected(self, event: DirectoryTree.FileSelected) -> None:
        self.check(event.path, chosen=True)

    @work(group="attach-check", exclusive=True)
    async def check(self, path: Path, chosen: bool) -> None:
        """Stats the file away from the event loop (a slow or hung mount must not freeze it)."""
        try:
            file = await asyncio.to_thread(check_file, path, self.limit)
        except RallypointError as exc:
            problem = str(exc) if chosen or await asyncio.to_thread(worth_reporting, path) else ""
            self.post_message(FileChecked(path, None, problem, chosen))
            return
        self.post_message(FileChecked(path, file, "", chosen))

    @on(FileChecked)
    def checked(self, event: FileChecked) -> None:
        status = self.query_one("#attach-status", Static)
        status.update(Content(event.file.label() if event.file is not None else printable(event.problem)))
        status.set_class(event.file is None, "error")
        if event.chosen and event.file is not None:
            self.dismiss(event.file)

    def action_cancel(self) -> None:
        self.dismiss(None)

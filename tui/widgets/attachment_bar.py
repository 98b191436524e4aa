"""The files that go with the next message, shown above the composer while there are any."""

from __future__ import annotations

from textual.content import Content
from textual.reactive import var
from textual.widgets import Static

from tui.dialogs.attach import LocalFile


class AttachmentBar(Static):
    """Its screen sets `files`; the bar shows them, and hides itself when there are none."""

    files: var[tuple[LocalFile, ...]] = var(tuple, init=False)  # hidden (app.tcss) until the first file

    def watch_files(self, files: tuple[LocalFile, ...]) -> None:
        self.display = bool(files)
        self.update(Content("  ".join(file.label() for file in files) + " · ctrl+r removes them"))

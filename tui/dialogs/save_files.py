"""Where to save a message's attachments."""

from __future__ import annotations

from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Footer, Input, Static

from appliance.model import MessageView
from tui.formatting import file_size
from tui.text import printable


class SaveFilesScreen(ModalScreen[Path | None]):
    """Where to save a message's attachments: a folder; Enter saves them all there."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, message: MessageView) -> None:
        super().__init__()
        self.message = message

    def compose(self) -> ComposeResult:
        downloads = Path.home() / "Downloads"
        with Vertical(classes="dialog"):
            yield Static("Save attachments", classes="dialog-title")
            yield Static(Content("\n".join(f"📎 {printable(f.name)} ({file_size(f.size)})" for f in self.message.files)), classes="dialog-detail")
            yield Input(str(downloads if downloads.is_dir() else Path.home()), id="save-folder")
            yield Static("Enter saves into this folder (existing files are kept) · Escape cancels", classes="dialog-hint")
        yield Footer(compact=True, show_command_palette=False)

    @on(Input.Submitted, "#save-folder")
    def chosen(self, event: Input.Submitted) -> None:
        if event.value.strip():
            self.dismiss(Path(event.value.strip()).expanduser())

    def action_cancel(self) -> None:
        self.dismiss(None)

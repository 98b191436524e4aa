"""The dialog in which an admin publishes a version of the terms of service: its version (one
above the current, filled in), a title, and the text - typed in, or read from a file (a text
file on a stick) when a path is given. It only says what was asked (a TermsDraft); the Terms
tab's worker reads the file and asks the node, which checks the role, the version and the text."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Button, Footer, Input, Label, Static, TextArea

from appliance.model import TermsInfo
from tui.text import printable


@dataclass(frozen=True)
class TermsDraft:
    """What the admin asked to publish: `text` as typed, or the text of the file at `path`."""

    version: int
    title: str
    text: str
    path: Path | None


class PublishTermsScreen(ModalScreen[TermsDraft | None]):
    """Tab moves between the fields (the text area takes Enter as a new line); Ctrl+S or the
    button publishes; Escape cancels."""

    CSS_PATH = "publish_terms.tcss"
    AUTO_FOCUS = "#terms-title"
    BINDINGS = [Binding("escape", "cancel", "Cancel"), Binding("ctrl+s", "publish", "Publish")]

    def __init__(self, current: TermsInfo | None) -> None:
        super().__init__()
        self.current = current

    def compose(self) -> ComposeResult:
        now = "No terms are published yet." if self.current is None else f"Now: version {self.current.version}, {printable(self.current.title)}."
        with Vertical(id="publish-terms", classes="dialog"):
            yield Static(Content("Publish terms of service"), classes="dialog-title")
            yield Static(Content(f"{now} Every user must accept the new version before they read or post."), classes="publish-hint")
            with Horizontal(classes="publish-field"):
                yield Label("Version")
                yield Input(str(1 if self.current is None else self.current.version + 1), id="terms-version", type="integer")
            with Horizontal(classes="publish-field"):
                yield Label("Title")
                yield Input(id="terms-title", placeholder="e.g. Field rules")
            with Horizontal(classes="publish-field"):
                yield Label("From file")
                yield Input(id="terms-file", placeholder="a UTF-8 text file; empty: the text below")
            yield TextArea(id="terms-text", soft_wrap=True, show_line_numbers=False, placeholder="the terms, typed here (or name a file above)")
            yield Static(id="publish-error")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Publish", id="publish-submit", variant="primary", compact=True)
                yield Button("Cancel", id="publish-cancel", compact=True)
        yield Footer(compact=True)

    def refuse(self, reason: str, field: str) -> None:
        error = self.query_one("#publish-error", Static)
        error.update(Content(reason))
        error.display = True
        self.query_one(field).focus()

    @on(Button.Pressed, "#publish-submit")
    def action_publish(self) -> None:
        version = self.query_one("#terms-version", Input).value.strip()
        title = self.query_one("#terms-title", Input).value.strip()
        path = self.query_one("#terms-file", Input).value.strip()
        text = self.query_one("#terms-text", TextArea).text
        if not version.isdigit() or int(version) < 1:
            self.refuse("Enter the version: a whole number above the current one.", "#terms-version")
        elif not title:
            self.refuse("Enter a title.", "#terms-title")
        elif not path and not text.strip():
            self.refuse("Type the terms below, or give the file that holds them.", "#terms-text")
        else:
            self.dismiss(TermsDraft(int(version), title, text, Path(path).expanduser() if path else None))

    @on(Button.Pressed, "#publish-cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)

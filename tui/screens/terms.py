"""The terms of service a user must accept before the console shows anything of the workspace.

`TermsScreen` is a whole screen (nothing of the channels shows behind it), pushed with a
callback from wherever the console finds the acting user has terms to accept - after unlock
(or a user's sign-in), or when a new version arrives while the console runs. It dismisses
with True once the acceptance is recorded, False when the user signs out instead. The text
comes from the directory, written by an admin somewhere: it is shown as plain text."""

from __future__ import annotations

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.content import Content
from textual.screen import Screen
from textual.widgets import Button, Footer, Header, Static

from appliance.errors import RallypointError
from appliance.model import TermsInfo
from tui.formatting import date_time
from tui.messages import Failed, TermsAccepted
from tui.services import TermsService
from tui.text import printable


class TermsText(VerticalScroll, can_focus=True):
    """The terms' text, scrolled with the arrows, Page Up/Down, Home and End."""

    BINDINGS = [
        Binding("up", "scroll_up", "Scroll", show=False),
        Binding("down", "scroll_down", "Scroll", show=False),
        Binding("pageup", "page_up", "Page up", show=False),
        Binding("pagedown", "page_down", "Page down", show=False),
        Binding("home", "scroll_home", "Top", show=False),
        Binding("end", "scroll_end", "End", show=False),
    ]


class TermsScreen(Screen[bool]):
    """Shows one version of the terms with Accept and Sign out."""

    CSS_PATH = "terms.tcss"
    AUTO_FOCUS = "#terms-text"
    BINDINGS = [
        Binding("escape", "sign_out", "Sign out"),
    ]

    def __init__(self, terms: TermsService, info: TermsInfo, user_name: str) -> None:
        super().__init__()
        self.terms = terms
        self.info = info
        self.user_name = user_name

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(Content(f"Terms of service · version {self.info.version} · {printable(self.info.title)}"), id="terms-title")
        yield Static(
            Content(
                f"Published {date_time(self.info.published_at / 1000)} by {printable(self.info.publisher)}. {printable(self.user_name)}, "
                "read them and accept to continue: nothing of the workspace is shown until you do."
            ),
            id="terms-meta",
        )
        with TermsText(id="terms-text"):
            yield Static(Content(printable(self.info.text, multiline=True)), id="terms-body")
        yield Static(id="terms-status")
        with Horizontal(id="terms-buttons"):
            yield Button(f"Accept version {self.info.version}", id="terms-accept", variant="primary")
            yield Button("Sign out", id="terms-sign-out")
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        self.title = "Terms of service"

    @on(Button.Pressed, "#terms-accept")
    def accept_pressed(self) -> None:
        self.query_one("#terms-accept", Button).disabled = True
        self.show_status("Recording your acceptance…")
        self.accept()

    @work(group="terms-accept", exclusive=True)
    async def accept(self) -> None:
        try:
            standing = await self.terms.accept(self.info.version)
        except RallypointError as exc:
            self.post_message(Failed(str(exc)))
            return
        self.post_message(TermsAccepted(standing))

    @on(TermsAccepted)
    def accepted(self, event: TermsAccepted) -> None:
        self.dismiss(True)

    @on(Failed)
    def failed(self, event: Failed) -> None:
        self.query_one("#terms-accept", Button).disabled = False
        self.show_status(event.reason, error=True)

    @on(Button.Pressed, "#terms-sign-out")
    def action_sign_out(self) -> None:
        self.dismiss(False)

    def show_status(self, text: str, error: bool = False) -> None:
        status = self.query_one("#terms-status", Static)
        status.update(Content(printable(text)))
        status.set_class(error, "error")

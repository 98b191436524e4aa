"""The new-channel dialog."""

from __future__ import annotations

from dataclasses import dataclass

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Footer, Input, Static

from tui.widgets.controls import FormCheckbox


@dataclass(frozen=True)
class NewChannel:
    name: str
    private: bool


class NewChannelScreen(ModalScreen[NewChannel | None]):
    """Enter creates the channel from anywhere in the form (Space ticks the checkbox)."""

    BINDINGS = [Binding("escape", "cancel", "Cancel"), Binding("enter", "create", "Create", show=False)]

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static("New channel", classes="dialog-title")
            yield Input(id="channel-name", placeholder="name: lowercase, digits, - and _")
            yield FormCheckbox("Private (members only)", id="channel-private")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Create", id="channel-create", variant="primary")
                yield Button("Cancel", id="channel-cancel")
        yield Footer(compact=True, show_command_palette=False)

    @on(Input.Submitted)
    @on(Button.Pressed, "#channel-create")
    def action_create(self) -> None:
        self.dismiss(NewChannel(self.query_one("#channel-name", Input).value, self.query_one("#channel-private", FormCheckbox).value))

    @on(Button.Pressed, "#channel-cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)

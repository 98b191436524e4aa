"""The channel settings dialog: who is in the channel and its channel admins, and - for a
channel admin or a workspace admin - rename, purpose, add and remove members, grant and revoke
channel admin, archive and read-only. It only says what was asked (a ChannelEdit); the main
screen's worker asks the node, which checks the acting user's role again."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Button, Footer, Input, Label, Static

from appliance.model import ChannelMember, ChannelSummary, MemberRole
from tui.text import printable


class EditKind(StrEnum):
    RENAME = "rename"
    PURPOSE = "purpose"
    ADD = "add"
    REMOVE = "remove"
    GRANT_ADMIN = "grant-admin"
    REVOKE_ADMIN = "revoke-admin"
    ARCHIVE = "archive"
    UNARCHIVE = "unarchive"
    READ_ONLY = "read-only"
    WRITABLE = "writable"


@dataclass(frozen=True)
class ChannelEdit:
    """What the operator asked of a channel: the edit, and its name, purpose or user name."""

    channel_id: str
    kind: EditKind
    value: str = ""


NEEDS_USER = {EditKind.ADD, EditKind.REMOVE, EditKind.GRANT_ADMIN, EditKind.REVOKE_ADMIN}


def describe(channel: ChannelSummary) -> str:
    flags = [str(channel.kind)] + [flag for flag, on in (("archived", channel.archived), ("read-only", channel.read_only)) if on]
    return f"{printable(channel.label or '#' + channel.name)} · {', '.join(flags)}"


class ChannelSettingsScreen(ModalScreen[ChannelEdit | None]):
    """Escape closes. Each button does one thing; the user field serves the member buttons."""

    CSS_PATH = "channel_settings.tcss"
    BINDINGS = [Binding("escape", "cancel", "Close")]

    def __init__(self, channel: ChannelSummary, members: list[ChannelMember], *, manages: bool) -> None:
        super().__init__()
        self.channel = channel
        self.members = members
        self.manages = manages

    def compose(self) -> ComposeResult:
        admins = [printable(m.name) for m in self.members if m.role == MemberRole.CHANNEL_ADMIN]
        others = [printable(m.name) for m in self.members if m.role != MemberRole.CHANNEL_ADMIN]
        everyone = "everyone (public)" if self.channel.kind == "public" else ", ".join(others) or "none"
        with Vertical(classes="dialog", id="channel-settings"):
            yield Static(Content(describe(self.channel)), classes="dialog-title", id="settings-title")
            yield Static(Content(f"Channel admins: {', '.join(admins) or 'none'}"), classes="settings-line", id="settings-admins")
            yield Static(Content(f"Members: {everyone}"), classes="settings-line", id="settings-members")
            if self.channel.requires:
                required = ", ".join(f"{key}={value}" for key, value in self.channel.requires)
                yield Static(Content(f"Requires: {printable(required)}"), classes="settings-line", id="settings-requires")
            if not self.manages:
                yield Static("Only its channel admins and workspace admins change this channel.", classes="dialog-hint")
            else:
                with Horizontal(classes="settings-field"):
                    yield Label("Name")
                    yield Input(self.channel.name, id="settings-name")
                    yield Button("Rename", id="rename", compact=True)
                with Horizontal(classes="settings-field"):
                    yield Label("Purpose")
                    yield Input(self.channel.purpose, id="settings-purpose")
                    yield Button("Set", id="purpose", compact=True)
                with Horizontal(classes="settings-field"):
                    yield Label("User")
                    yield Input(id="settings-user", placeholder="a user's name")
                with Horizontal(classes="settings-buttons"):
                    yield Button("Add", id="add", compact=True)
                    yield Button("Remove", id="remove", compact=True)
                    yield Button("Make admin", id="grant-admin", compact=True)
                    yield Button("Revoke admin", id="revoke-admin", compact=True)
                with Horizontal(classes="settings-buttons"):
                    yield Button("Unarchive" if self.channel.archived else "Archive", id="unarchive" if self.channel.archived else "archive", compact=True)
                    yield Button("Make writable" if self.channel.read_only else "Make read-only", id="writable" if self.channel.read_only else "read-only", compact=True)
                yield Static("Read-only: only channel admins post; everyone reacts.", classes="dialog-hint")
        yield Footer(compact=True, show_command_palette=False)

    @on(Button.Pressed)
    def pressed(self, event: Button.Pressed) -> None:
        kind = EditKind(event.button.id or "")
        if kind == EditKind.RENAME:
            value = self.query_one("#settings-name", Input).value
        elif kind == EditKind.PURPOSE:
            value = self.query_one("#settings-purpose", Input).value
        elif kind in NEEDS_USER:
            value = self.query_one("#settings-user", Input).value.strip()
            if not value:
                self.notify("Type a user's name first.", severity="warning")
                self.query_one("#settings-user", Input).focus()
                return
        else:
            value = ""
        self.dismiss(ChannelEdit(self.channel.channel_id, kind, value))

    @on(Input.Submitted, "#settings-name")
    def name_submitted(self) -> None:
        self.query_one("#rename", Button).press()

    @on(Input.Submitted, "#settings-purpose")
    def purpose_submitted(self) -> None:
        self.query_one("#purpose", Button).press()

    def action_cancel(self) -> None:
        self.dismiss(None)

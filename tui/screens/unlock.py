"""Unlocking the node with its passphrase. With the passphrase given on the command line and
no `--as`, the node's own user is signed in with it, as every command does; otherwise the
sign-in screen follows."""

from __future__ import annotations

from pathlib import Path

from textual import on, work
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.content import Content
from textual.screen import Screen
from textual.widgets import Footer, Header, Input, Static

from appliance.crypto import random_bytes
from appliance.errors import RallypointError, WrongPassphrase
from appliance.kernel import Clock, Random, wall_clock_ms
from appliance.node import Node
from tui.messages import Failed, NodeUnlocked
from tui.text import printable


class UnlockScreen(Screen[None]):
    """Asks for the passphrase; tries the one given on the command line first, if any."""

    def __init__(self, home: Path, as_user: str | None, passphrase: str | None, *, clock: Clock = wall_clock_ms, rng: Random = random_bytes) -> None:
        super().__init__()
        self.clock = clock
        self.rng = rng
        self.home = home
        self.as_user = as_user
        self.given_passphrase = passphrase

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="unlock"):
            yield Static(Content(f"Unlock the node in {printable(str(self.home))}"), id="unlock-prompt")
            yield Input(id="unlock-passphrase", password=True, placeholder="passphrase")
            yield Static(id="unlock-status")
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        if self.given_passphrase is not None:
            self.attempt(self.given_passphrase)

    @on(Input.Submitted, "#unlock-passphrase")
    def submit(self, event: Input.Submitted) -> None:
        self.attempt(event.value)

    def attempt(self, passphrase: str) -> None:
        field = self.query_one("#unlock-passphrase", Input)
        field.disabled = True  # one attempt at a time: each costs a key derivation
        self.show_status("Unlocking…")
        self.unlock(passphrase)

    def show_status(self, text: str, error: bool = False) -> None:
        status = self.query_one("#unlock-status", Static)
        status.update(Content(printable(text)))
        status.set_class(error, "error")

    @work(group="unlock")
    async def unlock(self, passphrase: str) -> None:
        try:
            node = await Node.open(self.home, passphrase, sign_in=False, clock=self.clock, rng=self.rng)
        except WrongPassphrase:
            self.post_message(Failed("wrong passphrase — try again"))
            return
        except RallypointError as exc:
            self.post_message(Failed(str(exc)))
            return
        if self.as_user is None and passphrase == self.given_passphrase:
            try:
                await node.signin.sign_in_own(passphrase)
            except RallypointError:
                pass  # the node's own user has a secret of their own, or MFA: the sign-in screen asks
        self.post_message(NodeUnlocked(node, node.identity.whoami()))

    @on(Failed)
    def unlock_failed(self, event: Failed) -> None:
        field = self.query_one("#unlock-passphrase", Input)
        field.disabled = False
        field.clear()
        field.focus()
        self.show_status(event.reason, error=True)

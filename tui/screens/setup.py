"""First run: create a workspace, or join one."""

from __future__ import annotations

import asyncio
import platform
from pathlib import Path

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Vertical
from textual.content import Content
from textual.screen import Screen
from textual.widgets import Button, Footer, Header, Input, Label, Static, TabbedContent, TabPane

from appliance import identity
from appliance.errors import RallypointError
from appliance.files import read_regular_file
from appliance.node import MAX_ENROLLMENT_FILE_BYTES, Node
from tui.messages import Failed, NodeUnlocked
from tui.text import printable


class SetupScreen(Screen[None]):
    """First run: create a new workspace, or join one with an enrollment file and its code.
    Each form says how to reach the other (ctrl+t, also in the footer): typing starts in the
    Create form, and nothing else would tell an operator with a node to join that the tabs
    are a shift+tab away."""

    AUTO_FOCUS = "#create-workspace"  # type straight away
    BINDINGS = [
        Binding("ctrl+t", "show_form('join')", "Join a workspace instead"),
        Binding("ctrl+t", "show_form('create')", "Create a workspace instead"),
    ]

    def __init__(self, home: Path) -> None:
        super().__init__()
        self.home = home
        self.busy = False

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="setup"):
            yield Static(Content(f"No node in {printable(str(self.home))} yet."), id="setup-intro")
            with TabbedContent(id="setup-tabs"):
                with TabPane("Create a workspace", id="create"):
                    yield Static("Joining a workspace someone else created? Press ctrl+t.", classes="form-hint")
                    with Grid(classes="form"):
                        yield Label("Workspace name")
                        yield Input(id="create-workspace", placeholder="no spaces, e.g. acme")
                        yield Label("Your user name")
                        yield Input(id="create-user", placeholder="e.g. alice")
                        yield Label("Node name")
                        yield Input(platform.node().split(".")[0] or "node", id="create-node")
                        yield Label("Passphrase")
                        yield Input(id="create-passphrase", password=True, placeholder="at least 8 characters")
                        yield Label("Confirm passphrase")
                        yield Input(id="create-confirm", password=True)
                    yield Button("Create workspace", id="create-submit", variant="primary")
                with TabPane("Join a workspace", id="join"):
                    yield Static("Starting a new workspace instead? Press ctrl+t.", classes="form-hint")
                    with Grid(classes="form"):
                        yield Label("Enrollment file")
                        yield Input(id="join-file", placeholder="path to the .enrollment file")
                        yield Label("One-time code")
                        yield Input(id="join-code", placeholder="XXXX-XXXX-XXXX")
                        yield Label("Passphrase")
                        yield Input(id="join-passphrase", password=True, placeholder="at least 8 characters")
                        yield Label("Confirm passphrase")
                        yield Input(id="join-confirm", password=True)
                    yield Button("Join workspace", id="join-submit", variant="primary")
            yield Static(id="setup-status")
        yield Footer(compact=True, show_command_palette=False)

    def field(self, name: str) -> str:
        return self.query_one(f"#{name}", Input).value

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "show_form":
            return self.query_one(TabbedContent).active != parameters[0]  # the other form's key only
        return True

    def action_show_form(self, form: str) -> None:
        self.query_one(TabbedContent).active = form
        self.query_one(f"#{form}", TabPane).query(Input).first().focus()

    @on(TabbedContent.TabActivated)
    def form_shown(self) -> None:
        self.refresh_bindings()

    def show_status(self, text: str, error: bool = False) -> None:
        status = self.query_one("#setup-status", Static)
        status.update(Content(printable(text)))
        status.set_class(error, "error")

    @on(Input.Submitted)
    def next_field_or_submit(self, event: Input.Submitted) -> None:
        """Enter moves down the form; on its last field it submits."""
        pane = event.input.query_ancestor(TabPane)
        fields = list(pane.query(Input))
        if event.input is fields[-1]:
            self.submit(pane.id or "")
        else:
            fields[fields.index(event.input) + 1].focus()

    @on(Button.Pressed)
    def button_submit(self, event: Button.Pressed) -> None:
        self.submit(event.button.query_ancestor(TabPane).id or "")

    def submit(self, form: str) -> None:
        """`form` is the tab's id, "create" or "join", which prefixes its fields' ids."""
        if self.busy:
            return
        if self.field(f"{form}-passphrase") != self.field(f"{form}-confirm"):
            self.show_status("The passphrases do not match.", error=True)
            return
        self.busy = True
        if form == "create":
            self.show_status("Creating the workspace…")
            self.create_workspace(self.field("create-workspace"), self.field("create-user"), self.field("create-node"), self.field("create-passphrase"))
        else:
            self.show_status("Joining the workspace…")
            self.join_workspace(self.field("join-file"), self.field("join-code"), self.field("join-passphrase"))

    @work(group="setup")
    async def create_workspace(self, workspace: str, user: str, node_name: str, passphrase: str) -> None:
        try:
            node = await Node.init(self.home, workspace_name=workspace, user_name=user, node_name=node_name, passphrase=passphrase)
        except RallypointError as exc:
            self.post_message(Failed(str(exc)))
            return
        self.post_message(NodeUnlocked(node, node.identity.whoami()))

    @work(group="setup")
    async def join_workspace(self, enrollment_path: str, code: str, passphrase: str) -> None:
        try:
            enrollment = await asyncio.to_thread(read_regular_file, Path(enrollment_path).expanduser(), MAX_ENROLLMENT_FILE_BYTES)
            node = await Node.join(self.home, enrollment, code, passphrase)
        except OSError as exc:
            self.post_message(Failed(f"cannot read the enrollment file: {exc.strerror or exc}"))
            return
        except RallypointError as exc:
            self.post_message(Failed(str(exc)))
            return
        unconsumed = await asyncio.to_thread(identity.consume_enrollment_file, Path(enrollment_path).expanduser(), node.identity.node_id, node.identity.now())
        if unconsumed is not None:
            self.notify(identity.UNCONSUMED_WARNING.format(reason=unconsumed), severity="warning", timeout=30)
        self.post_message(NodeUnlocked(node, node.identity.whoami()))

    @on(Failed)
    def setup_failed(self, event: Failed) -> None:
        self.busy = False
        self.show_status(event.reason, error=True)

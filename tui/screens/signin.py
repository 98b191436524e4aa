"""Signing in on the unlocked node: who (this node's local users), their secret, their
authenticator code when they enrolled, then each step the node says is still due - a secret of
their own instead of an initial one, MFA enrolment (tui/screens/mfa_enrol.py) - before the
channels show. Another due step (terms of service) is one more branch in `next_step`."""

from __future__ import annotations

from textual import on, work
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.content import Content
from textual.screen import Screen
from textual.widgets import Footer, Header, Input, OptionList, Static
from textual.widgets.option_list import Option

from appliance.errors import MfaCodeRequired, RallypointError
from appliance.services.signed_in import SignInResult, SignInStep
from tui.messages import CodeNeeded, Failed, SignedIn, SignInAnswered
from tui.screens.mfa_enrol import MfaEnrolScreen
from tui.services import SignInService
from tui.text import printable


class SignInScreen(Screen[None]):
    CSS_PATH = "signin.tcss"

    def __init__(self, signin: SignInService, node_label: str, preselect: str | None = None) -> None:
        super().__init__()
        self.signin = signin
        self.node_label = node_label
        self.preselect = preselect

    def heading(self) -> str:
        return f"Sign in on {self.node_label}: choose who you are"

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="signin"):
            yield Static(Content(printable(self.heading())), id="signin-heading")
            users = self.signin.local_users()
            yield OptionList(*(Option(Content(f"{printable(u.name)}  ({u.role})"), id=u.name) for u in users), id="signin-users")
            yield Input(id="signin-secret", password=True, placeholder="secret")
            yield Input(id="signin-code", placeholder="code from the authenticator app (or a recovery code)", classes="hidden")
            yield Input(id="signin-new", password=True, placeholder="a new secret of your own (8 characters or more)", classes="hidden")
            yield Input(id="signin-repeat", password=True, placeholder="the new secret again", classes="hidden")
            yield Static(id="signin-status")
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        users = self.query_one("#signin-users", OptionList)
        names = [u.name for u in self.signin.local_users()]
        if self.preselect in names:
            users.highlighted = names.index(self.preselect)
            self.query_one("#signin-secret", Input).focus()
        elif names:
            users.highlighted = 0
            users.focus()

    def chosen(self) -> str | None:
        users = self.query_one("#signin-users", OptionList)
        option = None if users.highlighted is None else users.get_option_at_index(users.highlighted)
        return None if option is None else option.id

    @on(OptionList.OptionSelected, "#signin-users")
    def user_chosen(self) -> None:
        self.query_one("#signin-code", Input).add_class("hidden")
        self.query_one("#signin-secret", Input).focus()

    @on(Input.Submitted, "#signin-secret")
    @on(Input.Submitted, "#signin-code")
    def submit(self) -> None:
        name = self.chosen()
        secret = self.query_one("#signin-secret", Input).value
        code_field = self.query_one("#signin-code", Input)
        if name is None or not secret:
            self.show_status("choose a user and type their secret", error=True)
            return
        if not code_field.has_class("hidden") and not code_field.value:
            code_field.focus()
            return
        self.set_busy(True)
        self.show_status("Signing in…")
        self.attempt(name, secret, None if code_field.has_class("hidden") else code_field.value)

    @work(group="signin", exclusive=True)
    async def attempt(self, name: str, secret: str, code: str | None) -> None:
        try:
            result = await self.signin.sign_in(name, secret, code)
        except MfaCodeRequired:
            self.post_message(CodeNeeded())
            return
        except RallypointError as exc:
            self.post_message(Failed(str(exc)))
            return
        self.post_message(SignInAnswered(result))

    @on(CodeNeeded)
    def code_needed(self) -> None:
        self.set_busy(False)
        code = self.query_one("#signin-code", Input)
        code.remove_class("hidden")
        code.focus()
        self.show_status("Type the code your authenticator app shows (or a recovery code)")

    @on(Input.Submitted, "#signin-repeat")
    def new_secret(self) -> None:
        new, repeat = self.query_one("#signin-new", Input), self.query_one("#signin-repeat", Input)
        if new.value != repeat.value:
            repeat.clear()
            self.show_status("the two new secrets differ: type it again", error=True)
            return
        self.set_busy(True)
        self.change(new.value)

    @on(Input.Submitted, "#signin-new")
    def to_repeat(self) -> None:
        self.query_one("#signin-repeat", Input).focus()

    @work(group="signin", exclusive=True)
    async def change(self, secret: str) -> None:
        try:
            result = await self.signin.change_secret(secret)
        except RallypointError as exc:
            self.post_message(Failed(str(exc)))
            return
        self.post_message(SignInAnswered(result))

    @on(SignInAnswered)
    def answered(self, event: SignInAnswered) -> None:
        self.set_busy(False)
        self.next_step(event.result)

    def next_step(self, result: SignInResult) -> None:
        """Leads the user through what the node says is still due, then lets them in."""
        for field in ("#signin-secret", "#signin-code"):
            self.query_one(field, Input).clear()
        if result.complete:
            self.post_message(SignedIn())
        elif result.steps[0] is SignInStep.CHANGE_SECRET:
            self.query_one("#signin-code", Input).add_class("hidden")
            for field in ("#signin-new", "#signin-repeat"):
                self.query_one(field, Input).remove_class("hidden")
            self.query_one("#signin-new", Input).focus()
            self.show_status(f"{result.user}: your secret was given to you; set one of your own")
        else:
            self.app.push_screen(MfaEnrolScreen(self.signin.mfa), self.enrolment_done)

    def enrolment_done(self, result: SignInResult | None) -> None:
        if result is not None:
            self.next_step(result)

    @on(Failed)
    def failed(self, event: Failed) -> None:
        self.set_busy(False)
        for field in ("#signin-secret", "#signin-code", "#signin-new", "#signin-repeat"):
            self.query_one(field, Input).clear()
        changing = not self.query_one("#signin-new", Input).has_class("hidden")
        self.query_one("#signin-new" if changing else "#signin-secret", Input).focus()
        self.show_status(event.reason, error=True)

    def set_busy(self, busy: bool) -> None:
        for field in self.query(Input):
            field.disabled = busy  # one attempt at a time: each costs a key derivation

    def show_status(self, text: str, error: bool = False) -> None:
        status = self.query_one("#signin-status", Static)
        status.update(Content(printable(text)))
        status.set_class(error, "error")

"""Enrolling an authenticator app: the QR code (drawn as text) and the secret to type, a code
from the app to confirm, then the ten recovery codes, shown this once. Dismissed with what the
node says the user must still do."""

from __future__ import annotations

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.screen import Screen
from textual.widgets import Footer, Input, Static

from appliance import totp
from appliance.errors import RallypointError
from appliance.services.signed_in import SignInResult
from tui.messages import Failed, MfaEnrolled
from tui.qr import qr_lines
from tui.services import MfaService
from tui.text import printable


class MfaEnrolScreen(Screen[SignInResult]):
    CSS_PATH = "signin.tcss"
    BINDINGS = [Binding("enter", "done", "Continue", show=False), Binding("escape", "cancel", "Cancel")]

    def __init__(self, mfa: MfaService) -> None:
        super().__init__()
        self.mfa = mfa
        self.enrolment = mfa.begin_enrol()
        self.result: SignInResult | None = None

    def compose(self) -> ComposeResult:
        with Horizontal(id="mfa"):
            yield Static(Content("\n".join(qr_lines(self.enrolment.uri))), id="mfa-qr")
            with Vertical(id="mfa-side"):
                yield Static(
                    Content(
                        f"Two-step sign-in for {printable(self.enrolment.user)}\n\nScan the code with your authenticator app, "
                        f"or type this secret into it:\n\n{self.secret_lines()}\n\nThen type the code it shows:"
                    ),
                    id="mfa-help",
                )
                yield Input(id="mfa-code", placeholder="6-digit code")
                yield Static(id="mfa-status")
        yield Footer(compact=True, show_command_palette=False)

    def secret_lines(self) -> str:
        """The secret in groups of four, four groups a line (the column is 37 cells wide)."""
        groups = totp.grouped(self.enrolment.secret).split(" ")
        return "\n".join(" ".join(groups[i : i + 4]) for i in range(0, len(groups), 4))

    def on_mount(self) -> None:
        self.query_one("#mfa-code", Input).focus()

    @on(Input.Submitted, "#mfa-code")
    def submit(self, event: Input.Submitted) -> None:
        event.input.disabled = True
        self.confirm(event.value)

    @work(group="mfa", exclusive=True)
    async def confirm(self, code: str) -> None:
        try:
            codes, result = await self.mfa.confirm_enrol(code)
        except RallypointError as exc:
            self.post_message(Failed(str(exc)))
            return
        self.post_message(MfaEnrolled(codes, result))

    @on(Failed)
    def failed(self, event: Failed) -> None:
        field = self.query_one("#mfa-code", Input)
        field.disabled = False
        field.clear()
        field.focus()
        status = self.query_one("#mfa-status", Static)
        status.update(Content(printable(event.reason)))
        status.add_class("error")

    @on(MfaEnrolled)
    def enrolled(self, event: MfaEnrolled) -> None:
        """The QR code goes; the recovery codes show, once."""
        self.result = event.result
        self.query_one("#mfa-qr", Static).update(Content("\n".join(f"  {code}" for code in event.codes)))
        self.query_one("#mfa-help", Static).update(
            Content(
                "Enrolled. These recovery codes each work once in place of a code, if the phone is lost."
                " Write them down now and keep them apart from it: they are not shown again.\n\nPress Enter to continue."
            )
        )
        self.query_one("#mfa-code", Input).display = False
        self.query_one("#mfa-status", Static).update("")
        self.set_focus(None)  # Enter goes to the screen's binding

    def action_done(self) -> None:
        if self.result is not None:
            self.dismiss(self.result)

    def action_cancel(self) -> None:
        """Leaves without enrolling (once enrolled, as Enter does); a sign-in that needed the
        enrolment stays unfinished: the user signs in again."""
        if self.result is not None:
            self.dismiss(self.result)
        else:
            self.dismiss(None)

"""The admin screen's dialogs: the forms (add a user, change a role, enroll a node, a reason,
a network, a backup folder) and the enrollment card that shows a one-time code (and the new
node's recovery kit's code) once."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.widget import Widget
from textual.widgets import Button, Footer, Input, Label, OptionList, Static
from textual.widgets.option_list import Option

from appliance.certs import ROLES
from appliance.model import Enrollment, UserInfo
from tui.messages import Invitation
from tui.text import printable
from tui.widgets.controls import StoppingOptionList


@dataclass(frozen=True)
class NewUser:
    name: str
    role: str


class Incomplete(Exception):
    """A form field that must be filled in; the message says which."""

    def __init__(self, message: str, field_id: str) -> None:
        super().__init__(message)
        self.field_id = field_id


class RoleList(StoppingOptionList):
    """The workspace roles, one a line; the highlighted one is the choice (Enter confirms it).
    It stops at its ends: admin is first, so no ↓ ever reaches it."""

    def __init__(self, role: str, id: str) -> None:
        super().__init__(*(Option(name, id=name) for name in ROLES), id=id, markup=False, classes="field")
        self.initial = role

    def on_mount(self) -> None:
        self.highlighted = ROLES.index(self.initial)

    @property
    def role(self) -> str:
        option = self.highlighted_option
        return option.id if option is not None and option.id is not None else self.initial


def labelled(label: str, widget: Widget) -> Horizontal:
    return Horizontal(Label(label), widget, classes="admin-field")


ResultT = TypeVar("ResultT")


class FormScreen(ModalScreen[ResultT | None], Generic[ResultT]):
    """A dialog of fields: Enter moves to the next field and submits from the last one;
    Escape cancels. Subclasses yield their fields (class "field") and build the result."""

    CSS_PATH = "admin_forms.tcss"
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, submit: str, detail: str = "", danger: bool = False) -> None:
        super().__init__()
        self.title_text = title
        self.submit_label = submit
        self.detail = detail
        self.danger = danger

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog admin-dialog"):
            yield Static(Content(printable(self.title_text)), classes="dialog-title")
            if self.detail:
                yield Static(Content(printable(self.detail, multiline=True)), classes="admin-detail")
            yield from self.fields()
            yield Static(id="form-error")
            with Horizontal(classes="dialog-buttons"):
                yield Button(self.submit_label, id="form-submit", variant="error" if self.danger else "primary", compact=True)
                yield Button("Cancel", id="form-cancel", compact=True)
        yield Footer(compact=True)

    def fields(self) -> ComposeResult:
        raise NotImplementedError

    def result(self) -> ResultT:
        """The form's value; raises Incomplete when a field is missing."""
        raise NotImplementedError

    def value(self, field_id: str, what: str) -> str:
        text = self.query_one(f"#{field_id}", Input).value.strip()
        if not text:
            raise Incomplete(f"Enter {what}.", field_id)
        return text

    @on(Input.Submitted)
    @on(OptionList.OptionSelected)
    def next_field_or_submit(self, event: Input.Submitted | OptionList.OptionSelected) -> None:
        fields = list(self.query(".field"))
        if event.control is fields[-1]:
            self.submit()
        else:
            fields[fields.index(event.control) + 1].focus()

    @on(Button.Pressed, "#form-submit")
    def submit(self) -> None:
        try:
            value = self.result()
        except Incomplete as exc:
            error = self.query_one("#form-error", Static)
            error.update(Content(str(exc)))
            error.display = True
            self.query_one(f"#{exc.field_id}").focus()
            return
        self.dismiss(value)

    @on(Button.Pressed, "#form-cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)


class UserForm(FormScreen[NewUser]):
    def __init__(self) -> None:
        super().__init__("Add a user (their key stays sealed on this node)", "Add")

    def fields(self) -> ComposeResult:
        yield labelled("Name", Input(id="user-name", placeholder="no spaces, e.g. bob", classes="field"))
        yield labelled("Role", RoleList("member", id="user-role"))

    def result(self) -> NewUser:
        return NewUser(self.value("user-name", "a name"), self.query_one(RoleList).role)


class RoleForm(FormScreen[str]):
    def __init__(self, user: UserInfo) -> None:
        super().__init__(f"Role for {user.name}", "Change")
        self.current = user.role

    def fields(self) -> ComposeResult:
        yield labelled("Role", RoleList(self.current, id="role-choice"))

    def result(self) -> str:
        return self.query_one(RoleList).role


ADMIN_POWERS = (
    "Admins can add users and change roles, enroll and revoke nodes and users, delete anyone's "
    "messages and take backups, on every node of the workspace."
)


class RoleConfirm(FormScreen[bool]):
    """Asked before anyone is made an admin, naming them: the role is one keypress from the
    others in the list. Cancel has the focus, so a stray Enter changes nothing."""

    AUTO_FOCUS = "#form-cancel"

    def __init__(self, who: str) -> None:
        super().__init__(f"Make {who} an ADMIN?", "Make admin", f"{ADMIN_POWERS}\nTab to Make admin, then Enter; Escape cancels.", danger=True)

    def fields(self) -> ComposeResult:
        yield from ()

    def result(self) -> bool:
        return True


class InviteForm(FormScreen[Invitation]):
    def __init__(self) -> None:
        super().__init__("Enroll a node and its first user", "Enroll")

    def fields(self) -> ComposeResult:
        yield labelled("Node name", Input(id="invite-node", placeholder="e.g. bravo", classes="field"))
        yield labelled("First user", Input(id="invite-user", placeholder="a new user, e.g. bob", classes="field"))
        yield labelled("Role", RoleList("member", id="invite-role"))
        yield labelled("Write to", Input(id="invite-file", placeholder="file, e.g. /media/stick/bravo.enrollment", classes="field"))
        yield labelled("Kit to", Input(id="invite-kit", placeholder="recovery kit (empty: in this node's home)", classes="field"))

    def result(self) -> Invitation:
        node_name = self.value("invite-node", "the new node's name")
        user_name = self.value("invite-user", "the first user's name")
        path = Path(self.value("invite-file", "where to write the enrollment file")).expanduser().absolute()
        kit = self.query_one("#invite-kit", Input).value.strip()
        return Invitation(node_name, user_name, self.query_one(RoleList).role, path, Path(kit).expanduser().absolute() if kit else None)


class ReasonForm(FormScreen[str]):
    """Confirms a revocation; the reason travels with it to every node."""

    def __init__(self, title: str, detail: str) -> None:
        super().__init__(title, "Revoke", detail, danger=True)

    def fields(self) -> ComposeResult:
        yield labelled("Reason", Input(id="revoke-reason", placeholder="why (recorded and sent along)", classes="field"))

    def result(self) -> str:
        return self.value("revoke-reason", "a reason")


class NetworkForm(FormScreen[str]):
    def __init__(self, action: str) -> None:
        super().__init__(f"{action.capitalize()} LAN sessions with a network (incoming and dialled)", action.capitalize())

    def fields(self) -> ComposeResult:
        yield labelled("Network", Input(id="rule-network", placeholder="CIDR, e.g. 10.1.0.0/16 or fd00::/8", classes="field"))

    def result(self) -> str:
        return self.value("rule-network", "a network")


class BackupForm(FormScreen[Path]):
    def __init__(self) -> None:
        super().__init__("Back up this node", "Back up", "A consistent copy of the whole store, taken while the node runs. It opens only with this node's passphrase.")

    def fields(self) -> ComposeResult:
        yield labelled("Folder", Input(id="backup-folder", placeholder="e.g. /media/backup", classes="field"))

    def result(self) -> Path:
        return Path(self.value("backup-folder", "the folder to write the backup into")).expanduser().absolute()


class EnrollmentCard(ModalScreen[None]):
    """The one-time code, shown once: the file travels on the stick, the code by voice; and the
    node's recovery kit's place and code, which stay with the admin."""

    CSS_PATH = "admin_forms.tcss"
    BINDINGS = [Binding("escape,enter", "dismiss", "Close")]

    def __init__(self, enrollment: Enrollment, request: Invitation) -> None:
        super().__init__()
        self.enrollment = enrollment
        self.request = request

    def compose(self) -> ComposeResult:
        request, enrollment = self.request, self.enrollment
        with Vertical(classes="dialog admin-dialog"):
            yield Static(Content(f"Node {printable(request.node_name)} enrolled"), classes="dialog-title")
            yield Static(Content("Enrollment file written to:"))
            yield Static(Content(printable(str(request.path))), id="enrollment-file")
            yield Static(Content("One-time code: tell it to the new node's operator, never write it on the stick:"))
            yield Static(Content(enrollment.code), id="enrollment-code")
            yield Static(Content(f"Node id {enrollment.node_id}, first user {printable(enrollment.user_name)} ({request.role})"))
            if enrollment.kit is not None and request.kit_path is not None:
                yield Static(Content("Recovery kit (the admin keeps it, off the node's stick):"), classes="kit-label")
                yield Static(Content(printable(str(request.kit_path))), id="kit-file")
                yield Static(Content("Its recovery code, for the admin alone:"))
                yield Static(Content(enrollment.kit.code), id="kit-code")
            codes = "the codes are" if enrollment.kit is not None else "the code is"
            yield Static(Content(f"Enter or Escape closes; {codes} not shown again."), classes="dialog-hint")
        yield Footer(compact=True)

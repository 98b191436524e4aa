"""The console's admin area: users and roles, nodes and enrollment, the IP allowlist, the audit log,
who accepted the terms of service.

The screen never decides who may do what: every action goes to the node, which refuses a
non-admin with PermissionDenied and audits the refusal; the refusal is shown like any other
error. As in the rest of the console, node calls run in workers and come back as Messages,
and text from the network is shown through `printable()` in `Content` or rich `Text`."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.content import Content
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Input, Static, TabbedContent, TabPane

from appliance import feed, ids
from appliance.audit import AuditVerdict
from appliance.errors import RallypointError
from appliance.feed import ChangeFeed, FeedEvent
from appliance.model import NodeInfo, UserInfo, iso_utc
from appliance.netpolicy import NetworkRule
from appliance.node import Node
from sync.interfaces import interface_networks
from tui.dialogs.admin_forms import BackupForm, EnrollmentCard, InviteForm, NetworkForm, NewUser, ReasonForm, RoleConfirm, RoleForm, UserForm
from tui.files import enrollment_kit_path, write_atomically, write_kit
from tui.formatting import short_time
from tui.messages import ActionDone, AdminLoaded, AuditRow, DirectoryChanged, Enrolled, Failed, Invitation
from tui.screens.workspace_audit import WorkspaceAuditScreen
from tui.services import AuditService, CustodyService, DirectoryService, EnrollmentService, IdentityService, PeersService, TermsService
from tui.text import printable
from tui.widgets.tables import cell, fill, highlighted
from tui.widgets.terms_status import TermsStatusPane

AUDIT_LIMIT = 1000  # newest entries loaded; verification still covers the whole chain
NAME_WIDTH = 20  # names can be 64 characters: longer ones are cut so the other columns stay on screen
ACTOR_WIDTH = 12
DETAIL_WIDTH = 22  # the highlighted entry's full detail is shown under the table

# The tab each tab-specific action belongs to; the footer shows only the active tab's actions.
TAB_OF_ACTION = {
    "add_user": "users",
    "change_role": "users",
    "revoke_user": "users",
    "enroll": "nodes",
    "revoke_node": "nodes",
    "backup": "nodes",
    "set_rule": "allowlist",
    "remove_rule": "allowlist",
    "filter": "audit",
    "workspace_audit": "audit",
}
TABLE_OF_TAB = {"users": "#users-table", "nodes": "#nodes-table", "allowlist": "#rules-table", "audit": "#audit-table", "terms": "#terms-table"}


def rule_key(rule: NetworkRule) -> str:
    # An operator's deny can name the same network as a default allow: both are rows.
    return f"{'default' if rule.default else 'rule'}:{rule.network}"


def unwritable(path: Path) -> str | None:
    """Why an enrollment file cannot be written at `path`, checked before the node certifies anything."""
    if path.is_dir():
        return f"{path} is a directory: give a file name"
    if not path.parent.is_dir():
        return f"there is no directory {path.parent}"
    if not os.access(path.parent, os.W_OK):
        return f"cannot write into {path.parent}"
    return None


class AuditFilter(Input):
    """Filters the audit log as you type; Enter, Escape or ↓ go back to the table."""

    BINDINGS = [
        Binding("escape", "screen.focus_table", "Done"),
        Binding("enter", "screen.focus_table", "Done", show=False),
        Binding("down", "screen.focus_table", "Done", show=False),
    ]


# --- the admin screen ----------------------------------------------------------------


class AdminScreen(Screen[None]):
    """Users and roles, nodes and enrollment, the IP allowlist, the audit log and the terms of
    service, as tabs.

    Keys: 1-5 switch tabs (shown in the tab labels); the footer shows only the active tab's
    actions, so it fits 80 columns. Every tab acts on the highlighted table row:
      Users      a add · r role · x (or Delete) revoke
      Nodes      a enroll a node · x revoke
      Allowlist  a allow · d deny · x remove the rule
      Audit log  / filter (Enter, Escape or ↓ return to the table) · w every node's trail
      Terms      who accepted the current terms of service, which version, when, where
      always     F5 refresh · Escape back
    All are single letters on the screen, not priority bindings: the only Input on the
    screen is the audit filter, and while it has focus letters are typed into it (the footer
    then hides the letter keys). Dialogs take their input in fields: Enter moves on and
    submits from the last field, Escape cancels. The mouse works too (tabs, rows, buttons)."""

    CSS_PATH = "admin.tcss"
    AUTO_FOCUS = "#users-table"
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("a", "add_user", "Add user"),
        Binding("a", "enroll", "Enroll node"),
        Binding("a", "set_rule('allow')", "Allow"),
        Binding("r", "change_role", "Role"),
        Binding("d", "set_rule('deny')", "Deny"),
        Binding("x,delete", "revoke_user", "Revoke"),
        Binding("x,delete", "revoke_node", "Revoke"),
        Binding("b", "backup", "Backup"),
        Binding("x,delete", "remove_rule", "Remove"),
        Binding("slash", "filter", "Filter"),
        Binding("w", "workspace_audit", "All nodes"),
        Binding("f5", "reload", "Refresh"),
        Binding("1", "tab('users')", "Users", show=False),
        Binding("2", "tab('nodes')", "Nodes", show=False),
        Binding("3", "tab('allowlist')", "IP allowlist", show=False),
        Binding("4", "tab('audit')", "Audit log", show=False),
        Binding("5", "tab('terms')", "Terms", show=False),
    ]

    def __init__(
        self,
        *,
        identity: IdentityService,
        directory: DirectoryService,
        enrollment: EnrollmentService,
        peers: PeersService,
        audit: AuditService,
        custody: CustodyService,
        feed: ChangeFeed,
        terms: TermsService,
        home: Path,
    ) -> None:
        super().__init__()
        self.home = home  # the node's: enrollment-time recovery kits go in it unless the admin says where
        self.identity = identity
        self.directory = directory
        self.enrollment = enrollment
        self.peers = peers
        self.audit_log = audit  # self.audit holds the rows shown
        self.custody = custody
        self.feed = feed
        self.terms = terms
        self.tab = "users"
        self.users: dict[str, UserInfo] = {}
        self.nodes: dict[str, NodeInfo] = {}
        self.rules: dict[str, NetworkRule] = {}
        self.audit: list[AuditRow] = []
        self.verdict: AuditVerdict | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        with TabbedContent(id="admin-tabs", initial="users"):
            with TabPane("1 Users", id="users"):
                yield DataTable(id="users-table", cursor_type="row", zebra_stripes=True)
            with TabPane("2 Nodes", id="nodes"):
                yield DataTable(id="nodes-table", cursor_type="row", zebra_stripes=True)
            with TabPane("3 IP allowlist", id="allowlist"):
                yield Static(
                    Content(
                        "LAN sessions in both directions, incoming and dialled: the longest matching prefix decides, a deny wins a tie; "
                        "the defaults (this node's own networks and the private ranges) apply until you allow a network."
                    ),
                    id="allowlist-note",
                )
                yield DataTable(id="rules-table", cursor_type="row", zebra_stripes=True)
            with TabPane("4 Audit log", id="audit"):
                yield AuditFilter(id="audit-filter", placeholder="/ to filter by action, actor or detail")
                yield Static(id="audit-status")
                yield DataTable(id="audit-table", cursor_type="row", zebra_stripes=True)
                yield Static(id="audit-detail")
            with TabPane("5 Terms", id="terms"):
                yield TermsStatusPane(self.terms, id="terms-status-pane")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.title = "Admin"
        self.table("#users-table").add_columns("Name", "Role", "Key id", "Revoked")
        self.table("#nodes-table").add_columns("Name", "Node id", "Status", "This node")
        self.table("#rules-table").add_columns("Network", "Rule", "Source")
        self.table("#audit-table").add_columns("Seq", "Time", "Action", "Actor", "Detail")
        self.reload()
        self.subscription = self.feed.subscribe(self.node_changed)

    def on_unmount(self) -> None:
        self.subscription.close()

    def node_changed(self, event: FeedEvent) -> None:
        if isinstance(event, feed.DirectoryChanged):
            self.post_message(DirectoryChanged())

    @on(DirectoryChanged)
    def directory_changed(self) -> None:
        self.reload()

    def table(self, selector: str) -> DataTable[Text]:
        return self.query_one(selector, DataTable)

    # --- tabs and keys ---

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        tab = TAB_OF_ACTION.get(action)
        if tab is None:
            return True
        # Hidden (False), not just disabled: the same key acts differently on each tab.
        return tab == self.tab and not isinstance(self.focused, Input)

    def action_tab(self, tab: str) -> None:
        self.query_one(TabbedContent).active = tab

    @on(TabbedContent.TabActivated)
    def tab_activated(self, event: TabbedContent.TabActivated) -> None:
        self.tab = event.pane.id or "users"
        self.action_focus_table()
        self.refresh_bindings()

    def action_focus_table(self) -> None:
        self.table(TABLE_OF_TAB[self.tab]).focus()

    def selected(self, selector: str, what: str) -> str | None:
        """The highlighted row's key, or None (with a hint) when the table is empty."""
        key = highlighted(self.table(selector))
        if key is None:
            self.notify(f"There is no {what} to act on.", severity="warning")
        return key

    # --- loading ---

    def action_reload(self) -> None:
        self.reload()

    @work(group="admin-load", exclusive=True)
    async def reload(self) -> None:
        """Everything the tabs show, in one go: the newest load wins (the Terms tab loads itself)."""
        self.query_one(TermsStatusPane).reload(self.identity.whoami().role == "admin")
        try:
            identity, users, nodes = self.identity.whoami(), self.directory.users(revoked=True), self.directory.nodes()
            rules = await self.peers.network_rules(interface_networks())
            records = await self.audit_log.entries(AUDIT_LIMIT)
            verdict = await self.audit_log.verify()
        except RallypointError as exc:
            self.post_message(Failed(str(exc)))
            return
        known = {info.key.hex(): f"node {info.name}" for info in nodes} | {user.key.hex(): user.name for user in users}
        audit = [
            AuditRow(r.seq, r.at, r.action, known.get(r.actor) or ("-" if r.actor == "-" else self.directory.user_name(r.actor)), json.dumps(r.detail, ensure_ascii=False, sort_keys=True))
            for r in reversed(records)  # newest first
        ]
        self.post_message(AdminLoaded(identity, users, nodes, rules, audit, verdict))

    @on(AdminLoaded)
    def loaded(self, event: AdminLoaded) -> None:
        me = event.identity
        self.sub_title = f"{printable(me.user_name)} ({me.role}) on {printable(me.node_name)}"
        self.users = {user.key.hex(): user for user in event.users}
        self.nodes = {info.node_id: info for info in event.nodes}
        self.rules = {rule_key(rule): rule for rule in event.rules}
        self.audit, self.verdict = event.audit, event.verdict
        fill(
            self.table("#users-table"),
            ((key, (cell(u.name, NAME_WIDTH), cell(u.role), cell(ids.key_id(u.key)), cell("revoked" if u.revoked else ""))) for key, u in self.users.items()),
        )
        fill(
            self.table("#nodes-table"),
            ((key, (cell(n.name, NAME_WIDTH), cell(n.node_id), cell("revoked" if n.revoked else "trusted"), cell("this node" if n.this_node else ""))) for key, n in self.nodes.items()),
        )
        fill(
            self.table("#rules-table"),
            ((key, (cell(r.network), cell(r.action), cell(f"default: network of {r.interface}" if r.interface else "default" if r.default else "operator"))) for key, r in self.rules.items()),
        )
        self.show_audit()

    @on(Input.Changed, "#audit-filter")
    def show_audit(self) -> None:
        needle = self.query_one(AuditFilter).value.strip()
        rows = [row for row in self.audit if row.matches(needle)] if needle else self.audit
        fill(
            self.table("#audit-table"),
            (
                (str(row.seq), (Text(str(row.seq), justify="right"), cell(short_time(row.at)), cell(row.action), cell(row.actor, ACTOR_WIDTH), cell(row.detail, DETAIL_WIDTH)))
                for row in rows
            ),
            follow_first=True,
        )
        self.show_audit_detail()
        if self.verdict is None:
            return
        verdict = self.verdict
        status = f"Audit chain intact: {verdict.count} entries" if verdict.ok else f"Audit chain BROKEN after {verdict.count}: {verdict.problem}"
        if len(self.audit) < verdict.count:
            status += f" · newest {len(self.audit)} loaded"
        if needle:
            status += f" · {len(rows)} matching"
        widget = self.query_one("#audit-status", Static)
        widget.update(Content(status))
        widget.set_class(not verdict.ok, "error")

    @on(DataTable.RowHighlighted, "#audit-table")
    def show_audit_detail(self) -> None:
        key = highlighted(self.table("#audit-table"))
        row = next((row for row in self.audit if str(row.seq) == key), None)
        text = "" if row is None else f"#{row.seq} {iso_utc(row.at)} {printable(row.actor)}: {printable(row.action)} {printable(row.detail)}"
        self.query_one("#audit-detail", Static).update(Content(text))

    def action_filter(self) -> None:
        self.query_one(AuditFilter).focus()

    def action_workspace_audit(self) -> None:
        self.app.push_screen(WorkspaceAuditScreen(self.audit_log))

    # --- outcomes ---

    @work(group="admin-write")
    async def perform(self, call: Callable[[], Awaitable[str]]) -> None:
        """One admin call on the node; what it did (or why it refused) comes back as a message."""
        try:
            done = await call()
        except RallypointError as exc:
            self.post_message(Failed(str(exc), reload=True))
            return
        self.post_message(ActionDone(done))

    @on(ActionDone)
    def action_done(self, event: ActionDone) -> None:
        self.notify(printable(event.text), markup=False)
        self.reload()

    @on(Failed)
    def action_failed(self, event: Failed) -> None:
        self.notify(printable(event.reason), severity="error", markup=False)
        if event.reload:
            self.reload()  # a refusal is audited: the log has a new entry

    # --- users ---

    def selected_user(self) -> UserInfo | None:
        """The highlighted user, unless revoked (a revoked certificate takes no further changes)."""
        key = self.selected("#users-table", "user")
        user = None if key is None else self.users.get(key)
        if user is not None and user.revoked:
            self.notify(f"User {printable(user.name)} is revoked already.", severity="warning", markup=False)
            return None
        return user

    def action_add_user(self) -> None:
        def chosen(request: NewUser | None) -> None:
            if request is not None:
                self.after_admin_confirmed(request.role, request.name, partial(self.perform, partial(self.add_user, request)))

        self.app.push_screen(UserForm(), chosen)

    def after_admin_confirmed(self, role: str, who: str, then: Callable[[], object]) -> None:
        """Runs `then` at once, unless `role` is admin: then only once the operator confirms."""
        if role != "admin":
            then()
            return

        def confirmed(yes: bool | None) -> None:
            if yes:
                then()

        self.app.push_screen(RoleConfirm(who), confirmed)

    async def add_user(self, request: NewUser) -> str:
        user = await self.directory.add_user(request.name, request.role)
        return f"User {user.name} added ({user.role}). One-time secret to hand over: {user.initial_secret} (they set their own at first sign-in)"

    def action_change_role(self) -> None:
        user = self.selected_user()
        if user is None:
            return

        def chosen(role: str | None) -> None:
            if role is not None and role != user.role:
                self.after_admin_confirmed(role, user.name, partial(self.perform, partial(self.set_role, user.name, role)))

        self.app.push_screen(RoleForm(user), chosen)

    async def set_role(self, name: str, role: str) -> str:
        user = await self.directory.set_role(name, role)
        return f"{user.name} is now {user.role}"

    def action_revoke_user(self) -> None:
        user = self.selected_user()
        if user is None:
            return
        detail = f"Key {ids.key_id(user.key)} stops being trusted on every node the revocation reaches. It cannot be undone."
        self.confirm_revoke(ReasonForm(f"Revoke user {user.name}?", detail), user.key, f"User {user.name}")

    def confirm_revoke(self, form: ReasonForm, subject: bytes, what: str) -> None:
        def confirmed(reason: str | None) -> None:
            if reason is not None:
                self.perform(partial(self.revoke, subject, reason, what))

        self.app.push_screen(form, confirmed)

    async def revoke(self, subject: bytes, reason: str, what: str) -> str:
        await self.directory.revoke(subject, reason)
        return f"{what} revoked"

    # --- nodes ---

    def action_enroll(self) -> None:
        def chosen(request: Invitation | None) -> None:
            if request is not None:
                self.after_admin_confirmed(request.role, f"{request.user_name} (first user of node {request.node_name})", partial(self.enroll, request))

        self.app.push_screen(InviteForm(), chosen)

    @work(group="admin-write")
    async def enroll(self, request: Invitation) -> None:
        problem = await asyncio.to_thread(unwritable, request.path)
        if problem is not None:
            self.post_message(Failed(problem))
            return
        same = request.kit_path == request.path
        problem = "the recovery kit and the enrollment file need two files" if same else None
        if request.kit_path is not None and problem is None:
            problem = await asyncio.to_thread(unwritable, request.kit_path)
        if problem is not None:
            self.post_message(Failed(f"recovery kit: {problem}"))
            return
        try:
            enrollment = await self.enrollment.invite(request.node_name, request.user_name, request.role)
        except RallypointError as exc:
            self.post_message(Failed(str(exc), reload=True))
            return
        if enrollment.kit is not None:
            kit_path = request.kit_path or enrollment_kit_path(self.home, request.node_name, enrollment.node_id)
            request = dataclasses.replace(request, kit_path=kit_path)
        try:
            if enrollment.kit is not None and request.kit_path is not None:
                await asyncio.to_thread(write_kit, request.kit_path, enrollment.kit.data)
            await asyncio.to_thread(write_atomically, request.path, enrollment.data)
        except OSError as exc:
            # The certificates are in the directory already; without the file they are of no use.
            unwritten = exc.filename or request.path
            self.post_message(Failed(f"node {enrollment.node_id} was certified but {unwritten} could not be written ({exc.strerror or exc}): revoke it and enroll again", reload=True))
            return
        self.post_message(Enrolled(enrollment, request))

    @on(Enrolled)
    def enrolled(self, event: Enrolled) -> None:
        self.app.push_screen(EnrollmentCard(event.enrollment, event.request))
        self.reload()

    def action_revoke_node(self) -> None:
        key = self.selected("#nodes-table", "node")
        info = None if key is None else self.nodes.get(key)
        if info is None:
            return
        if info.revoked:
            self.notify(f"Node {printable(info.name)} is revoked already.", severity="warning", markup=False)
            return
        detail = f"Node id {info.node_id}. It gets the news at its next sync and wipes its data. It cannot be undone."
        if info.this_node:
            detail += "\nThis is the node this console runs on."
        self.confirm_revoke(ReasonForm(f"Revoke node {info.name}?", detail), info.key, f"Node {info.name}")

    def action_backup(self) -> None:
        def chosen(folder: Path | None) -> None:
            if folder is not None:
                self.perform(partial(self.take_backup, folder))

        self.app.push_screen(BackupForm(), chosen)

    async def take_backup(self, folder: Path) -> str:
        taken = await self.custody.backup(folder)
        return f"Backup written to {taken.path} ({taken.bytes:,} bytes)"

    # --- IP allowlist ---

    def action_set_rule(self, action: str) -> None:
        def chosen(network: str | None) -> None:
            if network is not None:
                self.perform(partial(self.set_rule, network, action))

        self.app.push_screen(NetworkForm(action), chosen)

    async def set_rule(self, network: str, action: str | None) -> str:
        normal = await self.peers.set_network_rule(network, action)
        return f"Rule for {normal} removed" if action is None else f"LAN sessions with {normal}, both directions: {action}"

    def action_remove_rule(self) -> None:
        key = self.selected("#rules-table", "rule")
        rule = None if key is None else self.rules.get(key)
        if rule is None:
            return
        if rule.default:
            self.notify(f"{rule.network} is a built-in default: it stays until you allow a network.", severity="warning", markup=False)
            return
        self.perform(partial(self.set_rule, rule.network, None))


def admin_screen(node: Node) -> AdminScreen:
    """The admin screen with the node's services it uses."""
    return AdminScreen(
        identity=node.identity,
        directory=node.directory,
        enrollment=node.enrollment,
        peers=node.peers,
        audit=node.audit,
        custody=node.custody,
        feed=node.feed,
        terms=node.directory.terms,
        home=node.home,
    )

"""The admin screen's Terms tab: the current terms of service and, per user, whether they
accepted that version, the newest version they accepted, when, and on which node; `p` opens the
dialog that publishes a new version (tui/dialogs/publish_terms.py). It loads itself in a worker
(`reload`) whenever the admin screen reloads, and after a publish."""

from __future__ import annotations

import asyncio

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.content import Content
from textual.widgets import DataTable, Static

from appliance.errors import RallypointError
from appliance.terms import MAX_TEXT_BYTES
from tui.dialogs.publish_terms import PublishTermsScreen, TermsDraft
from tui.files import read_text
from tui.formatting import short_time
from tui.messages import ActionDone, Failed, TermsLoaded
from tui.services import TermsService
from tui.text import printable

NAME_WIDTH = 20


def _cell(value: str, width: int | None = None) -> Text:
    text = Text(printable(value), no_wrap=True)
    if width is not None:
        text.truncate(width, overflow="ellipsis")
    return text


class TermsStatusPane(Vertical):
    BINDINGS = [Binding("p", "publish", "Publish terms")]

    def __init__(self, terms: TermsService, *, id: str | None = None) -> None:  # noqa: A002 - Textual's name
        super().__init__(id=id)
        self.terms = terms
        self.admin = False

    def compose(self) -> ComposeResult:
        yield Static(id="terms-summary")
        yield DataTable(id="terms-table", cursor_type="row", zebra_stripes=True)

    def on_mount(self) -> None:
        self.query_one(DataTable).add_columns("User", "Role", "Current", "Version", "Accepted", "Node")

    @work(group="terms-status", exclusive=True)
    async def reload(self, admin: bool) -> None:
        """Loads the standings; for anyone but an admin, says the tab is theirs (the node would
        refuse and audit each load)."""
        self.admin = admin
        self.refresh_bindings()
        if not admin:
            self.post_message(Failed("Only admins see who accepted the terms of service."))
            return
        try:
            standings = await self.terms.status()
        except RallypointError as exc:
            self.post_message(Failed(str(exc)))
            return
        self.post_message(TermsLoaded(self.terms.current(), standings))

    @on(TermsLoaded)
    def loaded(self, event: TermsLoaded) -> None:
        summary = self.query_one("#terms-summary", Static)
        table: DataTable[Text] = self.query_one(DataTable)
        table.clear()
        if event.current is None:
            summary.update(Content("No terms of service are published (an admin publishes them: rallypoint terms publish)."))
            return
        pending = [s.user for s in event.standings if not s.current]
        text = f"Version {event.current.version} · {printable(event.current.title)}: {len(event.standings) - len(pending)} of {len(event.standings)} users accepted"
        summary.update(Content(text + (f"; not yet: {', '.join(printable(u) for u in pending)}" if pending else "")))
        for s in event.standings:
            table.add_row(
                _cell(s.user, NAME_WIDTH),
                _cell(s.role),
                _cell("yes" if s.current else "no"),
                _cell("" if s.accepted_version is None else str(s.accepted_version)),
                _cell("" if s.accepted_at is None else short_time(s.accepted_at)),
                _cell(s.node_name or "", NAME_WIDTH),
                key=s.key.hex(),
            )

    @on(Failed)
    def failed(self, event: Failed) -> None:
        self.query_one("#terms-summary", Static).update(Content(printable(event.reason)))
        if self.admin:
            self.notify(printable(event.reason), severity="error", markup=False)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return self.admin if action == "publish" else True

    def action_publish(self) -> None:
        def chosen(draft: TermsDraft | None) -> None:
            if draft is not None:
                self.publish(draft)

        self.app.push_screen(PublishTermsScreen(self.terms.current()), chosen)

    @work(group="terms-publish", exclusive=True)
    async def publish(self, draft: TermsDraft) -> None:
        """Reads the file if one was named, then asks the node to publish (it checks the role,
        the version and the text, and audits it)."""
        try:
            text = draft.text if draft.path is None else await asyncio.to_thread(read_text, draft.path, MAX_TEXT_BYTES, "terms of service")
            info = await self.terms.publish(draft.version, draft.title, text)
        except RallypointError as exc:
            self.post_message(Failed(str(exc)))
            return
        self.post_message(ActionDone(f"Terms version {info.version} published: every user accepts them before reading or posting."))

    @on(ActionDone)
    def published(self, event: ActionDone) -> None:
        self.notify(event.text, markup=False)
        self.reload(self.admin)

"""The admin screen's Terms tab: the current terms of service and, per user, whether they
accepted that version, the newest version they accepted, when, and on which node. It loads
itself in a worker (`reload`) whenever the admin screen reloads."""

from __future__ import annotations

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.content import Content
from textual.widgets import DataTable, Static

from appliance.errors import RallypointError
from tui.formatting import short_time
from tui.messages import Failed, TermsLoaded
from tui.services import TermsService
from tui.text import printable

NAME_WIDTH = 20


def _cell(value: str, width: int | None = None) -> Text:
    text = Text(printable(value), no_wrap=True)
    if width is not None:
        text.truncate(width, overflow="ellipsis")
    return text


class TermsStatusPane(Vertical):
    def __init__(self, terms: TermsService, *, id: str | None = None) -> None:  # noqa: A002 - Textual's name
        super().__init__(id=id)
        self.terms = terms

    def compose(self) -> ComposeResult:
        yield Static(id="terms-summary")
        yield DataTable(id="terms-table", cursor_type="row", zebra_stripes=True)

    def on_mount(self) -> None:
        self.query_one(DataTable).add_columns("User", "Role", "Current", "Version", "Accepted", "Node")

    @work(group="terms-status", exclusive=True)
    async def reload(self, admin: bool) -> None:
        """Loads the standings; for anyone but an admin, says the tab is theirs (the node would
        refuse and audit each load)."""
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

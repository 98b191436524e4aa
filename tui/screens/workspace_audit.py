"""The workspace's audit across nodes: every node's trail held here, each chain verified
against that node's key (a verdict per node, the first bad entry named), and the entries of
all nodes or of the node picked - with the entries a node's restore from a backup superseded,
kept apart as evidence and marked so.

Opened from the admin screen's audit tab (`w`). The trails come from the node in a worker
and back as a message; everything in them was written by other nodes and is shown as plain
text (`cell`, `printable`), never as markup."""

from __future__ import annotations

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.content import Content
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from appliance.errors import RallypointError
from appliance.model import NodeTrail, TrailEntry, iso_utc
from tui.formatting import short_time
from tui.messages import Failed, WorkspaceAuditLoaded
from tui.services import AuditService
from tui.text import printable
from tui.widgets.tables import cell, fill, highlighted

ALL = "*"  # the nodes table's first row: every node's entries
NAME_WIDTH = 12
ACTOR_WIDTH = 10
DETAIL_WIDTH = 22
ENTRIES_SHOWN = 2000  # the newest entries listed (over the nodes shown); verdicts cover every entry


def verdict_text(trail: NodeTrail) -> str:
    if not trail.ok:
        return f"BROKEN after {trail.verified}"
    return f"intact ({trail.count}, {len(trail.superseded)} superseded)" if trail.superseded else f"intact ({trail.count})"


def entry_key(entry: TrailEntry) -> str:
    """A row's key: an entry a restore superseded shares its seq with the one that replaced it."""
    return f"{entry.origin}:{entry.seq}" + ("" if entry.superseded_at is None else f":{entry.hash.hex()[:16]}")


class WorkspaceAuditScreen(Screen[None]):
    """Nodes (top): name, node id, verdict, entries held. Entries (below): of the node
    highlighted above, or of all of them on the first row. Keys: Tab moves between the
    tables, F5 reloads, Escape goes back; the line at the bottom shows the highlighted entry
    in full, or the node's first problem."""

    CSS_PATH = "workspace_audit.tcss"
    AUTO_FOCUS = "#trail-nodes"
    BINDINGS = [Binding("escape", "app.pop_screen", "Back"), Binding("f5", "reload", "Refresh")]

    def __init__(self, audit: AuditService) -> None:
        super().__init__()
        self.audit = audit
        self.trails: list[NodeTrail] = []
        self.node: str = ALL

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(id="trail-status")
        yield DataTable(id="trail-nodes", cursor_type="row", zebra_stripes=True)
        yield DataTable(id="trail-entries", cursor_type="row", zebra_stripes=True)
        yield Static(id="trail-detail")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.title = "Workspace audit"
        self.query_one("#trail-nodes", DataTable).add_columns("Node", "Node id", "Verdict")
        self.query_one("#trail-entries", DataTable).add_columns("Node", "Seq", "Time", "Action", "Actor", "Detail")
        self.reload()

    def action_reload(self) -> None:
        self.reload()

    @work(group="workspace-audit", exclusive=True)
    async def reload(self) -> None:
        try:
            trails = await self.audit.workspace()
        except RallypointError as exc:
            self.post_message(Failed(str(exc)))
            return
        self.post_message(WorkspaceAuditLoaded(trails))

    @on(Failed)
    def failed(self, event: Failed) -> None:
        self.query_one("#trail-status", Static).update(Content(printable(event.reason)))
        self.notify(printable(event.reason), severity="error", markup=False)

    @on(WorkspaceAuditLoaded)
    def loaded(self, event: WorkspaceAuditLoaded) -> None:
        self.trails = event.trails
        broken = [t for t in self.trails if not t.ok]
        status = f"{len(self.trails)} nodes' trails held here, each verified against its node's key"
        if broken:
            status = f"{len(broken)} of {len(self.trails)} trails BROKEN: " + "; ".join(f"{printable(t.name)} {printable(t.problem or '')}" for t in broken)
        widget = self.query_one("#trail-status", Static)
        widget.update(Content(status))
        widget.set_class(bool(broken), "error")
        rows = [(ALL, (cell("all nodes"), cell(""), cell(f"{sum(t.count for t in self.trails)} entries")))]
        for trail in self.trails:
            name = trail.name + (" (this node)" if trail.this_node else " (revoked)" if trail.revoked else "")
            verdict = Text(verdict_text(trail), style="" if trail.ok else "bold red", no_wrap=True)
            rows.append((trail.node_id, (cell(name, NAME_WIDTH + 12), cell(trail.node_id), verdict)))
        fill(self.query_one("#trail-nodes", DataTable), rows)
        self.show_entries()

    @on(DataTable.RowHighlighted, "#trail-nodes")
    def node_highlighted(self) -> None:
        node = highlighted(self.query_one("#trail-nodes", DataTable)) or ALL
        if node != self.node:
            self.node = node
            self.show_entries()

    def shown(self) -> list[tuple[NodeTrail, TrailEntry]]:
        pairs = [(trail, entry) for trail in self.trails if self.node in (ALL, trail.node_id) for entry in (*trail.entries, *trail.superseded)]
        pairs.sort(key=lambda pair: (pair[1].at, pair[1].origin, pair[1].seq), reverse=True)  # newest first
        return pairs[:ENTRIES_SHOWN]

    def show_entries(self) -> None:
        rows = [
            (
                entry_key(entry),
                (
                    cell(trail.name, NAME_WIDTH),
                    Text(str(entry.seq), justify="right"),
                    cell(short_time(entry.at)),
                    cell(entry.action if entry.superseded_at is None else f"(superseded) {entry.action}"),
                    cell(entry.actor_name or entry.actor[:8], ACTOR_WIDTH),
                    cell(entry.detail, DETAIL_WIDTH),
                ),
            )
            for trail, entry in self.shown()
        ]
        fill(self.query_one("#trail-entries", DataTable), rows, follow_first=True)
        self.show_detail()

    @on(DataTable.RowHighlighted, "#trail-entries")
    def show_detail(self) -> None:
        key = highlighted(self.query_one("#trail-entries", DataTable))
        found = next(((t, e) for t, e in self.shown() if entry_key(e) == key), None)
        trail = next((t for t in self.trails if t.node_id == self.node), None)
        if found is not None:
            t, e = found
            via = "" if e.received_from is None else f" (from {e.received_from} at {iso_utc(e.received_at)})"
            if e.superseded_at is not None:
                via += f"; superseded at {iso_utc(e.superseded_at)} by a later restore of its node, sent by {e.superseded_by}"
            text = f"{printable(t.name)} #{e.seq} {iso_utc(e.at)} {printable(e.actor_name or e.actor)}: {printable(e.action)} {printable(e.detail)}{via}"
        elif trail is not None and trail.problem:
            text = f"{printable(trail.name)}: {printable(trail.problem)}"
        else:
            text = ""
        self.query_one("#trail-detail", Static).update(Content(text))

"""Peers and sync health: every node this one knows or has seen, live, and the health of the
node's backups (the last one, its check, a failed or missed daily backup)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.content import Content
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from appliance.errors import RallypointError
from appliance.feed import ChangeFeed, FeedEvent
from appliance.retention import BackupHealth, HealthState
from sync.interfaces import interface_networks
from sync.lan import SessionInfo
from tui.formatting import ago
from tui.messages import Failed, PeersLoaded
from tui.services import BackupHealthService, PeersService
from tui.text import printable

PEERS_REFRESH_SECONDS = 2.0  # the peers view also changes without LAN events (courier visits, clocks)

LanSessions = Callable[[], Sequence[SessionInfo] | None]  # the console's live LAN sessions; None: LAN sync is off


class PeersScreen(Screen[None]):
    """Every known and discovered node: trust, where it was seen, its live session, when it last
    synced by LAN and by courier, and how many of our changes it lacks. Live: LAN events reload it.
    Above the table, the backups' health: a failed or overdue daily backup stands out."""

    CSS_PATH = "peers.tcss"
    BINDINGS = [Binding("escape,f2", "app.pop_screen", "Back"), Binding("f5", "reload", "Refresh")]
    COLUMNS = ("Node", "Trust", "Address", "Session", "LAN sync", "Courier", "Behind")

    def __init__(self, *, peers: PeersService, feed: ChangeFeed, lan_sessions: LanSessions, backups: BackupHealthService) -> None:
        super().__init__()
        self.peers = peers
        self.feed = feed
        self.lan_sessions = lan_sessions
        self.backups = backups

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(id="peers-status")
        yield Static(id="peers-backup")
        yield DataTable(id="peers", cursor_type="row", zebra_stripes=True)
        yield Static(id="peers-refused")
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        self.title = "Peers and sync health"
        self.query_one(DataTable).add_columns(*self.COLUMNS)
        self.reload()
        self.set_interval(PEERS_REFRESH_SECONDS, self.reload)
        self.subscription = self.feed.subscribe(self.node_changed)

    def on_unmount(self) -> None:
        self.subscription.close()

    def node_changed(self, event: FeedEvent) -> None:
        """A sync stored changes: what each peer lacks has moved."""
        self.reload()

    def action_reload(self) -> None:
        self.reload()

    def reload(self) -> None:
        self.load_peers()

    @work(group="peers", exclusive=True)
    async def load_peers(self) -> None:
        try:
            rows = await self.peers.peer_overview(interface_networks())
        except RallypointError as exc:
            self.post_message(Failed(str(exc)))
            return
        try:
            health: BackupHealth | None = await self.backups.backup_health()
        except RallypointError:
            health = None  # the peers still show; the line says the health is unknown
        live = self.lan_sessions()
        sessions = {info.node_id: info for info in live} if live is not None else {}
        self.post_message(PeersLoaded(rows, sessions, live is not None, health))

    @on(PeersLoaded)
    def peers_loaded(self, event: PeersLoaded) -> None:
        table = self.query_one(DataTable)
        selected = table.cursor_row
        table.clear()
        for row in event.rows:
            session = event.sessions.get(row.node_id)
            cells = (
                printable(row.name) or row.node_id[:15],
                row.trust if row.conflict is None else "CONFLICT",
                f"{printable(row.address)}:{row.port}" if row.address else "-",
                "up" if session else "refused" if row.refused else "-",
                ago(row.last_sync),
                ago(row.last_courier),
                "-" if row.behind is None else str(row.behind),
            )
            table.add_row(*(Text(cell) for cell in cells), key=row.node_id)  # Text: never parsed as markup
        if event.rows:
            table.move_cursor(row=min(selected, len(event.rows) - 1))
        up = sum(1 for row in event.rows if row.node_id in event.sessions)
        lan = f"LAN sync on, {up} session{'s' if up != 1 else ''} up" if event.lan_on else "LAN sync is off in this console"
        conflicts = "".join(f"\n{printable(row.conflict)}" for row in event.rows if row.conflict)
        self.query_one("#peers-status", Static).update(Content(f"{len(event.rows)} node(s) · {lan} · Behind: our changes it lacks{conflicts}"))
        refused = [f"{printable(row.name) or row.node_id}: not synced by LAN: {printable(row.refused)}" for row in event.rows if row.refused]
        self.query_one("#peers-refused", Static).update(Content("\n".join(refused)))
        self.show_backups(event.backups)

    def show_backups(self, health: BackupHealth | None) -> None:
        line = self.query_one("#peers-backup", Static)
        line.update(Content(printable(health.summary) if health else "Backups: their health could not be read"))  # Content: plain text
        line.set_class(health is None or health.state is not HealthState.OK, "-warning")
        line.set_class(health is not None and health.state is HealthState.FAILED, "-failed")

    @on(Failed)
    def failed(self, event: Failed) -> None:
        self.notify(printable(event.reason), severity="error", markup=False)

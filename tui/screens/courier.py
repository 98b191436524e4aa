"""The console's courier flow: preview, import, export and courier runs against a USB stick, with a
progress bar, a plain-text report of each run and the node's quarantine.

Like the rest of the console, every node and stick call runs in a worker and comes
back as a Message; text from the network or the stick goes through `printable()` into `Content`,
never parsed as markup. The report functions use no Textual: they can move to a module the CLI
shares (tui/reports.py)."""

from __future__ import annotations

import asyncio
import glob
import os
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from pathlib import Path

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.content import Content
from textual.screen import Screen
from textual.widgets import Footer, Header, Input, Label, ProgressBar, SelectionList, Static, TabbedContent, TabPane
from textual.widgets.selection_list import Selection

from appliance.errors import RallypointError
from appliance.node import Node
from sync import quarantine, sneakernet, stick
from sync.defaults import DEFAULT_MAX_BYTES, MiB
from sync.errors import SyncError
from sync.quarantine import QuarantineListing
from sync.sneakernet import Progress
from tui.formatting import clock_seconds, date_time
from tui.messages import Failed, JobDone, NodesLoaded, ProgressChanged, QuarantineLoaded
from tui.reports import export_report_text, import_report_text
from tui.text import printable

STICK_MOUNTS = ("/media/*/*", "/run/media/*/*")  # where desktops mount removable media
MAX_QUARANTINE_LISTED = 200  # newest first; the rest are counted

Job = Callable[[Path], Awaitable[str]]  # one run against the stick's folder, returning its report


def quarantine_text(folder: Path, listing: QuarantineListing) -> str:
    """The quarantined bundles, newest first, each with the reason its import gave."""
    shown = printable(str(folder))
    if not listing.bundles:
        return f"Nothing in quarantine ({shown})."
    lines = [f"{listing.total} rejected bundle(s) in {shown}, newest first:"]
    for bundle in listing.bundles:
        lines += ["", printable(bundle.name), f"  {date_time(bundle.mtime_ns / 1e9)} · {bundle.size:,} bytes", f"  {printable(bundle.reason)}"]
    if listing.total > len(listing.bundles):
        lines += ["", f"… and {listing.total - len(listing.bundles)} older one(s)."]
    return "\n".join(lines)


def mounted_stick(patterns: Sequence[str]) -> Path | None:
    """The first mounted removable medium, if any: the folder to offer by default."""
    for pattern in patterns:
        for candidate in sorted(glob.glob(pattern)):
            if os.path.ismount(candidate):
                return Path(candidate)
    return None


# --- the screen ---------------------------------------------------------------------------

TITLES = {"preview": "Preview import", "import": "Import", "export": "Export", "courier": "Courier"}


class CourierScreen(Screen[None]):
    """A courier stop for an operator: the stick's folder, the peers to export for and the size
    cap, then one key per action; a progress bar; the report of the last run; the quarantine.

    Keys: p preview, i import, x export (for the ticked peers), c courier (import, then export for
    every peer), r quarantine (show and refresh), q/escape back. Letters type into a text field,
    so while one has focus the footer shows alt+p, alt+i, alt+x and alt+c instead (priority
    bindings, so the field never sees them); escape works everywhere. While a run is going on,
    the actions and Back are dimmed: one run at a time, and none is abandoned half-way."""

    CSS_PATH = "courier.tcss"  # loaded into the app's stylesheet: its rules are scoped to CourierScreen
    AUTO_FOCUS = ""  # on_mount decides: the folder field when it is empty, else the peers
    BINDINGS = [
        Binding("p", "run('preview')", "Preview"),
        Binding("i", "run('import')", "Import"),
        Binding("x", "run('export')", "Export"),
        Binding("c", "run('courier')", "Courier"),
        Binding("alt+p", "run('preview', True)", "Preview", priority=True),
        Binding("alt+i", "run('import', True)", "Import", priority=True),
        Binding("alt+x", "run('export', True)", "Export", priority=True),
        Binding("alt+c", "run('courier', True)", "Courier", priority=True),
        Binding("r", "quarantine", "Quarantine"),
        Binding("escape", "back", "Back"),
        Binding("q", "back", "Back", show=False),
    ]

    def __init__(self, node: Node) -> None:
        super().__init__()
        self.node = node
        self.quarantine_dir = node.home / sneakernet.QUARANTINE_DIR
        self.busy = False
        self.running = ("", Path())  # the title and folder of the run going on, or the last one
        self.peer_ids: list[str] = []  # as listed, to keep the operator's ticks across reloads

    def compose(self) -> ComposeResult:
        found = mounted_stick(STICK_MOUNTS)  # a glob of /media: cheap enough to do here
        yield Header()
        with Vertical(id="courier-form"):
            with Horizontal(classes="courier-row"):
                yield Label("Stick folder", classes="courier-label")
                yield Input(str(found) if found else "", id="courier-stick", placeholder="where the stick is mounted, e.g. /media/you/STICK")
            yield Static(f"Bundles on a stick: {stick.BUNDLE_FOLDER}/ (names say nothing)", id="courier-hint")
            with Horizontal(id="courier-export"):
                yield Label("Export for", classes="courier-label")
                yield SelectionList[str](id="courier-peers")
                yield Label("MB per bundle", id="courier-cap-label")
                yield Input(str(DEFAULT_MAX_BYTES // MiB), id="courier-cap", type="number")
            with Horizontal(classes="courier-row"):
                yield Label("Progress", classes="courier-label")
                yield ProgressBar(total=1, show_eta=False, id="courier-bar")
                yield Static("Ready.", id="courier-phase")
        with TabbedContent(id="courier-tabs"):
            with TabPane("Report", id="courier-report-tab"):
                with VerticalScroll(classes="courier-scroll"):
                    yield Static("Nothing run yet.", id="courier-report")
            with TabPane("Quarantine", id="courier-quarantine-tab"):
                with VerticalScroll(classes="courier-scroll"):
                    yield Static(id="courier-quarantine")
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        self.title = "Courier"
        self.sub_title = "USB stick sync"
        folder = self.query_one("#courier-stick", Input)
        (self.query_one("#courier-peers") if folder.value else folder).focus()
        self.load_peers()
        self.load_quarantine()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        typing = isinstance(self.focused, Input)
        if action == "run":
            if (parameters[1:] == (True,)) != typing:  # a letter, or its alt+ twin in a text field: one of them shows
                return False
            return None if self.busy else True
        if action == "quarantine":
            return not typing
        if action == "back":
            return None if self.busy else True
        return True

    def set_busy(self, busy: bool) -> None:
        self.busy = busy
        self.refresh_bindings()

    # --- running an action ---

    def action_run(self, action: str, from_field: bool = False) -> None:
        """`from_field` tells the alt+ twins apart for `check_action`; the run is the same."""
        folder = self.query_one("#courier-stick", Input).value.strip()
        if not folder:
            self.refuse("Type the stick's folder first.", "#courier-stick")
            return
        job: Job
        if action in ("preview", "import"):
            job = partial(self.import_job, preview=action == "preview")
        else:
            max_bytes = self.max_bytes()
            if max_bytes is None:
                return
            if action == "courier":
                job = partial(self.courier_job, max_bytes=max_bytes)
            else:
                chosen = self.query_one("#courier-peers", SelectionList).selected
                if not chosen:
                    self.refuse("Tick at least one node to export for (space ticks).", "#courier-peers")
                    return
                job = partial(self.export_job, for_nodes=list(chosen), max_bytes=max_bytes)
        self.set_busy(True)
        self.query_one("#courier-bar", ProgressBar).update(total=1, progress=0)
        self.query_one("#courier-phase", Static).update(Content(f"{TITLES[action]}…"))
        self.running = (TITLES[action], Path(folder).expanduser())
        self.run_job(self.running[1], job)

    def max_bytes(self) -> int | None:
        try:
            max_bytes = int(float(self.query_one("#courier-cap", Input).value) * MiB)
        except ValueError:
            max_bytes = 0
        if max_bytes < sneakernet.MIN_MAX_BYTES:
            self.refuse(f"The size cap must be a number of MB, at least {sneakernet.MIN_MAX_BYTES / MiB:g}.", "#courier-cap")
            return None
        return max_bytes

    def refuse(self, reason: str, focus: str) -> None:
        self.notify(reason, severity="warning", markup=False)
        self.query_one(focus).focus()

    @work(group="courier")
    async def run_job(self, root: Path, job: Job) -> None:
        try:
            if not await asyncio.to_thread(root.is_dir):
                self.post_message(Failed(f"{root}: no such folder (is the stick mounted?)"))
                return
            report = await job(root)
        except (RallypointError, SyncError, OSError) as exc:  # StickError is a SyncError
            self.post_message(Failed(str(exc)))
            return
        self.post_message(JobDone(report))

    def report_progress(self, progress: Progress) -> None:
        """Called in the worker's coroutine: the bar is updated from the screen's queue."""
        self.post_message(ProgressChanged(progress))

    def names(self) -> dict[str, str]:
        return {info.node_id: info.name for info in self.node.directory.nodes()}

    async def import_job(self, root: Path, *, preview: bool) -> str:
        report = await sneakernet.import_bundles(self.node, root, preview=preview, progress=self.report_progress)
        return import_report_text(report, self.quarantine_dir, self.names())

    async def export_job(self, root: Path, *, for_nodes: list[str], max_bytes: int) -> str:
        report = await sneakernet.export_bundles(self.node, root, for_nodes=for_nodes, max_bytes=max_bytes, progress=self.report_progress)
        return export_report_text(report, self.names())

    async def courier_job(self, root: Path, *, max_bytes: int) -> str:
        imported, exported = await sneakernet.courier(self.node, root, progress=self.report_progress, max_bytes=max_bytes)
        names = self.names()
        export = export_report_text(exported, names) if exported else "Nothing exported."
        return import_report_text(imported, self.quarantine_dir, names) + "\n\n" + export

    @on(ProgressChanged)
    def progress_changed(self, event: ProgressChanged) -> None:
        progress = event.progress
        self.query_one("#courier-bar", ProgressBar).update(total=progress.total, progress=progress.done)
        self.query_one("#courier-phase", Static).update(Content(f"{progress.phase} {progress.done}/{progress.total} {printable(progress.label)}"))

    @on(JobDone)
    def job_done(self, event: JobDone) -> None:
        self.finished("done", event.report)
        self.load_peers()  # an import can bring new nodes (or revocations)
        self.load_quarantine()

    @on(Failed)
    def job_failed(self, event: Failed) -> None:
        """A notification, and the report too: a toast goes away, the operator may be elsewhere."""
        self.finished("failed", f"Failed: {printable(event.reason)}")
        self.notify(printable(f"{self.running[0]} failed: {event.reason}"), severity="error", markup=False)

    def finished(self, outcome: str, report: str) -> None:
        title, root = self.running
        self.set_busy(False)
        self.query_one("#courier-phase", Static).update(Content(f"{title}: {outcome}."))
        stamp = clock_seconds()
        self.query_one("#courier-report", Static).update(Content(f"{title} · {printable(str(root))} · {stamp}\n\n{report}"))
        self.query_one(TabbedContent).active = "courier-report-tab"

    # --- peers and quarantine ---

    @work(group="peers", exclusive=True)
    async def load_peers(self) -> None:
        self.post_message(NodesLoaded([info for info in self.node.directory.nodes() if not info.this_node and not info.revoked]))

    @on(NodesLoaded)
    def peers_loaded(self, event: NodesLoaded) -> None:
        """New peers come ticked; one the operator unticked stays unticked."""
        peers = self.query_one("#courier-peers", SelectionList)
        unticked = set(self.peer_ids) - set(peers.selected)
        self.peer_ids = [info.node_id for info in event.peers]
        peers.clear_options()
        peers.add_options(Selection(Content(f"{printable(info.name)} {info.node_id}"), info.node_id, info.node_id not in unticked) for info in event.peers)

    def action_quarantine(self) -> None:
        self.query_one(TabbedContent).active = "courier-quarantine-tab"
        self.load_quarantine()

    @work(group="quarantine", exclusive=True)
    async def load_quarantine(self) -> None:
        try:
            found = await asyncio.to_thread(quarantine.listing, self.quarantine_dir, limit=MAX_QUARANTINE_LISTED)
        except SyncError as exc:
            self.post_message(QuarantineLoaded(f"Cannot read {printable(str(self.quarantine_dir))}: {exc}"))
            return
        self.post_message(QuarantineLoaded(quarantine_text(self.quarantine_dir, found)))

    @on(QuarantineLoaded)
    def quarantine_loaded(self, event: QuarantineLoaded) -> None:
        self.query_one("#courier-quarantine", Static).update(Content(event.text))

    def action_back(self) -> None:
        self.app.pop_screen()

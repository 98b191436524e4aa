"""The console's courier screen driven through Pilot at 80x24, against real nodes and a tmp stick."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from rich.cells import cell_len
from textual import events
from textual.pilot import Pilot
from textual.widgets import Input, ProgressBar, SelectionList, Static, TabbedContent

from appliance.model import ImportSummary
from appliance.node import Node
from sync import sneakernet, stick
from tests.conftest import PASSPHRASE as WORKSPACE_PASSPHRASE
from tests.conftest import make_workspace
from tests.console_helpers import SIZE, main_screen, screen_text, until, until_shown
from tui.app import RallypointApp
from tui.screens import courier
from tui.screens.courier import CourierScreen

MESSAGES = ["one", "two", "three"]


@dataclass(frozen=True)
class Route:
    """alpha (with #general and three messages), bravo and charlie: one workspace; an empty stick."""

    alpha: Path
    bravo: Path
    charlie: Path
    stick: Path


@pytest.fixture(autouse=True)
def no_mounted_sticks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever this machine has mounted under /media is no default for these tests."""
    monkeypatch.setattr(courier, "STICK_MOUNTS", ())


@pytest.fixture
async def route(tmp_path: Path) -> Route:
    alpha, bravo, charlie = await make_workspace(tmp_path, "bravo", "charlie")
    await alpha.chat.create_channel("general")
    await alpha.chat.post_many("general", MESSAGES)
    for node in (alpha, bravo, charlie):
        await node.close()
    (tmp_path / "stick").mkdir()
    return Route(tmp_path / "alpha", tmp_path / "bravo", tmp_path / "charlie", tmp_path / "stick")


async def export_for_bravo(home: Path, root: Path) -> None:
    async with await Node.open(home, WORKSPACE_PASSPHRASE) as node:
        await sneakernet.export_bundles(node, root, for_nodes=["bravo-node"])


def bundle_files(root: Path) -> list[Path]:
    return sorted((root / stick.STICK_DIR).glob("*/*.rpb"))


@asynccontextmanager
async def courier_console(home: Path) -> AsyncIterator[tuple[Pilot[Any], CourierScreen]]:
    """The console unlocked on `home`, with the courier screen pushed over the main screen."""
    app = RallypointApp(home, WORKSPACE_PASSPHRASE)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await main_screen(pilot)
        assert app.node is not None
        app.push_screen(CourierScreen(app.node))
        await until(pilot, lambda: isinstance(app.screen, CourierScreen), "the courier screen")
        screen = app.screen
        assert isinstance(screen, CourierScreen)
        await until(pilot, lambda: bool(screen.peer_ids), "the peers list")
        yield pilot, screen


def report(screen: CourierScreen) -> str:
    return str(screen.query_one("#courier-report", Static).content)


def quarantine(screen: CourierScreen) -> str:
    return str(screen.query_one("#courier-quarantine", Static).content)


def send_key(pilot: Pilot[Any], key: str) -> None:
    """A key press as the terminal driver delivers it. (Pilot.press also waits for the process to
    go idle, up to seconds, which a running import never lets happen.)"""
    pilot.app.post_message(events.Key(key, key))


def record_notifications(pilot: Pilot[Any], monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every notification's text, unwrapped (a long toast wraps on screen); toasts still show."""
    notes: list[str] = []
    notify = pilot.app.notify

    def recording(message: str, **options: Any) -> None:
        notes.append(message)
        notify(message, **options)

    monkeypatch.setattr(pilot.app, "notify", recording)
    return notes


def footer(pilot: Pilot[Any]) -> str:
    return screen_text(pilot.app).splitlines()[-1]


async def choose_stick(pilot: Pilot[Any], screen: CourierScreen, root: Path) -> None:
    """Types nothing: sets the folder, then leaves the field so that plain letters act."""
    screen.query_one("#courier-stick", Input).value = str(root)
    screen.query_one("#courier-peers", SelectionList).focus()
    await until(pilot, lambda: "p Preview" in footer(pilot), "the letter keys")


async def test_export_writes_bundles_for_the_ticked_peers_only(route: Route) -> None:
    async with courier_console(route.alpha) as (pilot, screen):
        assert "bravo-node" in screen_text(pilot.app) and "charlie-node" in screen_text(pilot.app)
        await choose_stick(pilot, screen, route.stick)
        await pilot.press("end", "space")  # untick charlie-node, the last (the list is sorted by name)
        await pilot.press("x")
        await until(pilot, lambda: "Wrote 1 bundle(s)" in report(screen), "the export report")
        (written,) = bundle_files(route.stick)
        assert written.parent.name == stick.BUNDLES  # names no one: the report says it is for bravo-node
        assert written.name in report(screen)
        assert "for bravo-node:" in report(screen) and "charlie" not in report(screen)
        assert f"{written.stat().st_size:,} bytes" in report(screen)


async def test_preview_changes_nothing_then_import_brings_the_messages(route: Route) -> None:
    await export_for_bravo(route.alpha, route.stick)
    before = {path: path.read_bytes() for path in bundle_files(route.stick)}
    async with courier_console(route.bravo) as (pilot, screen):
        node = screen.node
        await choose_stick(pilot, screen, route.stick)
        await pilot.press("p")
        await until(pilot, lambda: "Would import" in report(screen), "the preview report")
        assert "Preview: nothing was changed" in report(screen)
        assert "Would import 1 bundle(s) from 1 node(s): alpha" in report(screen)
        assert f"#general: {len(MESSAGES)} new message(s)" in report(screen)
        assert await node.views.list_channels() == []
        assert {path: path.read_bytes() for path in bundle_files(route.stick)} == before

        await pilot.press("i")
        await until(pilot, lambda: "Imported" in report(screen), "the import report")
        assert "Imported 1 bundle(s) from 1 node(s): alpha" in report(screen)
        assert f"#general: {len(MESSAGES)} new message(s)" in report(screen)
        assert [message.text for message in await node.views.read("general", mark_read=False)] == MESSAGES
        assert bundle_files(route.stick) == []  # an imported bundle leaves the stick
        bar = screen.query_one("#courier-bar", ProgressBar)
        assert bar.total == bar.progress == 1
        await until_shown(pilot, "100%")


async def test_courier_imports_then_exports_for_every_peer(route: Route) -> None:
    await export_for_bravo(route.alpha, route.stick)
    async with courier_console(route.bravo) as (pilot, screen):
        await choose_stick(pilot, screen, route.stick)
        await pilot.press("c")
        await until(pilot, lambda: "Wrote" in report(screen), "the courier report")
        assert "Imported 1 bundle(s) from 1 node(s): alpha" in report(screen)
        assert "Wrote 2 bundle(s)" in report(screen)  # for alpha and charlie, ticked or not
        assert "for alpha:" in report(screen) and "for charlie-node:" in report(screen)
    assert len(bundle_files(route.stick)) == 2


async def test_a_tampered_bundle_is_rejected_and_listed_in_quarantine(route: Route) -> None:
    await export_for_bravo(route.alpha, route.stick)
    (bundle,) = bundle_files(route.stick)
    data = bytearray(bundle.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bundle.write_bytes(bytes(data))
    async with courier_console(route.bravo) as (pilot, screen):
        await choose_stick(pilot, screen, route.stick)
        assert "Nothing in quarantine" in quarantine(screen)
        await pilot.press("i")
        await until(pilot, lambda: "Rejected" in report(screen), "the import report")
        assert "Imported 0 bundle(s)" in report(screen)
        assert f"Rejected 1 bundle(s) (kept in quarantine: {route.bravo / 'quarantine'}):" in report(screen)
        assert f"{bundle.name}: Tampered:" in report(screen)
        assert await screen.node.views.list_channels() == []

        await pilot.press("r")
        await until(pilot, lambda: screen.query_one(TabbedContent).active == "courier-quarantine-tab", "the quarantine tab")
        await until(pilot, lambda: bundle.name in quarantine(screen), "the quarantined bundle")
        assert "1 rejected bundle(s)" in quarantine(screen)
        assert "  Tampered: " in quarantine(screen)
        assert f"{len(data):,} bytes" in quarantine(screen)
        await until_shown(pilot, bundle.name)


async def test_the_screen_answers_keys_while_a_large_import_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    alpha, bravo = await make_workspace(tmp_path, "bravo")
    await alpha.chat.create_channel("general")
    await alpha.chat.post_many("general", [f"message {i}" for i in range(4000)])
    root = tmp_path / "stick"
    root.mkdir()
    await sneakernet.export_bundles(alpha, root)  # one bundle: its import is one long verification and transaction
    await alpha.close()
    await bravo.close()
    async with courier_console(tmp_path / "bravo") as (pilot, screen):
        node = screen.node
        started = finished = 0
        import_batches = node.intake.import_batches

        async def counting(*args: Any, **kwargs: Any) -> ImportSummary:
            nonlocal started, finished
            started += 1
            summary: ImportSummary = await import_batches(*args, **kwargs)
            finished += 1
            return summary

        monkeypatch.setattr(node.intake, "import_batches", counting)
        handled: list[tuple[int, bool]] = []  # imports finished when the key was handled; the run going on?
        show_quarantine = screen.action_quarantine

        def recording() -> None:
            handled.append((finished, screen.busy))
            show_quarantine()

        monkeypatch.setattr(screen, "action_quarantine", recording)
        await choose_stick(pilot, screen, root)
        send_key(pilot, "i")
        await until(pilot, lambda: started == 1, "the import to start")
        send_key(pilot, "r")
        await until(pilot, lambda: bool(handled), "the key to be handled")
        assert handled == [(0, True)]  # handled while the bundle was being imported, not after
        send_key(pilot, "i")  # dimmed during a run: no second import, and no leaving half-way
        send_key(pilot, "escape")
        await until(pilot, lambda: "Imported" in report(screen), "the import", timeout=60)
        assert started == 1 and pilot.app.screen is screen
        assert "Imported 1 bundle(s) from 1 node(s): alpha" in report(screen)
        assert "#general: 4000 new message(s)" in report(screen)
        bar = screen.query_one("#courier-bar", ProgressBar)
        assert bar.total == bar.progress == 1
        assert len(await node.views.read("general", limit=10_000, mark_read=False)) == 4000


async def test_letters_type_in_fields_where_alt_keys_act(route: Route, monkeypatch: pytest.MonkeyPatch) -> None:
    await export_for_bravo(route.alpha, route.stick)
    async with courier_console(route.bravo) as (pilot, screen):
        notes = record_notifications(pilot, monkeypatch)
        field = screen.query_one("#courier-stick", Input)
        assert field.has_focus and field.value == ""  # no stick mounted: the folder comes first
        await pilot.press("alt+i")
        await until_shown(pilot, "Type the stick's folder first.")
        await pilot.press(*"pixcrq")
        assert field.value == "pixcrq" and report(screen) == "Nothing run yet."
        assert isinstance(pilot.app.screen, CourierScreen)
        for label in ("alt+p Preview", "alt+i Import", "alt+x Export", "alt+c Courier", "esc Back"):
            assert label in footer(pilot)
        assert "r Quarantine" not in footer(pilot)

        field.value = str(route.stick)
        await pilot.press("alt+p")
        await until(pilot, lambda: "Would import 1 bundle(s)" in report(screen), "the preview from the field")
        assert field.has_focus

        field.value = str(route.stick / "nowhere")
        await pilot.press("alt+i")
        await until(pilot, lambda: "Failed:" in report(screen), "the missing folder")
        assert "nowhere: no such folder (is the stick mounted?)" in report(screen)
        assert any(note.startswith("Import failed: ") and "no such folder" in note for note in notes)

        cap = screen.query_one("#courier-cap", Input)
        cap.value = "0.01"
        await pilot.press("alt+x")
        await until_shown(pilot, "The size cap must be a number of MB")
        assert cap.has_focus

        (route.stick / "broken").mkdir()
        (route.stick / "broken" / stick.STICK_DIR).write_text("a file where the stick's folder belongs")
        field.value = str(route.stick / "broken")
        cap.value = "64"
        await pilot.press("alt+x")
        await until(pilot, lambda: any(note.startswith("Export failed: ") for note in notes), "the stick error")
        assert "Failed: " in report(screen) and str(screen.query_one("#courier-phase", Static).content) == "Export: failed."
        assert not screen.busy and isinstance(pilot.app.screen, CourierScreen)

        await pilot.press("escape")
        await main_screen(pilot)


async def test_a_mounted_stick_is_offered_and_the_peers_take_focus(route: Route, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mounted = tmp_path / "media" / "alice" / "STICK"
    mounted.mkdir(parents=True)
    (tmp_path / "media" / "alice" / "not-mounted").mkdir()
    monkeypatch.setattr(courier, "STICK_MOUNTS", (str(tmp_path / "media" / "*" / "*"),))
    monkeypatch.setattr(os.path, "ismount", lambda path: str(path) == str(mounted))
    async with courier_console(route.alpha) as (pilot, screen):
        assert screen.query_one("#courier-stick", Input).value == str(mounted)
        assert screen.query_one("#courier-peers", SelectionList).has_focus
        await pilot.press("q")
        await main_screen(pilot)


async def test_everything_fits_80_columns(route: Route) -> None:
    async with courier_console(route.alpha) as (pilot, screen):
        await choose_stick(pilot, screen, route.stick)
        await pilot.press("x")
        await until(pilot, lambda: "Wrote 2 bundle(s)" in report(screen), "the export report")
        bar = screen.query_one("#courier-bar", ProgressBar)
        assert bar.total == bar.progress == 2  # one step per peer
        shown = screen_text(pilot.app)
        lines = shown.splitlines()
        assert len(lines) == 24 and all(cell_len(line) <= 80 for line in lines)
        assert "Bundles on a stick: rallypoint/bundles/ (names say nothing)" in shown
        for peer in screen.peer_ids:
            assert peer in shown  # names and ids are not cut
        for bundle in bundle_files(route.stick):
            assert f"  {bundle.name}" in shown  # the file names fit on a line
        assert screen.query_one("#courier-report-tab .courier-scroll").max_scroll_x == 0
        letters = ("p Preview", "i Import", "x Export", "c Courier", "r Quarantine", "esc Back", "^q Quit")
        assert all(label in footer(pilot) for label in letters)
        screen.query_one("#courier-stick", Input).focus()
        await until(pilot, lambda: "alt+p" in footer(pilot), "the field's keys")
        assert all(label in footer(pilot) for label in ("alt+p Preview", "alt+i Import", "alt+x Export", "alt+c Courier", "esc Back", "^q Quit"))

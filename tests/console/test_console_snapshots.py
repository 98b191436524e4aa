"""The main screens at 80x24, compared with committed text snapshots (tests/snapshots/). Keys,
ids and times come from a fixed clock and randomness, so the screens are the same on every run.

    RALLYPOINT_UPDATE_SNAPSHOTS=1 pytest tests/console/test_console_snapshots.py

rewrites the snapshots and the README's SVG screenshots (docs/screenshots/) from the app itself."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot

from appliance.model import Enrollment, RecoveryKit
from appliance.node import Attachment, Node
from tests.conftest import FAST, PASSPHRASE, REPO
from tests.console_helpers import SIZE, Steps, main_screen, screen_text, until, until_shown
from tui.app import RallypointApp
from tui.dialogs.admin_forms import EnrollmentCard
from tui.messages import Invitation
from tui.screens.lock import LockScreen
from tui.screens.mfa_enrol import MfaEnrolScreen
from tui.screens.peers import PeersScreen
from tui.widgets.message_list import MessageList

SNAPSHOTS = REPO / "tests" / "snapshots"
SCREENSHOTS = REPO / "docs" / "screenshots"
UPDATE = os.environ.get("RALLYPOINT_UPDATE_SNAPSHOTS") == "1"
START_MS = 1_790_000_000_000  # 2026-09-21, 14:13 UTC


@pytest.fixture(autouse=True)
def utc(monkeypatch: pytest.MonkeyPatch) -> None:
    """Times are shown in local time: the snapshots are taken in UTC."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()


@pytest.fixture
async def home(tmp_path: Path) -> Path:
    home = tmp_path / "alpha"
    steps = Steps(b"alpha", START_MS)  # moves only between the actions below, whatever the node's upkeep reads
    node = await Node.init(home, workspace_name="acme", user_name="alice", node_name="alpha", passphrase=PASSPHRASE, kdf=FAST, clock=steps.clock, rng=steps.rng)
    async with node:
        await node.enrollment.invite("bravo", "bob", kdf=FAST)
        await node.enrollment.invite("charlie", "carol", role="observer", kdf=FAST)
        steps.step()
        await node.chat.create_channel("general", purpose="all hands")
        await node.chat.create_channel("ops")
        steps.step()
        await node.chat.post("ops", "generator check at 18:00")
        steps.step()
        root = await node.chat.post("general", "Water point moved to the north gate. @bob can you confirm?")
        steps.step()
        await node.chat.post("general", "Confirmed, signs are up.", reply_to=root)
        steps.step()
        await node.chat.post("general", "Map of the new layout", attachments=[Attachment("layout.png", b"\x89PNG" + bytes(2000))])
        await node.chat.react(root, "👍")
        steps.step()
        await node.chat.post("general", "Courier leaves at dawn; bring the stick.")
    return home


async def check(pilot: Pilot[Any], name: str) -> None:
    await pilot.pause(0.3)
    shown = screen_text(pilot.app)
    assert all(len(line) <= SIZE[0] for line in shown.splitlines())
    path = SNAPSHOTS / f"{name}.txt"
    if UPDATE:
        path.write_text(shown)
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        pilot.app.save_screenshot(f"{name}.svg", path=str(SCREENSHOTS))
    assert shown == path.read_text(), f"the {name} screen changed; if on purpose, rerun with RALLYPOINT_UPDATE_SNAPSHOTS=1"


async def test_main_screens_match_their_snapshots(home: Path) -> None:
    async with RallypointApp(home, PASSPHRASE).run_test(size=SIZE) as pilot:
        screen = await main_screen(pilot)
        await until_shown(pilot, "Courier leaves at dawn")
        await check(pilot, "channel")
        messages = screen.query_one(MessageList)
        messages.focus()
        messages.highlighted = 0
        await pilot.press("t")
        await until_shown(pilot, "Thread in # general")
        await check(pilot, "thread")
        await pilot.press("escape", "f2")
        await until(pilot, lambda: isinstance(pilot.app.screen, PeersScreen), "the peers view")
        await until_shown(pilot, "charlie")
        await check(pilot, "peers")
        await pilot.press("escape", "f1")
        await until_shown(pilot, "Keys (ctrl+p")
        await check(pilot, "help")


async def test_sign_in_and_lock_screens_match_their_snapshots(home: Path) -> None:
    steps = Steps(b"settings", START_MS + 3_600_000)
    async with await Node.open(home, PASSPHRASE, clock=steps.clock, rng=steps.rng) as node:
        await node.directory.add_user("dave", secret="dave-initial-1")
        steps.step()
        await node.signin.set_console_lock(1)
    async with RallypointApp(home).run_test(size=SIZE) as pilot:
        await until_shown(pilot, "Unlock the node")
        await pilot.press(*PASSPHRASE, "enter")
        await until_shown(pilot, "dave  (member)")
        await check(pilot, "signin")
        await pilot.press("enter", *PASSPHRASE, "enter")
        await main_screen(pilot)
        await until(pilot, lambda: isinstance(pilot.app.screen, LockScreen), "the idle lock", timeout=10)
        await until_shown(pilot, "Console locked")
        await check(pilot, "lock")


async def test_the_mfa_enrolment_screen_matches_its_snapshot(home: Path) -> None:
    steps = Steps(b"settings", START_MS + 3_600_000)
    async with await Node.open(home, PASSPHRASE, clock=steps.clock, rng=steps.rng) as node:
        await node.signin.mfa.require("admin")
    enrol = Steps(b"enrol", START_MS + 7_200_000)
    async with RallypointApp(home, clock=enrol.clock, rng=enrol.rng).run_test(size=SIZE) as pilot:
        await until_shown(pilot, "Unlock the node")
        await pilot.press(*PASSPHRASE, "enter")
        await until_shown(pilot, "alice  (admin)")
        await pilot.press("enter", *PASSPHRASE, "enter")
        await until(pilot, lambda: isinstance(pilot.app.screen, MfaEnrolScreen), "the enrolment screen")
        await until_shown(pilot, "Then type the code it shows")
        await check(pilot, "mfa_enrol")


async def test_the_enrollment_card_with_its_recovery_kit_matches_its_snapshot(home: Path) -> None:
    """What the admin reads once after enrolling a node: the file and its code for the new node's
    operator, the recovery kit's place and code for the admin alone."""
    kit = RecoveryKit(b"", "K1TC-0DE0-F0RT-HEAD", "ABCDEFG-HIJKMNP-QRSTVWX", 1)
    enrollment = Enrollment(b"", "J01N-C0DE-F0RB", "ABCDEFG-HIJKMNP-QRSTVWX", "bob", kit)
    request = Invitation("bravo", "bob", "member", Path("/media/stick/bravo.enroll"), Path("/srv/rallypoint/recovery-kits/bravo-ABCDEFG.kit"))
    async with RallypointApp(home, PASSPHRASE).run_test(size=SIZE) as pilot:
        await main_screen(pilot)
        await until_shown(pilot, "Courier leaves at dawn")
        await pilot.app.push_screen(EnrollmentCard(enrollment, request))
        await until_shown(pilot, "K1TC-0DE0-F0RT-HEAD")
        await check(pilot, "enrollment_card")

"""Terms of service in the console (issue 16 points 3 and 9): a user who has not accepted the
current version sees them after unlock, and nothing of the channels, until they accept; Sign out
closes the node and asks to unlock again; a version arriving while the console runs covers the
channels at once; the admin screen's Terms tab shows who accepted which version, where, and an
admin publishes a new version from it (typed, or from a file). The terms screen, the Terms tab
and the publish dialog are compared with their 80x24 snapshots."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Input

from appliance.node import Node
from tests.conftest import FAST, PASSPHRASE, make_workspace, sync_all
from tests.console.test_console_snapshots import START_MS, check
from tests.console_helpers import SIZE, Steps, main_screen, screen_text, until, until_shown
from tui.app import RallypointApp
from tui.dialogs.publish_terms import PublishTermsScreen
from tui.screens.admin import AdminScreen
from tui.screens.signin import SignInScreen
from tui.screens.terms import TermsScreen

TEXT = "\n".join(
    [
        "1. Messages here are work records: an admin may read and export them.",
        "2. Report a lost or stolen USB stick to an admin at once.",
        "3. Never write an enrollment code on the stick that carries it.",
        *(f"{n}. Clause {n} of the field rules, kept short for the screen." for n in range(4, 31)),
        "31. These terms end here.",
    ]
)


@pytest.fixture(autouse=True)
def utc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()


async def published_to_bob(tmp_path: Path) -> Path:
    """alpha (alice, admin) publishes the terms; bravo (bob) holds them and has not accepted."""
    a = Steps(b"alpha", START_MS)  # a clock that the node's background upkeep cannot move
    alice = await Node.init(tmp_path / "alpha", workspace_name="acme", user_name="alice", node_name="alpha", passphrase=PASSPHRASE, kdf=FAST, clock=a.clock, rng=a.rng)
    a.step()
    enrollment = await alice.enrollment.invite("bravo", "bob", kdf=FAST)
    bob = await Node.join(tmp_path / "bravo", enrollment.data, enrollment.code, PASSPHRASE, kdf=FAST)
    async with alice, bob:
        a.step()
        await alice.chat.create_channel("general", purpose="all hands")
        await alice.chat.post("general", "Water point moved to the north gate.")
        a.step()
        await alice.directory.terms.publish(1, "Field rules", TEXT)
        await sync_all(alice, bob)
        assert bob.directory.terms.pending() is not None
    return tmp_path / "bravo"


async def test_unlock_shows_the_terms_and_accepting_them_shows_the_channels(tmp_path: Path) -> None:
    home = await published_to_bob(tmp_path)
    async with RallypointApp(home, PASSPHRASE).run_test(size=SIZE, notifications=True) as pilot:
        await until(pilot, lambda: isinstance(pilot.app.screen, TermsScreen), "the terms screen")
        await until_shown(pilot, "Field rules")
        shown = screen_text(pilot.app)
        assert "general" not in shown and "Water point" not in shown  # nothing of the channels
        assert "1. Messages here are work records" in shown and "31. These terms end here." not in shown
        await pilot.press("end")  # the text scrolls
        await until_shown(pilot, "31. These terms end here.")
        await pilot.click("#terms-accept")
        await main_screen(pilot)
        await until_shown(pilot, "Water point moved to the north gate.")
        node = pilot.app.node  # type: ignore[attr-defined]
        assert node.directory.terms.pending() is None
        assert [e.detail["version"] for e in await node.audit.entries() if e.action == "terms_accepted"] == [1]
    # Accepted once: the next unlock goes straight to the channels.
    async with RallypointApp(home, PASSPHRASE).run_test(size=SIZE, notifications=True) as pilot:
        await main_screen(pilot)


async def test_signing_out_of_the_terms_signs_the_user_out_and_accepts_nothing(tmp_path: Path) -> None:
    home = await published_to_bob(tmp_path)
    async with RallypointApp(home, PASSPHRASE).run_test(size=SIZE, notifications=True) as pilot:
        await until(pilot, lambda: isinstance(pilot.app.screen, TermsScreen), "the terms screen")
        await until_shown(pilot, "Sign out")  # laid out: a click lands on the button
        await pilot.click("#terms-sign-out")
        await until(pilot, lambda: isinstance(pilot.app.screen, SignInScreen), "the sign-in screen")
        node = pilot.app.node  # type: ignore[attr-defined]
        assert node is not None and not node.identity.signed_in  # the key left memory with the user
    node = await Node.open(home, PASSPHRASE)
    async with node:
        assert node.directory.terms.pending() is not None
        assert [e for e in await node.audit.entries() if e.action == "terms_accepted"] == []


async def test_a_version_arriving_while_the_console_runs_covers_the_channels(tmp_path: Path) -> None:
    alice, bob = await make_workspace(tmp_path, "bob")
    async with alice, bob:
        await alice.chat.create_channel("general")
        await alice.chat.post("general", "before any terms")
        await sync_all(alice, bob)
    async with RallypointApp(tmp_path / "bob", PASSPHRASE).run_test(size=SIZE, notifications=True) as pilot:
        await main_screen(pilot)
        await until_shown(pilot, "before any terms")
        alice = await Node.open(tmp_path / "alpha", PASSPHRASE)
        async with alice:
            await alice.directory.terms.publish(1, "New rules", "Be kind.")
            await sync_all(alice, pilot.app.node)  # type: ignore[attr-defined]
        await until(pilot, lambda: isinstance(pilot.app.screen, TermsScreen), "the terms screen")
        await until_shown(pilot, "Accept version 1")
        assert "before any terms" not in screen_text(pilot.app)
        await pilot.click("#terms-accept")
        await until_shown(pilot, "before any terms")


async def test_the_admin_screen_shows_who_accepted_which_version_where(tmp_path: Path) -> None:
    alice, bob = await make_workspace(tmp_path, "bob")
    async with alice, bob:
        await alice.directory.terms.publish(3, "Field rules", "Be kind.")
        await sync_all(alice, bob)
        await bob.directory.terms.accept(3)
        await sync_all(bob, alice)
        await alice.directory.add_user("carol")
    async with RallypointApp(tmp_path / "alpha", PASSPHRASE).run_test(size=SIZE, notifications=True) as pilot:
        await main_screen(pilot)
        await pilot.press("f3")
        await until(pilot, lambda: isinstance(pilot.app.screen, AdminScreen), "the admin screen")
        await pilot.press("5")
        await until_shown(pilot, "bob-node")
        shown = screen_text(pilot.app)
        assert "Version 3 · Field rules: 2 of 3 users accepted; not yet: carol" in shown
        bob_line = next(line for line in shown.splitlines() if " bob " in f" {line} ")
        assert "yes" in bob_line and "3" in bob_line and "bob-node" in bob_line
        carol_line = next(line for line in shown.splitlines() if "carol" in line and "not yet" not in line)
        assert "no" in carol_line


async def test_the_terms_screen_matches_its_snapshot(tmp_path: Path) -> None:
    home = await published_to_bob(tmp_path)
    async with RallypointApp(home, PASSPHRASE).run_test(size=SIZE) as pilot:
        await until(pilot, lambda: isinstance(pilot.app.screen, TermsScreen), "the terms screen")
        await until_shown(pilot, "Field rules")
        await check(pilot, "terms")


async def accepted_on_alpha(tmp_path: Path) -> Path:
    """alpha (alice, admin) published version 1 and bravo's bob accepted it there; carol, a
    user of alpha, has not. Clocks step only between the fixture's actions."""
    a, b = Steps(b"alpha"), Steps(b"bravo")
    alice = await Node.init(tmp_path / "alpha", workspace_name="acme", user_name="alice", node_name="alpha", passphrase=PASSPHRASE, kdf=FAST, clock=a.clock, rng=a.rng)
    async with alice:
        a.step()
        enrollment = await alice.enrollment.invite("bravo", "bob", kdf=FAST)
        async with await Node.join(tmp_path / "bravo", enrollment.data, enrollment.code, PASSPHRASE, kdf=FAST, clock=b.clock, rng=b.rng) as bob:
            a.step()
            await alice.directory.terms.publish(1, "Field rules", "Be kind.")
            a.step()
            await alice.directory.add_user("carol")
            await sync_all(alice, bob)
            b.step()
            await bob.directory.terms.accept(1)
            await sync_all(bob, alice)
    return tmp_path / "alpha"


async def terms_tab(pilot: Pilot[Any]) -> AdminScreen:
    await main_screen(pilot)
    await pilot.press("f3")
    await until(pilot, lambda: isinstance(pilot.app.screen, AdminScreen), "the admin screen")
    await pilot.press("5")
    await until_shown(pilot, "2 of 3 users accepted")
    screen = pilot.app.screen
    assert isinstance(screen, AdminScreen)
    return screen


async def test_an_admin_publishes_a_new_version_from_the_terms_tab(tmp_path: Path) -> None:
    home = await accepted_on_alpha(tmp_path)
    async with RallypointApp(home, PASSPHRASE).run_test(size=SIZE, notifications=True) as pilot:
        await terms_tab(pilot)
        await check(pilot, "admin_terms")
        await pilot.press("p")
        await until(pilot, lambda: isinstance(pilot.app.screen, PublishTermsScreen), "the publish dialog")
        assert pilot.app.screen.query_one("#terms-version", Input).value == "2"  # one above the current
        await check(pilot, "publish_terms")
        await pilot.press("ctrl+s")
        await until_shown(pilot, "Enter a title.")
        await pilot.press(*"Field rules, v2")
        await pilot.press("ctrl+s")
        await until_shown(pilot, "Type the terms below, or give the file that holds them.")
        await pilot.press(*"Be kind. Report lost sticks.")
        await pilot.press("ctrl+s")
        await until_shown(pilot, "Version 2 · Field rules, v2: 1 of 3 users accepted; not yet: bob, carol")
    async with await Node.open(home, PASSPHRASE) as alice:
        current = alice.directory.terms.current()
        assert current is not None and (current.version, current.text) == (2, "Be kind. Report lost sticks.")
        assert [e.detail["version"] for e in await alice.audit.entries() if e.action == "terms_published"] == [1, 2]


async def test_terms_read_from_a_file_and_a_file_that_is_not_text_is_refused(tmp_path: Path) -> None:
    home = await accepted_on_alpha(tmp_path)
    good, bad = tmp_path / "terms-v2.txt", tmp_path / "terms.bin"
    good.write_text("1. Be kind.\n2. Report lost sticks.\n", encoding="utf-8")
    bad.write_bytes(b"\xff\xfe not text")
    async with RallypointApp(home, PASSPHRASE).run_test(size=SIZE, notifications=True) as pilot:
        await terms_tab(pilot)
        for path, expect in ((bad, "UTF-8 text (byte 0)"), (good, "Version 2 · From the stick")):
            await pilot.press("p")
            await until(pilot, lambda: isinstance(pilot.app.screen, PublishTermsScreen), "the publish dialog")
            await pilot.press(*"From the stick", "tab")
            await pilot.press(*str(path))
            await pilot.press("ctrl+s")
            await until_shown(pilot, expect)
    async with await Node.open(home, PASSPHRASE) as alice:
        current = alice.directory.terms.current()
        assert current is not None and current.text == good.read_text(encoding="utf-8")

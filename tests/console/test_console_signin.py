"""Signing in at the console (issue 16 point 5), through Pilot at 80x24 against real nodes: the
user list after the unlock, a first sign-in that sets its own secret, MFA enrolment read off the
screen by an authenticator (pyotp), and the idle lock that takes the channels off the screen."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pyotp
from textual.pilot import Pilot

from appliance.node import Node
from tests.conftest import FAST, PASSPHRASE
from tests.console_helpers import SIZE, main_screen, screen_text, until, until_shown
from tui.app import RallypointApp
from tui.screens.lock import LockScreen
from tui.screens.mfa_enrol import MfaEnrolScreen
from tui.screens.signin import SignInScreen

BOB_FIRST = "bob-initial-1"
BOB_OWN = "bob's own secret"


async def node_with_bob(home: Path, *, mfa_for: str | None = None, lock_seconds: int = 0) -> None:
    async with await Node.init(home, workspace_name="acme", user_name="alice", node_name="alpha", passphrase=PASSPHRASE, kdf=FAST) as node:
        await node.chat.create_channel("general")
        await node.chat.post("general", "secret plans for the north gate")
        await node.directory.add_user("bob", secret=BOB_FIRST)
        if mfa_for is not None:
            await node.signin.mfa.require(mfa_for)
        if lock_seconds:
            await node.signin.set_console_lock(lock_seconds)


async def unlock_by_hand(pilot: Pilot[Any]) -> None:
    """Types the passphrase at the unlock screen: the sign-in screen follows."""
    await until_shown(pilot, "Unlock the node")
    await pilot.press(*PASSPHRASE, "enter")
    await until(pilot, lambda: isinstance(pilot.app.screen, SignInScreen), "the sign-in screen")


async def sign_in_as_bob(pilot: Pilot[Any], secret: str) -> None:
    await until_shown(pilot, "bob  (member)")
    await pilot.press("down", "enter", *secret, "enter")


async def test_a_first_sign_in_sets_the_users_own_secret(tmp_path: Path) -> None:
    home = tmp_path / "alpha"
    await node_with_bob(home)
    async with RallypointApp(home).run_test(size=SIZE) as pilot:
        await unlock_by_hand(pilot)
        assert "alice  (admin)" in screen_text(pilot.app) and "secret plans" not in screen_text(pilot.app)
        await sign_in_as_bob(pilot, "wrong secret")
        await until_shown(pilot, "wrong user name or secret")
        await pilot.press(*BOB_FIRST, "enter")
        await until_shown(pilot, "set one of your own")
        await pilot.press(*BOB_OWN, "enter", *"not the same", "enter")
        await until_shown(pilot, "the two new secrets differ")
        await pilot.press(*BOB_OWN, "enter")
        await main_screen(pilot)
        app = pilot.app
        assert isinstance(app, RallypointApp) and app.node is not None
        assert app.node.identity.whoami().user_name == "bob"
        await until_shown(pilot, "secret plans")


async def test_mfa_enrolment_is_read_off_the_screen_by_an_authenticator(tmp_path: Path) -> None:
    home = tmp_path / "alpha"
    await node_with_bob(home, mfa_for="member")
    async with RallypointApp(home).run_test(size=SIZE) as pilot:
        await unlock_by_hand(pilot)
        await sign_in_as_bob(pilot, BOB_FIRST)
        await until_shown(pilot, "set one of your own")
        await pilot.press(*BOB_OWN, "enter", *BOB_OWN, "enter")
        await until(pilot, lambda: isinstance(pilot.app.screen, MfaEnrolScreen), "the enrolment screen")
        shown = screen_text(pilot.app)
        assert "▀" in shown and "▄" in shown  # the QR code, drawn as text
        typed = "".join(re.findall(r"^.{42}((?:[A-Z2-7]{4} ){3}[A-Z2-7]{4})\s*$", shown, re.MULTILINE)).replace(" ", "")
        assert len(typed) == 32
        app = pyotp.TOTP(typed)  # the phone's app, the secret typed in by hand
        await pilot.press(*"000000", "enter")
        await until_shown(pilot, "that code does not match")
        await pilot.press(*app.now(), "enter")
        await until_shown(pilot, "Press Enter to continue")
        codes = re.findall(r"[0-9A-Z]{4}-[0-9A-Z]{4}-[0-9A-Z]{4}", screen_text(pilot.app))
        assert len(codes) == 10
        await pilot.press("enter")
        await main_screen(pilot)
        await until_shown(pilot, "secret plans")


async def test_the_idle_lock_hides_the_channels_until_someone_signs_in(tmp_path: Path) -> None:
    home = tmp_path / "alpha"
    await node_with_bob(home, lock_seconds=1)
    async with RallypointApp(home, PASSPHRASE).run_test(size=SIZE) as pilot:
        # A second idle locks the console whether or not the first view has loaded by then (on a
        # busy machine it may not have): wait for the lock, not for the channels before it.
        await until(pilot, lambda: isinstance(pilot.app.screen, LockScreen), "the idle lock", timeout=15)
        await until_shown(pilot, "Console locked (alice was signed in)")
        shown = screen_text(pilot.app)
        assert "general" not in shown and "secret plans" not in shown
        app = pilot.app
        assert isinstance(app, RallypointApp) and app.node is not None and not app.node.identity.signed_in
        await pilot.press(*PASSPHRASE, "enter")  # alice is chosen already
        await main_screen(pilot)
        await until_shown(pilot, "secret plans")


async def test_a_user_locks_the_console_and_enrols_mfa_from_the_palette(tmp_path: Path) -> None:
    home = tmp_path / "alpha"
    await node_with_bob(home)
    async with RallypointApp(home, PASSPHRASE).run_test(size=SIZE) as pilot:
        await main_screen(pilot)
        app = pilot.app
        assert isinstance(app, RallypointApp) and app.node is not None
        app.action_enrol_mfa()
        await until(pilot, lambda: isinstance(pilot.app.screen, MfaEnrolScreen), "the enrolment screen")
        await until_shown(pilot, "Two-step sign-in for alice")
        await pilot.press("escape")
        app.action_lock_now()
        await until_shown(pilot, "Console locked (alice was signed in)")
        assert "secret plans" not in screen_text(pilot.app) and not app.node.identity.signed_in

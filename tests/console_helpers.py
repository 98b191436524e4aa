"""Pilot helpers shared by the console tests: what the screen shows, and waiting (bounded) for it."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Any

from textual.app import App
from textual.pilot import Pilot

from tui.screens.main import MainScreen

SIZE = (80, 24)
# run_test(..., notifications=True) throughout: errors on the main screen are toasts, which
# Pilot hides unless asked.


def screen_text(app: App[Any]) -> str:
    """What the terminal would show, as plain text (Textual has no public text-only snapshot)."""
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())


async def until(pilot: Pilot[Any], condition: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}:\n{screen_text(pilot.app)}")
        await pilot.pause(0.05)


async def until_shown(pilot: Pilot[Any], text: str, timeout: float = 5.0) -> None:
    await until(pilot, lambda: text in screen_text(pilot.app), repr(text), timeout)


def recorded_notifications(app: App[Any]) -> list[tuple[str, bool]]:
    """Every notification from here on, with whether it was allowed to contain markup."""
    shown: list[tuple[str, bool]] = []
    notify = app.notify

    def recording(message: str, **options: Any) -> None:
        shown.append((message, options.get("markup", True)))
        notify(message, **options)

    app.notify = recording  # type: ignore[method-assign]
    return shown


async def until_notified(pilot: Pilot[Any], shown: list[tuple[str, bool]], text: str, timeout: float = 5.0) -> str:
    await until(pilot, lambda: any(text in message for message, _ in shown), f"a notification with {text!r}", timeout)
    message, markup = next((message, markup) for message, markup in shown if text in message)
    assert markup is False  # node text in notifications is never parsed as markup
    return message


async def main_screen(pilot: Pilot[Any]) -> MainScreen:
    await until(pilot, lambda: isinstance(pilot.app.screen, MainScreen), "the main screen")
    screen = pilot.app.screen
    assert isinstance(screen, MainScreen)
    await until(pilot, lambda: pane_title(pilot.app) != "", "the first view to load")
    return screen


def pane_title(app: App[Any]) -> str:
    """The line above the messages, right of the channel list."""
    lines = screen_text(app).splitlines()
    return lines[1][20:].strip() if len(lines) > 1 else ""


class Steps:
    """A clock that moves only when the test says (a minute and a second a step), so what a
    node's background upkeep reads of it changes no time shown, and randomness from a seed."""

    def __init__(self, seed: bytes, start_ms: int = 1_790_000_000_000) -> None:
        self.at = start_ms
        self._seed = seed
        self._counter = 0

    def step(self) -> None:
        self.at += 61_000

    def clock(self) -> int:
        return self.at

    def rng(self, size: int) -> bytes:
        out = b""
        while len(out) < size:
            out += hashlib.sha256(self._seed + self._counter.to_bytes(8, "big")).digest()
            self._counter += 1
        return out[:size]

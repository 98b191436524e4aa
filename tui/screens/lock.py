"""The idle lock: the console was idle for the admin's set time, so the signed-in user was
signed out and the channels were taken off the screen. Nothing of them shows here; the same
user (or another) signs in again to go on."""

from __future__ import annotations

from tui.screens.signin import SignInScreen
from tui.services import SignInService


class LockScreen(SignInScreen):
    def __init__(self, signin: SignInService, node_label: str, locked_user: str) -> None:
        super().__init__(signin, node_label, preselect=locked_user)
        self.locked_user = locked_user

    def heading(self) -> str:
        return f"Console locked ({self.locked_user} was signed in). Sign in to go on."

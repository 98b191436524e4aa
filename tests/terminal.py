"""A real terminal for tests: a tmux session on a private server socket, typed into and read back."""

from __future__ import annotations

import subprocess
import time


class Terminal:
    """One tmux session on a private server socket, so nothing touches the user's own tmux."""

    def __init__(self, socket_name: str, command: list[str], env: dict[str, str]) -> None:
        self.base = ["tmux", "-L", socket_name]
        exports = " ".join(f"{k}={_quote(v)}" for k, v in env.items())
        subprocess.run([*self.base, "new-session", "-d", "-s", "rp", "-x", "80", "-y", "24", f"env {exports} {' '.join(map(_quote, command))}"], check=True, timeout=10)

    def screen(self) -> str:
        return subprocess.run([*self.base, "capture-pane", "-p", "-t", "rp"], capture_output=True, text=True, timeout=10).stdout

    def keys(self, *keys: str) -> None:
        subprocess.run([*self.base, "send-keys", "-t", "rp", *keys], check=True, timeout=10)

    def type(self, text: str) -> None:
        subprocess.run([*self.base, "send-keys", "-t", "rp", "-l", text], check=True, timeout=10)

    def wait_for(self, text: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            shown = self.screen()
            if text in shown:
                return shown
            time.sleep(0.1)
        raise AssertionError(f"{text!r} not on the screen within {timeout}s:\n{self.screen()}")

    def running(self) -> bool:
        return subprocess.run([*self.base, "has-session", "-t", "rp"], capture_output=True, timeout=10).returncode == 0

    def kill(self) -> None:
        subprocess.run([*self.base, "kill-server"], capture_output=True, timeout=10)


def _quote(value: str) -> str:
    return "'" + value.replace("'", "'\\''") + "'"

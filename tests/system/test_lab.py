"""The lab of `make lab` for real (images/lab/lab.py): three nodes come up, the scenario
partitions charlie, carries a bundle and heals, all three end with the same messages, and
`down` leaves no namespace, process or file behind. In network namespaces as root, and on
loopback (forced with --loopback, so it runs as root too); alpha's console, opened by the lab,
shows what alpha's `serve` receives."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO, run_cli
from tests.netns import requires_root
from tests.terminal import Terminal

pytestmark = pytest.mark.timeout(300)

LAB = REPO / "images" / "lab" / "lab.py"
NODES = ("alpha", "bravo", "charlie")
LAB_TIMEOUT_S = 240.0  # one lab.py command; its own waits are bounded tighter
STOP_TIMEOUT_S = 15.0


def lab(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RALLYPOINT_", "RPLAB_"))}
    return subprocess.run([sys.executable, str(LAB), "--dir", str(directory), *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=LAB_TIMEOUT_S)


def lab_namespaces() -> set[str]:
    if shutil.which("ip") is None:
        return set()
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=15).stdout
    return {line.split()[0] for line in listing.splitlines() if line.startswith("rplab-")}


def processes_of(directory: Path) -> list[str]:
    """Command lines of live processes that name the lab's directory."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if entry.name.isdigit() and f"{directory}{os.sep}" in cmdline:
            found.append(f"{entry.name}: {cmdline}")
    return found


def messages(directory: Path, node: str) -> dict[str, str]:
    passphrase = (directory / "passphrase").read_text().strip()
    result = run_cli(directory / node / "home", "--json", "read", "general", "--limit", "1000", passphrase=passphrase)
    assert result.returncode == 0, result.stderr
    return {m["id"]: m["text"] for m in json.loads(result.stdout)}


@pytest.fixture
def lab_dir(tmp_path: Path) -> Iterator[Path]:
    """A lab's directory; whatever the test did, the lab is taken down afterwards."""
    directory = tmp_path / "lab"
    try:
        yield directory
    finally:
        if directory.exists():
            lab(directory, "down")


def check(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def scenario_converges_then_down_leaves_nothing(directory: Path, namespaces_before: set[str]) -> None:
    assert "already running" in check(lab(directory, "up", "--no-console"))

    scenario = check(lab(directory, "scenario"))
    assert "the partition holds" in scenario and "Imported 1 bundle(s) from 1 node(s): charlie" in scenario
    assert "Converged in" in scenario
    held = {node: messages(directory, node) for node in NODES}
    assert held["alpha"] == held["bravo"] == held["charlie"]
    texts = sorted(held["alpha"].values())
    assert len(texts) == 4 and texts[0].startswith("Welcome to the lab")
    assert sum("during the partition" in text for text in texts) == 3

    status = check(lab(directory, "status"))
    assert status.count(" 4 messages") == 3 and "serve stopped" not in status

    assert "Lab removed" in check(lab(directory, "down"))
    assert not directory.exists()
    assert lab_namespaces() == namespaces_before
    assert processes_of(directory) == []


@requires_root
def test_the_lab_in_network_namespaces(lab_dir: Path) -> None:
    before = lab_namespaces()
    assert f"Lab in {lab_dir}: namespaces" in check(lab(lab_dir, "up", "--no-console"))
    made = lab_namespaces() - before
    assert len(made) == 4 and {name.rsplit("-", 1)[1] for name in made} == {"hub", *NODES}
    scenario_converges_then_down_leaves_nothing(lab_dir, before)


def test_the_lab_on_loopback(lab_dir: Path) -> None:
    before = lab_namespaces()
    assert f"Lab in {lab_dir}: loopback" in check(lab(lab_dir, "up", "--no-console", "--loopback"))
    assert lab_namespaces() == before
    scenario_converges_then_down_leaves_nothing(lab_dir, before)


@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux (Debian: apt-get install tmux)")
def test_alphas_console_shows_what_alphas_serve_receives_and_down_closes_it(lab_dir: Path) -> None:
    check(lab(lab_dir, "up", "--no-console", "--loopback"))
    env = {"PATH": os.environ.get("PATH", ""), "TERM": "xterm-256color"}
    terminal = Terminal(f"rplab-test-{os.getpid()}", [sys.executable, str(LAB), "--dir", str(lab_dir), "console"], env)
    try:
        terminal.wait_for("Welcome to the lab")
        # Posted on bravo: it reaches alpha only through bravo's and alpha's serve processes,
        # and the console (--no-lan) only by polling the store alpha's serve writes to.
        passphrase = (lab_dir / "passphrase").read_text().strip()
        assert run_cli(lab_dir / "bravo" / "home", "post", "general", "bob, live from bravo", passphrase=passphrase).returncode == 0
        terminal.wait_for("bob, live from bravo")
        check(lab(lab_dir, "down"))
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while terminal.running() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not terminal.running()
    finally:
        terminal.kill()
    assert processes_of(lab_dir) == []

"""What the `rallypoint` command imports: `--version` and `--help` load none of the heavy
libraries, and a command loads only what it uses (textual only for the console, zeroconf only
for the LAN service). Module lists, not wall-clock times: the times are in bench/cli.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PASSPHRASE, REPO, run_cli

HEAVY = ("sqlalchemy", "automerge", "zeroconf", "textual", "alembic", "aiosqlite")
PROBE = """
import json, sys
from tui.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
print(json.dumps({"exit": code, "modules": sorted({name.split(".")[0] for name in sys.modules})}), file=sys.stderr)
"""


def loaded_by(*argv: str, home: Path | None = None) -> set[str]:
    """The top-level packages a fresh interpreter holds after running `rallypoint ARGV`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RALLYPOINT_")}
    if home is not None:
        env |= {"RALLYPOINT_HOME": str(home), "RALLYPOINT_PASSPHRASE": PASSPHRASE}
    done = subprocess.run([sys.executable, "-c", PROBE, *argv], env=env, capture_output=True, text=True, timeout=60, cwd=REPO)
    report = json.loads(done.stderr.strip().splitlines()[-1])
    assert report["exit"] in (0, None), done.stderr
    return set(report["modules"])


@pytest.mark.parametrize("argv", [["--version"], ["--help"], ["read", "--help"]])
def test_version_and_help_load_no_heavy_library(argv: list[str]) -> None:
    loaded = loaded_by(*argv)
    assert not loaded & {*HEAVY, "cbor2"}, sorted(loaded & {*HEAVY, "cbor2"})


def test_commands_load_only_what_they_use(tmp_path: Path) -> None:
    home = tmp_path / "alpha"
    assert run_cli(home, "init", "--workspace", "acme", "--user", "alice").returncode == 0
    assert run_cli(home, "channel", "create", "general").returncode == 0
    (tmp_path / "stick").mkdir()
    for argv in (["post", "general", "hello"], ["read", "general"], ["whoami"], ["bundle", "import", "--from", str(tmp_path / "stick")]):
        loaded = loaded_by(*argv, home=home)
        assert {"sqlalchemy", "automerge"} <= loaded, argv  # the node itself: the probe really ran the command
        assert not loaded & {"zeroconf", "textual"}, (argv, sorted(loaded & {"zeroconf", "textual"}))

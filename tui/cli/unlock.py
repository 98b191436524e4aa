"""Where a command finds its node and how it unlocks it: the home folder, the passphrase's
sources (environment, file, prompt), and opening the node around a command's action."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from appliance.errors import NotInitialised
from tui.errors import CliError
from tui.text import printable

if TYPE_CHECKING:  # the node loads when a command runs: `--help` loads none of it
    from appliance.node import Node


def default_home() -> Path:
    if os.environ.get("RALLYPOINT_HOME"):
        return Path(os.environ["RALLYPOINT_HOME"]).expanduser()
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "rallypoint"


def read_passphrase(args: argparse.Namespace, *, confirm: bool = False, prompt: str = "Passphrase: ") -> str:
    if os.environ.get("RALLYPOINT_PASSPHRASE"):
        return os.environ["RALLYPOINT_PASSPHRASE"]
    if args.passphrase_file:
        try:
            return Path(args.passphrase_file).read_text().rstrip("\r\n")
        except OSError as exc:
            raise CliError(f"cannot read passphrase file: {exc.strerror}") from exc
    if not sys.stdin.isatty():
        raise CliError("no passphrase: set RALLYPOINT_PASSPHRASE, use --passphrase-file, or run in a terminal")
    first = getpass.getpass(prompt)
    if confirm and getpass.getpass("Repeat passphrase: ") != first:
        raise CliError("the passphrases do not match")
    return first


async def with_node(args: argparse.Namespace, action: Callable[[Node], Awaitable[None]]) -> None:
    """Opens the node, runs the action on it, closes it; the writes it skipped are warned of last."""
    from appliance.node import Node

    home = Path(args.home).expanduser()
    if not Node.exists(home):
        raise NotInitialised(f"no node in {home}: run `rallypoint init` or `rallypoint join` first")
    node = await Node.open(home, read_passphrase(args), as_user=args.as_user)
    try:
        async with node:
            await action(node)
    finally:
        for skipped in node.replica.skipped_writes:  # after what was done was said, and on any exit
            print(f"rallypoint: warning: {printable(skipped)}", file=sys.stderr)

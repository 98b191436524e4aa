"""The `console` command: the Textual console, which also runs the LAN service like `serve`."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from appliance.errors import NodeLocked
from sync.defaults import DEFAULT_PORT
from tui.cli.parsing import Command
from tui.cli.unlock import read_passphrase


def cmd_console(args: argparse.Namespace) -> None:
    """Runs outside asyncio.run: Textual owns the event loop (and the terminal's signals)."""
    from sync import lan
    from tui.app import run_console  # Textual loads only for the console

    passphrase = os.environ.get("RALLYPOINT_PASSPHRASE")
    if args.passphrase_file:
        passphrase = read_passphrase(args)
    config = None if args.no_lan else lan.LanConfig(bind=args.bind, port=args.port)
    wiped = run_console(Path(args.home).expanduser(), passphrase, args.as_user, config)
    if wiped is not None:
        raise NodeLocked(wiped)


def _console_arguments(parser: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="TCP port for LAN sessions (0: any free port)")
    parser.add_argument("--bind", default="0.0.0.0", metavar="ADDR", help="address to listen on; also the only interface mDNS uses")
    parser.add_argument("--no-lan", action="store_true", help="no LAN discovery or sync in this console")


CONSOLE = Command("console", "open the terminal console (it also runs the LAN service, like `serve`)", cmd_console, _console_arguments)

"""How a command area declares its subcommands, and the argparse that raises a usage error
(for `main` to report, as JSON under --json) instead of printing and exiting on the spot."""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import NoReturn

from tui.errors import UsageError

Handler = Callable[[argparse.Namespace], Awaitable[None] | None]
"""Runs a parsed command: a coroutine for asyncio.run, or None when it ran itself (the console)."""

Arguments = Callable[[argparse.ArgumentParser, argparse.ArgumentParser], None]
"""Adds a command's arguments to its parser; the second parser holds the common options, the
parent of any sub-action's parser."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error is raised (for `main` to report, as JSON under --json)
    instead of printed and exited on the spot."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message, self.prog, self.format_usage())


def no_arguments(parser: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    """For a command that takes nothing but the common options."""


@dataclass(frozen=True)
class Command:
    """One subcommand of `rallypoint`: its name, its one-line help, what runs it, what it takes."""

    name: str
    help: str
    handler: Handler
    arguments: Arguments = no_arguments


def common_options() -> ArgumentParser:
    """The options every command and sub-action takes, before or after its name."""
    common = ArgumentParser(add_help=False)
    common.add_argument("--home", default=argparse.SUPPRESS, help="node data directory (default: $RALLYPOINT_HOME or ~/.local/share/rallypoint)")
    common.add_argument("--passphrase-file", default=argparse.SUPPRESS, help="read the passphrase from this file (else $RALLYPOINT_PASSPHRASE, else a prompt)")
    common.add_argument(
        "--as",
        dest="as_user",
        default=argparse.SUPPRESS,
        metavar="USER",
        help="sign in as this local user, with their secret ($RALLYPOINT_USER_SECRET, --user-secret-file or a prompt); default: the node's own user",
    )
    common.add_argument("--user-secret-file", default=argparse.SUPPRESS, metavar="FILE", help="read the signing-in user's secret from this file")
    common.add_argument("--totp", default=argparse.SUPPRESS, metavar="CODE", help="the code from the user's authenticator app, or a recovery code (else $RALLYPOINT_TOTP, else a prompt)")
    common.add_argument(
        "--data-key-file",
        default=argparse.SUPPRESS,
        metavar="FILE",
        help="unattended relay: open the node with the data key in this root-only file (`rallypoint data-key --out FILE`) instead of the passphrase",
    )
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print stable JSON")
    return common

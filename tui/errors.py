"""The errors of `tui`: the `rallypoint` command's and the console's, under the project's one
root. appliance/errors.py and sync/errors.py draw their own branches; this module draws tui's:

    RallypointError              the root (appliance/errors.py)
    └── TuiError                 raised by the command or the console, never by the node
        ├── CliError             how the command was called: no passphrase, an unreadable file,
        │   │                    a stick that is not mounted, a malformed --peer (exit 1)
        │   ├── UnreadableFile   a file the user named cannot be read, is too big or not UTF-8
        │   │                    (the console's forms report it too)
        │   └── UsageError       the command line does not parse: argparse's complaint and the
        │                        command's usage (exit 2)
        └── CommandFailed        the command ran and printed its report, and its exit status must
                                 still say that something went wrong (exit status of its own)

The command reports any of them as one line on stderr, and names its class as the error's
`kind` under --json: the class names are part of the command's output."""

from __future__ import annotations

from appliance.errors import RallypointError


class TuiError(RallypointError):
    """Root of every error the command or the console raises on purpose."""


class CliError(TuiError):
    """A problem with how the command was called (missing passphrase, unreadable file)."""


class UnreadableFile(CliError):
    """A file the user named cannot be read, is over its size limit, or is not UTF-8 text."""


class UsageError(CliError):
    """The command line does not parse (argparse's complaint, and the usage of the command)."""

    def __init__(self, message: str, prog: str, usage: str) -> None:
        super().__init__(message)
        self.prog = prog
        self.usage = usage


class CommandFailed(TuiError):
    """The command ran and printed its report, and its exit status must still say that
    something went wrong (a rejected bundle, a broken audit log)."""

    def __init__(self, message: str, exit_status: int, kind: str) -> None:
        super().__init__(message)
        self.exit_status = exit_status
        self.kind = kind

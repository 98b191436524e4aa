"""How the `rallypoint` command ends: an error as one line on stderr (one JSON object under
--json, usage errors included), and quietly when the reader of its output went away."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from typing import NoReturn

from appliance.errors import RallypointError
from tui.text import printable

EXIT_PIPE_CLOSED = 128 + signal.SIGPIPE  # what a shell reports for a writer killed by SIGPIPE


class UsageError(RallypointError):
    """The command line does not parse (argparse's complaint, and the usage of the command)."""

    def __init__(self, message: str, prog: str, usage: str) -> None:
        super().__init__(message)
        self.prog = prog
        self.usage = usage


class CommandFailed(RallypointError):
    """The command ran and printed its report, and its exit status must still say that
    something went wrong (a rejected bundle, a broken audit log)."""

    def __init__(self, message: str, exit_status: int, kind: str) -> None:
        super().__init__(message)
        self.exit_status = exit_status
        self.kind = kind


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error is raised (for `main` to report, as JSON under --json)
    instead of printed and exited on the spot."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message, self.prog, self.format_usage())


def report_error(as_json: bool, exit_status: int, kind: str, message: str, *, usage: str = "", prog: str = "rallypoint") -> int:
    """One line on stderr - `{"error", "kind", "exit"}` under --json - and the exit status.
    In text, a usage error shows the command's usage first, as argparse does."""
    if as_json:
        print(json.dumps({"error": message, "kind": kind, "exit": exit_status}, ensure_ascii=False, sort_keys=True), file=sys.stderr)
    else:
        print(f"{usage}{prog}: error: {printable(message)}", file=sys.stderr)
    return exit_status


def stdout_closed() -> int:
    """The reader of our stdout went away (`rallypoint read … | head -1`): stop quietly. Output
    still buffered goes to /dev/null, or the interpreter's final flush would complain."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return EXIT_PIPE_CLOSED


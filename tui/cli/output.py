"""How the `rallypoint` command speaks and ends: its result on stdout (stable JSON under
--json), an error as one line on stderr (one JSON object under --json, usage errors included),
the exit statuses, and quietly when the reader of its output went away."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from typing import Any

from tui.text import printable

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_REJECTED = 3  # an import ran, and refused at least one bundle
EXIT_WIPED = 4  # this node's revocation reached it and it wiped itself: nothing to retry (rallypoint.service does not restart on it)
EXIT_PIPE_CLOSED = 128 + signal.SIGPIPE  # what a shell reports for a writer killed by SIGPIPE


def emit(args: argparse.Namespace, payload: Any, human: str) -> None:
    if args.json:
        print(json.dumps(payload, ensure_ascii=False, sort_keys=True))
    elif human:
        print(human)


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

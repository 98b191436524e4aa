"""The command's errors hang under tui's branch of the one tree, and reach the user as one line
whose `kind` names the class: a bad argument is the command's error, not the node's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from appliance.errors import RallypointError
from tui.cli import EXIT_ERROR, EXIT_USAGE, main
from tui.errors import CliError, CommandFailed, TuiError, UsageError


def test_tui_errors_hang_under_the_one_root() -> None:
    assert issubclass(TuiError, RallypointError)
    assert all(issubclass(error, TuiError) for error in (CliError, UsageError, CommandFailed))
    assert issubclass(UsageError, CliError)  # a command line that does not parse is a way of calling it wrong


def test_an_argument_the_command_refuses_is_a_cli_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["--json", "--home", str(tmp_path / "none"), "read", "general", "--before", "not-an-id"])
    captured = capsys.readouterr()
    assert status == EXIT_ERROR and captured.out == ""
    assert json.loads(captured.err) == {"error": "--before 'not-an-id': not a message id", "kind": "CliError", "exit": EXIT_ERROR}


def test_a_command_line_that_does_not_parse_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["--json", "read"])
    error = json.loads(capsys.readouterr().err)
    assert status == EXIT_USAGE and error == {"error": "the following arguments are required: channel", "kind": "UsageError", "exit": EXIT_USAGE}

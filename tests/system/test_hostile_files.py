"""Files handed to the command line that are no files: a named pipe, a link to one, a folder, a
socket, a device. `bundle inspect`, `join`, `restore` and `recover` refuse each at once with a reason (a named
pipe used to block them forever), and a stick strewn with them does not stop a courier run."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sync import stick
from tests.conftest import make_workspace, run_cli

BOUND_S = 20  # each command ends well within this (a blocked one would wait forever)


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _link_to_fifo(path: Path) -> None:
    os.mkfifo(path.with_name("pipe"))
    path.symlink_to(path.with_name("pipe"))


def _folder(path: Path) -> None:
    path.mkdir()


def _device(path: Path) -> None:
    path.symlink_to("/dev/zero")  # endless: reading it whole would never end either


MAKERS: dict[str, tuple[Callable[[Path], None], str]] = {
    "fifo": (_fifo, "is a named pipe, not a regular file"),
    "link to a fifo": (_link_to_fifo, "is a named pipe, not a regular file"),
    "folder": (_folder, "is a folder, not a regular file"),
    "device": (_device, "is a device file, not a regular file"),
}


@pytest.fixture
def listening_socket(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "socket"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(path))
        server.listen()
        yield path


def _commands(path: Path) -> dict[str, tuple[str, ...]]:
    return {
        "bundle inspect": ("bundle", "inspect", str(path)),
        "join": ("join", str(path), "--code", "AAAA-BBBB-CCCC"),
        "restore": ("restore", str(path)),
        "recover": ("recover", str(path), "--code", "AAAA-BBBB-CCCC-DDDD"),
    }


@pytest.mark.parametrize("command", ["bundle inspect", "join", "restore", "recover"])
@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_what_is_not_a_regular_file_is_refused_at_once(tmp_path: Path, command: str, kind: str) -> None:
    make, reason = MAKERS[kind]
    path = tmp_path / "given.file"
    make(path)
    home = tmp_path / "home"
    started = time.monotonic()
    result = run_cli(home, *_commands(path)[command], timeout=BOUND_S)
    assert time.monotonic() - started < BOUND_S
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [f"rallypoint: error: {path} {reason}"]
    assert not (home / "node.db").exists()


@pytest.mark.parametrize("command", ["bundle inspect", "join", "restore", "recover"])
def test_a_socket_is_refused(tmp_path: Path, listening_socket: Path, command: str) -> None:
    result = run_cli(tmp_path / "home", *_commands(listening_socket)[command], timeout=BOUND_S)
    assert result.returncode == 1 and f"{listening_socket} is a socket, not a regular file" in result.stderr


async def test_named_pipes_on_a_stick_do_not_stop_a_courier_run(tmp_path: Path) -> None:
    alpha, bravo = await make_workspace(tmp_path, "bravo")
    async with alpha, bravo:
        outbox = tmp_path / "stick" / stick.STICK_DIR / stick.outbox_name(bravo.identity.node_id)
        outbox.mkdir(parents=True)
        (outbox.parent / stick.BROADCAST).mkdir()
        for index, folder in enumerate((outbox, outbox, outbox.parent / stick.BROADCAST)):
            os.mkfifo(folder / stick.bundle_file_name(alpha.identity.node_id, 1_700_000_000_000 + index, bytes(16)))
    result = run_cli(tmp_path / "bravo", "courier", str(tmp_path / "stick"), timeout=BOUND_S * 3)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("is a named pipe, not a regular file") == 3
    assert "Wrote 1 bundle(s)" in result.stdout

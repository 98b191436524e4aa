"""Small gaps of the `rallypoint` command, run as a real process: errors under --json are one
JSON object, a reader that closes the pipe early gets no traceback, `file` takes the short hash
`read` prints, progress on a terminal, and one `serve` per home."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from appliance import ids
from tests.conftest import PASSPHRASE, REPO, make_workspace, revocation_on_stick, run_cli


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def json_error(result: subprocess.CompletedProcess[str]) -> dict[str, object]:
    """The one JSON object a failed command prints on stderr under --json."""
    (line,) = result.stderr.splitlines()
    error = json.loads(line)
    assert set(error) == {"error", "kind", "exit"} and error["exit"] == result.returncode, error
    return error


def cli_command() -> list[str]:
    executable = shutil.which("rallypoint", path=str(Path(sys.executable).parent))
    return [executable] if executable else [sys.executable, "-m", "tui.cli"]


def cli_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RALLYPOINT_")}
    return env | {"RALLYPOINT_HOME": str(home), "RALLYPOINT_PASSPHRASE": PASSPHRASE}


def channel_with(tmp_path: Path, count: int) -> Path:
    """A node whose #general holds `count` messages."""

    async def make() -> None:
        (alpha,) = await make_workspace(tmp_path)
        async with alpha:
            await alpha.create_channel("general")
            await alpha.post_many("general", [f"message {i}" for i in range(count)])

    asyncio.run(make())
    return tmp_path / "alpha"


def test_every_error_under_json_is_one_json_object_with_its_exit_status(tmp_path: Path) -> None:
    home = tmp_path / "alpha"
    missing = run_cli(home, "whoami", "--json")
    assert json_error(missing) == {"error": missing_error(missing), "kind": "NotInitialised", "exit": 1} and missing.stdout == ""
    usage = run_cli(home, "read", "--json")  # no channel
    assert usage.returncode == 2 and json_error(usage)["kind"] == "UsageError" and "channel" in str(json_error(usage)["error"])
    assert run_cli(home, "read").stderr.startswith("usage: rallypoint read")  # text: argparse's own words
    ok(run_cli(home, "init", "--workspace", "acme", "--user", "alice"))
    wrong = run_cli(home, "whoami", "--json", passphrase="wrong passphrase")
    assert json_error(wrong) == {"error": "wrong passphrase", "kind": "WrongPassphrase", "exit": 1}
    assert run_cli(home, "whoami", passphrase="wrong passphrase").stderr == "rallypoint: error: wrong passphrase\n"
    unknown = run_cli(home, "read", "nowhere", "--json")
    assert unknown.returncode == 1 and json_error(unknown)["kind"] == "NotFound" and unknown.stdout == ""


def missing_error(result: subprocess.CompletedProcess[str]) -> str:
    message = json.loads(result.stderr)["error"]
    assert "rallypoint init" in message
    return str(message)


def test_a_rejected_bundle_and_a_wiping_courier_run_say_so_with_exit_3_and_4(tmp_path: Path) -> None:
    async def make() -> None:
        alpha, bravo = await make_workspace(tmp_path, "bravo")
        async with alpha, bravo:
            await alpha.create_channel("general")
            await revocation_on_stick(alpha, bravo, tmp_path)

    asyncio.run(make())
    bravo, stick = tmp_path / "bravo", tmp_path / "stick"
    (revocation,) = (stick / "rallypoint").glob("to-*/*.rpb")
    tampered = bytearray(revocation.read_bytes())
    tampered[len(tampered) // 2] ^= 0xFF
    sender, created_at, rest = revocation.name.rsplit("-", 2)
    (stick / "rallypoint" / "broadcast").mkdir()
    (stick / "rallypoint" / "broadcast" / f"{sender}-{int(created_at) + 1}-{rest}").write_bytes(bytes(tampered))
    preview = run_cli(bravo, "bundle", "import", "--from", str(stick), "--preview", "--json")
    assert preview.returncode == 3 and json.loads(preview.stdout)["preview"] is True
    assert json_error(preview)["kind"] == "BundleRejected"

    wiped = run_cli(bravo, "courier", str(stick), "--json")
    assert wiped.returncode == 4, wiped.stderr
    report = json.loads(wiped.stdout)
    assert report["import"]["wiped"] is True and report["export"] is None
    error = json_error(wiped)
    assert error["kind"] == "NodeLocked" and "revoked" in str(error["error"])
    again = run_cli(bravo, "courier", str(stick))
    assert again.returncode == 4 and again.stderr.startswith("rallypoint: error:") and "revoked" in again.stderr


def test_a_reader_that_closes_the_pipe_early_gets_no_traceback(tmp_path: Path) -> None:
    home = channel_with(tmp_path, 2_000)
    # A pipe whose reader is gone before the command writes a byte: its first write fails.
    reader, writer = os.pipe()
    os.close(reader)
    closed = subprocess.run([*cli_command(), "read", "general", "--limit", "2000"], stdout=writer, stderr=subprocess.PIPE, env=cli_env(home), timeout=60, cwd=REPO, text=True)
    os.close(writer)
    assert closed.returncode == 141 and closed.stderr == ""
    # And the way people meet it: `| head -1`, with more output than a pipe buffers.
    command = " ".join(cli_command()) + " read general --limit 2000 | head -1"
    shell = subprocess.run(["bash", "-o", "pipefail", "-c", command], capture_output=True, env=cli_env(home), timeout=60, cwd=REPO, text=True)
    assert shell.stdout.startswith("[") and shell.stdout.count("\n") == 1
    assert shell.stderr == "" and shell.returncode in (0, 141)


def two_contents_sharing_a_hash_prefix(digits: int) -> tuple[bytes, bytes]:
    """Two small files whose SHA-256 hashes start with the same `digits` hex digits (a birthday
    search: about 2**(2 * digits) ** 0.5 tries)."""
    seen: dict[str, bytes] = {}
    for number in range(10_000_000):
        content = f"file {number}".encode()
        prefix = hashlib.sha256(content).hexdigest()[:digits]
        if prefix in seen:
            return seen[prefix], content
        seen[prefix] = content
    raise AssertionError("no shared prefix found")


def test_file_takes_the_short_hash_read_prints_and_refuses_an_ambiguous_one(tmp_path: Path) -> None:
    home = tmp_path / "alpha"
    ok(run_cli(home, "init", "--workspace", "acme", "--user", "alice"))
    ok(run_cli(home, "channel", "create", "general"))
    first, second = two_contents_sharing_a_hash_prefix(ids.MIN_HASH_PREFIX)
    for name, content in (("first.txt", first), ("second.txt", second)):
        (tmp_path / name).write_bytes(content)
        ok(run_cli(home, "post", "general", name, "--attach", str(tmp_path / name)))
    shown = ok(run_cli(home, "read", "general"))
    short = re.search(r"attachment: first\.txt \(\d+ bytes, ([0-9a-f]{12})\)", shown)
    assert short is not None, shown
    saved = json.loads(ok(run_cli(home, "file", short.group(1), "--out", str(tmp_path / "saved"), "--json")))
    assert (tmp_path / "saved").read_bytes() == first and saved["hash"] == hashlib.sha256(first).hexdigest()

    shared = hashlib.sha256(first).hexdigest()[: ids.MIN_HASH_PREFIX]
    ambiguous = run_cli(home, "file", shared, "--out", str(tmp_path / "which"))
    assert ambiguous.returncode == 1 and "2 attachments" in ambiguous.stderr and not (tmp_path / "which").exists()
    too_short = run_cli(home, "file", shared[:4], "--out", str(tmp_path / "which"))
    assert too_short.returncode == 1 and "at least 8" in too_short.stderr
    absent = run_cli(home, "file", "0" * 12, "--out", str(tmp_path / "which"))
    assert absent.returncode == 1 and "does not have" in absent.stderr

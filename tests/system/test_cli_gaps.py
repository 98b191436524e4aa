"""Small gaps of the `rallypoint` command, run as a real process: errors under --json are one
JSON object, a reader that closes the pipe early gets no traceback, `file` takes the short hash
`read` prints, progress on a terminal, and one `serve` per home."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import pty
import re
import select
import selectors
import shutil
import subprocess
import sys
import time
from pathlib import Path

from appliance import ids
from sync.sneakernet import export_bundles
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
            await alpha.chat.create_channel("general")
            await alpha.chat.post_many("general", [f"message {i}" for i in range(count)])

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
            await alpha.chat.create_channel("general")
            await revocation_on_stick(alpha, bravo, tmp_path)

    asyncio.run(make())
    bravo, stick = tmp_path / "bravo", tmp_path / "stick"
    (revocation,) = (stick / "rallypoint" / "bundles").glob("*.rpb")
    tampered = bytearray(revocation.read_bytes())
    tampered[len(tampered) // 2] ^= 0xFF  # in the encrypted stream: its stanza still opens for bravo
    (stick / "rallypoint" / "bundles" / ("f" * 32 + ".rpb")).write_bytes(bytes(tampered))  # sorts after the revocation
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


def start_serve(home: Path) -> tuple[subprocess.Popen[bytes], dict[str, object]]:
    """`rallypoint serve --json` on loopback, once it says it listens (within 60 s)."""
    env = cli_env(home) | {"PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([*cli_command(), "serve", "--port", "0", "--bind", "127.0.0.1", "--no-mdns", "--json"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    assert proc.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        if not selector.select(timeout=60):
            proc.kill()
            raise AssertionError("serve did not start within 60 s")
    listening = json.loads(proc.stdout.readline())
    assert listening["event"] == "Listening", listening
    return proc, listening


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    assert proc.wait(timeout=30) == 0


def test_a_second_serve_on_the_same_home_is_refused_while_the_first_runs(tmp_path: Path) -> None:
    home = channel_with(tmp_path, 1)
    first, _ = start_serve(home)
    try:
        second = subprocess.run([*cli_command(), "serve", "--port", "0", "--bind", "127.0.0.1", "--no-mdns"], env=cli_env(home), capture_output=True, text=True, timeout=60, cwd=REPO)
        assert second.returncode == 1 and f"already runs in process {first.pid}" in second.stderr and second.stdout == ""
        as_json = subprocess.run([*cli_command(), "serve", "--port", "0", "--no-mdns", "--json"], env=cli_env(home), capture_output=True, text=True, timeout=60, cwd=REPO)
        assert json_error(as_json)["kind"] == "ServiceAlreadyRunning"
        assert first.poll() is None  # the first one is untouched
        ok(run_cli(home, "post", "general", "beside serve"))  # other commands work beside it
    finally:
        stop(first)
    again, _ = start_serve(home)  # the lock went with the process that held it
    again.kill()  # even a kill -9 releases it
    again.wait(timeout=30)
    last, _ = start_serve(home)
    stop(last)


async def test_a_console_opened_while_serve_runs_works_without_its_own_lan_service(tmp_path: Path) -> None:
    from sync.lan import LanConfig
    from tests.console_helpers import SIZE, main_screen, until_shown
    from tui.app import RallypointApp

    home = await asyncio.to_thread(channel_with, tmp_path, 1)
    serving, _ = await asyncio.to_thread(start_serve, home)
    try:
        app = RallypointApp(home, PASSPHRASE, lan=LanConfig(bind="127.0.0.1", port=0, discovery=False))
        async with app.run_test(size=SIZE, notifications=True) as pilot:
            await main_screen(pilot)
            await until_shown(pilot, "already runs in process", timeout=10.0)
            assert app.is_running and app.lan_service is None
    finally:
        await asyncio.to_thread(stop, serving)


def run_with_terminal_stderr(home: Path, *args: str) -> tuple[int, str, str]:
    """The command with its stderr on a pseudo-terminal (as for a person at a terminal) and its
    stdout on a pipe: (exit status, stdout, what the terminal showed)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([*cli_command(), *args], env=cli_env(home), stdout=subprocess.PIPE, stderr=slave, cwd=REPO)
    os.close(slave)
    shown = bytearray()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 1.0)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the command closed the terminal's last open end
                break
            if not chunk:
                break
            shown += chunk
    os.close(master)
    stdout, _ = proc.communicate(timeout=60)
    return proc.returncode, stdout.decode(), shown.decode()


def test_a_big_import_shows_its_progress_on_a_terminal_and_nothing_elsewhere(tmp_path: Path) -> None:
    async def make() -> None:
        alpha, bravo = await make_workspace(tmp_path, "bravo")
        async with alpha, bravo:
            await alpha.chat.create_channel("general")
            await alpha.chat.post_many("general", [f"message {i}" for i in range(1_500)])  # three segments
            (tmp_path / "stick").mkdir()
            await export_bundles(alpha, tmp_path / "stick", for_nodes=[bravo.identity.node_id])

    asyncio.run(make())
    bravo, stick = tmp_path / "bravo", tmp_path / "stick"
    shutil.copytree(bravo, tmp_path / "bravo-copy")
    shutil.copytree(stick, tmp_path / "stick-copy")
    status, stdout, shown = run_with_terminal_stderr(bravo, "bundle", "import", "--from", str(stick))
    assert status == 0 and stdout.startswith("Imported 1 bundle(s)") and "1500 new message(s)" in stdout
    # Inside the one bundle, the bar moves as the node verifies and writes its documents.
    steps = [(phase, int(done.replace(",", "")), int(total.replace(",", ""))) for phase, done, total in re.findall(r"(verify|write) *\[[#.]+\] ([\d,]+)/([\d,]+)", shown)]
    for phase in ("verify", "write"):
        partial = [done for p, done, total in steps if p == phase and 0 < done < total]
        assert len(partial) >= 2 and partial == sorted(partial), (phase, shown)
    # A pipe or a file gets the report alone.
    piped = run_cli(tmp_path / "bravo-copy", "bundle", "import", "--from", str(tmp_path / "stick-copy"))
    assert piped.returncode == 0 and piped.stderr == "" and piped.stdout.startswith("Imported 1 bundle(s)")


def test_read_pages_back_with_before_and_says_when_it_left_messages_out(tmp_path: Path) -> None:
    home = channel_with(tmp_path, 120)
    newest = run_cli(home, "read", "general", "--limit", "50")
    assert newest.returncode == 0 and newest.stdout.count("\n[") + 1 == 50 and "message 119" in newest.stdout
    hint = re.fullmatch(r"rallypoint: older messages not shown; the page before this one: rallypoint read general --before (\S+)\n", newest.stderr)
    assert hint is not None, newest.stderr
    oldest_shown = re.match(r"\[(\S+)\]", newest.stdout)
    assert oldest_shown is not None and hint.group(1) == oldest_shown.group(1)

    # The cursor in --json --page reads the whole channel back, page by page, and then stops.
    pages: list[list[str]] = []
    before: list[str] = []
    while True:
        page = json.loads(ok(result := run_cli(home, "read", "general", "--limit", "50", "--json", "--page", *before)))
        assert result.stderr == ""
        pages.append([m["text"] for m in page["messages"]])
        if page["next_before"] is None:
            break
        assert page["next_before"] == page["messages"][0]["id"] and len(pages) < 5
        before = ["--before", page["next_before"]]
    assert [len(p) for p in pages] == [50, 50, 20]
    assert [text for p in reversed(pages) for text in p] == [f"message {i}" for i in range(120)]
    last = run_cli(home, "read", "general", "--limit", "50", *before)
    assert last.returncode == 0 and last.stderr == "" and last.stdout.startswith("[")  # the oldest page: nothing left out
    assert isinstance(json.loads(ok(run_cli(home, "read", "general", "--json"))), list)  # without --page, the list as before

    too_many = run_cli(home, "read", "general", "--limit", "100000", "--json")
    assert too_many.returncode == 2 and "10,000" in str(json_error(too_many)["error"])
    not_an_id = run_cli(home, "read", "general", "--before", "yesterday")
    assert not_an_id.returncode == 1 and "not a message id" in not_an_id.stderr

"""kill -9 at any point of the conversion of a plain store (from before encryption at rest)
leaves either the old plain store or the new encrypted one, and the next unlock opens it and
finishes (or restarts) the conversion.

A node with 3,000 messages and an attachment is made plain (tests/plain_store.py). Each attempt
works on a fresh copy of that home: a child process unlocks it - which converts - and is killed
with SIGKILL at each step by the child itself (before anything is written, with node.key written,
after the checkpoint, with the encrypted copy written, after it is checked, after the rename),
and after delays spread over the measured duration of the whole unlock. Right after the kill the
home must hold a plain node.db that SQLite opens, or an encrypted one that node.key opens - with
every message either way; then a real unlock must show the messages, find them by search,
verify the audit chain, and leave no file under the home holding the content in the clear."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest

from appliance import atrest, cipher
from appliance.node import Attachment, Node
from tests.conftest import FAST, PASSPHRASE, REPO, node_db_key
from tests.plain_store import files_holding, make_plain

MESSAGES = 3000
NEEDLES = [b"needle-5e1f", b"attachment-needle-91ab"]
TIMED_FRACTIONS = (0.2, 0.4, 0.6, 0.7, 0.8, 0.9, 0.95, 1.1)
HOOKS = ("before_key", "key_written", "checkpointed", "exported", "checked", "renamed")
CHILD_TIMEOUT = 60

RUNNER = r"""
import os, signal, sys, time, asyncio
from pathlib import Path
from appliance import cipher, keystore
from appliance.node import Node

home, passphrase, hook = Path(sys.argv[1]), sys.argv[2], sys.argv[3]

def die():
    os.kill(os.getpid(), signal.SIGKILL)

def after(module, name, check=lambda *a: True):
    original = getattr(module, name)
    def wrapped(*args, **kwargs):
        result = original(*args, **kwargs)
        if check(*args):
            die()
        return result
    setattr(module, name, wrapped)

if hook == "before_key":  # the passphrase checked; nothing written yet
    def seal(*args, **kwargs):
        die()
    keystore.seal_key_file = seal
elif hook == "key_written":
    after(keystore, "write_private_atomically")
elif hook == "checkpointed":
    after(cipher, "checkpoint_plain")
elif hook == "exported":
    after(cipher, "encrypt_copy")
elif hook == "checked":
    after(cipher, "check_encrypted_file")
elif hook == "renamed":  # node.db is the encrypted copy; the folder not yet flushed
    after(keystore.os, "rename", lambda source, target: str(target).endswith("node.db"))

async def main():
    print("start", flush=True)
    start = time.monotonic()
    async with await Node.open(home, passphrase) as node:
        print("ready", time.monotonic() - start, flush=True)

asyncio.run(main())
"""


async def _make_template(home: Path) -> None:
    async with await Node.init(home, workspace_name="acme", user_name="alice", node_name="alpha", passphrase=PASSPHRASE, kdf=FAST) as node:
        await node.chat.create_channel("general")
        for start in range(0, MESSAGES, 500):
            await node.chat.post_many("general", [f"message {i} needle-5e1f " + "lorem ipsum " * (i % 7) for i in range(start, start + 500)])
        await node.chat.post("general", "the file", attachments=[Attachment("a.bin", b"attachment-needle-91ab" * 100)])
    make_plain(home)


def _run_child(home: Path, *, hook: str = "none", kill_after: float | None = None) -> tuple[int, float | None]:
    proc = subprocess.Popen([sys.executable, "-c", RUNNER, str(home), PASSPHRASE, hook], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "start"
        if kill_after is not None:
            time.sleep(kill_after)
            try:
                os.kill(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        out, err = proc.communicate(timeout=CHILD_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode in (0, -signal.SIGKILL), f"child failed ({proc.returncode}): {err[-2000:]}"
    ready = [line.split() for line in out.splitlines() if line.startswith("ready")]
    return proc.returncode, float(ready[0][1]) if ready else None


def _state_after_kill(home: Path) -> str:
    """'plain' or 'encrypted': what node.db is, checked to hold every message."""
    db = home / "node.db"
    if cipher.is_plaintext(db):
        with closing(sqlite3.connect(db)) as conn:
            assert conn.execute("SELECT count(*) FROM messages").fetchone()[0] == MESSAGES + 1
        return "plain"
    with closing(cipher.Keyed(str(db), node_db_key(home)).connect()) as conn:
        assert conn.execute("SELECT count(*) FROM messages").fetchone()[0] == MESSAGES + 1
    return "encrypted"


async def _reopen(home: Path) -> None:
    async with await Node.open(home, PASSPHRASE) as node:
        assert len(await node.views.read("general", limit=MESSAGES + 10)) == MESSAGES + 1
        assert [m.text for m in await node.views.search("the file")] == ["the file"]
        assert (await node.audit.verify()).ok
        assert [e.action for e in await node.audit.entries()][-1] == "store_encrypted"
    assert not cipher.is_plaintext(home / "node.db")
    assert files_holding(NEEDLES, home) == {}
    assert {p.name for p in home.iterdir()} <= {"node.db", "node.db-wal", "node.db-shm", atrest.KEY_FILE}


@pytest.mark.timeout(300)
def test_kill_9_at_any_point_of_the_conversion_leaves_a_store_the_next_unlock_opens(tmp_path: Path) -> None:
    template = tmp_path / "template"
    asyncio.run(_make_template(template))
    assert files_holding(NEEDLES, template)  # plain: what the conversion is for

    reference = tmp_path / "reference"
    shutil.copytree(template, reference)
    code, seconds = _run_child(reference)
    assert code == 0 and seconds is not None
    asyncio.run(_reopen(reference))

    attempts = [(f"hook {hook}", {"hook": hook}) for hook in HOOKS]
    attempts += [(f"{f:.2f} x {seconds:.2f} s", {"kill_after": f * seconds}) for f in TIMED_FRACTIONS]
    seen = []
    for index, (label, how) in enumerate(attempts):
        home = tmp_path / f"attempt-{index}"
        shutil.copytree(template, home)
        code, _ = _run_child(home, **how)  # type: ignore[arg-type]
        state = _state_after_kill(home)
        seen.append(f"{label}: killed={code != 0} -> {state}")
        if label.startswith("hook"):
            assert code == -signal.SIGKILL, label
            assert state == ("encrypted" if how["hook"] == "renamed" else "plain"), label
        asyncio.run(_reopen(home))
    print("\n".join(seen))
    assert {line.rsplit(" ", 1)[1] for line in seen} == {"plain", "encrypted"}

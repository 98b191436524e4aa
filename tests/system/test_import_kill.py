"""kill -9 during an import leaves the node exactly as before or exactly as after the bundle.

Alice posts 3,000 messages and three attachments and exports them for Bob: one bundle of
about 1.3 MB, whose import takes Bob's node about a second (verifying 3,000 signed changes,
then one transaction that appends them, builds the documents and materialises the messages).
Bob's home and the stick are copied fresh for every attempt. A child process opens the copy
and imports; it is killed with SIGKILL

- after delays spread over the import's own duration (measured first, on another copy, by
  the uninterrupted import that also gives the "after" state) and a little past its end, into
  the snapshot flush on close;
- and at two fixed points, by the child itself: with every row of the import written but the
  transaction not committed (must come back "before"), and right after the commit, with the
  bundle still on the stick (must come back "after").

Each time, the node must open again, hold exactly the "before" or the "after" state (counts,
message ids, change hashes, blobs, audit actions and bundle log, timestamps aside; snapshots
are a cache and not compared), verify its audit chain, and reach "after" by importing the
same stick again.

The same holds for segments carried whole (issue 15): the second test imports Alice's delta -
six segments whole, read in worker processes - straight through the intake, killed the same
ways."""

from __future__ import annotations

import asyncio
import hashlib
import os
import pickle
import select
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from appliance.node import Attachment, Node
from sync import sneakernet, stick
from sync.sneakernet import export_bundles, import_bundles
from tests.conftest import PASSPHRASE, REPO, make_workspace

MESSAGES = 3000
TIMED_FRACTIONS = (0.05, 0.3, 0.55, 0.75, 0.9, 1.0, 1.2)  # of the measured import time, ~90% of it one transaction
CHILD_START_TIMEOUT = 30
CHILD_RUN_TIMEOUT = 60

RUNNER = r"""
import asyncio, os, signal, sys, time
from pathlib import Path
from appliance.node import Node
from appliance.services.intake import IntakeService
from sync import sneakernet, stick

home, passphrase, root, hook = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), sys.argv[4]

def die():
    os.kill(os.getpid(), signal.SIGKILL)

if hook == "in_transaction":  # every row of the import written; the transaction not committed
    record = IntakeService.record_receipt
    async def record_then_die(self, *args, **kwargs):
        await record(self, *args, **kwargs)
        die()
    IntakeService.record_receipt = record_then_die
elif hook == "after_commit":  # committed; the bundle not yet removed from the stick
    async def die_instead(*args, **kwargs):
        die()
    stick.StickMedium.remove = die_instead

async def main():
    async with await Node.open(home, passphrase) as node:
        print("ready", flush=True)
        start = time.monotonic()
        report = await sneakernet.import_bundles(node, root)
        # one write: with PYTHONUNBUFFERED each argument of print() is its own, and a kill
        # between them left a bare "done"
        print(f"done {time.monotonic() - start} {','.join(f.outcome for f in report.files)}", flush=True)

asyncio.run(main())
"""

WHOLES_RUNNER = r"""
import asyncio, os, pickle, signal, sys, time
from pathlib import Path
from appliance.node import Node
from appliance.services.intake import IntakeService
from appliance.services.replica import ReplicaService

home, passphrase, root, hook = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), sys.argv[4]

def die():
    os.kill(os.getpid(), signal.SIGKILL)

if hook == "in_transaction":  # every row of the import written (the wholes last); not committed
    write = IntakeService._write_batches
    async def write_then_die(self, *args, **kwargs):
        await write(self, *args, **kwargs)
        die()
    IntakeService._write_batches = write_then_die
elif hook == "after_commit":  # the transaction committed, the import not yet returned
    def die_instead(*args, **kwargs):
        die()
    ReplicaService.imported = die_instead

async def main():
    sender, documents, wholes = pickle.loads((root / "delta.pickle").read_bytes())
    async with await Node.open(home, passphrase) as node:
        print("ready", flush=True)
        start = time.monotonic()
        summary = await node.intake.import_batches(documents, wholes=wholes, received_from=sender)
        print(f"done {time.monotonic() - start} {summary.outcome}", flush=True)  # one write (see RUNNER)

if __name__ == "__main__":
    asyncio.run(main())
"""

COUNTED = ("documents", "changes", "messages", "blobs", "channels", "directory_entries", "audit_log", "bundle_log", "peer_heads", "peer_blobs")


async def state_of(node: Node) -> dict[str, Any]:
    """What an import may change, without timestamps (and without snapshots, a cache)."""

    def fingerprint(values: list[Any]) -> str:
        return hashlib.sha256(repr(sorted(values)).encode()).hexdigest()

    async with node.store.reading() as conn:

        async def column(sql: str) -> list[Any]:
            return [row[0] if len(row) == 1 else tuple(row) for row in (await conn.execute(text(sql))).all()]

        state: dict[str, Any] = {table: (await column(f"SELECT count(*) FROM {table}"))[0] for table in COUNTED}
        state["message_ids"] = fingerprint(await column("SELECT message_id FROM messages"))
        state["change_hashes"] = fingerprint(await column("SELECT hash FROM changes"))
        state["blob_hashes"] = sorted(h.hex() for h in await column("SELECT hash FROM blobs"))
        state["audit_actions"] = await column("SELECT action FROM audit_log ORDER BY seq")
        state["bundle_log"] = sorted(await column("SELECT outcome, hex(bundle_id) FROM bundle_log"))
    return state


@dataclass(frozen=True)
class Template:
    bob_home: Path
    stick: Path


async def fill_channel(alice: Node) -> None:
    await alice.chat.create_channel("general")
    for start in range(0, MESSAGES, 500):
        await alice.chat.post_many("general", [f"message {i}: " + "lorem ipsum " * (i % 7) for i in range(start, start + 500)])


async def prepare(root: Path) -> Template:
    alice, bob = await make_workspace(root, "bob")
    stick_root = root / "stick"
    stick_root.mkdir()
    async with alice, bob:
        await fill_channel(alice)
        for k in range(3):
            await alice.chat.post("general", f"attachment {k}", attachments=[Attachment(f"file-{k}.bin", os.urandom(40_000 * (k + 1)))])
        exported = await export_bundles(alice, stick_root, for_nodes=[bob.identity.node_id])
        assert len(exported.bundles) == 1 and exported.bundles[0].wholes == 6  # the messages travel as six whole segments
    return Template(root / "bob", stick_root)


def fresh_copy(template: Template, where: Path) -> Template:
    shutil.copytree(template.bob_home, where / "bob")
    shutil.copytree(template.stick, where / "stick")
    return Template(where / "bob", where / "stick")


def read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    return proc.stdout.readline() if ready else ""


@dataclass(frozen=True)
class Run:
    returncode: int
    finished: bool  # the child printed "done": the import returned before the kill
    seconds: float | None  # the import's duration, when it finished


def run_child(copy: Template, *, kill_after: float | None = None, hook: str = "none", runner: str = RUNNER) -> Run:
    """Imports in a child process running `runner`; kills it `kill_after` seconds after it
    opened the node (None: lets it finish, or kill itself at `hook`)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", runner, str(copy.bob_home), PASSPHRASE, str(copy.stick), hook],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
    )  # fmt: skip
    try:
        first = read_line(proc, CHILD_START_TIMEOUT)
        assert first.strip() == "ready", f"child did not start: {first!r} {proc.stderr.read() if proc.poll() is not None and proc.stderr else ''}"
        if kill_after is not None:
            time.sleep(kill_after)
            try:
                os.kill(proc.pid, signal.SIGKILL)
            except ProcessLookupError:  # it had already finished
                pass
        proc.wait(timeout=CHILD_RUN_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.stdout is not None and proc.stderr is not None
    rest, errors = proc.stdout.read(), proc.stderr.read()
    proc.stdout.close()
    proc.stderr.close()
    done = [line.split() for line in rest.splitlines() if line.startswith("done")]
    assert proc.returncode in (0, -signal.SIGKILL), f"child failed (exit {proc.returncode}):\n{errors[-3000:]}"
    return Run(proc.returncode, bool(done), float(done[0][1]) if done else None)


async def inspect(copy: Template) -> dict[str, Any]:
    async with await Node.open(copy.bob_home, PASSPHRASE) as node:
        return await state_of(node)


async def recover(copy: Template) -> tuple[dict[str, Any], dict[str, Any], sneakernet.ImportReport]:
    """Opens the node after the kill: its state then, and after importing the stick again."""
    async with await Node.open(copy.bob_home, PASSPHRASE) as node:
        found = await state_of(node)
        verdict = await node.audit.verify()
        assert verdict.ok, verdict.problem
        report = await import_bundles(node, copy.stick)
        assert (await node.audit.verify()).ok
        final = await state_of(node)
    return found, final, report


@pytest.mark.timeout(240)
def test_kill_9_during_import_leaves_the_node_before_or_after_the_bundle(tmp_path: Path) -> None:
    template = asyncio.run(prepare(tmp_path / "template"))
    before = asyncio.run(inspect(fresh_copy(template, tmp_path / "before")))

    reference = fresh_copy(template, tmp_path / "reference")
    measured = run_child(reference)
    assert measured.returncode == 0 and measured.seconds is not None
    after = asyncio.run(inspect(reference))
    assert after["messages"] == before["messages"] + MESSAGES + 3 and after != before
    assert after["audit_actions"][-1] == "bundle_accepted" and list(reference.stick.glob("rallypoint/*/*.rpb")) == []

    attempts: list[tuple[str, dict[str, Any]]] = [(f"{f:.2f} x {measured.seconds:.2f} s", {"kill_after": f * measured.seconds}) for f in TIMED_FRACTIONS]
    attempts += [("hook: in the transaction", {"hook": "in_transaction"}), ("hook: after the commit", {"hook": "after_commit"})]
    seen: list[str] = []
    for index, (label, how) in enumerate(attempts):
        copy = fresh_copy(template, tmp_path / f"attempt-{index}")
        run = run_child(copy, **how)
        found, final, report = asyncio.run(recover(copy))
        assert found in (before, after), f"{label}: the node holds neither the state before nor after the bundle"
        outcome = "before" if found == before else "after"
        seen.append(f"{label}: killed={run.returncode != 0} finished={run.finished} ({run.seconds}) -> {outcome}")
        assert final == after, f"{label}: importing again did not reach the state after the bundle"
        if outcome == "before":
            assert [f.outcome for f in report.files] == [sneakernet.ACCEPTED], label
        else:
            assert [f.outcome for f in report.files] in ([], [sneakernet.SEEN]), label
        assert list(copy.stick.glob(f"{stick.STICK_DIR}/*/*.rpb")) == [], label
        if how.get("hook") == "in_transaction":
            assert run.returncode == -signal.SIGKILL and outcome == "before", seen[-1]
        if how.get("hook") == "after_commit":
            assert run.returncode == -signal.SIGKILL and outcome == "after" and report.files[0].outcome == sneakernet.SEEN, seen[-1]
        shutil.rmtree(tmp_path / f"attempt-{index}")
    print("\n".join(seen))


async def prepare_wholes(root: Path) -> Template:
    """Bob holds the directory; the "stick" holds Alice's delta for him, pickled: the channel's
    head as changes, its six segments whole."""
    alice, bob = await make_workspace(root, "bob")
    carried = root / "stick"
    carried.mkdir()
    async with alice, bob:
        await fill_channel(alice)
        delta = await alice.exchange.delta_for([bob.identity.node_key])
        assert len(delta.wholes) == 6
        (carried / "delta.pickle").write_bytes(pickle.dumps((alice.identity.node_id, [(d.doc_id, d.changes) for d in delta.documents], delta.wholes)))
    return Template(root / "bob", carried)


async def import_again(copy: Template) -> tuple[dict[str, Any], dict[str, Any]]:
    """Opens the node after the kill: its state then, and after importing the delta again."""
    sender, batches, wholes = pickle.loads((copy.stick / "delta.pickle").read_bytes())
    async with await Node.open(copy.bob_home, PASSPHRASE) as node:
        found = await state_of(node)
        assert (await node.audit.verify()).ok
        await node.intake.import_batches(batches, wholes=wholes, received_from=sender)
        final = await state_of(node)
        assert len(await node.views.read("general", limit=MESSAGES + 1, mark_read=False)) == MESSAGES
    return found, final


@pytest.mark.timeout(240)
def test_kill_9_during_an_import_of_whole_segments_leaves_the_node_before_or_after(tmp_path: Path) -> None:
    template = asyncio.run(prepare_wholes(tmp_path / "template"))
    before = asyncio.run(inspect(fresh_copy(template, tmp_path / "before")))

    reference = fresh_copy(template, tmp_path / "reference")
    measured = run_child(reference, runner=WHOLES_RUNNER)
    assert measured.returncode == 0 and measured.seconds is not None
    after = asyncio.run(inspect(reference))
    assert after["messages"] == before["messages"] + MESSAGES and after != before

    attempts: list[tuple[str, dict[str, Any]]] = [(f"{f:.2f} x {measured.seconds:.2f} s", {"kill_after": f * measured.seconds}) for f in TIMED_FRACTIONS]
    attempts += [("hook: in the transaction", {"hook": "in_transaction"}), ("hook: after the commit", {"hook": "after_commit"})]
    seen: list[str] = []
    for index, (label, how) in enumerate(attempts):
        copy = fresh_copy(template, tmp_path / f"attempt-{index}")
        run = run_child(copy, runner=WHOLES_RUNNER, **how)
        found, final = asyncio.run(import_again(copy))
        assert found in (before, after), f"{label}: the node holds neither the state before nor after the import"
        seen.append(f"{label}: killed={run.returncode != 0} finished={run.finished} ({run.seconds}) -> {'before' if found == before else 'after'}")
        assert final == after, f"{label}: importing again did not reach the state after the import"
        if how.get("hook") == "in_transaction":
            assert run.returncode == -signal.SIGKILL and found == before, seen[-1]
        if how.get("hook") == "after_commit":
            assert run.returncode == -signal.SIGKILL and found == after, seen[-1]
        shutil.rmtree(tmp_path / f"attempt-{index}")
    print("\n".join(seen))

"""The compliance export on real nodes: history (each edit, the deletion with who and when),
reactions, attachments, provenance, the filters, admin only and audited, the schedule's runs
without gaps or overlaps, and a folder that vanishes mid-write."""

from __future__ import annotations

import asyncio
import email
import email.policy
import hashlib
import json
import shutil
import time
import zipfile
from pathlib import Path

import pytest

from appliance.compliance_records import ExportFilter, ExportFormat, RecordKind, TimeBasis
from appliance.errors import NotFound, PermissionDenied, StorageError
from appliance.export_verify import verify_lines
from appliance.export_writer import ExportSink
from appliance.node import Node
from appliance.services.blobs import Attachment
from appliance.services.compliance_schedule import SETTLE_MS
from tests.conftest import FAST, PASSPHRASE, make_workspace, sync_all

HOUR = 3_600_000


class Clock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        self.now += 1  # every reading moves on: ids stay ordered
        return self.now


def lines_of(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


async def export_jsonl(node: Node, path: Path, filters: ExportFilter | None = None) -> list[dict[str, object]]:
    await node.audit.compliance.export(path, ExportFormat.JSONL, filters or ExportFilter())
    return [line for line in lines_of(path) if line["type"] == "record"]


async def test_history_reactions_files_and_provenance(tmp_path: Path) -> None:
    alpha, bravo = await make_workspace(tmp_path, "bob")
    async with alpha, bravo:
        await alpha.chat.create_channel("general")
        await sync_all(alpha, bravo)
        posted = await bravo.chat.post("general", "first words", attachments=[Attachment("plan.pdf", b"%PDF plan")])
        await bravo.chat.edit(posted, "second words")
        await bravo.chat.edit(posted, "third words")
        other = await bravo.chat.post("general", "say this and regret it")
        await sync_all(bravo, alpha)
        await alpha.chat.react(posted, "👍")
        await alpha.chat.delete(other)  # an admin deleting bob's message
        records = await export_jsonl(alpha, tmp_path / "out.jsonl")
        workspace_key = alpha.identity.row.workspace_key

    by_id = {r["id"]: r for r in records}
    assert [r["text"] for r in records if r["message_id"] == posted] == ["first words", "second words", "third words"]
    assert [r["kind"] for r in records if r["message_id"] == posted] == ["post", "edit", "edit"]
    post = by_id[f"{posted}/post/0"]
    assert post["author"] == "bob" and post["files"] == [{"name": "plan.pdf", "size": 9, "hash": hashlib.sha256(b"%PDF plan").hexdigest()}]
    assert [(r["emoji"], r["user"]) for r in post["reactions"]] == [("👍", "alice")]
    edits = [r for r in records if r["kind"] == "edit"]
    assert edits[0]["at_ms"] < edits[1]["at_ms"] and len({r["proof"]["change_hash"] for r in edits}) == 2
    deletion = by_id[f"{other}/deletion/0"]
    assert deletion["author"] == "alice" and deletion["text"] == "" and deletion["at_ms"] >= by_id[f"{other}/post/0"]["at_ms"]
    assert by_id[f"{other}/post/0"]["text"] == "say this and regret it"  # the deleted text stays on record
    assert {r["provenance"]["received_from_name"] for r in records if r["author"] == "bob"} == {"bob-node"}
    assert deletion["provenance"]["received_from_name"] == "alpha"
    report = verify_lines((tmp_path / "out.jsonl").read_bytes().splitlines(keepends=True), workspace_key)
    assert report.ok, report.problems


async def test_filters_by_time_channel_and_user(tmp_path: Path) -> None:
    clock = Clock(1_800_000_000_000)
    alice = await Node.init(tmp_path / "a", workspace_name="acme", user_name="alice", node_name="alpha", passphrase=PASSPHRASE, kdf=FAST, clock=clock)
    async with alice:
        await alice.directory.add_user("carol")
        await alice.chat.create_channel("general")
        await alice.chat.create_channel("ops")
        early = await alice.chat.post("general", "early")
        clock.now += HOUR
        middle = await alice.chat.post("general", "middle")
        in_ops = await alice.chat.post("ops", "ops talk")
        clock.now += HOUR
        await alice.chat.edit(early, "early, edited late")
        late = await alice.chat.post("general", "late")
        start = 1_800_000_000_000 + HOUR

        window = await export_jsonl(alice, tmp_path / "w.jsonl", ExportFilter(since=start, until=start + HOUR))
        assert {r["message_id"] for r in window} == {middle, in_ops}
        edited_later = await export_jsonl(alice, tmp_path / "e.jsonl", ExportFilter(since=start + HOUR))
        assert [(r["message_id"], r["kind"]) for r in edited_later] == [(early, "edit"), (late, "post")]
        ops = await export_jsonl(alice, tmp_path / "o.jsonl", ExportFilter(channels=("ops",)))
        assert [r["message_id"] for r in ops] == [in_ops]
        assert await export_jsonl(alice, tmp_path / "c.jsonl", ExportFilter(users=("carol",))) == []
        by_alice = await export_jsonl(alice, tmp_path / "u.jsonl", ExportFilter(users=("alice",)))
        assert len(by_alice) == 5
        with pytest.raises(NotFound, match="nowhere"):
            await alice.audit.compliance.export(tmp_path / "x.jsonl", ExportFormat.JSONL, ExportFilter(channels=("nowhere",)))
        with pytest.raises(NotFound, match="nobody"):
            await alice.audit.compliance.export(tmp_path / "y.jsonl", ExportFormat.JSONL, ExportFilter(users=("nobody",)))


async def test_only_admins_export_and_every_export_is_audited(tmp_path: Path) -> None:
    alpha, bravo = await make_workspace(tmp_path, "bob")
    async with alpha, bravo:
        await alpha.chat.create_channel("general")
        await alpha.chat.post("general", "hello")
        with pytest.raises(PermissionDenied):
            await bravo.audit.compliance.export(tmp_path / "b.csv", ExportFormat.CSV, ExportFilter())
        assert not (tmp_path / "b.csv").exists()
        assert (await bravo.audit.entries(1))[0].action == "permission_denied"
        result = await alpha.audit.compliance.export(tmp_path / "a.csv", ExportFormat.CSV, ExportFilter(channels=("general",)), recipient=bytes(32 * [9]))
        entry = (await alpha.audit.entries(1))[0]
    assert entry.action == "compliance_exported"
    assert entry.detail["sha256"] == hashlib.sha256((tmp_path / "a.csv").read_bytes()).hexdigest() == result.sha256
    assert entry.detail["records"] == 1 and entry.detail["format"] == "csv" and entry.detail["encrypted_to"] == "09" * 32
    assert entry.detail["filters"] == {"since": None, "until": None, "channels": ["general"], "users": [], "basis": "sent"}


async def test_each_format_writes_whole_files_readable_only_by_their_owner(tmp_path: Path) -> None:
    alpha, bravo = await make_workspace(tmp_path, "bob")
    async with alpha, bravo:
        await alpha.chat.create_channel("general")
        for n in range(5):
            await alpha.chat.post("general", f"message {n}", attachments=[Attachment(f"f{n}.txt", f"file {n}".encode())])
        for fmt in ExportFormat:
            result = await alpha.audit.compliance.export(tmp_path / f"out.{fmt.value}", fmt, ExportFilter(), with_files=True)
            assert result.records == 5 and (tmp_path / f"out.{fmt.value}").stat().st_mode & 0o777 == 0o600
            if fmt != ExportFormat.GLOBALRELAY:
                assert result.files == 5 and sorted(p.name for p in Path(result.files_dir or "").iterdir()) == sorted(hashlib.sha256(f"file {n}".encode()).hexdigest() for n in range(5))
    with zipfile.ZipFile(tmp_path / "out.globalrelay") as archive:
        mails = [email.message_from_bytes(archive.read(name), policy=email.policy.default) for name in sorted(archive.namelist()) if name.endswith(".eml")]
    assert sorted((a.get_filename(), a.get_content()) for m in mails for a in m.iter_attachments()) == [(f"f{n}.txt", f"file {n}".encode()) for n in range(5)]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


async def test_the_schedule_exports_each_arrival_once_without_gaps(tmp_path: Path) -> None:
    """Runs an hour apart, a message posted on another node long before but carried here late
    lands in the run after it arrived; the files together hold each record once."""
    clock = Clock(1_800_000_000_000)
    alpha = await Node.init(tmp_path / "a", workspace_name="acme", user_name="alice", node_name="alpha", passphrase=PASSPHRASE, kdf=FAST, clock=clock)
    enrollment = await alpha.enrollment.invite("bob-node", "bob", kdf=FAST)
    bravo = await Node.join(tmp_path / "b", enrollment.data, enrollment.code, PASSPHRASE, kdf=FAST, clock=clock)
    out = tmp_path / "exports"
    out.mkdir()
    async with alpha, bravo:
        await alpha.chat.create_channel("general")
        await sync_all(alpha, bravo)
        await alpha.audit.compliance.schedule.set_policy(out, ExportFormat.JSONL, HOUR)
        carried_late = await bravo.chat.post("general", "written early, carried late")
        first = await alpha.chat.post("general", "first")
        clock.now += SETTLE_MS + 1
        run1 = await alpha.audit.compliance.schedule.run()
        assert run1.result is not None
        assert (await alpha.audit.compliance.schedule.run()).result is None  # not due again yet
        second = await alpha.chat.post("general", "second")
        await sync_all(bravo, alpha)  # arrives now, with its old sent time
        clock.now += HOUR + SETTLE_MS
        run2 = await alpha.audit.compliance.schedule.run()
        third = await alpha.chat.post("general", "third")
        clock.now += HOUR + SETTLE_MS
        run3 = await alpha.audit.compliance.schedule.run()
        assert (await alpha.audit.entries(1))[0].detail.get("scheduled") is True
    assert run2.result is not None and run3.result is not None
    assert len(list(out.iterdir())) == 3
    files = [Path(run.result.path) for run in (run1, run2, run3) if run.result is not None]
    per_file = [[r["message_id"] for r in lines_of(f) if r["type"] == "record"] for f in files]
    assert per_file == [[first], sorted([second, carried_late]), [third]]
    assert run1.result.until == run2.result.since and run2.result.until == run3.result.since


async def test_a_run_killed_after_its_file_was_named_is_not_exported_twice(tmp_path: Path) -> None:
    clock = Clock(1_800_000_000_000)
    alice = await Node.init(tmp_path / "a", workspace_name="acme", user_name="alice", node_name="alpha", passphrase=PASSPHRASE, kdf=FAST, clock=clock)
    out = tmp_path / "exports"
    out.mkdir()
    async with alice:
        await alice.chat.create_channel("general")
        schedule = alice.audit.compliance.schedule
        await schedule.set_policy(out, ExportFormat.CSV, HOUR)
        await alice.chat.post("general", "one")
        clock.now += HOUR + SETTLE_MS
        finished = schedule._finished  # the run "dies" between renaming its file and recording its end

        async def killed(until: int) -> None:
            raise KeyboardInterrupt

        schedule._finished = killed  # type: ignore[method-assign]
        with pytest.raises(KeyboardInterrupt):
            await schedule.run()
        schedule._finished = finished  # type: ignore[method-assign]
        await alice.chat.post("general", "two")
        clock.now += HOUR + SETTLE_MS
        run = await schedule.run()
    assert run.result is not None
    bodies = sorted(f.read_bytes().count(b"\r\n") - 1 for f in out.iterdir())
    assert bodies == [1, 1]  # "one" in the first file only, "two" in the second


async def test_a_schedule_set_by_an_admin_since_demoted_refuses(tmp_path: Path) -> None:
    alice = await Node.init(tmp_path / "a", workspace_name="acme", user_name="alice", node_name="alpha", passphrase=PASSPHRASE, kdf=FAST)
    async with alice:
        await alice.directory.add_user("dave", "admin")
        await alice.audit.compliance.schedule.set_policy(tmp_path, ExportFormat.CSV, HOUR)
        await alice.directory.set_role("alice", "member")
        with pytest.raises(PermissionDenied, match="no longer an admin"):
            await alice.audit.compliance.schedule.run(force=True)


async def test_a_folder_removed_mid_write_leaves_nothing_and_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "usb"
    folder.mkdir()
    alice = await Node.init(tmp_path / "a", workspace_name="acme", user_name="alice", node_name="alpha", passphrase=PASSPHRASE, kdf=FAST)
    real_write = ExportSink.write

    def write_then_pull_the_stick(sink: ExportSink, data: bytes) -> None:
        real_write(sink, data)
        if folder.exists():
            shutil.rmtree(folder)  # the stick is pulled while the export is being written

    monkeypatch.setattr(ExportSink, "write", write_then_pull_the_stick)
    async with alice:
        await alice.chat.create_channel("general")
        await alice.chat.post_many("general", [f"m{n}" for n in range(50)])
        with pytest.raises(StorageError, match="cannot write the export"):
            await alice.audit.compliance.export(folder / "out.jsonl", ExportFormat.JSONL, ExportFilter())
        assert (await alice.audit.entries(1))[0].action == "compliance_export_failed"
    assert not folder.exists()


async def test_received_basis_selects_by_arrival(tmp_path: Path) -> None:
    alpha, bravo = await make_workspace(tmp_path, "bob")
    async with alpha, bravo:
        await alpha.chat.create_channel("general")
        await sync_all(alpha, bravo)
        old = await bravo.chat.post("general", "old news")
        await alpha.chat.post("general", "before the courier")
        await asyncio.sleep(0.01)
        mark = int(time.time() * 1000)
        await asyncio.sleep(0.01)
        await sync_all(bravo, alpha)
        arrived = await export_jsonl(alpha, tmp_path / "r.jsonl", ExportFilter(since=mark, basis=TimeBasis.RECEIVED))
        sent = await export_jsonl(alpha, tmp_path / "s.jsonl", ExportFilter(since=mark))
    assert [r["message_id"] for r in arrived] == [old] and sent == []
    assert RecordKind.POST.value == arrived[0]["kind"]


async def test_messages_carried_in_whole_segments_keep_their_proofs(tmp_path: Path) -> None:
    """A segment a peer lacked entirely arrives compacted with one signature per actor: each
    message's record names its own change and the signature of the newest change that vouches
    for it, and the export verifies."""
    alpha, bravo = await make_workspace(tmp_path, "bob")
    async with alpha, bravo:
        await alpha.chat.create_channel("general")
        await alpha.chat.post_many("general", [f"message {i}" for i in range(600)])
        await alpha.directory.set_role("bob", "admin")  # bravo's user exports
        delta = await alpha.exchange.delta_for([bravo.identity.node_key])
        assert delta.wholes
        await bravo.intake.import_batches([(d.doc_id, d.changes) for d in delta.documents], wholes=delta.wholes, received_from=alpha.identity.node_id)
        records = await export_jsonl(bravo, tmp_path / "whole.jsonl")
        workspace_key = bravo.identity.row.workspace_key
    assert len(records) == 600 and all(r["proof"] is not None for r in records)
    assert len({r["proof"]["change_hash"] for r in records}) == 600
    assert len({r["proof"]["signed_hash"] for r in records}) == 2  # one signed change per segment
    assert {r["provenance"]["received_from_name"] for r in records} == {"alpha"}
    assert verify_lines((tmp_path / "whole.jsonl").read_bytes().splitlines(keepends=True), workspace_key).ok

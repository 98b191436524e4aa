"""The compliance export made in parts by the node's worker processes: however the channels are
cut into parts the file is the same, byte for byte; a part that cannot be read, or a worker that
dies, stops the export with the reason, leaves no file and is audited - and the node goes on."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import time
import zipfile
from pathlib import Path

import pytest

from appliance import export_job
from appliance.compliance_records import ExportFilter, ExportFormat
from appliance.errors import StorageError
from appliance.export_verify import verify_lines
from appliance.node import Node
from appliance.services import chat
from appliance.services.blobs import Attachment
from appliance.services.compliance import ComplianceService
from appliance.workers import WorkerPool, settle
from tests.conftest import FAST, PASSPHRASE, connect_node_db

CHANNELS = ("general", "ops", "random")
WORKER_GONE_S = 10.0  # a killed worker is noticed by its pool within this


async def filled_node(home: Path, monkeypatch: pytest.MonkeyPatch) -> Node:
    """Three channels of 150-400 messages in segments of 60, some edited, deleted, reacted to."""
    monkeypatch.setattr(chat, "SEGMENT_SIZE", 60)
    node = await Node.init(home, workspace_name="acme", user_name="alice", node_name="alpha", passphrase=PASSPHRASE, kdf=FAST)
    for n, channel in enumerate(CHANNELS):
        await node.chat.create_channel(channel)
        posted = await node.chat.post_many(channel, [f"{channel} message {i}" for i in range(150 + 125 * n)])
        for message_id in posted[7::41]:
            await node.chat.edit(message_id, "edited once")
            await node.chat.edit(message_id, "edited twice")
        for message_id in posted[3::53]:
            await node.chat.delete(message_id)
        for message_id in posted[::29]:
            await node.chat.react(message_id, "👍")
    return node


async def export_all(node: Node, folder: Path) -> dict[ExportFormat, Path]:
    folder.mkdir()
    out = {}
    for fmt in ExportFormat:
        out[fmt] = folder / f"export-{fmt.value}"
        result = await node.audit.compliance.export(out[fmt], fmt, ExportFilter())
        assert result.records > 0
    return out


def eml_entries(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        assert archive.testzip() is None
        return {name: archive.read(name) for name in archive.namelist() if name != "manifest.json"}


async def test_any_cut_into_parts_makes_the_same_export(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    node = await filled_node(tmp_path / "alpha", monkeypatch)
    parts: list[str] = []
    made = ComplianceService._part

    async def counted(service: ComplianceService, job: export_job.ExportJob) -> object:
        parts.append(job.channel.name)
        return await made(service, job)

    monkeypatch.setattr(ComplianceService, "_part", counted)
    async with node:
        monkeypatch.setattr(export_job, "ROWS_PER_PART", 1_000_000)  # one part a channel
        whole = await export_all(node, tmp_path / "whole")
        assert sorted(parts) == sorted(CHANNELS * len(ExportFormat))
        parts.clear()
        monkeypatch.setattr(export_job, "ROWS_PER_PART", 100)  # two segments a part or so: edits, deletions and channels' ends fall anywhere
        cut = await export_all(node, tmp_path / "cut")
        assert len(parts) >= 8 * len(ExportFormat)
        workspace_key = node.identity.row.workspace_key

    assert whole[ExportFormat.CSV].read_bytes() == cut[ExportFormat.CSV].read_bytes()
    # The Actiance comment and the signed header name the moment of the export: the rest is the same.
    assert whole[ExportFormat.ACTIANCE].read_bytes().split(b"\n", 2)[2] == cut[ExportFormat.ACTIANCE].read_bytes().split(b"\n", 2)[2]
    assert eml_entries(whole[ExportFormat.GLOBALRELAY]) == eml_entries(cut[ExportFormat.GLOBALRELAY])
    whole_lines, cut_lines = (path.read_bytes().splitlines(keepends=True) for path in (whole[ExportFormat.JSONL], cut[ExportFormat.JSONL]))
    records = [json.loads(line) for line in cut_lines if b'"type":"record"' in line]
    assert [line for line in whole_lines if b'"type":"record"' in line] == [line for line in cut_lines if b'"type":"record"' in line]
    assert verify_lines(cut_lines, workspace_key).ok
    order = [(r["channel"]["id"], r["message_id"]) for r in records]
    assert order == sorted(order)  # channel by channel, in message order, whatever the parts
    assert len({r["message_id"] for r in records if r["kind"] == "post"}) == 150 + 275 + 400
    assert sum(1 for r in records if r["kind"] == "edit") == 2 * sum(len(range(7, 150 + 125 * n, 41)) for n in range(3))


async def test_a_segment_that_cannot_be_read_stops_the_export_and_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    node = await filled_node(tmp_path / "alpha", monkeypatch)
    await node.close()
    db = connect_node_db(tmp_path / "alpha" / "node.db")
    with db:
        damaged = db.execute("SELECT doc_id FROM snapshots WHERE doc_id IN (SELECT doc_id FROM messages) ORDER BY doc_id LIMIT 1").fetchone()[0]
        channel = db.execute("SELECT name FROM channels WHERE channel_id = (SELECT channel_id FROM messages WHERE doc_id = ? LIMIT 1)", (damaged,)).fetchone()[0]
        db.execute("UPDATE snapshots SET data = ? WHERE doc_id = ?", (b"\x85o\x4a\x83" + os.urandom(200), damaged))
    db.close()
    folder = tmp_path / "usb"
    folder.mkdir()
    async with await Node.open(tmp_path / "alpha", PASSPHRASE) as node:
        with pytest.raises(StorageError, match=f"the export could not be made: {channel}: cannot load document.*nothing was left"):
            await node.audit.compliance.export(folder / "out.csv", ExportFormat.CSV, ExportFilter())
        assert list(folder.iterdir()) == []
        entry = (await node.audit.entries(1))[0]
        assert entry.action == "compliance_export_failed" and "cannot load document" in json.dumps(entry.detail)
        clean = ExportFilter(channels=tuple(c for c in CHANNELS if c != channel))
        assert (await node.audit.compliance.export(folder / "rest.csv", ExportFormat.CSV, clean)).records > 0


def _die_making_a_part(job: export_job.ExportJob) -> None:
    """What the worker runs instead of making a part, in the test below: it dies."""
    os._exit(1)


async def test_a_worker_that_dies_fails_the_export_cleanly_and_the_next_export_works(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    node = await filled_node(tmp_path / "alpha", monkeypatch)
    folder = tmp_path / "usb"
    folder.mkdir()
    async with node:
        await node.intake.warm_workers()
        with monkeypatch.context() as dying:
            dying.setattr(export_job, "run_job", _die_making_a_part)
            with pytest.raises(StorageError, match="died.*nothing was left"):
                await node.audit.compliance.export(folder / "out.jsonl", ExportFormat.JSONL, ExportFilter())
        assert list(folder.iterdir()) == []
        assert (await node.audit.entries(1))[0].action == "compliance_export_failed"
        result = await node.audit.compliance.export(folder / "again.jsonl", ExportFormat.JSONL, ExportFilter())
        assert result.messages == 150 + 275 + 400
        assert verify_lines((folder / "again.jsonl").read_bytes().splitlines(keepends=True), node.identity.row.workspace_key).ok


async def test_a_worker_killed_between_jobs_is_replaced_before_the_next(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    node = await filled_node(tmp_path / "alpha", monkeypatch)
    async with node:
        await node.intake.warm_workers()
        executor = node.intake.pool._executors[0]
        assert executor is not None
        os.kill(next(iter(executor._processes)), signal.SIGKILL)  # type: ignore[attr-defined]
        deadline = time.monotonic() + WORKER_GONE_S
        while not executor._broken and time.monotonic() < deadline:  # type: ignore[attr-defined]
            await asyncio.sleep(0.02)
        assert executor._broken  # type: ignore[attr-defined]
        result = await node.audit.compliance.export(tmp_path / "out.jsonl", ExportFormat.JSONL, ExportFilter())
        assert result.messages == 150 + 275 + 400
        assert node.intake.pool._executors[0] is not executor


def _die_slowly(started: str) -> None:
    """A job that reaches its worker, says so, and kills it a little later."""
    Path(started).touch()
    time.sleep(0.5)
    os._exit(1)


async def test_a_job_cancelled_in_a_worker_about_to_die_does_not_take_the_next_job_with_it(tmp_path: Path) -> None:
    """An export or import that fails elsewhere cancels its jobs still out; one already in its
    worker may yet kill it, which its executor learns only then. The next job on that worker
    (the same segment) must not queue behind it and die too: the CI failure of stop 27."""
    pool = WorkerPool(1)
    started = tmp_path / "started"
    try:
        dying = asyncio.ensure_future(pool._submit("a dying job", _die_slowly, str(started), segment="s1"))
        deadline = time.monotonic() + WORKER_GONE_S
        while not started.exists() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert started.exists()
        await settle([dying])
        assert await pool._submit("the next job", os.getpid, segment="s1") != os.getpid()
    finally:
        pool.close()


async def test_a_run_of_big_attachments_is_cut_into_more_parts_and_nothing_is_lost(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A part stops once its attachments reach their budget (the worker's memory, and the
    bytes read here to copy beside, stay bounded) and the rest of its range follows it."""
    node = await Node.init(tmp_path / "alpha", workspace_name="acme", user_name="alice", node_name="alpha", passphrase=PASSPHRASE, kdf=FAST)
    parts: list[str | None] = []
    made = ComplianceService._part

    async def counted(service: ComplianceService, job: export_job.ExportJob) -> object:
        parts.append(job.after)
        return await made(service, job)

    monkeypatch.setattr(ComplianceService, "_part", counted)
    contents = {n: os.urandom(10_000) for n in range(12)}
    async with node:
        await node.chat.create_channel("general")
        for n, data in contents.items():
            await node.chat.post("general", f"file {n}", attachments=[Attachment(f"f{n}.bin", data)])
            await node.chat.post("general", f"between {n}")
        folders = {}
        for budget in (10**9, 25_000):
            monkeypatch.setattr(export_job, "PART_FILE_BYTES", budget)
            parts.clear()
            folders[budget] = tmp_path / f"budget-{budget}"
            folders[budget].mkdir()
            for fmt in (ExportFormat.GLOBALRELAY, ExportFormat.CSV):
                result = await node.audit.compliance.export(folders[budget] / fmt.value, fmt, ExportFilter(), with_files=True)
                assert result.records == 24
            assert len(parts) == (2 if budget == 10**9 else 2 * 6)  # two attachments of 10 kB a part
    whole, cut = folders[10**9], folders[25_000]
    assert eml_entries(whole / "globalrelay") == eml_entries(cut / "globalrelay")
    assert whole.joinpath("csv").read_bytes() == cut.joinpath("csv").read_bytes()
    beside = {p.name: p.read_bytes() for p in (cut / "csv.files").iterdir()}
    assert beside == {hashlib.sha256(data).hexdigest(): data for data in contents.values()}

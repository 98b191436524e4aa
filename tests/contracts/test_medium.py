"""The courier medium's contract (sync/ports.py `Medium`), run against every implementation: the
real stick (sync.stick.StickMedium, files under tmp_path) and its in-memory twin
(sync.memory_medium.MemoryMedium). Each implementation comes with a way to put anything on it, as
anyone preparing a stick could, and to look at what its quarantine kept."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from appliance.ids import key_id
from sync import stick
from sync.errors import StickError
from sync.memory_medium import MemoryMedium
from sync.ports import Medium
from sync.quarantine import REASON_SUFFIX, QuarantineQuota

ME = key_id(b"\x01" * 32)
PEER = key_id(b"\x02" * 32)
OUTBOXES = [stick.BUNDLES, stick.outbox_name(ME), stick.BROADCAST]
LIMIT = 16 * 1024 * 1024
WRITE_DEADLINE = 60.0  # seconds: the concurrent reader gives up with a failure after this


@dataclass(frozen=True)
class Twin:
    medium: Medium
    place: Callable[[str, str, bytes], None]  # outbox, name, bytes: unchecked
    place_format: Callable[[bytes], None]
    kept: Callable[[Path], tuple[bytes, str]]  # a quarantined copy's bytes and reason


def stick_twin(tmp_path: Path) -> Twin:
    root = tmp_path / "stick"
    root.mkdir()

    def place(outbox: str, name: str, data: bytes) -> None:
        folder = root / stick.STICK_DIR / outbox
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)

    def place_format(content: bytes) -> None:
        (root / stick.STICK_DIR).mkdir(exist_ok=True)
        (root / stick.STICK_DIR / stick.FORMAT_FILE).write_bytes(content)

    def kept(path: Path) -> tuple[bytes, str]:
        return path.read_bytes(), path.with_name(path.name + REASON_SUFFIX).read_text()

    return Twin(stick.StickMedium(root, quarantine_dir=tmp_path / "home" / "quarantine"), place, place_format, kept)


def memory_twin(_tmp_path: Path) -> Twin:
    medium = MemoryMedium()
    return Twin(medium, medium.place, medium.place_format, lambda path: medium.kept(path.name))


PORT = Medium
IMPLEMENTATIONS = {"stick": stick.StickMedium, "memory": MemoryMedium}


@pytest.fixture(params=list(IMPLEMENTATIONS))
def twin(request: pytest.FixtureRequest, tmp_path: Path) -> Twin:
    make: Callable[[Path], Twin] = stick_twin if request.param == "stick" else memory_twin
    return make(tmp_path)


def anonymous(serial: int) -> str:
    return stick.anonymous_file_name(serial.to_bytes(16, "big"))


async def test_an_empty_medium_scans_empty(twin: Twin) -> None:
    scan = await twin.medium.scan(OUTBOXES, max_file_bytes=LIMIT)
    assert (scan.files, scan.problems) == ((), ())


async def test_written_bundles_are_scanned_in_name_order_and_read_back(twin: Twin) -> None:
    await twin.medium.write(stick.BUNDLES, anonymous(2), b"second")
    path = await twin.medium.write(stick.BUNDLES, anonymous(1), b"first bytes")
    scan = await twin.medium.scan(OUTBOXES, max_file_bytes=LIMIT)
    assert [f.name for f in scan.files] == [anonymous(1), anonymous(2)] and scan.problems == ()
    first = scan.files[0]
    assert (first.path, first.outbox, first.size) == (path, stick.BUNDLES, len(b"first bytes"))
    assert await twin.medium.read(first, max_file_bytes=LIMIT) == b"first bytes"
    assert await twin.medium.read_head(first, 5) == b"first"
    assert await twin.medium.read_head(first, 1000) == b"first bytes"


async def test_a_write_replaces_a_file_of_the_same_name(twin: Twin) -> None:
    await twin.medium.write(stick.BUNDLES, anonymous(1), b"old")
    await twin.medium.write(stick.BUNDLES, anonymous(1), b"new")
    (file,) = (await twin.medium.scan(OUTBOXES, max_file_bytes=LIMIT)).files
    assert await twin.medium.read(file, max_file_bytes=LIMIT) == b"new"


async def test_a_reader_never_sees_half_a_written_file(twin: Twin) -> None:
    old, new = b"o" * 1024, bytes(range(256)) * (32 * 1024)  # 8 MiB: a write takes many system calls
    await twin.medium.write(stick.BUNDLES, anonymous(1), old)
    writing = asyncio.ensure_future(twin.medium.write(stick.BUNDLES, anonymous(1), new))
    seen: set[int] = set()
    deadline = time.monotonic() + WRITE_DEADLINE
    while True:
        done = writing.done()
        (file,) = (await twin.medium.scan(OUTBOXES, max_file_bytes=LIMIT)).files
        data = await twin.medium.read(file, max_file_bytes=LIMIT)
        assert data in (old, new), f"a reader saw {len(data):,} bytes of a file being written"
        seen.add(len(data))
        if done:
            break
        assert time.monotonic() < deadline, "the write did not finish in time"
        await asyncio.sleep(0)  # let the write proceed between reads
    await writing
    assert len(new) in seen


async def test_junk_is_reported_as_problems_not_errors(twin: Twin) -> None:
    twin.place(stick.BUNDLES, "notes.txt", b"hello")
    twin.place(stick.BUNDLES, anonymous(1), b"x" * 2000)
    twin.place(stick.BUNDLES, anonymous(2), b"fits")
    scan = await twin.medium.scan(OUTBOXES, max_file_bytes=1000)
    assert [f.name for f in scan.files] == [anonymous(2)]
    reasons = {Path(p.path).name: p.reason for p in scan.problems}
    assert reasons == {"notes.txt": "name is not a bundle file name (32 hex digits.rpb)", anonymous(1): "is 2,000 bytes, over the limit of 1,000"}


async def test_problems_are_listed_up_to_a_bound_then_counted(twin: Twin) -> None:
    for index in range(stick.MAX_LISTED_PROBLEMS + 5):
        twin.place(stick.BUNDLES, f"junk-{index:04d}", b"")
    problems = (await twin.medium.scan(OUTBOXES, max_file_bytes=LIMIT)).problems
    assert len(problems) == stick.MAX_LISTED_PROBLEMS + 1
    assert problems[-1].reason == "5 further entries skipped, not listed one by one"


async def test_a_foreign_layout_is_reported_and_not_written_to(twin: Twin) -> None:
    twin.place_format(b"rallypoint-stick/9\n")
    (problem,) = (await twin.medium.scan(OUTBOXES, max_file_bytes=LIMIT)).problems
    assert problem.reason == 'says "rallypoint-stick/9", not "rallypoint-stick/1": a layout this node does not know'
    with pytest.raises(StickError, match="FORMAT says"):
        await twin.medium.write(stick.BUNDLES, anonymous(1), b"x")


async def test_caller_mistakes_are_value_errors(twin: Twin) -> None:
    with pytest.raises(ValueError, match="not an outbox name"):
        await twin.medium.scan(["../etc"], max_file_bytes=LIMIT)
    with pytest.raises(ValueError, match="not a bundle file name"):
        await twin.medium.write(stick.BUNDLES, "carrier.txt", b"x")
    with pytest.raises(ValueError, match="not a bundle file name"):  # a sender's id has no place in bundles/
        await twin.medium.write(stick.BUNDLES, stick.bundle_file_name(PEER, 1_700_000_000_000, bytes(16)), b"x")


async def test_removed_files_are_gone_and_removing_twice_is_fine(twin: Twin) -> None:
    await twin.medium.write(stick.BUNDLES, anonymous(1), b"one")
    (file,) = (await twin.medium.scan(OUTBOXES, max_file_bytes=LIMIT)).files
    await twin.medium.remove(file)
    await twin.medium.remove(file)
    assert (await twin.medium.scan(OUTBOXES, max_file_bytes=LIMIT)).files == ()
    with pytest.raises(StickError, match="cannot read .*No such file"):
        await twin.medium.read(file, max_file_bytes=LIMIT)


async def test_a_file_grown_past_the_limit_since_the_scan_is_refused(twin: Twin) -> None:
    await twin.medium.write(stick.BUNDLES, anonymous(1), b"small")
    (file,) = (await twin.medium.scan(OUTBOXES, max_file_bytes=LIMIT)).files
    twin.place(stick.BUNDLES, anonymous(1), b"x" * 2000)
    with pytest.raises(StickError, match="it is 2,000 bytes now, over the limit of 1,000"):
        await twin.medium.read(file, max_file_bytes=1000)


async def test_an_exporter_supersedes_only_its_own_older_bundles(twin: Twin) -> None:
    for serial in (1, 2, 3, 4):
        await twin.medium.write(stick.BUNDLES, anonymous(serial), bytes([serial]))

    def mine(name: str) -> bool:
        return name in (anonymous(1), anonymous(2), anonymous(3))

    assert await twin.medium.remove_own_older(stick.BUNDLES, mine, {anonymous(3)}) == 2
    assert [f.name for f in (await twin.medium.scan(OUTBOXES, max_file_bytes=LIMIT)).files] == [anonymous(3), anonymous(4)]


async def test_the_quarantine_keeps_bytes_and_reason_without_overwriting(twin: Twin) -> None:
    first = await twin.medium.quarantine(b"one", anonymous(1), "Tampered: the signature does not verify")
    second = await twin.medium.quarantine(b"two", anonymous(1), "Truncated: the stream ends early\n")
    assert first.path is not None and second.path is not None and first.dropped == second.dropped == ()
    assert (first.path.name, second.path.name) == (anonymous(1), anonymous(1).replace(".rpb", "-1.rpb"))
    assert twin.kept(first.path) == (b"one", "Tampered: the signature does not verify\n")
    assert twin.kept(second.path) == (b"two", "Truncated: the stream ends early\n")
    with pytest.raises(ValueError, match="not a safe file name"):
        await twin.medium.quarantine(b"x", "../escape", "why")


async def test_the_quarantine_stays_within_its_quota(twin: Twin) -> None:
    quota = QuarantineQuota(max_bytes=1000, max_files=2)
    for serial in (1, 2, 3):
        await twin.medium.quarantine(bytes([serial]) * 10, anonymous(serial), "why", quota)
    dropped = (await twin.medium.quarantine(b"x" * 10, anonymous(4), "why", quota)).dropped
    assert [d.name for d in dropped] == [anonymous(2)]  # anonymous(1) made room for anonymous(3)
    refused = await twin.medium.quarantine(b"x" * 2000, anonymous(5), "why", quota)
    assert refused.path is None and [d.name for d in refused.dropped] == [anonymous(5)]
    assert refused.dropped[0].reason.startswith("not kept: 2,004 bytes, over the quarantine's quota")

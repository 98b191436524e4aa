"""The quarantine's quota: a stick of junk leaves at most `max_files` bundles and `max_bytes`
bytes in `<home>/quarantine/`, oldest dropped first, one bigger than the quota not kept at all,
and the import's report and the audit log name every bundle dropped."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from sync import quarantine, stick
from sync.quarantine import KeptFile, QuarantineQuota
from sync.sneakernet import QUARANTINE_DIR, import_bundles
from tests.conftest import make_workspace, run_cli
from tui.reports import import_report_text

MiB = 1024 * 1024
SMALL_JUNK = 250  # more than the default count quota


def test_the_oldest_go_first_and_one_over_the_quota_is_not_kept() -> None:
    quota = QuarantineQuota(max_bytes=100, max_files=3)
    kept = [KeptFile("c", 30, 3), KeptFile("a", 30, 1), KeptFile("b", 30, 2)]
    assert quarantine.plan(kept, "new", 10, quota).evict == (KeptFile("a", 30, 1),)  # a fourth file
    assert quarantine.plan(kept[:2], "new", 50, quota).evict == (KeptFile("a", 30, 1),)  # 110 bytes otherwise
    assert quarantine.plan(kept[:2], "new", 80, quota).evict == (KeptFile("a", 30, 1), KeptFile("c", 30, 3))
    assert quarantine.plan(kept[:2], "new", 40, quota).evict == ()
    refused = quarantine.plan(kept, "huge", 101, quota)
    assert refused.evict == () and refused.refused is not None and refused.refused.name == "huge" and "over the quarantine's quota" in refused.refused.reason
    assert QuarantineQuota() == QuarantineQuota(max_bytes=64 * MiB, max_files=200)


@pytest.mark.timeout(300)
async def test_a_stick_of_junk_keeps_the_quarantine_within_its_quota_and_says_what_it_dropped(tmp_path: Path) -> None:
    alpha, bravo = await make_workspace(tmp_path, "bravo")
    async with alpha, bravo:
        outbox = tmp_path / "stick" / stick.STICK_DIR / stick.outbox_name(bravo.identity.node_id)
        sender = alpha.identity.node_id
    outbox.mkdir(parents=True)

    def junk(at: int, size: int) -> str:
        name = stick.bundle_file_name(sender, 1_700_000_000_000 + at, os.urandom(16))
        (outbox / name).write_bytes(os.urandom(size))
        return name

    big = [junk(0, 40 * MiB), junk(1, 40 * MiB)]  # the second displaces the first: 80 MiB > 64 MiB
    too_big = junk(2, 65 * MiB)  # more than the whole quota
    small = [junk(10 + i, 1024) for i in range(SMALL_JUNK)]

    result = run_cli(tmp_path / "bravo", "bundle", "import", "--from", str(tmp_path / "stick"), "--json", timeout=240)
    assert result.returncode == 3, result.stderr  # rejections
    folder = tmp_path / "bravo" / QUARANTINE_DIR
    kept = [p for p in folder.iterdir() if p.name.endswith(stick.BUNDLE_SUFFIX)]
    assert {p.name for p in kept} == set(small[SMALL_JUNK - 200 :])
    assert sum(p.stat().st_size for p in folder.iterdir()) <= 64 * MiB
    assert not list(outbox.iterdir())  # every junk file decided on and taken off the stick

    report = json.loads(result.stdout)
    dropped = {d["name"]: d for f in report["files"] for d in f["quarantine_dropped"]}
    expected_dropped = {*big, too_big, *small[: SMALL_JUNK - 200]}
    assert set(dropped) == expected_dropped
    assert dropped[too_big]["bytes"] > 65 * MiB and dropped[too_big]["reason"].startswith("not kept:")
    assert dropped[big[0]]["reason"].startswith("removed, oldest first")

    text = run_cli(tmp_path / "bravo", "audit", "--json", "--limit", "1000")
    audited = [d["name"] for e in json.loads(text.stdout) if e["action"] == "bundle_rejected" for d in e["detail"]["quarantine"]["dropped"]]
    assert sorted(audited) == sorted(expected_dropped)


async def test_the_report_names_what_the_quarantine_dropped(tmp_path: Path) -> None:
    alpha, bravo = await make_workspace(tmp_path, "bravo")
    async with alpha, bravo:
        outbox = tmp_path / "stick" / stick.STICK_DIR / stick.outbox_name(bravo.identity.node_id)
        outbox.mkdir(parents=True)
        names = [stick.bundle_file_name(alpha.identity.node_id, 1_700_000_000_000 + i, os.urandom(16)) for i in range(3)]
        for name in names:
            (outbox / name).write_bytes(os.urandom(500))
        report = await import_bundles(bravo, tmp_path / "stick", quarantine_quota=QuarantineQuota(max_bytes=10 * MiB, max_files=2))
    assert [d.name for d in report.quarantine_dropped] == names[:1]
    text = import_report_text(report, tmp_path / "bravo" / QUARANTINE_DIR, {})
    assert "Not kept in quarantine (1):" in text and f"  {names[0]} (" in text


def test_the_listing_reads_newest_first_with_each_reason_and_the_bundles_own_size(tmp_path: Path) -> None:
    folder = tmp_path / "quarantine"
    assert quarantine.listing(folder, limit=10) == quarantine.QuarantineListing((), 0)  # made on the first rejection
    quota = QuarantineQuota()
    for index, (data, reason) in enumerate(((b"first", "tampered"), (b"second one", "truncated"), (b"third", "unknown sender"))):
        quarantine.keep(data, folder, f"b{index}.bundle", reason, quota)
        os.utime(folder / f"b{index}.bundle", ns=(index * 10**9, index * 10**9))
    found = quarantine.listing(folder, limit=2)
    assert found.total == 3
    assert [(b.name, b.size, b.reason) for b in found.bundles] == [("b2.bundle", 5, "unknown sender"), ("b1.bundle", 10, "truncated")]

"""Backup retention (appliance/retention.py): the policy's parsing, which names are this node's
backups, what a run may prune - never the newest N verified, never the newest of all, never
anything inside the window, never the one just taken - and the backups' health."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.backups import digest_line, parse_digest_line
from appliance.errors import InvalidInput
from appliance.retention import (
    DAY_MS,
    HOUR_MS,
    STALE_AFTER_MS,
    BackupCheck,
    BackupFile,
    HealthState,
    RetentionPolicy,
    backup_health,
    backup_name,
    parse_keep,
    taken_at_of,
    to_prune,
)

NODE = "ABCDEFG-HIJKLMN-OPQRSTC"
OTHER = "BCDEFGH-IJKLMNO-PQRSTUD"
NOW = 1_800_000_000_000


@pytest.mark.parametrize(("text", "days", "hours"), [("30d", 30, 0), ("36h", 0, 36), ("1d12h", 1, 12), (" 7D ", 7, 0)])
def test_retention_reads_days_and_hours(text: str, days: int, hours: int) -> None:
    policy = parse_keep(text, 3)
    assert (policy.days, policy.hours, policy.keep_at_least) == (days, hours, 3)
    assert parse_keep(policy.text, 3) == policy
    assert policy.window_ms == days * DAY_MS + hours * HOUR_MS


@pytest.mark.parametrize("text", ["", "30", "d", "30 days", "-1d", "0d", "0h", "12h1d", "1.5d", "999999999999d"])
def test_retention_that_cannot_be_read_is_refused_clearly(text: str) -> None:
    with pytest.raises(InvalidInput, match="retention") as raised:
        parse_keep(text)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize("at_least", [0, -1, 10_001])
def test_the_count_floor_is_at_least_one(at_least: int) -> None:
    with pytest.raises(InvalidInput, match="keep-at-least"):
        parse_keep("30d", at_least)


def test_a_backups_name_gives_its_node_and_time_and_nothing_else_counts() -> None:
    name = backup_name(NODE, NOW + 999)
    assert name == "rallypoint-ABCDEFG-HIJKLMN-OPQRSTC-20270115T080000Z.backup.db"
    assert taken_at_of(name, NODE) == NOW
    assert taken_at_of(name, OTHER) is None  # another node's backup in the same folder
    for foreign in (f".{name}.partial", f"{name}-journal", name + ".bak", "notes.txt", "rallypoint-ABCDEFG-HIJKLMN-OPQRSTC-20261399T000000Z.backup.db"):
        assert taken_at_of(foreign, NODE) is None


def _files(ages_hours: list[int], verified: list[bool]) -> list[BackupFile]:
    return [BackupFile(backup_name(NODE, NOW - age * HOUR_MS), NOW - age * HOUR_MS, ok) for age, ok in zip(ages_hours, verified, strict=True)]


def test_daily_backups_past_thirty_days_go_but_seven_verified_stay() -> None:
    days = list(range(0, 40))
    files = _files([d * 24 for d in days], [True] * len(days))
    pruned = to_prune(files, NOW, parse_keep("30d", 7))
    assert [f.taken_at for f in pruned] == [NOW - d * DAY_MS for d in reversed(range(31, 40))]  # day 30 is exactly on the edge: kept
    # A folder of old backups only: the newest seven verified stay whatever their age.
    old = _files([(100 + d) * 24 for d in range(10)], [True] * 10)
    assert {f.name for f in old} - {f.name for f in to_prune(old, NOW, parse_keep("30d", 7))} == {f.name for f in old[:7]}


def test_an_unverified_newest_is_never_pruned_and_does_not_count_as_kept() -> None:
    files = _files([24 * 40, 24 * 41, 24 * 42], [False, True, True])
    pruned = to_prune(files, NOW, parse_keep("1d", 1))
    assert [f.taken_at for f in pruned] == [NOW - 42 * DAY_MS]  # the newest (unverified) and the newest verified stay


backups = st.lists(st.tuples(st.integers(0, 24 * 400), st.booleans()), max_size=40, unique_by=lambda b: b[0])


@settings(max_examples=300, deadline=None)
@given(backups, st.integers(1, 24 * 60), st.integers(1, 12), st.data())
def test_pruning_never_touches_the_newest_the_kept_or_the_window(found: list[tuple[int, bool]], window_hours: int, at_least: int, data: st.DataObject) -> None:
    files = _files([age for age, _ in found], [ok for _, ok in found])
    keep = data.draw(st.sampled_from([None, *(f.name for f in files)]))
    policy = RetentionPolicy(0, window_hours, at_least)
    pruned = to_prune(files, NOW, policy, keep)
    gone = {f.name for f in pruned}
    assert gone <= {f.name for f in files} and len(gone) == len(pruned)
    newest_first = sorted(files, key=lambda f: f.taken_at, reverse=True)
    if newest_first:
        assert newest_first[0].name not in gone
    assert not gone & {f.name for f in [f for f in newest_first if f.verified][:at_least]}
    assert not any(f.taken_at >= NOW - policy.window_ms for f in pruned)
    assert keep not in gone
    # ... and it is not a policy that keeps everything: what is outside all of those goes.
    protected = {f.name for f in [f for f in newest_first if f.verified][:at_least]} | {keep} | {f.name for f in newest_first[:1]}
    assert gone == {f.name for f in files if f.name not in protected and f.taken_at < NOW - policy.window_ms}
    assert [f.taken_at for f in pruned] == sorted(f.taken_at for f in pruned)


def _check(age_hours: float, ok: bool, checked_after: int = 0) -> BackupCheck:
    at = NOW - int(age_hours * HOUR_MS)
    return BackupCheck(backup_name(NODE, at), "/media/BACKUPS", at, 0 if not ok else 4096, ok, None if ok else "the disk is full", at + checked_after)


def test_health_names_a_failed_missed_or_missing_daily_backup() -> None:
    assert backup_health([], NOW).state is HealthState.NONE
    assert "NONE" in backup_health([], NOW).summary
    fresh = backup_health([_check(2, True)], NOW, "/media/BACKUPS", "30d")
    assert fresh.state is HealthState.OK and fresh.summary.startswith("Backups: ok, last verified") and "daily into /media/BACKUPS, keep 30d" in fresh.summary
    stale = backup_health([_check(STALE_AFTER_MS / HOUR_MS + 0.1, True)], NOW)
    assert stale.state is HealthState.STALE and "OVERDUE" in stale.summary and "no daily backup set" in stale.summary
    failed = backup_health([_check(30, True), _check(1, False)], NOW)
    assert failed.state is HealthState.FAILED and "LAST FAILED" in failed.summary and "the disk is full" in failed.summary
    assert failed.last_verified is not None and failed.last_verified.ok
    recovered = backup_health([_check(1, False), _check(0.5, True)], NOW)
    assert recovered.state is HealthState.OK


@given(st.binary(min_size=32, max_size=32), st.text(st.characters(blacklist_characters="\n\r", blacklist_categories=("Cs",)), min_size=1, max_size=80))
def test_a_backups_sha256_line_round_trips_as_sha256sum_writes_it(digest: bytes, name: str) -> None:
    line = digest_line(digest, name)
    assert line == f"{digest.hex()}  {name}\n".encode()
    assert parse_digest_line(line, "x.sha256") == digest
    assert parse_digest_line(line.rstrip(b"\n"), "x.sha256") == digest


@pytest.mark.parametrize("data", [b"", b"abc  name\n", b"0" * 63 + b"  name\n", b"0" * 64 + b"\n", b"0" * 64 + b"  a\nb\n", b"0" * 64 + b"  name\n\n", b"A" * 64 + b"  name\n"])
def test_anything_else_in_a_sha256_file_is_refused_by_name(data: bytes) -> None:
    with pytest.raises(InvalidInput, match=r"x.backup.db.sha256 is not a SHA-256 line"):
        parse_digest_line(data, "x.backup.db.sha256")

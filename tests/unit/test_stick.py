"""The courier stick's file-system edge (sync/stick.py, StickMedium): the layout, scanning a hostile stick
without following anything, bounded scans of junk, races between scan and read, atomic writes
and the quarantine."""

from __future__ import annotations

import errno
import os
import re
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from appliance.ids import key_id
from sync.errors import StickError, SyncError
from sync.stick import (
    BROADCAST,
    BUNDLES,
    FORMAT_LINE,
    MAX_ENTRIES,
    MAX_LISTED_PROBLEMS,
    STICK_DIR,
    StickFile,
    StickMedium,
    StickScan,
    anonymous_file_name,
    bundle_file_name,
    outbox_name,
    parse_bundle_file_name,
)

ME = key_id(b"\x01" * 32)
PEER = key_id(b"\x02" * 32)
OTHER = key_id(b"\x03" * 32)
MY_OUTBOX = outbox_name(ME)
OUTBOXES = [MY_OUTBOX, BROADCAST]
LIMIT = 1024 * 1024
CREATED_AT = 1_700_000_000_000


def name_for(sender: str = PEER, serial: int = 0) -> str:
    return bundle_file_name(sender, CREATED_AT + serial, serial.to_bytes(16, "big"))


def stick_at(root: Path) -> StickMedium:
    return StickMedium(root, quarantine_dir=root.parent / "quarantine")


def stick_of(file: StickFile) -> StickMedium:
    """The stick a scan found `file` on: <root>/rallypoint/<outbox>/<name>."""
    return stick_at(file.path.parents[2])


def outbox_dir(root: Path, outbox: str = MY_OUTBOX) -> Path:
    path = root / STICK_DIR / outbox
    path.mkdir(parents=True, exist_ok=True)
    return path


def place(root: Path, name: str, data: bytes = b"bundle bytes", outbox: str = MY_OUTBOX) -> Path:
    path = outbox_dir(root, outbox) / name
    path.write_bytes(data)
    return path


def problem_for(result: StickScan, path_end: str) -> str:
    """The reason of the one problem whose path ends with `path_end`."""
    reasons = [p.reason for p in result.problems if p.path.endswith(path_end)]
    assert len(reasons) == 1, (path_end, result.problems)
    return reasons[0]


def assert_printable(result: StickScan) -> None:
    for problem in result.problems:
        assert problem.path.isprintable() and problem.reason.isprintable(), problem


# --- names -------------------------------------------------------------------------------------


def test_names_follow_the_layout() -> None:
    name = bundle_file_name(PEER, 5, bytes(range(16)))
    assert name == f"{PEER}-0000000000005-000102030405060708090a0b0c0d0e0f.rpb"
    parsed = parse_bundle_file_name(name)
    assert parsed is not None and (parsed.sender_id, parsed.created_at_ms, parsed.bundle_id) == (PEER, 5, bytes(range(16)))
    assert outbox_name(ME) == f"to-{ME}"
    assert issubclass(StickError, SyncError)


@pytest.mark.parametrize(
    "bad",
    [
        "../" + name_for(),
        "/" + name_for(),
        name_for() + "\n",
        name_for().replace(".rpb", ".RPB"),
        name_for().replace(PEER, PEER.lower()),
        name_for().replace(PEER, PEER[:-1] + ("A" if PEER[-1] != "A" else "B")),  # check character fails
        f"{PEER}-170000000000-{'0' * 32}.rpb",  # 12 digits
        f"{PEER}-{'9' * 19}-{'0' * 32}.rpb",  # over 2^63 - 1
        f"{PEER}-{CREATED_AT}-{'A' * 32}.rpb",
        "..",
        "",
    ],
)
def test_other_names_are_not_bundle_names(bad: str) -> None:
    assert parse_bundle_file_name(bad) is None


def test_name_builders_refuse_bad_input() -> None:
    with pytest.raises(ValueError):
        outbox_name("../" + ME)
    with pytest.raises(ValueError):
        bundle_file_name("nobody", CREATED_AT, bytes(16))
    with pytest.raises(ValueError):
        bundle_file_name(PEER, -1, bytes(16))
    with pytest.raises(ValueError):
        bundle_file_name(PEER, CREATED_AT, bytes(15))


# --- round trip --------------------------------------------------------------------------------


async def test_write_scan_read_remove(tmp_path: Path) -> None:
    first, second = name_for(serial=2), name_for(OTHER, serial=1)
    await stick_at(tmp_path).write(MY_OUTBOX, first, b"first")
    path = await stick_at(tmp_path).write(BROADCAST, second, b"second")
    assert path == tmp_path / STICK_DIR / BROADCAST / second
    assert (tmp_path / STICK_DIR / "FORMAT").read_text() == FORMAT_LINE + "\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644 & ~current_umask()

    result = await stick_at(tmp_path).scan(OUTBOXES, max_file_bytes=LIMIT)
    assert result.problems == ()
    assert [f.name for f in result.files] == sorted([first, second])
    by_name = {f.name: f for f in result.files}
    assert by_name[first] == StickFile(tmp_path / STICK_DIR / MY_OUTBOX / first, first, MY_OUTBOX, 5)
    assert await stick_of(by_name[second]).read(by_name[second], max_file_bytes=LIMIT) == b"second"

    await stick_of(by_name[first]).remove(by_name[first])
    await stick_of(by_name[first]).remove(by_name[first])  # already gone: fine
    assert [f.name for f in (await stick_at(tmp_path).scan(OUTBOXES, max_file_bytes=LIMIT)).files] == [second]


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


async def test_rewriting_a_name_replaces_it(tmp_path: Path) -> None:
    name = name_for()
    await stick_at(tmp_path).write(MY_OUTBOX, name, b"old")
    await stick_at(tmp_path).write(MY_OUTBOX, name, b"new")
    assert (tmp_path / STICK_DIR / MY_OUTBOX / name).read_bytes() == b"new"
    assert sorted(os.listdir(tmp_path / STICK_DIR / MY_OUTBOX)) == [name]


async def test_missing_layout_is_an_empty_scan(tmp_path: Path) -> None:
    assert await stick_at(tmp_path).scan(OUTBOXES, max_file_bytes=LIMIT) == StickScan((), ())
    (tmp_path / STICK_DIR).mkdir()
    assert await stick_at(tmp_path).scan(OUTBOXES, max_file_bytes=LIMIT) == StickScan((), ())


async def test_missing_stick_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(StickError, match="cannot open the stick folder"):
        await stick_at(tmp_path / "unplugged").scan(OUTBOXES, max_file_bytes=LIMIT)


async def test_scan_refuses_bad_outbox_names(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        await stick_at(tmp_path).scan(["../etc"], max_file_bytes=LIMIT)


async def test_only_the_named_outboxes_are_scanned(tmp_path: Path) -> None:
    place(tmp_path, name_for(), outbox=outbox_name(PEER))
    mine = place(tmp_path, name_for(serial=1))
    result = await stick_at(tmp_path).scan(OUTBOXES, max_file_bytes=LIMIT)
    assert [f.path for f in result.files] == [mine] and result.problems == ()


async def test_temporary_files_are_ignored(tmp_path: Path) -> None:
    place(tmp_path, ".tmp-0123abcd.rpb", b"half a bundle")
    assert await stick_at(tmp_path).scan(OUTBOXES, max_file_bytes=LIMIT) == StickScan((), ())


# --- hostile stick -----------------------------------------------------------------------------


async def test_symlinked_file_is_reported_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    target = outside / name_for(serial=9)
    target.write_bytes(b"secret")
    (outbox_dir(tmp_path / "stick") / name_for()).symlink_to(target)

    result = await stick_at(tmp_path / "stick").scan(OUTBOXES, max_file_bytes=LIMIT)
    assert result.files == ()
    assert "symbolic link" in problem_for(result, name_for())


async def test_symlinked_outbox_is_reported_not_followed(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / name_for()).write_bytes(b"bundle")
    (tmp_path / "stick" / STICK_DIR).mkdir(parents=True)
    (tmp_path / "stick" / STICK_DIR / MY_OUTBOX).symlink_to(elsewhere, target_is_directory=True)

    result = await stick_at(tmp_path / "stick").scan(OUTBOXES, max_file_bytes=LIMIT)
    assert result.files == ()
    assert problem_for(result, MY_OUTBOX).startswith("is a symbolic link, not a folder")


async def test_symlinked_stick_folder_is_reported_not_followed(tmp_path: Path) -> None:
    real = tmp_path / "real"
    place(real, name_for())
    (tmp_path / "stick").mkdir()
    (tmp_path / "stick" / STICK_DIR).symlink_to(real / STICK_DIR, target_is_directory=True)

    result = await stick_at(tmp_path / "stick").scan(OUTBOXES, max_file_bytes=LIMIT)
    assert result.files == ()
    assert "symbolic link" in problem_for(result, STICK_DIR)


async def test_stick_folder_that_is_a_file_is_reported(tmp_path: Path) -> None:
    (tmp_path / STICK_DIR).write_text("not a folder")
    result = await stick_at(tmp_path).scan(OUTBOXES, max_file_bytes=LIMIT)
    assert result.files == ()
    assert problem_for(result, STICK_DIR) == "is a regular file, not a folder"


@pytest.mark.timeout(10)
async def test_fifo_is_reported_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(outbox_dir(tmp_path) / name_for())
    os.mkfifo(tmp_path / STICK_DIR / "FORMAT")
    result = await stick_at(tmp_path).scan(OUTBOXES, max_file_bytes=LIMIT)
    assert result.files == ()
    assert problem_for(result, name_for()) == "is a named pipe, not a regular file"
    assert problem_for(result, "FORMAT") == "is a named pipe, not a regular file"


@pytest.mark.timeout(10)
async def test_stick_folder_that_is_a_fifo_does_not_block(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / STICK_DIR)
    result = await stick_at(tmp_path).scan(OUTBOXES, max_file_bytes=LIMIT)
    assert problem_for(result, STICK_DIR) == "is a named pipe, not a folder"


async def test_socket_is_reported(tmp_path: Path) -> None:
    path = outbox_dir(tmp_path) / name_for()
    os.mknod(path, 0o600 | stat.S_IFSOCK)
    result = await stick_at(tmp_path).scan(OUTBOXES, max_file_bytes=LIMIT)
    assert problem_for(result, name_for()) == "is a socket, not a regular file"


@pytest.mark.timeout(10)
async def test_device_file_is_reported(tmp_path: Path) -> None:
    path = outbox_dir(tmp_path) / name_for()
    try:
        os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(1, 3))  # like /dev/null
    except PermissionError:
        pytest.skip("creating a device file (mknod) needs root; CI runs as root")
    result = await stick_at(tmp_path).scan(OUTBOXES, max_file_bytes=LIMIT)
    assert result.files == ()
    assert problem_for(result, name_for()) == "is a device file, not a regular file"


async def test_directory_loop_is_not_followed(tmp_path: Path) -> None:
    outbox = outbox_dir(tmp_path)
    (outbox / name_for()).symlink_to(outbox, target_is_directory=True)
    (outbox / "up").symlink_to("..", target_is_directory=True)
    result = await stick_at(tmp_path).scan(OUTBOXES, max_file_bytes=LIMIT)
    assert result.files == ()
    assert "symbolic link" in problem_for(result, name_for())
    assert "symbolic link" in problem_for(result, "/up")


async def test_subfolder_is_reported_not_entered(tmp_path: Path) -> None:
    sub = outbox_dir(tmp_path) / name_for()
    sub.mkdir()
    (sub / name_for(serial=1)).write_bytes(b"nested")
    result = await stick_at(tmp_path).scan(OUTBOXES, max_file_bytes=LIMIT)
    assert result.files == ()
    assert problem_for(result, name_for()) == "is a folder, not a regular file"


async def test_huge_sparse_file_is_judged_by_its_apparent_size(tmp_path: Path) -> None:
    path = outbox_dir(tmp_path) / name_for()
    with path.open("wb") as handle:
        handle.truncate(10 * 1024**3)
    result = await stick_at(tmp_path).scan(OUTBOXES, max_file_bytes=LIMIT)
    assert result.files == ()
    assert problem_for(result, name_for()) == f"is {10 * 1024**3:,} bytes, over the limit of {LIMIT:,}"


@pytest.mark.parametrize(
    ("raw_name", "shown_end"),
    [
        (b"..rpb", "/..rpb"),
        (name_for().replace("-", "..", 1).encode(), name_for().replace("-", "..", 1)),
        (b"\x1b[2J" + name_for().encode(), "\\x1b[2J" + name_for()),
        (name_for().encode() + b"\n", name_for() + "\\x0a"),
        (b"\xe2\x80\xae" + name_for().encode(), "\\u202e" + name_for()),  # right-to-left override
        (b"back\\slash.rpb", "back\\\\slash.rpb"),
    ],
)
async def test_bad_names_are_reported_printably(tmp_path: Path, raw_name: bytes, shown_end: str) -> None:
    outbox = outbox_dir(tmp_path)
    (Path(os.fsdecode(os.fsencode(outbox) + b"/" + raw_name))).write_bytes(b"bundle")
    result = await stick_at(tmp_path).scan(OUTBOXES, max_file_bytes=LIMIT)
    assert result.files == ()
    assert problem_for(result, shown_end).startswith("name is not a bundle file name")
    assert_printable(result)


async def test_name_that_is_not_utf8_is_reported(tmp_path: Path) -> None:
    outbox = outbox_dir(tmp_path)
    raw = os.fsencode(outbox) + b"/\xff\xfe" + name_for().encode()
    fd = os.open(raw, os.O_WRONLY | os.O_CREAT, 0o644)
    os.close(fd)
    result = await stick_at(tmp_path).scan(OUTBOXES, max_file_bytes=LIMIT)
    assert result.files == ()
    assert problem_for(result, "\\xff\\xfe" + name_for()) == "name is not valid UTF-8"
    assert_printable(result)


async def test_control_characters_in_the_root_path_are_escaped(tmp_path: Path) -> None:
    root = tmp_path / "stick\x1b]0;pwned\x07"
    (outbox_dir(root) / "junk").write_bytes(b"")
    result = await stick_at(root).scan(OUTBOXES, max_file_bytes=LIMIT)
    assert "stick\\x1b]0;pwned\\x07" in result.problems[0].path
    assert_printable(result)


async def test_unknown_format_is_reported_and_refused_by_the_writer(tmp_path: Path) -> None:
    place(tmp_path, name_for())
    (tmp_path / STICK_DIR / "FORMAT").write_text("rallypoint-stick/2\n")
    result = await stick_at(tmp_path).scan(OUTBOXES, max_file_bytes=LIMIT)
    assert [f.name for f in result.files] == [name_for()]
    assert "rallypoint-stick/2" in problem_for(result, "FORMAT")
    with pytest.raises(StickError, match="layout this node does not know"):
        await stick_at(tmp_path).write(MY_OUTBOX, name_for(serial=1), b"x")


@pytest.mark.timeout(60)
async def test_a_hundred_thousand_junk_files_are_scanned_quickly_and_briefly(tmp_path: Path) -> None:
    junk = 100_000
    outbox = outbox_dir(tmp_path)
    outbox_fd = os.open(outbox, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for index in range(junk):
            os.mknod(f"junk-{index}", 0o644 | stat.S_IFREG, dir_fd=outbox_fd)
    finally:
        os.close(outbox_fd)
    real = place(tmp_path, name_for(), outbox=BROADCAST)

    started = time.monotonic()
    result = await stick_at(tmp_path).scan(OUTBOXES, max_file_bytes=LIMIT)
    assert time.monotonic() - started < 20
    assert [f.path for f in result.files] == [real]
    assert len(result.problems) == MAX_LISTED_PROBLEMS + 2
    summaries = [p.reason for p in result.problems[MAX_LISTED_PROBLEMS:]]
    assert summaries == [
        f"{MAX_ENTRIES - MAX_LISTED_PROBLEMS:,} further entries skipped, not listed one by one",
        f"{junk - MAX_ENTRIES:,} further entries not examined (a folder is read up to {MAX_ENTRIES:,} entries)",
    ]


async def test_junk_beyond_the_listed_problems_is_summarised(tmp_path: Path) -> None:
    for index in range(MAX_LISTED_PROBLEMS + 5):
        place(tmp_path, f"junk-{index}")
    result = await stick_at(tmp_path).scan(OUTBOXES, max_file_bytes=LIMIT)
    assert len(result.problems) == MAX_LISTED_PROBLEMS + 1
    assert result.problems[-1].reason == "5 further entries skipped, not listed one by one"


# --- reading races -----------------------------------------------------------------------------


async def scanned_one(root: Path) -> StickFile:
    place(root, name_for(), b"bundle")
    (file,) = (await stick_at(root).scan(OUTBOXES, max_file_bytes=LIMIT)).files
    return file


@pytest.mark.timeout(10)
async def test_file_swapped_for_a_fifo_after_the_scan_is_refused(tmp_path: Path) -> None:
    file = await scanned_one(tmp_path)
    file.path.unlink()
    os.mkfifo(file.path)
    with pytest.raises(StickError, match="named pipe"):
        await stick_of(file).read(file, max_file_bytes=LIMIT)


@pytest.mark.timeout(10)
async def test_fifo_swapped_in_between_check_and_open_does_not_block(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    file = await scanned_one(tmp_path)
    real_lstat = os.lstat

    def lstat_then_swap(path: Any, *, dir_fd: int | None = None) -> os.stat_result:
        result = real_lstat(path, dir_fd=dir_fd)
        if path == file.name and file.path.is_file():
            file.path.unlink()
            os.mkfifo(file.path)
        return result

    monkeypatch.setattr(os, "lstat", lstat_then_swap)
    with pytest.raises(StickError, match="named pipe"):
        await stick_of(file).read(file, max_file_bytes=LIMIT)


async def test_file_swapped_for_a_symlink_after_the_scan_is_refused(tmp_path: Path) -> None:
    file = await scanned_one(tmp_path)
    outside = tmp_path / "outside.rpb"
    outside.write_bytes(b"secret")
    file.path.unlink()
    file.path.symlink_to(outside)
    with pytest.raises(StickError, match="symbolic link"):
        await stick_of(file).read(file, max_file_bytes=LIMIT)


async def test_outbox_swapped_for_a_symlink_after_the_scan_is_refused(tmp_path: Path) -> None:
    file = await scanned_one(tmp_path)
    moved = tmp_path / "moved"
    file.path.parent.rename(moved)
    file.path.parent.symlink_to(moved, target_is_directory=True)
    with pytest.raises(StickError, match="symbolic link"):
        await stick_of(file).read(file, max_file_bytes=LIMIT)
    with pytest.raises(StickError, match="symbolic link"):
        await stick_of(file).remove(file)
    assert (moved / file.name).exists()


async def test_file_grown_past_the_limit_is_refused(tmp_path: Path) -> None:
    file = await scanned_one(tmp_path)
    file.path.write_bytes(b"x" * 2000)
    with pytest.raises(StickError, match="over the limit"):
        await stick_of(file).read(file, max_file_bytes=1000)


async def test_file_growing_while_read_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    file = await scanned_one(tmp_path)
    real_read = os.read

    def read_then_grow(fd: int, size: int) -> bytes:
        data = real_read(fd, size)
        with file.path.open("ab") as handle:
            handle.write(b"y" * 600)
        return data

    monkeypatch.setattr(os, "read", read_then_grow)
    with pytest.raises(StickError, match="grew past the limit"):
        await stick_of(file).read(file, max_file_bytes=1000)


async def test_vanished_file_is_an_error_when_read(tmp_path: Path) -> None:
    file = await scanned_one(tmp_path)
    file.path.unlink()
    with pytest.raises(StickError, match="cannot read"):
        await stick_of(file).read(file, max_file_bytes=LIMIT)


# --- atomic writes -----------------------------------------------------------------------------


def leftovers(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize("failing", ["fsync", "write"])
async def test_failed_write_leaves_neither_final_nor_temporary_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str) -> None:
    existing = await stick_at(tmp_path).write(MY_OUTBOX, name_for(serial=1), b"earlier")
    before = leftovers(tmp_path)

    def no_space(*args: Any) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, failing, no_space)
    with pytest.raises(StickError, match="^stick is full: cannot write .*" + re.escape(name_for())):
        await stick_at(tmp_path).write(MY_OUTBOX, name_for(), b"x" * 100_000)
    monkeypatch.undo()
    assert leftovers(tmp_path) == before
    assert existing.read_bytes() == b"earlier"


async def test_failed_first_write_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_space(*args: Any) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(StickError, match="^stick is full"):
        await stick_at(tmp_path).write(MY_OUTBOX, name_for(), b"x")
    monkeypatch.undo()
    assert leftovers(tmp_path) == []


async def test_read_only_stick_gets_a_clear_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def read_only(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(os, "mkdir", read_only)
    with pytest.raises(StickError, match="^stick is read-only: cannot write"):
        await stick_at(tmp_path).write(MY_OUTBOX, name_for(), b"x")


@pytest.mark.parametrize("where", [STICK_DIR, f"{STICK_DIR}/{MY_OUTBOX}"])
async def test_writer_refuses_a_symlinked_folder(tmp_path: Path, where: str) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    root = tmp_path / "stick"
    (root / where).parent.mkdir(parents=True, exist_ok=True)
    (root / where).symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(StickError, match="symbolic link, not a folder"):
        await stick_at(root).write(MY_OUTBOX, name_for(), b"x")
    assert list(elsewhere.iterdir()) == []


async def test_writer_refuses_an_outbox_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / STICK_DIR).mkdir()
    (tmp_path / STICK_DIR / MY_OUTBOX).write_bytes(b"")
    with pytest.raises(StickError, match="regular file, not a folder"):
        await stick_at(tmp_path).write(MY_OUTBOX, name_for(), b"x")


@pytest.mark.parametrize(("outbox", "name"), [("../x", name_for()), (MY_OUTBOX, "/etc/passwd"), (MY_OUTBOX, "../" + name_for())])
async def test_writer_refuses_names_outside_the_layout(tmp_path: Path, outbox: str, name: str) -> None:
    with pytest.raises(ValueError):
        await stick_at(tmp_path).write(outbox, name, b"x")
    assert leftovers(tmp_path) == []


async def test_writer_removes_only_stale_temporary_files_where_it_writes(tmp_path: Path) -> None:
    stale, fresh = place(tmp_path, ".tmp-stale.rpb"), place(tmp_path, ".tmp-fresh.rpb")
    elsewhere = place(tmp_path, ".tmp-stale.rpb", outbox=BROADCAST)
    two_hours_ago = time.time() - 7200
    for path in (stale, elsewhere):
        os.utime(path, (two_hours_ago, two_hours_ago))
    await stick_at(tmp_path).write(MY_OUTBOX, name_for(), b"x")
    assert not stale.exists() and fresh.exists() and elsewhere.exists()


async def test_remove_own_older_keeps_others_and_the_kept(tmp_path: Path) -> None:
    mine_old, mine_new = place(tmp_path, name_for(ME, 1)), place(tmp_path, name_for(ME, 2))
    theirs = place(tmp_path, name_for(PEER, 3))
    outside = tmp_path / "outside.rpb"
    outside.write_bytes(b"keep me")
    linked = outbox_dir(tmp_path) / name_for(ME, 4)
    linked.symlink_to(outside)
    (outbox_dir(tmp_path) / name_for(ME, 5)).mkdir()

    def mine(name: str) -> bool:
        return name.startswith(ME)

    assert await stick_at(tmp_path).remove_own_older(MY_OUTBOX, mine, {mine_new.name}) == 1
    assert not mine_old.exists() and mine_new.exists() and theirs.exists()
    assert linked.is_symlink() and outside.read_bytes() == b"keep me"
    assert await stick_at(tmp_path / "nothing").remove_own_older(MY_OUTBOX, mine, ()) == 0


async def test_the_bundles_folder_takes_anonymous_names_only(tmp_path: Path) -> None:
    anonymous = anonymous_file_name(bytes(range(16)))
    assert anonymous == "000102030405060708090a0b0c0d0e0f.rpb"
    with pytest.raises(ValueError):
        anonymous_file_name(bytes(15))
    path = await stick_at(tmp_path).write(BUNDLES, anonymous, b"0123456789")
    assert path == tmp_path / STICK_DIR / BUNDLES / anonymous
    with pytest.raises(ValueError):
        await stick_at(tmp_path).write(BUNDLES, name_for(), b"named")  # a sender's id has no place there
    place(tmp_path, name_for(), outbox=BUNDLES)
    place(tmp_path, anonymous.upper().replace(".RPB", ".rpb"), outbox=BUNDLES)
    result = await stick_at(tmp_path).scan([BUNDLES], max_file_bytes=100)
    assert [f.name for f in result.files] == [anonymous]
    assert "32 hex digits" in problem_for(result, name_for())
    (found,) = result.files
    assert await stick_of(found).read_head(found, 4) == b"0123"
    assert await stick_of(found).read_head(found, 1000) == b"0123456789"


# --- quarantine --------------------------------------------------------------------------------


async def test_quarantine_never_overwrites(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    quarantine = home / "quarantine"
    name = name_for()
    medium = StickMedium(tmp_path, quarantine_dir=quarantine)
    first, second, third = [(await medium.quarantine(data, name, why)).path for data, why in ((b"one", "tampered"), (b"two", "truncated\n"), (b"three", "malformed"))]
    assert first and second and third

    assert stat.S_IMODE(quarantine.stat().st_mode) == 0o700 & ~current_umask()
    assert [first.name, second.name, third.name] == [name, name.replace(".rpb", "-1.rpb"), name.replace(".rpb", "-2.rpb")]
    assert [p.read_bytes() for p in (first, second, third)] == [b"one", b"two", b"three"]
    assert (quarantine / f"{second.name}.reason.txt").read_text() == "truncated\n"
    assert (quarantine / f"{first.name}.reason.txt").read_text() == "tampered\n"
    assert sorted(p.name for p in quarantine.iterdir() if p.name.startswith(".tmp-")) == []


async def test_quarantine_skips_a_name_whose_reason_file_exists(tmp_path: Path) -> None:
    name = name_for()
    tmp_path.joinpath(f"{name}.reason.txt").write_text("someone else's")
    stored = (await StickMedium(tmp_path, quarantine_dir=tmp_path).quarantine(b"data", name, "why")).path
    assert stored is not None and stored.name == name.replace(".rpb", "-1.rpb")
    assert not (tmp_path / name).exists()
    assert tmp_path.joinpath(f"{name}.reason.txt").read_text() == "someone else's"


@pytest.mark.parametrize("bad", ["../escape", ".hidden", "a/b", "bell\x07", ""])
async def test_quarantine_refuses_unsafe_names(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ValueError):
        await StickMedium(tmp_path, quarantine_dir=tmp_path / "q").quarantine(b"x", bad, "why")


async def test_quarantine_reports_a_full_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_space(*args: Any) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(StickError, match="^disk is full: cannot quarantine"):
        await StickMedium(tmp_path, quarantine_dir=tmp_path / "q").quarantine(b"x", name_for(), "why")
    monkeypatch.undo()
    assert leftovers(tmp_path) == []


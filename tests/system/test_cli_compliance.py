"""`rallypoint compliance-export`, `verify-export`, `decrypt-export` and `export-key` as real
processes: an admin's export verifies offline with nothing but the file and the workspace key, a
changed record is named by the standalone checker, an encrypted export opens only with its
identity file, and a full or read-only folder leaves nothing that looks whole."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO, run_cli, tmpfs


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, list[str]]:
    """A node with a channel, an edited message, a deleted one, a reaction, an attachment."""
    home = tmp_path_factory.mktemp("node")
    ok(run_cli(home, "init", "--workspace", "acme", "--user", "alice"))
    ok(run_cli(home, "channel", "create", "general"))
    attachment = home.parent / "report.txt"
    attachment.write_bytes(b"quarterly figures")
    first = ok(run_cli(home, "post", "general", "the plan, as first written", "--attach", str(attachment))).strip()
    ok(run_cli(home, "edit", first, "the plan, as revised"))
    second = ok(run_cli(home, "post", "general", "an unwise remark")).strip()
    ok(run_cli(home, "react", first, "👍"))
    ok(run_cli(home, "delete", second))
    probe = json.loads(ok(run_cli(home, "compliance-export", "--format", "csv", "--to", str(home.parent / "probe.csv"), "--json")))
    return home, probe["workspace_key"], [first, second]


def standalone(*args: str) -> subprocess.CompletedProcess[str]:
    """The CLI with no node anywhere near it: no home, no passphrase."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RALLYPOINT_")}
    env["RALLYPOINT_HOME"] = "/nonexistent/rallypoint-home"
    return subprocess.run([sys.executable, "-m", "tui.cli", *args], env=env, capture_output=True, text=True, timeout=60, cwd=REPO)


def test_an_export_verifies_offline_and_a_changed_record_is_named(node: tuple[Path, str, list[str]], tmp_path: Path) -> None:
    home, workspace_key, (first, second) = node
    out = tmp_path / "march.jsonl"
    result = json.loads(ok(run_cli(home, "compliance-export", "--format", "jsonl", "--to", str(out), "--json")))
    assert result["records"] == 4 and result["messages"] == 2  # 2 posts, 1 edit, 1 deletion
    verified = json.loads(ok(standalone("verify-export", str(out), "--workspace-key", workspace_key, "--json")))
    assert verified["ok"] and verified["records"] == 4
    lines = out.read_bytes().splitlines(keepends=True)
    number = next(i for i, line in enumerate(lines, start=1) if json.loads(line).get("id") == f"{first}/edit/1")
    lines[number - 1] = lines[number - 1].replace(b"as revised", b"as ordered")
    out.write_bytes(b"".join(lines))
    refused = standalone("verify-export", str(out), "--workspace-key", workspace_key)
    assert refused.returncode == 1
    assert f"line {number} (record {first}/edit/1): the record was changed" in refused.stdout
    cut = tmp_path / "cut.jsonl"
    cut.write_bytes(b"".join(lines[:-1]))
    assert "cut" in standalone("verify-export", str(cut), "--workspace-key", workspace_key).stdout
    other_key = "ab" * 32
    assert standalone("verify-export", str(out), "--workspace-key", other_key).returncode == 1


def test_csv_and_an_encrypted_export_open_only_with_the_identity(node: tuple[Path, str, list[str]], tmp_path: Path) -> None:
    home, workspace_key, (first, _) = node
    keys = json.loads(ok(standalone("export-key", "--out", str(tmp_path / "officer.key"), "--json")))
    assert (tmp_path / "officer.key").stat().st_mode & 0o777 == 0o600
    sealed = tmp_path / "export.csv.sealed"
    ok(run_cli(home, "compliance-export", "--format", "csv", "--to", str(sealed), "--recipient", keys["recipient"], "--files"))
    assert b"the plan" not in sealed.read_bytes() and b"quarterly" not in b"".join(p.read_bytes() for p in (tmp_path / "export.csv.sealed.files").iterdir())
    ok(standalone("export-key", "--out", str(tmp_path / "other.key")))
    wrong = standalone("decrypt-export", str(sealed), "--identity", str(tmp_path / "other.key"))
    assert wrong.returncode == 1 and "not encrypted to this key" in wrong.stderr and not (tmp_path / "export.csv").exists()
    ok(standalone("decrypt-export", str(sealed), "--identity", str(tmp_path / "officer.key")))
    signed = tmp_path / "export.jsonl.sealed"
    ok(run_cli(home, "compliance-export", "--format", "jsonl", "--to", str(signed), "--recipient", keys["recipient"]))
    assert "cut" not in ok(standalone("verify-export", str(signed), "--identity", str(tmp_path / "officer.key"), "--workspace-key", workspace_key))
    assert standalone("verify-export", str(signed), "--workspace-key", workspace_key).returncode != 0  # encrypted: the identity is needed
    rows = list(csv.DictReader(io.StringIO((tmp_path / "export.csv").read_text(), newline="")))
    assert [(r["Record Type"], r["Post Message"]) for r in rows if r["Post Id"] == first] == [("post", "the plan, as first written"), ("edit", "the plan, as revised")]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs standing in for a full disk")
    with tmpfs(tmp_path / "disk", "size=64k") as mount_point:
        yield mount_point


@pytest.mark.root
def test_a_full_or_read_only_folder_leaves_nothing_that_looks_whole(node: tuple[Path, str, list[str]], small_disk: Path) -> None:
    home, _, _ = node
    for n in range(3):  # more than 64 KiB of signed lines
        ok(run_cli(home, "post", "general", f"filler {n} " + "x" * 30_000))
    full = run_cli(home, "compliance-export", "--format", "jsonl", "--to", str(small_disk / "out.jsonl"))
    assert full.returncode == 1 and "cannot write the export" in full.stderr and "No space left" in full.stderr
    assert list(small_disk.iterdir()) == []
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True, timeout=30)
    read_only = run_cli(home, "compliance-export", "--format", "csv", "--to", str(small_disk / "out.csv"))
    assert read_only.returncode == 1 and "Read-only file system" in read_only.stderr
    assert list(small_disk.iterdir()) == []
    audit = run_cli(home, "audit", "--json")
    assert "compliance_export_failed" in audit.stdout

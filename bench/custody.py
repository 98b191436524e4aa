"""Custody benchmark: what the node's data-custody operations cost on a realistic store, each
figure beside what an operator would otherwise use.

Compliance export (issue 17.5): records/s for each format (CSV, Actiance XML, GlobalRelay EML,
signed JSON lines) over a channel of N messages (100k; 10k with --quick) where 2 % are edited,
1 % deleted and 5 % reacted to; beside it a bare `sqlite3` SELECT of the messages table into
Python's csv module (no history, no proofs, no signatures: the floor). Target: >= 20,000
records/s in every format.

    python bench/custody.py [--quick] [--json] [--messages N] [--home DIR] [--profile FORMAT]

Backup and restore (issue 17.2, 17.7): a verified backup of the same store (the copy, its
integrity check, identity and audit chain, its SHA-256 and key file beside it) - time and size -
beside `cp` of the database file (no consistency while the node runs, no check); then a restore
of it into an empty home (copy, SHA-256, check, open). Target: a verified backup of 100k
messages in <= 5 s. (Point-in-time restore and recovery from a peer: bench/recovery.py.)

One function per figure (`figure_*`). With --json the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import csv
import io
import json
import os
import platform
import pstats
import random
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from chat import SEED, chat_line

from appliance import atrest, cipher, crypto, keystore
from appliance.compliance_records import ExportFilter, ExportFormat
from appliance.node import Node
from appliance.workers import start_fork_server

CHANNEL = "general"
PASSPHRASE = "bench passphrase"
KDF = crypto.KdfParams(1, 8192)
CHUNK = 2_000
EXPORT_TARGET_RECORDS_S = 20_000
BACKUP_TARGET_S = 5.0  # a verified backup of 100k messages


@dataclass(frozen=True)
class ExportFigure:
    format: str
    records: int
    seconds: float
    records_s: float
    cpu_s: float  # CPU time during the export of the node's process and its worker processes, where the parts are made
    records_per_cpu_s: float  # records per CPU-second of all of them: what one core would approach
    bytes: int
    meets_target: bool
    node_cpu_s: float = 0.0  # of `cpu_s`, the node's process alone (putting the parts into the file)


@dataclass(frozen=True)
class BackupFigure:
    backup_s: float  # the verified backup, while the node is open
    backup_bytes: int
    copy_s: float  # `cp` of the database file: what an operator would otherwise do
    restore_s: float  # into an empty home, checked and opened
    meets_target: bool


@dataclass(frozen=True)
class Baseline:
    rows: int
    seconds: float
    rows_s: float


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def build_store(home: Path, messages: int) -> None:
    """A node with one channel of `messages` messages, some edited, deleted, reacted to."""
    rng = random.Random(SEED)
    node = await Node.init(home, workspace_name="bench", user_name="alice", node_name="alpha", passphrase=PASSPHRASE, kdf=KDF)
    async with node:
        await node.chat.create_channel(CHANNEL)
        ids: list[str] = []
        start = time.perf_counter()
        while len(ids) < messages:
            ids += await node.chat.post_many(CHANNEL, [chat_line(rng) for _ in range(min(CHUNK, messages - len(ids)))])
            if len(ids) % 20_000 < CHUNK:
                progress(f"filled {len(ids):,} messages ({time.perf_counter() - start:.0f} s)")
        for message_id in rng.sample(ids, messages // 50):
            await node.chat.edit(message_id, chat_line(rng))
        for message_id in rng.sample(ids, messages // 20):
            await node.chat.react(message_id, "👍")
        for message_id in rng.sample(ids, messages // 100):
            await node.chat.delete(message_id)
        progress(f"store ready in {time.perf_counter() - start:.0f} s")


async def figure_export(home: Path, out: Path, fmt: ExportFormat) -> ExportFigure:
    """One export of the whole store in `fmt`, timed from the call to the renamed file."""
    async with await Node.open(home, PASSPHRASE) as node:
        target = out / f"export-{fmt.value}"
        start, cpu, workers_cpu = time.perf_counter(), time.process_time(), descendants_cpu_s()
        result = await node.audit.compliance.export(target, fmt, ExportFilter())
        seconds, node_cpu_s = time.perf_counter() - start, time.process_time() - cpu
        cpu_s = node_cpu_s + descendants_cpu_s() - workers_cpu
    rate = result.records / seconds
    return ExportFigure(fmt.value, result.records, round(seconds, 3), round(rate), round(cpu_s, 3), round(result.records / cpu_s), result.bytes, rate >= EXPORT_TARGET_RECORDS_S, round(node_cpu_s, 3))


def descendants_cpu_s() -> float:
    """CPU seconds used so far by the live processes descended from this one (the workers fork
    from a fork server this process started: they are its grandchildren, not its children)."""
    parents: dict[int, int] = {}
    used: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # ended meanwhile
            continue
        parents[int(entry.name)] = int(fields[1])
        used[int(entry.name)] = (int(fields[11]) + int(fields[12])) / tick
    mine, total = {os.getpid()}, 0.0
    for _ in range(8):  # a few generations deep at most
        children = {pid for pid, parent in parents.items() if parent in mine and pid not in mine}
        total += sum(used[pid] for pid in children)
        mine |= children
    return total


async def figure_backup(home: Path, out: Path) -> BackupFigure:
    """A verified backup of the open node, `cp` of its file beside it, and a restore of it."""
    async with await Node.open(home, PASSPHRASE) as node:
        start = time.perf_counter()
        taken = await node.custody.backup(out / "backups")
        backup_s = time.perf_counter() - start
    start = time.perf_counter()
    shutil.copyfile(home / "node.db", out / "copied.db")
    copy_s = time.perf_counter() - start
    start = time.perf_counter()
    async with await Node.restore(out / "restored", taken.path, PASSPHRASE):
        restore_s = time.perf_counter() - start
    return BackupFigure(round(backup_s, 3), taken.bytes, round(copy_s, 3), round(restore_s, 3), backup_s <= BACKUP_TARGET_S)


def figure_sqlite_baseline(home: Path, out: Path) -> Baseline:
    """What an operator would do by hand: SELECT the view into a CSV file (through the same
    SQLCipher binding and key the node uses: the store is encrypted)."""
    db_key = atrest.database_key(keystore.unseal(keystore.read_key_file(keystore.key_path(home)), PASSPHRASE))
    start = time.perf_counter()
    conn = cipher.Keyed(f"file:{home / 'node.db'}?mode=ro", db_key, uri=True).connect()
    rows = 0
    with open(out / "baseline.csv", "w", newline="") as f:
        writer = csv.writer(f)
        for row in conn.execute("SELECT message_id, channel_id, author, created_at, edited_at, deleted, text, reactions, files FROM messages ORDER BY channel_id, message_id"):
            writer.writerow(row)
            rows += 1
    conn.close()
    seconds = time.perf_counter() - start
    return Baseline(rows, round(seconds, 3), round(rows / seconds))


async def profile_export(home: Path, out: Path, fmt: ExportFormat) -> str:
    profiler = cProfile.Profile()
    profiler.enable()
    await figure_export(home, out / "profile", fmt)
    profiler.disable()
    buffer = io.StringIO()
    pstats.Stats(profiler, stream=buffer).sort_stats("cumulative").print_stats(25)
    return buffer.getvalue()


def report(messages: int, exports: list[ExportFigure], baseline: Baseline, backup: BackupFigure) -> list[str]:
    load = os.getloadavg()[0]
    lines = [f"Custody of {messages:,} messages ({platform.machine()}, {os.cpu_count()} cores, load {load:.1f}, Python {platform.python_version()})", ""]
    lines.append(f"verified backup {backup.backup_s:>7.2f} s  {backup.backup_bytes:>13,} bytes  target {BACKUP_TARGET_S:.0f} s: {'met' if backup.meets_target else 'MISSED'}")
    lines.append(f"cp of node.db   {backup.copy_s:>7.2f} s  (no consistency while the node runs, no check)")
    lines.append(f"restore         {backup.restore_s:>7.2f} s  (copy, SHA-256, check, open)")
    lines.append("")
    lines.append(f"{'format':<12} {'records':>9} {'seconds':>8} {'records/s':>10} {'rec/cpu-s':>10} {'node cpu':>9} {'bytes':>13}  target {EXPORT_TARGET_RECORDS_S:,}/s")
    for f in exports:
        lines.append(f"{f.format:<12} {f.records:>9,} {f.seconds:>8.2f} {f.records_s:>10,} {f.records_per_cpu_s:>10,} {f.node_cpu_s:>8.2f}s {f.bytes:>13,}  {'met' if f.meets_target else 'MISSED'}")
    lines.append("(rec/cpu-s: records per CPU-second of the node's process and its workers; node cpu: of that, the node's process)")
    lines.append(f"{'sqlite3 csv':<12} {baseline.rows:>9,} {baseline.seconds:>8.2f} {baseline.rows_s:>10,} {'':>10} {'':>13}  (bare SELECT of the view: no history, proofs or signatures)")
    return lines


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Custody figures: verified backup and restore, compliance export rates.")
    parser.add_argument("--quick", action="store_true", help="under a minute: 10k messages")
    parser.add_argument("--json", action="store_true", help="end with one line of JSON")
    parser.add_argument("--messages", type=int, help="messages in the store (default 100,000; 10,000 with --quick)")
    parser.add_argument("--home", type=Path, help="an empty directory to work in, kept afterwards")
    parser.add_argument("--profile", choices=[f.value for f in ExportFormat], help="also print the profile of one export in this format")
    return parser.parse_args()


async def main() -> None:
    args = parse_args()
    start_fork_server(for_export=True)  # as `rallypoint compliance-export` does while it unlocks the node
    messages = args.messages or (10_000 if args.quick else 100_000)
    if args.home is not None and args.home.exists() and any(args.home.iterdir()):
        sys.exit(f"{args.home} is not empty")
    work = args.home or Path(tempfile.mkdtemp(prefix="rallypoint-custody-"))
    try:
        home, out = work / "node", work / "out"
        out.mkdir(parents=True)
        (out / "profile").mkdir()
        await build_store(home, messages)
        backup = await figure_backup(home, out)
        exports = [await figure_export(home, out, fmt) for fmt in ExportFormat]
        baseline = figure_sqlite_baseline(home, out)
        profile = await profile_export(home, out, ExportFormat(args.profile)) if args.profile else None
    finally:
        if args.home is None:
            shutil.rmtree(work, ignore_errors=True)
    print("\n".join(report(messages, exports, baseline, backup)), flush=True)
    if profile:
        print(profile, flush=True)
    if args.json:
        figures = {"messages": messages, "load": os.getloadavg()[0], "export": {f.format: asdict(f) for f in exports}, "sqlite_csv_baseline": asdict(baseline), "backup": asdict(backup)}
        print(json.dumps(figures), flush=True)


if __name__ == "__main__":
    asyncio.run(main())

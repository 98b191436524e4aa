"""Store benchmark: what one post costs as a channel grows, side by side with the
alternatives a developer would otherwise pick.

Three systems, the same generated chat text, the same disk:

  rallypoint  `Node.post()`: one Ed25519-signed Automerge change in a bounded segment
              document, appended to the SQLite change log and the messages/FTS5 tables
              in one durable transaction (WAL, synchronous=FULL).
  naive       ONE unsegmented Automerge document per channel, one transaction per
              message (the design this node rejects). Commit only, in memory: no
              signing, no storage - so it is flattered, not handicapped.
  sqlite      a plain SQLite messages table, WAL + synchronous=FULL, one transaction
              per message: the floor a plain chat server would have.

The node's store is encrypted (SQLCipher), as every node's is. A last section measures what
encryption at rest costs: an encrypted and a plain node side by side (the plain one opened on a
plain store it is given), their timed posts interleaved so both meet the same machine load,
and a bundle of messages imported into a fresh encrypted and a fresh plain node, alternately,
the best of a few rounds each.

The channel is filled with `post_many` (untimed except for its rate); at each checkpoint
individual `post()` calls are timed with perf_counter. At the main sizes the node is also
closed (bytes on disk), reopened (open, first `read(limit=50)`, first post) and
driven for a sustained sequential run. Figures are wall-clock on a warm page cache.

    python bench/store.py [--quick] [--json] [--sizes 1000,100000,1000000] [--home DIR] [--encryption-only]

With --json the last line of output is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import random
import resource
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

from automerge import core
from automerge._automerge import Document
from chat import SEED, chat_line

from appliance import crypto, ids
from appliance.node import SEGMENT_SIZE, Node
from appliance.store import Store
from sync.sneakernet import export_bundles, import_bundles

CHANNEL = "general"
PASSPHRASE = "bench passphrase"
KDF = crypto.KdfParams(1, 8192)  # cheap on purpose: open time here excludes Argon2id's cost
PROGRESS_EVERY = 50_000


@dataclass(frozen=True)
class Plan:
    quick: bool
    sizes: list[int]  # full checkpoints: latency, sustained rate, close/open, bytes on disk
    naive_sizes: list[int]
    naive_budget_s: float
    samples: int  # individually timed post() calls per checkpoint
    sustained_posts: int
    fill_chunk: int
    encryption_size: int  # messages in the channel when encrypted and plain posts are compared
    import_messages: int  # messages in the bundle whose import is timed
    import_rounds: int


@dataclass(frozen=True)
class Latency:
    p50_ms: float
    p99_ms: float
    max_ms: float


@dataclass(frozen=True)
class Opening:
    messages: int
    open_s: float  # open + first read(limit=50): until the first channel view is on screen
    open_only_s: float
    first_post_ms: float  # loads the current segment document


@dataclass
class RallypointResult:
    latency: dict[int, Latency] = field(default_factory=dict)
    posts_per_s: dict[int, float] = field(default_factory=dict)
    opening: dict[int, Opening] = field(default_factory=dict)
    bytes_per_message: dict[int, float] = field(default_factory=dict)
    fill_messages: int = 0
    fill_s: float = 0.0
    upkeep: dict[str, int] = field(default_factory=dict)  # what the nodes' background upkeep did, summed


def make_plan(quick: bool, sizes: list[int] | None) -> Plan:
    if quick:
        sizes = sizes or [1_000, 10_000]
        return Plan(True, sizes, [n for n in (1_000, 5_000) if n <= max(sizes)], 10.0, 100, 500, 5 * SEGMENT_SIZE, 2_000, 5_000, 7)
    sizes = sizes or [1_000, 100_000, 1_000_000]
    return Plan(False, sizes, [n for n in (1_000, 20_000, 40_000) if n <= max(sizes)], 180.0, 200, 2_000, 10 * SEGMENT_SIZE, 20_000, 10_000, 5)


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def percentile(ordered: list[float], q: float) -> float:
    """Nearest rank on sorted samples."""
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def summarise(seconds: list[float]) -> Latency:
    ordered = sorted(seconds)
    return Latency(percentile(ordered, 0.50) * 1e3, percentile(ordered, 0.99) * 1e3, ordered[-1] * 1e3)


class Messages:
    """The same stream of (id, author, created_at, text) for every system."""

    def __init__(self) -> None:
        self.rng = random.Random(SEED)
        self.author = self.rng.randbytes(32).hex()
        self.id_factory = ids.MessageIdFactory()

    def texts(self, count: int) -> list[str]:
        return [chat_line(self.rng) for _ in range(count)]

    def rows(self, count: int) -> list[tuple[str, str, int, str]]:
        now = int(time.time() * 1000)
        return [(self.id_factory.new(now, self.rng.getrandbits(80)), self.author, now, text) for text in self.texts(count)]


# --- naive: one unsegmented Automerge document per channel ---------------------------


def naive_commit(doc: Document, message_id: str, author: str, created_at: int, text: str) -> None:
    with doc.transaction() as tx:
        msg = tx.put_object(core.ROOT, message_id, core.ObjType.Map)
        tx.put(msg, "author", core.ScalarType.Str, author)
        tx.put(msg, "text", core.ScalarType.Str, text)
        tx.put(msg, "created_at", core.ScalarType.Int, created_at)


def timed_naive_commits(doc: Document, rows: list[tuple[str, str, int, str]]) -> list[float]:
    seconds = []
    for row in rows:
        start = time.perf_counter()
        naive_commit(doc, *row)
        seconds.append(time.perf_counter() - start)
    return seconds


def bench_naive(plan: Plan) -> dict[int, Latency]:
    """Commit latency at each reachable size, within the time budget."""
    doc = Document()
    source = Messages()
    started = time.perf_counter()
    count = 0
    result: dict[int, Latency] = {}
    for size in plan.naive_sizes:
        while count < size:
            if time.perf_counter() - started > plan.naive_budget_s:
                progress(f"naive: budget of {plan.naive_budget_s:.0f} s spent at {count:,} messages; stopping")
                return result
            for row in source.rows(min(500, size - count)):
                naive_commit(doc, *row)
                count += 1
        result[size] = summarise(timed_naive_commits(doc, source.rows(plan.samples)))
        count += plan.samples
        progress(f"naive: {size:,} messages, commit p50 {result[size].p50_ms:.3f} ms ({time.perf_counter() - started:.0f} s so far)")
    return result


# --- sqlite: the floor --------------------------------------------------------------


def sqlite_create(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute(
        "CREATE TABLE messages (message_id TEXT PRIMARY KEY, channel TEXT NOT NULL, author TEXT NOT NULL,"
        " created_at INTEGER NOT NULL, text TEXT NOT NULL)"
    )
    conn.execute("CREATE INDEX messages_by_channel ON messages (channel, message_id)")
    return conn


SQLITE_INSERT = "INSERT INTO messages (message_id, author, created_at, text, channel) VALUES (?, ?, ?, ?, 'general')"


def sqlite_fill(conn: sqlite3.Connection, rows: list[tuple[str, str, int, str]]) -> None:
    conn.execute("BEGIN")
    conn.executemany(SQLITE_INSERT, rows)
    conn.execute("COMMIT")


def timed_sqlite_inserts(conn: sqlite3.Connection, rows: list[tuple[str, str, int, str]]) -> list[float]:
    seconds = []
    for row in rows:
        start = time.perf_counter()
        conn.execute("BEGIN")
        conn.execute(SQLITE_INSERT, row)
        conn.execute("COMMIT")
        seconds.append(time.perf_counter() - start)
    return seconds


def bench_sqlite(path: Path, sizes: list[int], samples: int) -> tuple[dict[int, Latency], float]:
    """Durable single-row commits at each size (filled in bulk); bytes per message at the end."""
    conn = sqlite_create(path)
    source = Messages()
    count = 0
    result: dict[int, Latency] = {}
    for size in sizes:
        while count < size:
            chunk = min(20_000, size - count)
            sqlite_fill(conn, source.rows(chunk))
            count += chunk
        result[size] = summarise(timed_sqlite_inserts(conn, source.rows(samples)))
        count += samples
        progress(f"sqlite: {size:,} rows, commit p50 {result[size].p50_ms:.3f} ms")
    conn.close()
    return result, disk_bytes(path) / count


def disk_bytes(db: Path) -> int:
    return sum(p.stat().st_size for p in (db, db.with_name(db.name + "-wal")) if p.exists())


# --- rallypoint ---------------------------------------------------------------------


async def fill(node: Node, source: Messages, count: int, target: int, chunk: int, result: RallypointResult) -> int:
    """post_many up to `target` messages in the channel; returns the new count."""
    while count < target:
        bodies = source.texts(min(chunk, target - count))
        start = time.perf_counter()
        await node.chat.post_many(CHANNEL, bodies)
        result.fill_s += time.perf_counter() - start
        result.fill_messages += len(bodies)
        if (count + len(bodies)) // PROGRESS_EVERY > count // PROGRESS_EVERY:
            rate = result.fill_s / result.fill_messages * 1e3
            eta = (target - count - len(bodies)) * rate / 1e3
            progress(f"rallypoint: {count + len(bodies):,} messages ({rate:.2f} ms/msg with post_many, {eta / 60:.1f} min to {target:,})")
        count += len(bodies)
    return count


async def timed_posts(node: Node, bodies: list[str]) -> list[float]:
    seconds = []
    for body in bodies:
        start = time.perf_counter()
        await node.chat.post(CHANNEL, body)
        seconds.append(time.perf_counter() - start)
    return seconds


async def reopen(home: Path, count: int, body: str) -> tuple[Node, Opening]:
    """Open (unlock), first channel view, first post: what a user waits for after a restart."""
    start = time.perf_counter()
    node = await Node.open(home, PASSPHRASE)
    opened = time.perf_counter()
    view = await node.views.read(CHANNEL, limit=50)
    viewed = time.perf_counter()
    assert len(view) == 50, f"first view showed {len(view)} messages"
    await node.chat.post(CHANNEL, body)
    posted = time.perf_counter()
    return node, Opening(count, viewed - start, opened - start, (posted - viewed) * 1e3)


async def close_counting(node: Node, result: RallypointResult) -> None:
    """Closes the node, adding up what its upkeep did off the post path (a benchmark may look
    inside: the node keeps its upkeep to itself)."""
    upkeep = node._upkeep
    await node.close()
    for key in ("snapshots", "checkpoints", "forced_checkpoints", "merges"):
        result.upkeep[key] = result.upkeep.get(key, 0) + getattr(upkeep, key)


async def bench_rallypoint(home: Path, plan: Plan, latency_sizes: list[int]) -> RallypointResult:
    node = await Node.init(home, workspace_name="bench", user_name="alice", node_name="alpha", passphrase=PASSPHRASE, kdf=KDF)
    await node.chat.create_channel(CHANNEL)
    source = Messages()
    result = RallypointResult()
    count = 0
    try:
        for size in latency_sizes:
            count = await fill(node, source, count, size, plan.fill_chunk, result)
            if size in plan.sizes:
                await close_counting(node, result)
                result.bytes_per_message[size] = disk_bytes(home / "node.db") / count
                node, result.opening[size] = await reopen(home, count, source.texts(1)[0])
                count += 1
            result.latency[size] = summarise(await timed_posts(node, source.texts(plan.samples)))
            count += plan.samples
            if size in plan.sizes:
                start = time.perf_counter()
                await timed_posts(node, source.texts(plan.sustained_posts))
                result.posts_per_s[size] = plan.sustained_posts / (time.perf_counter() - start)
                count += plan.sustained_posts
            progress(f"rallypoint: {size:,} messages, post p50 {result.latency[size].p50_ms:.2f} ms, p99 {result.latency[size].p99_ms:.2f} ms")
    finally:
        await close_counting(node, result)
    return result


# --- encryption at rest: encrypted and plain, side by side -------------------------


@dataclass(frozen=True)
class EncryptionCost:
    messages: int
    post: dict[str, Latency]  # "encrypted", "plain"
    import_messages: int
    import_per_s: dict[str, float]  # best of the rounds
    import_median_per_s: dict[str, float]  # their median: the best alone flatters whichever met a quiet moment
    rounds: int

    def overhead_pct(self, encrypted: float, plain: float) -> float:
        return round((encrypted / plain - 1) * 100, 1)


def _plain(home: Path) -> Store | None:
    return Store.at(home) if home.name.endswith("plain") else None


async def _new_node(home: Path) -> Node:
    return await Node.init(home, workspace_name="bench", user_name="alice", node_name=home.name, passphrase=PASSPHRASE, kdf=KDF, store=_plain(home))


async def _timed_import(work: Path, stick: Path, label: str, round_: int) -> float:
    """Imports the stick's bundle into a fresh node (a copy of the joined template): messages/s."""
    home = work / f"bob-{round_}-{label}"
    shutil.copytree(work / f"bob-template-{label}", home)
    copy = work / f"stick-{round_}-{label}"  # an import takes the bundle off the stick
    shutil.copytree(stick, copy)
    bob = await Node.open(home, PASSPHRASE, store=_plain(home))
    try:
        start = time.perf_counter()
        report = await import_bundles(bob, copy)
        seconds = time.perf_counter() - start
        assert report.files and all(f.outcome == "accepted" for f in report.files), [f.outcome for f in report.files]
    finally:
        await bob.close()
    return seconds


async def bench_encryption(work: Path, plan: Plan) -> EncryptionCost:
    labels = ("encrypted", "plain")
    nodes = {label: await _new_node(work / f"alice-{label}") for label in labels}
    try:
        source = Messages()
        bodies = source.texts(plan.encryption_size)
        for node in nodes.values():
            await node.chat.create_channel(CHANNEL)
            for start in range(0, len(bodies), plan.fill_chunk):
                await node.chat.post_many(CHANNEL, bodies[start : start + plan.fill_chunk])
        samples: dict[str, list[float]] = {label: [] for label in labels}
        for index, body in enumerate(source.texts(plan.samples * 2)):  # interleaved: both meet the same load
            for label in labels if index % 2 == 0 else labels[::-1]:
                samples[label] += await timed_posts(nodes[label], [body])
        post = {label: summarise(samples[label]) for label in labels}
        progress("encryption: post p50 " + ", ".join(f"{label} {post[label].p50_ms:.2f} ms" for label in labels))

        # The import: a bundle of `import_messages` from one alice to a new bob, for each kind.
        alice = nodes["plain"]
        await alice.chat.create_channel("imported")
        texts = source.texts(plan.import_messages)
        for start in range(0, len(texts), plan.fill_chunk):
            await alice.chat.post_many("imported", texts[start : start + plan.fill_chunk])
        rates: dict[str, list[float]] = {label: [] for label in labels}
        stick = work / "stick"
        for label in labels:
            enrollment = await alice.enrollment.invite(f"bob-{label}", f"bob{label}", kdf=KDF)
            home = work / f"bob-template-{label}"
            store = Store.at(home) if label == "plain" else None
            if store is not None:
                home.mkdir()
            bob = await Node.join(home, enrollment.data, enrollment.code, PASSPHRASE, kdf=KDF, store=store)
            await bob.close()
        for label in labels:
            bob_id = (await _read_node_id(work / f"bob-template-{label}", label))
            (stick / label).mkdir(parents=True)
            await export_bundles(alice, stick / label, for_nodes=[bob_id])
        for node in nodes.values():  # their upkeep must not run beside the timed imports
            await node.close()
        nodes = {}
        for round_ in range(plan.import_rounds):
            for label in labels if round_ % 2 == 0 else labels[::-1]:  # neither always goes first
                seconds = await _timed_import(work, stick / label, label, round_)
                rates[label].append(plan.import_messages / seconds)
        best = {label: max(rates[label]) for label in labels}
        median = {label: statistics.median(rates[label]) for label in labels}
        progress("encryption: import " + ", ".join(f"{label} {best[label]:,.0f} msg/s" for label in labels))
    finally:
        for node in nodes.values():
            await node.close()
    return EncryptionCost(plan.encryption_size, post, plan.import_messages, best, median, plan.import_rounds)


async def _read_node_id(home: Path, label: str) -> str:
    node = await Node.open(home, PASSPHRASE, store=_plain(home) if label == "plain" else None, sign_in=False)
    try:
        return node.identity.node_id
    finally:
        await node.close()


# --- report -------------------------------------------------------------------------


def ratio(a: float, b: float) -> float:
    return round(a / b, 2)


def growths(systems: dict[str, dict[int, Latency]]) -> dict[str, dict[str, float]]:
    """How much each system's latency grew from its smallest to its largest measured size."""
    out: dict[str, dict[str, float]] = {}
    for name, latency in systems.items():
        if len(latency) >= 2:
            low, high = min(latency), max(latency)
            out[name] = {"from": low, "to": high, "p50": ratio(latency[high].p50_ms, latency[low].p50_ms), "p99": ratio(latency[high].p99_ms, latency[low].p99_ms)}
    return out


def comparisons(ours: dict[int, Latency], naive: dict[int, Latency], floor: dict[int, Latency]) -> dict[str, float]:
    """Ours over naive at the largest size both reached; ours over plain SQLite at our largest."""
    largest = max(ours)
    out = {
        "vs_sqlite_at": largest,
        "rallypoint_vs_sqlite_p50": ratio(ours[largest].p50_ms, floor[largest].p50_ms),
        "rallypoint_vs_sqlite_p99": ratio(ours[largest].p99_ms, floor[largest].p99_ms),
    }
    common = max(set(ours) & set(naive), default=None)
    if common is not None:
        out |= {
            "vs_naive_at": common,
            "rallypoint_vs_naive_p50": ratio(ours[common].p50_ms, naive[common].p50_ms),
            "rallypoint_vs_naive_p99": ratio(ours[common].p99_ms, naive[common].p99_ms),
        }
    return out


def latency_table(columns: list[int], rows: dict[str, dict[int, Latency]]) -> list[str]:
    lines = [f"{'latency, ms / messages in channel':<34}" + "".join(f"{n:>12,}" for n in columns)]
    for name, latency in rows.items():
        for label in ("p50", "p99"):
            cells = "".join(f"{getattr(latency[n], label + '_ms'):>12.3f}" if n in latency else f"{'-':>12}" for n in columns)
            lines.append(f"{name + ' ' + label:<34}{cells}")
    return lines


def report(plan: Plan, ours: RallypointResult, naive: dict[int, Latency], floor: dict[int, Latency], floor_bytes: float, compared: dict[str, float], grown: dict[str, dict[str, float]]) -> list[str]:
    columns = sorted(set(ours.latency) | set(naive))
    lines = [
        f"Rallypoint store benchmark ({'quick' if plan.quick else 'full'}): {os.cpu_count()} cores, automerge {version('automerge')}, "
        f"SQLite {sqlite3.sqlite_version}, segment {SEGMENT_SIZE} messages, {plan.samples} timed posts per size",
        "",
        *latency_table(columns, {"rallypoint post()": ours.latency, "naive single-doc commit": naive, "plain sqlite commit": floor}),
        "",
        f"fill with post_many: {ours.fill_s / ours.fill_messages * 1e3:.2f} ms/message ({ours.fill_messages:,} messages in {ours.fill_s:.0f} s)",
    ]
    for size in plan.sizes:
        o = ours.opening[size]
        lines.append(
            f"at {size:>9,}: {ours.posts_per_s[size]:6.0f} posts/s sustained ({plan.sustained_posts} sequential post()), "
            f"open {o.open_only_s:.3f} s, open + first read(50) {o.open_s:.3f} s, first post {o.first_post_ms:.1f} ms, "
            f"{ours.bytes_per_message[size]:,.0f} bytes/message on disk"
        )
    lines.append(f"plain sqlite: {floor_bytes:,.0f} bytes/message on disk")
    for size in sorted(set(ours.latency) & set(floor)):
        lines.append(
            f"at {size:>9,}: post p99 {ours.latency[size].p99_ms:.3f} ms, bare durable commit p99 {floor[size].p99_ms:.3f} ms "
            f"(+{ours.latency[size].p99_ms - floor[size].p99_ms:.3f} ms)"
        )
    lines.append("upkeep off the post path: " + ", ".join(f"{n} {key.replace('_', ' ')}" for key, n in ours.upkeep.items()))
    if "vs_naive_at" in compared:
        lines.append(
            f"rallypoint / naive single doc at {compared['vs_naive_at']:,}: p50 {compared['rallypoint_vs_naive_p50']}x, "
            f"p99 {compared['rallypoint_vs_naive_p99']}x (naive = bare in-memory commit, no signature, no storage)"
        )
    lines.append(
        f"rallypoint / plain sqlite at {compared['vs_sqlite_at']:,}: p50 {compared['rallypoint_vs_sqlite_p50']}x, p99 {compared['rallypoint_vs_sqlite_p99']}x"
    )
    for name, g in grown.items():
        lines.append(f"growth, {name}: p50 x{g['p50']}, p99 x{g['p99']} from {g['from']:,} to {g['to']:,} messages")
    return lines


def encryption_report(cost: EncryptionCost) -> list[str]:
    enc, plain = cost.post["encrypted"], cost.post["plain"]
    imp_enc, imp_plain = cost.import_per_s["encrypted"], cost.import_per_s["plain"]
    return [
        f"encryption at rest (SQLCipher, raw key) at {cost.messages:,} messages, posts interleaved:",
        f"  post p50 {enc.p50_ms:.3f} ms encrypted, {plain.p50_ms:.3f} ms plain ({cost.overhead_pct(enc.p50_ms, plain.p50_ms):+.1f} %)",
        f"  post p99 {enc.p99_ms:.3f} ms encrypted, {plain.p99_ms:.3f} ms plain ({cost.overhead_pct(enc.p99_ms, plain.p99_ms):+.1f} %)",
        f"  import of {cost.import_messages:,} messages: {imp_enc:,.0f} msg/s encrypted, {imp_plain:,.0f} msg/s plain "
        f"({-cost.overhead_pct(imp_enc, imp_plain):+.1f} % slower; target: at most 15 %), best of {cost.rounds} rounds each, alternating",
        f"  import, median of the rounds: {cost.import_median_per_s['encrypted']:,.0f} msg/s encrypted, {cost.import_median_per_s['plain']:,.0f} msg/s plain "
        f"({-cost.overhead_pct(cost.import_median_per_s['encrypted'], cost.import_median_per_s['plain']):+.1f} % slower)",
    ]


def encryption_json(cost: EncryptionCost) -> dict[str, object]:
    enc, plain = cost.post["encrypted"], cost.post["plain"]
    imp_enc, imp_plain = cost.import_per_s["encrypted"], cost.import_per_s["plain"]
    return {
        "encryption_at_messages": cost.messages,
        "post_p50_ms_encrypted": round(enc.p50_ms, 4),
        "post_p99_ms_encrypted": round(enc.p99_ms, 4),
        "post_p50_ms_plain": round(plain.p50_ms, 4),
        "post_p99_ms_plain": round(plain.p99_ms, 4),
        "encryption_overhead_post_p50_pct": cost.overhead_pct(enc.p50_ms, plain.p50_ms),
        "encryption_overhead_post_p99_pct": cost.overhead_pct(enc.p99_ms, plain.p99_ms),
        "import_messages": cost.import_messages,
        "import_msgs_per_s": round(imp_enc, 1),
        "import_msgs_per_s_plain": round(imp_plain, 1),
        "encryption_overhead_import_pct": -cost.overhead_pct(imp_enc, imp_plain),
        "encryption_overhead_import_median_pct": -cost.overhead_pct(cost.import_median_per_s["encrypted"], cost.import_median_per_s["plain"]),
        "import_rounds": cost.rounds,
    }


def as_json(plan: Plan, ours: RallypointResult, naive: dict[int, Latency], floor: dict[int, Latency], floor_bytes: float, compared: dict[str, float], grown: dict[str, dict[str, float]]) -> str:
    def by_size(latency: dict[int, Latency], key: str) -> dict[str, float]:
        return {str(n): round(getattr(v, key), 4) for n, v in sorted(latency.items())}

    open_at = 100_000 if 100_000 in plan.sizes else max(plan.sizes)
    largest = max(plan.sizes)
    return json.dumps(
        {
            "quick": plan.quick,
            "sizes": plan.sizes,
            "post_p50_ms": by_size(ours.latency, "p50_ms"),
            "post_p99_ms": by_size(ours.latency, "p99_ms"),
            "post_max_ms": by_size(ours.latency, "max_ms"),
            "posts_per_s": round(ours.posts_per_s[largest], 1),
            "posts_per_s_by_size": {str(n): round(v, 1) for n, v in ours.posts_per_s.items()},
            "open_s": round(ours.opening[open_at].open_s, 4),
            "open_only_s": round(ours.opening[open_at].open_only_s, 4),
            "open_at_messages": ours.opening[open_at].messages,
            "first_post_after_open_ms": round(ours.opening[open_at].first_post_ms, 2),
            "open_by_size": {
                str(n): {"messages": o.messages, "open_s": round(o.open_s, 4), "open_only_s": round(o.open_only_s, 4), "first_post_ms": round(o.first_post_ms, 2)}
                for n, o in ours.opening.items()
            },
            "bytes_per_message": round(ours.bytes_per_message[largest], 1),
            "bytes_per_message_by_size": {str(n): round(v, 1) for n, v in ours.bytes_per_message.items()},
            "fill_ms_per_message": round(ours.fill_s / ours.fill_messages * 1e3, 3),
            "naive_single_doc_p50_ms": by_size(naive, "p50_ms"),
            "naive_single_doc_p99_ms": by_size(naive, "p99_ms"),
            "sqlite_p50_ms": by_size(floor, "p50_ms"),
            "sqlite_p99_ms": by_size(floor, "p99_ms"),
            "sqlite_bytes_per_message": round(floor_bytes, 1),
            "post_p99_over_sqlite_p99_ms": {str(n): round(ours.latency[n].p99_ms - floor[n].p99_ms, 4) for n in sorted(set(ours.latency) & set(floor))},
            "upkeep": ours.upkeep,
            "comparisons": compared,
            "growth": grown,
            "samples_per_size": plan.samples,
            "sustained_posts": plan.sustained_posts,
            "segment_size": SEGMENT_SIZE,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "automerge": version("automerge"), "sqlite": sqlite3.sqlite_version},
        }
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Post latency, throughput, open time and disk use of the node store.")
    parser.add_argument("--quick", action="store_true", help="a run of under a minute (sizes 1k and 10k)")
    parser.add_argument("--json", action="store_true", help="end with one line of JSON")
    parser.add_argument("--sizes", type=lambda s: sorted({int(x) for x in s.split(",")}), help="comma-separated message counts, e.g. 1000,100000")
    parser.add_argument("--home", type=Path, help="an empty directory to work in, kept afterwards (default: a temporary one, removed)")
    parser.add_argument("--encryption-only", action="store_true", help="only the encrypted-beside-plain section (its full-run sizes unless --quick)")
    return parser.parse_args()


async def main() -> None:
    args = parse_args()
    plan = make_plan(args.quick, args.sizes)
    if args.home is not None and args.home.exists() and any(args.home.iterdir()):
        sys.exit(f"{args.home} is not empty")
    work = args.home or Path(tempfile.mkdtemp(prefix="rallypoint-bench-"))
    if args.encryption_only:
        try:
            cost = await bench_encryption(work, plan)
        finally:
            if args.home is None:
                shutil.rmtree(work, ignore_errors=True)
        print("\n".join(encryption_report(cost)), flush=True)
        if args.json:
            print(json.dumps({"quick": plan.quick} | encryption_json(cost)), flush=True)
        return
    try:
        naive = bench_naive(plan)
        latency_sizes = sorted(set(plan.sizes) | set(naive))
        floor, floor_bytes = bench_sqlite(work / "plain.db", latency_sizes, plan.samples)
        ours = await bench_rallypoint(work / "node", plan, latency_sizes)
        cost = await bench_encryption(work, plan)
    finally:
        if args.home is None:
            shutil.rmtree(work, ignore_errors=True)
    compared = comparisons(ours.latency, naive, floor)
    grown = growths({"rallypoint": ours.latency, "naive single doc": naive, "plain sqlite": floor})
    print("\n".join(report(plan, ours, naive, floor, floor_bytes, compared, grown) + encryption_report(cost)), flush=True)
    if args.json:
        print(json.dumps(json.loads(as_json(plan, ours, naive, floor, floor_bytes, compared, grown)) | encryption_json(cost)), flush=True)


if __name__ == "__main__":
    asyncio.run(main())

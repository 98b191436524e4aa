"""Sneakernet benchmark: moving a channel's chat from node A to node B on a USB stick, against
NNCP, the store-and-forward tool a developer would otherwise pick for it.

For each size the same generated chat lines go from A to B through a directory standing in
for the stick (local disk, warm page cache: a real stick's write speed is not included):

  rallypoint  A's channel filled with `post_many`; both nodes' upkeep left to settle (they
              share this machine's cores; on two machines A's index merges after the fill
              would not slow B's import); `export_bundles` for B onto the stick,
              `import_bundles` on B (every change's signature verified, changes applied to
              B's documents and views), then B's first `read(limit=50)` - which must show
              the last line sent, or the round trip does not count.
  nncp        two NNCP nodes in a temporary directory (no network at all). Packets go out
              with `nncp-xfer -tx` onto the stick, come in on B with `nncp-xfer -rx` and are
              delivered by `nncp-toss` to an exec handler that appends them to a file.
              batched:     all lines in one `nncp-exec`.
              per message: one `nncp-exec` per line, measured on a sample (200; 1,000 for a
                           full run) and extrapolated linearly to each size.
              NNCP only delivers bytes: nothing is applied, indexed or readable as a channel.
  automerge   the floor any Automerge-based format meets in this Python binding, with no store,
              no SQL and no bundle (bench/automerge_floor.py): loading the same lines back
              from change chunks and from a compacted `save()`, listing their hashes, actors
              and sequence numbers (what checking each author's signature needs), applying
              them as import does and reading every message back.

    python bench/sneakernet.py [--quick] [--json] [--sizes 10000,100000] [--sample 1000]
                               [--systems rallypoint,nncp] [--home DIR]

NNCP comes from the Debian package `nncp` (apt-get install nncp); without it the script
reports the rallypoint figures only. With --json the last line of output is one JSON object
with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from importlib.metadata import version
from pathlib import Path
from typing import TypeVar

from automerge_floor import AutomergeFloor, measure_floor
from chat import chat_lines

from appliance import crypto
from appliance.node import SEGMENT_SIZE, Node
from appliance.workers import start_fork_server

CHANNEL = "general"
PASSPHRASE = "bench passphrase"
KDF = crypto.KdfParams(1, 8192)  # cheap on purpose: enrollment and unlock are not what is measured
FILL_CHUNK = 10 * SEGMENT_SIZE
SETTLE_QUIET_S = 1.0  # upkeep idle this long: the node has settled
SETTLE_CAP_S = 120.0
PROGRESS_EVERY = 50_000
SYSTEMS = ("rallypoint", "nncp")
NNCP_TOOLS = ("nncp-cfgnew", "nncp-exec", "nncp-xfer", "nncp-toss")
NNCP_HANDLE = "append"

T = TypeVar("T")


@dataclass(frozen=True)
class Plan:
    quick: bool
    sizes: list[int]
    sample: int  # messages sent one nncp-exec each, then extrapolated to every size
    systems: tuple[str, ...]


def make_plan(quick: bool, sizes: list[int] | None, sample: int | None, systems: tuple[str, ...]) -> Plan:
    sizes = sizes or ([1_000, 10_000] if quick else [10_000, 100_000])
    sample = min(sample or (200 if quick else 1_000), min(sizes))
    return Plan(quick, sizes, sample, systems)


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def tree_bytes(root: Path) -> tuple[int, int]:
    """(bytes, files) of every file under `root`: what is on the stick."""
    sizes = [p.stat().st_size for p in root.rglob("*") if p.is_file()]
    return sum(sizes), len(sizes)


def text_bytes(bodies: Sequence[str]) -> float:
    return sum(len(b.encode()) for b in bodies) / len(bodies)


# --- rallypoint ---------------------------------------------------------------------


@dataclass(frozen=True)
class RallypointRun:
    messages: int
    export_s: float
    import_s: float
    import_cpu_s: float  # B's process (not its workers): wall time swings with this machine's neighbours, this less
    read_s: float  # B's first read(limit=50) after the import
    stick_bytes: int
    stick_files: int
    bundles: int
    changes_exported: int
    changes_applied: int
    # A second courier round: reactions to earlier messages, i.e. changes into segments B holds.
    existing_changes: int = 0
    existing_import_s: float = 0.0
    existing_import_cpu_s: float = 0.0

    @property
    def verified_existing_changes_per_s(self) -> float:
        return self.existing_changes / self.existing_import_s if self.existing_import_s else 0.0

    @property
    def round_trip_s(self) -> float:
        return self.export_s + self.import_s + self.read_s

    @property
    def bytes_per_message(self) -> float:
        return self.stick_bytes / self.messages

    @property
    def verified_changes_per_s(self) -> float:
        return self.changes_applied / self.import_s


def sneakernet_api() -> tuple[Callable, Callable]:
    from sync.sneakernet import export_bundles, import_bundles

    return export_bundles, import_bundles


async def settle(*nodes: Node) -> float:
    """Waits until the nodes' upkeep (snapshots, checkpoints, search index merges: a bulk fill
    or import leaves seconds of them) has had nothing to do for SETTLE_QUIET_S, at most
    SETTLE_CAP_S; returns the wait. The two nodes share this machine's two cores: on two
    machines one node's upkeep would not slow the other's import, so every timed courier runs
    between settled nodes. (A benchmark may look inside: the node keeps its upkeep to itself.)"""
    start = time.perf_counter()

    def work_done() -> int:
        return sum(getattr(node._upkeep, key) for node in nodes for key in ("snapshots", "checkpoints", "forced_checkpoints", "merges"))

    seen, quiet_since = work_done(), time.perf_counter()
    while time.perf_counter() - quiet_since < SETTLE_QUIET_S and time.perf_counter() - start < SETTLE_CAP_S:
        await asyncio.sleep(0.1)
        if work_done() != seen:
            seen, quiet_since = work_done(), time.perf_counter()
    return time.perf_counter() - start


async def courier(node_a: Node, node_b: Node, stick: Path, messages: int, last_text: str) -> RallypointRun:
    """Export on A, import on B, first read on B: the only code that touches sync.sneakernet."""
    export_bundles, import_bundles = sneakernet_api()
    start = time.perf_counter()
    report = await export_bundles(node_a, stick, for_nodes=[node_b.identity.node_id])
    export_s = time.perf_counter() - start
    stick_bytes, stick_files = tree_bytes(stick)
    start, cpu = time.perf_counter(), time.process_time()
    result = await import_bundles(node_b, stick)
    import_s, import_cpu_s = time.perf_counter() - start, time.process_time() - cpu
    assert not result.rejected, f"B rejected bundles: {result.rejected}"
    start = time.perf_counter()
    view = await node_b.views.read(CHANNEL, limit=50)
    read_s = time.perf_counter() - start
    assert view and view[-1].text == last_text, f"B's channel does not end with the last line sent: {view[-1].text if view else None!r}"
    return RallypointRun(
        messages=messages,
        export_s=export_s,
        import_s=import_s,
        import_cpu_s=import_cpu_s,
        read_s=read_s,
        stick_bytes=stick_bytes,
        stick_files=stick_files,
        bundles=len(report.bundles),
        changes_exported=sum(b.changes for b in report.bundles),
        changes_applied=result.changes_applied,
    )


async def react_and_courier(node_a: Node, node_b: Node, stick: Path, messages: int) -> tuple[int, float, float]:
    """B's answer first (its bundle acknowledges what it now holds), then A reacts to every
    tenth message (one signed change each, into segments B holds: they travel as change chunks)
    and couriers them to B. Returns (changes applied, import s, B's process CPU s in it)."""
    export_bundles, import_bundles = sneakernet_api()
    await export_bundles(node_b, stick, for_nodes=[node_a.identity.node_id])
    answered = await import_bundles(node_a, stick)
    assert not answered.rejected, f"A rejected B's answer: {answered.rejected}"
    page = await node_a.views.read(CHANNEL, limit=min(messages, 10_000), mark_read=False)  # a read returns at most 10,000
    for view in page[:: max(1, len(page) // max(1, messages // 10))][: messages // 10]:
        await node_a.chat.react(view.id, "+1")
    await export_bundles(node_a, stick, for_nodes=[node_b.identity.node_id])
    await settle(node_a, node_b)
    start, cpu = time.perf_counter(), time.process_time()
    result = await import_bundles(node_b, stick)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    assert not result.rejected, f"B rejected bundles: {result.rejected}"
    return result.changes_applied, elapsed, cpu


async def bench_rallypoint(work: Path, bodies: list[str]) -> RallypointRun:
    """A fresh workspace: A creates it and enrolls B (as tests/conftest.py does), fills the
    channel, then couriers everything to B."""
    node_a = await Node.init(work / "a", workspace_name="bench", user_name="alice", node_name="alpha", passphrase=PASSPHRASE, kdf=KDF)
    node_b = None
    try:
        enrollment = await node_a.enrollment.invite("bravo", "bob", kdf=KDF)
        node_b = await Node.join(work / "b", enrollment.data, enrollment.code, PASSPHRASE, kdf=KDF)
        # As `rallypoint bundle import` does before it unlocks B: the workers' fork server boots
        # ahead of the import (the workers themselves start inside the timed import).
        start_fork_server()
        await node_a.chat.create_channel(CHANNEL)
        start = time.perf_counter()
        for done in range(0, len(bodies), FILL_CHUNK):
            await node_a.chat.post_many(CHANNEL, bodies[done : done + FILL_CHUNK])
            if (done + FILL_CHUNK) // PROGRESS_EVERY > done // PROGRESS_EVERY:
                progress(f"rallypoint: A holds {min(done + FILL_CHUNK, len(bodies)):,} messages ({time.perf_counter() - start:.0f} s)")
        progress(f"rallypoint: A filled with {len(bodies):,} messages in {time.perf_counter() - start:.1f} s")
        progress(f"rallypoint: A's upkeep settled the fill in {await settle(node_a, node_b):.1f} s; exporting")
        stick = work / "stick"
        stick.mkdir()
        run = await courier(node_a, node_b, stick, len(bodies), bodies[-1])
        progress(f"rallypoint: {len(bodies):,} messages, round trip {run.round_trip_s:.2f} s, {run.bytes_per_message:.0f} bytes/message on the stick")
        existing, existing_s, existing_cpu_s = await react_and_courier(node_a, node_b, stick, len(bodies))
        progress(f"rallypoint: {existing:,} reactions into segments B holds imported at {existing / existing_s:,.0f} changes/s")
        return replace(run, existing_changes=existing, existing_import_s=existing_s, existing_import_cpu_s=existing_cpu_s)
    finally:
        await node_a.close()
        if node_b is not None:
            await node_b.close()


# --- nncp ---------------------------------------------------------------------------


@dataclass(frozen=True)
class NncpRun:
    messages: int
    send_s: float  # nncp-exec on A: one per message, or one for all
    xfer_out_s: float  # nncp-xfer -tx on A: spool to stick
    xfer_in_s: float  # nncp-xfer -rx on B: stick to spool
    toss_s: float  # nncp-toss on B: decrypt, check, run the handler
    stick_bytes: int
    packets: int
    extrapolated_from: int | None = None  # measured on this many messages, scaled linearly

    @property
    def round_trip_s(self) -> float:
        return self.send_s + self.xfer_out_s + self.xfer_in_s + self.toss_s

    @property
    def bytes_per_message(self) -> float:
        return self.stick_bytes / self.messages

    def scaled(self, messages: int) -> NncpRun:
        if messages == self.messages:
            return self
        k = messages / self.messages
        return replace(
            self,
            messages=messages,
            send_s=self.send_s * k,
            xfer_out_s=self.xfer_out_s * k,
            xfer_in_s=self.xfer_in_s * k,
            toss_s=self.toss_s * k,
            stick_bytes=round(self.stick_bytes * k),
            packets=round(self.packets * k),
            extrapolated_from=self.messages,
        )


def nncp_missing() -> list[str]:
    return [tool for tool in NNCP_TOOLS if shutil.which(tool) is None]


def nncp_version() -> str:
    out = subprocess.run(["nncp-exec", "-version"], capture_output=True, text=True).stdout
    found = re.search(r"NNCP version (\S+)", out)
    return found.group(1) if found else "unknown"


def nncp_keys() -> dict[str, str]:
    """A fresh node identity from `nncp-cfgnew` (its `self` block)."""
    out = subprocess.run(["nncp-cfgnew", "-nocomments"], capture_output=True, text=True, check=True).stdout
    block = re.search(r"^\s*self:\s*\{(.*?)\}", out, re.M | re.S)
    assert block is not None, f"unexpected nncp-cfgnew output:\n{out}"
    return dict(re.findall(r"^\s*(\w+):\s*(\S+)\s*$", block.group(1), re.M))


def public(keys: dict[str, str]) -> dict[str, str]:
    return {k: keys[k] for k in ("id", "exchpub", "signpub", "noisepub")}


class NncpPair:
    """Nodes a and b, each with its spool and log under `root`; b lets a run `append`, which
    adds its stdin to root/received. The stick is root/stick."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.stick = root / "stick"
        self.received = root / "received"
        self.stick.mkdir(parents=True)
        a, b = nncp_keys(), nncp_keys()
        handler = ["/bin/sh", "-c", f"cat >> {shlex.quote(str(self.received))}"]
        self.cfg_a = self._config("a", a, {"b": public(b)})
        self.cfg_b = self._config("b", b, {"a": public(a) | {"exec": {NNCP_HANDLE: handler}}})

    def _config(self, name: str, keys: dict[str, str], neighbours: dict[str, dict]) -> Path:
        home = self.root / name
        (home / "spool").mkdir(parents=True)
        cfg = {"spool": str(home / "spool"), "log": str(home / "log"), "self": keys, "neigh": {"self": public(keys)} | neighbours}
        path = home / "nncp.hjson"  # JSON is HJSON
        path.write_text(json.dumps(cfg, indent=2))
        return path

    def run(self, tool: str, cfg: Path, *args: str, stdin: bytes | None = None) -> float:
        start = time.perf_counter()
        done = subprocess.run([tool, "-cfg", str(cfg), "-quiet", "-noprogress", *args], input=stdin, capture_output=True)
        took = time.perf_counter() - start
        if done.returncode != 0:
            raise RuntimeError(f"{tool} {' '.join(args)} failed ({done.returncode}): {done.stderr.decode(errors='replace')}")
        return took

    def send(self, payloads: Sequence[bytes], *, compress: bool = True) -> NncpRun:
        """One nncp-exec per payload, then the stick's round trip; checks what B received."""
        options = () if compress else ("-nocompress",)
        send_s = sum(self.run("nncp-exec", self.cfg_a, *options, "b", NNCP_HANDLE, stdin=p) for p in payloads)
        xfer_out_s = self.run("nncp-xfer", self.cfg_a, "-tx", "-mkdir", str(self.stick))
        stick_bytes, packets = tree_bytes(self.stick)
        xfer_in_s = self.run("nncp-xfer", self.cfg_b, "-rx", str(self.stick))
        toss_s = self.run("nncp-toss", self.cfg_b)
        got = self.received.read_bytes() if self.received.exists() else b""
        expected = b"".join(payloads)
        if len(payloads) == 1:
            assert got == expected, "B's file differs from what A sent"
        else:  # toss delivers packets in its own order
            assert sorted(got.splitlines()) == sorted(expected.splitlines()), "B's file lacks lines A sent"
        assert packets >= 1
        messages = expected.count(b"\n")
        return NncpRun(messages, send_s, xfer_out_s, xfer_in_s, toss_s, stick_bytes, packets)


def bench_nncp_batched(root: Path, bodies: list[str], *, compress: bool = True) -> NncpRun:
    run = NncpPair(root).send(["".join(b + "\n" for b in bodies).encode()], compress=compress)
    how = "" if compress else " -nocompress"
    progress(f"nncp batched{how}: {len(bodies):,} messages, round trip {run.round_trip_s:.2f} s, {run.bytes_per_message:.0f} bytes/message on the stick")
    return run


def bench_nncp_per_message(root: Path, bodies: list[str]) -> NncpRun:
    progress(f"nncp per message: {len(bodies):,} nncp-exec calls, one process each")
    run = NncpPair(root).send([(b + "\n").encode() for b in bodies])
    progress(f"nncp per message: {len(bodies):,} messages, round trip {run.round_trip_s:.2f} s, {run.bytes_per_message:.0f} bytes/message on the stick")
    return run


# --- report -------------------------------------------------------------------------


@dataclass
class Results:
    plan: Plan
    text_bytes: float  # UTF-8 bytes per generated line, over the largest size
    rallypoint: dict[int, RallypointRun] | None = None
    floor: dict[int, AutomergeFloor] | None = None
    batched: dict[int, NncpRun] | None = None
    batched_raw: dict[int, NncpRun] | None = None  # the same with -nocompress
    per_message: dict[int, NncpRun] | None = None  # by size, scaled from plan.sample messages
    nncp_version: str | None = None
    nncp_note: str | None = None  # why there are no NNCP figures


def ratio(a: float, b: float) -> float:
    return round(a / b, 2)


def ratios(r: Results) -> dict[str, dict[str, float]]:
    """Rallypoint over NNCP at each size: above 1 means rallypoint costs more."""
    if r.rallypoint is None or r.batched is None or r.batched_raw is None or r.per_message is None:
        return {}
    out = {}
    for n in r.plan.sizes:
        ours, batched, raw, single = r.rallypoint[n], r.batched[n], r.batched_raw[n], r.per_message[n]
        out[str(n)] = {
            "bytes_per_message_vs_nncp_batched": ratio(ours.bytes_per_message, batched.bytes_per_message),
            "bytes_per_message_vs_nncp_batched_nocompress": ratio(ours.bytes_per_message, raw.bytes_per_message),
            "bytes_per_message_vs_nncp_per_message": ratio(ours.bytes_per_message, single.bytes_per_message),
            "round_trip_vs_nncp_batched": ratio(ours.round_trip_s, batched.round_trip_s),
            "round_trip_vs_nncp_per_message": ratio(ours.round_trip_s, single.round_trip_s),
        }
    return out


Row = tuple[str, dict[int, str]]


def table(title: str, sizes: list[int], rows: list[Row]) -> list[str]:
    lines = [f"{title:<52}" + "".join(f"{n:>16,}" for n in sizes)]
    lines += [f"  {label:<50}" + "".join(f"{cells.get(n, '-'):>16}" for n in sizes) for label, cells in rows]
    return lines


def rallypoint_rows(runs: dict[int, RallypointRun]) -> list[Row]:
    def row(label: str, value: Callable[[RallypointRun], str]) -> Row:
        return label, {n: value(run) for n, run in runs.items()}

    return [
        row("export on A, s", lambda x: f"{x.export_s:.2f}"),
        row("import on B, s", lambda x: f"{x.import_s:.2f}"),
        row("first read(limit=50) on B, s", lambda x: f"{x.read_s:.3f}"),
        row("round trip (export + import + read), s", lambda x: f"{x.round_trip_s:.2f}"),
        row("bytes on the stick per message", lambda x: f"{x.bytes_per_message:,.0f}"),
        row("bundles on the stick", lambda x: f"{x.bundles:,}"),
        row("changes exported / applied on B", lambda x: f"{x.changes_exported:,}/{x.changes_applied:,}"),
        row("verified changes per second (applied / import)", lambda x: f"{x.verified_changes_per_s:,.0f}"),
        row("reactions into held segments: verified changes/s", lambda x: f"{x.verified_existing_changes_per_s:,.0f} ({x.existing_changes:,})"),
    ]


def floor_rows(runs: dict[int, AutomergeFloor]) -> list[Row]:
    def row(label: str, value: Callable[[AutomergeFloor], str]) -> Row:
        return label, {n: value(run) for n, run in runs.items()}

    return [
        row("load from change chunks, s", lambda x: f"{x.load_changes_s:.2f}"),
        row("load from save(), s", lambda x: f"{x.load_saved_s:.2f}"),
        row("list changes (hash, actor, seq, deps), s", lambda x: f"{x.list_changes_s:.2f}"),
        row("ceiling: changes/s loaded from save() and listed", lambda x: f"{x.verified_changes_per_s_ceiling:,.0f}"),
        row("apply as import does + read back, s", lambda x: f"{x.apply_and_read_s:.2f}"),
        row("change chunks, bytes per message", lambda x: f"{x.change_bytes / x.messages:,.0f}"),
        row("save(), bytes per message", lambda x: f"{x.saved_bytes / x.messages:,.0f}"),
    ]


def nncp_rows(runs: dict[int, NncpRun]) -> list[Row]:
    def row(label: str, value: Callable[[NncpRun], str]) -> Row:
        return label, {n: value(run) + ("*" if run.extrapolated_from else "") for n, run in runs.items()}

    return [
        row("nncp-exec on A, s", lambda x: f"{x.send_s:.2f}"),
        row("nncp-xfer -tx on A, s", lambda x: f"{x.xfer_out_s:.2f}"),
        row("nncp-xfer -rx on B, s", lambda x: f"{x.xfer_in_s:.2f}"),
        row("nncp-toss on B, s", lambda x: f"{x.toss_s:.2f}"),
        row("round trip, s", lambda x: f"{x.round_trip_s:.2f}"),
        row("bytes on the stick per message", lambda x: f"{x.bytes_per_message:,.0f}"),
        row("packets on the stick", lambda x: f"{x.packets:,}"),
    ]


def report(r: Results) -> list[str]:
    plan, sizes = r.plan, r.plan.sizes
    lines = [
        f"Rallypoint sneakernet benchmark ({'quick' if plan.quick else 'full'}): {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"automerge {version('automerge')}, NNCP {r.nncp_version or 'not run'}",
        f"chat text: {r.text_bytes:.0f} bytes of UTF-8 per message on average; the stick is a directory on local disk "
        "(warm page cache: a real stick's write speed is not included)",
        "",
    ]
    if r.rallypoint is not None:
        lines += table("rallypoint: export, import (verify + apply), read", sizes, rallypoint_rows(r.rallypoint))
        lines.append("")
    if r.floor is not None:
        lines += table("automerge alone: no store, no SQL, no bundle", sizes, floor_rows(r.floor))
        lines.append("")
    if r.batched is not None and r.batched_raw is not None and r.per_message is not None:
        raw = r.batched_raw
        lines += table("nncp batched: all lines in one nncp-exec", sizes, nncp_rows(r.batched))
        lines.append("")
        lines += table(
            "nncp batched -nocompress (default is compressed)",
            sizes,
            [("round trip, s", {n: f"{x.round_trip_s:.2f}" for n, x in raw.items()}), ("bytes on the stick per message", {n: f"{x.bytes_per_message:,.0f}" for n, x in raw.items()})],
        )
        lines.append("")
        lines += table("nncp per message: one nncp-exec per line", sizes, nncp_rows(r.per_message))
        if any(x.extrapolated_from for x in r.per_message.values()):
            lines.append(f"  * extrapolated linearly from {plan.sample:,} messages sent and measured")
        lines += [
            "",
            "NNCP only delivers bytes: B's exec handler appends them to a file. Nothing is applied, indexed or readable",
            "as a channel, so its round trip has no counterpart to Rallypoint's signature checks, merge and read.",
        ]
    elif r.nncp_note:
        lines.append(r.nncp_note)
    compared = ratios(r)
    if compared:
        extrapolated = " (extrapolated)" if r.per_message and any(x.extrapolated_from for x in r.per_message.values()) else ""
        rows = [
            ("bytes per message / nncp batched", "bytes_per_message_vs_nncp_batched"),
            ("bytes per message / nncp batched -nocompress", "bytes_per_message_vs_nncp_batched_nocompress"),
            ("bytes per message / nncp per message", "bytes_per_message_vs_nncp_per_message"),
            ("round trip / nncp batched", "round_trip_vs_nncp_batched"),
            ("round trip / nncp per message" + extrapolated, "round_trip_vs_nncp_per_message"),
        ]
        lines += ["", *table("rallypoint / nncp (above 1: rallypoint costs more)", sizes, [(label, {int(n): f"{c[key]}x" for n, c in compared.items()}) for label, key in rows])]
    return lines


def rallypoint_json(run: RallypointRun) -> dict[str, object]:
    return {
        "export_s": round(run.export_s, 4),
        "import_s": round(run.import_s, 4),
        "import_cpu_s": round(run.import_cpu_s, 4),
        "first_read_s": round(run.read_s, 4),
        "round_trip_s": round(run.round_trip_s, 4),
        "stick_bytes": run.stick_bytes,
        "stick_files": run.stick_files,
        "bytes_per_message": round(run.bytes_per_message, 1),
        "bundles": run.bundles,
        "changes_exported": run.changes_exported,
        "changes_applied": run.changes_applied,
        "verified_changes_per_s": round(run.verified_changes_per_s, 1),
        "existing_segment_changes": run.existing_changes,
        "verified_existing_changes_per_s": round(run.verified_existing_changes_per_s, 1),
        "existing_import_cpu_s": round(run.existing_import_cpu_s, 4),
    }


def floor_json(run: AutomergeFloor) -> dict[str, object]:
    return {
        "load_changes_s": round(run.load_changes_s, 4),
        "load_saved_s": round(run.load_saved_s, 4),
        "list_changes_s": round(run.list_changes_s, 4),
        "verified_changes_per_s_ceiling": round(run.verified_changes_per_s_ceiling, 1),
        "apply_s": round(run.apply_s, 4),
        "read_s": round(run.read_s, 4),
        "change_bytes_per_message": round(run.change_bytes / run.messages, 1),
        "saved_bytes_per_message": round(run.saved_bytes / run.messages, 1),
    }


def nncp_json(run: NncpRun) -> dict[str, object]:
    return {
        "exec_s": round(run.send_s, 4),
        "xfer_tx_s": round(run.xfer_out_s, 4),
        "xfer_rx_s": round(run.xfer_in_s, 4),
        "toss_s": round(run.toss_s, 4),
        "round_trip_s": round(run.round_trip_s, 4),
        "stick_bytes": run.stick_bytes,
        "bytes_per_message": round(run.bytes_per_message, 1),
        "packets": run.packets,
        "extrapolated": run.extrapolated_from is not None,
        "extrapolated_from": run.extrapolated_from,
    }


def by_size(runs: dict[int, T] | None, encode: Callable[[T], dict[str, object]]) -> dict[str, dict[str, object]] | None:
    return None if runs is None else {str(n): encode(run) for n, run in sorted(runs.items())}


def as_json(r: Results) -> str:
    return json.dumps(
        {
            "quick": r.plan.quick,
            "sizes": r.plan.sizes,
            "systems": list(r.plan.systems),
            "text_bytes_per_message": round(r.text_bytes, 1),
            "rallypoint": by_size(r.rallypoint, rallypoint_json),
            "automerge_floor": by_size(r.floor, floor_json),
            "nncp_batched": by_size(r.batched, nncp_json),
            "nncp_batched_nocompress": by_size(r.batched_raw, nncp_json),
            "nncp_per_message": by_size(r.per_message, nncp_json),
            "nncp_per_message_sample": r.plan.sample if r.per_message is not None else None,
            "nncp_applies_messages": False,
            "nncp_note": r.nncp_note,
            "ratios": ratios(r),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "automerge": version("automerge"), "nncp": r.nncp_version},
        }
    )


# --- main ---------------------------------------------------------------------------


def parse_systems(value: str) -> tuple[str, ...]:
    chosen = tuple(s.strip() for s in value.split(",") if s.strip())
    if not chosen or set(chosen) - set(SYSTEMS):
        raise argparse.ArgumentTypeError(f"systems are {', '.join(SYSTEMS)}")
    return chosen


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Export, import and round-trip cost of moving chat between two nodes on a stick, beside NNCP.")
    parser.add_argument("--quick", action="store_true", help="a run of under a minute (1k and 10k messages, NNCP per-message sample of 200)")
    parser.add_argument("--json", action="store_true", help="end with one line of JSON")
    parser.add_argument("--sizes", type=lambda s: sorted({int(x) for x in s.split(",")}), help="comma-separated message counts, e.g. 10000,100000")
    parser.add_argument("--sample", type=int, help="messages sent with one nncp-exec each, extrapolated to every size (default 1000; 200 with --quick)")
    parser.add_argument("--systems", type=parse_systems, default=SYSTEMS, help="comma-separated, from: rallypoint,nncp (default both)")
    parser.add_argument("--home", type=Path, help="an empty directory to work in, kept afterwards (default: a temporary one, removed)")
    return parser.parse_args()


async def main() -> None:
    args = parse_args()
    plan = make_plan(args.quick, args.sizes, args.sample, args.systems)
    if "rallypoint" in plan.systems:
        try:
            sneakernet_api()
        except ImportError as exc:
            sys.exit(f"sync.sneakernet is not usable ({exc}); `--systems nncp` runs the NNCP half alone")
    nncp_note = None
    if "nncp" not in plan.systems:
        nncp_note = "NNCP not run (--systems)."
    elif missing := nncp_missing():
        nncp_note = f"NNCP not found ({', '.join(missing)} missing): install it with `apt-get install nncp` (Debian/Ubuntu)."
        nncp_note += " Rallypoint figures only." if "rallypoint" in plan.systems else ""
        progress(nncp_note)
    if args.home is not None and args.home.exists() and any(args.home.iterdir()):
        sys.exit(f"{args.home} is not empty")
    work = args.home or Path(tempfile.mkdtemp(prefix="rallypoint-sneakernet-"))
    lines = {n: chat_lines(n) for n in plan.sizes}  # the same text for every system; each size starts with the smaller ones
    results = Results(plan, text_bytes(lines[max(plan.sizes)]), nncp_note=nncp_note)
    try:
        if "rallypoint" in plan.systems:
            results.rallypoint = {n: await bench_rallypoint(work / f"rallypoint-{n}", lines[n]) for n in plan.sizes}
            results.floor = {n: measure_floor(lines[n]) for n in plan.sizes}
        if nncp_note is None:
            results.nncp_version = nncp_version()
            results.batched = {n: bench_nncp_batched(work / f"nncp-batched-{n}", lines[n]) for n in plan.sizes}
            results.batched_raw = {n: bench_nncp_batched(work / f"nncp-batched-raw-{n}", lines[n], compress=False) for n in plan.sizes}
            sample = bench_nncp_per_message(work / f"nncp-per-message-{plan.sample}", chat_lines(plan.sample))
            results.per_message = {n: sample.scaled(n) for n in plan.sizes}
    finally:
        if args.home is None:
            shutil.rmtree(work, ignore_errors=True)
    print("\n".join(report(results)), flush=True)
    if args.json:
        print(as_json(results), flush=True)


if __name__ == "__main__":
    asyncio.run(main())

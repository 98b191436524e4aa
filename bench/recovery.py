"""Recovery benchmark: point-in-time restore from a backup, and a lost node recovered from its
kit and refilled by a peer over loopback, beside the LAN initial sync of the same messages.

  pitr          a node holds N messages posted in two halves (wall clock between them), then
                one reaction in every segment; it takes a backup. Timed, each into an empty
                home: the plain restore; a restore as at the middle (half the messages dropped:
                their segments removed, one rebuilt); and a restore as at just before the
                reactions (every segment rebuilt from its changes, every view row written
                again). Each is checked: it reads the message count it should.
  recovery      A (a `rallypoint serve` process) holds N messages; B, enrolled and empty, dials
                it from this process - the LAN initial sync of bench/lan.py, timed the same way
                (until B has stored all N and reads the last one). B makes its recovery kit and
                its home is deleted. Timed: `recover` into a new home (Argon2id at the cheap
                bench cost), then a session with A until the recovered B has all N again - A
                still believes B holds them, until B's opening heads say otherwise.

    python bench/recovery.py [--quick] [--json] [--sizes 10000,100000] [--home DIR]

--quick (under a minute) measures 10k messages for point-in-time restore and 2k for recovery.
With --json the last line of output is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chat import chat_lines  # noqa: E402
from lan import CHANNEL, FILL_CHUNK, KDF, PASSPHRASE, ServeProcess, lan_fill, make_workspace, progress  # noqa: E402

from appliance.kernel import wall_clock_ms  # noqa: E402
from appliance.model import RecoveryKit  # noqa: E402
from appliance.node import SEGMENT_SIZE, Node  # noqa: E402
from appliance.recovery import recover  # noqa: E402

TARGET_PITR_S = {100_000: 10.0}  # issue 17: a point-in-time restore of 100k messages
TARGET_RECOVERY_RATIO = 1.2  # recovery within 20 % of the LAN initial sync


@dataclass(frozen=True)
class Pitr:
    messages: int
    segments: int
    backup_bytes: int
    restore_s: float  # the plain restore, for comparison
    pitr_half_s: float  # as at the middle: half the messages dropped
    pitr_all_segments_s: float  # as at before one reaction in every segment: every segment rebuilt


@dataclass(frozen=True)
class Recovery:
    messages: int
    initial_sync_s: float  # B empty and enrolled, from A over loopback
    recover_s: float  # the kit installed into a new home, node opened
    refill_s: float  # the recovered B's session until it has all N again
    recovery_s: float  # recover + refill

    @property
    def ratio(self) -> float:
        return self.recovery_s / self.initial_sync_s


async def measure_pitr(work: Path, bodies: list[str], size: int) -> Pitr:
    home = work / f"pitr-{size}"
    node = await Node.init(home, workspace_name="bench", user_name="alice", node_name="alpha", passphrase=PASSPHRASE, kdf=KDF)
    backups = work / f"pitr-{size}-backups"
    backups.mkdir()
    async with node:
        await node.chat.create_channel(CHANNEL)
        half = size // 2
        ids: list[str] = []
        for done in range(0, half, FILL_CHUNK):
            ids += await node.chat.post_many(CHANNEL, bodies[done : min(half, done + FILL_CHUNK)])
        await asyncio.sleep(0.01)
        middle = wall_clock_ms()
        await asyncio.sleep(0.01)
        for done in range(half, size, FILL_CHUNK):
            ids += await node.chat.post_many(CHANNEL, bodies[done : min(size, done + FILL_CHUNK)])
        await asyncio.sleep(0.01)
        before_reactions = wall_clock_ms()
        await asyncio.sleep(0.01)
        first_of_segments = ids[::SEGMENT_SIZE]  # posted in order into a new channel: one in each segment
        for message_id in first_of_segments:
            await node.chat.react(message_id, "👍")
        progress(f"pitr: {size:,} messages and {len(first_of_segments)} reactions posted")
        taken = await node.custody.backup(backups)
    timings = {}
    for label, at, expected in (("restore", None, size), ("half", middle, half), ("all", before_reactions, size)):
        target = work / f"pitr-{size}-{label}"
        start = time.perf_counter()
        restored = await Node.restore(target, taken.path, PASSPHRASE, at=at)
        timings[label] = time.perf_counter() - start
        async with restored:
            count = len(await restored.views.read(CHANNEL, limit=10_000, mark_read=False))
            last = await restored.views.read(CHANNEL, limit=1, mark_read=False)
            if count != min(expected, 10_000) or last[-1].text != bodies[expected - 1]:
                raise RuntimeError(f"the {label} restore does not read what it should ({count} messages)")
            if label == "all" and [m for m in first_of_segments if (await restored.views.message(m)).reactions]:
                raise RuntimeError("a reaction made after the restore time shows")
        shutil.rmtree(target)
        progress(f"pitr {label}: {timings[label]:.2f} s")
    return Pitr(size, len(first_of_segments), taken.bytes, timings["restore"], timings["half"], timings["all"])


async def measure_recovery(work: Path, bodies: list[str], size: int, made_at_enrollment: bool = False) -> Recovery:
    kits: dict[str, RecoveryKit] = {}
    homes = await make_workspace(work / f"recovery-{size}{'-enrollment-kit' if made_at_enrollment else ''}", ["alpha", "bravo"], size, bodies, kits)
    source = ServeProcess(homes[0], mdns=False)
    try:
        _, listening = source.wait_for("Listening", 60)
        async with await Node.open(homes[1], PASSPHRASE) as bravo:
            initial, _ = await lan_fill(bravo, listening["port"], size, bodies)
            progress(f"recovery: initial sync of {size:,} in {initial:.2f} s")
            # The admin's kit from the invitation (alpha then accepts its incarnation), or bravo's own.
            kit = kits["bravo"] if made_at_enrollment else await bravo.custody.recovery_kit(PASSPHRASE, kdf=KDF)
        shutil.rmtree(homes[1])
        start = time.perf_counter()
        again = await recover(homes[1].with_name("bravo-new"), kit.data, kit.code, PASSPHRASE)
        recovered = time.perf_counter() - start
        async with again:
            refill, _ = await lan_fill(again, listening["port"], size, bodies)
        progress(f"recovery: recover {recovered:.2f} s, refill {refill:.2f} s")
        return Recovery(size, initial, recovered, refill, recovered + refill)
    finally:
        source.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smaller run that ends within a minute")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of every figure")
    parser.add_argument("--sizes", help="sizes, comma-separated (default 10000,100000; quick: 10000 for pitr, 2000 for recovery)")
    parser.add_argument("--home", help="keep the nodes' homes here (default: a temporary directory)")
    parser.add_argument("--enrollment-kit", action="store_true", help="recover from the kit the admin made at enrollment rather than the node's own")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else [10_000, 100_000]
    pitr_sizes = [10_000] if args.quick and not args.sizes else sizes
    recovery_sizes = [2_000] if args.quick and not args.sizes else sizes
    bodies = chat_lines(max(pitr_sizes + recovery_sizes))
    started = time.perf_counter()
    figures: dict[str, Any] = {"quick": args.quick, "python": platform.python_version(), "rallypoint_version": version("rallypoint"), "pitr": [], "recovery": []}
    with tempfile.TemporaryDirectory(prefix="rp-bench-recovery-") as temp:
        work = Path(args.home or temp)
        work.mkdir(parents=True, exist_ok=True)
        for size in pitr_sizes:
            progress(f"point-in-time restore of {size:,} messages")
            figures["pitr"].append(asdict(asyncio.run(measure_pitr(work, bodies, size))))
        for size in recovery_sizes:
            progress(f"recovery of {size:,} messages from a peer over loopback")
            run = asyncio.run(measure_recovery(work, bodies, size, args.enrollment_kit))
            figures["recovery"].append({**asdict(run), "ratio": run.ratio, "kit": "enrollment" if args.enrollment_kit else "node"})
    figures["elapsed_s"] = time.perf_counter() - started
    print("\n".join(report(figures)))
    if args.json:
        print(json.dumps(figures, sort_keys=True))


def report(figures: dict[str, Any]) -> list[str]:
    lines = []
    for run in figures["pitr"]:
        target = TARGET_PITR_S.get(run["messages"])
        worst = max(run["pitr_half_s"], run["pitr_all_segments_s"])
        verdict = "" if target is None else f"  (target <= {target:.0f} s: {'met' if worst <= target else 'MISSED'})"
        lines.append(
            f"point-in-time restore {run['messages']:>7,} messages ({run['segments']} segments, backup {run['backup_bytes'] / 1e6:.1f} MB): plain restore {run['restore_s']:.2f} s,"
            f" as at the middle {run['pitr_half_s']:.2f} s, every segment rebuilt {run['pitr_all_segments_s']:.2f} s{verdict}"
        )
    for run in figures["recovery"]:
        verdict = f"  (target within 20 %: {'met' if run['ratio'] <= TARGET_RECOVERY_RATIO else 'MISSED'})"
        lines.append(
            f"recovery {run['messages']:>7,} messages: recover {run['recover_s']:.2f} s + refill {run['refill_s']:.2f} s = {run['recovery_s']:.2f} s"
            f" vs LAN initial sync {run['initial_sync_s']:.2f} s: x{run['ratio']:.2f}{verdict}"
        )
    return lines


if __name__ == "__main__":
    main()

"""Console benchmark: how soon the operator sees something, and how smoothly a long channel scrolls.

The console runs headless (Textual's test driver, 80x24) against a node whose channel holds N
messages, as it would in a terminal:

  first paint        from creating the app until its first screen (unlock) is on the screen;
  channel view       from creating the app until the channel view shows the newest message
                     (unlock with a cheap key derivation, list channels, read the newest page);
  scroll frame time  in a channel of 10,000 messages (2,000 with --quick): the message list
                     focused, then `up` pressed repeatedly through the loaded history; the CPU
                     time of handling each press and repainting (p50, p99, max; the headless
                     driver's wall time per press, mostly its own idle waits, is shown too).

    python bench/console.py [--quick] [--json] [--sizes 100000] [--steps 300] [--home DIR]

With --json the last line of output is one JSON object with every figure. The unlock's key
derivation is the cheap test setting, not the interactive one (~0.09 s more in real use).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from importlib.metadata import version
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chat import chat_lines  # noqa: E402

from appliance import crypto  # noqa: E402
from appliance.node import SEGMENT_SIZE, Node  # noqa: E402
from tui.app import RallypointApp  # noqa: E402
from tui.screens.main import MainScreen  # noqa: E402
from tui.widgets.message_list import MessageList  # noqa: E402

PASSPHRASE = "bench passphrase"
KDF = crypto.KdfParams(1, 8192)
SIZE = (80, 24)
FILL_CHUNK = 10 * SEGMENT_SIZE
TARGET_FIRST_PAINT_S = 1.0


def progress(message: str) -> None:
    print(f"  .. {message}", file=sys.stderr, flush=True)


async def fill(home: Path, count: int) -> str:
    """A node whose #general holds `count` messages; returns the newest one's text."""
    bodies = chat_lines(count)
    node = await Node.init(home, workspace_name="bench", user_name="alice", node_name="alpha", passphrase=PASSPHRASE, kdf=KDF)
    async with node:
        await node.chat.create_channel("general")
        start = time.perf_counter()
        for done in range(0, count, FILL_CHUNK):
            await node.chat.post_many("general", bodies[done : done + FILL_CHUNK])
        progress(f"{count:,} messages posted in {time.perf_counter() - start:.1f} s")
    return bodies[-1]


@dataclass(frozen=True)
class Opening:
    messages: int
    first_paint_s: float
    channel_view_s: float


@dataclass(frozen=True)
class Scrolling:
    """A frame's cost is the CPU time of handling one scroll step and repainting; the headless
    driver's wall time per step adds its own waits between events (most of it idle)."""

    messages: int
    steps: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    driver_wall_p50_ms: float


async def measure_opening(home: Path, count: int, newest: str) -> Opening:
    start = time.perf_counter()
    app = RallypointApp(home, PASSPHRASE)
    async with app.run_test(size=SIZE) as pilot:
        first_paint = time.perf_counter() - start  # run_test returns once the first screen is up
        deadline = time.perf_counter() + 120
        while time.perf_counter() < deadline:
            screen = app.screen
            lists: list[MessageList] = list(screen.query(MessageList)) if isinstance(screen, MainScreen) else []  # none until the screen has composed
            if any(newest[:40] in str(option.prompt) for shown in lists[:1] for option in shown.options[-3:]):
                break
            await pilot.pause(0.005)
        else:
            raise RuntimeError("the channel view did not show the newest message within 120 s")
        return Opening(count, first_paint, time.perf_counter() - start)


async def measure_scrolling(home: Path, count: int, steps: int) -> Scrolling:
    app = RallypointApp(home, PASSPHRASE)
    async with app.run_test(size=SIZE) as pilot:
        deadline = time.perf_counter() + 120
        while not (isinstance(app.screen, MainScreen) and any(shown.option_count for shown in app.screen.query(MessageList))) and time.perf_counter() < deadline:
            await pilot.pause(0.01)
        messages = app.screen.query_one(MessageList)
        messages.focus()
        await pilot.pause(0.1)
        cpu: list[float] = []
        wall: list[float] = []
        for _ in range(steps):
            start, start_cpu = time.perf_counter(), time.process_time()
            await pilot.press("up")  # returns once the app has processed the key and its repaint
            cpu.append((time.process_time() - start_cpu) * 1000)
            wall.append((time.perf_counter() - start) * 1000)
        cpu.sort()
        return Scrolling(count, steps, statistics.median(cpu), cpu[min(len(cpu) - 1, int(len(cpu) * 0.99))], cpu[-1], statistics.median(wall))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smaller run that ends within a minute")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of every figure")
    parser.add_argument("--sizes", help="messages in the channel for the opening figures (default 100000; quick 10000)")
    parser.add_argument("--steps", type=int, help="scroll steps timed (default 300; quick 100)")
    parser.add_argument("--home", help="keep the nodes here (default: a temporary directory)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else ([10_000] if args.quick else [100_000])
    scroll_size, steps = (2_000, args.steps or 100) if args.quick else (10_000, args.steps or 300)
    started = time.perf_counter()
    figures: dict[str, object] = {"quick": args.quick, "python": platform.python_version(), "textual": version("textual")}
    with tempfile.TemporaryDirectory(prefix="rp-bench-console-") as temp:
        work = Path(args.home or temp)
        openings = []
        for size in sizes:
            home = work / f"open-{size}"
            newest = asyncio.run(fill(home, size))
            openings.append(asyncio.run(measure_opening(home, size, newest)))
        scroll_home = work / f"scroll-{scroll_size}"
        if not scroll_home.exists():
            asyncio.run(fill(scroll_home, scroll_size))
        scrolling = asyncio.run(measure_scrolling(scroll_home, scroll_size, steps))
    figures["opening"] = [asdict(o) for o in openings]
    figures["scrolling"] = asdict(scrolling)
    figures["elapsed_s"] = time.perf_counter() - started
    print(f"Console benchmark ({'quick' if args.quick else 'full'} run, {figures['elapsed_s']:.0f} s, 80x24, headless)\n")
    for o in openings:
        verdict = "meets" if o.first_paint_s <= TARGET_FIRST_PAINT_S else "misses"
        print(f"{o.messages:>8,} messages: first paint {o.first_paint_s:.2f} s (target ≤ {TARGET_FIRST_PAINT_S:.0f} s: {verdict}); channel view with the newest message {o.channel_view_s:.2f} s")
    print(
        f"scrolling a {scrolling.messages:,}-message channel, {scrolling.steps} steps: frame (CPU per step) p50 {scrolling.p50_ms:.1f} ms"
        f"  p99 {scrolling.p99_ms:.1f} ms  max {scrolling.max_ms:.1f} ms  (test driver wall time per step p50 {scrolling.driver_wall_p50_ms:.0f} ms)"
    )
    if args.json:
        print(json.dumps(figures, sort_keys=True))


if __name__ == "__main__":
    main()

"""CLI startup benchmark: how long a `rallypoint` command takes, start to exit, as a person or a
script runs it (a fresh process each time; the median of several runs):

  --version, --help   nothing but the parser (target: under 0.2 s);
  read                unlock a node (cheap key derivation) and print the newest 50 messages;
  post                unlock and post one message (one durable commit).

    python bench/cli.py [--quick] [--json] [--runs N]

With --json the last line of output is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from appliance import crypto  # noqa: E402
from appliance.node import Node  # noqa: E402

PASSPHRASE = "bench passphrase"
TARGET_HELP_S = 0.2


def command() -> list[str]:
    executable = shutil.which("rallypoint", path=str(Path(sys.executable).parent))
    return [executable] if executable else [sys.executable, "-m", "tui.cli"]


async def make_node(home: Path) -> None:
    async with await Node.init(home, workspace_name="bench", user_name="alice", node_name="alpha", passphrase=PASSPHRASE, kdf=crypto.KdfParams(1, 8192)) as node:
        await node.chat.create_channel("general")
        await node.chat.post_many("general", [f"message {i}" for i in range(200)])


def median_seconds(argv: list[str], env: dict[str, str], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([*command(), *argv], env=env, capture_output=True, check=True, timeout=120)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs per command (3)")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of every figure")
    parser.add_argument("--runs", type=int, help="runs per command (default 9; quick 3)")
    args = parser.parse_args()
    runs = args.runs or (3 if args.quick else 9)
    with tempfile.TemporaryDirectory(prefix="rp-bench-cli-") as temp:
        home = Path(temp) / "alpha"
        asyncio.run(make_node(home))
        env = {k: v for k, v in os.environ.items() if not k.startswith("RALLYPOINT_")} | {"RALLYPOINT_HOME": str(home), "RALLYPOINT_PASSPHRASE": PASSPHRASE}
        figures: dict[str, object] = {"quick": args.quick, "runs": runs, "python": platform.python_version()}
        for name, argv in (("version", ["--version"]), ("help", ["--help"]), ("read", ["read", "general"]), ("post", ["post", "general", "bench"])):
            figures[f"{name}_s"] = median_seconds(argv, env, runs)
    print(f"CLI startup (median of {runs} runs, a fresh process each)\n")
    for name in ("version", "help", "read", "post"):
        seconds = float(figures[f"{name}_s"])  # type: ignore[arg-type]
        target = f"  (target ≤ {TARGET_HELP_S} s: {'meets' if seconds <= TARGET_HELP_S else 'misses'})" if name in ("version", "help") else ""
        print(f"  rallypoint {name:<9} {seconds:.3f} s{target}")
    if args.json:
        print(json.dumps(figures, sort_keys=True))


if __name__ == "__main__":
    main()

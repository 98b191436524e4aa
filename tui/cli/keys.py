"""The node's data key for an unattended relay: `rallypoint data-key --out FILE` writes it to a
new root-only file that `--data-key-file FILE` (`serve` under systemd) opens the node with."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from tui.cli.output import emit
from tui.cli.parsing import Command
from tui.cli.unlock import with_node

if TYPE_CHECKING:
    from appliance.node import Node


async def cmd_data_key(args: argparse.Namespace) -> None:
    out = Path(args.out).expanduser()

    async def run(node: Node) -> None:
        await node.identity.export_data_key(out)
        emit(
            args,
            {"file": str(out)},
            f"Data key written to {out} (mode 0600).\nWhoever can read it can read every message on this node: keep it root-only, on this machine only.",
        )

    await with_node(args, run)


def _arguments(parser: argparse.ArgumentParser, _common: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, metavar="FILE", help="the new file to write the key to (never overwritten)")


DATA_KEY = Command("data-key", "admin: write this node's data key to a root-only file for an unattended relay (--data-key-file)", cmd_data_key, _arguments)

"""Commands of a node's custody: a backup while it runs, and a restore into an empty home."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from appliance.model import iso_utc
from tui.cli.output import emit
from tui.cli.parsing import Command
from tui.cli.unlock import read_passphrase, with_node

if TYPE_CHECKING:  # each command imports what it uses when it runs: `--help` loads none of it
    from appliance.node import Node


async def cmd_backup(args: argparse.Namespace) -> None:
    async def run(node: Node) -> None:
        taken = await node.custody.backup(Path(args.to).expanduser())
        debris = f"\nRemoved {taken.debris_files} file(s) ({taken.debris_bytes:,} bytes) left there by interrupted backups." if taken.debris_files else ""
        emit(
            args,
            {"file": str(taken.path), "bytes": taken.bytes, "taken_at": iso_utc(taken.taken_at), "removed_debris": {"files": taken.debris_files, "bytes": taken.debris_bytes}},
            f"Backup written to {taken.path} ({taken.bytes:,} bytes){debris}\n"
            f"It is encrypted; it opens only with its key file beside it ({taken.path.name}.key) and this node's passphrase.",
        )

    await with_node(args, run)


async def cmd_restore(args: argparse.Namespace) -> None:
    from appliance.node import Node

    home = Path(args.home).expanduser()
    async with await Node.restore(home, Path(args.file).expanduser(), read_passphrase(args)) as node:
        me = node.identity.whoami()
        emit(
            args,
            {"home": str(home), "workspace": me.workspace_name, "node": me.node_name, "node_id": me.node_id},
            f"Node {me.node_name} ({me.node_id}) of {me.workspace_name} restored into {home}\n"
            "A LAN session brings what its peers wrote since the backup; by courier, send each peer a bundle first (they then know what it lacks).",
        )


def _backup_arguments(parser: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    parser.add_argument("--to", required=True, metavar="DIR")


def _restore_arguments(parser: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE")


BACKUP = Command("backup", "admin: write a consistent copy of this node's store into a folder (while it runs)", cmd_backup, _backup_arguments)
RESTORE = Command("restore", "make an empty home the node a backup was taken of (needs that node's passphrase)", cmd_restore, _restore_arguments)

"""Commands of a node's custody: a backup while it runs, and a restore into an empty home."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from appliance.errors import InvalidInput
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
            f"Backup written to {taken.path} ({taken.bytes:,} bytes){debris}\nIt opens only with this node's passphrase; keep it as safe as the node itself.",
        )

    await with_node(args, run)


async def cmd_restore(args: argparse.Namespace) -> None:
    from appliance.node import Node

    home = Path(args.home).expanduser()
    at = _time(args.at) if args.at is not None else None
    if args.log is not None and at is None:
        raise InvalidInput("--log goes with --at: it brings the change log up to that time")
    log = Path(args.log).expanduser() if args.log is not None else None
    async with await Node.restore(home, Path(args.file).expanduser(), read_passphrase(args), at=at, log=log, read_only=args.read_only) as node:
        me = node.identity.whoami()
        when = f" as it was at {iso_utc(at)}" if at is not None else ""
        after = (
            "It is a read-only copy for inspection: reads and searches work, every write is refused."
            if args.read_only
            else "A LAN session brings what its peers wrote since the backup; by courier, send each peer a bundle first (they then know what it lacks)."
        )
        emit(
            args,
            {"home": str(home), "workspace": me.workspace_name, "node": me.node_name, "node_id": me.node_id, "as_at": iso_utc(at), "read_only": args.read_only},
            f"Node {me.node_name} ({me.node_id}) of {me.workspace_name} restored into {home}{when}\n{after}",
        )


def _time(text: str) -> int:
    """`--at`: an ISO 8601 time (UTC unless it says otherwise), or ms since the epoch, as ms."""
    if text.isdigit():
        return int(text)
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidInput(f"--at {text!r} is not a time like 2026-12-07T08:30:00Z") from exc
    return int((when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp() * 1000)


def _backup_arguments(parser: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    parser.add_argument("--to", required=True, metavar="DIR")


def _restore_arguments(parser: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE")
    parser.add_argument("--at", metavar="TIME", help="the node as it was at TIME (ISO 8601, UTC unless it says otherwise): from a backup taken then or later")
    parser.add_argument("--log", metavar="FILE", help="with --at after the backup was taken: a later backup, or the live node.db, whose change log covers TIME")
    parser.add_argument("--read-only", action="store_true", help="a copy for inspection: it opens and reads, and refuses every write")


BACKUP = Command("backup", "admin: write a consistent copy of this node's store into a folder (while it runs)", cmd_backup, _backup_arguments)
RESTORE = Command("restore", "make an empty home the node a backup was taken of, now or as at a time (needs that node's passphrase)", cmd_restore, _restore_arguments)

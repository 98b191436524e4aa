"""Commands of a node's custody: a backup while it runs, and a restore into an empty home."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from appliance.model import iso_utc
from tui.cli.output import emit
from tui.cli.parsing import Command
from tui.cli.unlock import read_passphrase, with_node
from tui.errors import UsageError
from tui.text import printable

if TYPE_CHECKING:  # each command imports what it uses when it runs: `--help` loads none of it
    from appliance.model import BackupInfo
    from appliance.node import Node
    from appliance.retention import RetentionPolicy


async def cmd_backup(args: argparse.Namespace) -> None:
    if args.status:
        if args.to or args.keep or args.keep_at_least is not None or args.scheduled:
            raise UsageError("--status takes no other backup option", "rallypoint backup", "")
        await with_node(args, lambda node: _print_health(args, node))
        return
    if args.scheduled:
        if args.to or args.keep or args.keep_at_least is not None:
            raise UsageError("--scheduled uses the folder and retention `rallypoint config --backup-dir` set", "rallypoint backup", "")
        await with_node(args, lambda node: _scheduled(args, node), sign_in=False)
        return
    if not args.to:
        raise UsageError("give the folder to write the backup into: --to DIR (or --scheduled, or --status)", "rallypoint backup", "")
    policy = retention_policy(args.keep, args.keep_at_least)

    async def run(node: Node) -> None:
        _report(args, await node.custody.backup(Path(args.to).expanduser().absolute(), policy))

    await with_node(args, run)


def retention_policy(keep: str | None, keep_at_least: int | None) -> RetentionPolicy | None:
    """`--keep` and `--keep-at-least` as a policy; None when neither is given (nothing is pruned)."""
    from appliance.retention import DEFAULT_KEEP_AT_LEAST, parse_keep

    if keep is None:
        if keep_at_least is not None:
            raise UsageError("--keep-at-least goes with --keep (how old a backup may get)", "rallypoint backup", "")
        return None
    return parse_keep(keep, DEFAULT_KEEP_AT_LEAST if keep_at_least is None else keep_at_least)


async def _scheduled(args: argparse.Namespace, node: Node) -> None:
    _report(args, await node.custody.scheduled_backup())


def _report(args: argparse.Namespace, taken: BackupInfo) -> None:
    debris = f"\nRemoved {taken.debris_files} file(s) ({taken.debris_bytes:,} bytes) left there by interrupted backups." if taken.debris_files else ""
    pruned = f"\nDeleted {len(taken.pruned)} older backup(s) the retention allows: {', '.join(taken.pruned)}" if taken.pruned else ""
    emit(
        args,
        {
            "file": str(taken.path),
            "bytes": taken.bytes,
            "taken_at": iso_utc(taken.taken_at),
            "checked": True,
            "removed_debris": {"files": taken.debris_files, "bytes": taken.debris_bytes},
            "pruned": list(taken.pruned),
        },
        f"Backup written to {taken.path} ({taken.bytes:,} bytes) and checked: it opens, is intact, and its audit log verifies.{debris}{pruned}\n"
        f"It is encrypted: it opens only with its key file beside it ({taken.path.name}.key) and this node's passphrase.",
    )


async def _print_health(args: argparse.Namespace, node: Node) -> None:
    health = await node.custody.backup_health()
    last, verified = health.last, health.last_verified
    emit(
        args,
        {
            "state": health.state.value,
            "folder": health.folder,
            "keep": health.policy,
            "last": None if last is None else {"file": last.file, "folder": last.folder, "taken_at": iso_utc(last.taken_at), "ok": last.ok, "problem": last.problem},
            "last_verified": None if verified is None else {"file": verified.file, "folder": verified.folder, "taken_at": iso_utc(verified.taken_at), "bytes": verified.bytes},
        },
        printable(health.summary),
    )


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
    parser.add_argument("--to", metavar="DIR", help="the folder to write into (made 0700 if missing; its parent must exist)")
    parser.add_argument("--keep", metavar="AGE", help="then delete this node's backups there older than AGE (30d, 36h, 1d12h)")
    parser.add_argument("--keep-at-least", type=int, metavar="N", help="but keep the newest N verified ones whatever their age (default 7)")
    parser.add_argument("--scheduled", action="store_true", help="the daily backup into the folder `config --backup-dir` set, run as the node (the systemd timer)")
    parser.add_argument("--status", action="store_true", help="show the last backup, its check, and whether the daily one is overdue or failed")


def _restore_arguments(parser: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE")


BACKUP = Command("backup", "admin: write a checked copy of this node's store into a folder (while it runs) and prune old ones; --status", cmd_backup, _backup_arguments)
RESTORE = Command("restore", "make an empty home the node a backup was taken of (needs that node's passphrase)", cmd_restore, _restore_arguments)

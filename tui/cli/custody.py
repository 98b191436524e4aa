"""Commands of a node's custody: a backup while it runs, and a restore into an empty home."""

from __future__ import annotations

import argparse
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from appliance.errors import InvalidInput
from appliance.files import read_regular_file
from appliance.model import iso_utc
from tui.cli.output import EXIT_ERROR, emit
from tui.cli.parsing import Command
from tui.cli.unlock import read_passphrase, read_user_secret, with_node
from tui.errors import CliError, CommandFailed, UsageError
from tui.files import write_atomically
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
    from appliance.retention import HealthState

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
    if health.state is not HealthState.OK:  # a monitoring check (cron, Nagios) reads the status alone
        raise CommandFailed(f"backups need attention: {health.state.value}", EXIT_ERROR, "BackupsUnhealthy")


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


async def cmd_recovery_kit(args: argparse.Namespace) -> None:
    async def run(node: Node) -> None:
        kit = await node.custody.recovery_kit(read_passphrase(args))
        write_atomically(Path(args.to).expanduser(), kit.data)
        emit(
            args,
            {"file": args.to, "code": kit.code, "node_id": kit.node_id, "users": kit.users},
            f"Recovery kit of node {kit.node_id} ({kit.users} local user(s)) written to {args.to}\n"
            f"Recovery code (keep it apart from the kit, e.g. in the admin's safe):\n\n    {kit.code}\n\n"
            "With both, `rallypoint recover` rebuilds this node on new hardware; its users still need their own secrets.",
        )

    await with_node(args, run)


async def cmd_recover(args: argparse.Namespace) -> None:
    import asyncio

    from appliance.recovery import recover_opened
    from appliance.recovery_kit import MAX_KIT_BYTES, KitKind, open_kit

    try:
        data = read_regular_file(Path(args.kit).expanduser(), MAX_KIT_BYTES)
    except OSError as exc:
        raise CliError(f"cannot read the recovery kit: {exc.strerror}") from exc
    code = args.code or os.environ.get("RALLYPOINT_RECOVERY_CODE")
    if not code:
        if not sys.stdin.isatty():
            raise CliError("no recovery code: pass --code or run in a terminal")
        code = input("Recovery code: ")
    home = Path(args.home).expanduser()
    passphrase = read_passphrase(args, confirm=True, prompt="New passphrase for this node: ")
    contents = await asyncio.to_thread(open_kit, data, code)
    async with await recover_opened(home, contents, passphrase, user_secret=read_user_secret(args)) as node:
        me = node.identity.whoami()
        result: dict[str, object] = {"home": str(home), "workspace": me.workspace_name, "node": me.node_name, "node_id": me.node_id, "user": me.user_name, "kit": str(contents.kind)}
        text = f"Node {me.node_name} ({me.node_id}) of {me.workspace_name} recovered into {home}, with an empty store\n"
        if contents.kind == KitKind.ENROLLMENT:
            result["users_not_in_kit"] = "users added on the node after its enrollment"
            text += (
                f"From the kit made at its enrollment: {me.user_name} is back (their secret is the one given now);\n"
                "users added on this node after its enrollment are not in this kit - an admin re-keys each with\n"
                "`rallypoint user reset-secret NAME` once the directory is back (a kit the node makes itself covers them).\n"
            )
        text += (
            "Refill it: `rallypoint serve` on the LAN with any peer, or by courier - export a bundle from here first (it tells each peer\n"
            "this node holds nothing), import it on a peer, then bring back that peer's bundle."
        )
        emit(args, result, text)


async def cmd_replace_node(args: argparse.Namespace) -> None:
    import asyncio

    from appliance import identity, recovery_kit
    from appliance.recovery_kit import MAX_KIT_BYTES

    try:
        data = read_regular_file(Path(args.kit).expanduser(), MAX_KIT_BYTES)
    except OSError as exc:
        raise CliError(f"cannot read the recovery kit: {exc.strerror}") from exc

    async def run(node: Node) -> None:
        kit = await node.custody.replace_node(data, args.code, reason=args.reason)
        write_atomically(Path(args.to).expanduser(), kit.data)
        # The lost node's kit now names its replacement: recovering the revoked identity from it is refused.
        marker = recovery_kit.replaced_marker(kit.replaces or "", kit.node_id, kit.made_at)
        unconsumed = await asyncio.to_thread(identity.overwrite_with_marker, Path(args.kit).expanduser(), marker)
        if unconsumed is not None:
            print(f"rallypoint: warning: the lost node's kit could not be overwritten ({unconsumed}): destroy it, its identity is revoked", file=sys.stderr)
        emit(
            args,
            {"file": args.to, "code": kit.code, "node_id": kit.node_id, "users": kit.users},
            f"The lost node is revoked; its new identity {kit.node_id} ({kit.users} user(s), their keys unchanged) is in {args.to}\n"
            f"Recovery code of the new identity:\n\n    {kit.code}\n\n"
            "On the new hardware: `rallypoint recover` with it, then sync with any peer.",
        )

    await with_node(args, run)


def _replace_node_arguments(parser: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    parser.add_argument("kit", metavar="KIT", help="the lost node's recovery kit")
    parser.add_argument("--code", required=True, help="its recovery code")
    parser.add_argument("--to", required=True, metavar="FILE", help="where to write the new identity's recovery kit")
    parser.add_argument("--reason", default="hardware taken", help="the revocation's reason (default: hardware taken)")


def _recovery_kit_arguments(parser: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    parser.add_argument("--to", required=True, metavar="FILE")


def _recover_arguments(parser: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    parser.add_argument("kit", metavar="KIT")
    parser.add_argument("--code", help="the recovery code (else $RALLYPOINT_RECOVERY_CODE, else a prompt)")


def _backup_arguments(parser: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    parser.add_argument("--to", metavar="DIR", help="the folder to write into (made 0700 if missing; its parent must exist)")
    parser.add_argument("--keep", metavar="AGE", help="then delete this node's backups there older than AGE (30d, 36h, 1d12h)")
    parser.add_argument("--keep-at-least", type=int, metavar="N", help="but keep the newest N verified ones whatever their age (default 7)")
    parser.add_argument("--scheduled", action="store_true", help="the daily backup into the folder `config --backup-dir` set, run as the node (the systemd timer)")
    parser.add_argument("--status", action="store_true", help="show the last backup, its check, and whether the daily one is overdue or failed")


def _restore_arguments(parser: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE")
    parser.add_argument("--at", metavar="TIME", help="the node as it was at TIME (ISO 8601, UTC unless it says otherwise): from a backup taken then or later")
    parser.add_argument("--log", metavar="FILE", help="with --at after the backup was taken: a later backup, or the live node.db, whose change log covers TIME")
    parser.add_argument("--read-only", action="store_true", help="a copy for inspection: it opens and reads, and refuses every write")


BACKUP = Command("backup", "admin: write a checked copy of this node's store into a folder (while it runs) and prune old ones; --status", cmd_backup, _backup_arguments)
RESTORE = Command("restore", "make an empty home the node a backup was taken of, now or as at a time (needs that node's passphrase)", cmd_restore, _restore_arguments)
RECOVERY_KIT = Command("recovery-kit", "write this node's recovery kit (its key, users' sealed keys, certificates) and print its code", cmd_recovery_kit, _recovery_kit_arguments)
RECOVER = Command("recover", "rebuild a lost node in an empty home from its recovery kit and code; peers then refill it", cmd_recover, _recover_arguments)
REPLACE_NODE = Command("replace-node", "admin: a node whose hardware was taken - revoke it and write a kit of a new identity for its users", cmd_replace_node, _replace_node_arguments)

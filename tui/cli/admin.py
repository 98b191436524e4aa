"""Commands of the workspace's administration: invitations, users and roles, nodes and their
revocation, node settings, the audit log."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from appliance import ids, policy
from appliance.errors import InvalidInput
from appliance.model import NodeTrail, TrailEntry, iso_utc
from tui.cli.output import EXIT_ERROR, emit
from tui.cli.parsing import Command
from tui.cli.unlock import given_secret, with_node
from tui.errors import CliError, CommandFailed, UsageError
from tui.files import enrollment_kit_path, write_atomically, write_kit
from tui.text import printable

if TYPE_CHECKING:  # each command imports what it uses when it runs: `--help` loads none of it
    from appliance.audit import AuditVerdict
    from appliance.node import Node
    from appliance.services.backup_runs import BackupSchedule


async def cmd_invite(args: argparse.Namespace) -> None:
    out = Path(args.out).expanduser().absolute()
    if args.recovery_kit and Path(args.recovery_kit).expanduser().absolute() == out:
        raise UsageError("the recovery kit and the enrollment file need two files (the kit stays with the admin)", "rallypoint invite", "")
    if args.recovery_kit and Path(args.recovery_kit).expanduser().absolute().parent == out.parent:
        print("rallypoint: warning: the recovery kit is beside the enrollment file: keep it off the stick that goes to the new node", file=sys.stderr)

    async def run(node: Node) -> None:
        enrollment = await node.enrollment.invite(args.node_name, args.user, args.role, with_kit=not args.no_recovery_kit)
        kit_path = None
        if enrollment.kit is not None:  # first: a node whose kit could not be written is not enrolled unknowingly
            kit_path = Path(args.recovery_kit).expanduser() if args.recovery_kit else enrollment_kit_path(node.home, args.node_name, enrollment.node_id)
            try:
                write_kit(kit_path, enrollment.kit.data)
            except OSError as exc:
                raise CliError(f"cannot write the recovery kit to {kit_path}: {exc.strerror or exc} (the invitation stands: invite again under a new name, or revoke it)") from exc
        write_atomically(Path(args.out), enrollment.data)
        result: dict[str, object] = {"file": args.out, "code": enrollment.code, "node_id": enrollment.node_id, "user": enrollment.user_name}
        text = f"Enrollment file written to {args.out}\nOne-time code (tell it to the new node's operator, never write it on the stick):\n\n    {enrollment.code}\n\nNew node id: {enrollment.node_id}"
        if enrollment.kit is not None and kit_path is not None:
            result["recovery_kit"] = {"file": str(kit_path), "code": enrollment.kit.code}
            text += (
                f"\n\nRecovery kit of {args.node_name} written to {kit_path}\nIts recovery code (for the admin alone: keep it apart from the kit):\n\n    {enrollment.kit.code}\n\n"
                f"Keep the kit off the stick that goes to {args.node_name}: if that node is lost, `rallypoint recover` with it brings back its identity and {enrollment.user_name}."
            )
        emit(args, result, text)

    await with_node(args, run)


NEW_SECRET = "RALLYPOINT_NEW_SECRET"  # a secret an admin gives a user (or --secret-file; else the node makes one up), or a user sets


def new_own_secret() -> str:
    """The secret a user sets for themselves: $RALLYPOINT_NEW_SECRET, or asked twice in a terminal."""
    given = given_secret(NEW_SECRET, None, "secret")
    if given is not None:
        return given
    if not sys.stdin.isatty():
        raise CliError("no new secret: set RALLYPOINT_NEW_SECRET or run in a terminal")
    first = getpass.getpass("New secret: ")
    if getpass.getpass("Repeat the new secret: ") != first:
        raise CliError("the secrets do not match")
    return first


async def cmd_user(args: argparse.Namespace) -> None:
    from appliance.services.signed_in import SignInStep

    async def run(node: Node) -> None:
        if args.user_command == "add":
            user = await node.directory.add_user(args.name, args.role, given_secret(NEW_SECRET, args.secret_file, "secret"))
            handover = f"\nOne-time secret for {user.name} (hand it over; they set their own at first sign-in):\n\n    {user.initial_secret}" if user.initial_secret else ""
            emit(args, {"user": user.name, "role": user.role, "key": user.key.hex(), "initial_secret": user.initial_secret}, f"User {user.name} added ({user.role}){handover}")
        elif args.user_command == "change-secret":
            await node.signin.change_secret(new_own_secret())
            emit(args, {"user": node.identity.whoami().user_name, "changed": True}, "Secret changed")
        elif args.user_command == "reset-secret":
            reset = await node.signin.reset_secret(args.name, given_secret(NEW_SECRET, args.secret_file, "secret"))
            rekeyed = f"\n{reset.user}'s old key was sealed under the forgotten secret: they have a new key (the old one is revoked)" if reset.rekeyed else ""
            emit(
                args,
                {"user": reset.user, "secret": reset.secret, "rekeyed": reset.rekeyed},
                f"One-time secret for {reset.user} (they set their own at next sign-in):\n\n    {reset.secret}{rekeyed}",
            )
        elif args.user_command == "role":
            user = await node.directory.set_role(args.name, args.role)
            emit(args, {"user": user.name, "role": user.role}, f"{user.name} is now {user.role}")
        elif args.user_command == "attributes":
            user = await node.directory.set_attributes(args.name, policy.parse_assignments(args.attributes))
            emit(args, {"user": user.name, "attributes": dict(user.attributes)}, f"{user.name}: {policy.describe(user.attributes)}")
        elif args.user_command == "revoke":
            target = node.directory.current.user_by_name(args.name)
            if target is None:
                raise InvalidInput(f"no user {args.name!r}")
            await node.directory.revoke(target.key, args.reason)
            emit(args, {"revoked": args.name}, f"{args.name} revoked")
        else:
            users = node.directory.users(revoked=True)
            emit(
                args,
                [{"name": u.name, "role": u.role, "key": u.key.hex(), "local": u.local, "revoked": u.revoked, "attributes": dict(u.attributes)} for u in users],
                "\n".join(
                    f"{printable(u.name):<20} {u.role:<9} {'revoked' if u.revoked else ''}{' (this node)' if u.local else ''}"
                    f"{'  ' + printable(', '.join(f'{k}={v}' for k, v in u.attributes)) if u.attributes else ''}".rstrip()
                    for u in users
                ),
            )

    allow = frozenset({SignInStep.CHANGE_SECRET, SignInStep.ENROL_MFA}) if args.user_command == "change-secret" else frozenset()
    await with_node(args, run, allow)


async def cmd_config(args: argparse.Namespace) -> None:
    schedule = _backup_schedule(args)

    async def run(node: Node) -> None:
        if args.max_attachment_bytes is not None:
            await node.blobs.set_max_blob_bytes(args.max_attachment_bytes)
        if args.console_lock is not None:
            await node.signin.set_console_lock(args.console_lock)
        if schedule is not None:
            await node.custody.set_backup_schedule(schedule or None)
        lock = await node.signin.console_lock_seconds()
        backup = await node.custody.backup_schedule()
        backup_json = None if backup is None else {"folder": str(backup.folder), "keep": backup.policy.text, "keep_at_least": backup.policy.keep_at_least}
        backup_text = "off" if backup is None else f"daily into {backup.folder}, keep {backup.policy.text} (at least {backup.policy.keep_at_least} verified)"
        emit(
            args,
            {"max_attachment_bytes": node.blobs.max_blob_bytes, "console_lock_seconds": lock, "scheduled_backup": backup_json},
            f"max attachment size: {node.blobs.max_blob_bytes} bytes\nconsole idle lock: {f'{lock} s' if lock else 'off'}\nscheduled backup: {printable(backup_text)}",
        )

    await with_node(args, run)


def _backup_schedule(args: argparse.Namespace) -> BackupSchedule | Literal[False] | None:
    """The scheduled backup `config` sets: a schedule, False to turn it off, None to leave it."""
    from appliance.retention import DEFAULT_KEEP_AT_LEAST, parse_keep
    from appliance.services.backup_runs import DEFAULT_KEEP, BackupSchedule

    if args.no_backup:
        if args.backup_dir or args.backup_keep or args.backup_keep_at_least is not None:
            raise UsageError("--no-backup takes no other backup option", "rallypoint config", "")
        return False
    if args.backup_dir is None:
        if args.backup_keep or args.backup_keep_at_least is not None:
            raise UsageError("--backup-keep and --backup-keep-at-least go with --backup-dir", "rallypoint config", "")
        return None
    policy = parse_keep(args.backup_keep or DEFAULT_KEEP, DEFAULT_KEEP_AT_LEAST if args.backup_keep_at_least is None else args.backup_keep_at_least)
    return BackupSchedule(Path(args.backup_dir).expanduser().absolute(), policy)


def _audit_verdict_text(verdict: AuditVerdict) -> str:
    if not verdict.ok:
        return f"AUDIT LOG BROKEN after {verdict.count} good entries: {verdict.problem}"
    text = f"audit log intact: {verdict.count} entries, signed by this node's key, head {verdict.head.hex()[:16]}"
    if verdict.legacy:
        text += f"\n{verdict.legacy} legacy entries (1-{verdict.legacy}) were written before entries were signed; their hash chain holds"
    if verdict.uncovered:
        text += f"\nthe last {verdict.uncovered} entries (failed unlocks) are not yet covered by a signature"
    return text


def _trail_verdict_text(trail: NodeTrail) -> str:
    who = f"{trail.node_id} {printable(trail.name)}{' (revoked)' if trail.revoked else ''}"
    if trail.ok:
        apart = f"; {len(trail.superseded)} entries superseded by a restore of the node, kept apart" if trail.superseded else ""
        return f"{who}: intact, {trail.count} entries, head {trail.head.hex()[:16]}{apart}"
    return f"{who}: BROKEN after {trail.verified} good entries: {printable(trail.problem or '')}"


def _since(text: str | None) -> int | None:
    """`--since`: an ISO 8601 time (UTC unless it says otherwise) or a date, as ms."""
    if text is None:
        return None
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidInput(f"--since {text!r} is not a time like 2026-12-07 or 2026-12-07T08:30:00Z") from exc
    return int((when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp() * 1000)


def export_line(trail: NodeTrail, entry: TrailEntry) -> str:
    """One entry as a JSON line anyone can re-verify offline: the detail is the exact text the
    hash covers; the origin's key is given beside its node id."""
    return json.dumps(
        {
            "origin": entry.origin,
            "origin_key": trail.node_key.hex(),
            "origin_name": trail.name,
            "seq": entry.seq,
            "at": iso_utc(entry.at),
            "at_ms": entry.at,
            "actor": entry.actor,
            "actor_name": entry.actor_name,
            "action": entry.action,
            "detail": entry.detail,
            "prev_hash": entry.prev_hash.hex(),
            "hash": entry.hash.hex(),
            "signature": None if entry.signature is None else entry.signature.hex(),
            "received_at": iso_utc(entry.received_at),
            "received_from": entry.received_from,
            "superseded_at": iso_utc(entry.superseded_at),
            "superseded_by": entry.superseded_by,
        },
        ensure_ascii=False,
        sort_keys=True,
    )


async def _audit_workspace(node: Node, args: argparse.Namespace) -> None:
    trails = await node.audit.workspace(node=args.node, since=_since(args.since))
    if args.node is not None and not trails:
        raise InvalidInput(f"no audit trail of a node {args.node!r} is held here")
    if getattr(args, "audit_command", None) == "export":
        for trail in trails:
            for entry in (*trail.entries, *trail.superseded):
                sys.stdout.write(export_line(trail, entry) + "\n")
        sys.stdout.flush()
        await node.audit.record_trail_export(trails, _since(args.since))
        return
    lines = []
    for trail in trails:
        lines.append(_trail_verdict_text(trail))
        lines.extend(
            f"  {e.seq:>6} {iso_utc(e.at)} {e.action:<18} {printable(e.actor_name or e.actor[:12]):<12} {printable(e.detail)}" for e in trail.entries[-args.limit :] if args.limit
        )
    emit(
        args,
        [_trail_json(trail) | {"entries": [json.loads(export_line(trail, e)) for e in trail.entries], "superseded": [json.loads(export_line(trail, e)) for e in trail.superseded]} for trail in trails],
        "\n".join(lines),
    )
    if not all(trail.ok for trail in trails):
        raise CommandFailed("the audit trail of " + ", ".join(t.node_id for t in trails if not t.ok) + " is broken", EXIT_ERROR, "AuditBroken")


def _trail_json(trail: NodeTrail) -> dict[str, object]:
    return {
        "node_id": trail.node_id,
        "node_key": trail.node_key.hex(),
        "name": trail.name,
        "this_node": trail.this_node,
        "revoked": trail.revoked,
        "ok": trail.ok,
        "entries_held": trail.count,
        "verified": trail.verified,
        "head": trail.head.hex(),
        "problem": trail.problem,
    }


async def cmd_audit(args: argparse.Namespace) -> None:
    async def run(node: Node) -> None:
        if args.verify:
            verdict = await node.audit.verify()
            others = [t for t in await node.audit.verify_all() if not t.this_node]
            emit(
                args,
                {
                    "ok": verdict.ok,
                    "entries": verdict.count,
                    "head": verdict.head.hex(),
                    "problem": verdict.problem,
                    "legacy": verdict.legacy,
                    "uncovered": verdict.uncovered,
                    "nodes": [_trail_json(t) for t in others],
                },
                "\n".join([_audit_verdict_text(verdict)] + [f"held of {_trail_verdict_text(t)}" for t in others]),
            )
            if not verdict.ok:
                raise CommandFailed(f"the audit log is broken after {verdict.count} good entries: {verdict.problem}", EXIT_ERROR, "AuditBroken")
            if broken := [t for t in others if not t.ok]:
                raise CommandFailed(f"the audit trail held of node {broken[0].node_id} is broken: {broken[0].problem}", EXIT_ERROR, "AuditBroken")
            return
        if args.workspace or args.node is not None or getattr(args, "audit_command", None) == "export":
            if not args.workspace and args.node is None:
                args.node = node.identity.node_id  # export without --workspace: this node's trail
            await _audit_workspace(node, args)
            return
        entries = await node.audit.entries(args.limit)
        emit(
            args,
            [{"seq": e.seq, "at": iso_utc(e.at), "actor": e.actor, "action": e.action, "detail": e.detail} for e in entries],
            "\n".join(
                f"{e.seq:>6} {iso_utc(e.at)} {e.action:<18} {printable(node.directory.user_name(e.actor)) if e.actor != '-' else '-':<12} {printable(json.dumps(e.detail, ensure_ascii=False))}"
                for e in entries
            ),
        )

    await with_node(args, run)


async def cmd_node(args: argparse.Namespace) -> None:
    async def run(node: Node) -> None:
        if args.node_command == "revoke":
            key = node.directory.node_key_of(args.node)
            await node.directory.revoke(key, args.reason)
            emit(args, {"revoked": ids.key_id(key)}, f"node {ids.key_id(key)} revoked; the revocation travels with the next bundles (run `rallypoint courier`)")
            return
        rows = node.directory.nodes()
        emit(
            args,
            [{"node_id": r.node_id, "name": r.name, "revoked": r.revoked, "this_node": r.this_node} for r in rows],
            "\n".join(f"{r.node_id}  {printable(r.name):<20} {'revoked' if r.revoked else 'this node' if r.this_node else ''}" for r in rows),
        )

    await with_node(args, run)


def _invite_arguments(parser: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    parser.add_argument("node_name", metavar="NODE_NAME")
    parser.add_argument("--user", required=True, help="the new node's first user")
    parser.add_argument("--role", default="member", choices=["admin", "member", "observer"])
    parser.add_argument("--out", required=True, metavar="FILE")
    kit = parser.add_mutually_exclusive_group()
    kit.add_argument(
        "--recovery-kit", metavar="FILE", help="where to write the new node's recovery kit (default: recovery-kits/ in this node's home, never beside the enrollment file)"
    )
    kit.add_argument("--no-recovery-kit", action="store_true", help="make no recovery kit (the node can then only be recovered from a kit it makes itself)")


def _user_arguments(parser: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    user_sub = parser.add_subparsers(dest="user_command", required=True, metavar="ACTION")
    q = user_sub.add_parser("add", parents=[common], help="admin: add a user whose key lives on this node, with a one-time secret")
    q.add_argument("name")
    q.add_argument("--role", default="member", choices=["admin", "member", "observer"])
    q.add_argument("--secret-file", metavar="FILE", help="their initial secret (else $RALLYPOINT_NEW_SECRET, else one is made up and printed)")
    q = user_sub.add_parser("reset-secret", parents=[common], help="admin: give a local user a one-time secret (a forgotten one, or a key from before per-user sign-in)")
    q.add_argument("name")
    q.add_argument("--secret-file", metavar="FILE", help="the one-time secret (else $RALLYPOINT_NEW_SECRET, else one is made up and printed)")
    user_sub.add_parser("change-secret", parents=[common], help="set your own secret ($RALLYPOINT_NEW_SECRET or a prompt)")
    q = user_sub.add_parser("role", parents=[common], help="admin: change a user's role")
    q.add_argument("name")
    q.add_argument("role", choices=["admin", "member", "observer"])
    q = user_sub.add_parser("attributes", parents=[common], help="admin: set a user's attributes (a new certificate); none clears them")
    q.add_argument("name")
    q.add_argument("attributes", nargs="*", metavar="KEY=VALUE")
    q = user_sub.add_parser("revoke", parents=[common], help="admin: revoke a user's certificate")
    q.add_argument("name")
    q.add_argument("--reason", default="revoked by an admin")
    user_sub.add_parser("list", parents=[common], help="list users")


def _config_arguments(parser: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-attachment-bytes", type=int)
    parser.add_argument("--console-lock", type=int, metavar="SECONDS", help="admin: lock the console after this many idle seconds (0: never)")
    parser.add_argument("--backup-dir", metavar="DIR", help="admin: the daily backup's folder (the appliance's timer runs `backup --scheduled`)")
    parser.add_argument("--backup-keep", metavar="AGE", help="admin: delete its backups older than AGE (30d, 36h, 1d12h; default 30d)")
    parser.add_argument("--backup-keep-at-least", type=int, metavar="N", help="admin: but keep the newest N verified ones (default 7)")
    parser.add_argument("--no-backup", action="store_true", help="admin: turn the daily backup off")


def _audit_filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workspace", action="store_true", help="every node's trail held here, each verified against its node's key")
    parser.add_argument("--node", metavar="NODE", help="one node's trail (node id or name)")
    parser.add_argument("--since", metavar="TIME", help="entries from TIME on (ISO 8601, UTC unless it says otherwise)")


def _audit_arguments(parser: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    parser.add_argument("--verify", action="store_true", help="verify this node's chain and every other node's trail held here")
    parser.add_argument("--limit", type=int, default=200)
    _audit_filters(parser)
    sub = parser.add_subparsers(dest="audit_command", required=False, metavar="ACTION")
    q = sub.add_parser("export", parents=[common], help="write the trail as JSON lines (one entry a line) that anyone can re-verify offline")
    _audit_filters(q)


def _node_arguments(parser: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    node_sub = parser.add_subparsers(dest="node_command", required=True, metavar="ACTION")
    q = node_sub.add_parser("revoke", parents=[common], help="admin: revoke a node; it wipes itself when the revocation reaches it")
    q.add_argument("node", metavar="NODE", help="node id or name")
    q.add_argument("--reason", default="revoked by an admin")
    node_sub.add_parser("list", parents=[common], help="list the workspace's nodes")


INVITE = Command("invite", "admin: write an enrollment file for a new node and its recovery kit; print both codes", cmd_invite, _invite_arguments)
USER = Command("user", "users and roles", cmd_user, _user_arguments)
CONFIG = Command("config", "show or (admin) change node settings", cmd_config, _config_arguments)
AUDIT = Command("audit", "show or verify the audit log", cmd_audit, _audit_arguments)
NODE = Command("node", "nodes of the workspace", cmd_node, _node_arguments)

"""Commands of the workspace's administration: invitations, users and roles, nodes and their
revocation, node settings, the audit log."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from appliance import ids
from appliance.errors import InvalidInput
from appliance.model import iso_utc
from tui.cli.output import EXIT_ERROR, emit
from tui.cli.parsing import Command
from tui.cli.unlock import with_node
from tui.errors import CliError, CommandFailed
from tui.files import write_atomically
from tui.text import printable

if TYPE_CHECKING:  # each command imports what it uses when it runs: `--help` loads none of it
    from appliance.audit import AuditVerdict
    from appliance.node import Node


async def cmd_invite(args: argparse.Namespace) -> None:
    async def run(node: Node) -> None:
        enrollment = await node.enrollment.invite(args.node_name, args.user, args.role)
        write_atomically(Path(args.out), enrollment.data)
        emit(
            args,
            {"file": args.out, "code": enrollment.code, "node_id": enrollment.node_id, "user": enrollment.user_name},
            f"Enrollment file written to {args.out}\nOne-time code (tell it to the new node's operator, never write it on the stick):\n\n    {enrollment.code}\n\nNew node id: {enrollment.node_id}",
        )

    await with_node(args, run)


def given_secret(args: argparse.Namespace) -> str | None:
    """A secret an admin gives a user: $RALLYPOINT_NEW_SECRET or --secret-file; None: the node makes one up."""
    if os.environ.get("RALLYPOINT_NEW_SECRET"):
        return os.environ["RALLYPOINT_NEW_SECRET"]
    if args.secret_file:
        try:
            return Path(args.secret_file).read_text().rstrip("\r\n")
        except OSError as exc:
            raise CliError(f"cannot read secret file: {exc.strerror}") from exc
    return None


def new_own_secret() -> str:
    """The secret a user sets for themselves: $RALLYPOINT_NEW_SECRET, or asked twice in a terminal."""
    if os.environ.get("RALLYPOINT_NEW_SECRET"):
        return os.environ["RALLYPOINT_NEW_SECRET"]
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
            user = await node.directory.add_user(args.name, args.role, given_secret(args))
            handover = f"\nOne-time secret for {user.name} (hand it over; they set their own at first sign-in):\n\n    {user.initial_secret}" if user.initial_secret else ""
            emit(args, {"user": user.name, "role": user.role, "key": user.key.hex(), "initial_secret": user.initial_secret}, f"User {user.name} added ({user.role}){handover}")
        elif args.user_command == "change-secret":
            await node.signin.change_secret(new_own_secret())
            emit(args, {"user": node.identity.whoami().user_name, "changed": True}, "Secret changed")
        elif args.user_command == "reset-secret":
            reset = await node.signin.reset_secret(args.name, given_secret(args))
            rekeyed = f"\n{reset.user}'s old key was sealed under the forgotten secret: they have a new key (the old one is revoked)" if reset.rekeyed else ""
            emit(
                args,
                {"user": reset.user, "secret": reset.secret, "rekeyed": reset.rekeyed},
                f"One-time secret for {reset.user} (they set their own at next sign-in):\n\n    {reset.secret}{rekeyed}",
            )
        elif args.user_command == "role":
            user = await node.directory.set_role(args.name, args.role)
            emit(args, {"user": user.name, "role": user.role}, f"{user.name} is now {user.role}")
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
                [{"name": u.name, "role": u.role, "key": u.key.hex(), "local": u.local, "revoked": u.revoked} for u in users],
                "\n".join(f"{printable(u.name):<20} {u.role:<9} {'revoked' if u.revoked else ''}{' (this node)' if u.local else ''}".rstrip() for u in users),
            )

    allow = frozenset({SignInStep.CHANGE_SECRET, SignInStep.ENROL_MFA}) if args.user_command == "change-secret" else frozenset()
    await with_node(args, run, allow)


async def cmd_config(args: argparse.Namespace) -> None:
    async def run(node: Node) -> None:
        if args.max_attachment_bytes is not None:
            await node.blobs.set_max_blob_bytes(args.max_attachment_bytes)
        if args.console_lock is not None:
            await node.signin.set_console_lock(args.console_lock)
        lock = await node.signin.console_lock_seconds()
        emit(
            args,
            {"max_attachment_bytes": node.blobs.max_blob_bytes, "console_lock_seconds": lock},
            f"max attachment size: {node.blobs.max_blob_bytes} bytes\nconsole idle lock: {f'{lock} s' if lock else 'off'}",
        )

    await with_node(args, run)


def _audit_verdict_text(verdict: AuditVerdict) -> str:
    if not verdict.ok:
        return f"AUDIT LOG BROKEN after {verdict.count} good entries: {verdict.problem}"
    text = f"audit log intact: {verdict.count} entries, signed by this node's key, head {verdict.head.hex()[:16]}"
    if verdict.legacy:
        text += f"\n{verdict.legacy} legacy entries (1-{verdict.legacy}) were written before entries were signed; their hash chain holds"
    if verdict.uncovered:
        text += f"\nthe last {verdict.uncovered} entries (failed unlocks) are not yet covered by a signature"
    return text


async def cmd_audit(args: argparse.Namespace) -> None:
    async def run(node: Node) -> None:
        if args.verify:
            verdict = await node.audit.verify()
            emit(
                args,
                {"ok": verdict.ok, "entries": verdict.count, "head": verdict.head.hex(), "problem": verdict.problem, "legacy": verdict.legacy, "uncovered": verdict.uncovered},
                _audit_verdict_text(verdict),
            )
            if not verdict.ok:
                raise CommandFailed(f"the audit log is broken after {verdict.count} good entries: {verdict.problem}", EXIT_ERROR, "AuditBroken")
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
    q = user_sub.add_parser("revoke", parents=[common], help="admin: revoke a user's certificate")
    q.add_argument("name")
    q.add_argument("--reason", default="revoked by an admin")
    user_sub.add_parser("list", parents=[common], help="list users")


def _config_arguments(parser: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-attachment-bytes", type=int)
    parser.add_argument("--console-lock", type=int, metavar="SECONDS", help="admin: lock the console after this many idle seconds (0: never)")


def _audit_arguments(parser: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    parser.add_argument("--verify", action="store_true")
    parser.add_argument("--limit", type=int, default=200)


def _node_arguments(parser: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    node_sub = parser.add_subparsers(dest="node_command", required=True, metavar="ACTION")
    q = node_sub.add_parser("revoke", parents=[common], help="admin: revoke a node; it wipes itself when the revocation reaches it")
    q.add_argument("node", metavar="NODE", help="node id or name")
    q.add_argument("--reason", default="revoked by an admin")
    node_sub.add_parser("list", parents=[common], help="list the workspace's nodes")


INVITE = Command("invite", "admin: write an enrollment file for a new node and print its one-time code", cmd_invite, _invite_arguments)
USER = Command("user", "users and roles", cmd_user, _user_arguments)
CONFIG = Command("config", "show or (admin) change node settings", cmd_config, _config_arguments)
AUDIT = Command("audit", "show or verify the audit log", cmd_audit, _audit_arguments)
NODE = Command("node", "nodes of the workspace", cmd_node, _node_arguments)

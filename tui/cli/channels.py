"""Commands of channels and direct conversations: create, list, export, members and channel
admins, rename, purpose, archive, read-only; `dm` starts or lists direct conversations.
A channel is named by name, by `name~idstart` when several share the name, by its id, or a
direct conversation by `@user[,user...]`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from appliance import policy
from tui.cli.output import emit
from tui.cli.parsing import Command
from tui.cli.unlock import with_node
from tui.files import write_atomically
from tui.text import printable

if TYPE_CHECKING:  # each command imports what it uses when it runs: `--help` loads none of it
    from appliance.model import ChannelSummary
    from appliance.node import Node

CHANNEL_HELP = "a channel's name, NAME~IDSTART when several share it, its id, or @USER[,USER] for a direct conversation"


def _summary_json(c: ChannelSummary) -> dict[str, object]:
    return {
        "id": c.channel_id,
        "name": c.name,
        "label": c.label,
        "kind": c.kind,
        "purpose": c.purpose,
        "unread": c.unread,
        "mentions": c.mentions,
        "archived": c.archived,
        "read_only": c.read_only,
        "admins": list(c.admins),
        "created_by": c.created_by,
        "members": list(c.members),
        "requires": dict(c.requires),
    }


def _summary_line(c: ChannelSummary) -> str:
    flags = [flag for flag, on in (("archived", c.archived), ("read-only", c.read_only)) if on]
    line = f"{printable(c.label):<32} {c.kind:<8} {c.unread:>5} unread" + (f", {c.mentions} mentions" if c.mentions else "")
    return line + (f"  [{', '.join(flags)}]" if flags else "") + (f"  {printable(c.purpose)}" if c.purpose else "")


async def _list(args: argparse.Namespace, node: Node) -> None:
    channels = await node.views.list_channels()
    rooms = [c for c in channels if not c.is_direct]
    direct = [c for c in channels if c.is_direct]
    text = "\n".join(_summary_line(c) for c in rooms) or "no channels yet: rallypoint channel create NAME"
    if direct:
        text += "\ndirect messages:\n" + "\n".join(_summary_line(c) for c in direct)
    emit(args, [_summary_json(c) for c in channels], text)


async def cmd_channel(args: argparse.Namespace) -> None:
    async def run(node: Node) -> None:
        admin = node.chat.admin
        action = args.channel_command
        if action == "create":
            channel = await node.chat.create_channel(args.name, private=args.private, purpose=args.purpose)
            emit(args, {"id": channel.channel_id, "name": channel.name, "kind": channel.kind}, f"#{channel.name} created ({channel.kind})")
        elif action == "add-member":
            await admin.add_member(args.name, args.user)
            emit(args, {"channel": args.name, "added": args.user}, f"{args.user} added to {args.name}")
        elif action == "remove-member":
            await admin.remove_member(args.name, args.user)
            emit(args, {"channel": args.name, "removed": args.user}, f"{args.user} removed from {args.name}")
        elif action == "admin":
            await admin.set_channel_admin(args.name, args.user, not args.revoke)
            emit(args, {"channel": args.name, "user": args.user, "channel_admin": not args.revoke}, f"{args.user} is {'no longer ' if args.revoke else ''}a channel admin of {args.name}")
        elif action == "members":
            members = await admin.members(args.name)
            emit(args, [{"name": m.name, "user_key": m.user_key, "role": m.role} for m in members], "\n".join(f"{printable(m.name):<24} {m.role}" for m in members) or "no members")
        elif action == "rename":
            await admin.rename(args.name, args.new_name)
            emit(args, {"channel": args.name, "renamed": args.new_name}, f"{args.name} is now #{args.new_name.lstrip('#').lower()}")
        elif action == "purpose":
            await admin.set_purpose(args.name, args.purpose)
            emit(args, {"channel": args.name, "purpose": args.purpose}, "purpose set")
        elif action == "archive":
            await admin.set_archived(args.name, not args.undo)
            emit(args, {"channel": args.name, "archived": not args.undo}, f"{args.name} {'unarchived' if args.undo else 'archived'}")
        elif action == "read-only":
            await admin.set_read_only(args.name, not args.off)
            emit(args, {"channel": args.name, "read_only": not args.off}, f"{args.name} is {'writable again' if args.off else 'read-only: only its channel admins post'}")
        elif action == "require":
            required = policy.parse_assignments(args.attributes)
            await admin.set_requirements(args.name, required)
            emit(args, {"channel": args.name, "requires": dict(required)}, f"{args.name} requires {policy.describe(required)}")
        elif action == "export":
            documents = await node.replica.export_channel(args.name)
            out = Path(args.automerge).expanduser()
            out.mkdir(parents=True, exist_ok=True)
            written = []
            for doc_id, data in documents.items():
                path = out / (doc_id.replace("/", "_") + ".automerge")
                write_atomically(path, data, 0o644)
                written.append({"document": doc_id, "file": str(path), "bytes": len(data)})
            emit(args, written, "\n".join(f"{w['file']}  ({w['bytes']} bytes)" for w in written))
        else:
            await _list(args, node)

    await with_node(args, run)


async def cmd_dm(args: argparse.Namespace) -> None:
    async def run(node: Node) -> None:
        if not args.users:
            direct = [c for c in await node.views.list_channels() if c.is_direct]
            emit(args, [_summary_json(c) for c in direct], "\n".join(_summary_line(c) for c in direct) or "no direct messages yet: rallypoint dm USER")
            return
        head = await node.chat.admin.start_direct(args.users)
        spec = "@" + ",".join(user.lstrip("@") for user in args.users)
        if args.message is not None:
            message_id = await node.chat.post(head.channel_id, args.message)
            emit(args, {"id": head.channel_id, "with": args.users, "message": message_id}, message_id)
        else:
            emit(args, {"id": head.channel_id, "with": args.users}, f"direct conversation {spec} ({head.channel_id}): rallypoint read {spec} / rallypoint post {spec} TEXT")

    await with_node(args, run)


def _named(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help=CHANNEL_HELP)


def _channel_arguments(parser: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    channel_sub = parser.add_subparsers(dest="channel_command", required=True, metavar="ACTION")
    q = channel_sub.add_parser("create", parents=[common], help="create a channel (you are its channel admin)")
    q.add_argument("name")
    q.add_argument("--private", action="store_true")
    q.add_argument("--purpose", default="")
    channel_sub.add_parser("list", parents=[common], help="list channels and direct messages with unread counts")
    q = channel_sub.add_parser("export", parents=[common], help="write the channel's raw Automerge documents to a directory")
    _named(q)
    q.add_argument("--automerge", required=True, metavar="DIR")
    q = channel_sub.add_parser("members", parents=[common], help="who is in a channel, channel admins first")
    _named(q)
    for action, text in (("add-member", "add a user to a private channel"), ("remove-member", "take a user out of a channel (their node gets nothing new of it)")):
        q = channel_sub.add_parser(action, parents=[common], help=f"channel admin: {text}")
        _named(q)
        q.add_argument("user")
    q = channel_sub.add_parser("admin", parents=[common], help="channel admin: make a user a channel admin (--revoke: a plain member again)")
    _named(q)
    q.add_argument("user")
    q.add_argument("--revoke", action="store_true")
    q = channel_sub.add_parser("rename", parents=[common], help="channel admin: rename a channel")
    _named(q)
    q.add_argument("new_name")
    q = channel_sub.add_parser("purpose", parents=[common], help="channel admin: set a channel's purpose")
    _named(q)
    q.add_argument("purpose")
    q = channel_sub.add_parser("archive", parents=[common], help="channel admin: archive a channel (--undo: bring it back)")
    _named(q)
    q.add_argument("--undo", action="store_true")
    q = channel_sub.add_parser("require", parents=[common], help="channel admin: the attributes a user needs to be in it, read it, or receive it; none clears")
    _named(q)
    q.add_argument("attributes", nargs="*", metavar="KEY=VALUE")
    q = channel_sub.add_parser("read-only", parents=[common], help="channel admin: only channel admins post (--off: everyone again); all may react")
    _named(q)
    q.add_argument("--off", action="store_true")


def _dm_arguments(parser: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    parser.add_argument("users", nargs="*", metavar="USER", help="1 to 7 other users; none: list your direct conversations")
    parser.add_argument("-m", "--message", metavar="TEXT", help="post TEXT in the conversation")


CHANNEL = Command("channel", "create, list, export and run channels (members, channel admins, rename, archive, read-only)", cmd_channel, _channel_arguments)
DM = Command("dm", "start a direct conversation with 1 to 7 users (and post with -m), or list yours", cmd_dm, _dm_arguments)

"""Commands of the conversation (channels themselves: tui/cli/channels.py): posting, reading a page, editing, deleting, reacting,
searching, saving an attachment."""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from appliance import ids
from appliance.model import MAX_READ_PAGE, iso_utc
from tui.cli.output import emit
from tui.cli.parsing import Command
from tui.cli.unlock import with_node
from tui.errors import CliError
from tui.files import write_atomically
from tui.text import printable

if TYPE_CHECKING:  # each command imports what it uses when it runs: `--help` loads none of it
    from appliance.model import MessageView
    from appliance.node import Attachment, Node


def format_message(message: MessageView) -> str:
    when = (iso_utc(message.created_at) or "")[:16].replace("T", " ")
    head = f"[{message.id}] {when} {printable(message.author)}"
    if message.deleted:
        return f"{head}: (message deleted)"
    lines = [f"{head}: {printable(message.text, multiline=True)}" + (" (edited)" if message.edited_at else "")]
    for file in message.files:
        lines.append(f"    attachment: {printable(file.name)} ({file.size} bytes, {file.hash[:12]})")
    if message.reactions:
        lines.append("    " + "  ".join(f"{printable(e)} {', '.join(printable(u) for u in users)}" for e, users in message.reactions.items()))
    if message.reply_count:
        lines.append(f"    ↳ {message.reply_count} repl{'y' if message.reply_count == 1 else 'ies'}")
    if message.tampered:
        lines.append("    warning: someone other than the author altered this message; the alteration is ignored")
    return "\n".join(lines)


def _read_attachment(path: str, limit: int) -> Attachment:
    from appliance.node import Attachment

    file = Path(path).expanduser()
    try:
        if not file.is_file():
            raise CliError(f"{path}: not a regular file")
        size = file.stat().st_size
        if size > limit:
            raise CliError(f"{path} is {size} bytes; the attachment limit is {limit}")
        return Attachment(file.name, file.read_bytes())
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from exc


async def cmd_post(args: argparse.Namespace) -> None:
    async def run(node: Node) -> None:
        attachments = [_read_attachment(p, node.blobs.max_blob_bytes) for p in args.attach or []]
        message_id = await node.chat.post(args.channel, args.text, reply_to=args.reply_to, attachments=attachments)
        emit(args, {"id": message_id}, message_id)

    await with_node(args, run)


async def cmd_read(args: argparse.Namespace) -> None:
    if args.before is not None and not ids.is_message_id(args.before):
        raise CliError(f"--before {args.before!r}: not a message id")

    async def run(node: Node) -> None:
        messages = await node.views.read(args.channel, thread=args.thread, limit=args.limit, before=args.before)
        older = bool(messages) and bool(await node.views.read(args.channel, thread=args.thread, limit=1, before=messages[0].id, mark_read=False))
        next_before = messages[0].id if older else None
        listed = [m.as_json() for m in messages]
        emit(args, {"messages": listed, "next_before": next_before} if args.page else listed, "\n".join(format_message(m) for m in messages) or "no messages")
        if next_before is not None and not (args.json and args.page):  # never a silent cut: say how to read on
            thread = f" --thread {args.thread}" if args.thread else ""
            print(f"rallypoint: older messages not shown; the page before this one: rallypoint read {args.channel}{thread} --before {next_before}", file=sys.stderr)

    await with_node(args, run)


async def cmd_edit(args: argparse.Namespace) -> None:
    async def run(node: Node) -> None:
        await node.chat.edit(args.id, args.text)
        emit(args, {"id": args.id, "edited": True}, "edited")

    await with_node(args, run)


async def cmd_delete(args: argparse.Namespace) -> None:
    async def run(node: Node) -> None:
        await node.chat.delete(args.id)
        emit(args, {"id": args.id, "deleted": True}, "deleted")

    await with_node(args, run)


async def cmd_react(args: argparse.Namespace) -> None:
    async def run(node: Node) -> None:
        await node.chat.react(args.id, args.emoji, remove=args.remove)
        emit(args, {"id": args.id, "emoji": args.emoji, "on": not args.remove}, "reaction removed" if args.remove else "reacted")

    await with_node(args, run)


async def cmd_search(args: argparse.Namespace) -> None:
    async def run(node: Node) -> None:
        found = await node.views.search(args.query, limit=args.limit)
        emit(args, [m.as_json() for m in found], "\n".join(f"#{printable(m.channel)} " + format_message(m) for m in found) or "nothing found")

    await with_node(args, run)


async def cmd_file(args: argparse.Namespace) -> None:
    async def run(node: Node) -> None:
        data = await node.blobs.blob(args.hash)
        write_atomically(Path(args.out), data, 0o644)
        emit(args, {"hash": hashlib.sha256(data).hexdigest(), "file": args.out, "bytes": len(data)}, f"{len(data)} bytes written to {args.out}")

    await with_node(args, run)


def _page_size(text: str) -> int:
    try:
        size = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 1 <= size <= MAX_READ_PAGE:
        raise argparse.ArgumentTypeError(f"a page holds 1 to {MAX_READ_PAGE:,} messages; read older ones with --before")
    return size


def _post_arguments(parser: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    parser.add_argument("channel")
    parser.add_argument("text")
    parser.add_argument("--reply-to", metavar="ID")
    parser.add_argument("--attach", action="append", metavar="PATH")


def _read_arguments(parser: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    parser.add_argument("channel")
    parser.add_argument("--thread", metavar="ID")
    parser.add_argument("--limit", type=_page_size, default=50, metavar="N", help=f"messages on the page (default 50, at most {MAX_READ_PAGE:,})")
    parser.add_argument("--before", metavar="ID", help="the page of messages older than this one (stderr names it when a page leaves older messages out)")
    parser.add_argument("--page", action="store_true", help='with --json: {"messages": [...], "next_before": ID or null} instead of the bare list')


def _edit_arguments(parser: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    parser.add_argument("id")
    parser.add_argument("text")


def _delete_arguments(parser: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    parser.add_argument("id")


def _react_arguments(parser: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    parser.add_argument("id")
    parser.add_argument("emoji")
    parser.add_argument("--remove", action="store_true")


def _search_arguments(parser: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    parser.add_argument("query")
    parser.add_argument("--limit", type=int, default=50)


def _file_arguments(parser: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    parser.add_argument("hash", help="the hash, or any unique start of it of 8 hex digits or more (`read` shows 12)")
    parser.add_argument("--out", required=True, metavar="PATH")


POST = Command("post", "post a message (prints its id)", cmd_post, _post_arguments)
READ = Command("read", "read a channel or a thread, oldest first: the newest page, or the one before --before", cmd_read, _read_arguments)
EDIT = Command("edit", "edit your message", cmd_edit, _edit_arguments)
DELETE = Command("delete", "delete a message (yours, or any as admin)", cmd_delete, _delete_arguments)
REACT = Command("react", "add or remove a reaction", cmd_react, _react_arguments)
SEARCH = Command("search", "full-text search across the channels you can read", cmd_search, _search_arguments)
FILE = Command("file", "save an attachment by its hash", cmd_file, _file_arguments)

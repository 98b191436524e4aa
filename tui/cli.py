"""The `rallypoint` command. Every subcommand takes --home, --passphrase-file, --as and --json;
human text by default, stable JSON with --json; any error is one line on stderr and a
non-zero exit status."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import socket
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from appliance import __version__
from appliance.errors import InvalidInput, NotInitialised, RallypointError
from appliance.model import MessageView, iso_utc
from appliance.node import Attachment, Node
from tui.text import printable

EXIT_ERROR = 1
EXIT_USAGE = 2


class CliError(RallypointError):
    """A problem with how the command was called (missing passphrase, unreadable file)."""


def default_home() -> Path:
    if os.environ.get("RALLYPOINT_HOME"):
        return Path(os.environ["RALLYPOINT_HOME"]).expanduser()
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "rallypoint"


def read_passphrase(args: argparse.Namespace, *, confirm: bool = False, prompt: str = "Passphrase: ") -> str:
    if os.environ.get("RALLYPOINT_PASSPHRASE"):
        return os.environ["RALLYPOINT_PASSPHRASE"]
    if args.passphrase_file:
        try:
            return Path(args.passphrase_file).read_text().rstrip("\r\n")
        except OSError as exc:
            raise CliError(f"cannot read passphrase file: {exc.strerror}") from exc
    if not sys.stdin.isatty():
        raise CliError("no passphrase: set RALLYPOINT_PASSPHRASE, use --passphrase-file, or run in a terminal")
    first = getpass.getpass(prompt)
    if confirm and getpass.getpass("Repeat passphrase: ") != first:
        raise CliError("the passphrases do not match")
    return first


def write_atomically(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Temp file, fsync, rename: a crash leaves the old file or the new one, never half."""
    path = path.expanduser()
    directory = path.parent if str(path.parent) else Path(".")
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, mode)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def emit(args: argparse.Namespace, payload: Any, human: str) -> None:
    if args.json:
        print(json.dumps(payload, ensure_ascii=False, sort_keys=True))
    elif human:
        print(human)


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


async def _with_node(args: argparse.Namespace, action: Callable[[Node], Awaitable[None]]) -> None:
    home = Path(args.home).expanduser()
    if not Node.exists(home):
        raise NotInitialised(f"no node in {home}: run `rallypoint init` or `rallypoint join` first")
    async with await Node.open(home, read_passphrase(args), as_user=args.as_user) as node:
        await action(node)


# --- commands -------------------------------------------------------------------------


async def cmd_init(args: argparse.Namespace) -> None:
    home = Path(args.home).expanduser()
    node_name = args.node_name or socket.gethostname().split(".")[0] or "node"
    passphrase = read_passphrase(args, confirm=True, prompt="New passphrase for this node: ")
    async with await Node.init(home, workspace_name=args.workspace, user_name=args.user, node_name=node_name, passphrase=passphrase) as node:
        me = node.whoami()
        emit(
            args,
            {"workspace": me.workspace_name, "workspace_id": me.workspace_id, "node": me.node_name, "node_id": me.node_id, "user": me.user_name, "home": str(home)},
            f"Workspace {me.workspace_name} ({me.workspace_id}) created in {home}\nNode {me.node_name}: {me.node_id}\nYou are {me.user_name} (admin)",
        )


async def cmd_invite(args: argparse.Namespace) -> None:
    async def run(node: Node) -> None:
        enrollment = await node.invite(args.node_name, args.user, args.role)
        write_atomically(Path(args.out), enrollment.data)
        emit(
            args,
            {"file": args.out, "code": enrollment.code, "node_id": enrollment.node_id, "user": enrollment.user_name},
            f"Enrollment file written to {args.out}\nOne-time code (tell it to the new node's operator, never write it on the stick):\n\n    {enrollment.code}\n\nNew node id: {enrollment.node_id}",
        )

    await _with_node(args, run)


async def cmd_join(args: argparse.Namespace) -> None:
    try:
        data = Path(args.file).read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read enrollment file: {exc.strerror}") from exc
    code = args.code or os.environ.get("RALLYPOINT_ENROLLMENT_CODE")
    if not code:
        if not sys.stdin.isatty():
            raise CliError("no enrollment code: pass --code or run in a terminal")
        code = input("One-time code: ")
    passphrase = read_passphrase(args, confirm=True, prompt="New passphrase for this node: ")
    async with await Node.join(Path(args.home).expanduser(), data, code, passphrase) as node:
        me = node.whoami()
        emit(
            args,
            {"workspace": me.workspace_name, "workspace_id": me.workspace_id, "node": me.node_name, "node_id": me.node_id, "user": me.user_name, "role": me.role},
            f"Joined workspace {me.workspace_name} ({me.workspace_id})\nNode {me.node_name}: {me.node_id}\nYou are {me.user_name} ({me.role})",
        )


async def cmd_whoami(args: argparse.Namespace) -> None:
    async def run(node: Node) -> None:
        me = node.whoami()
        emit(
            args,
            {
                "workspace": me.workspace_name,
                "workspace_id": me.workspace_id,
                "node": me.node_name,
                "node_id": me.node_id,
                "user": me.user_name,
                "user_key": me.user_key.hex(),
                "role": me.role,
                "holds_workspace_key": me.holds_workspace_key,
            },
            f"workspace  {me.workspace_name}  {me.workspace_id}\nnode       {me.node_name}  {me.node_id}\nuser       {me.user_name} ({me.role})",
        )

    await _with_node(args, run)


async def cmd_user(args: argparse.Namespace) -> None:
    async def run(node: Node) -> None:
        if args.user_command == "add":
            user = await node.add_user(args.name, args.role)
            emit(args, {"user": user.name, "role": user.role, "key": user.key.hex()}, f"User {user.name} added ({user.role})")
        elif args.user_command == "role":
            user = await node.set_role(args.name, args.role)
            emit(args, {"user": user.name, "role": user.role}, f"{user.name} is now {user.role}")
        elif args.user_command == "revoke":
            target = node.directory.user_by_name(args.name)
            if target is None:
                raise InvalidInput(f"no user {args.name!r}")
            await node.revoke(target.key, args.reason)
            emit(args, {"revoked": args.name}, f"{args.name} revoked")
        else:
            users = node.users()
            emit(
                args,
                [{"name": u.name, "role": u.role, "key": u.key.hex(), "local": u.local} for u in users],
                "\n".join(f"{printable(u.name):<20} {u.role:<9} {'(this node)' if u.local else ''}" for u in users),
            )

    await _with_node(args, run)


async def cmd_channel(args: argparse.Namespace) -> None:
    async def run(node: Node) -> None:
        if args.channel_command == "create":
            channel = await node.create_channel(args.name, private=args.private, purpose=args.purpose)
            emit(args, {"id": channel.channel_id, "name": channel.name, "kind": channel.kind}, f"#{channel.name} created ({channel.kind})")
        elif args.channel_command == "add-member":
            await node.add_member(args.name, args.user)
            emit(args, {"channel": args.name, "added": args.user}, f"{args.user} added to #{args.name}")
        elif args.channel_command == "export":
            documents = await node.export_channel(args.name)
            out = Path(args.automerge).expanduser()
            out.mkdir(parents=True, exist_ok=True)
            written = []
            for doc_id, data in documents.items():
                path = out / (doc_id.replace("/", "_") + ".automerge")
                write_atomically(path, data, 0o644)
                written.append({"document": doc_id, "file": str(path), "bytes": len(data)})
            emit(args, written, "\n".join(f"{w['file']}  ({w['bytes']} bytes)" for w in written))
        else:
            channels = await node.list_channels()
            emit(
                args,
                [
                    {"id": c.channel_id, "name": c.name, "kind": c.kind, "purpose": c.purpose, "unread": c.unread, "mentions": c.mentions, "archived": c.archived}
                    for c in channels
                ],
                "\n".join(
                    f"#{printable(c.name):<24} {c.kind:<8} {c.unread:>5} unread" + (f", {c.mentions} mentions" if c.mentions else "") + (f"  {printable(c.purpose)}" if c.purpose else "")
                    for c in channels
                )
                or "no channels yet: rallypoint channel create NAME",
            )

    await _with_node(args, run)


def _read_attachment(path: str, limit: int) -> Attachment:
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
        attachments = [_read_attachment(p, node.max_blob_bytes) for p in args.attach or []]
        message_id = await node.post(args.channel, args.text, reply_to=args.reply_to, attachments=attachments)
        emit(args, {"id": message_id}, message_id)

    await _with_node(args, run)


async def cmd_read(args: argparse.Namespace) -> None:
    async def run(node: Node) -> None:
        messages = await node.read(args.channel, thread=args.thread, limit=args.limit)
        emit(args, [m.as_json() for m in messages], "\n".join(format_message(m) for m in messages) or "no messages")

    await _with_node(args, run)


async def cmd_edit(args: argparse.Namespace) -> None:
    async def run(node: Node) -> None:
        await node.edit(args.id, args.text)
        emit(args, {"id": args.id, "edited": True}, "edited")

    await _with_node(args, run)


async def cmd_delete(args: argparse.Namespace) -> None:
    async def run(node: Node) -> None:
        await node.delete(args.id)
        emit(args, {"id": args.id, "deleted": True}, "deleted")

    await _with_node(args, run)


async def cmd_react(args: argparse.Namespace) -> None:
    async def run(node: Node) -> None:
        await node.react(args.id, args.emoji, remove=args.remove)
        emit(args, {"id": args.id, "emoji": args.emoji, "on": not args.remove}, "reaction removed" if args.remove else "reacted")

    await _with_node(args, run)


async def cmd_search(args: argparse.Namespace) -> None:
    async def run(node: Node) -> None:
        found = await node.search(args.query, limit=args.limit)
        emit(args, [m.as_json() for m in found], "\n".join(f"#{printable(m.channel)} " + format_message(m) for m in found) or "nothing found")

    await _with_node(args, run)


async def cmd_file(args: argparse.Namespace) -> None:
    async def run(node: Node) -> None:
        data = await node.blob(args.hash)
        write_atomically(Path(args.out), data, 0o644)
        emit(args, {"hash": args.hash, "file": args.out, "bytes": len(data)}, f"{len(data)} bytes written to {args.out}")

    await _with_node(args, run)


async def cmd_config(args: argparse.Namespace) -> None:
    async def run(node: Node) -> None:
        if args.max_attachment_bytes is not None:
            await node.set_max_blob_bytes(args.max_attachment_bytes)
        emit(args, {"max_attachment_bytes": node.max_blob_bytes}, f"max attachment size: {node.max_blob_bytes} bytes")

    await _with_node(args, run)


async def cmd_audit(args: argparse.Namespace) -> None:
    async def run(node: Node) -> None:
        if args.verify:
            verdict = await node.verify_audit()
            emit(
                args,
                {"ok": verdict.ok, "entries": verdict.count, "head": verdict.head.hex(), "problem": verdict.problem},
                f"audit log intact: {verdict.count} entries, head {verdict.head.hex()[:16]}" if verdict.ok else f"AUDIT LOG BROKEN after {verdict.count} good entries: {verdict.problem}",
            )
            if not verdict.ok:
                raise SystemExit(EXIT_ERROR)
            return
        entries = await node.audit_entries(args.limit)
        emit(
            args,
            [{"seq": e.seq, "at": iso_utc(e.at), "actor": e.actor, "action": e.action, "detail": e.detail} for e in entries],
            "\n".join(f"{e.seq:>6} {iso_utc(e.at)} {e.action:<18} {printable(node.user_name(e.actor)) if e.actor != '-' else '-':<12} {printable(json.dumps(e.detail, ensure_ascii=False))}" for e in entries),
        )

    await _with_node(args, run)


def cmd_console(args: argparse.Namespace) -> None:
    """Runs outside asyncio.run: Textual owns the event loop (and the terminal's signals)."""
    from tui.app import run_console  # Textual loads only for the console

    passphrase = os.environ.get("RALLYPOINT_PASSPHRASE")
    if args.passphrase_file:
        passphrase = read_passphrase(args)
    run_console(Path(args.home).expanduser(), passphrase, args.as_user)


# --- parser ---------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--home", default=argparse.SUPPRESS, help="node data directory (default: $RALLYPOINT_HOME or ~/.local/share/rallypoint)")
    common.add_argument("--passphrase-file", default=argparse.SUPPRESS, help="read the passphrase from this file (else $RALLYPOINT_PASSPHRASE, else a prompt)")
    common.add_argument("--as", dest="as_user", default=argparse.SUPPRESS, metavar="USER", help="act as this local user")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print stable JSON")

    parser = argparse.ArgumentParser(prog="rallypoint", description="Rallypoint: team channels that work without a network.", parents=[common])
    parser.add_argument("--version", action="version", version=f"rallypoint {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, handler: Callable[[argparse.Namespace], Awaitable[None] | None], help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=help_text, description=help_text)
        p.set_defaults(handler=handler)
        return p

    p = command("init", cmd_init, "create a new workspace; you become its first admin")
    p.add_argument("--workspace", required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--node-name", help="this node's name (default: the host name)")

    p = command("invite", cmd_invite, "admin: write an enrollment file for a new node and print its one-time code")
    p.add_argument("node_name", metavar="NODE_NAME")
    p.add_argument("--user", required=True, help="the new node's first user")
    p.add_argument("--role", default="member", choices=["admin", "member", "observer"])
    p.add_argument("--out", required=True, metavar="FILE")

    p = command("join", cmd_join, "join a workspace with an enrollment file and its one-time code")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--code", help="the one-time code (prompted for when not given)")

    command("whoami", cmd_whoami, "show this node's workspace, node id and user")

    p = command("user", cmd_user, "users and roles")
    user_sub = p.add_subparsers(dest="user_command", required=True, metavar="ACTION")
    q = user_sub.add_parser("add", parents=[common], help="admin: add a user whose key lives on this node")
    q.add_argument("name")
    q.add_argument("--role", default="member", choices=["admin", "member", "observer"])
    q = user_sub.add_parser("role", parents=[common], help="admin: change a user's role")
    q.add_argument("name")
    q.add_argument("role", choices=["admin", "member", "observer"])
    q = user_sub.add_parser("revoke", parents=[common], help="admin: revoke a user's certificate")
    q.add_argument("name")
    q.add_argument("--reason", default="revoked by an admin")
    user_sub.add_parser("list", parents=[common], help="list users")

    p = command("channel", cmd_channel, "create, list and export channels")
    channel_sub = p.add_subparsers(dest="channel_command", required=True, metavar="ACTION")
    q = channel_sub.add_parser("create", parents=[common], help="create a channel")
    q.add_argument("name")
    q.add_argument("--private", action="store_true")
    q.add_argument("--purpose", default="")
    channel_sub.add_parser("list", parents=[common], help="list channels with unread counts")
    q = channel_sub.add_parser("export", parents=[common], help="write the channel's raw Automerge documents to a directory")
    q.add_argument("name")
    q.add_argument("--automerge", required=True, metavar="DIR")
    q = channel_sub.add_parser("add-member", parents=[common], help="add a user to a private channel")
    q.add_argument("name")
    q.add_argument("user")

    p = command("post", cmd_post, "post a message (prints its id)")
    p.add_argument("channel")
    p.add_argument("text")
    p.add_argument("--reply-to", metavar="ID")
    p.add_argument("--attach", action="append", metavar="PATH")

    p = command("read", cmd_read, "read a channel or a thread, oldest first")
    p.add_argument("channel")
    p.add_argument("--thread", metavar="ID")
    p.add_argument("--limit", type=int, default=50)

    p = command("edit", cmd_edit, "edit your message")
    p.add_argument("id")
    p.add_argument("text")

    p = command("delete", cmd_delete, "delete a message (yours, or any as admin)")
    p.add_argument("id")

    p = command("react", cmd_react, "add or remove a reaction")
    p.add_argument("id")
    p.add_argument("emoji")
    p.add_argument("--remove", action="store_true")

    p = command("search", cmd_search, "full-text search across the channels you can read")
    p.add_argument("query")
    p.add_argument("--limit", type=int, default=50)

    p = command("file", cmd_file, "save an attachment by its hash")
    p.add_argument("hash")
    p.add_argument("--out", required=True, metavar="PATH")

    p = command("config", cmd_config, "show or (admin) change node settings")
    p.add_argument("--max-attachment-bytes", type=int)

    p = command("audit", cmd_audit, "show or verify the audit log")
    p.add_argument("--verify", action="store_true")
    p.add_argument("--limit", type=int, default=200)

    command("console", cmd_console, "open the terminal console")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for name, default in (("home", str(default_home())), ("passphrase_file", None), ("as_user", None), ("json", False)):
        if not hasattr(args, name):
            setattr(args, name, default)
    try:
        outcome = args.handler(args)
        if outcome is not None:
            asyncio.run(outcome)
    except RallypointError as exc:
        print(f"rallypoint: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("rallypoint: interrupted", file=sys.stderr)
        return 130
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())

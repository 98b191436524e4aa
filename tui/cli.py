"""The `rallypoint` command. Every subcommand takes --home, --passphrase-file, --as and --json;
human text by default, stable JSON with --json; any error is one line on stderr (a JSON
object under --json) and a non-zero exit status."""

from __future__ import annotations

import argparse
import getpass
import hashlib
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from appliance import __version__, ids
from appliance.errors import InvalidInput, NodeLocked, NotInitialised, RallypointError
from appliance.files import read_regular_file
from appliance.model import MAX_READ_PAGE, iso_utc
from appliance.netpolicy import NetworkRule
from sync import quarantine
from sync.defaults import DEFAULT_MAX_BYTES, DEFAULT_PORT
from sync.errors import SyncError
from sync.interfaces import interface_networks
from sync.quarantine import QuarantineQuota
from tui.cli_output import ArgumentParser, CommandFailed, UsageError, report_error, stdout_closed
from tui.files import write_atomically
from tui.text import printable

if TYPE_CHECKING:  # each command imports what it uses when it runs: `--help` loads none of it
    from appliance.audit import AuditVerdict
    from sync.bundle import BundleHeader, Envelope
    from appliance.model import MessageView
    from appliance.node import Attachment, Node
    from sync import lan
    from sync.sneakernet import ExportReport, ImportReport, Progress, ProgressCallback

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_REJECTED = 3  # an import ran, and refused at least one bundle
EXIT_WIPED = 4  # this node's revocation reached it and it wiped itself: nothing to retry (rallypoint.service does not restart on it)


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
    from appliance.node import Node

    home = Path(args.home).expanduser()
    if not Node.exists(home):
        raise NotInitialised(f"no node in {home}: run `rallypoint init` or `rallypoint join` first")
    node = await Node.open(home, read_passphrase(args), as_user=args.as_user)
    try:
        async with node:
            await action(node)
    finally:
        for skipped in node.replica.skipped_writes:  # after what was done was said, and on any exit
            print(f"rallypoint: warning: {printable(skipped)}", file=sys.stderr)


# --- commands -------------------------------------------------------------------------


async def cmd_init(args: argparse.Namespace) -> None:
    from appliance.node import Node

    home = Path(args.home).expanduser()
    node_name = args.node_name or socket.gethostname().split(".")[0] or "node"
    passphrase = read_passphrase(args, confirm=True, prompt="New passphrase for this node: ")
    async with await Node.init(home, workspace_name=args.workspace, user_name=args.user, node_name=node_name, passphrase=passphrase) as node:
        me = node.identity.whoami()
        emit(
            args,
            {"workspace": me.workspace_name, "workspace_id": me.workspace_id, "node": me.node_name, "node_id": me.node_id, "user": me.user_name, "home": str(home)},
            f"Workspace {me.workspace_name} ({me.workspace_id}) created in {home}\nNode {me.node_name}: {me.node_id}\nYou are {me.user_name} (admin)",
        )


async def cmd_invite(args: argparse.Namespace) -> None:
    async def run(node: Node) -> None:
        enrollment = await node.enrollment.invite(args.node_name, args.user, args.role)
        write_atomically(Path(args.out), enrollment.data)
        emit(
            args,
            {"file": args.out, "code": enrollment.code, "node_id": enrollment.node_id, "user": enrollment.user_name},
            f"Enrollment file written to {args.out}\nOne-time code (tell it to the new node's operator, never write it on the stick):\n\n    {enrollment.code}\n\nNew node id: {enrollment.node_id}",
        )

    await _with_node(args, run)


async def cmd_join(args: argparse.Namespace) -> None:
    from appliance import identity
    from appliance.node import MAX_ENROLLMENT_FILE_BYTES, Node

    try:
        data = read_regular_file(Path(args.file), MAX_ENROLLMENT_FILE_BYTES)
    except OSError as exc:
        raise CliError(f"cannot read enrollment file: {exc.strerror}") from exc
    code = args.code or os.environ.get("RALLYPOINT_ENROLLMENT_CODE")
    if not code:
        if not sys.stdin.isatty():
            raise CliError("no enrollment code: pass --code or run in a terminal")
        code = input("One-time code: ")
    passphrase = read_passphrase(args, confirm=True, prompt="New passphrase for this node: ")
    async with await Node.join(Path(args.home).expanduser(), data, code, passphrase) as node:
        unconsumed = identity.consume_enrollment_file(Path(args.file), node.identity.node_id, node.identity.now())
        if unconsumed is not None:
            print(identity.UNCONSUMED_WARNING.format(reason=unconsumed), file=sys.stderr)
        me = node.identity.whoami()
        emit(
            args,
            {"workspace": me.workspace_name, "workspace_id": me.workspace_id, "node": me.node_name, "node_id": me.node_id, "user": me.user_name, "role": me.role},
            f"Joined workspace {me.workspace_name} ({me.workspace_id})\nNode {me.node_name}: {me.node_id}\nYou are {me.user_name} ({me.role})",
        )


async def cmd_whoami(args: argparse.Namespace) -> None:
    async def run(node: Node) -> None:
        me = node.identity.whoami()
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
            user = await node.directory.add_user(args.name, args.role)
            emit(args, {"user": user.name, "role": user.role, "key": user.key.hex()}, f"User {user.name} added ({user.role})")
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

    await _with_node(args, run)


async def cmd_channel(args: argparse.Namespace) -> None:
    async def run(node: Node) -> None:
        if args.channel_command == "create":
            channel = await node.chat.create_channel(args.name, private=args.private, purpose=args.purpose)
            emit(args, {"id": channel.channel_id, "name": channel.name, "kind": channel.kind}, f"#{channel.name} created ({channel.kind})")
        elif args.channel_command == "add-member":
            await node.chat.add_member(args.name, args.user)
            emit(args, {"channel": args.name, "added": args.user}, f"{args.user} added to #{args.name}")
        elif args.channel_command == "export":
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
            channels = await node.views.list_channels()
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

    await _with_node(args, run)


async def cmd_read(args: argparse.Namespace) -> None:
    if args.before is not None and not ids.is_message_id(args.before):
        raise InvalidInput(f"--before {args.before!r}: not a message id")

    async def run(node: Node) -> None:
        messages = await node.views.read(args.channel, thread=args.thread, limit=args.limit, before=args.before)
        older = bool(messages) and bool(await node.views.read(args.channel, thread=args.thread, limit=1, before=messages[0].id, mark_read=False))
        next_before = messages[0].id if older else None
        listed = [m.as_json() for m in messages]
        emit(args, {"messages": listed, "next_before": next_before} if args.page else listed, "\n".join(format_message(m) for m in messages) or "no messages")
        if next_before is not None and not (args.json and args.page):  # never a silent cut: say how to read on
            thread = f" --thread {args.thread}" if args.thread else ""
            print(f"rallypoint: older messages not shown; the page before this one: rallypoint read {args.channel}{thread} --before {next_before}", file=sys.stderr)

    await _with_node(args, run)


async def cmd_edit(args: argparse.Namespace) -> None:
    async def run(node: Node) -> None:
        await node.chat.edit(args.id, args.text)
        emit(args, {"id": args.id, "edited": True}, "edited")

    await _with_node(args, run)


async def cmd_delete(args: argparse.Namespace) -> None:
    async def run(node: Node) -> None:
        await node.chat.delete(args.id)
        emit(args, {"id": args.id, "deleted": True}, "deleted")

    await _with_node(args, run)


async def cmd_react(args: argparse.Namespace) -> None:
    async def run(node: Node) -> None:
        await node.chat.react(args.id, args.emoji, remove=args.remove)
        emit(args, {"id": args.id, "emoji": args.emoji, "on": not args.remove}, "reaction removed" if args.remove else "reacted")

    await _with_node(args, run)


async def cmd_search(args: argparse.Namespace) -> None:
    async def run(node: Node) -> None:
        found = await node.views.search(args.query, limit=args.limit)
        emit(args, [m.as_json() for m in found], "\n".join(f"#{printable(m.channel)} " + format_message(m) for m in found) or "nothing found")

    await _with_node(args, run)


async def cmd_file(args: argparse.Namespace) -> None:
    async def run(node: Node) -> None:
        data = await node.blobs.blob(args.hash)
        write_atomically(Path(args.out), data, 0o644)
        emit(args, {"hash": hashlib.sha256(data).hexdigest(), "file": args.out, "bytes": len(data)}, f"{len(data)} bytes written to {args.out}")

    await _with_node(args, run)


async def cmd_config(args: argparse.Namespace) -> None:
    async def run(node: Node) -> None:
        if args.max_attachment_bytes is not None:
            await node.blobs.set_max_blob_bytes(args.max_attachment_bytes)
        emit(args, {"max_attachment_bytes": node.blobs.max_blob_bytes}, f"max attachment size: {node.blobs.max_blob_bytes} bytes")

    await _with_node(args, run)


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
            "\n".join(f"{e.seq:>6} {iso_utc(e.at)} {e.action:<18} {printable(node.directory.user_name(e.actor)) if e.actor != '-' else '-':<12} {printable(json.dumps(e.detail, ensure_ascii=False))}" for e in entries),
        )

    await _with_node(args, run)


async def cmd_backup(args: argparse.Namespace) -> None:
    async def run(node: Node) -> None:
        taken = await node.custody.backup(Path(args.to).expanduser())
        debris = f"\nRemoved {taken.debris_files} file(s) ({taken.debris_bytes:,} bytes) left there by interrupted backups." if taken.debris_files else ""
        emit(
            args,
            {"file": str(taken.path), "bytes": taken.bytes, "taken_at": iso_utc(taken.taken_at), "removed_debris": {"files": taken.debris_files, "bytes": taken.debris_bytes}},
            f"Backup written to {taken.path} ({taken.bytes:,} bytes){debris}\nIt opens only with this node's passphrase; keep it as safe as the node itself.",
        )

    await _with_node(args, run)


async def cmd_restore(args: argparse.Namespace) -> None:
    from appliance.node import Node

    home = Path(args.home).expanduser()
    async with await Node.restore(home, Path(args.file).expanduser(), read_passphrase(args)) as node:
        me = node.identity.whoami()
        emit(
            args,
            {"home": str(home), "workspace": me.workspace_name, "node": me.node_name, "node_id": me.node_id},
            f"Node {me.node_name} ({me.node_id}) of {me.workspace_name} restored into {home}\nA LAN session brings what its peers wrote since the backup; by courier, send each peer a bundle first (they then know what it lacks).",
        )


# --- courier ----------------------------------------------------------------------------


def _progress_printer(args: argparse.Namespace) -> ProgressCallback | None:
    """A one-line progress bar on stderr, for people at a terminal."""
    if args.json or not sys.stderr.isatty():
        return None

    def show(progress: Progress) -> None:
        width = 30
        filled = width * progress.done // progress.total if progress.total else width
        label = printable(progress.label)[:36]
        end = "\n" if progress.total and progress.done >= progress.total else ""
        print(f"\r{progress.phase:<7}[{'#' * filled}{'.' * (width - filled)}] {progress.done}/{progress.total} {label:<36}", end=end, file=sys.stderr, flush=True)

    return show


def _import_json(report: ImportReport) -> dict[str, Any]:
    return {
        "preview": report.preview,
        "wiped": report.wiped,
        "changes": report.changes_applied,
        "senders": list(report.senders),
        "channels": [
            {"channel_id": c.channel_id, "name": c.name or None, "readable": c.readable, "changes": c.changes, "new_messages": c.new_messages} for c in report.channels
        ],
        "directory_entries": sum(f.summary.directory_entries for f in report.accepted if f.summary),
        "blobs": sum(f.summary.blobs for f in report.accepted if f.summary),
        "files": [
            {
                "name": f.name,
                "outcome": f.outcome,
                "reason": f.reason,
                "sender": f.sender,
                "bundle_id": f.bundle_id,
                "quarantined": str(f.quarantined) if f.quarantined else None,
                "quarantine_dropped": [d.as_json() for d in f.quarantine_dropped],
                "quarantine_problem": f.quarantine_problem,
            }
            for f in report.files
        ],
        "problems": [{"path": p.path, "reason": p.reason} for p in report.problems],
    }


def _export_json(report: ExportReport) -> dict[str, Any]:
    return {
        "bundles": [{"file": str(b.path), "recipients": list(b.recipients), "bytes": b.size, "changes": b.changes, "blobs": b.blobs} for b in report.bundles],
        "superseded": report.superseded,
    }


def _names(node: Node) -> dict[str, str]:
    return {n.node_id: n.name for n in node.directory.nodes()}


def _stick_root(path: str) -> Path:
    root = Path(path).expanduser()
    if not root.is_dir():
        raise CliError(f"{path}: no such folder (is the stick mounted?)")
    return root


def _quarantine_quota(args: argparse.Namespace) -> QuarantineQuota:
    try:
        return QuarantineQuota(args.quarantine_max_bytes, args.quarantine_max_files)
    except ValueError as exc:
        raise CliError(str(exc)) from exc


def _quarantine_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quarantine-max-bytes", type=int, default=quarantine.DEFAULT_MAX_BYTES, metavar="N", help="keep at most N bytes of rejected bundles in the quarantine (oldest dropped first)")
    parser.add_argument("--quarantine-max-files", type=int, default=quarantine.DEFAULT_MAX_FILES, metavar="N", help="keep at most N rejected bundles in the quarantine")


def _exit_for(report: ImportReport, node: Node) -> None:
    """Exit 4 when the import wiped this node (its revocation was on the stick), else 3 when
    it refused a bundle; the report is printed first either way."""
    if report.wiped:
        raise NodeLocked(node.identity.locked_reason or "this node was revoked and wiped itself")
    if report.rejected:
        raise CommandFailed(f"{len(report.rejected)} bundle(s) rejected (see the report)", EXIT_REJECTED, "BundleRejected")


async def cmd_bundle(args: argparse.Namespace) -> None:
    from sync import sneakernet
    from tui.reports import export_report_text, import_report_text

    if args.bundle_command == "inspect":
        await _inspect(args)
        return

    async def run(node: Node) -> None:
        if args.bundle_command == "export":
            report = await sneakernet.export_bundles(node, _stick_root(args.to), for_nodes=args.for_nodes or (), max_bytes=args.max_bytes, broadcast=args.broadcast, progress=_progress_printer(args))
            emit(args, _export_json(report), export_report_text(report, _names(node)))
        else:
            imported = await sneakernet.import_bundles(node, _stick_root(args.source), preview=args.preview, progress=_progress_printer(args), quarantine_quota=_quarantine_quota(args))
            emit(args, _import_json(imported), import_report_text(imported, node.home / sneakernet.QUARANTINE_DIR, _names(node)))
            _exit_for(imported, node)

    await _with_node(args, run)


async def _inspect(args: argparse.Namespace) -> None:
    """Without --unlock, what anyone holding the file can know: no key, no passphrase. With
    it, and this node a recipient, also who sent it, when and what it acknowledges."""
    import asyncio

    from sync import sneakernet
    from sync.bundle import open_bundle, read_envelope

    path = Path(args.file).expanduser()
    try:
        data = read_regular_file(path, sneakernet.MAX_BUNDLE_FILE_BYTES)
    except OSError as exc:
        raise CliError(f"cannot read {args.file}: {exc.strerror}") from exc
    envelope = read_envelope(data)
    payload: dict[str, Any] = {"file": str(path), "bytes": len(data), "format": envelope.version, "recipient_stanzas": envelope.stanzas, "opened": False}
    human = [f"bundle format {envelope.version}, {len(data):,} bytes, {envelope.stanzas} recipient stanza(s)"]
    if not args.unlock:
        human.append("(sender, recipients and content are encrypted; --unlock opens it if this node is a recipient)")
        emit(args, payload, "\n".join(human))
        return

    async def run(node: Node) -> None:
        try:
            header, _ = await asyncio.to_thread(
                open_bundle, data, my_key=node.identity.signing_key, sender_status=lambda _key: "trusted", limits=sneakernet.IMPORT_LIMITS, workspace=node.directory.current.workspace
            )
        except SyncError as exc:
            payload["refused"] = str(exc)
            emit(args, payload, "\n".join([*human, f"not opened: {exc}"]))
            return
        names = _names(node)
        payload.update(_opened_json(header, envelope, names), opened=True)
        emit(args, payload, "\n".join([*human, *_opened_text(header, names)]))

    await _with_node(args, run)


def _opened_json(header: BundleHeader, envelope: Envelope, names: dict[str, str]) -> dict[str, Any]:
    return {
        "bundle_id": header.id.hex(),
        "workspace_id": ids.key_id(header.workspace),
        "sender": ids.key_id(header.sender),
        "sender_name": names.get(ids.key_id(header.sender)),
        "created_at": iso_utc(header.created_at),
        "recipients": [ids.key_id(r) for r in header.recipients],
        "documents_acknowledged": len(header.heads),
        "channels_acknowledged": _channels_in(header),
        "encrypted_bytes": envelope.ciphertext_length,
        "chunk_size": envelope.chunk_size,
    }


def _channels_in(header: BundleHeader) -> int:
    """Channels whose documents (`<channel>/head`, `<channel>/seg/<n>`) the header's heads list."""
    return len({doc_id.split("/", 1)[0] for doc_id in header.heads if doc_id != "directory"})


def _opened_text(header: BundleHeader, names: dict[str, str]) -> list[str]:
    def who(key: bytes) -> str:
        node_id = ids.key_id(key)
        return f"{names[node_id]} ({node_id})" if node_id in names else node_id

    channels = _channels_in(header)
    return [
        f"bundle {header.id.hex()}, workspace {ids.key_id(header.workspace)}",
        f"from node {who(header.sender)}, made {iso_utc(header.created_at)} (sender's clock)",
        f"for {len(header.recipients)} node(s): {', '.join(who(r) for r in header.recipients)}",
        f"acknowledges what the sender holds of {len(header.heads)} document(s) in {channels} channel(s)",
        "(opened, but the sender's standing and the content are checked only on import)",
    ]


async def cmd_courier(args: argparse.Namespace) -> None:
    from sync import sneakernet
    from tui.reports import export_report_text, import_report_text

    async def run(node: Node) -> None:
        imported, exported = await sneakernet.courier(node, _stick_root(args.dir), progress=_progress_printer(args), max_bytes=args.max_bytes, quarantine_quota=_quarantine_quota(args))
        payload = {"import": _import_json(imported), "export": _export_json(exported) if exported else None}
        names = _names(node)
        human = import_report_text(imported, node.home / sneakernet.QUARANTINE_DIR, names) + ("\n" + export_report_text(exported, names) if exported else "\nNothing exported.")
        emit(args, payload, human)
        _exit_for(imported, node)

    await _with_node(args, run)


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

    await _with_node(args, run)


async def cmd_serve(args: argparse.Namespace) -> None:
    """Runs the node headless until SIGTERM or SIGINT: LAN discovery and sync, one line per event."""
    import asyncio

    from sync import lan


    def report(event: lan.LanEvent) -> None:
        emit(args, {"event": type(event).__name__, "at": time.time(), **_event_json(event)}, _event_text(event))
        sys.stdout.flush()

    async def run(node: Node) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        config = lan.LanConfig(bind=args.bind, port=args.port, discovery=not args.no_mdns)
        async with lan.LanService(node, config, on_event=report) as service:
            for target in args.peer or ():
                host, _, port = target.rpartition(":")
                if not host or not port.isdigit():
                    raise CliError(f"--peer {target!r}: expected ADDRESS:PORT")
                service.dial(host.strip("[]"), int(port))
            emit(args, {"event": "Listening", "node_id": node.identity.node_id, "address": args.bind, "port": service.port}, f"node {node.identity.node_id} listening on {args.bind}:{service.port}")
            sys.stdout.flush()
            waits = [asyncio.create_task(stop.wait()), asyncio.create_task(service.ended.wait())]
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiting in waits:
                    waiting.cancel()
        if service.end_reason is not None:
            raise NodeLocked(service.end_reason)
        emit(args, {"event": "Stopped"}, "stopped")

    await _with_node(args, run)


def _event_json(event: lan.LanEvent) -> dict[str, Any]:
    from sync import lan

    if isinstance(event, lan.PeerDiscovered):
        peer = event.peer
        return {"node_id": peer.node_id, "workspace_id": peer.workspace_id, "addresses": list(peer.addresses), "port": peer.port, "same_workspace": event.same_workspace}
    return {k: list(v) if isinstance(v, tuple) else v for k, v in vars(event).items()}


def _event_text(event: lan.LanEvent) -> str:
    from sync import lan

    if isinstance(event, lan.PeerDiscovered):
        where = f"{event.peer.addresses[0] if event.peer.addresses else '?'}:{event.peer.port}"
        return f"discovered {event.peer.node_id} at {where}" + ("" if event.same_workspace else f" (workspace {event.peer.workspace_id}: not synced)")
    if isinstance(event, lan.PeerLost):
        return f"lost {event.node_id}"
    if isinstance(event, lan.SessionUp):
        return f"session with {event.node_id} at {event.address} ({'we dialled' if event.initiator else 'it dialled'})"
    if isinstance(event, lan.SessionDown):
        return f"session with {event.node_id} ended: {printable(event.reason)}"
    if isinstance(event, lan.Received):
        return f"received {event.changes} change(s), {event.messages} new message(s) from {event.node_id}"
    if isinstance(event, lan.Wiped):
        return f"stopping: {printable(event.reason)}"
    if isinstance(event, lan.RefusalsSummarised):
        return event.summary
    return f"refused {event.address}{' (' + event.node_id + ')' if event.node_id else ''}: {printable(event.reason)}"


async def cmd_peers(args: argparse.Namespace) -> None:
    async def run(node: Node) -> None:
        rows = await node.peers.peer_overview(interface_networks())
        payload = [
            {
                "node_id": r.node_id,
                "name": r.name,
                "trust": r.trust,
                "trusted": r.trust == "trusted",
                "address": r.address,
                "port": r.port,
                "last_seen": iso_utc(r.last_seen),
                "last_sync": iso_utc(r.last_sync),
                "last_courier": iso_utc(r.last_courier),
                "behind": r.behind,
                "conflict": r.conflict,
                "refused": r.refused,
            }
            for r in rows
        ]

        def when(ms: int | None) -> str:
            return (iso_utc(ms) or "never")[:16].replace("T", " ")

        lines = [f"{'NODE':<23} {'NAME':<14} {'TRUST':<15} {'ADDRESS':<21} {'LAST SYNC':<16} {'COURIER':<16} BEHIND"]
        for r in rows:
            address = f"{r.address}:{r.port}" if r.address else "-"
            behind = "-" if r.behind is None else f"{r.behind} change(s)"
            lines.append(f"{r.node_id:<23} {printable(r.name)[:14]:<14} {r.trust:<15} {address:<21} {when(r.last_sync):<16} {when(r.last_courier):<16} {behind}")
            if r.conflict:
                lines.append(f"  {printable(r.conflict)}")
            if r.refused:
                lines.append(f"  not synced by LAN: {printable(r.refused)}")
        emit(args, payload, "\n".join(lines) if rows else "no peers known yet")

    await _with_node(args, run)


async def cmd_allow(args: argparse.Namespace) -> None:
    async def run(node: Node) -> None:
        if args.list or not (args.network or args.remove):
            rules = await node.peers.network_rules(interface_networks())
            emit(
                args,
                [{"network": r.network, "action": r.action, "default": r.default, "interface": r.interface} for r in rules],
                "\n".join(f"{r.action:<6} {r.network}" + _default_note(r) for r in rules) or "no rules: every LAN session is refused",
            )
            return
        if args.remove:
            network = await node.peers.set_network_rule(args.remove, None)
            emit(args, {"removed": network}, f"rule for {network} removed")
            return
        network = await node.peers.set_network_rule(args.network, "allow")
        emit(args, {"allowed": network}, f"LAN sessions with {network} allowed, both directions (a running node applies it to new connections)")

    await _with_node(args, run)


def _default_note(rule: NetworkRule) -> str:
    if not rule.default:
        return ""
    return f"  (default while nothing is allowed: the network of {rule.interface})" if rule.interface else "  (default while nothing is allowed)"


async def cmd_deny(args: argparse.Namespace) -> None:
    async def run(node: Node) -> None:
        network = await node.peers.set_network_rule(args.network, "deny")
        emit(args, {"denied": network}, f"LAN sessions with {network} denied, both directions (a running node applies it to new connections)")

    await _with_node(args, run)


def cmd_console(args: argparse.Namespace) -> None:
    """Runs outside asyncio.run: Textual owns the event loop (and the terminal's signals)."""
    from sync import lan
    from tui.app import run_console  # Textual loads only for the console

    passphrase = os.environ.get("RALLYPOINT_PASSPHRASE")
    if args.passphrase_file:
        passphrase = read_passphrase(args)
    config = None if args.no_lan else lan.LanConfig(bind=args.bind, port=args.port)
    wiped = run_console(Path(args.home).expanduser(), passphrase, args.as_user, config)
    if wiped is not None:
        raise NodeLocked(wiped)


# --- parser ---------------------------------------------------------------------------


def _page_size(text: str) -> int:
    try:
        size = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 1 <= size <= MAX_READ_PAGE:
        raise argparse.ArgumentTypeError(f"a page holds 1 to {MAX_READ_PAGE:,} messages; read older ones with --before")
    return size


def build_parser() -> argparse.ArgumentParser:
    common = ArgumentParser(add_help=False)
    common.add_argument("--home", default=argparse.SUPPRESS, help="node data directory (default: $RALLYPOINT_HOME or ~/.local/share/rallypoint)")
    common.add_argument("--passphrase-file", default=argparse.SUPPRESS, help="read the passphrase from this file (else $RALLYPOINT_PASSPHRASE, else a prompt)")
    common.add_argument("--as", dest="as_user", default=argparse.SUPPRESS, metavar="USER", help="act as this local user: only the node's own user may act until per-user sign-in exists (a later version); others are refused")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print stable JSON")

    parser = ArgumentParser(prog="rallypoint", description="Rallypoint: team channels that work without a network.", parents=[common])
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

    p = command("read", cmd_read, "read a channel or a thread, oldest first: the newest page, or the one before --before")
    p.add_argument("channel")
    p.add_argument("--thread", metavar="ID")
    p.add_argument("--limit", type=_page_size, default=50, metavar="N", help=f"messages on the page (default 50, at most {MAX_READ_PAGE:,})")
    p.add_argument("--before", metavar="ID", help="the page of messages older than this one (stderr names it when a page leaves older messages out)")
    p.add_argument("--page", action="store_true", help='with --json: {"messages": [...], "next_before": ID or null} instead of the bare list')

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
    p.add_argument("hash", help="the hash, or any unique start of it of 8 hex digits or more (`read` shows 12)")
    p.add_argument("--out", required=True, metavar="PATH")

    p = command("config", cmd_config, "show or (admin) change node settings")
    p.add_argument("--max-attachment-bytes", type=int)

    p = command("audit", cmd_audit, "show or verify the audit log")
    p.add_argument("--verify", action="store_true")
    p.add_argument("--limit", type=int, default=200)

    p = command("backup", cmd_backup, "admin: write a consistent copy of this node's store into a folder (while it runs)")
    p.add_argument("--to", required=True, metavar="DIR")
    p = command("restore", cmd_restore, "make an empty home the node a backup was taken of (needs that node's passphrase)")
    p.add_argument("file", metavar="FILE")

    p = command("bundle", cmd_bundle, "write, import and inspect courier bundles")
    bundle_sub = p.add_subparsers(dest="bundle_command", required=True, metavar="ACTION")
    q = bundle_sub.add_parser("export", parents=[common], help="write bundles with what peers lack into a stick (rallypoint/bundles/)")
    q.add_argument("--to", required=True, metavar="DIR", help="the stick (or any folder)")
    q.add_argument("--for", dest="for_nodes", action="append", metavar="NODE", help="a peer's node id or name (repeatable; default: every enrolled peer)")
    q.add_argument("--max-bytes", type=int, default=DEFAULT_MAX_BYTES, metavar="N", help="cap per bundle; the rest goes into further bundles")
    q.add_argument("--broadcast", action="store_true", help="one series that all the peers can open (public channels only)")
    q = bundle_sub.add_parser("import", parents=[common], help="import every bundle on a stick addressed to this node")
    q.add_argument("--from", dest="source", required=True, metavar="DIR")
    q.add_argument("--preview", action="store_true", help="show what would change; change nothing")
    _quarantine_options(q)
    q = bundle_sub.add_parser("inspect", parents=[common], help="show what a bundle file tells anyone (format, size, recipient count); --unlock: who from, for whom, when")
    q.add_argument("file", metavar="FILE")
    q.add_argument("--unlock", action="store_true", help="unlock this node (passphrase) and, if it is a recipient, show sender, recipients, time and what it acknowledges")

    p = command("courier", cmd_courier, "import what a stick holds for this node, then write fresh bundles for every peer")
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--max-bytes", type=int, default=DEFAULT_MAX_BYTES, metavar="N")
    _quarantine_options(p)

    p = command("node", cmd_node, "nodes of the workspace")
    node_sub = p.add_subparsers(dest="node_command", required=True, metavar="ACTION")
    q = node_sub.add_parser("revoke", parents=[common], help="admin: revoke a node; it wipes itself when the revocation reaches it")
    q.add_argument("node", metavar="NODE", help="node id or name")
    q.add_argument("--reason", default="revoked by an admin")
    node_sub.add_parser("list", parents=[common], help="list the workspace's nodes")

    p = command("serve", cmd_serve, "run headless: advertise on the LAN, find peers, sync with them live (until SIGTERM)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"TCP port for sessions (default {DEFAULT_PORT}; 0: any free port, mDNS tells peers)")
    p.add_argument("--bind", default="0.0.0.0", metavar="ADDR", help="address to listen on; also the only interface mDNS uses (default: all)")
    p.add_argument("--peer", action="append", metavar="ADDR:PORT", help="also keep a session with this address (for routed networks without mDNS)")
    p.add_argument("--no-mdns", action="store_true", help="neither advertise nor browse")

    p = command("peers", cmd_peers, "discovered and known peers: trust, address, last sync, how far behind")

    p = command("allow", cmd_allow, "admin: allow LAN sessions with a network (CIDR), incoming and dialled; --list shows the rules")
    p.add_argument("network", nargs="?", metavar="CIDR")
    p.add_argument("--list", action="store_true", help="show the rules in force")
    p.add_argument("--remove", metavar="CIDR", help="remove the rule for this network")

    p = command("deny", cmd_deny, "admin: refuse LAN sessions with a network (CIDR), incoming and dialled; beats a shorter allow")
    p.add_argument("network", metavar="CIDR")

    p = command("console", cmd_console, "open the terminal console (it also runs the LAN service, like `serve`)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="TCP port for LAN sessions (0: any free port)")
    p.add_argument("--bind", default="0.0.0.0", metavar="ADDR", help="address to listen on; also the only interface mDNS uses")
    p.add_argument("--no-lan", action="store_true", help="no LAN discovery or sync in this console")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    as_json = "--json" in argv  # until the command line has parsed
    try:
        args = build_parser().parse_args(argv)
        for name, default in (("home", str(default_home())), ("passphrase_file", None), ("as_user", None), ("json", False)):
            if not hasattr(args, name):
                setattr(args, name, default)
        as_json = args.json
        outcome = args.handler(args)
        if outcome is not None:
            import asyncio  # not for --help and --version: a third of their start-up

            asyncio.run(outcome)
    except UsageError as exc:
        return report_error(as_json, EXIT_USAGE, "UsageError", str(exc), usage=exc.usage, prog=exc.prog)
    except CommandFailed as exc:
        return report_error(as_json, exc.exit_status, exc.kind, str(exc))
    except NodeLocked as exc:
        return report_error(as_json, EXIT_WIPED, type(exc).__name__, str(exc))
    except (RallypointError, SyncError) as exc:
        return report_error(as_json, EXIT_ERROR, type(exc).__name__, str(exc))
    except KeyboardInterrupt:
        return report_error(as_json, 130, "Interrupted", "interrupted")
    except BrokenPipeError:
        return stdout_closed()
    except SystemExit as exc:  # --help and --version
        return int(exc.code or 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())

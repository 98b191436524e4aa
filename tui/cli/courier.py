"""Commands of the courier: writing, importing and inspecting bundles on a stick, and the
import-then-export round of `courier`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from appliance import ids
from appliance.errors import NodeLocked
from appliance.files import read_regular_file
from appliance.model import iso_utc
from sync import quarantine
from sync.defaults import DEFAULT_MAX_BYTES
from sync.errors import SyncError
from sync.quarantine import QuarantineQuota
from tui.cli.output import EXIT_REJECTED, emit
from tui.cli.parsing import Command
from tui.cli.unlock import start_workers_early, with_node
from tui.errors import CliError, CommandFailed
from tui.text import printable

if TYPE_CHECKING:  # each command imports what it uses when it runs: `--help` loads none of it
    from appliance.node import Node
    from sync.bundle import BundleHeader, Envelope
    from sync.sneakernet import ExportReport, ImportReport, Progress, ProgressCallback


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
    if args.bundle_command == "import":
        start_workers_early()

    async def run(node: Node) -> None:
        if args.bundle_command == "export":
            report = await sneakernet.export_bundles(node, _stick_root(args.to), for_nodes=args.for_nodes or (), max_bytes=args.max_bytes, broadcast=args.broadcast, progress=_progress_printer(args))
            emit(args, _export_json(report), export_report_text(report, _names(node)))
        else:
            imported = await sneakernet.import_bundles(node, _stick_root(args.source), preview=args.preview, progress=_progress_printer(args), quarantine_quota=_quarantine_quota(args))
            emit(args, _import_json(imported), import_report_text(imported, node.home / sneakernet.QUARANTINE_DIR, _names(node)))
            _exit_for(imported, node)

    await with_node(args, run)


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
        from appliance.certs import Trust

        try:
            header, content = await asyncio.to_thread(
                open_bundle, data, my_key=node.identity.signing_key, sender_status=lambda _key: Trust.TRUSTED, limits=sneakernet.IMPORT_LIMITS, workspace=node.directory.current.workspace
            )
        except SyncError as exc:
            payload["refused"] = str(exc)
            emit(args, payload, "\n".join([*human, f"not opened: {exc}"]))
            return
        names = _names(node)
        chunked = len(content.directory) + len(content.changes)
        payload.update(_opened_json(header, envelope, names), opened=True, documents_as_changes=chunked, segments_whole=len(content.wholes))
        carried = f"carries {chunked} document(s) as changes and {len(content.wholes)} segment(s) whole"
        emit(args, payload, "\n".join([*human, *_opened_text(header, names), carried]))

    await with_node(args, run)


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

    start_workers_early()

    async def run(node: Node) -> None:
        imported, exported = await sneakernet.courier(node, _stick_root(args.dir), progress=_progress_printer(args), max_bytes=args.max_bytes, quarantine_quota=_quarantine_quota(args))
        payload = {"import": _import_json(imported), "export": _export_json(exported) if exported else None}
        names = _names(node)
        human = import_report_text(imported, node.home / sneakernet.QUARANTINE_DIR, names) + ("\n" + export_report_text(exported, names) if exported else "\nNothing exported.")
        emit(args, payload, human)
        _exit_for(imported, node)

    await with_node(args, run)


def _bundle_arguments(parser: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    bundle_sub = parser.add_subparsers(dest="bundle_command", required=True, metavar="ACTION")
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


def _courier_arguments(parser: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", metavar="DIR")
    parser.add_argument("--max-bytes", type=int, default=DEFAULT_MAX_BYTES, metavar="N")
    _quarantine_options(parser)


BUNDLE = Command("bundle", "write, import and inspect courier bundles", cmd_bundle, _bundle_arguments)
COURIER = Command("courier", "import what a stick holds for this node, then write fresh bundles for every peer", cmd_courier, _courier_arguments)

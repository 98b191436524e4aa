"""`rallypoint terms`: publish a version of the terms of service (admin), show the current
terms, accept them, and see who accepted which version, when and on which node (admin)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from appliance.model import iso_utc
from tui.cli.output import emit
from tui.cli.parsing import Command
from tui.cli.unlock import with_node
from tui.files import read_text
from tui.text import printable

if TYPE_CHECKING:  # each command imports what it uses when it runs: `--help` loads none of it
    from appliance.model import TermsInfo, TermsStanding
    from appliance.node import Node

MAX_FILE_BYTES = 64 * 1024  # appliance.terms.MAX_TEXT_BYTES: a longer file is refused before the node opens


def read_terms_file(path: str) -> str:
    """The terms' text from FILE ("-": standard input), as UTF-8."""
    return read_text(Path(path), MAX_FILE_BYTES, "terms of service")


def terms_json(info: TermsInfo) -> dict[str, object]:
    return {"version": info.version, "title": info.title, "text": info.text, "published_at": iso_utc(info.published_at), "publisher": info.publisher, "fingerprint": info.fingerprint}


def standing_json(row: TermsStanding) -> dict[str, object]:
    return {
        "user": row.user,
        "role": row.role,
        "accepted_current": row.current,
        "accepted_version": row.accepted_version,
        "accepted_at": iso_utc(row.accepted_at),
        "node": row.node_name,
        "node_id": row.node_id,
    }


def standing_text(row: TermsStanding) -> str:
    if row.accepted_version is None:
        where = "never accepted"
    else:
        where = f"version {row.accepted_version} on {(iso_utc(row.accepted_at) or '')[:16].replace('T', ' ')} at node {printable(row.node_name or '?')} ({row.node_id})"
    return f"{printable(row.user):<20} {row.role:<9} {'accepted ' if row.current else 'PENDING  '} {where}"


async def cmd_terms(args: argparse.Namespace) -> None:
    text = read_terms_file(args.file) if args.terms_command == "publish" else ""

    async def run(node: Node) -> None:
        service = node.directory.terms
        if args.terms_command == "publish":
            info = await service.publish(args.version, args.title, text)
            emit(
                args,
                terms_json(info),
                f"terms version {info.version} ({printable(info.title)}) published; every user must accept them before reading or posting. "
                "They reach other nodes with the directory (LAN, or `rallypoint courier`).",
            )
        elif args.terms_command == "show":
            current = service.current()
            if current is None:
                emit(args, None, "no terms of service are published in this workspace")
                return
            unaccepted = service.pending() is not None
            header = f"Terms of service, version {current.version}: {printable(current.title)}\npublished {iso_utc(current.published_at)} by {printable(current.publisher)}"
            footer = "\nYou have not accepted them yet: `rallypoint terms accept` accepts them." if unaccepted else "\nYou have accepted them."
            emit(args, terms_json(current) | {"accepted": not unaccepted}, f"{header}\n\n{printable(current.text, multiline=True).rstrip()}\n{footer}")
        elif args.terms_command == "accept":
            standing = await service.accept(args.version)
            emit(args, standing_json(standing), f"{printable(standing.user)} accepted the terms of service, version {standing.accepted_version}")
        else:
            rows = await service.status()
            current = service.current()
            head = "no terms of service are published" if current is None else f"current terms: version {current.version} ({printable(current.title)})"
            pending = [row.user for row in rows if not row.current]
            summary = f"{len(rows) - len(pending)} of {len(rows)} users accepted" + (f"; not yet: {', '.join(printable(u) for u in pending)}" if pending else "")
            emit(
                args,
                {"current": None if current is None else terms_json(current), "users": [standing_json(row) for row in rows], "pending": pending},
                "\n".join([head, *(standing_text(row) for row in rows), summary]),
            )

    await with_node(args, run)


def _terms_arguments(parser: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="terms_command", required=True, metavar="ACTION")
    q = sub.add_parser("publish", parents=[common], help="admin: publish a new version of the terms, from FILE (- for standard input)")
    q.add_argument("file", metavar="FILE")
    q.add_argument("--version", type=int, required=True, help="the new version: higher than the current one")
    q.add_argument("--title", required=True)
    sub.add_parser("show", parents=[common], help="show the current terms and whether you accepted them")
    q = sub.add_parser("accept", parents=[common], help="accept the current terms (signed with your key, recorded on every node)")
    q.add_argument("--version", type=int, help="the version you read: refused if the current terms are another")
    sub.add_parser("status", parents=[common], help="admin: who accepted which version, when and on which node")


TERMS = Command("terms", "terms of service: publish (admin), show, accept, status (admin)", cmd_terms, _terms_arguments)

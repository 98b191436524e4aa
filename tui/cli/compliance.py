"""Commands of the compliance export: `compliance-export` (admin; or the stored schedule's run,
for the image's timer), `compliance-schedule` (admin: the policy), and the offline tools that
need no node - `verify-export`, `decrypt-export`, `export-key` (a recipient key pair)."""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from appliance.compliance_records import ExportFilter, ExportFormat, ExportResult, TimeBasis, iso_utc, parse_time
from tui.cli.output import emit
from tui.cli.parsing import Command
from tui.cli.unlock import start_workers_early, with_node
from tui.errors import CliError, CommandFailed

if TYPE_CHECKING:  # each command imports what it uses when it runs: `--help` loads none of it
    from appliance.node import Node

_DURATION = re.compile(r"^\s*(\d+)\s*([mhdw])\s*$")
_UNIT_MS = {"m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 7 * 86_400_000}
_LINE_LIMIT = 64 * 1024 * 1024  # one JSON line at most (a record with a 40,000-character text is far less)


def parse_duration(text: str) -> int:
    match = _DURATION.match(text)
    if match is None:
        raise CliError(f"not a duration: {text!r} (e.g. 30m, 12h, 1d, 1w)")
    return int(match.group(1)) * _UNIT_MS[match.group(2)]


def _time(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return parse_time(text)
    except ValueError as exc:
        raise CliError(str(exc)) from exc


def _result_json(result: ExportResult) -> dict[str, object]:
    return {
        "file": result.path,
        "format": result.format.value,
        "records": result.records,
        "messages": result.messages,
        "bytes": result.bytes,
        "sha256": result.sha256,
        "files_dir": result.files_dir,
        "attachments": result.files,
        "encrypted_to": result.encrypted_to,
        "since": iso_utc(result.since) if result.since is not None else None,
        "until": iso_utc(result.until) if result.until is not None else None,
        "workspace_key": result.workspace_key,
    }


def _result_text(result: ExportResult) -> str:
    lines = [f"Exported {result.records:,} records ({result.messages:,} messages) as {result.format.value} to {result.path} ({result.bytes:,} bytes, sha256 {result.sha256})"]
    if result.files_dir:
        lines.append(f"Attachments ({result.files:,}) in {result.files_dir}")
    lines.append(f"Check it offline: rallypoint verify-export FILE --workspace-key {result.workspace_key}" if result.format == ExportFormat.JSONL else "")
    if result.encrypted_to:
        lines.append(f"Encrypted to {result.encrypted_to}: rallypoint decrypt-export FILE --identity KEYFILE opens it")
    return "\n".join(line for line in lines if line)


async def cmd_compliance_export(args: argparse.Namespace) -> None:
    from appliance.export_sealing import parse_recipient

    if args.scheduled:

        async def run_scheduled(node: Node) -> None:
            run = await node.audit.compliance.schedule.run(force=args.force)
            if run.result is None:
                emit(args, {"ran": False, "next_due": iso_utc(run.next_due)}, f"Not due: the next scheduled export runs from {iso_utc(run.next_due)}")
            else:
                emit(args, {"ran": True, **_result_json(run.result)}, _result_text(run.result))

        await with_node(args, run_scheduled, sign_in=False)
        return
    if args.format is None or args.to is None:
        raise CliError("give --format and --to (or --scheduled to run the stored schedule)")
    fmt = ExportFormat(args.format)
    filters = ExportFilter(
        since=_time(args.since),
        until=_time(args.until),
        channels=tuple(args.channel or ()),
        users=tuple(args.user or ()),
        basis=TimeBasis.RECEIVED if args.by_received else TimeBasis.SENT,
    )
    recipient = parse_recipient(args.recipient) if args.recipient else None
    start_workers_early(for_export=True)

    async def run(node: Node) -> None:
        result = await node.audit.compliance.export(Path(args.to).expanduser().absolute(), fmt, filters, with_files=args.files, recipient=recipient)
        emit(args, _result_json(result), _result_text(result))

    await with_node(args, run)


async def cmd_compliance_schedule(args: argparse.Namespace) -> None:
    async def run(node: Node) -> None:
        schedule = node.audit.compliance.schedule
        if args.off:
            await schedule.clear()
            emit(args, {"schedule": None}, "Scheduled compliance export turned off.")
            return
        if args.to is not None:
            policy = await schedule.set_policy(
                Path(args.to).expanduser().absolute(),
                ExportFormat(args.format or "jsonl"),
                parse_duration(args.every or "1d"),
                files=args.files,
                recipient=args.recipient,
                channels=tuple(args.channel or ()),
                users=tuple(args.user or ()),
            )
        else:
            found = await schedule.policy()
            if found is None:
                emit(args, {"schedule": None}, "No scheduled compliance export (set one with --to DIR --every 1d --format jsonl).")
                return
            policy = found
        last = await schedule.last_until()
        payload = {
            "schedule": {
                "to": policy.directory,
                "format": policy.format.value,
                "every_ms": policy.every_ms,
                "files": policy.files,
                "recipient": policy.recipient,
                "channels": list(policy.channels),
                "users": list(policy.users),
            },
            "last_until": iso_utc(last) if last is not None else None,
        }
        encrypted = f", encrypted to {policy.recipient}" if policy.recipient else ""
        upto = iso_utc(last) if last is not None else "nothing yet"
        emit(args, payload, f"Every {policy.every_ms // 60_000} min: {policy.format.value} into {policy.directory}{encrypted}\nExported up to: {upto}")

    await with_node(args, run)


def _plain_lines(path: Path, identity_file: str | None) -> Iterator[bytes]:
    """The export's lines, decrypting on the fly when it is encrypted."""
    from appliance.export_sealing import MAGIC, open_sealed, parse_identity

    with open(path, "rb") as source:
        if source.read(len(MAGIC)) == MAGIC:
            if identity_file is None:
                raise CliError(f"{path} is encrypted: give --identity KEYFILE")
            source.seek(0)
            identity = parse_identity(Path(identity_file).expanduser().read_text())
            pending = b""
            for chunk in open_sealed(source, identity):
                pending += chunk
                *whole, pending = pending.split(b"\n")
                yield from (line + b"\n" for line in whole)
            if pending:
                yield pending
            return
        source.seek(0)
        while line := source.readline(_LINE_LIMIT):
            yield line


def cmd_verify_export(args: argparse.Namespace) -> None:
    """Needs no node: the file and the workspace key."""
    from appliance.export_verify import verify_lines

    key = None
    if args.workspace_key:
        try:
            key = bytes.fromhex(args.workspace_key)
        except ValueError:
            key = b""
        if len(key) != 32:
            raise CliError("--workspace-key takes the workspace key as 64 hex digits (compliance-export prints it)")
    try:
        report = verify_lines(_plain_lines(Path(args.file).expanduser(), args.identity), key)
    except OSError as exc:
        raise CliError(f"cannot read {args.file}: {exc.strerror or exc}") from exc
    payload = {
        "ok": report.ok,
        "records": report.records,
        "complete": report.complete,
        "workspace_key": report.workspace_key,
        "workspace_key_from_file": report.workspace_key_from_file,
        "node": {"id": report.node_id, "name": report.node_name},
        "created_at": report.created_at,
        "problems": [{"line": p.line, "record": p.record_id, "reason": p.reason} for p in report.problems],
    }
    lines = [f"{args.file}: {report.records:,} records exported by {report.node_name} ({report.node_id}) at {report.created_at}"]
    lines += [f"  {problem}" for problem in report.problems]
    if report.ok:
        lines.append("Every record holds: signed by the exporting node and by its author, chained to the workspace key, none missing or moved.")
    if report.workspace_key_from_file:
        lines.append(f"Checked against the workspace key the file names ({report.workspace_key}); give --workspace-key to check against the one you trust.")
    emit(args, payload, "\n".join(lines))
    sys.stdout.flush()
    if not report.ok:
        raise CommandFailed(f"the export does not verify: {len(report.problems)} problem(s), first: {report.problems[0] if report.problems else 'incomplete'}", 1, "ExportTampered")


def cmd_decrypt_export(args: argparse.Namespace) -> None:
    from appliance.export_sealing import open_sealed, parse_identity
    from appliance.files import create_private

    source = Path(args.file).expanduser()
    target = Path(args.out).expanduser() if args.out else source.with_name(source.name.removesuffix(".sealed") + (".decrypted" if not source.name.endswith(".sealed") else ""))
    if target.exists():
        raise CliError(f"{target} exists already")
    identity = parse_identity(Path(args.identity).expanduser().read_text())
    partial = target.with_name(f".{target.name}.partial")
    written = 0
    try:
        with open(source, "rb") as reader, open(create_private(partial), "wb") as writer:
            for chunk in open_sealed(reader, identity):
                writer.write(chunk)
                written += len(chunk)
            writer.flush()
            os.fsync(writer.fileno())
        os.rename(partial, target)
    except OSError as exc:
        raise CliError(f"cannot decrypt {source} into {target}: {exc.strerror or exc}") from exc
    finally:
        partial.unlink(missing_ok=True)
    emit(args, {"file": str(target), "bytes": written}, f"Decrypted into {target} ({written:,} bytes)")


def cmd_export_key(args: argparse.Namespace) -> None:
    from appliance.export_sealing import new_identity
    from appliance.files import create_private

    target = Path(args.out).expanduser()
    text, public = new_identity()
    try:
        with open(create_private(target), "w") as out:
            out.write(text)
    except FileExistsError as exc:
        raise CliError(f"{target} exists already") from exc
    except OSError as exc:
        raise CliError(f"cannot write {target}: {exc.strerror or exc}") from exc
    human = f"Identity written to {target} (keep it secret and safe)\nRecipient key: {public}\n  rallypoint compliance-export ... --recipient {public}"
    emit(args, {"identity_file": str(target), "recipient": public}, human)


def _filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=[f.value for f in ExportFormat])
    parser.add_argument("--to", metavar="PATH")
    parser.add_argument("--channel", action="append", metavar="NAME", help="only this channel (repeatable)")
    parser.add_argument("--user", action="append", metavar="NAME", help="only events by this user (repeatable)")
    parser.add_argument("--files", action="store_true", help="the attachments' files too (beside the export; in each EML for globalrelay)")
    parser.add_argument("--recipient", metavar="KEY", help="encrypt to this X25519 key (rallypoint export-key makes one)")


def _export_arguments(parser: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    _filters(parser)
    parser.add_argument("--since", metavar="TIME", help="from this time, inclusive (ISO 8601, UTC unless said)")
    parser.add_argument("--until", metavar="TIME", help="up to this time, exclusive")
    parser.add_argument("--by-received", action="store_true", help="filter by when this node received each change, not when its author made it")
    parser.add_argument("--scheduled", action="store_true", help="run the stored schedule if due (what the image's timer calls)")
    parser.add_argument("--force", action="store_true", help="with --scheduled: run now even if not due")


def _schedule_arguments(parser: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    _filters(parser)
    parser.add_argument("--every", metavar="DURATION", help="how often: 30m, 12h, 1d (default), 1w")
    parser.add_argument("--off", action="store_true", help="stop scheduled exports")


def _verify_arguments(parser: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE")
    parser.add_argument("--workspace-key", metavar="HEX", help="the workspace key you trust (else the file's own is used, and said)")
    parser.add_argument("--identity", metavar="KEYFILE", help="the identity file, when the export is encrypted")


def _decrypt_arguments(parser: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE")
    parser.add_argument("--identity", required=True, metavar="KEYFILE")
    parser.add_argument("--out", metavar="PATH", help="where to write (default: FILE without .sealed)")


def _key_arguments(parser: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, metavar="KEYFILE")


COMPLIANCE_EXPORT = Command(
    "compliance-export", "admin: export messages with their history for a time range, channels or users (csv, actiance, globalrelay, jsonl)", cmd_compliance_export, _export_arguments
)
COMPLIANCE_SCHEDULE = Command(
    "compliance-schedule", "show or (admin) set the scheduled compliance export (each run exports what arrived since the last)", cmd_compliance_schedule, _schedule_arguments
)
VERIFY_EXPORT = Command("verify-export", "check a signed (jsonl) compliance export offline: a changed record is named", cmd_verify_export, _verify_arguments)
DECRYPT_EXPORT = Command("decrypt-export", "decrypt a compliance export written with --recipient", cmd_decrypt_export, _decrypt_arguments)
EXPORT_KEY = Command("export-key", "make a recipient key pair for encrypted compliance exports", cmd_export_key, _key_arguments)

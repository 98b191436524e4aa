"""The words for what a courier run did: what an import brought in or refused and why, and which
bundles an export wrote - the same for the console and the command line. Plain text, with every
name from elsewhere made printable."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from sync import sneakernet
from sync.sneakernet import ExportReport, ImportReport
from tui.text import printable


def node_name(node_id: str, names: Mapping[str, str]) -> str:
    """A node by its name when the directory knows it (the peers list pairs names and ids)."""
    name = names.get(node_id)
    return printable(name) if name else node_id


def node_label(node_id: str, names: Mapping[str, str]) -> str:
    """A node as a notification names it: "bravo (ABCDEFG-…)", its name with the start of its
    id to check it by; the whole id when the directory does not know it."""
    name = names.get(node_id)
    return f"{printable(name)} ({node_id.split('-')[0]}-…)" if name else node_id


def import_report_text(report: ImportReport, quarantine: Path, names: Mapping[str, str]) -> str:
    """What an import brought in (or, previewed, would bring), what it refused and why.
    `names`: node id -> node name, to say who sent what."""
    lines = ["Preview: nothing was changed on this node or the stick."] if report.preview else []
    senders = ", ".join(node_name(sender, names) for sender in report.senders)
    verb = "Would import" if report.preview else "Imported"
    lines.append(f"{verb} {len(report.accepted)} bundle(s) from {len(report.senders)} node(s){': ' + senders if senders else ''}")
    for c in report.channels:
        name = f"#{printable(c.name)}" if c.name else f"channel {c.channel_id}"
        if c.readable:
            lines.append(f"  {name}: {c.new_messages} new message(s), {c.changes} change(s)")
        else:
            lines.append(f"  {name}: {c.changes} change(s) carried for other nodes (not readable here)")
    entries = sum(f.summary.directory_entries for f in report.accepted if f.summary)
    blobs = sum(f.summary.blobs for f in report.accepted if f.summary)
    if entries or blobs:
        lines.append(f"  directory: {entries} certificate(s)/revocation(s); files: {blobs}")
    if report.rejected:
        where = "" if report.preview else f" (kept in quarantine: {printable(str(quarantine))})"
        lines.append(f"Rejected {len(report.rejected)} bundle(s){where}:")
        lines.extend(f"  {printable(f.name)}: {f.outcome}: {printable(f.reason)}" for f in report.rejected)
        lines.extend(f"  {printable(f.name)}: not quarantined, left on the stick: {printable(f.quarantine_problem)}" for f in report.rejected if f.quarantine_problem)
    if report.quarantine_dropped:
        lines.append(f"Not kept in quarantine ({len(report.quarantine_dropped)}):")
        lines.extend(f"  {printable(d.name)} ({d.size:,} bytes): {printable(d.reason)}" for d in report.quarantine_dropped)
    for outcome in (sneakernet.SEEN, sneakernet.NOT_FOR_ME, sneakernet.WAITING):
        matching = [f for f in report.files if f.outcome == outcome]
        if matching:
            lines.append(f"{outcome.capitalize()}: {len(matching)} bundle(s)")
            lines.extend(f"  {printable(f.name)}: {printable(f.reason)}" for f in matching if outcome == sneakernet.WAITING)
    if report.problems:
        lines.append(f"Skipped on the stick ({len(report.problems)}):")
        lines.extend(f"  {printable(p.path)}: {printable(p.reason)}" for p in report.problems)
    if report.wiped:
        lines.append("THIS NODE WAS REVOKED: it has locked itself and wiped its data key and content.")
    return "\n".join(lines)


def export_report_text(report: ExportReport, names: Mapping[str, str]) -> str:
    """The bundles written, each with its recipients and size (the file name on a line of its
    own: it is 74 characters, and the console has 80)."""
    lines = [f"Wrote {len(report.bundles)} bundle(s), {report.size:,} bytes:"]
    for b in report.bundles:
        recipients = ", ".join(node_name(r, names) for r in b.recipients)
        lines.append(f"  {b.path.name}")
        lines.append(f"    for {recipients}: {b.changes} change(s), {b.blobs} file(s), {b.size:,} bytes")
    if report.superseded:
        lines.append(f"Removed {report.superseded} older bundle(s) of this node that these replace.")
    return "\n".join(lines)

"""A part of a compliance export, made in a worker process: a range of one channel's messages read
from the node's database through the worker's own connection (one read transaction), their
segments loaded, their records built (appliance/export_segment.py) and encoded as far as they
can be apart from the rest (appliance/export_encoders.encode_part). Everything that costs per
record runs here, on a core of its own (the Automerge binding holds the GIL: threads would not
help); the node's process only puts the parts into the file in order. `plan_ranges` cuts a
channel into parts along its segments, from counts the database sums up."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from sqlalchemy import and_, or_, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.sql.elements import ColumnElement

from appliance import documents, ids
from appliance import schema as t
from appliance.compliance_records import ExportFilter, ExportFormat, ExportHeader, ExportRecord, TimeBasis
from appliance.errors import RallypointError
from appliance.export_encoders import EncodedPart, encode_part
from appliance.export_segment import Channel, LogRow, Provenances, SegmentRecords, ViewRow
from appliance.store_access import ReadAccess, open_reader
from appliance.stored_documents import stored_documents

PART_FILE_BYTES = 64 * 1024 * 1024  # attachments a part carries (EML inside) or names for copying beside: a run of big files is cut into more parts
ROWS_PER_PART = 2048  # view rows a part aims at (~4 segments): enough that a part's fixed costs (a connection, its statements) fade, few enough to keep both workers busy from the start


@dataclass(frozen=True)
class ExportJob:
    access: ReadAccess
    format: ExportFormat
    header: ExportHeader
    channel: Channel
    after: str  # the part holds the channel's messages whose id is above this one
    upto: str | None  # ... up to and with this one (None: to the channel's end)
    filters: ExportFilter
    users: frozenset[str]  # user hexes the export is limited to (empty: everyone)
    origins: Provenances
    user_names: Mapping[str, str]  # user hex -> name, of the workspace's directory
    actor: bytes  # the actor id segments are loaded with (nothing is written to them)
    attach: bool  # EML: the records' attachments go inside
    name_files: bool  # the others, with files: the attachments' hashes come back, to copy beside
    file_bytes: int = PART_FILE_BYTES  # attachments' bytes past which the part stops (`EncodedPart.resume_after`)


@dataclass(frozen=True)
class PartRefused:
    reason: str


class SegmentSpan(NamedTuple):
    """How many of a segment's messages an export takes, and the first and last of their ids."""

    rows: int
    first: str
    last: str


def message_filter(filters: ExportFilter, users: frozenset[str]) -> list[ColumnElement[bool]]:
    """The view rows an export reads: those that may hold a record the filters admit."""
    m = t.messages.c
    where: list[ColumnElement[bool]] = []
    if filters.basis == TimeBasis.SENT:
        if filters.until is not None:
            where.append(m.created_at < filters.until)
        if filters.since is not None:
            where.append(or_(m.created_at >= filters.since, m.edited_at >= filters.since))
    elif filters.since is not None or filters.until is not None:
        c = t.changes.c
        window = [c.received_at >= filters.since] if filters.since is not None else []
        window += [c.received_at < filters.until] if filters.until is not None else []
        where.append(m.doc_id.in_(select(c.doc_id).where(and_(*window)).distinct()))
    if users:
        where.append(or_(m.author.in_(users), m.deleted_by.in_(users)))
    return where


def plan_ranges(spans: Sequence[SegmentSpan], rows_per_part: int = ROWS_PER_PART) -> list[tuple[str, str | None]]:
    """One channel's message ids cut into ranges (after, upto] of about `rows_per_part` rows, at
    the ends of segments (a segment is then loaded by one part alone, unless a late arrival in
    a later one reaches back). The ranges cover every id from the first to the last, whatever
    the spans say: a span only chooses where to cut. None: no spans, nothing to read."""
    ranges: list[tuple[str, str | None]] = []
    after, upto, rows = "", "", 0
    for span in sorted(spans, key=lambda s: s.first):
        if span.last <= after:  # nested in a span already cut: its rows are in the parts planned
            continue
        rows += span.rows
        upto = max(upto, span.last)
        if rows >= rows_per_part and upto > after:  # (spans ending where the last part did add to the next)
            ranges.append((after, upto))
            after, rows = upto, 0
    if rows:
        ranges.append((after, None))
    elif ranges:
        ranges[-1] = (ranges[-1][0], None)  # the last range runs to the channel's end: nothing arriving meanwhile falls between
    return ranges


def run_job(job: ExportJob) -> EncodedPart | PartRefused:
    """The part `job` names, or why it could not be made (what the binding raises on a damaged
    segment is turned into a refusal by appliance/documents.py)."""
    try:
        engine = open_reader(job.access)
        try:
            with engine.begin() as conn:
                return _part(job, conn)
        finally:
            engine.dispose()
    except SQLAlchemyError as exc:
        return PartRefused(f"{job.channel.name}: database error: {str(getattr(exc, 'orig', None) or exc).splitlines()[0]}")
    except RallypointError as exc:
        return PartRefused(f"{job.channel.name}: {exc}")
    except MemoryError:
        return PartRefused(f"{job.channel.name}: a part of the export outgrew the worker's memory")


def _part(job: ExportJob, conn: Connection) -> EncodedPart:
    m = t.messages.c
    bounds = [m.channel_id == job.channel.channel_id, m.message_id > job.after]
    if job.upto is not None:
        bounds.append(m.message_id <= job.upto)
    columns = (t.REACTIONS_READ if name == "reactions" else m[name] for name in ViewRow._fields)
    query = select(*columns).select_from(t.MESSAGES_WITH_REACTIONS).where(and_(*bounds, *message_filter(job.filters, job.users))).order_by(m.message_id)
    rows = [ViewRow._make(row) for row in conn.execute(query)]
    segments = _segments(job, conn, list(dict.fromkeys(row.doc_id for row in rows)))
    records: list[ExportRecord] = []
    files: dict[str, int] = {}  # hash -> size, of the attachments the records name
    file_bytes = 0
    resume_after: str | None = None
    for at, row in enumerate(rows):
        made = [record for record in segments[row.doc_id].records(row, job.channel) if _admitted(job, record)]
        if job.attach or job.name_files:
            more = {f.hash: f.size for record in made for f in record.files if f.hash not in files}
            if at and file_bytes + sum(more.values()) > job.file_bytes:
                resume_after = rows[at - 1].message_id
                break
            files |= more
            file_bytes += sum(more.values())
        records += made
    part = encode_part(job.format, job.header, job.channel, records, attachment_bytes(conn, files) if job.attach else {}, name_files=job.name_files)
    return part if resume_after is None else dataclasses.replace(part, resume_after=resume_after)


def _segments(job: ExportJob, conn: Connection, doc_ids: list[str]) -> dict[str, SegmentRecords]:
    stored = stored_documents(conn, doc_ids)
    c = t.changes.c
    logged: dict[str, list[LogRow]] = {doc_id: [] for doc_id in doc_ids}
    for row in conn.execute(select(c.doc_id, *(c[name] for name in LogRow._fields)).where(c.doc_id.in_(doc_ids))):
        logged[row[0]].append(LogRow._make(row[1:]))
    names = job.user_names

    def user_name(user: str) -> str:
        return names.get(user) or ids.unknown_user(user)

    out: dict[str, SegmentRecords] = {}
    for doc_id in doc_ids:
        data = stored[doc_id].data
        doc = documents.load_document(data, job.actor) if data else documents.new_document(job.actor)
        out[doc_id] = SegmentRecords(doc_id, doc, logged[doc_id], job.origins, user_name)
    return out


def _admitted(job: ExportJob, record: ExportRecord) -> bool:
    if job.users and record.author not in job.users:
        return False
    filters = job.filters
    if filters.since is None and filters.until is None:
        return True
    when = record.at if filters.basis == TimeBasis.SENT else (record.provenance.received_at if record.provenance else None)
    return when is not None and filters.admits(when)


def attachment_bytes(conn: Connection, hashes: Iterable[str]) -> dict[str, bytes]:
    """The stored bytes of the attachments `hashes` (hex) names, by hash: those a part carries
    (EML), or copies beside the export (in the node's process)."""
    wanted = sorted(bytes.fromhex(h) for h in hashes)
    if not wanted:
        return {}
    rows: Any = conn.execute(select(t.blobs.c.hash, t.blobs.c.data).where(t.blobs.c.hash.in_(wanted)))
    return {row.hash.hex(): row.data for row in rows}

"""Compliance export: an admin's copy of the messages in a time range, channels or users, with
edits and deletions as history, reactions, attachments (metadata, optionally the files), each
event with its author's change proof and its provenance, in CSV, Actiance XML, GlobalRelay EML
or signed JSON lines, optionally encrypted to a recipient key; audited, streamed page by page,
and written under a partial name until whole. Scheduled runs: appliance/services/compliance_schedule.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import and_, or_, select

from appliance import crypto, documents, ids
from appliance import schema as t
from appliance.audit_actions import AuditAction
from appliance.compliance_records import ExportFilter, ExportFormat, ExportHeader, ExportRecord, ExportResult, RecordKind, TimeBasis
from appliance.errors import InvalidInput, NotFound, StorageError
from appliance.export_encoders import Chunk, Encoder
from appliance.export_segment import Channel, LogRow, Provenances, SegmentRecords, ViewRow
from appliance.export_writer import ExportSink, Written
from appliance.kernel import Kernel
from appliance.services.compliance_schedule import ComplianceSchedule
from appliance.services.identity import IdentityService
from appliance.services.replica import ReplicaService, stored_documents
from appliance.services.roster import Roster

PAGE = 2000  # view rows read at a time: memory stays bounded whatever the export's size


class ComplianceService:
    def __init__(self, kernel: Kernel, identity: IdentityService, roster: Roster, replica: ReplicaService) -> None:
        self._kernel = kernel
        self._identity = identity
        self._roster = roster
        self._replica = replica
        self.schedule = ComplianceSchedule(kernel, identity, roster, self)

    async def export(
        self,
        target: Path,
        fmt: ExportFormat,
        filters: ExportFilter,
        *,
        with_files: bool = False,
        recipient: bytes | None = None,
        scheduled_by: str | None = None,
    ) -> ExportResult:
        """Admin (or a schedule an admin set, `scheduled_by`): writes the export to `target`."""
        if scheduled_by is None:
            await self._identity.require_admin("compliance export")
        if not target.parent.is_dir():
            raise InvalidInput(f"no folder {target.parent}")
        actor = scheduled_by or self._identity.user_key.hex()
        header = await self._header(fmt, filters, actor)
        encoder = Encoder(fmt, lambda message: crypto.sign(self._identity.signing_key, message))
        detail: dict[str, object] = {"format": fmt.value, "filters": filters.as_json(), "file": target.name, "files": with_files, "encrypted_to": recipient.hex() if recipient else None}
        if scheduled_by is not None:
            detail["scheduled"] = True
        try:
            sink = await asyncio.to_thread(ExportSink, target, zip_entries=encoder.zipped, recipient=recipient, with_files=with_files and not encoder.wants_files)
        except OSError as exc:
            await self._audit_failure(actor, detail, exc)
            raise StorageError(f"cannot write the export into {target.parent}: {exc.strerror or exc}") from exc
        try:
            records, messages = await self._stream(sink, encoder, header, filters, with_files)
            written: Written = await asyncio.to_thread(sink.commit)
        except OSError as exc:
            await asyncio.to_thread(sink.abort)
            await self._audit_failure(actor, detail, exc)
            raise StorageError(f"cannot write the export into {target.parent}: {exc.strerror or exc}; nothing was left there") from exc
        except BaseException:
            await asyncio.to_thread(sink.abort)
            raise
        detail |= {"records": records, "messages": messages, "bytes": written.bytes, "sha256": written.sha256, "attachments": written.files}
        try:
            async with self._kernel.store.transaction() as conn:
                await self._kernel.audit(conn, self._kernel.clock(), actor, AuditAction.COMPLIANCE_EXPORTED, detail)
        except StorageError as exc:  # the export is whole; the audit could not be written: say so
            self._kernel.note_skipped_write(f"the compliance export {target.name} was written but is not in the audit log: {exc}")
        return ExportResult(
            path=str(written.path),
            format=fmt,
            records=records,
            messages=messages,
            bytes=written.bytes,
            sha256=written.sha256,
            files_dir=str(written.files_dir) if written.files_dir else None,
            files=written.files,
            encrypted_to=recipient.hex() if recipient else None,
            since=filters.since,
            until=filters.until,
            workspace_key=header.workspace_key,
        )

    async def _stream(self, sink: ExportSink, encoder: Encoder, header: ExportHeader, filters: ExportFilter, with_files: bool) -> tuple[int, int]:
        """Every record into the sink; (records, messages)."""
        records = messages = 0
        in_flight: asyncio.Future[None] | None = None  # the previous page, encoded and written in a thread meanwhile
        try:
            await asyncio.to_thread(_write, sink, encoder.start(header))
            async for batch, attachments in self._batches(filters, with_files):
                records += len(batch)
                messages += sum(1 for record in batch if record.kind == RecordKind.POST)
                if in_flight is not None:
                    await in_flight
                in_flight = asyncio.ensure_future(asyncio.to_thread(_encode, encoder, sink, batch, attachments, with_files and not encoder.wants_files))
            if in_flight is not None:
                await in_flight
            await asyncio.to_thread(_write, sink, encoder.finish())
        finally:
            if in_flight is not None and not in_flight.done():  # failed meanwhile: the thread ends before its file is removed
                await asyncio.wait([in_flight])
        return records, messages

    async def _audit_failure(self, actor: str, detail: dict[str, object], exc: OSError) -> None:
        try:
            async with self._kernel.store.transaction() as conn:
                await self._kernel.audit(conn, self._kernel.clock(), actor, AuditAction.COMPLIANCE_EXPORT_FAILED, detail | {"error": exc.strerror or str(exc)})
        except StorageError as failed:
            self._kernel.note_skipped_write(f"a failed compliance export is not in the audit log: {failed}")

    async def _header(self, fmt: ExportFormat, filters: ExportFilter, actor: str) -> ExportHeader:
        async with self._kernel.store.reading() as conn:
            d = t.directory_entries.c
            certificates: Sequence[bytes] = (await conn.execute(select(d.data).where(d.kind == "certificate").order_by(d.fingerprint))).scalars().all()
        row = self._identity.row
        return ExportHeader(
            format=fmt,
            workspace_name=row.workspace_name,
            workspace_key=row.workspace_key.hex(),
            node_id=self._identity.node_id,
            node_name=row.node_name,
            node_key=row.node_key.hex(),
            certificates=tuple(certificates),
            filters=filters,
            created_at=self._kernel.clock(),
            exported_by=actor,
        )

    async def _channels(self, names: Sequence[str]) -> dict[str, tuple[str, str]]:
        async with self._kernel.store.reading() as conn:
            rows = (await conn.execute(select(t.channels.c.channel_id, t.channels.c.name, t.channels.c.kind))).all()
        channels = {row.channel_id: (row.name, row.kind) for row in rows}
        if names:
            unknown = sorted(set(names) - {name for name, _ in channels.values()})
            if unknown:
                raise NotFound(f"no channel named {', '.join(unknown)} on this node")
            channels = {cid: v for cid, v in channels.items() if v[0] in names}
        return channels

    def _users(self, names: Sequence[str]) -> frozenset[str]:
        by_name = {cert.name: key.hex() for key, cert in self._roster.users_ever.items()}
        unknown = sorted(set(names) - set(by_name))
        if unknown:
            raise NotFound(f"no user named {', '.join(unknown)} in this workspace")
        return frozenset(by_name[name] for name in names)

    async def _batches(self, filters: ExportFilter, with_files: bool) -> AsyncIterator[tuple[list[ExportRecord], dict[str, bytes]]]:
        """The records, a page of view rows at a time, channel by channel in message order (each
        page one range of the (channel_id, message_id) index: no page costs more than the last)."""
        channels = await self._channels(filters.channels)
        users = self._users(filters.users)
        m = t.messages.c
        where: list[Any] = []
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
        columns = [m[name] for name in ViewRow._fields]
        segments: dict[str, SegmentRecords] = {}  # the segments being read (a late arrival sits in a later one)
        reading: dict[str, asyncio.Future[tuple[bytes, list[LogRow]]]] = {}  # segments of this page, read ahead
        origins = Provenances(self._identity.node_id, {ids.key_id(key): name for key, name in self._roster.node_names.items()})
        names: dict[str, str] = {}

        def user_name(user: str) -> str:
            found = names.get(user)
            if found is None:
                found = names[user] = self._roster.user_name(user)
            return found

        described = {channel_id: Channel(channel_id, name, kind) for channel_id, (name, kind) in channels.items()}
        everything = filters.since is None and filters.until is None

        async def page(after: tuple[str, str]) -> Sequence[ViewRow]:
            query = select(*columns).where(and_(m.channel_id == after[0], m.message_id > after[1], *where))
            async with self._kernel.store.reading() as conn:
                return [ViewRow._make(row) for row in await conn.execute(query.order_by(m.message_id).limit(PAGE))]

        keys = [(channel_id, "") for channel_id in sorted(channels)]
        if not keys:
            return
        following = asyncio.ensure_future(page(keys.pop(0)))
        try:
            while True:
                rows = await following
                if len(rows) == PAGE:
                    keys.insert(0, (rows[-1].channel_id, rows[-1].message_id))
                if not keys and not rows:
                    return
                # the next page is read (SQLite, off the GIL) while this one is turned into records
                following = asyncio.ensure_future(page(keys.pop(0))) if keys else asyncio.ensure_future(_nothing())
                batch: list[ExportRecord] = []
                for doc_id in dict.fromkeys(row.doc_id for row in rows):  # the page's segments are read meanwhile too
                    if doc_id not in segments and doc_id not in reading:
                        reading[doc_id] = asyncio.ensure_future(self._read_segment(doc_id))
                for row in rows:
                    segment = segments.get(row.doc_id)
                    if segment is None:
                        if len(segments) >= 4:
                            del segments[next(iter(segments))]
                        read = reading.pop(row.doc_id, None) or asyncio.ensure_future(self._read_segment(row.doc_id))
                        segment = segments[row.doc_id] = self._segment(row.doc_id, await read, origins, user_name)
                    for record in segment.records(row, described[row.channel_id]):
                        if users and record.author not in users:
                            continue
                        if everything:
                            batch.append(record)
                            continue
                        when = record.at if filters.basis == TimeBasis.SENT else (record.provenance.received_at if record.provenance else None)
                        if when is not None and filters.admits(when):
                            batch.append(record)
                yield batch, (await self._attachments(batch) if with_files else {})
        finally:
            following.cancel()
            for pending in reading.values():
                pending.cancel()

    async def _read_segment(self, doc_id: str) -> tuple[bytes, list[LogRow]]:
        """A segment as stored (its snapshot and later changes) and its change-log rows, in one
        hop, apart from the replica's cache: an export reads every segment once and would push
        out what the node is working on."""
        c = t.changes.c
        query = select(*(c[name] for name in LogRow._fields)).where(c.doc_id == doc_id)
        async with self._kernel.store.reading() as conn:
            return await conn.run_sync(lambda sync_conn: (stored_documents(sync_conn, [doc_id])[doc_id].data, [LogRow._make(row) for row in sync_conn.execute(query)]))

    def _segment(self, doc_id: str, read: tuple[bytes, list[LogRow]], origins: Provenances, user_name: Callable[[str], str]) -> SegmentRecords:
        data, rows = read
        doc = documents.load_document(data, self._replica.actor()) if data else documents.new_document(self._replica.actor())
        return SegmentRecords(doc_id, doc, rows, origins, user_name)

    async def _attachments(self, batch: Sequence[ExportRecord]) -> dict[str, bytes]:
        wanted = sorted({bytes.fromhex(f.hash) for record in batch for f in record.files})
        if not wanted:
            return {}
        async with self._kernel.store.reading() as conn:
            rows = (await conn.execute(select(t.blobs.c.hash, t.blobs.c.data).where(t.blobs.c.hash.in_(wanted)))).all()
        return {row.hash.hex(): row.data for row in rows}


async def _nothing() -> Sequence[ViewRow]:
    return ()


def _write(sink: ExportSink, chunks: Sequence[Chunk]) -> None:
    for chunk in chunks:
        if chunk.entry is None:
            sink.write(chunk.data)
        else:
            sink.entry(chunk.entry, chunk.data)


def _encode(encoder: Encoder, sink: ExportSink, batch: Sequence[ExportRecord], attachments: dict[str, bytes], beside: bool) -> None:
    """In a worker thread, one page at a time and in order: signing (which releases the GIL)
    runs on another core while the next page is gathered."""
    _write(sink, encoder.add_many(batch, attachments))
    if beside:
        for digest, data in attachments.items():
            sink.attachment(digest, data)

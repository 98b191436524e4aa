"""Compliance export: an admin's copy of the messages in a time range, channels or users, with
edits and deletions as history, reactions, attachments (metadata, optionally the files), each
event with its author's change proof and its provenance, in CSV, Actiance XML, GlobalRelay EML
or signed JSON lines, optionally encrypted to a recipient key; audited, and written under a
partial name until whole. The records are read, built and encoded part by part in the node's
worker processes (appliance/export_job.py: both cores; a few parts ahead, so memory stays
bounded); this process puts the parts into the file in order. Scheduled runs:
appliance/services/compliance_schedule.py."""

from __future__ import annotations

import asyncio
import dataclasses
from collections import deque
from collections.abc import Sequence
from itertools import islice
from pathlib import Path

from sqlalchemy import func, select

from appliance import crypto, export_job, ids
from appliance import schema as t
from appliance.audit_actions import AuditAction
from appliance.compliance_records import ExportFilter, ExportFormat, ExportHeader, ExportResult
from appliance.errors import ChangeRejected, InvalidInput, NotFound, StorageError
from appliance.export_encoders import Chunk, EncodedPart, Encoder
from appliance.export_job import ExportJob, SegmentSpan, attachment_bytes, message_filter, plan_ranges
from appliance.export_segment import Channel, Provenances
from appliance.export_writer import ExportSink, Written
from appliance.kernel import Kernel
from appliance.services.compliance_schedule import ComplianceSchedule
from appliance.services.identity import IdentityService
from appliance.services.replica import ReplicaService
from appliance.services.roster import Roster
from appliance.workers import WorkerPool, settle


class ComplianceService:
    def __init__(self, kernel: Kernel, identity: IdentityService, roster: Roster, replica: ReplicaService, pool: WorkerPool) -> None:
        self._kernel = kernel
        self._identity = identity
        self._roster = roster
        self._replica = replica
        self._pool = pool
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
            await self._audit_failure(actor, detail, exc.strerror or str(exc))
            raise StorageError(f"cannot write the export into {target.parent}: {exc.strerror or exc}") from exc
        try:
            records, messages = await self._stream(sink, encoder, header, filters, with_files)
            written: Written = await asyncio.to_thread(sink.commit)
        except OSError as exc:
            await asyncio.to_thread(sink.abort)
            await self._audit_failure(actor, detail, exc.strerror or str(exc))
            raise StorageError(f"cannot write the export into {target.parent}: {exc.strerror or exc}; nothing was left there") from exc
        except StorageError as exc:  # a part could not be read or made
            await asyncio.to_thread(sink.abort)
            await self._audit_failure(actor, detail, str(exc))
            raise StorageError(f"{exc}; nothing was left in {target.parent}") from exc
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
        """Every part into the sink, in order; (records, messages)."""
        jobs = iter(await self._jobs(header, filters, with_files and not encoder.wants_files, with_files and encoder.wants_files))
        records = messages = 0
        parts: deque[tuple[ExportJob, asyncio.Future[EncodedPart]]] = deque((job, asyncio.ensure_future(self._part(job))) for job in islice(jobs, self._pool.workers + 1))
        writing: asyncio.Future[None] | None = None  # the previous part, written in a thread meanwhile
        try:
            await asyncio.to_thread(_write, sink, encoder.start(header))
            while parts:
                job, making = parts.popleft()
                part = await making
                if part.resume_after is not None:  # its attachments filled it: the rest of its range comes next
                    rest = dataclasses.replace(job, after=part.resume_after)
                    parts.appendleft((rest, asyncio.ensure_future(self._part(rest))))
                else:
                    following = next(jobs, None)
                    if following is not None:
                        parts.append((following, asyncio.ensure_future(self._part(following))))
                records, messages = records + part.records, messages + part.messages
                attachments = await self._attachments(part.file_hashes)
                if writing is not None:
                    await writing
                writing = asyncio.ensure_future(asyncio.to_thread(_write_part, encoder, sink, part, attachments))
            if writing is not None:
                await writing
            await asyncio.to_thread(_write, sink, encoder.finish())
        finally:
            await settle([making for _, making in parts])
            if writing is not None and not writing.done():  # failed meanwhile: the thread ends before its file is removed
                await asyncio.wait([writing])
        return records, messages

    async def _part(self, job: ExportJob) -> EncodedPart:
        """One part, made by the node's worker processes."""
        try:
            return await self._pool.export_part(job)
        except ChangeRejected as exc:
            raise StorageError(f"the export could not be made: {exc}") from exc

    async def _audit_failure(self, actor: str, detail: dict[str, object], error: str) -> None:
        try:
            async with self._kernel.store.transaction() as conn:
                await self._kernel.audit(conn, self._kernel.clock(), actor, AuditAction.COMPLIANCE_EXPORT_FAILED, detail | {"error": error})
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

    async def _jobs(self, header: ExportHeader, filters: ExportFilter, name_files: bool, attach: bool) -> list[ExportJob]:
        """The export's parts: each channel (by id) cut along its segments by `plan_ranges`, from
        one summing statement a channel."""
        access = self._kernel.store.read_access()
        if access is None:
            raise StorageError("a compliance export reads the store from its worker processes: this store is not SQLite")
        channels = await self._channels(filters.channels)
        users = self._users(filters.users)
        origins = Provenances(self._identity.node_id, {ids.key_id(key): name for key, name in self._roster.node_names.items()})
        user_names = {key.hex(): cert.name for key, cert in self._roster.current.users.items()}
        m = t.messages.c
        where = message_filter(filters, users)
        jobs: list[ExportJob] = []
        async with self._kernel.store.reading() as conn:
            for channel_id in sorted(channels):
                name, kind = channels[channel_id]
                summed = select(func.count(), func.min(m.message_id), func.max(m.message_id)).where(m.channel_id == channel_id, *where).group_by(m.doc_id)
                spans = [SegmentSpan(*row) for row in await conn.execute(summed)]
                channel = Channel(channel_id, name, kind)
                for after, upto in plan_ranges(spans, export_job.ROWS_PER_PART):
                    jobs.append(
                        ExportJob(access, header.format, header, channel, after, upto, filters, users, origins, user_names, self._replica.actor(), attach, name_files, export_job.PART_FILE_BYTES)
                    )
        return jobs

    async def _attachments(self, hashes: Sequence[str]) -> dict[str, bytes]:
        """The bytes of the attachments a part names, to copy beside the export."""
        if not hashes:
            return {}
        async with self._kernel.store.reading() as conn:
            return await conn.run_sync(attachment_bytes, hashes)


def _write(sink: ExportSink, chunks: Sequence[Chunk]) -> None:
    for chunk in chunks:
        if chunk.entry is None:
            sink.write(chunk.data)
        else:
            sink.entry(chunk.entry, chunk.data)


def _write_part(encoder: Encoder, sink: ExportSink, part: EncodedPart, attachments: dict[str, bytes]) -> None:
    """In a thread, one part at a time and in order: the file's share of the work (line
    numbers and checkpoints, Conversations, the zip's headers), its writing, hashing and
    encryption, and the attachments copied beside."""
    _write(sink, encoder.add_part(part))
    for digest, data in attachments.items():
        sink.attachment(digest, data)

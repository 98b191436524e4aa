"""Compliance export: an admin's copy of the messages in a time range, channels or users, with
edits and deletions as history, reactions, attachments (metadata, optionally the files), each
event with its author's change proof and its provenance, in CSV, Actiance XML, GlobalRelay EML
or signed JSON lines, optionally encrypted to a recipient key; audited, streamed page by page,
and written under a partial name until whole. Scheduled runs: appliance/services/compliance_schedule.py."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import and_, or_, select

from appliance import crypto, export_history, ids
from appliance import schema as t
from appliance.audit_actions import AuditAction
from appliance.compliance_records import (
    ChangeProof,
    ExportFilter,
    ExportFormat,
    ExportHeader,
    ExportRecord,
    ExportResult,
    FileMeta,
    Provenance,
    Reaction,
    RecordKind,
    TimeBasis,
)
from appliance.documents import ROOT
from appliance.errors import InvalidInput, NotFound, StorageError
from appliance.export_encoders import Chunk, Encoder
from appliance.export_history import ChangeIndex, ChangeRef
from appliance.export_writer import ExportSink, Written
from appliance.kernel import Kernel
from appliance.services.compliance_schedule import ComplianceSchedule
from appliance.services.identity import IdentityService
from appliance.services.replica import ReplicaService
from appliance.services.roster import Roster

PAGE = 2000  # view rows read at a time: memory stays bounded whatever the export's size


class _LogRow(Protocol):
    """The columns of a change-log row the export reads (SQLAlchemy's rows, as read)."""

    hash: bytes
    actor: bytes
    seq: int
    signature: bytes | None
    vouched_by: bytes
    received_from: str | None
    received_at: int


class _DocContext:
    """One segment's document, its change index and its change-log rows."""

    def __init__(self, doc_id: str, doc: Any, rows: Sequence[_LogRow]) -> None:
        self.doc_id = doc_id
        self.doc = doc
        self.index = ChangeIndex(doc)
        self.by_hash = {row.hash: row for row in rows}
        self.by_actor: dict[bytes, list[_LogRow]] = {}
        self.provenances: dict[tuple[str | None, int], Provenance] = {}  # most changes of a segment share one arrival
        for row in sorted(rows, key=lambda r: r.seq):
            self.by_actor.setdefault(row.actor, []).append(row)

    def logged(self, change: ChangeRef) -> tuple[_LogRow | None, _LogRow | None]:
        """(the row standing for the change, the row whose signature vouches for it)."""
        row = self.by_hash.get(change.hash)
        if row is None:  # carried inside a whole segment: the actor's later signed row covers it
            row = next((r for r in self.by_actor.get(change.actor, ()) if r.seq >= change.seq and r.signature is not None), None)
        if row is None:
            return None, None
        signer = row if row.signature is not None else self.by_hash.get(row.vouched_by)
        return row, signer


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
        columns = (m.channel_id, m.doc_id, m.message_id, m.author, m.created_at, m.text, m.root_id, m.edited_at, m.deleted, m.deleted_by, m.reactions, m.files, m.withheld, m.tampered)
        contexts: dict[str, _DocContext] = {}  # the segments being read (a late arrival sits in a later one)
        here = self._identity.node_id
        nodes = {ids.key_id(key): name for key, name in self._roster.node_names.items()}
        names: dict[str, str] = {}

        async def page(after: tuple[str, str]) -> Sequence[Any]:
            query = select(*columns).where(and_(m.channel_id == after[0], m.message_id > after[1], *where))
            async with self._kernel.store.reading() as conn:
                return (await conn.execute(query.order_by(m.message_id).limit(PAGE))).all()

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
                for row in rows:
                    context = contexts.get(row.doc_id)
                    if context is None:
                        if len(contexts) >= 4:
                            del contexts[next(iter(contexts))]
                        context = contexts[row.doc_id] = await self._context(row.doc_id)
                    name, kind = channels[row.channel_id]
                    for record in self._records(row, context, (row.channel_id, name, kind), here, nodes, names):
                        if users and record.author not in users:
                            continue
                        when = record.at if filters.basis == TimeBasis.SENT else (record.provenance.received_at if record.provenance else None)
                        if filters.since is None and filters.until is None or (when is not None and filters.admits(when)):
                            batch.append(record)
                yield batch, (await self._attachments(batch) if with_files else {})
        finally:
            following.cancel()

    async def _context(self, doc_id: str) -> _DocContext:
        doc = await self._replica.document(doc_id)
        c = t.changes.c
        async with self._kernel.store.reading() as conn:
            rows = (await conn.execute(select(c.hash, c.actor, c.seq, c.signature, c.vouched_by, c.received_from, c.received_at).where(c.doc_id == doc_id))).all()
        return _DocContext(doc_id, doc, rows)  # rows as read: a value object each would cost a fifth of this

    async def _attachments(self, batch: Sequence[ExportRecord]) -> dict[str, bytes]:
        wanted = sorted({bytes.fromhex(f.hash) for record in batch for f in record.files})
        if not wanted:
            return {}
        async with self._kernel.store.reading() as conn:
            rows = (await conn.execute(select(t.blobs.c.hash, t.blobs.c.data).where(t.blobs.c.hash.in_(wanted)))).all()
        return {row.hash.hex(): row.data for row in rows}

    def _records(self, row: Any, context: _DocContext, channel: tuple[str, str, str], here: str, nodes: dict[str, str], names: dict[str, str]) -> list[ExportRecord]:
        """The message's events: the post, each edit, the deletion. A message never edited nor
        deleted is what its view row says (one lookup for its change); the others are read
        from the document's history."""
        channel_id, channel_name, channel_kind = channel
        deleted_by = row.deleted_by or None

        def name(user: str) -> str:
            found = names.get(user)
            if found is None:
                found = names[user] = self._roster.user_name(user)
            return found

        reactions = () if row.reactions == "{}" else tuple(Reaction(emoji, user, name(user)) for emoji, users in sorted(json.loads(row.reactions).items()) for user in users)

        def make(kind: RecordKind, n: int, author: str, change: ChangeRef | None, at: int, text: str, files: tuple[FileMeta, ...]) -> ExportRecord:
            proof, provenance = self._proof(context, change, here, nodes)
            return ExportRecord(
                f"{row.message_id}/{kind.value}/{n}",
                kind,
                row.message_id,
                channel_id,
                channel_name,
                channel_kind,
                author,
                name(author),
                at,
                row.created_at,
                text,
                row.root_id,
                files,
                reactions if kind == RecordKind.POST else (),
                bool(row.withheld),
                bool(row.tampered),
                proof,
                provenance,
            )

        if row.edited_at is None and not row.deleted and not row.tampered:
            got = context.doc.get(ROOT, row.message_id)
            change = context.index.of_op(got[1]) if got is not None else None
            files = () if row.files == "[]" else tuple(FileMeta(f["name"], f["size"], f["hash"]) for f in json.loads(row.files))
            return [make(RecordKind.POST, 0, row.author, change, row.created_at, row.text, files)]
        found = export_history.history(context.doc, context.index, row.message_id, bool(row.deleted), deleted_by)
        if found is None:  # a format-1 segment: the view row as it stands
            files = tuple(FileMeta(f["name"], f["size"], f["hash"]) for f in json.loads(row.files))
            out = [make(RecordKind.POST, 0, row.author, None, row.created_at, row.text, files)]
            if row.deleted:
                out.append(make(RecordKind.DELETION, 0, deleted_by or row.author, None, row.edited_at or row.created_at, "", ()))
            return out
        files = tuple(FileMeta(f.name, f.size, f.hash) for f in found.files)
        out = [make(RecordKind.POST, 0, found.author, found.post.change, found.post.at, found.post.text, files)]
        out.extend(make(RecordKind.EDIT, n, found.author, edit.change, edit.at, edit.text, ()) for n, edit in enumerate(found.edits, start=1))
        if found.deletion is not None:
            out.append(make(RecordKind.DELETION, 0, deleted_by or found.author, found.deletion.change, found.deletion.at, "", ()))
        return out

    def _proof(self, context: _DocContext, change: ChangeRef | None, here: str, nodes: dict[str, str]) -> tuple[ChangeProof | None, Provenance | None]:
        if change is None:
            return None, None
        row, signer = context.logged(change)
        if row is None:
            return None, None
        provenance = context.provenances.get((row.received_from, row.received_at))
        if provenance is None:
            source = row.received_from or here
            provenance = context.provenances[(row.received_from, row.received_at)] = Provenance(source, nodes.get(source, source), row.received_at)
        if signer is None or signer.signature is None:
            return None, provenance
        return ChangeProof(context.doc_id, change.hash.hex(), signer.hash.hex(), signer.signature.hex()), provenance


async def _nothing() -> Sequence[Any]:
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

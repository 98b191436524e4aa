"""Everything from elsewhere (bundles, LAN, enrollment) comes in here: verified - format,
hash chain, author signature, the author's certificate and channel role - before anything
is written, then written in one transaction with its receipt; and the log of bundle
decisions."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from automerge._automerge import Document
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from appliance import certs, documents, head_rules, ids, policy, segments
from appliance import schema as t
from appliance.audit_actions import AuditAction
from appliance.audit_feed import AuditCarry
from appliance.changes import Authorise, SignedChange, VerifiedChange, verify_batch
from appliance.directory_records import judge_directory_batch, record_kind, split_records
from appliance.errors import AttributesRefused, ChangeRejected, HeadChangeRefused, MissingDependencies
from appliance.feed import Origin
from appliance.incoming import group_incoming
from appliance.kernel import Kernel
from appliance.model import ChannelIntake, ImportResult, ImportSummary, Receipt, WholeSegment
from appliance.services.audit_feeds import AuditFeeds, CheckedFeeds
from appliance.services.blobs import BlobsService
from appliance.services.custody import CustodyService
from appliance.services.directory import DirectoryService
from appliance.services.exchange import ExchangeService
from appliance.services.heads import ChannelHeads
from appliance.services.held_intake import HeldIntake, HeldWork
from appliance.services.identity import IdentityService
from appliance.services.replica import ReplicaService
from appliance.services.roster import Roster, admin_hexes
from appliance.services.views import SegmentTouched, ViewsService
from appliance.services.wholes_intake import WholeReads, WholesIntake, check_wholes
from appliance.workers import WorkerPool


class _Rollback(Exception):
    """Ends a preview import's transaction, carrying what it would have changed."""

    def __init__(self, summary: ImportSummary) -> None:
        super().__init__("preview")
        self.summary = summary



@dataclass(frozen=True)
class _Written:
    """What an import wrote: its summary, how many changes of the batches (not the wholes) it
    applied, and the heads of the documents the workers wrote."""

    summary: ImportSummary
    batched: int
    heads: dict[str, tuple[bytes, ...]]


@dataclass(frozen=True)
class Wholes:
    """An import's wholes on their way: read by the workers, admitted by `authoriser`."""

    reads: WholeReads
    authoriser: Callable[[str], Authorise]


class IntakeService:
    def __init__(
        self,
        kernel: Kernel,
        identity: IdentityService,
        roster: Roster,
        heads: ChannelHeads,
        replica: ReplicaService,
        views: ViewsService,
        directory: DirectoryService,
        blobs: BlobsService,
        exchange: ExchangeService,
        custody: CustodyService,
        feeds: AuditFeeds,
    ) -> None:
        self._kernel = kernel
        self._identity = identity
        self._roster = roster
        self._heads = heads
        self._replica = replica
        self._views = views
        self._directory = directory
        self._blobs = blobs
        self._exchange = exchange
        self._custody = custody
        self._feeds = feeds
        self._wholes = WholesIntake(replica, views, kernel.clock)
        self.held = HeldIntake(replica, views, kernel.clock, self._wholes.pool)

    @property
    def pool(self) -> WorkerPool:
        """The node's worker processes (the compliance export's parts are made there too)."""
        return self._wholes.pool

    def close(self) -> None:
        """Stops the worker processes, if any were started."""
        self._wholes.close()

    async def warm_workers(self) -> None:
        """Starts the worker processes now, ahead of an import that may read segments whole or
        bring many changes into segments held here."""
        await self._wholes.pool.warm()

    async def import_changes(self, doc_id: str, incoming: Sequence[SignedChange], received_from: str) -> ImportResult:
        """One document's batch through `import_batches`."""
        summary = await self.import_batches([(doc_id, incoming)], received_from=received_from)
        return ImportResult(doc_id, summary.changes, summary.duplicates)

    async def import_batches(
        self,
        batches: Sequence[tuple[str, Sequence[SignedChange]]],
        *,
        wholes: Sequence[WholeSegment] = (),
        blobs: Sequence[tuple[bytes, bytes]] = (),
        received_from: str,
        receipt: Receipt | None = None,
        preview: bool = False,
        progress: Callable[[str, int], None] | None = None,
        audit: AuditCarry | None = None,
    ) -> ImportSummary:
        """The verification path for everything from elsewhere (bundles, LAN, enrollment),
        all or nothing. Every change is checked - format, hash chain, author signature, the
        author's certificate and channel role - before anything is written: directory changes
        against the certificates they carry, channel heads against the directory as it will
        be, segments against the heads as they will be. Then one transaction appends, applies,
        materialises and records `receipt` (peer heads, bundle log, audit). One bad change
        rejects everything (ChangeRejected; MissingDependencies when it only lacks earlier
        changes). `preview` runs the same path and rolls it back. `progress` hears ("verify" or
        "write", its changes) as each document is done: a big bundle takes seconds.

        `wholes` are segments carried whole: those of documents this node holds nothing of are
        read in worker processes and admitted by their authors' signatures (appliance/wholes.py),
        after the batches, judged on the directory and heads as the batches leave them; the
        others are imported as their changes.

        `audit` carries other nodes' audit trails and the sender's acknowledgement of them (with
        a `receipt` only): each trail is checked against its origin's key before anything is
        written (AuditFeedRefused, a ChangeRejected) and stored in the same transaction."""
        grouped = group_incoming(batches, blobs, self._blobs.max_blob_bytes)
        check_wholes(wholes)
        async with self._kernel.lock:
            self._identity.require_unlocked()
            # The workers find which changes of their segments are held, from the segments as
            # stored. Wholes of documents held here join `grouped` as changes: the workers may
            # then take more (never fewer: the more changes, the sooner they take every segment).
            to_workers = self.held.for_workers(grouped)
            known = await self._replica.stored_hashes([doc_id for doc_id in grouped if doc_id not in to_workers] + [whole.doc_id for whole in wholes if whole.doc_id not in grouped])
            new_wholes = await self._wholes.split_known(wholes, known, grouped)
            held_ids = self.held.for_workers(grouped)
            order = [doc_id for doc_id in grouped if doc_id not in held_ids]
            relay = receipt.sender if receipt is not None else None
            feeds = await self._feeds.check(audit, receipt.sender) if audit and receipt is not None else CheckedFeeds((), {})
            try:
                plan, new_entries, directory, trial_heads = await self._verify_batches(order, grouped, known, relay, progress)
            except (HeadChangeRefused, AttributesRefused) as exc:
                if not preview:
                    await self._audit_refusal(exc, received_from)
                raise
            for doc_id in [whole.doc_id for whole in new_wholes] + list(held_ids):  # judged by the workers' authors, below
                channel_id = documents.parse_doc_id(doc_id).channel_id
                if channel_id not in trial_heads:
                    trial_heads[channel_id] = await self._heads.head(channel_id)
            for whole in new_wholes:
                if trial_heads[documents.parse_doc_id(whole.doc_id).channel_id] is None:
                    # Its head travels in an earlier part (a courier may bring the parts in any order).
                    raise MissingDependencies(f"{whole.doc_id}: its channel's head has not arrived yet")
            reads = self._wholes.start_reading(new_wholes, admin_hexes(directory), received_from)
            wholes_of = Wholes(reads, lambda doc_id: self._authoriser(doc_id, directory, trial_heads.get, relay))
            held = HeldWork(held_ids, grouped, lambda doc_id: self._authoriser(doc_id, directory, trial_heads.get, relay))
            touched = [doc_id for doc_id, _ in plan] + [whole.doc_id for whole in new_wholes] + list(held_ids)
            with self._replica.snapshots_held():  # an evicted document must not open a second write transaction
                try:
                    async with self._kernel.store.transaction() as conn:
                        first = await self._replica.newest_change_id(conn)
                        first_row = await self._views.newest_row(conn)
                        written = await self._write_batches(conn, plan, known, new_entries, blobs, received_from, preview, progress, wholes_of, held)
                        await self._views.withhold(conn, first_row, received_from)
                        # Wholes admitted are new whole: the duplicates are the changes of batches not applied.
                        summary = replace(written.summary, duplicates=sum(len(c) for c in grouped.values()) - written.batched, audit_entries=feeds.entries)
                        if receipt is not None:
                            await self._feeds.store(conn, feeds, receipt.sender)
                            await self.record_receipt(conn, receipt, summary, blobs, preview, feeds.skipped)
                        if preview:
                            raise _Rollback(summary)
                        last = await self._replica.newest_change_id(conn)
                    # The write lock made (first, last] this import's alone; what the workers wrote is loaded from the store when next read.
                    self._replica.imported(first, last, [whole.doc_id for whole in new_wholes] + list(held_ids), written.heads)
                except _Rollback as rollback:
                    self._kernel.invalidate(touched)
                    return rollback.summary
                except BaseException:
                    self._kernel.invalidate(touched)
                    raise
                finally:
                    await reads.settle()
            if new_entries:
                await self._roster.reload()  # under the lock: nothing is materialised with the old admins
        if new_entries:
            if self._identity.row.node_key in self._roster.current.revoked:
                await self._custody.wipe_after_revocation(self._roster.current.revoked[self._identity.row.node_key])
                return replace(summary, wiped=True)
        self._replica.notify(touched, Origin.PEER if received_from is not None else Origin.LOCAL, received_from)
        return summary

    def _authoriser(
        self, doc_id: str, directory: certs.Directory, head_of: Callable[[str], documents.ChannelHead | None], relay: bytes | None = None
    ) -> Callable[[bytes], str | None]:
        """Who may write `doc_id`, judged on `directory` and the channel heads `head_of` gives
        (during an import: as they will be once the batch's own directory and head changes apply).

        A revoked author's changes are refused - unless `relay`, the trusted node that sent the
        batch, is not the author's own node: a relay accepted them before it learnt of the
        revocation (it refuses new ones from then on), and refusing them here would make every
        later bundle from it, which builds on them, unacceptable for ever."""
        kind, channel_id, _ = documents.parse_doc_id(doc_id)

        def authorise(author: bytes) -> str | None:
            cert = directory.user(author)
            if author in directory.revoked:
                former = self._roster.users_ever.get(author)
                if relay is None or former is None or relay == former.home or relay in directory.revoked:
                    return f"author {ids.key_id(author)} is revoked"
                cert = former
            if cert is None:
                return f"author {ids.key_id(author)} is not a user of this workspace"
            if kind == "directory":
                return None if cert.role == "admin" else f"{cert.name} is not an admin and cannot change the directory"
            if cert.role == "observer":
                return f"{cert.name} is an observer and cannot write"
            head = head_of(channel_id)
            if head is None:
                return None if kind == "head" else f"segment of unknown channel {channel_id}"
            if kind == "head":
                return None  # what each head change did is judged on its own (head_rules, in _verify_batches)
            if head.requires and not policy.satisfies(cert.attributes, head.requires):
                return f"{cert.name} lacks the attributes #{head.name} requires ({policy.describe(head.requires)})"
            if head.kind == documents.ChannelKind.DIRECT and author.hex() not in head.members:
                return f"{cert.name} is not a participant of direct conversation {channel_id}"
            if head.kind != "public" and author.hex() not in head.members and not directory.is_admin(author):
                return f"{cert.name} is not a member of private channel #{head.name}"
            return None

        return authorise

    def _judge_head_changes(
        self, channel_id: str, trial: Document, verified: Sequence[VerifiedChange], directory: certs.Directory, final: documents.ChannelHead | None
    ) -> None:
        """HeadChangeRefused for the first change of a head batch that its author may not make
        (appliance/head_rules.py), judged on the directory and the head as the import leaves them."""
        def name_of(author: bytes) -> str:
            cert = directory.user(author) or self._roster.users_ever.get(author)
            return cert.name if cert is not None else ids.key_id(author)

        def workspace_admin(author: bytes) -> bool:
            # Ever an admin, not admin now: a head change is not judged against the directory as
            # it was when it was made (it cannot say), and a node that accepted it before a
            # demotion reached it relays it on - refusing it here would refuse every later
            # bundle from there. A demotion stops local changes at once; revocation stops all.
            return author in directory.ever_admins

        created = head_rules.creations(trial)
        for edit in head_rules.head_edits(channel_id, trial, verified, self._replica.actor()):
            reason = head_rules.refusal(channel_id, edit, workspace_admin, name_of, created)
            if reason is None and not head_rules.still_admin(edit, workspace_admin):
                reason = f"{name_of(edit.change.header.author)} is no longer a channel admin of #{final.name if final else channel_id}"
            if reason is not None:
                shown = edit.before or edit.after or final
                channel = shown.name if shown is not None else ""
                raise HeadChangeRefused(f"{documents.head_doc_id(channel_id)}: {reason}", channel_id=channel_id, channel=channel, author=edit.author_hex)

    async def _audit_refusal(self, refused: HeadChangeRefused | AttributesRefused, received_from: str) -> None:
        """A refused head change or certificate is recorded apart from the import, which leaves nothing else."""
        async with self._kernel.store.transaction() as conn:
            detail: dict[str, object] = {"from": received_from, "reason": str(refused)}
            if isinstance(refused, HeadChangeRefused):
                detail |= {"channel": refused.channel, "channel_id": refused.channel_id, "author": refused.author}
                action = AuditAction.HEAD_CHANGE_REFUSED
            else:
                detail |= {"user": refused.subject, "issuer": refused.issuer}
                action = AuditAction.ATTRIBUTES_REFUSED
            await self._kernel.audit(conn, self._kernel.clock(), self._identity.row.node_key.hex(), action, detail)

    async def _verify_batches(
        self, order: Sequence[str], grouped: dict[str, list[SignedChange]], known: dict[str, set[bytes]], relay: bytes | None, progress: Callable[[str, int], None] | None = None
    ) -> tuple[list[tuple[str, list[VerifiedChange]]], list[tuple[str, bytes, bytes]], certs.Directory, dict[str, documents.ChannelHead | None]]:
        """The batches checked in import order: the verified changes per document, the directory
        entries to store, and the directory and channel heads as the batches leave them."""
        directory = self._roster.current
        new_entries: list[tuple[str, bytes, bytes]] = []
        trial_heads: dict[str, documents.ChannelHead | None] = {}
        plan: list[tuple[str, list[VerifiedChange]]] = []
        for doc_id in order:
            kind, channel_id, _ = documents.parse_doc_id(doc_id)
            if kind == "directory":
                verified = verify_batch(doc_id, grouped[doc_id], known[doc_id], lambda author: None)
                if verified:
                    new_entries, directory = self._check_directory_batch(await self._replica.document(doc_id), verified)
            else:
                if channel_id not in trial_heads:
                    trial_heads[channel_id] = await self._heads.head(channel_id)
                verified = verify_batch(doc_id, grouped[doc_id], known[doc_id], self._authoriser(doc_id, directory, trial_heads.get, relay))
                if verified and kind == "head":
                    trial = self._trial(await self._replica.document(doc_id), verified)
                    trial_heads[channel_id] = documents.read_head(trial, channel_id) or trial_heads[channel_id]
                    self._judge_head_changes(channel_id, trial, verified, directory, trial_heads[channel_id])
            if verified:
                plan.append((doc_id, verified))
            if progress is not None:
                progress("verify", len(grouped[doc_id]))
        return plan, new_entries, directory, trial_heads

    async def _write_batches(
        self,
        conn: AsyncConnection,
        plan: Sequence[tuple[str, list[VerifiedChange]]],
        known: dict[str, set[bytes]],
        new_entries: Sequence[tuple[str, bytes, bytes]],
        blobs: Sequence[tuple[bytes, bytes]],
        received_from: str,
        preview: bool,
        progress: Callable[[str, int], None] | None = None,
        wholes: Wholes | None = None,
        held: HeldWork | None = None,
    ) -> _Written:
        now = self._kernel.clock()
        intake: dict[str, list[int]] = {}
        applied = 0
        admins = self._roster.admin_hexes()
        segment_batches: list[tuple[str, list[VerifiedChange]]] = []
        for doc_id, verified in plan:
            kind, channel_id, _ = documents.parse_doc_id(doc_id)
            if kind == "segment":  # after the directory and heads, all at once (below)
                segment_batches.append((doc_id, verified))
                continue
            doc, _ = await self._replica.apply_in_memory(doc_id, verified, known)
            await self._replica.append_verified(conn, [(doc_id, verified)], received_from)
            applied += len(verified)
            if kind == "directory":
                admins = await self._directory.store_entries(conn, new_entries, now)
            else:
                await self._heads.materialise_head(conn, channel_id, doc)
                intake.setdefault(channel_id, [0, 0])[0] += len(verified)
            await self._replica.count_imported(conn, doc_id, doc, len(verified), preview)
            if progress is not None:
                progress("write", len(verified))
        if segment_batches:
            # Applied one by one in memory; their log rows and view rows written together.
            touched = []
            for doc_id, verified in segment_batches:
                doc, before = await self._replica.apply_in_memory(doc_id, verified, known)
                touched.append(SegmentTouched(documents.parse_doc_id(doc_id).channel_id, doc_id, doc, segments.touched_messages(doc, before) if before else None))
            await self._replica.append_verified(conn, segment_batches, received_from)
            new_messages = await self._views.materialise_segments(conn, touched, admins)
            for item, (doc_id, verified) in zip(touched, segment_batches, strict=True):
                applied += len(verified)
                counts = intake.setdefault(item.channel_id, [0, 0])
                counts[0] += len(verified)
                counts[1] += new_messages[doc_id]
                await self._replica.count_imported(conn, doc_id, item.doc, len(verified), preview)
                if progress is not None:
                    progress("write", len(verified))
        heads: dict[str, tuple[bytes, ...]] = {}
        if held is not None and held.doc_ids:
            for written in await self.held.apply_and_write(conn, held, admins, received_from, preview, progress):
                applied += written.changes
                counts = intake.setdefault(documents.parse_doc_id(written.doc_id).channel_id, [0, 0])
                counts[0] += written.changes
                counts[1] += written.new_messages
                if written.heads:
                    heads[written.doc_id] = written.heads
        batched = applied
        if wholes is not None:
            for whole in await self._wholes.admit_and_write(conn, wholes.reads, wholes.authoriser, progress):
                applied += whole.changes
                counts = intake.setdefault(documents.parse_doc_id(whole.doc_id).channel_id, [0, 0])
                counts[0] += whole.changes
                counts[1] += whole.new_messages
                heads[whole.doc_id] = whole.heads
        added_blobs = 0
        for digest, data in blobs:
            if (await conn.execute(select(t.blobs.c.hash).where(t.blobs.c.hash == digest))).first() is None:
                await self._blobs.store(conn, digest, data)
                added_blobs += 1
        channels = []
        for channel_id, (changes, messages) in sorted(intake.items()):
            head = self._heads.cached(channel_id)
            readable = head is not None and self._heads.can_read(head, self._identity.user_key)
            channels.append(ChannelIntake(channel_id, head.name if head else "", readable, changes, messages))
        summary = ImportSummary(
            changes=applied,
            duplicates=0,
            directory_entries=len(new_entries),
            channels=tuple(channels),
            blobs=added_blobs,
            preview=preview,
        )
        return _Written(summary, batched, heads)

    def _trial(self, doc: Document, verified: Sequence[VerifiedChange]) -> Document:
        """A copy of `doc` with the verified changes applied: what it will be, judged before
        anything is written."""
        try:
            return documents.load_document(doc.save() + b"".join(c.data for c in verified), self._replica.actor())
        except documents.DocumentError as exc:
            raise ChangeRejected(str(exc)) from exc

    def _check_directory_batch(self, doc: Document, verified: list[VerifiedChange]) -> tuple[list[tuple[str, bytes, bytes]], certs.Directory]:
        """Directory changes are judged by appliance/directory_records.py (admins write
        everything, other users their own acceptance of the terms). Returns the entries to store
        and the trial directory (the batch applied)."""
        records, trial_dir = judge_directory_batch(
            self._trial(doc, verified),
            verified,
            workspace=self._identity.row.workspace_key,
            known_revocations=list(self._roster.current.revoked.values()),
            existing=list(self._roster.current.users.values()) + list(self._roster.current.nodes.values()),
            now_ms=self._kernel.clock(),
            load=lambda data: documents.load_document(data, self._replica.actor()),
            empty=lambda: documents.new_document(self._replica.actor()),
        )
        issuers = trial_dir.ever_admins | {self._identity.row.workspace_key}
        for cert in split_records(records)[0]:
            if cert.attributes and cert.issuer not in issuers:  # a certificate a non-admin issued to make themselves one counts for nothing
                raise AttributesRefused(
                    f"the certificate of {cert.name} carries attributes issued by {ids.key_id(cert.issuer)}, who is not an admin", subject=cert.name, issuer=ids.key_id(cert.issuer)
                )
        return [(record_kind(record), record.encoded, record.fingerprint) for record in records], trial_dir

    async def record_receipt(
        self, conn: AsyncConnection, receipt: Receipt, summary: ImportSummary, blobs: Sequence[tuple[bytes, bytes]], preview: bool, skipped: Mapping[str, str] | None = None
    ) -> None:
        """In the import's transaction: what the sender told us it holds, the blobs it sent
        (so we never send them back), the bundle's log row and the audit entry."""
        now = self._kernel.clock()
        sender = ids.key_id(receipt.sender)
        await self._exchange.store_peer_heads(conn, sender, receipt.sender_heads, now, complete=receipt.complete)
        for digest, _ in blobs:
            await self._exchange.upsert_peer_blob(conn, sender, digest, None, None, now)
        await self._exchange.confirm_sent_blobs(conn, sender, receipt.sender_heads, now)
        outcome = summary.outcome.value
        if receipt.digest is not None:
            await conn.execute(t.bundle_log.delete().where(t.bundle_log.c.digest == receipt.digest))  # an earlier "unknown sender"
            await conn.execute(
                insert(t.bundle_log).values(
                    digest=receipt.digest, bundle_id=receipt.bundle_id, sender=sender, created_at=receipt.created_at, outcome=outcome, reason="", decided_at=now
                )
            )
        detail: dict[str, object] = {
            "from": sender,
            "via": receipt.source,
            "changes": summary.changes,
            "duplicates": summary.duplicates,
            "directory_entries": summary.directory_entries,
            "channels": len(summary.channels),
            "messages": sum(c.new_messages for c in summary.channels),
            "blobs": summary.blobs,
        }
        if summary.audit_entries:
            detail["audit_entries"] = summary.audit_entries
        if skipped:
            detail["audit_skipped"] = dict(skipped)
        if receipt.bundle_id is not None:
            detail["bundle"] = receipt.bundle_id.hex()
        await self._kernel.audit(conn, now, self._identity.row.node_key.hex(), AuditAction(f"{receipt.source}_{outcome}"), detail)

    async def bundle_decision(self, digest: bytes) -> tuple[str, str] | None:
        """(outcome, reason) if this exact bundle file was decided on before."""
        async with self._kernel.store.reading() as conn:
            row = (await conn.execute(select(t.bundle_log.c.outcome, t.bundle_log.c.reason).where(t.bundle_log.c.digest == digest))).first()
        return None if row is None else (row.outcome, row.reason)

    async def record_rejection(
        self, digest: bytes, *, outcome: str, reason: str, sender: bytes | None, bundle_id: bytes | None, created_at: int | None, quarantine: Mapping[str, object] | None = None
    ) -> None:
        """A refused bundle: one log row and one audit entry (a re-presented one is not audited
        again), with what happened to its copy in `quarantine` (kept, dropped, problem)."""
        now = self._kernel.clock()
        async with self._kernel.store.transaction() as conn:
            exists = (await conn.execute(select(t.bundle_log.c.digest).where(t.bundle_log.c.digest == digest))).first()
            if exists is not None:
                return
            sender_id = ids.key_id(sender) if sender is not None else None
            await conn.execute(insert(t.bundle_log).values(digest=digest, bundle_id=bundle_id, sender=sender_id, created_at=created_at, outcome=outcome, reason=reason, decided_at=now))
            detail: dict[str, object] = {"outcome": outcome, "reason": reason, "from": sender_id, "digest": digest.hex()}
            if bundle_id is not None:
                detail["bundle"] = bundle_id.hex()
            if quarantine is not None:
                detail["quarantine"] = dict(quarantine)
            await self._kernel.audit(conn, now, self._identity.row.node_key.hex(), AuditAction.BUNDLE_REJECTED, detail)

"""The courier workflow: bundles for peers written to a stick, bundles on a stick imported.

The edge between the node, the bundle codec (pure bytes) and the courier medium (a
`sync.ports.Medium`: the stick's files in `sync.stick`, or memory). Export asks the node what
each peer lacks (`node.exchange.delta_for`), packs it (`sync.packing`) in priority order into
bundles no larger than a cap, and writes each atomically into the medium's `bundles/` folder under a name that says nothing, superseding this node's older
bundles for the same peers. Import tries every bundle on the stick (format 2 bundles do not
say for whom they are: a node finds its own by opening them), hands the content to the
node's all-or-nothing verification path and records every decision: accepted bundles for
this node alone leave the stick, rejected ones go to the node's quarantine folder, bundles
that only lack an earlier bundle wait for it."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from appliance import cbor, crypto, ids
from appliance.audit_feed import AuditCarry
from appliance.changes import SignedChange, parse_change
from appliance.errors import (
    AuditFeedRefused,
    ChangeRejected,
    IdentityConflict,
    MissingDependencies,
)
from appliance.kernel import wall_clock_ms
from appliance.model import Carrier, ChannelIntake, Delta, ImportSummary, Receipt
from sync import stick
from sync.bundle import (
    DEFAULT_CHUNK_SIZE,
    ENVELOPE_MAX_BYTES,
    KEY_BYTES,
    STANZA_BYTES,
    BundleContent,
    BundleHeader,
    Limits,
    addressed_to,
    build_bundle,
    open_bundle,
    read_envelope,
)
from sync.defaults import DEFAULT_MAX_BYTES, MiB
from sync.errors import AuditTrailRefused, BundleRejected, DoesNotFit, ExportRefused, NotAddressedToMe, StickError, SyncError, UnknownSender
from sync.fields import audit_to_wire
from sync.packing import pack_delta
from sync.ports import Medium, StickFile, StickProblem, StickScan
from sync.quarantine import DroppedFile, Quarantined, QuarantineQuota
from sync.replica import CourierNode

MIN_MAX_BYTES = 64 * 1024
IMPORT_LIMITS = Limits(max_bundle_bytes=256 * MiB, max_plaintext_bytes=256 * MiB, max_items=4_000_000)
MAX_BUNDLE_FILE_BYTES = IMPORT_LIMITS.max_bundle_bytes + 300 * 1024  # the ciphertext, plus header, framing and signature
MAX_HEADS_IN_HEADER = 2_000  # documents whose heads a header lists; keeps it far below the format's cap
QUARANTINE_DIR = "quarantine"

Clock = Callable[[], int]
Random = Callable[[int], bytes]


@dataclass(frozen=True)
class Progress:
    phase: str  # "import", "verify" and "write" (a bundle's changes), "export"
    done: int
    total: int
    label: str


ProgressCallback = Callable[[Progress], None]


@dataclass(frozen=True)
class WrittenBundle:
    path: Path
    recipients: tuple[str, ...]  # node ids
    size: int
    changes: int
    blobs: int
    wholes: int = 0  # segments carried whole (their changes are not counted in `changes`)


@dataclass(frozen=True)
class ExportReport:
    bundles: tuple[WrittenBundle, ...]
    superseded: int  # this node's older bundles removed from the outboxes

    @property
    def size(self) -> int:
        return sum(b.size for b in self.bundles)

    @property
    def changes(self) -> int:
        return sum(b.changes for b in self.bundles)


# Outcomes of one file on the stick. Rejections carry the bundle error's class name
# ("Tampered", "UnknownSender", ...) or "ChangeRejected" for content the node refused.
ACCEPTED = "accepted"
DUPLICATE = "duplicate"  # intact and from a trusted sender, but nothing in it was new
SEEN = "seen"  # this exact file was imported (or rejected) before
NOT_FOR_ME = "not for this node"
WAITING = "waiting"  # builds on a bundle this node has not imported yet; left on the stick


@dataclass(frozen=True)
class FileOutcome:
    name: str
    outcome: str
    reason: str
    sender: str | None = None  # node id
    bundle_id: str | None = None
    summary: ImportSummary | None = None
    quarantined: Path | None = None
    quarantine_dropped: tuple[DroppedFile, ...] = ()  # this bundle, if not kept, and older ones it displaced
    quarantine_problem: str | None = None  # why it could not be quarantined (it stays on the stick)

    @property
    def rejected(self) -> bool:
        return self.outcome not in (ACCEPTED, DUPLICATE, SEEN, NOT_FOR_ME, WAITING)


@dataclass(frozen=True)
class ImportReport:
    files: tuple[FileOutcome, ...]
    problems: tuple[StickProblem, ...]
    preview: bool
    wiped: bool = False

    @property
    def accepted(self) -> tuple[FileOutcome, ...]:
        return tuple(f for f in self.files if f.outcome in (ACCEPTED, DUPLICATE))

    @property
    def rejected(self) -> tuple[FileOutcome, ...]:
        return tuple(f for f in self.files if f.rejected)

    @property
    def changes_applied(self) -> int:
        return sum(f.summary.changes for f in self.accepted if f.summary)

    @property
    def channels(self) -> tuple[ChannelIntake, ...]:
        """Per channel, summed over every accepted bundle."""
        merged: dict[str, ChannelIntake] = {}
        for outcome in self.accepted:
            for c in outcome.summary.channels if outcome.summary else ():
                seen = merged.get(c.channel_id)
                merged[c.channel_id] = c if seen is None else ChannelIntake(c.channel_id, c.name or seen.name, c.readable, seen.changes + c.changes, seen.new_messages + c.new_messages)
        return tuple(sorted(merged.values(), key=lambda c: (c.name or "~", c.channel_id)))

    @property
    def senders(self) -> tuple[str, ...]:
        return tuple(sorted({f.sender for f in self.accepted if f.sender}))

    @property
    def quarantine_dropped(self) -> tuple[DroppedFile, ...]:
        return tuple(d for f in self.files for d in f.quarantine_dropped)


# --- the medium -------------------------------------------------------------------------


Where = Medium | str | os.PathLike[str]


def medium_for(node: CourierNode, where: Where) -> Medium:
    """The medium itself, or the stick in the folder `where` (rejected bundles quarantined in
    the node's home)."""
    if isinstance(where, (str, os.PathLike)):
        return stick.StickMedium(Path(where), quarantine_dir=node.home / QUARANTINE_DIR)
    return where


# --- export -----------------------------------------------------------------------------


async def export_bundles(
    node: CourierNode,
    where: Where,
    *,
    for_nodes: Sequence[str] = (),
    max_bytes: int = DEFAULT_MAX_BYTES,
    broadcast: bool = False,
    progress: ProgressCallback | None = None,
    clock: Clock = wall_clock_ms,
    rng: Random = crypto.random_bytes,
) -> ExportReport:
    """Bundles with what each peer lacks: one series per peer (default: every enrolled peer),
    or with `broadcast` one series for all of them (public channels and the directory only:
    every recipient can open it), all in the bundles/ folder of the medium (or the stick in the
    folder) `where`. A revoked node gets the directory only - its revocation, on which it wipes
    itself."""
    if max_bytes < MIN_MAX_BYTES:
        raise ExportRefused(f"a bundle size limit of {max_bytes:,} bytes is too small: at least {MIN_MAX_BYTES:,}")
    peers = [node.directory.node_key_of(n) for n in for_nodes] if for_nodes else node.directory.peers(revoked=not broadcast)
    for peer in peers:
        if broadcast and peer in node.directory.current.revoked:
            raise ExportRefused(f"node {ids.key_id(peer)} is revoked; a broadcast bundle is not for it")
        if peer not in node.directory.current.nodes and peer not in node.directory.current.revoked:
            raise ExportRefused(f"node {ids.key_id(peer)} is not enrolled in this workspace")
    if not peers:
        raise ExportRefused("this node knows no other enrolled node to export for")
    medium = medium_for(node, where)
    groups = [peers] if broadcast else [[p] for p in peers]
    written: list[WrittenBundle] = []
    superseded = 0
    namer = _StickNames(node)
    for index, group in enumerate(groups):
        label = "broadcast" if broadcast else ids.key_id(group[0])
        if progress:
            progress(Progress("export", index, len(groups), label))
        delta = await node.exchange.delta_for(group)
        # Audit trails go to one peer at a time (a broadcast's every recipient could read them).
        carry = AuditCarry() if broadcast else await node.audit.feeds.carry_for(group[0])
        names: list[str] = []
        series = rng(_SERIES_BYTES)
        for part, content in enumerate(_split(delta, max_bytes, len(group), carry)):
            created_at = clock() + part
            data = await asyncio.to_thread(
                build_bundle,
                content,
                sender_key=node.identity.signing_key,
                workspace=node.directory.current.workspace,
                recipients=group,
                heads=_header_heads(delta, content),
                created_at=created_at,
                incarnation=node.identity.incarnation,
                randomness=rng(32),
                chunk_size=DEFAULT_CHUNK_SIZE,
            )
            name = namer.name(series, part, group)
            path = await medium.write(stick.BUNDLES, name, data)
            names.append(name)
            written.append(
                WrittenBundle(
                    path=path,
                    recipients=tuple(ids.key_id(p) for p in group),
                    size=len(data),
                    changes=sum(len(c) for _, c in content.directory + content.changes),
                    blobs=len(content.blobs),
                    wholes=len(content.wholes),
                )
            )
        superseded += await medium.remove_own_older(stick.BUNDLES, functools.partial(namer.is_own, group=group), names)
        mine = written[len(written) - len(names) :]
        await node.audit.record_export(group, len(names), sum(b.size for b in mine), sum(b.changes for b in mine), sum(len(p.entries) for p in carry.parts))
        await node.exchange.note_sent(group, [(digest, doc_id) for digest, doc_id, _ in delta.blobs], delta.heads)
    if progress:
        progress(Progress("export", len(groups), len(groups), "done"))
    return ExportReport(tuple(written), superseded)


_SERIES_BYTES = 6
_PART_BYTES = 2
_TAG_BYTES = 8


class _StickNames:
    """Names for the bundles/ folder that say nothing to anyone but their writer: a random
    series, the part number (so a series' parts sort, and import, in order) and a tag keyed by
    a secret of this node over those and the recipients. The writer recognises, and
    supersedes, its own earlier bundles for the same peers; to others the names are noise."""

    def __init__(self, node: CourierNode) -> None:
        self._key = hashlib.blake2b(node.identity.signing_key.encode(), digest_size=32, person=b"rp-stick-names").digest()

    def name(self, series: bytes, part: int, group: Sequence[bytes]) -> str:
        prefix = series + part.to_bytes(_PART_BYTES, "big")
        return stick.anonymous_file_name(prefix + self._tag(prefix, group))

    def is_own(self, name: str, group: Sequence[bytes]) -> bool:
        raw = bytes.fromhex(name.removesuffix(stick.BUNDLE_SUFFIX))
        prefix = raw[: _SERIES_BYTES + _PART_BYTES]
        return hmac.compare_digest(raw[len(prefix) :], self._tag(prefix, group))

    def _tag(self, prefix: bytes, group: Sequence[bytes]) -> bytes:
        return hashlib.blake2b(prefix + b"".join(sorted(group)), digest_size=_TAG_BYTES, key=self._key).digest()


def _header_heads(delta: Delta, content: BundleContent) -> dict[str, tuple[bytes, ...]]:
    """Our heads, as an acknowledgement: documents in this bundle first, then the rest,
    up to MAX_HEADS_IN_HEADER."""
    carried = [doc_id for doc_id, _ in content.directory + content.changes] + [whole.doc_id for whole in content.wholes]
    in_bundle = set(carried)
    order = carried + [doc_id for doc_id in delta.heads if doc_id not in in_bundle]
    return {doc_id: delta.heads[doc_id] for doc_id in order[:MAX_HEADS_IN_HEADER] if delta.heads.get(doc_id)}


def _split(delta: Delta, max_bytes: int, recipients: int, carry: AuditCarry | None = None) -> list[BundleContent]:
    """Packs the delta, in its priority order, into bundles of at most `max_bytes` (estimated
    conservatively). Always at least one bundle (it carries our heads, an acknowledgement,
    even when nothing else is new); the first carries the audit trails, `carry`."""
    # Padding adds under 1/16 to a bundle of 32 KiB or more (MIN_MAX_BYTES is 64 KiB).
    carry = carry or AuditCarry()
    trails = len(cbor.encode(audit_to_wire(carry))) if carry else 0
    try:
        parts = pack_delta(delta, (max_bytes - _fixed_overhead(delta, max_bytes, recipients) - trails) * 15 // 16)
    except DoesNotFit as exc:
        raise DoesNotFit(f"{exc}; raise the bundle size limit") from exc
    return [
        BundleContent(
            directory=tuple((d, _one_signature_per_actor(c)) for d, c in documents if d == "directory"),
            changes=tuple((d, _one_signature_per_actor(c)) for d, c in documents if d != "directory"),
            blobs=blobs,
            wholes=wholes,
            audit=carry if index == 0 else AuditCarry(),
        )
        for index, (documents, blobs, wholes) in enumerate(parts)
    ] or [BundleContent(audit=carry)]


def _one_signature_per_actor(changes: Sequence[SignedChange]) -> tuple[SignedChange, ...]:
    """Keeps only each actor's last signature in a document's run: an actor's later change
    depends on its earlier ones, and its hash covers theirs, so the receiver's verifier
    vouches for them with that one signature (64 bytes per message saved on the stick)."""
    last_signed: dict[bytes, int] = {}
    actors = [parse_change(c.data).actor for c in changes]
    for index, (change, actor) in enumerate(zip(changes, actors, strict=True)):
        if change.signature is not None:
            last_signed[actor] = index
    return tuple(
        change if change.signature is None or last_signed[actor] == index else SignedChange(change.data, None)
        for index, (change, actor) in enumerate(zip(changes, actors, strict=True))
    )


def _fixed_overhead(delta: Delta, chunk_budget: int, recipients: int) -> int:
    """Header (recipients, heads), framing, signature and the stream's per-chunk cost."""
    heads = sum(len(d) + 8 + 33 * len(h) for d, h in list(delta.heads.items())[:MAX_HEADS_IN_HEADER])
    stanzas = recipients * (STANZA_BYTES + KEY_BYTES + 3)  # a stanza, and the inner header's list of keys
    chunks = chunk_budget // DEFAULT_CHUNK_SIZE + 1
    return 4096 + heads + stanzas + 17 * chunks


# --- import -----------------------------------------------------------------------------


async def import_bundles(
    node: CourierNode,
    where: Where,
    *,
    preview: bool = False,
    progress: ProgressCallback | None = None,
    quarantine_quota: QuarantineQuota = QuarantineQuota(),
) -> ImportReport:
    """Imports every bundle on the stick addressed to this node (any in bundles/, which do not
    say for whom they are, and an earlier release's in this node's outbox and the broadcast
    outbox), in name order; bundles that lack an earlier one are retried after the others.
    `preview` reports what would happen and changes nothing, on the node or the stick.
    Rejected bundles are quarantined within `quarantine_quota`. `where` is the medium, or the
    folder of a stick."""
    me = node.identity.node_id
    medium = medium_for(node, where)
    scan = await medium.scan([stick.BUNDLES, stick.outbox_name(me), stick.BROADCAST], max_file_bytes=MAX_BUNDLE_FILE_BYTES)
    # The workers that read segments carried whole start while the first bundle is read off the stick.
    warming = asyncio.create_task(node.intake.warm_workers()) if scan.files else None
    try:
        return await _import_scanned(node, medium, scan, preview, progress, quarantine_quota)
    finally:
        if warming is not None:
            await warming


async def _import_scanned(node: CourierNode, medium: Medium, scan: StickScan, preview: bool, progress: ProgressCallback | None, quarantine_quota: QuarantineQuota) -> ImportReport:
    outcomes: dict[str, FileOutcome] = {}
    queue = list(scan.files)
    total = len(queue)
    while queue:
        deferred: list[StickFile] = []
        for file in queue:
            if progress:
                progress(Progress("import", len(outcomes), total, file.name))
            outcome = await _import_file(node, medium, file, preview, quarantine_quota, last_try=False, progress=progress)
            if outcome is None:
                deferred.append(file)
                continue
            outcomes[file.name] = outcome
            if outcome.summary is not None and outcome.summary.wiped:
                if progress:
                    progress(Progress("import", total, total, "wiped"))
                return ImportReport(tuple(outcomes.values()), scan.problems, preview, wiped=True)
        if len(deferred) == len(queue):  # no progress: decide them for good
            for file in deferred:
                outcome = await _import_file(node, medium, file, preview, quarantine_quota, last_try=True, progress=progress)
                assert outcome is not None
                outcomes[file.name] = outcome
            break
        queue = deferred
    if progress:
        progress(Progress("import", total, total, "done"))
    ordered = tuple(outcomes[f.name] for f in scan.files)
    return ImportReport(ordered, scan.problems, preview)


async def _import_file(node: CourierNode, medium: Medium, file: StickFile, preview: bool, quota: QuarantineQuota, *, last_try: bool, progress: ProgressCallback | None = None) -> FileOutcome | None:
    """The outcome of one file; None to try it again after the others (it may need a bundle
    that is still to come: an unknown sender's certificate, earlier changes)."""
    try:
        if not addressed_to(await medium.read_head(file, ENVELOPE_MAX_BYTES), node.identity.signing_key):
            return FileOutcome(file.name, NOT_FOR_ME, "none of its recipient stanzas opens with this node's key: it is for other nodes")
        data = await medium.read(file, max_file_bytes=MAX_BUNDLE_FILE_BYTES)
    except SyncError as exc:
        return FileOutcome(file.name, "Unreadable", str(exc))
    digest = hashlib.sha256(data).digest()
    seen = await node.intake.bundle_decision(digest)
    if seen is not None and seen[0] != UnknownSender.__name__:  # the directory may know it by now
        if seen[0] in (ACCEPTED, DUPLICATE) and not preview and _mine_alone(file, data):
            await medium.remove(file)
        return FileOutcome(file.name, SEEN, f"already {'imported' if seen[0] in (ACCEPTED, DUPLICATE) else 'rejected: ' + seen[1]}")
    try:
        opened, content = await asyncio.to_thread(
            open_bundle, data, my_key=node.identity.signing_key, sender_status=node.directory.current.trust_of, limits=_limits(node), workspace=node.directory.current.workspace
        )
    except NotAddressedToMe as exc:
        return FileOutcome(file.name, NOT_FOR_ME, str(exc))
    except UnknownSender as exc:
        if not last_try:
            return None  # a bundle still to come may carry its certificate
        if not preview:  # audited once; left on the stick for when the directory catches up
            await node.intake.record_rejection(digest, outcome=type(exc).__name__, reason=str(exc), sender=None, bundle_id=None, created_at=None)
        return FileOutcome(file.name, type(exc).__name__, str(exc))
    except BundleRejected as exc:
        return await _reject(node, medium, file, data, digest, None, type(exc).__name__, str(exc), preview, quota)
    if opened.incarnation is not None:  # None only in format 1, which predates incarnations
        try:
            await node.peers.check_peer_incarnation(opened.sender, opened.incarnation, via="bundle", record=not preview)
        except IdentityConflict as exc:
            return await _reject(node, medium, file, data, digest, opened, "IdentityConflict", str(exc), preview, quota)
    sender = ids.key_id(opened.sender)
    # A bundle for this node alone lists the sender's heads of every document we may receive,
    # unless there are more than its header holds: then its report is complete.
    complete = opened.recipients == (node.identity.node_key,) and len(opened.heads) < MAX_HEADS_IN_HEADER
    receipt = Receipt(source=Carrier.BUNDLE, sender=opened.sender, created_at=opened.created_at, sender_heads=opened.heads, digest=digest, bundle_id=opened.id, complete=complete)
    try:
        summary = await node.intake.import_batches(
            list(content.directory) + list(content.changes),
            wholes=content.wholes,
            blobs=content.blobs,
            received_from=sender,
            receipt=receipt,
            preview=preview,
            progress=_changes_progress(progress, content, file.name),
            audit=content.audit,
        )
    except MissingDependencies as exc:
        if not last_try:
            return None
        return FileOutcome(file.name, WAITING, f"{exc}; import the earlier bundles from {sender} first", sender, opened.id.hex())
    except AuditFeedRefused as exc:
        return await _reject(node, medium, file, data, digest, opened, AuditTrailRefused.__name__, str(exc), preview, quota)
    except ChangeRejected as exc:
        return await _reject(node, medium, file, data, digest, opened, "ChangeRejected", str(exc), preview, quota)
    if not preview and _mine_alone(file, data):
        await medium.remove(file)
    outcome = ACCEPTED if summary.changes or summary.blobs or summary.audit_entries else DUPLICATE
    return FileOutcome(file.name, outcome, "", sender, opened.id.hex(), summary)


async def _reject(
    node: CourierNode, medium: Medium, file: StickFile, data: bytes, digest: bytes, header: BundleHeader | None, outcome: str, reason: str, preview: bool, quota: QuarantineQuota
) -> FileOutcome:
    """Quarantines the bundle (the stick's quarantine is in the node's home) and records the decision (audited once);
    the stick keeps bundles for other nodes too (they judge them for themselves), and a bundle
    that could not be quarantined: a failure to keep a copy must not stop the bundles beside it.
    `header` is None when the bundle did not open: who sent it is then not known."""
    sender = ids.key_id(header.sender) if header else None
    bundle_id = header.id.hex() if header else None
    if preview:
        return FileOutcome(file.name, outcome, reason, sender, bundle_id)
    kept, problem = Quarantined(None, ()), None
    try:
        kept = await medium.quarantine(data, file.name, f"{outcome}: {reason}", quota)
    except StickError as exc:
        problem = str(exc)
    await node.intake.record_rejection(
        digest,
        outcome=outcome,
        reason=reason,
        sender=header.sender if header else None,
        bundle_id=header.id if header else None,
        created_at=header.created_at if header else None,
        quarantine={"kept": kept.path.name if kept.path else None, "dropped": [d.as_json() for d in kept.dropped], "problem": problem},
    )
    if problem is None and _mine_alone(file, data):
        await medium.remove(file)
    return FileOutcome(file.name, outcome, reason, sender, bundle_id, quarantined=kept.path, quarantine_dropped=kept.dropped, quarantine_problem=problem)


def _changes_progress(progress: ProgressCallback | None, content: BundleContent, label: str) -> Callable[[str, int], None] | None:
    """A bundle's documents as the node verifies them, then writes them (20,000 messages take
    seconds; the bar moves a document at a time). Counted in documents: how many changes a
    segment carried whole holds is known only once it is read."""
    if progress is None:
        return None
    total = len(content.directory) + len(content.changes) + len(content.wholes)
    done = {"verify": 0, "write": 0}

    def advance(phase: str, _changes: int) -> None:
        done[phase] = min(done[phase] + 1, total)
        progress(Progress(phase, done[phase], total, label))

    return advance


def _mine_alone(file: StickFile, data: bytes) -> bool:
    """Whether a file that this node decided on may leave the stick: nobody else needs it.
    In bundles/, a bundle with one recipient stanza (a rejected one whose stanzas cannot be
    read stays: it may be for others); in an earlier release's outboxes, one in this node's
    own (not broadcast)."""
    if file.outbox != stick.BUNDLES:
        return file.outbox != stick.BROADCAST
    try:
        return read_envelope(data, max_bundle_bytes=IMPORT_LIMITS.max_bundle_bytes).stanzas == 1
    except BundleRejected:
        return False


def _limits(node: CourierNode) -> Limits:
    return Limits(
        max_bundle_bytes=IMPORT_LIMITS.max_bundle_bytes,
        max_plaintext_bytes=IMPORT_LIMITS.max_plaintext_bytes,
        max_items=IMPORT_LIMITS.max_items,
        max_blob_bytes=node.blobs.max_blob_bytes,
    )


# --- courier ----------------------------------------------------------------------------


async def courier(
    node: CourierNode, where: Where, *, progress: ProgressCallback | None = None, max_bytes: int = DEFAULT_MAX_BYTES, quarantine_quota: QuarantineQuota = QuarantineQuota()
) -> tuple[ImportReport, ExportReport | None]:
    """One action at a stop on the route: import what is addressed to this node, then write
    fresh bundles for every peer. No export when the import wiped this node."""
    medium = medium_for(node, where)
    imported = await import_bundles(node, medium, progress=progress, quarantine_quota=quarantine_quota)
    if imported.wiped:
        return imported, None
    return imported, await export_bundles(node, medium, max_bytes=max_bytes, progress=progress)

"""The worker side of appliance/workers.py: what a worker process runs - loading, listing,
admitting and reading one segment carried whole - and its initialiser. Imports nothing of
asyncio or the node's services: the fork server preloads this module, and every worker starts
from it."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from automerge._automerge import Document

from appliance import documents, ids, segments
from appliance.changes import ChangeHeader
from appliance.covered import pack_covered
from appliance.errors import ChangeRejected
from appliance.kept_documents import KeptDocument, kept
from appliance.view_rows import reactions_row, view_row
from appliance.wholes import vouch_for_whole

WORKER_MEMORY_BYTES = 1024 * 1024 * 1024  # address space of one worker: a 2 MiB segment needs far less


# A change-log row of a segment carried whole: one per actor, its signed change with no bytes
# (the snapshot holds them), standing for the actor's earlier changes there (appliance/covered.py).
LOG_COLUMNS = ("doc_id", "hash", "actor", "seq", "deps", "data", "signature", "vouched_by", "received_from", "received_at", "covered", "covers")


@dataclass(frozen=True)
class LogStamp:
    """What the receiver writes on every change row it logs: who sent it, and when."""

    received_from: str | None
    received_at: int


@dataclass(frozen=True)
class WholeAdmitted:
    """A segment carried whole whose changes its authors' signatures cover, as a worker read
    it: how many changes it holds, the change-log rows (LOG_COLUMNS values: one per actor),
    message view rows (VIEW_COLUMNS values) to insert and the reactions (reactions_row) of
    those that have any, the authors whose changes it holds -
    whom the receiver must still allow to write it (the directory lives in the node's process,
    not here) - and its heads."""

    doc_id: str
    changes: int
    # Plain tuples, not dataclasses: they cross the process boundary about six times faster.
    log_rows: tuple[tuple[Any, ...], ...]
    messages: tuple[tuple[Any, ...], ...]
    reactions: tuple[tuple[str, str, str], ...]
    authors: frozenset[bytes]
    heads: tuple[bytes, ...]


@dataclass(frozen=True)
class WholeChanges:
    """Every change of a segment carried whole, listed to be imported as chunks (the node holds
    part of the document), in causal order: their hashes and their bytes."""

    doc_id: str
    hashes: tuple[bytes, ...]
    raw_changes: tuple[bytes, ...]


@dataclass(frozen=True)
class WorkRefused:
    """A segment a worker could not read or would not admit, and why; `missing`: its changes
    build on changes the node lacks (MissingDependencies), rather than being bad."""

    doc_id: str
    reason: str
    missing: bool = False


def admit_whole(doc_id: str, data: bytes, signatures: Mapping[bytes, bytes], admins: frozenset[str], stamp: LogStamp) -> WholeAdmitted | WorkRefused:
    """In a worker: loads `data`, lists its changes and checks them against `signatures` by the
    rule of appliance/wholes.py, then builds its change-log rows and reads its messages."""
    authors: set[bytes] = set()

    def note_author(author: bytes) -> None:  # authorised by the receiver, on its directory
        authors.add(author)

    try:
        with documents.binding_errors(f"{doc_id}: cannot load the segment"):
            doc = Document.load(data)
            headers = [ChangeHeader(c.hash, c.actor_id, c.seq, tuple(c.deps)) for c in doc.get_changes([])]
            vouched = vouch_for_whole(doc_id, headers, signatures, note_author)
            states = segments.read_messages(doc, admins)
            heads = tuple(doc.get_heads())
        kept.keep(doc_id, data, KeptDocument(doc, frozenset(header.hash for header in headers)))  # the store keeps `data` as received: its snapshot
        channel_id = documents.parse_doc_id(doc_id).channel_id
        read = [state for state in states if ids.is_message_id(state.message_id)]
        messages = tuple(view_row(channel_id, doc_id, state) for state in read)
        reactions = tuple(reactions_row(doc_id, state) for state in read if state.reactions)
    except (documents.DocumentError, ChangeRejected) as exc:
        return WorkRefused(doc_id, str(exc))
    except MemoryError:
        return _too_big(doc_id)
    return WholeAdmitted(doc_id, len(headers), log_rows_per_actor(doc_id, headers, vouched, signatures, stamp), messages, reactions, frozenset(authors), heads)


def log_rows_per_actor(doc_id: str, headers: Sequence[ChangeHeader], vouched: Mapping[bytes, bytes], signatures: Mapping[bytes, bytes], stamp: LogStamp) -> tuple[tuple[Any, ...], ...]:
    """A row per signed change (LOG_COLUMNS) without its bytes (the segment saved holds them),
    covering the changes it vouches for: one per actor of a segment carried whole."""
    covered: dict[bytes, list[ChangeHeader]] = {}
    signed: list[ChangeHeader] = []
    for header in headers:
        if vouched[header.hash] == header.hash:
            signed.append(header)
        else:
            covered.setdefault(vouched[header.hash], []).append(header)
    rows = []
    for header in signed:
        earlier = sorted(covered.get(header.hash, ()), key=lambda change: change.seq)
        packed = pack_covered(earlier) if earlier else None
        rows.append((doc_id, header.hash, header.actor, header.seq, b"".join(header.deps), None, signatures[header.hash], header.hash, stamp.received_from, stamp.received_at, len(earlier), packed))
    return tuple(rows)


def list_whole(doc_id: str, data: bytes) -> WholeChanges | WorkRefused:
    """In a worker: loads `data` and lists every change, with its bytes."""
    try:
        with documents.binding_errors(f"{doc_id}: cannot load the segment"):
            changes = Document.load(data).get_changes([])
            hashes = tuple(c.hash for c in changes)
            raw = tuple(c.raw_bytes for c in changes)
    except documents.DocumentError as exc:
        return WorkRefused(doc_id, str(exc))
    except MemoryError:
        return _too_big(doc_id)
    return WholeChanges(doc_id, hashes, raw)


def _too_big(doc_id: str) -> WorkRefused:
    return WorkRefused(doc_id, f"{doc_id}: the segment needs more than {WORKER_MEMORY_BYTES:,} bytes of memory to load")


def start_worker(node_pid: int) -> None:
    """A worker's initialiser: caps its memory, so a crafted segment that balloons on load
    fails with MemoryError here rather than taking the machine's; and ends it when the node's
    process ends. A worker keeps the fork server alive and waits on a queue it holds both ends
    of: after a kill -9 of the node nothing else would end either."""
    import resource
    import select
    import threading
    import time

    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = WORKER_MEMORY_BYTES if hard == resource.RLIM_INFINITY else min(WORKER_MEMORY_BYTES, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        node: int | None = os.pidfd_open(node_pid)
    except ProcessLookupError:
        os._exit(0)
    except OSError:  # a kernel before 5.3: ask every second instead
        node = None

    def end_with_the_node() -> None:
        if node is not None:
            select.select([node], [], [])  # readable once the node's process has ended
        else:
            while _alive(node_pid):
                time.sleep(1)
        os._exit(0)

    threading.Thread(target=end_with_the_node, name="end-with-the-node", daemon=True).start()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True

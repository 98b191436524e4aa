"""The worker side of appliance/workers.py: what a worker process runs - loading, listing and
reading one segment carried whole - and its initialiser. Imports nothing of asyncio or the
node's services: the fork server preloads this module, and every worker starts from it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from automerge._automerge import Document

from appliance import documents, ids, segments
from appliance.changes import ChangeHeader
from appliance.view_rows import view_row

WORKER_MEMORY_BYTES = 1024 * 1024 * 1024  # address space of one worker: a 2 MiB segment needs far less


@dataclass(frozen=True)
class WholeReading:
    """What a worker found in a segment carried whole: every change's header (in the
    document's causal order), its messages read with the admins it was given and - when the
    node already holds part of the document - every change's bytes, to import as chunks."""

    doc_id: str
    # Plain tuples, not dataclasses: they cross the process boundary about six times faster.
    changes: tuple[tuple[bytes, bytes, int, tuple[bytes, ...]], ...]  # hash, actor, seq, deps
    messages: tuple[tuple[Any, ...], ...]  # message view rows, values in VIEW_COLUMNS order
    raw_changes: tuple[bytes, ...]

    def headers(self) -> list[ChangeHeader]:
        return list(map(ChangeHeader._make, self.changes))


@dataclass(frozen=True)
class WholeRefused:
    """A segment a worker could not read, and why."""

    doc_id: str
    reason: str


def read_whole(doc_id: str, data: bytes, admins: frozenset[str], as_changes: bool) -> WholeReading | WholeRefused:
    """In a worker: loads `data` and lists its changes; reads its messages, or (`as_changes`)
    keeps every change's bytes instead."""
    try:
        with documents.binding_errors(f"{doc_id}: cannot load the segment"):
            doc = Document.load(data)
            changes = doc.get_changes([])
            headers = tuple((c.hash, c.actor_id, c.seq, tuple(c.deps)) for c in changes)
            raw = tuple(c.raw_bytes for c in changes) if as_changes else ()
            states = () if as_changes else segments.read_messages(doc, admins)
            channel_id = documents.parse_doc_id(doc_id).channel_id
            messages = tuple(view_row(channel_id, doc_id, state) for state in states if ids.is_message_id(state.message_id))
    except documents.DocumentError as exc:
        return WholeRefused(doc_id, str(exc))
    except MemoryError:
        return WholeRefused(doc_id, f"{doc_id}: the segment needs more than {WORKER_MEMORY_BYTES:,} bytes of memory to load")
    return WholeReading(doc_id, headers, messages, raw)


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

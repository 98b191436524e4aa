"""Segments a worker process keeps loaded between jobs (appliance/workers.py sends work on a
segment back to the worker that last had it).

A segment received whole and then, moments later, changes into it (reactions, edits, the next
part of a session) would otherwise be loaded twice: loading is most of what applying a few
changes costs. Each kept document is filed under the exact bytes the store will hold for it if
the node commits what the worker returned - its snapshot and the change bytes logged after it,
as appliance/stored_documents.py reads them - and is used only for a job that brings those very
bytes: a document's state is a function of its changes, so equal bytes mean an equal document.
An import the node rolled back, a snapshot the upkeep re-saved, a post made since: the bytes
differ, and the worker loads the segment as stored.

Process-local by design: each worker holds its own, bounded by the stored bytes of what it
keeps (a loaded segment takes about ten times its stored size in memory)."""

from __future__ import annotations

from collections import OrderedDict
from typing import NamedTuple

from automerge._automerge import Document

KEPT_STORED_BYTES = 4 * 1024 * 1024  # stored bytes of the segments one worker keeps loaded (~40 MiB in memory: ~180 segments of 512 messages)


class KeptDocument(NamedTuple):
    """A loaded document and the hashes of the changes it holds (what an import into it
    checks for duplicates and dependencies: listing them costs about as much as loading)."""

    doc: Document
    hashes: frozenset[bytes]


class KeptDocuments:
    """Loaded documents by document id, each filed under its stored bytes; least recently used
    first out."""

    def __init__(self, budget: int = KEPT_STORED_BYTES) -> None:
        self._budget = budget
        self._kept: OrderedDict[str, tuple[bytes, KeptDocument]] = OrderedDict()
        self._bytes = 0

    def take(self, doc_id: str, stored: bytes) -> KeptDocument | None:
        """The document kept for `doc_id` if it was filed under exactly `stored`, removed from
        the keep (the caller changes it, and keeps it again under its new bytes); else None,
        and whatever was kept for `doc_id` is dropped."""
        kept = self._kept.pop(doc_id, None)
        if kept is None:
            return None
        self._bytes -= len(kept[0])
        return kept[1] if kept[0] == stored else None

    def keep(self, doc_id: str, stored: bytes, doc: KeptDocument) -> None:
        """Keeps `doc`, whose stored form will be `stored`; the least recently used go while
        the keep is over its budget. A document bigger than a quarter of the budget is not kept."""
        dropped = self._kept.pop(doc_id, None)
        if dropped is not None:
            self._bytes -= len(dropped[0])
        if len(stored) * 4 > self._budget:
            return
        self._kept[doc_id] = (stored, doc)
        self._bytes += len(stored)
        while self._bytes > self._budget:
            _, (old, _) = self._kept.popitem(last=False)
            self._bytes -= len(old)

    def __len__(self) -> int:
        return len(self._kept)


kept = KeptDocuments()  # this process's: a worker's jobs share it

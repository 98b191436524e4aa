"""The floor the pinned Automerge binding sets under any import, with no store, no SQL, no
signature and no network: the same chat lines posted into segment documents of the node's
shape (`SEGMENT_SIZE` messages each), then timed, per form a receiver could be handed:

  load_changes   `Document.load` of each segment's change chunks
  load_saved     `Document.load` of each segment's compacted `save()`, the cheapest form
  list_changes   `get_changes` on the loaded documents, naming hash, actor, seq and deps (what
                 checking each author's signature needs; the binding has no cheaper way)
  apply          `documents.apply_changes` of each segment's chunks into an empty document:
                 what `Node.import_batches` does (the binding has no apply_changes)
  read           `segments.read_messages` of every applied segment: what materialising the
                 message view reads back through the binding (format 2: one listing of the
                 root a segment, one value a message)

Imported as a sibling module (`from automerge_floor import measure_floor`) by sneakernet.py
and lan.py, which print these beside their own end-to-end figures.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from appliance import documents, segments
from appliance.node import SEGMENT_SIZE


@dataclass(frozen=True)
class AutomergeFloor:
    messages: int
    change_bytes: int  # every change chunk, uncompressed, as import hands them to the binding
    saved_bytes: int  # the same segments compacted with save()
    load_changes_s: float
    load_saved_s: float
    list_changes_s: float
    apply_s: float
    read_s: float

    @property
    def verified_changes_per_s_ceiling(self) -> float:
        """At most this many changes per second can be loaded and named for signature checks."""
        return self.messages / (self.load_saved_s + self.list_changes_s)

    @property
    def apply_and_read_s(self) -> float:
        """What no receiver that applies and shows every message can go below, on one core:
        the binding holds the GIL throughout, so threads do not share this work."""
        return self.apply_s + self.read_s


def measure_floor(bodies: Sequence[str]) -> AutomergeFloor:
    actor = bytes(range(48))
    author = actor[:32].hex()
    made: list[tuple[list[bytes], bytes]] = []
    for start in range(0, len(bodies), SEGMENT_SIZE):
        doc = documents.new_document(actor)
        chunks = []
        for offset, body in enumerate(bodies[start : start + SEGMENT_SIZE]):
            segments.post_message(doc, message_id=f"{start + offset:026d}", author=author, created_at=start + offset, text=body, root_id=None, files=[], mentions=[])
            change = doc.get_last_local_change()
            assert change is not None
            chunks.append(change.raw_bytes)
        made.append((chunks, doc.save()))
    started = time.perf_counter()
    for chunks, _ in made:
        documents.load_document(b"".join(chunks), actor)
    load_changes_s = time.perf_counter() - started
    started = time.perf_counter()
    loaded = [documents.load_document(saved, actor) for _, saved in made]
    load_saved_s = time.perf_counter() - started
    started = time.perf_counter()
    named = sum(len([(c.hash, c.actor_id, c.seq, c.deps) for c in doc.get_changes([])]) for doc in loaded)
    list_changes_s = time.perf_counter() - started
    assert named == len(bodies), f"listed {named} changes for {len(bodies)} messages"
    applied = [documents.new_document(actor) for _ in made]
    started = time.perf_counter()
    for doc, (chunks, _) in zip(applied, made, strict=True):
        documents.apply_changes(doc, chunks)
    apply_s = time.perf_counter() - started
    started = time.perf_counter()
    read = sum(len(segments.read_messages(doc, frozenset())) for doc in applied)
    read_s = time.perf_counter() - started
    assert read == len(bodies), f"read {read} messages back for {len(bodies)}"
    return AutomergeFloor(
        messages=len(bodies),
        change_bytes=sum(len(c) for chunks, _ in made for c in chunks),
        saved_bytes=sum(len(saved) for _, saved in made),
        load_changes_s=load_changes_s,
        load_saved_s=load_saved_s,
        list_changes_s=list_changes_s,
        apply_s=apply_s,
        read_s=read_s,
    )

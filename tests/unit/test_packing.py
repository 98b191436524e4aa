"""The delta packer (sync/packing.py) with segments carried whole: their place in the order,
never split, alone when over the budget, refused over the hard cap; every part's Changes
message within its bound, measured by encoding it."""

from __future__ import annotations

import os

import pytest
from automerge._automerge import ROOT, Document, ScalarType
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance import documents
from appliance.changes import SignedChange
from appliance.model import Delta, DocumentDelta, WholeSegment
from sync import messages, sneakernet
from sync.errors import DoesNotFit
from sync.packing import DeltaPart, pack_delta

CHANNEL = "0123456789abcdef0123"
HEAD = documents.head_doc_id(CHANNEL)


def segment(index: int) -> str:
    return documents.segment_doc_id(CHANNEL, index)


def whole(index: int, size: int) -> WholeSegment:
    return WholeSegment(segment(index), os.urandom(size), ((os.urandom(32), os.urandom(64)),))


def changes(count: int, size: int = 200) -> tuple[SignedChange, ...]:
    """Real Automerge changes (the packer reads their actors), each signed (not verified here)."""
    doc = Document(actor_id=os.urandom(48))
    out = []
    for _ in range(count):
        with doc.transaction() as tx:
            tx.put(ROOT, "text", ScalarType.Bytes, os.urandom(size))
        change = doc.get_last_local_change()
        assert change is not None
        out.append(SignedChange(change.bytes, os.urandom(64)))
    return tuple(out)


def heads_of(*doc_ids: str) -> dict[str, tuple[bytes, ...]]:
    return {doc_id: (os.urandom(32),) for doc_id in doc_ids}


def order(parts: list[DeltaPart]) -> list[str]:
    """The documents in the order a receiver meets them: within a part, the directory and
    heads' changes, then the wholes, then segment chunks."""
    out: list[str] = []
    for part in parts:
        chunked = [doc_id for doc_id, _ in part.docs if doc_id not in out]
        is_segment = [documents.parse_doc_id(doc_id).kind == documents.DocumentKind.SEGMENT for doc_id in chunked]
        out += [d for d, seg in zip(chunked, is_segment, strict=True) if not seg] + [w.doc_id for w in part.wholes]
        out += [d for d, seg in zip(chunked, is_segment, strict=True) if seg]
    return out


def encoded(part: DeltaPart, heads: dict[str, tuple[bytes, ...]]) -> int:
    carried = [doc_id for doc_id, _ in part.docs] + [w.doc_id for w in part.wholes]
    return len(messages.encode_message(messages.Changes(part.docs, part.blobs, {d: heads[d] for d in carried}, part.wholes)))


def test_heads_first_then_wholes_newest_first_then_segment_chunks() -> None:
    heads = heads_of(documents.DIRECTORY_DOC, HEAD, segment(0), segment(5), segment(4))
    delta = Delta(
        documents=(DocumentDelta(documents.DIRECTORY_DOC, changes(2)), DocumentDelta(HEAD, changes(1)), DocumentDelta(segment(0), changes(30))),
        blobs=(),
        heads=heads,
        wholes=(whole(5, 20_000), whole(4, 20_000)),
    )
    parts = pack_delta(delta, 32 * 1024)
    assert order(parts) == [documents.DIRECTORY_DOC, HEAD, segment(5), segment(4), segment(0)]
    assert all(encoded(part, heads) <= 32 * 1024 for part in parts)


def test_a_whole_over_the_budget_goes_alone_up_to_the_cap_and_is_refused_beyond() -> None:
    heads = heads_of(HEAD, segment(1), segment(2))
    big, small = whole(2, 100_000), whole(1, 1_000)
    delta = Delta(documents=(DocumentDelta(HEAD, changes(3)),), blobs=(), heads=heads, wholes=(big, small))
    parts = pack_delta(delta, 64 * 1024, cap=128 * 1024)
    lone = next(part for part in parts if big in part.wholes)
    assert lone.wholes == (big,) and lone.docs == () and 64 * 1024 < encoded(lone, heads) <= 128 * 1024
    assert order(parts) == [HEAD, segment(2), segment(1)]
    with pytest.raises(DoesNotFit, match="carried whole"):
        pack_delta(delta, 64 * 1024)  # no cap: the budget is the hard limit
    with pytest.raises(DoesNotFit, match="carried whole"):
        pack_delta(delta, 64 * 1024, cap=96 * 1024)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 15_000), max_size=6), st.lists(st.integers(0, 40), max_size=4), st.integers(16 * 1024, 64 * 1024))
def test_every_part_fits_and_nothing_is_lost_or_split(whole_sizes: list[int], chunk_counts: list[int], budget: int) -> None:
    wholes = tuple(whole(100 + i, size) for i, size in enumerate(whole_sizes))
    chunked = tuple(DocumentDelta(segment(i), changes(count)) for i, count in enumerate(chunk_counts) if count)
    heads = heads_of(HEAD, *(w.doc_id for w in wholes), *(d for d, _ in chunked))
    delta = Delta(documents=(DocumentDelta(HEAD, changes(2)), *chunked), blobs=(), heads=heads, wholes=wholes)
    parts = pack_delta(delta, budget)
    assert all(encoded(part, heads) <= budget for part in parts)
    assert [w for part in parts for w in part.wholes] == list(wholes)
    for doc_id, sent in delta.documents:
        assert [c for part in parts for d, cs in part.docs if d == doc_id for c in cs] == list(sent)


def test_a_bundle_carries_the_wholes_and_acknowledges_them_in_its_header() -> None:
    heads = heads_of(HEAD, segment(3))
    delta = Delta(documents=(DocumentDelta(HEAD, changes(1)),), blobs=(), heads=heads, wholes=(whole(3, 5_000),))
    (content,) = sneakernet._split(delta, 1024 * 1024, 1)
    assert content.wholes == delta.wholes and [d for d, _ in content.changes] == [HEAD]
    assert set(sneakernet._header_heads(delta, content)) == {HEAD, segment(3)}

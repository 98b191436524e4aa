"""What a worker keeps loaded between jobs (appliance/kept_documents.py): a document is handed
back only for the exact bytes it was filed under, once; the keep stays within its budget."""

from __future__ import annotations

from automerge._automerge import Document

from appliance.kept_documents import KeptDocument, KeptDocuments


def test_a_document_comes_back_only_for_the_bytes_it_was_kept_under_and_only_once() -> None:
    keep = KeptDocuments(budget=1000)
    doc = KeptDocument(Document(), frozenset({b"h" * 32}))
    keep.keep("seg-a", b"stored", doc)
    assert keep.take("seg-b", b"stored") is None
    assert keep.take("seg-a", b"stored") is doc
    assert keep.take("seg-a", b"stored") is None  # taken: the caller changes it, and keeps it again
    keep.keep("seg-a", b"stored", doc)
    assert keep.take("seg-a", b"stored and more") is None
    assert keep.take("seg-a", b"stored") is None  # a mismatch drops what was kept
    assert len(keep) == 0


def test_the_least_recently_kept_go_first_and_a_document_too_big_is_not_kept() -> None:
    keep = KeptDocuments(budget=100)
    docs = {name: KeptDocument(Document(), frozenset()) for name in "abcde"}
    for name in "abcd":
        keep.keep(name, name.encode() * 25, docs[name])
    keep.keep("a", b"a" * 25, docs["a"])  # kept again: now the most recent
    keep.keep("e", b"e" * 25, docs["e"])  # 125 bytes: the oldest, b, goes
    assert len(keep) == 4
    assert keep.take("b", b"b" * 25) is None
    assert keep.take("a", b"a" * 25) is docs["a"] and keep.take("c", b"c" * 25) is docs["c"]
    keep.keep("f", b"f" * 26, KeptDocument(Document(), frozenset()))  # over a quarter of the budget
    assert keep.take("f", b"f" * 26) is None

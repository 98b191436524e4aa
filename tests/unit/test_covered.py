"""A segment carried whole is logged with a row per actor (appliance/covered.py): the packed
headers of the changes a row stands for, the rows a worker builds, and the causal order the
changes of such rows are listed in (appliance/graph.py)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from appliance.changes import ChangeHeader
from appliance.covered import CoveredChange, add_hashes, add_to_graph, covered_hashes, pack_covered, unpack_covered
from appliance.errors import StorageError
from appliance.graph import causal_order, split_hashes
from appliance.whole_reader import LOG_COLUMNS, LogStamp, WholeAdmitted, admit_whole
from tests.unit.test_wholes import DOC, listed, newest_signatures, two_authors

hashes = st.binary(min_size=32, max_size=32)
headers = st.lists(st.builds(ChangeHeader, hash=hashes, actor=st.just(b"a" * 48), seq=st.integers(1, 2**32 - 1), deps=st.lists(hashes, max_size=4).map(tuple)), max_size=20)


@given(headers)
def test_packed_headers_come_back_as_they_went(changes: list[ChangeHeader]) -> None:
    assert unpack_covered(pack_covered(changes)) == [CoveredChange(h.hash, h.seq, b"".join(h.deps)) for h in changes]


@given(headers)
def test_the_hashes_alone_are_those_of_the_packed_headers(changes: list[ChangeHeader]) -> None:
    assert covered_hashes(pack_covered(changes)) == [h.hash for h in changes]


@given(headers.filter(bool), st.data())
def test_packed_headers_cut_inside_an_entry_are_refused(changes: list[ChangeHeader], data: st.DataObject) -> None:
    packed = pack_covered(changes)
    boundaries = {len(pack_covered(changes[:i])) for i in range(len(changes) + 1)}
    cut = data.draw(st.integers(1, len(packed) - 1).filter(lambda at: at not in boundaries))
    with pytest.raises(StorageError, match="damaged"):
        unpack_covered(packed[:cut])
    with pytest.raises(StorageError, match="damaged"):
        covered_hashes(packed[:cut])


def test_a_row_stands_for_what_it_covers_then_itself() -> None:
    earlier = [ChangeHeader(bytes([i]) * 32, b"a" * 48, i, ()) for i in (1, 2)]
    graph: dict[bytes, bytes] = {}
    add_to_graph(graph, b"\x03" * 32, b"\x02" * 32, pack_covered(earlier))
    assert list(graph.items()) == [(b"\x01" * 32, b""), (b"\x02" * 32, b""), (b"\x03" * 32, b"\x02" * 32)]
    alone: dict[bytes, bytes] = {}
    add_to_graph(alone, b"\x03" * 32, b"", None)
    assert alone == {b"\x03" * 32: b""}


@given(st.integers(1, 60), st.randoms(use_true_random=False))
def test_causal_order_puts_every_change_after_its_dependencies(size: int, rng: random.Random) -> None:
    names = [bytes([i]) * 32 for i in range(size)]
    deps = {name: b"".join(rng.sample(names[:i], min(i, rng.randint(0, 3)))) for i, name in enumerate(names)}
    deps[names[0]] += b"\xff" * 32  # a dependency outside the list orders nothing
    stored = names[:]
    rng.shuffle(stored)
    order = causal_order([(name, deps[name]) for name in stored])
    assert sorted(order) == list(range(size))
    placed: set[bytes] = set()
    for position in order:
        name = stored[position]
        assert all(dep in placed for dep in split_hashes(deps[name]) if dep in deps)
        placed.add(name)
    assert causal_order([(name, deps[name]) for name in names]) == list(range(size))  # already causal: kept as stored


def test_a_worker_logs_a_whole_with_a_row_per_actor() -> None:
    doc, alice, bob = two_authors()  # alice 5 changes, bob 3, alice 2 more
    keys = {bytes(alice.verify_key) + b"\x00" * 16: alice, bytes(bob.verify_key) + b"\x00" * 16: bob}
    admitted = admit_whole(DOC, doc.save(), newest_signatures(doc, keys), frozenset(), LogStamp("peer", 7))
    assert isinstance(admitted, WholeAdmitted) and admitted.changes == 10
    rows = [dict(zip(LOG_COLUMNS, row, strict=True)) for row in admitted.log_rows]
    assert sorted((row["seq"], row["covered"]) for row in rows) == [(3, 2), (7, 6)]
    assert all(row["data"] is None and row["signature"] and row["vouched_by"] == row["hash"] and row["received_from"] == "peer" for row in rows)
    logged: set[bytes] = set()
    for row in rows:
        add_hashes(logged, row["hash"], row["covers"])
    assert logged == {header.hash for header in listed(doc)}

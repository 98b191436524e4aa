"""How a session start cuts what the peer lacks into groups read from the store one at a time
(sync/session.py): the first small, so the peer starts importing early, then bigger ones."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sync.session import _batched_by_changes

lacking = st.lists(st.tuples(st.text(min_size=1, max_size=4), st.integers(1, 3000)), max_size=40)


def test_the_first_group_is_small_and_the_rest_bigger() -> None:
    docs = [("directory", 3), ("head", 2)] + [(f"segment {i}", 512) for i in range(20)]
    assert [len(group) for group in _batched_by_changes(docs, 32768, 4096)] == [9, 13]
    assert [len(group) for group in _batched_by_changes(docs, 32768)] == [22]
    assert [len(group) for group in _batched_by_changes(docs, 1024, 4096)] == [3] + [2] * 9 + [1]  # never above the limit


@given(lacking, st.integers(1, 5000), st.integers(1, 5000))
def test_groups_keep_every_document_once_in_order_within_their_budget(docs: list[tuple[str, int]], limit: int, first: int) -> None:
    groups = _batched_by_changes(docs, limit, first)
    assert [doc_id for group in groups for doc_id in group] == [doc_id for doc_id, _ in docs]
    sizes = iter(count for _, count in docs)
    for index, group in enumerate(groups):
        counts = [next(sizes) for _ in group]
        assert group and (len(group) == 1 or sum(counts) <= (min(first, limit) if index == 0 else limit))

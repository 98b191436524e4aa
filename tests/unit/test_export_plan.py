"""How a channel is cut into the export's parts (appliance/export_job.plan_ranges): the ranges
cover every message id once - whatever the segments' spans, overlapping ones included -, the
last runs to the channel's end, and each part but the last holds at least its share of rows."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from appliance.export_job import SegmentSpan, plan_ranges

ids = st.text("0123456789ABCDEF", min_size=1, max_size=4)


@st.composite
def spans(draw: st.DrawFn) -> list[SegmentSpan]:
    out = []
    for first, last in draw(st.lists(st.tuples(ids, ids), max_size=12)):
        low, high = min(first, last), max(first, last)
        out.append(SegmentSpan(draw(st.integers(1, 600)), low, high))
    return out


def holder(ranges: list[tuple[str, str | None]], message_id: str) -> list[int]:
    return [n for n, (after, upto) in enumerate(ranges) if message_id > after and (upto is None or message_id <= upto)]


@given(spans(), st.integers(1, 1500), st.lists(ids, max_size=20))
def test_the_ranges_hold_every_id_once_in_order(segments: list[SegmentSpan], per_part: int, probes: list[str]) -> None:
    ranges = plan_ranges(segments, per_part)
    if not segments:
        assert ranges == []
        return
    assert ranges[0][0] == "" and ranges[-1][1] is None
    for (_, upto), (after, _) in zip(ranges, ranges[1:], strict=False):
        assert upto == after  # contiguous: nothing between two parts
    for message_id in probes + [s.first for s in segments] + [s.last for s in segments]:
        assert len(holder(ranges, message_id)) == 1
    ends = [upto for _, upto in ranges[:-1]]
    assert ends == sorted(ends) and len(set(ends)) == len(ends)


@given(spans(), st.integers(1, 1500))
def test_each_part_but_the_last_takes_at_least_its_share(segments: list[SegmentSpan], per_part: int) -> None:
    ranges = plan_ranges(segments, per_part)
    assert len(ranges) <= max(1, sum(s.rows for s in segments) // per_part + 1)
    for after, upto in ranges[:-1]:
        assert upto is not None
        assert sum(s.rows for s in segments if after < s.first <= upto) >= per_part or any(s.first <= after < s.last for s in segments)


def test_disjoint_segments_are_cut_at_their_ends() -> None:
    segments = [SegmentSpan(512, f"{n}A", f"{n}Z") for n in range(5)]
    assert plan_ranges(segments, 1000) == [("", "1Z"), ("1Z", "3Z"), ("3Z", None)]

"""A document's change graph (hash -> concatenated 32-byte dependency hashes): ancestors,
heads and a causal order. Pure."""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sequence


def split_hashes(joined: bytes) -> list[bytes]:
    if len(joined) == 32:  # most changes have one dependency: a channel's history is mostly a line
        return [joined]
    return [joined[i : i + 32] for i in range(0, len(joined) - len(joined) % 32, 32)]


def ancestors(graph: Mapping[bytes, bytes], heads: Iterable[bytes]) -> set[bytes]:
    """Every change reachable from the heads that `graph` (hash -> concatenated deps) knows."""
    found: set[bytes] = set()
    stack = [h for h in heads if h in graph]
    while stack:
        current = stack.pop()
        if current in found:
            continue
        found.add(current)
        stack.extend(dep for dep in split_hashes(graph[current]) if dep in graph)
    return found


def frontier(graph: Mapping[bytes, bytes]) -> tuple[bytes, ...]:
    """The heads of a document: changes no other change depends on."""
    depended: set[bytes] = set()
    for deps in graph.values():
        if len(deps) == 32:
            depended.add(deps)
        else:
            depended.update(split_hashes(deps))
    return tuple(sorted(h for h in graph if h not in depended))


def causal_order(changes: Sequence[tuple[bytes, bytes]]) -> list[int]:
    """The positions of `changes` ((hash, concatenated deps), in the order stored) arranged so
    that each follows its dependencies among them, otherwise keeping the stored order. Rows
    that stand for several changes (appliance/covered.py) interleave two actors' histories."""
    position = {change_hash: i for i, (change_hash, _) in enumerate(changes)}
    waiting: dict[int, list[int]] = {}
    blocked = [0] * len(changes)
    ready: list[int] = []
    for i, (_, deps) in enumerate(changes):
        for dep in split_hashes(deps):
            before = position.get(dep)
            if before is not None and before != i:
                blocked[i] += 1
                waiting.setdefault(before, []).append(i)
        if not blocked[i]:
            ready.append(i)
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for after in waiting.get(i, ()):
            blocked[after] -= 1
            if not blocked[after]:
                heapq.heappush(ready, after)
    if len(order) < len(changes):  # a cycle no real hashes can make: keep what remains, as stored
        placed = set(order)
        order += [i for i in range(len(changes)) if i not in placed]
    return order

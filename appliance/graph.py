"""A document's change graph (hash -> concatenated 32-byte dependency hashes): ancestors and
heads. Pure."""

from __future__ import annotations

from collections.abc import Iterable, Mapping


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

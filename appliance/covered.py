"""The changes a change-log row stands for without a row of their own.

A segment carried whole is logged with one row per actor: that actor's signed, newest change
in it - and, packed into the row's `covers` column, the headers of the actor's earlier changes
there, which that signature vouches for (appliance/wholes.py). A hundred thousand changes
carried whole then cost a few hundred rows, not a hundred thousand. Their bytes are in the
segment's snapshot, as for any change stored without them.

Pure: bytes in, values out."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import NamedTuple

from appliance.changes import HASH_BYTES, ChangeHeader
from appliance.errors import StorageError

_ENTRY = struct.Struct(f">{HASH_BYTES}sIH")  # hash, seq, number of dependencies
_DAMAGED = "a change-log row lists the changes it stands for in a damaged form"


class CoveredChange(NamedTuple):
    """A change a log row stands for: its hash, sequence number and dependencies (their
    hashes concatenated, as in the log's `deps` column)."""

    hash: bytes
    seq: int
    deps: bytes


def pack_covered(headers: Sequence[ChangeHeader]) -> bytes:
    """The `covers` column for `headers` (one actor's changes, in sequence order)."""
    return b"".join(_ENTRY.pack(header.hash, header.seq, len(header.deps)) + b"".join(header.deps) for header in headers)


def unpack_covered(packed: bytes) -> list[CoveredChange]:
    """The changes a `covers` column lists; StorageError if it is cut short (a damaged store)."""
    found: list[CoveredChange] = []
    position, end = 0, len(packed)
    while position < end:
        if position + _ENTRY.size > end:
            raise StorageError(_DAMAGED)
        change_hash, seq, dep_count = _ENTRY.unpack_from(packed, position)
        position += _ENTRY.size
        deps = packed[position : position + dep_count * HASH_BYTES]
        if len(deps) != dep_count * HASH_BYTES:
            raise StorageError(_DAMAGED)
        position += len(deps)
        found.append(CoveredChange(change_hash, seq, deps))
    return found


def covered_hashes(packed: bytes) -> list[bytes]:
    """The hashes alone of the changes a `covers` column lists (as `unpack_covered` reads them,
    without building the rest: an import asks this of every row of the segments it touches)."""
    hashes: list[bytes] = []
    position, end, deps_at = 0, len(packed), _ENTRY.size - 2
    while position < end:
        if position + _ENTRY.size > end:
            raise StorageError(_DAMAGED)
        hashes.append(packed[position : position + HASH_BYTES])
        position += _ENTRY.size + HASH_BYTES * int.from_bytes(packed[position + deps_at : position + _ENTRY.size], "big")
    if position != end:
        raise StorageError(_DAMAGED)
    return hashes


def add_to_graph(graph: dict[bytes, bytes], change_hash: bytes, deps: bytes, covers: bytes | None) -> None:
    """Adds every change a log row stands for to `graph` (hash -> deps): those it covers (in
    sequence order), then its own."""
    if covers:
        graph.update((change.hash, change.deps) for change in unpack_covered(covers))
    graph[change_hash] = deps


def add_hashes(found: set[bytes], change_hash: bytes, covers: bytes | None) -> None:
    """Adds the hash of every change a log row stands for to `found`."""
    found.add(change_hash)
    if covers:
        found.update(covered_hashes(covers))
